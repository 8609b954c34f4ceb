//! RBAC evaluation: policy rules, the index of bindings by subject, and the rule-matching
//! semantics of Kubernetes' RBAC authorizer.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::Attributes;

pub const GROUP: &str = "rbac.authorization.k8s.io";
pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";
const CLUSTER_ROLES: &str = "/registry/rbac.authorization.k8s.io/clusterroles/";
const ROLES: &str = "/registry/rbac.authorization.k8s.io/roles/";
const CLUSTER_ROLE_BINDINGS: &str = "/registry/rbac.authorization.k8s.io/clusterrolebindings/";
const ROLE_BINDINGS: &str = "/registry/rbac.authorization.k8s.io/rolebindings/";

/// One PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    pub fn from_json(v: &Value) -> Rule {
        Rule {
            verbs: strings(v, "verbs"),
            api_groups: strings(v, "apiGroups"),
            resources: strings(v, "resources"),
            resource_names: strings(v, "resourceNames"),
            non_resource_urls: strings(v, "nonResourceURLs"),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("verbs".into(), self.verbs.clone().into());
        if !self.api_groups.is_empty() {
            m.insert("apiGroups".into(), self.api_groups.clone().into());
        }
        if !self.resources.is_empty() {
            m.insert("resources".into(), self.resources.clone().into());
        }
        if !self.resource_names.is_empty() {
            m.insert("resourceNames".into(), self.resource_names.clone().into());
        }
        if !self.non_resource_urls.is_empty() {
            m.insert(
                "nonResourceURLs".into(),
                self.non_resource_urls.clone().into(),
            );
        }
        Value::Object(m)
    }

    pub fn rules_of(role: &Value) -> Vec<Rule> {
        role.get("rules")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(Rule::from_json).collect())
            .unwrap_or_default()
    }

    fn verb_matches(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == "*" || v == verb)
    }

    fn group_matches(&self, group: &str) -> bool {
        self.api_groups.iter().any(|g| g == "*" || g == group)
    }

    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if subresource.is_empty() {
                return r == resource;
            }
            // `pods/log` names one subresource of one resource; `*/scale` one subresource of any.
            match r.split_once('/') {
                Some((res, sub)) => (res == resource || res == "*") && sub == subresource,
                None => false,
            }
        })
    }

    fn name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }

    fn url_matches(&self, path: &str) -> bool {
        self.non_resource_urls.iter().any(|u| {
            u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        })
    }

    /// Whether this rule grants the request, as Kubernetes' `RuleAllows` decides.
    pub fn allows(&self, a: &Attributes) -> bool {
        if a.resource_request {
            self.verb_matches(&a.verb)
                && self.group_matches(&a.api_group)
                && self.resource_matches(&a.resource, &a.subresource)
                && self.name_matches(&a.name)
        } else {
            self.verb_matches(&a.verb) && self.url_matches(&a.path)
        }
    }

    /// `{APIGroups:["apps"], Resources:["deployments"], Verbs:["get"]}`, as Kubernetes'
    /// `CompactString` prints a rule (Go's %q of a string slice).
    pub fn compact_string(&self) -> String {
        let q = |v: &[String]| {
            let parts: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
            format!("[{}]", parts.join(" "))
        };
        let mut parts = Vec::new();
        if !self.api_groups.is_empty() {
            parts.push(format!("APIGroups:{}", q(&self.api_groups)));
        }
        if !self.resources.is_empty() {
            parts.push(format!("Resources:{}", q(&self.resources)));
        }
        if !self.non_resource_urls.is_empty() {
            parts.push(format!("NonResourceURLs:{}", q(&self.non_resource_urls)));
        }
        if !self.resource_names.is_empty() {
            parts.push(format!("ResourceNames:{}", q(&self.resource_names)));
        }
        if !self.verbs.is_empty() {
            parts.push(format!("Verbs:{}", q(&self.verbs)));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// Go's %q of a string (the names here are plain printable text).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Who a binding names, keyed as requests are: service accounts by their user name.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub enum Subject {
    User(String),
    Group(String),
}

#[derive(Debug, Clone)]
struct Binding {
    /// None for a ClusterRoleBinding.
    namespace: Option<String>,
    name: String,
    role_kind: String,
    role_name: String,
    /// `User "jane"`, `ServiceAccount "sa/ns"`: how an allowing reason names the subject.
    subject: String,
}

impl Binding {
    fn describe(&self) -> String {
        match &self.namespace {
            None => format!(
                "ClusterRoleBinding {} of {} {} to {}",
                go_quote(&self.name),
                self.role_kind,
                go_quote(&self.role_name),
                self.subject
            ),
            Some(ns) => format!(
                "RoleBinding {} of {} {} to {}",
                go_quote(&format!("{}/{ns}", self.name)),
                self.role_kind,
                go_quote(&self.role_name),
                self.subject
            ),
        }
    }
}

/// Every role's rules and every binding by subject, built from the store whenever RBAC
/// objects change, so a request looks at its own subjects' bindings only.
#[derive(Debug, Default)]
pub struct Index {
    cluster_roles: HashMap<String, Arc<Vec<Rule>>>,
    roles: HashMap<(String, String), Arc<Vec<Rule>>>,
    by_subject: HashMap<Subject, Vec<Binding>>,
}

/// The outcome of walking a user's bindings.
pub struct Evaluation {
    /// The binding that allowed the request.
    pub allowed_by: Option<String>,
    /// Bindings whose role is missing, as Kubernetes reports them (`roles.rbac… "x" not found`).
    pub errors: Vec<String>,
}

impl Index {
    pub fn build(store: &crate::store::Store) -> Result<Index, crate::store::StoreError> {
        let mut index = Index::default();
        for kv in store.list(CLUSTER_ROLES)?.0 {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
                let name = meta(&v, "name").to_string();
                index
                    .cluster_roles
                    .insert(name, Arc::new(Rule::rules_of(&v)));
            }
        }
        for kv in store.list(ROLES)?.0 {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
                let key = (
                    meta(&v, "namespace").to_string(),
                    meta(&v, "name").to_string(),
                );
                index.roles.insert(key, Arc::new(Rule::rules_of(&v)));
            }
        }
        for (prefix, namespaced) in [(CLUSTER_ROLE_BINDINGS, false), (ROLE_BINDINGS, true)] {
            for kv in store.list(prefix)?.0 {
                if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
                    index.add_binding(&v, namespaced);
                }
            }
        }
        Ok(index)
    }

    fn add_binding(&mut self, v: &Value, namespaced: bool) {
        let namespace = namespaced.then(|| meta(v, "namespace").to_string());
        let role_ref = v.get("roleRef").unwrap_or(&Value::Null);
        let role_kind = role_ref
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // A ClusterRoleBinding can only refer to a ClusterRole.
        if !namespaced && role_kind != "ClusterRole" {
            return;
        }
        let subjects = v
            .get("subjects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for s in subjects {
            let kind = s.get("kind").and_then(Value::as_str).unwrap_or_default();
            let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
            let (key, described) = match kind {
                "User" => (
                    Subject::User(name.to_string()),
                    format!("User {}", go_quote(name)),
                ),
                "Group" => (
                    Subject::Group(name.to_string()),
                    format!("Group {}", go_quote(name)),
                ),
                "ServiceAccount" => {
                    let ns = s
                        .get("namespace")
                        .and_then(Value::as_str)
                        .filter(|n| !n.is_empty())
                        .or(namespace.as_deref())
                        .unwrap_or_default();
                    (
                        Subject::User(format!("system:serviceaccount:{ns}:{name}")),
                        format!("ServiceAccount {}", go_quote(&format!("{name}/{ns}"))),
                    )
                }
                _ => continue,
            };
            self.by_subject.entry(key).or_default().push(Binding {
                namespace: namespace.clone(),
                name: meta(v, "name").to_string(),
                role_kind: role_kind.to_string(),
                role_name: role_ref
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                subject: described,
            });
        }
    }

    fn role_rules(&self, b: &Binding) -> Result<&Arc<Vec<Rule>>, String> {
        match (b.role_kind.as_str(), &b.namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(&b.role_name).ok_or_else(|| {
                format!(
                    "clusterrole.rbac.authorization.k8s.io {} not found",
                    go_quote(&b.role_name)
                )
            }),
            ("Role", Some(ns)) => self
                .roles
                .get(&(ns.clone(), b.role_name.clone()))
                .ok_or_else(|| {
                    format!(
                        "role.rbac.authorization.k8s.io {} not found",
                        go_quote(&b.role_name)
                    )
                }),
            _ => Err(format!("unknown role kind {:?}", b.role_kind)),
        }
    }

    /// Visits the bindings that apply to `user`/`groups` in `namespace` (cluster-wide ones
    /// first, as Kubernetes does); `visit` returns true to stop.
    fn walk(
        &self,
        user: &str,
        groups: &[String],
        namespace: &str,
        mut visit: impl FnMut(&Binding, &[Rule]) -> bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        let keys = std::iter::once(Subject::User(user.to_string()))
            .chain(groups.iter().map(|g| Subject::Group(g.clone())));
        let mut applicable: Vec<&Binding> = Vec::new();
        for key in keys {
            if let Some(bindings) = self.by_subject.get(&key) {
                applicable.extend(bindings.iter().filter(|b| match &b.namespace {
                    None => true,
                    Some(ns) => !namespace.is_empty() && ns == namespace,
                }));
            }
        }
        applicable.sort_by_key(|b| b.namespace.is_some());
        for b in applicable {
            match self.role_rules(b) {
                Ok(rules) => {
                    if visit(b, rules) {
                        break;
                    }
                }
                Err(e) => {
                    if !errors.contains(&e) {
                        errors.push(e)
                    }
                }
            }
        }
        errors
    }

    /// Whether the ClusterRole `name`'s rules allow `a`, whoever is bound to it.
    pub fn cluster_role_allows(&self, name: &str, a: &Attributes) -> bool {
        self.cluster_roles
            .get(name)
            .is_some_and(|rules| rules.iter().any(|r| r.allows(a)))
    }

    pub fn evaluate(&self, a: &Attributes) -> Evaluation {
        let mut allowed_by = None;
        let errors = self.walk(&a.user, &a.groups, &a.namespace, |b, rules| {
            if rules.iter().any(|r| r.allows(a)) {
                allowed_by = Some(b.describe());
                true
            } else {
                false
            }
        });
        Evaluation { allowed_by, errors }
    }

    /// Every rule `user` holds in `namespace` (cluster-wide ones included), and the
    /// resolution errors met on the way.
    pub fn rules_for(
        &self,
        user: &str,
        groups: &[String],
        namespace: &str,
    ) -> (Vec<Rule>, Vec<String>) {
        let mut all = Vec::new();
        let errors = self.walk(user, groups, namespace, |_, rules| {
            all.extend(rules.iter().cloned());
            false
        });
        (all, errors)
    }

    pub fn cluster_role(&self, name: &str) -> Option<&Arc<Vec<Rule>>> {
        self.cluster_roles.get(name)
    }

    pub fn role(&self, namespace: &str, name: &str) -> Option<&Arc<Vec<Rule>>> {
        self.roles.get(&(namespace.to_string(), name.to_string()))
    }
}

fn meta<'a>(v: &'a Value, key: &str) -> &'a str {
    v.pointer(&format!("/metadata/{key}"))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Splits a rule into rules of one group, one resource, one verb (and one name), or one URL and
/// one verb, as Kubernetes' `BreakdownRule` does before checking coverage.
fn breakdown(rule: &Rule) -> Vec<Rule> {
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                if rule.resource_names.is_empty() {
                    out.push(Rule {
                        verbs: vec![verb.clone()],
                        api_groups: vec![group.clone()],
                        resources: vec![resource.clone()],
                        ..Rule::default()
                    });
                }
                for name in &rule.resource_names {
                    out.push(Rule {
                        verbs: vec![verb.clone()],
                        api_groups: vec![group.clone()],
                        resources: vec![resource.clone()],
                        resource_names: vec![name.clone()],
                        ..Rule::default()
                    });
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(Rule {
                verbs: vec![verb.clone()],
                non_resource_urls: vec![url.clone()],
                ..Rule::default()
            });
        }
    }
    out
}

fn has_all(have: &[String], want: &[String]) -> bool {
    have.iter().any(|h| h == "*") || want.iter().all(|w| have.contains(w))
}

/// Whether `owner` covers the one-of-each rule `sub`, as Kubernetes' `ruleCovers` decides.
fn rule_covers(owner: &Rule, sub: &Rule) -> bool {
    let verbs = has_all(&owner.verbs, &sub.verbs);
    let groups = has_all(&owner.api_groups, &sub.api_groups);
    let resources = sub.resources.iter().all(|r| {
        owner.resources.iter().any(|o| {
            o == "*"
                || o == r
                || (o.starts_with("*/") && r.split_once('/').is_some_and(|(_, s)| o[2..] == *s))
        })
    });
    let urls = sub.non_resource_urls.iter().all(|u| {
        owner
            .non_resource_urls
            .iter()
            .any(|o| o == u || o == "*" || o.strip_suffix('*').is_some_and(|p| u.starts_with(p)))
    });
    let names = owner.resource_names.is_empty()
        || (!sub.resource_names.is_empty()
            && sub
                .resource_names
                .iter()
                .all(|n| owner.resource_names.contains(n)));
    verbs && groups && resources && urls && names
}

/// The rules of `wanted` that `owned` does not cover, merged back by verb as Kubernetes'
/// `CompactRules` merges them.
pub fn uncovered(owned: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    let mut missing: Vec<Rule> = Vec::new();
    for rule in wanted {
        for sub in breakdown(rule) {
            if !owned.iter().any(|o| rule_covers(o, &sub)) {
                missing.push(sub);
            }
        }
    }
    let mut compact: Vec<Rule> = Vec::new();
    for rule in missing {
        let simple = rule.resource_names.is_empty() && rule.non_resource_urls.is_empty();
        if simple
            && let Some(same) = compact.iter_mut().find(|c| {
                c.resource_names.is_empty()
                    && c.non_resource_urls.is_empty()
                    && c.api_groups == rule.api_groups
                    && c.resources == rule.resources
            })
        {
            for verb in rule.verbs {
                if !same.verbs.contains(&verb) {
                    same.verbs.push(verb);
                }
            }
            continue;
        }
        compact.push(rule);
    }
    compact
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user: "jane".into(),
            groups: vec![],
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            api_version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "default".into(),
            name: name.into(),
            path: String::new(),
        }
    }

    fn url(verb: &str, path: &str) -> Attributes {
        Attributes {
            resource_request: false,
            path: path.into(),
            ..attrs(verb, "", "", "", "")
        }
    }

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    #[test]
    fn resources_subresources_and_wildcards() {
        let r = rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
        );
        assert!(r.allows(&attrs("get", "", "pods", "", "p")));
        assert!(r.allows(&attrs("get", "", "pods", "log", "p")));
        assert!(!r.allows(&attrs("get", "", "pods", "exec", "p")));
        assert!(!r.allows(&attrs("watch", "", "pods", "", "")));
        assert!(!r.allows(&attrs("get", "apps", "pods", "", "p")));
        assert!(!r.allows(&attrs("get", "", "services", "", "p")));

        let any = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        assert!(any.allows(&attrs(
            "deletecollection",
            "apps",
            "deployments",
            "scale",
            ""
        )));

        let scale =
            rule(json!({"verbs": ["update"], "apiGroups": ["apps"], "resources": ["*/scale"]}));
        assert!(scale.allows(&attrs("update", "apps", "deployments", "scale", "d")));
        assert!(!scale.allows(&attrs("update", "apps", "deployments", "", "d")));
    }

    #[test]
    fn resource_names_limit_named_requests() {
        let r = rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"],
                            "resourceNames": ["a"]}),
        );
        assert!(r.allows(&attrs("get", "", "configmaps", "", "a")));
        assert!(!r.allows(&attrs("get", "", "configmaps", "", "b")));
        // A list names nothing, so a rule with names does not grant it.
        assert!(!r.allows(&attrs("get", "", "configmaps", "", "")));
    }

    #[test]
    fn non_resource_urls_with_trailing_star() {
        let r = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*", "/version"]}));
        assert!(r.allows(&url("get", "/apis/apps/v1")));
        assert!(r.allows(&url("get", "/version")));
        assert!(!r.allows(&url("get", "/version/x")));
        assert!(!r.allows(&url("post", "/apis/apps")));
        assert!(!r.allows(&attrs("get", "", "pods", "", "")));
        let all = rule(json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
        assert!(all.allows(&url("delete", "/anything")));
    }

    #[test]
    fn coverage_reports_what_is_missing() {
        let owned = vec![rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}),
        )];
        let wanted = vec![rule(
            json!({"verbs": ["get", "delete", "create"], "apiGroups": [""], "resources": ["pods"]}),
        )];
        let missing = uncovered(&owned, &wanted);
        assert_eq!(missing.len(), 1);
        assert_eq!(
            missing[0].compact_string(),
            r#"{APIGroups:[""], Resources:["pods"], Verbs:["delete" "create"]}"#
        );
        let star = vec![rule(
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
        )];
        assert!(uncovered(&star, &wanted).is_empty());
        // Holding `pods` does not grant `*`.
        let wild = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*"]}),
        )];
        assert_eq!(uncovered(&owned, &wild).len(), 1);
    }
}
