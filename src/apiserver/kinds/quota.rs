//! ResourceQuota accounting: what an object counts against a quota (object counts, `count/…`,
//! pods' compute requests and limits, claims' storage), and the ResourceQuota admission check
//! with Kubernetes' messages, for unscoped quotas and the Terminating/NotTerminating/BestEffort/
//! NotBestEffort scopes. The quota controller uses the same accounting for status.used.

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

/// Whether a quota's scopes (Terminating, NotTerminating, BestEffort, NotBestEffort) take in
/// this object: scoped quotas count only pods that match every scope. None when the quota
/// uses a scope this server does not evaluate (a scopeSelector); such a quota is not enforced.
pub fn in_scope(quota: &Value, group: &str, plural: &str, obj: &Value) -> Option<bool> {
    if quota
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .is_some_and(|e| !e.is_empty())
    {
        return None;
    }
    let scopes: Vec<&str> = quota
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if scopes.is_empty() {
        return Some(true);
    }
    if (group, plural) != ("", "pods") {
        return Some(false);
    }
    let terminating = obj
        .pointer("/spec/activeDeadlineSeconds")
        .is_some_and(|v| !v.is_null());
    let mut all = true;
    for scope in scopes {
        all &= match scope {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => best_effort(obj),
            "NotBestEffort" => !best_effort(obj),
            _ => return None,
        };
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

/// The ResourceQuota admission check of a new object against every quota of its namespace;
/// `existing` are the namespace's objects of the same kind. The error is the message after
/// `<kind> "<name>" is forbidden: `.
pub fn admit(
    group: &str,
    plural: &str,
    obj: &Value,
    quotas: &[Value],
    existing: &[Value],
) -> Result<(), String> {
    let requested = usage(group, plural, obj);
    for quota in quotas {
        let name = quota
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if in_scope(quota, group, plural, obj) != Some(true) {
            continue;
        }
        let hard = hard_list(quota);
        if (group, plural) == ("", "pods")
            && !terminal(obj)
            && let Some(msg) = missing_requests(obj, &hard)
        {
            return Err(format!("failed quota: {name}: {msg}"));
        }
        let keys: Vec<String> = requested
            .keys()
            .filter(|k| hard.contains_key(*k))
            .cloned()
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
                std::slice::from_ref(&quota),
                &existing
            )
            .is_ok()
        );
        let err = admit(
            "",
            "pods",
            &pod("500m"),
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
                std::slice::from_ref(&scoped),
                std::slice::from_ref(&bare)
            )
            .is_err()
        );
        let err = admit("", "pods", &bare, &[quota], &[]).unwrap_err();
        assert_eq!(err, "failed quota: q: must specify requests.cpu for: app");
    }
}
