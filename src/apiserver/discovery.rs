//! `/version`, legacy discovery documents and aggregated discovery (apidiscovery.k8s.io/v2),
//! all derived from the resource table.

use serde_json::{Value, json};

use super::metrics;
use super::resources::{self, ResourceDef, VERBS};
use super::reviews;

/// The Kubernetes minor version reported to clients. `/usr/bin/kubectl` on our machines picks its
/// binary by it, so it must be one that kubectl release exists for.
pub const KUBERNETES_MINOR: &str = "32";

pub fn git_version() -> String {
    format!(
        "v1.{KUBERNETES_MINOR}.0+kcluster-{}",
        env!("CARGO_PKG_VERSION")
    )
}

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": KUBERNETES_MINOR,
        "gitVersion": git_version(),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (Rust)",
        "compiler": "rustc",
        "platform": format!("linux/{}", arch()),
    })
}

pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn verbs(def: &ResourceDef) -> Vec<&'static str> {
    // Namespaces cannot be deleted as a collection in Kubernetes.
    VERBS
        .iter()
        .copied()
        .filter(|v| !(def.plural == "namespaces" && *v == "deletecollection"))
        .collect()
}

pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The ETag of a discovery document: the hex SHA-512 of its JSON, as kube-apiserver computes it.
pub fn etag(document: &[u8]) -> String {
    use sha2::{Digest, Sha512};
    Sha512::digest(document)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Whether the client asked for aggregated discovery in its Accept header.
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let p: Vec<&str> = part.split(';').map(str::trim).collect();
        p.contains(&"g=apidiscovery.k8s.io")
            && p.contains(&"v=v2")
            && p.contains(&"as=APIGroupDiscoveryList")
    })
}

fn aggregated_resource(r: &ResourceDef) -> Value {
    let mut res = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced() { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": verbs(r),
    });
    if !r.short_names.is_empty() {
        res["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        res["categories"] = json!(r.categories);
    }
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .filter_map(|s| r.subresource(s))
        .map(|s| {
            json!({
                "subresource": s.name,
                "responseKind": {"group": s.group, "version": s.version, "kind": s.kind},
                "verbs": s.verbs,
            })
        })
        .collect();
    if !subs.is_empty() {
        res["subresources"] = Value::Array(subs);
    }
    res
}

/// `/api` (core = true) or `/apis` as an aggregated discovery list: one item per group with its
/// versions, preferred first.
pub fn aggregated(core: bool) -> Value {
    let mut items = Vec::new();
    let all = resources::all();
    for group in resources::groups() {
        if core != group.is_empty() {
            continue;
        }
        let versions: Vec<Value> = resources::versions_of(group)
            .into_iter()
            .map(|version| {
                let resources: Vec<Value> = all
                    .iter()
                    .filter(|r| r.group == group && r.version == version)
                    .map(|r| aggregated_resource(r))
                    .collect();
                json!({"version": version, "resources": resources, "freshness": "Current"})
            })
            .collect();
        items.push(json!({
            "metadata": {"name": group, "creationTimestamp": null},
            "versions": versions,
        }));
    }
    if !core {
        items.extend(reviews::GROUPS.iter().map(|g| g.aggregated_discovery()));
        items.push(metrics_aggregated());
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

pub fn legacy_api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

pub fn legacy_group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(group_doc)
        .chain(
            reviews::GROUPS
                .iter()
                .map(|g| group_doc_of(g.group, &[g.version])),
        )
        .chain([group_doc_of(metrics::GROUP, &[metrics::VERSION])])
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The resource metrics group, served beside the stored kinds (as an aggregated API server's
/// group shows up in a cluster with metrics-server).
fn metrics_aggregated() -> Value {
    let resources: Vec<Value> = metrics::RESOURCES
        .iter()
        .map(|r| {
            json!({
                "resource": r.plural,
                "responseKind": {"group": metrics::GROUP, "version": metrics::VERSION, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": metrics::VERBS,
            })
        })
        .collect();
    json!({
        "metadata": {"name": metrics::GROUP, "creationTimestamp": null},
        "versions": [{"version": metrics::VERSION, "resources": resources, "freshness": "Current"}],
    })
}

fn metrics_resource_list() -> Value {
    let resources: Vec<Value> = metrics::RESOURCES
        .iter()
        .map(|r| {
            json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": metrics::VERBS,
            })
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{}/{}", metrics::GROUP, metrics::VERSION),
        "resources": resources,
    })
}

fn group_doc(group: &str) -> Value {
    group_doc_of(group, &resources::versions_of(group))
}

fn group_doc_of(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

pub fn legacy_group(group: &str) -> Option<Value> {
    let mut doc = if group == metrics::GROUP {
        group_doc_of(group, &[metrics::VERSION])
    } else if let Some(g) = reviews::find_group(group) {
        group_doc_of(group, &[g.version])
    } else if group.is_empty() || !resources::groups().contains(&group) {
        return None;
    } else {
        group_doc(group)
    };
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

pub fn legacy_resource_list(group: &str, version: &str) -> Option<Value> {
    if (group, version) == (metrics::GROUP, metrics::VERSION) {
        return Some(metrics_resource_list());
    }
    if let Some(g) = reviews::find(group, version) {
        return Some(g.resource_list());
    }
    let defs: Vec<&ResourceDef> = resources::all()
        .into_iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in defs {
        let mut res = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced(),
            "kind": r.kind,
            "verbs": verbs(r),
        });
        if !r.short_names.is_empty() {
            res["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            res["categories"] = json!(r.categories);
        }
        list.push(res);
        for sub in r.subresources.iter().filter_map(|s| r.subresource(s)) {
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub.name),
                "singularName": "",
                "namespaced": r.namespaced(),
                "kind": sub.kind,
                "verbs": sub.verbs,
            });
            // Subresources answering with another group's kind say which (deployments/scale).
            if (sub.group, sub.version) != (r.group, r.version) {
                entry["group"] = json!(sub.group);
                entry["version"] = json!(sub.version);
            }
            list.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": list}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_accept_is_detected() {
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json, */*"));
    }

    #[test]
    fn every_resource_has_a_response_kind() {
        let doc = aggregated(true);
        let core = &doc["items"][0];
        assert_eq!(core["metadata"]["name"], "");
        for r in core["versions"][0]["resources"].as_array().unwrap() {
            assert!(r["responseKind"]["kind"].is_string());
        }
        assert!(
            aggregated(false)["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["metadata"]["name"] == "coordination.k8s.io")
        );
    }

    #[test]
    fn resource_metrics_are_discoverable() {
        let doc = aggregated(false);
        let group = doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "metrics.k8s.io")
            .cloned()
            .unwrap();
        assert_eq!(group["versions"][0]["version"], "v1beta1");
        let kinds: Vec<&str> = group["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["responseKind"]["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["NodeMetrics", "PodMetrics"]);
        assert!(
            legacy_group_list()["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["preferredVersion"]["groupVersion"] == "metrics.k8s.io/v1beta1")
        );
        assert_eq!(legacy_group("metrics.k8s.io").unwrap()["kind"], "APIGroup");
        let list = legacy_resource_list("metrics.k8s.io", "v1beta1").unwrap();
        assert_eq!(list["resources"][1]["namespaced"], true);
        assert_eq!(list["resources"][1]["verbs"], json!(["get", "list"]));
    }

    #[test]
    fn groups_list_their_versions_preferred_first() {
        let doc = aggregated(false);
        let autoscaling = doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "autoscaling")
            .unwrap();
        assert_eq!(autoscaling["versions"][0]["version"], "v2");
        assert_eq!(autoscaling["versions"][1]["version"], "v1");
        let legacy = legacy_group("autoscaling").unwrap();
        assert_eq!(legacy["preferredVersion"]["groupVersion"], "autoscaling/v2");
        assert_eq!(legacy["versions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn scale_subresources_answer_with_autoscaling_v1_scale() {
        let list = legacy_resource_list("apps", "v1").unwrap();
        let scale = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["version"], "v1");
        assert_eq!(scale["kind"], "Scale");
        let apps = aggregated(false)["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .cloned()
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .cloned()
            .unwrap();
        let subs = deploy["subresources"].as_array().unwrap();
        assert!(subs.iter().any(|s| s["subresource"] == "scale"
            && s["responseKind"]
                == json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})));
    }
}
