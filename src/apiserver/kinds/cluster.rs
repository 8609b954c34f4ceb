//! RBAC, PriorityClasses, PodDisruptionBudgets and HorizontalPodAutoscalers.

use serde_json::{Value, json};

use super::field::{Bad, Errors, Path, go_quote, go_string_slice};
use super::json::{self, default, obj};
use super::meta;
use super::names;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

pub fn default_binding(b: &mut Value) {
    let role_ref = obj(b, "roleRef");
    default(role_ref, "apiGroup", json!(RBAC_GROUP));
    for s in json::items_mut(b, "subjects") {
        if json::str_or(s, "apiGroup").is_empty() {
            match json::str_or(s, "kind") {
                "ServiceAccount" => s["apiGroup"] = json!(""),
                "User" | "Group" => s["apiGroup"] = json!(RBAC_GROUP),
                _ => {}
            }
        }
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    json::items(v, key)
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

pub fn validate_role(role: &Value, namespaced: bool, errs: &mut Errors) {
    let aggregated = json::is_set(role, "aggregationRule");
    for (i, rule) in json::items(role, "rules").enumerate() {
        let rp = Path::root("rules").index(i);
        if json::len_of(rule, "verbs") == 0 {
            errs.required(&rp.child("verbs"), "verbs must contain at least one value");
        }
        let urls = strings(rule, "nonResourceURLs");
        if !urls.is_empty() {
            if namespaced {
                errs.invalid(
                    &rp.child("nonResourceURLs"),
                    Bad::Raw(go_string_slice(&urls)),
                    "namespaced rules cannot apply to non-resource URLs",
                );
            }
            if json::len_of(rule, "apiGroups") > 0
                || json::len_of(rule, "resources") > 0
                || json::len_of(rule, "resourceNames") > 0
            {
                errs.invalid(
                    &rp.child("nonResourceURLs"),
                    Bad::Raw(go_string_slice(&urls)),
                    "rules cannot apply to both regular resources and non-resource URLs",
                );
            }
            continue;
        }
        if json::len_of(rule, "apiGroups") == 0 {
            errs.required(
                &rp.child("apiGroups"),
                "resource rules must supply at least one api group",
            );
        }
        if json::len_of(rule, "resources") == 0 {
            errs.required(
                &rp.child("resources"),
                "resource rules must supply at least one resource",
            );
        }
    }
    if let Some(ar) = role.get("aggregationRule").filter(|_| aggregated) {
        for (i, sel) in json::items(ar, "clusterRoleSelectors").enumerate() {
            meta::validate_label_selector(
                sel,
                &Path::root("aggregationRule")
                    .child("clusterRoleSelectors")
                    .index(i),
                errs,
            );
        }
    }
}

pub fn validate_binding(b: &Value, namespaced: bool, errs: &mut Errors) {
    let rr = json::at(b, "roleRef");
    let rp = Path::root("roleRef");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    let kind = json::str_or(rr, "kind");
    if !kinds.contains(&kind) {
        errs.not_supported(&rp.child("kind"), kind, kinds);
    }
    let group = json::str_or(rr, "apiGroup");
    if group != RBAC_GROUP {
        errs.not_supported(&rp.child("apiGroup"), group, &[RBAC_GROUP]);
    }
    let name = json::str_or(rr, "name");
    if name.is_empty() {
        errs.required(&rp.child("name"), "");
    } else {
        for msg in names::path_segment_name(name) {
            errs.invalid(&rp.child("name"), Bad::str(name), msg);
        }
    }
    for (i, s) in json::items(b, "subjects").enumerate() {
        let sp = Path::root("subjects").index(i);
        let name = json::str_or(s, "name");
        if name.is_empty() {
            errs.required(&sp.child("name"), "");
        }
        let group = json::str_or(s, "apiGroup");
        match json::str_or(s, "kind") {
            "ServiceAccount" => {
                if !name.is_empty() {
                    for msg in names::dns1123_subdomain(name) {
                        errs.invalid(&sp.child("name"), Bad::str(name), msg);
                    }
                }
                if !group.is_empty() {
                    errs.not_supported(&sp.child("apiGroup"), group, &[""]);
                }
                if !namespaced && json::str_or(s, "namespace").is_empty() {
                    errs.required(&sp.child("namespace"), "");
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    errs.not_supported(&sp.child("apiGroup"), group, &[RBAC_GROUP]);
                }
            }
            other => errs.not_supported(
                &sp.child("kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            ),
        }
    }
}

pub fn validate_binding_update(old: &Value, new: &Value, errs: &mut Errors) {
    if old.get("roleRef") != new.get("roleRef") {
        let rr = json::at(new, "roleRef");
        errs.invalid(
            &Path::root("roleRef"),
            Bad::Raw(format!(
                "rbac.RoleRef{{APIGroup:{}, Kind:{}, Name:{}}}",
                go_quote(json::str_or(rr, "apiGroup")),
                go_quote(json::str_or(rr, "kind")),
                go_quote(json::str_or(rr, "name"))
            )),
            "cannot change roleRef",
        );
    }
}

/// The two PriorityClasses every cluster has.
pub const SYSTEM_PRIORITY_CLASSES: &[(&str, i64, &str)] = &[
    (
        "system-node-critical",
        2000001000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2000000000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];

pub fn default_priority_class(pc: &mut Value) {
    default(pc, "preemptionPolicy", json!("PreemptLowerPriority"));
}

pub fn validate_priority_class(pc: &Value, errs: &mut Errors) {
    let name = json::str_or(json::at(pc, "metadata"), "name");
    let system = SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _, _)| *n == name);
    let value = json::int_at(pc, "value").unwrap_or(0);
    match system {
        Some((_, v, _)) if *v != value => errs.invalid(
            &Path::root("metadata").child("name"),
            Bad::str(name),
            "is a reserved system priority class name",
        ),
        Some(_) => {}
        None if name.starts_with("system-") => errs.invalid(
            &Path::root("metadata").child("name"),
            Bad::str(name),
            "priority class names with 'system-' prefix are reserved",
        ),
        None if value > 1_000_000_000 => errs.forbidden(
            &Path::root("value"),
            "maximum allowed value of a user defined priority is 1000000000",
        ),
        None => {}
    }
    errs.check_enum(
        pc,
        "preemptionPolicy",
        &Path::default(),
        &["Never", "PreemptLowerPriority"],
    );
}

pub fn validate_priority_class_update(old: &Value, new: &Value, errs: &mut Errors) {
    if old.get("value") != new.get("value") {
        errs.forbidden(&Path::root("value"), "may not be changed in an update.");
    }
    if old.get("preemptionPolicy") != new.get("preemptionPolicy") {
        errs.invalid(
            &Path::root("preemptionPolicy"),
            Bad::json(json::at(new, "preemptionPolicy")),
            "field is immutable",
        );
    }
}

fn validate_int_or_percent(v: &Value, path: &Path, errs: &mut Errors) {
    match v {
        Value::Number(n) if n.as_i64().unwrap_or(-1) < 0 => errs.invalid(
            path,
            Bad::Int(n.as_i64().unwrap_or(-1)),
            "must be greater than or equal to 0",
        ),
        Value::String(s) => {
            let pct = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
                .and_then(|d| d.parse::<i64>().ok());
            match pct {
                None => errs.invalid(
                    path,
                    Bad::str(s),
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ),
                Some(p) if p > 100 => {
                    errs.invalid(path, Bad::str(s), "must not be greater than 100%")
                }
                Some(_) => {}
            }
        }
        _ => {}
    }
}

pub fn prepare_pdb(pdb: &mut Value) {
    pdb["status"] = json!({"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0});
}

pub fn validate_pdb(pdb: &Value, errs: &mut Errors) {
    let spec = json::at(pdb, "spec");
    let path = Path::root("spec");
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        errs.invalid(
            &path,
            Bad::Raw("policy.PodDisruptionBudgetSpec{...}".into()),
            "minAvailable and maxUnavailable cannot be both set",
        );
    }
    if let Some(m) = min {
        validate_int_or_percent(m, &path.child("minAvailable"), errs);
    }
    if let Some(m) = max {
        validate_int_or_percent(m, &path.child("maxUnavailable"), errs);
    }
    if let Some(sel) = spec.get("selector").filter(|s| s.is_object()) {
        meta::validate_label_selector(sel, &path.child("selector"), errs);
    }
    errs.check_enum(
        spec,
        "unhealthyPodEvictionPolicy",
        &path,
        &["AlwaysAllow", "IfHealthyBudget"],
    );
}

fn default_scaling_rules(rules: &mut Value, up: bool) {
    if !rules.is_object() {
        *rules = json!({});
    }
    default(rules, "selectPolicy", json!("Max"));
    if up {
        default(rules, "stabilizationWindowSeconds", json!(0));
        default(
            rules,
            "policies",
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                   {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    } else {
        default(
            rules,
            "policies",
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
}

/// autoscaling/v2 defaults: one replica minimum, 80% CPU when no metric is given, and the
/// standard scaling rules wherever a behavior is given.
pub fn default_hpa(hpa: &mut Value) {
    let spec = obj(hpa, "spec");
    default(spec, "minReplicas", json!(1));
    if json::len_of(spec, "metrics") == 0 {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    if let Some(b) = spec.get_mut("behavior").filter(|b| b.is_object()) {
        default_scaling_rules(obj(b, "scaleUp"), true);
        default_scaling_rules(obj(b, "scaleDown"), false);
    }
    for m in json::items_mut(spec, "metrics") {
        for source in [
            "resource",
            "pods",
            "object",
            "external",
            "containerResource",
        ] {
            if let Some(t) = m.get_mut(source).and_then(|s| s.get_mut("target")) {
                for key in ["value", "averageValue"] {
                    if let Some(q) = t.get_mut(key) {
                        super::quantity::canonicalize(q);
                    }
                }
            }
        }
    }
}

pub fn prepare_hpa(hpa: &mut Value) {
    hpa["status"] = json!({"currentMetrics": null, "desiredReplicas": 0});
}

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

pub fn validate_hpa(hpa: &Value, errs: &mut Errors) {
    let spec = json::at(hpa, "spec");
    let path = Path::root("spec");
    let target = json::at(spec, "scaleTargetRef");
    let tp = path.child("scaleTargetRef");
    if json::str_or(target, "kind").is_empty() {
        errs.required(&tp.child("kind"), "");
    }
    let name = json::str_or(target, "name");
    if name.is_empty() {
        errs.required(&tp.child("name"), "");
    } else {
        for msg in names::path_segment_name(name) {
            errs.invalid(&tp.child("name"), Bad::str(name), msg);
        }
    }
    let min = json::int_at(spec, "minReplicas").unwrap_or(1);
    if min < 1 {
        errs.invalid(
            &path.child("minReplicas"),
            Bad::Int(min),
            "must be greater than or equal to 1",
        );
    }
    let max = json::int_at(spec, "maxReplicas").unwrap_or(0);
    if max < 1 {
        errs.invalid(
            &path.child("maxReplicas"),
            Bad::Int(max),
            "must be greater than 0",
        );
    } else if max < min {
        errs.invalid(
            &path.child("maxReplicas"),
            Bad::Int(max),
            "must be greater than or equal to `minReplicas`",
        );
    }
    for (i, m) in json::items(spec, "metrics").enumerate() {
        let mp = path.child("metrics").index(i);
        let ty = json::str_or(m, "type");
        if ty.is_empty() {
            errs.required(&mp.child("type"), "must specify a metric source type");
            continue;
        }
        if !METRIC_TYPES.contains(&ty) {
            errs.not_supported(&mp.child("type"), ty, METRIC_TYPES);
            continue;
        }
        let key = {
            let mut k = ty.to_string();
            k[..1].make_ascii_lowercase();
            if ty == "ContainerResource" {
                "containerResource".to_string()
            } else {
                k
            }
        };
        let Some(src) = m.get(&key).filter(|s| s.is_object()) else {
            errs.required(
                &mp.child(&key),
                format!("must populate information for the given metric source (`type` is {ty:?})"),
            );
            continue;
        };
        let t = json::at(src, "target");
        match json::str_or(t, "type") {
            "Utilization" | "Value" | "AverageValue" => {}
            "" => errs.required(
                &mp.child(&key).child("target").child("type"),
                "must specify a metric target type",
            ),
            other => errs.not_supported(
                &mp.child(&key).child("target").child("type"),
                other,
                &["AverageValue", "Utilization", "Value"],
            ),
        }
    }
}

/// kube-aggregator's APIService validation: the name is `<version>.<group>`, the version is set
/// and both priorities are positive (the group's below 20000).
pub fn validate_api_service(svc: &Value, errs: &mut Errors) {
    let name = json::str_or(json::at(svc, "metadata"), "name");
    let spec = json::at(svc, "spec");
    let version = json::str_or(spec, "version");
    let group = json::str_or(spec, "group");
    if name != format!("{version}.{group}") {
        errs.invalid(
            &Path::root("metadata").child("name"),
            Bad::str(name),
            "must be `spec.version+\".\"+spec.group`",
        );
    }
    if version.is_empty() {
        errs.required(&Path::root("spec").child("version"), "");
    }
    let group_priority = json::int_at(spec, "groupPriorityMinimum").unwrap_or(0);
    if !(1..=20000).contains(&group_priority) {
        errs.invalid(
            &Path::root("spec").child("groupPriorityMinimum"),
            Bad::json(json::at(spec, "groupPriorityMinimum")),
            "must be positive and less than 20000",
        );
    }
    let version_priority = json::int_at(spec, "versionPriority").unwrap_or(0);
    if version_priority < 1 {
        errs.invalid(
            &Path::root("spec").child("versionPriority"),
            Bad::json(json::at(spec, "versionPriority")),
            "must be positive",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_default_and_validate() {
        let mut b = json!({"roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "jane"}, {"kind": "ServiceAccount", "name": "default"}]});
        default_binding(&mut b);
        assert_eq!(b["roleRef"]["apiGroup"], RBAC_GROUP);
        assert_eq!(b["subjects"][0]["apiGroup"], RBAC_GROUP);
        assert_eq!(b["subjects"][1]["apiGroup"], "");
        let mut errs = Errors::new();
        validate_binding(&b, false, &mut errs);
        assert_eq!(errs.0[0].message(), "subjects[1].namespace: Required value");
    }

    #[test]
    fn hpa_defaults_and_limits() {
        let mut hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 0}});
        default_hpa(&mut hpa);
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        let mut errs = Errors::new();
        validate_hpa(&hpa, &mut errs);
        assert_eq!(
            errs.0[0].message(),
            "spec.maxReplicas: Invalid value: 0: must be greater than 0"
        );
    }
}
