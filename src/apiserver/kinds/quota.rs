//! ResourceQuota accounting: what an object counts against a quota (object counts, `count/…`,
//! pods' compute requests and limits, claims' storage), and the ResourceQuota admission check
//! with Kubernetes' messages, for unscoped quotas, `scopes` and `scopeSelector` (Terminating,
//! NotTerminating, BestEffort, NotBestEffort, PriorityClass, CrossNamespacePodAffinity). The
//! quota controller uses the same accounting for status.used.

use std::collections::BTreeMap;

use serde_json::Value;

use super::quantity::Quantity;

pub type Usage = BTreeMap<String, Quantity>;

/// Resources whose quota makes every container state its request or limit.
const MUST_SPECIFY: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// The `<plural>` names Kubernetes counts without the `count/` prefix.
const LEGACY_COUNTS: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
];

fn one() -> Quantity {
    Quantity::int(1)
}

fn add(usage: &mut Usage, key: &str, q: Quantity) {
    let entry = usage.entry(key.to_string()).or_insert(Quantity::int(0));
    *entry = entry.add(&q);
}

fn terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

fn resource_list(c: &Value, list: &str) -> BTreeMap<String, Quantity> {
    c.pointer(&format!("/resources/{list}"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), Quantity::from_json(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// A container's usage in quota names (podComputeUsageHelper).
fn container_usage(c: &Value) -> Usage {
    let mut u = Usage::new();
    for (k, q) in resource_list(c, "requests") {
        match k.as_str() {
            "cpu" | "memory" | "ephemeral-storage" => {
                u.insert(k.clone(), q);
                u.insert(format!("requests.{k}"), q);
            }
            other if other.starts_with("hugepages-") => {
                u.insert(format!("requests.{k}"), q);
            }
            other if other.contains('/') => {
                u.insert(format!("requests.{k}"), q);
            }
            _ => {}
        }
    }
    for (k, q) in resource_list(c, "limits") {
        if matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage") {
            u.insert(format!("limits.{k}"), q);
        }
    }
    u
}

/// A pod's compute usage: the sum over its containers, or the largest init container where that is
/// more, plus its overhead.
pub fn pod_usage(pod: &Value) -> Usage {
    let mut usage = Usage::new();
    if terminal(pod) {
        return usage;
    }
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in &containers {
        for (k, q) in container_usage(c) {
            add(&mut usage, &k, q);
        }
    }
    for c in pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for (k, q) in container_usage(c) {
            let bigger = usage.get(&k).is_none_or(|u| q.cmp_value(u).is_gt());
            if bigger {
                usage.insert(k, q);
            }
        }
    }
    if let Some(overhead) = pod.pointer("/spec/overhead").and_then(Value::as_object) {
        for (k, v) in overhead {
            if let Some(q) = Quantity::from_json(v)
                && matches!(k.as_str(), "cpu" | "memory")
            {
                for key in [k.clone(), format!("requests.{k}"), format!("limits.{k}")] {
                    if usage.contains_key(&key) {
                        add(&mut usage, &key, q);
                    }
                }
            }
        }
    }
    usage
}

/// What one object of `plural` in `group` counts against quotas.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = match (group, plural) {
        ("", "pods") => {
            if terminal(obj) {
                return Usage::new();
            }
            pod_usage(obj)
        }
        ("", "services") => {
            let mut u = Usage::new();
            let type_ = obj
                .pointer("/spec/type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            if type_ == "LoadBalancer" {
                add(&mut u, "services.loadbalancers", one());
            }
            if matches!(type_, "NodePort" | "LoadBalancer") {
                let ports = obj
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map(Vec::len)
                    .unwrap_or(0);
                add(&mut u, "services.nodeports", Quantity::int(ports as i64));
            }
            u
        }
        ("", "persistentvolumeclaims") => {
            let mut u = Usage::new();
            if let Some(q) = obj
                .pointer("/spec/resources/requests/storage")
                .and_then(Quantity::from_json)
            {
                add(&mut u, "requests.storage", q);
                if let Some(class) = obj
                    .pointer("/spec/storageClassName")
                    .and_then(Value::as_str)
                {
                    add(
                        &mut u,
                        &format!("{class}.storageclass.storage.k8s.io/requests.storage"),
                        q,
                    );
                    add(
                        &mut u,
                        &format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
                        one(),
                    );
                }
            }
            u
        }
        _ => Usage::new(),
    };
    if group.is_empty() && LEGACY_COUNTS.contains(&plural) {
        add(&mut u, plural, one());
    }
    let count = if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    };
    add(&mut u, &count, one());
    u
}

/// Whether a pod is BestEffort: no container (or init container) requests or limits anything.
fn best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|f| {
        pod.pointer(&format!("/spec/{f}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|c| {
                ["requests", "limits"].iter().all(|l| {
                    c.pointer(&format!("/resources/{l}"))
                        .and_then(Value::as_object)
                        .is_none_or(|m| m.is_empty())
                })
            })
    })
}

/// Whether a pod falls in one of Kubernetes' quota scopes; None for a scope this server does not
/// know.
fn pod_in_scope(scope: &str, pod: &Value) -> Option<bool> {
    let terminating = pod
        .pointer("/spec/activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null());
    Some(match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "PriorityClass" => !priority_class(pod).is_empty(),
        "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
        _ => return None,
    })
}

fn priority_class(pod: &Value) -> &str {
    pod.pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether a pod's (anti-)affinity terms reach into other namespaces (a namespace list or a
/// namespace selector), which the CrossNamespacePodAffinity scope counts.
fn cross_namespace_affinity(pod: &Value) -> bool {
    let terms = |kind: &str| -> Vec<&Value> {
        let Some(a) = pod.pointer(&format!("/spec/affinity/{kind}")) else {
            return Vec::new();
        };
        let required = a
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let preferred = a
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.get("podAffinityTerm"));
        required.chain(preferred).collect()
    };
    terms("podAffinity")
        .into_iter()
        .chain(terms("podAntiAffinity"))
        .any(|t| {
            t.get("namespaces")
                .and_then(Value::as_array)
                .is_some_and(|n| !n.is_empty())
                || t.get("namespaceSelector").is_some_and(|s| !s.is_null())
        })
}

/// One `scopeSelector` expression against a pod (Kubernetes' podMatchesScopeFunc).
fn pod_matches_expression(expr: &Value, pod: &Value) -> Option<bool> {
    let scope = expr.get("scopeName").and_then(Value::as_str)?;
    let operator = expr.get("operator").and_then(Value::as_str)?;
    let values: Vec<&str> = expr
        .get("values")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if scope == "PriorityClass" {
        let class = priority_class(pod);
        return Some(match operator {
            "In" => values.contains(&class),
            "NotIn" => !values.contains(&class),
            "Exists" => !class.is_empty(),
            "DoesNotExist" => class.is_empty(),
            _ => return None,
        });
    }
    let matched = pod_in_scope(scope, pod)?;
    match operator {
        "Exists" => Some(matched),
        "DoesNotExist" => Some(!matched),
        _ => None,
    }
}

/// Whether a quota's scopes and scopeSelector take in this object: a scoped quota counts only
/// pods that match every scope and every selector expression. None when the quota names a scope
/// or operator this server does not know; such a quota is not enforced.
pub fn in_scope(quota: &Value, group: &str, plural: &str, obj: &Value) -> Option<bool> {
    let scopes: Vec<&str> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let expressions: Vec<&Value> = quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    if scopes.is_empty() && expressions.is_empty() {
        return Some(true);
    }
    if (group, plural) != ("", "pods") {
        return Some(false);
    }
    let mut all = true;
    for scope in scopes {
        all &= pod_in_scope(scope, obj)?;
    }
    for expr in expressions {
        all &= pod_matches_expression(expr, obj)?;
    }
    Some(all)
}

/// The quota names a quota's hard list can hold for this kind (so a quota only on other kinds
/// does not apply).
fn hard_list(quota: &Value) -> Usage {
    quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), Quantity::from_json(v)?)))
                .collect()
        })
        .unwrap_or_default()
}

/// quota's prettyPrint: `k=v` pairs in key order, comma separated.
fn pretty(list: &Usage, keys: &[String]) -> String {
    keys.iter()
        .map(|k| {
            let q = list.get(k).copied().unwrap_or(Quantity::int(0));
            format!("{k}={}", q.canonical())
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `must specify …` for a pod whose containers leave out what a quota constrains.
fn missing_requests(pod: &Value, hard: &Usage) -> Option<String> {
    let required: Vec<&str> = MUST_SPECIFY
        .iter()
        .copied()
        .filter(|r| hard.contains_key(*r))
        .collect();
    if required.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for field in ["containers", "initContainers"] {
        for c in pod
            .pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let have = container_usage(c);
            for r in &required {
                if !have.contains_key(*r) {
                    let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
                    let names = missing.entry(r).or_default();
                    names.push(name.to_string());
                    names.sort();
                    names.dedup();
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| format!("{r} for: {}", names.join(",")))
        .collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// Whether an update can change what an object of this kind counts: Kubernetes re-checks quota on
/// updates of services (type and ports) and claims (expansion); pods' resources do not change.
pub fn checked_on_update(group: &str, plural: &str) -> bool {
    matches!((group, plural), ("", "services" | "persistentvolumeclaims"))
}

/// The ResourceQuota admission check of an object against every quota of its namespace: a new
/// object (`old` None) by its whole usage, an update by what it adds to the old version's.
/// `existing` are the namespace's objects of the same kind (the old version among them). The
/// error is the message after `<kind> "<name>" is forbidden: `.
pub fn admit(
    group: &str,
    plural: &str,
    obj: &Value,
    old: Option<&Value>,
    quotas: &[Value],
    existing: &[Value],
) -> Result<(), String> {
    let whole = usage(group, plural, obj);
    for quota in quotas {
        let name = quota
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if in_scope(quota, group, plural, obj) != Some(true) {
            continue;
        }
        let hard = hard_list(quota);
        if old.is_none()
            && (group, plural) == ("", "pods")
            && !terminal(obj)
            && let Some(msg) = missing_requests(obj, &hard)
        {
            return Err(format!("failed quota: {name}: {msg}"));
        }
        let mut requested = whole.clone();
        if let Some(old) = old.filter(|o| in_scope(quota, group, plural, o) == Some(true)) {
            for (k, q) in usage(group, plural, old) {
                if let Some(r) = requested.get_mut(&k) {
                    *r = r.sub(&q);
                }
            }
        }
        let keys: Vec<String> = requested
            .iter()
            .filter(|(k, q)| hard.contains_key(*k) && q.cmp_value(&Quantity::int(0)).is_gt())
            .map(|(k, _)| k.clone())
            .collect();
        if keys.is_empty() {
            continue;
        }
        let mut used = Usage::new();
        for o in existing
            .iter()
            .filter(|o| in_scope(quota, group, plural, o) == Some(true))
        {
            for (k, q) in usage(group, plural, o) {
                if keys.contains(&k) {
                    add(&mut used, &k, q);
                }
            }
        }
        let exceeded: Vec<String> = keys
            .iter()
            .filter(|k| {
                let total = used
                    .get(*k)
                    .copied()
                    .unwrap_or(Quantity::int(0))
                    .add(&requested[*k]);
                total.cmp_value(&hard[*k]).is_gt()
            })
            .cloned()
            .collect();
        if !exceeded.is_empty() {
            return Err(format!(
                "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                pretty(&requested, &exceeded),
                pretty(&used, &exceeded),
                pretty(&hard, &exceeded)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(cpu: &str) -> Value {
        json!({"spec": {"containers": [{"name": "app", "resources": {
            "requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"cpu": cpu, "memory": "64Mi"}}}]}})
    }

    #[test]
    fn pods_count_requests_and_limits() {
        let u = pod_usage(&pod("250m"));
        assert_eq!(u["requests.cpu"].canonical(), "250m");
        assert_eq!(u["limits.memory"].canonical(), "64Mi");
        let counted = usage("", "pods", &pod("1"));
        assert_eq!(counted["pods"].canonical(), "1");
        assert_eq!(counted["count/pods"].canonical(), "1");
        assert_eq!(
            usage("apps", "deployments", &json!({}))["count/deployments.apps"].canonical(),
            "1"
        );
    }

    #[test]
    fn admission_reports_what_exceeds() {
        let quota = json!({"metadata": {"name": "q"}, "spec": {"hard": {"requests.cpu": "1", "pods": "3"}}});
        let existing = vec![pod("500m"), pod("250m")];
        assert!(
            admit(
                "",
                "pods",
                &pod("250m"),
                None,
                std::slice::from_ref(&quota),
                &existing
            )
            .is_ok()
        );
        let err = admit(
            "",
            "pods",
            &pod("500m"),
            None,
            std::slice::from_ref(&quota),
            &existing,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "exceeded quota: q, requested: requests.cpu=500m, used: requests.cpu=750m, limited: requests.cpu=1"
        );
        let scoped = json!({"metadata": {"name": "be"}, "spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort"]}});
        let bare = json!({"spec": {"containers": [{"name": "app"}]}});
        assert_eq!(in_scope(&scoped, "", "pods", &bare), Some(true));
        assert_eq!(in_scope(&scoped, "", "pods", &pod("1")), Some(false));
        assert!(
            admit(
                "",
                "pods",
                &pod("1"),
                None,
                std::slice::from_ref(&scoped),
                std::slice::from_ref(&bare)
            )
            .is_ok()
        );
        assert!(
            admit(
                "",
                "pods",
                &bare,
                None,
                std::slice::from_ref(&scoped),
                std::slice::from_ref(&bare)
            )
            .is_err()
        );
        let err = admit("", "pods", &bare, None, &[quota], &[]).unwrap_err();
        assert_eq!(err, "failed quota: q: must specify requests.cpu for: app");
    }

    #[test]
    fn scope_selectors_pick_pods_by_priority_class_and_scope() {
        let quota = |exprs: Value| json!({"spec": {"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": exprs}}});
        let high = json!({"spec": {"priorityClassName": "high", "containers": [{"name": "a"}]}});
        let plain = json!({"spec": {"containers": [{"name": "a"}]}});
        let in_high = quota(
            json!([{"scopeName": "PriorityClass", "operator": "In", "values": ["high", "top"]}]),
        );
        assert_eq!(in_scope(&in_high, "", "pods", &high), Some(true));
        assert_eq!(in_scope(&in_high, "", "pods", &plain), Some(false));
        assert_eq!(in_scope(&in_high, "", "services", &json!({})), Some(false));
        let not_in =
            quota(json!([{"scopeName": "PriorityClass", "operator": "NotIn", "values": ["high"]}]));
        assert_eq!(in_scope(&not_in, "", "pods", &high), Some(false));
        assert_eq!(in_scope(&not_in, "", "pods", &plain), Some(true));
        let any_class = quota(json!([{"scopeName": "PriorityClass", "operator": "Exists"}]));
        assert_eq!(in_scope(&any_class, "", "pods", &high), Some(true));
        assert_eq!(in_scope(&any_class, "", "pods", &plain), Some(false));
        // Expressions and scopes must all hold.
        let both = quota(json!([
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]},
            {"scopeName": "BestEffort", "operator": "DoesNotExist"}
        ]));
        assert_eq!(in_scope(&both, "", "pods", &high), Some(false));
        let mut high_burstable = high.clone();
        high_burstable["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "1"}});
        assert_eq!(in_scope(&both, "", "pods", &high_burstable), Some(true));
        let cross =
            quota(json!([{"scopeName": "CrossNamespacePodAffinity", "operator": "Exists"}]));
        let affine = json!({"spec": {"containers": [], "affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "k", "namespaceSelector": {}}]}}}});
        assert_eq!(in_scope(&cross, "", "pods", &affine), Some(true));
        assert_eq!(in_scope(&cross, "", "pods", &plain), Some(false));
        let unknown = quota(json!([{"scopeName": "Moonphase", "operator": "Exists"}]));
        assert_eq!(in_scope(&unknown, "", "pods", &plain), None);
    }
}
