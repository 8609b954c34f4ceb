//! Groups whose resources are reviews: created and answered, never stored (TokenReview,
//! SelfSubjectReview, the SubjectAccessReviews). They are listed in discovery, OpenAPI v3 and
//! the local APIServices like any served group, with `create` as their only verb.

use serde_json::{Value, json};

pub struct Review {
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

pub struct ReviewGroup {
    pub group: &'static str,
    pub version: &'static str,
    pub reviews: &'static [Review],
}

const fn review(
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
) -> Review {
    Review {
        plural,
        singular,
        kind,
        namespaced,
    }
}

pub const GROUPS: &[ReviewGroup] = &[
    ReviewGroup {
        group: "authentication.k8s.io",
        version: "v1",
        reviews: &[
            review(
                "selfsubjectreviews",
                "selfsubjectreview",
                "SelfSubjectReview",
                false,
            ),
            review("tokenreviews", "tokenreview", "TokenReview", false),
        ],
    },
    ReviewGroup {
        group: "authorization.k8s.io",
        version: "v1",
        reviews: &[
            review(
                "localsubjectaccessreviews",
                "localsubjectaccessreview",
                "LocalSubjectAccessReview",
                true,
            ),
            review(
                "selfsubjectaccessreviews",
                "selfsubjectaccessreview",
                "SelfSubjectAccessReview",
                false,
            ),
            review(
                "selfsubjectrulesreviews",
                "selfsubjectrulesreview",
                "SelfSubjectRulesReview",
                false,
            ),
            review(
                "subjectaccessreviews",
                "subjectaccessreview",
                "SubjectAccessReview",
                false,
            ),
        ],
    },
];

pub fn find(group: &str, version: &str) -> Option<&'static ReviewGroup> {
    GROUPS
        .iter()
        .find(|g| g.group == group && g.version == version)
}

pub fn find_group(group: &str) -> Option<&'static ReviewGroup> {
    GROUPS.iter().find(|g| g.group == group)
}

impl ReviewGroup {
    /// The group's entry in aggregated discovery.
    pub fn aggregated_discovery(&self) -> Value {
        let resources: Vec<Value> = self
            .reviews
            .iter()
            .map(|r| {
                json!({
                    "resource": r.plural,
                    "responseKind": {"group": self.group, "version": self.version, "kind": r.kind},
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.singular,
                    "verbs": ["create"],
                })
            })
            .collect();
        json!({
            "metadata": {"name": self.group, "creationTimestamp": null},
            "versions": [{"version": self.version, "resources": resources, "freshness": "Current"}],
        })
    }

    /// `/apis/<group>/<version>`.
    pub fn resource_list(&self) -> Value {
        let resources: Vec<Value> = self
            .reviews
            .iter()
            .map(|r| {
                json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                       "kind": r.kind, "verbs": ["create"]})
            })
            .collect();
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{}/{}", self.group, self.version),
            "resources": resources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_the_reviews_as_create_only() {
        let authn = find("authentication.k8s.io", "v1").expect("authentication.k8s.io");
        let list = authn.resource_list();
        assert_eq!(list["groupVersion"], "authentication.k8s.io/v1");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert_eq!(names, ["selfsubjectreviews", "tokenreviews"]);
        assert_eq!(list["resources"][1]["verbs"], json!(["create"]));
        assert_eq!(
            authn.aggregated_discovery()["versions"][0]["resources"][1]["responseKind"]["kind"],
            "TokenReview"
        );
        let authz = find_group("authorization.k8s.io").expect("authorization.k8s.io");
        let local = &authz.resource_list()["resources"][0];
        assert_eq!(local["name"], "localsubjectaccessreviews");
        assert_eq!(local["namespaced"], true);
        assert_eq!(
            authz.aggregated_discovery()["versions"][0]["resources"][0]["scope"],
            "Namespaced"
        );
    }
}
