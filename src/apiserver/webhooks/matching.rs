//! Which webhooks a request goes to, decided as kube-apiserver's webhook dispatcher decides:
//! rules (operation, group, version, resource/subresource, scope), matchPolicy, then the
//! namespace and object selectors, then the CEL matchConditions.

use std::sync::Arc;

use serde_json::Value;

use crate::apiserver::kinds::{json as j, meta};
use crate::apiserver::resources::{self, ResourceDef};

/// What a request is about, in the terms rules are written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub operation: &'a str,
    pub group: &'a str,
    pub version: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespaced: bool,
}

fn contains_or_star(list: &[&str], value: &str) -> bool {
    list.iter().any(|v| *v == "*" || *v == value)
}

/// One rule of `rules` against the request (`rules.Matcher` in Kubernetes).
pub fn rule_matches(rule: &Value, t: &Target) -> bool {
    let strs = |key| -> Vec<&str> { j::items(rule, key).filter_map(Value::as_str).collect() };
    if !contains_or_star(&strs("operations"), t.operation)
        || !contains_or_star(&strs("apiGroups"), t.group)
        || !contains_or_star(&strs("apiVersions"), t.version)
    {
        return false;
    }
    let resource_ok = strs("resources").iter().any(|r| {
        let (res, sub) = r.split_once('/').unwrap_or((r, ""));
        (res == "*" || res == t.resource) && (sub == "*" || sub == t.subresource)
    });
    let scope_ok = match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        "Cluster" => !t.namespaced,
        "Namespaced" => t.namespaced,
        _ => true,
    };
    resource_ok && scope_ok
}

/// The (group, version) pairs serving the same stored objects as `def`: what matchPolicy
/// Equivalent lets a rule written for another version match.
pub fn equivalents(def: &ResourceDef) -> Vec<(&'static str, &'static str)> {
    let storage = def.key_prefix();
    resources::all()
        .into_iter()
        .filter(|d| d.plural == def.plural && d.key_prefix() == storage)
        .map(|d| (d.group, d.version))
        .collect()
}

/// Whether a webhook's rules take the request, and through which (group, version): the
/// requested one, or under Equivalent another version of the same objects.
pub fn rules_match(
    hook: &Value,
    t: &Target,
    equivalent: &[(&str, &str)],
) -> Option<(String, String)> {
    let rules: Vec<&Value> = j::items(hook, "rules").collect();
    if rules.iter().any(|r| rule_matches(r, t)) {
        return Some((t.group.to_string(), t.version.to_string()));
    }
    if hook.get("matchPolicy").and_then(Value::as_str) == Some("Exact") {
        return None;
    }
    for (group, version) in equivalent {
        let other = Target {
            group,
            version,
            ..t.clone()
        };
        if rules.iter().any(|r| rule_matches(r, &other)) {
            return Some((group.to_string(), version.to_string()));
        }
    }
    None
}

/// `objectSelector`: the new or the old object's labels (either one matching is enough).
pub fn object_selector_matches(hook: &Value, obj: Option<&Value>, old: Option<&Value>) -> bool {
    let Some(sel) = hook.get("objectSelector").filter(|s| s.is_object()) else {
        return true;
    };
    if meta::selector_is_empty(sel) {
        return true;
    }
    [obj, old]
        .into_iter()
        .flatten()
        .any(|o| meta::selector_matches(sel, o.pointer("/metadata/labels")))
}

/// `namespaceSelector` against the labels of the request's namespace (`None` for a
/// cluster-scoped object other than a Namespace, which no namespace selector exempts).
pub fn namespace_selector_matches(hook: &Value, namespace_labels: Option<&Value>) -> bool {
    let Some(sel) = hook.get("namespaceSelector").filter(|s| s.is_object()) else {
        return true;
    };
    match namespace_labels {
        None => true,
        Some(labels) => meta::selector_is_empty(sel) || meta::selector_matches(sel, Some(labels)),
    }
}

pub fn compile(expression: &str) -> Result<Arc<cel::Program>, String> {
    crate::apiserver::crd::cel::compile(expression)
}

/// The matchConditions: all true to call the webhook. An error is the webhook's failure to
/// handle by its failurePolicy.
pub fn conditions_match(
    hook: &Value,
    object: &Value,
    old_object: &Value,
    request: &Value,
) -> Result<bool, String> {
    let vars = [
        ("object", object),
        ("oldObject", old_object),
        ("request", request),
    ];
    for condition in j::items(hook, "matchConditions") {
        let name = j::str_or(condition, "name");
        let program = compile(j::str_or(condition, "expression"))
            .map_err(|e| format!("compilation failed for matchCondition {name:?}: {e}"))?;
        match crate::apiserver::crd::cel::run_with(&program, &vars) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Ok(false),
            Ok(other) => {
                return Err(format!(
                    "matchCondition {name:?} did not evaluate to a bool: {other:?}"
                ));
            }
            Err(e) => return Err(format!("matchCondition {name:?} failed: {e}")),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn target<'a>(
        op: &'a str,
        group: &'a str,
        version: &'a str,
        res: &'a str,
        sub: &'a str,
    ) -> Target<'a> {
        Target {
            operation: op,
            group,
            version,
            resource: res,
            subresource: sub,
            namespaced: true,
        }
    }

    fn rule(ops: &[&str], groups: &[&str], versions: &[&str], res: &[&str]) -> Value {
        json!({"operations": ops, "apiGroups": groups, "apiVersions": versions, "resources": res, "scope": "*"})
    }

    #[test]
    fn rules_match_operations_groups_versions_and_resources() {
        let r = rule(&["CREATE"], &[""], &["v1"], &["pods"]);
        assert!(rule_matches(&r, &target("CREATE", "", "v1", "pods", "")));
        assert!(!rule_matches(&r, &target("UPDATE", "", "v1", "pods", "")));
        assert!(!rule_matches(
            &r,
            &target("CREATE", "apps", "v1", "pods", "")
        ));
        assert!(!rule_matches(
            &r,
            &target("CREATE", "", "v1", "pods", "status")
        ));
        assert!(!rule_matches(
            &r,
            &target("CREATE", "", "v1", "services", "")
        ));
        let any = rule(&["*"], &["*"], &["*"], &["*"]);
        assert!(rule_matches(
            &any,
            &target("DELETE", "apps", "v1", "deployments", "")
        ));
        assert!(!rule_matches(
            &any,
            &target("UPDATE", "apps", "v1", "deployments", "scale")
        ));
    }

    #[test]
    fn subresource_wildcards_match_as_kubernetes_splits_them() {
        let all = rule(&["*"], &["*"], &["*"], &["*/*"]);
        assert!(rule_matches(
            &all,
            &target("UPDATE", "", "v1", "pods", "status")
        ));
        assert!(rule_matches(&all, &target("UPDATE", "", "v1", "pods", "")));
        let status = rule(&["*"], &[""], &["v1"], &["*/status"]);
        assert!(rule_matches(
            &status,
            &target("UPDATE", "", "v1", "services", "status")
        ));
        assert!(!rule_matches(
            &status,
            &target("UPDATE", "", "v1", "services", "")
        ));
        let pods_any = rule(&["*"], &[""], &["v1"], &["pods/*"]);
        assert!(rule_matches(
            &pods_any,
            &target("CREATE", "", "v1", "pods", "eviction")
        ));
        // As in Kubernetes' matcher, `x/*` takes `x` itself too: `*` matches the empty
        // subresource.
        assert!(rule_matches(
            &pods_any,
            &target("CREATE", "", "v1", "pods", "")
        ));
        assert!(!rule_matches(
            &pods_any,
            &target("CREATE", "", "v1", "services", "")
        ));
    }

    #[test]
    fn scope_limits_rules_to_namespaced_or_cluster_objects() {
        let mut r = rule(&["*"], &["*"], &["*"], &["*"]);
        r["scope"] = json!("Cluster");
        let mut t = target("CREATE", "", "v1", "namespaces", "");
        t.namespaced = false;
        assert!(rule_matches(&r, &t));
        assert!(!rule_matches(&r, &target("CREATE", "", "v1", "pods", "")));
        r["scope"] = json!("Namespaced");
        assert!(!rule_matches(&r, &t));
        assert!(rule_matches(&r, &target("CREATE", "", "v1", "pods", "")));
    }

    #[test]
    fn equivalent_match_policy_reaches_other_versions_of_the_same_objects() {
        let v2 = resources::find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        let eq = equivalents(v2);
        assert!(eq.contains(&("autoscaling", "v1")) && eq.contains(&("autoscaling", "v2")));
        let mut hook = json!({"rules": [rule(&["CREATE"], &["autoscaling"], &["v1"], &["horizontalpodautoscalers"])]});
        let t = target(
            "CREATE",
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "",
        );
        assert_eq!(
            rules_match(&hook, &t, &eq),
            Some(("autoscaling".into(), "v1".into()))
        );
        hook["matchPolicy"] = json!("Exact");
        assert_eq!(rules_match(&hook, &t, &eq), None);
        let events = resources::find("", "v1", "events").unwrap();
        assert!(equivalents(events).contains(&("events.k8s.io", "v1")));
    }

    #[test]
    fn selectors_read_namespace_and_object_labels() {
        let hook = json!({
            "namespaceSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]},
            "objectSelector": {"matchLabels": {"app": "web"}},
        });
        assert!(namespace_selector_matches(
            &hook,
            Some(&json!({"team": "a"}))
        ));
        assert!(!namespace_selector_matches(
            &hook,
            Some(&json!({"skip": "yes"}))
        ));
        assert!(namespace_selector_matches(&hook, None));
        let web = json!({"metadata": {"labels": {"app": "web"}}});
        let db = json!({"metadata": {"labels": {"app": "db"}}});
        assert!(object_selector_matches(&hook, Some(&web), None));
        assert!(!object_selector_matches(&hook, Some(&db), None));
        assert!(object_selector_matches(&hook, Some(&db), Some(&web)));
        assert!(object_selector_matches(
            &json!({"objectSelector": {}}),
            Some(&db),
            None
        ));
    }

    #[test]
    fn match_conditions_are_cel_over_object_and_request() {
        let hook = json!({"matchConditions": [
            {"name": "not-kube-system", "expression": "request.namespace != 'kube-system'"},
            {"name": "labelled", "expression": "has(object.metadata.labels) && 'app' in object.metadata.labels"},
        ]});
        let obj = json!({"metadata": {"labels": {"app": "x"}}});
        let req = json!({"namespace": "default"});
        assert_eq!(conditions_match(&hook, &obj, &Value::Null, &req), Ok(true));
        let sys = json!({"namespace": "kube-system"});
        assert_eq!(conditions_match(&hook, &obj, &Value::Null, &sys), Ok(false));
        let bad =
            json!({"matchConditions": [{"name": "n", "expression": "object.metadata.name + 1"}]});
        assert!(conditions_match(&bad, &obj, &Value::Null, &req).is_err());
    }
}
