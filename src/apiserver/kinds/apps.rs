//! Workload controllers' objects: Deployments, ReplicaSets, StatefulSets, DaemonSets,
//! ReplicationControllers, ControllerRevisions and PodTemplates.

use serde_json::{Value, json};

use super::field::{Bad, Errors, Path, go_quote, go_string_map};
use super::json::{self, default, obj};
use super::meta;
use super::pod;

fn int_or_string_go(v: &Value) -> String {
    match v {
        Value::String(s) => format!(
            "intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}",
            go_quote(s)
        ),
        other => format!(
            "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
            other.as_i64().unwrap_or(0)
        ),
    }
}

pub fn default_deployment(d: &mut Value) {
    let spec = obj(d, "spec");
    default(spec, "replicas", json!(1));
    let strategy = obj(spec, "strategy");
    default(strategy, "type", json!("RollingUpdate"));
    if json::str_at(strategy, "type") == Some("RollingUpdate") {
        let ru = obj(strategy, "rollingUpdate");
        default(ru, "maxUnavailable", json!("25%"));
        default(ru, "maxSurge", json!("25%"));
    }
    default(spec, "revisionHistoryLimit", json!(10));
    default(spec, "progressDeadlineSeconds", json!(600));
    pod::default_template(obj(spec, "template"));
}

pub fn default_replica_set(rs: &mut Value) {
    let spec = obj(rs, "spec");
    default(spec, "replicas", json!(1));
    pod::default_template(obj(spec, "template"));
}

pub fn default_stateful_set(sts: &mut Value) {
    let spec = obj(sts, "spec");
    default(spec, "podManagementPolicy", json!("OrderedReady"));
    let strategy = obj(spec, "updateStrategy");
    if json::str_or(strategy, "type").is_empty() {
        strategy["type"] = json!("RollingUpdate");
        obj(strategy, "rollingUpdate");
    }
    if json::str_at(strategy, "type") == Some("RollingUpdate")
        && let Some(ru) = strategy.get_mut("rollingUpdate").filter(|r| r.is_object())
    {
        default(ru, "partition", json!(0));
    }
    let retention = obj(spec, "persistentVolumeClaimRetentionPolicy");
    default(retention, "whenDeleted", json!("Retain"));
    default(retention, "whenScaled", json!("Retain"));
    default(spec, "replicas", json!(1));
    default(spec, "revisionHistoryLimit", json!(10));
    pod::default_template(obj(spec, "template"));
    // Claim templates are PersistentVolumeClaims as Go writes them: typed, with defaults and a
    // Pending status.
    for claim in json::items_mut(spec, "volumeClaimTemplates") {
        if !claim.is_object() {
            continue;
        }
        default(claim, "apiVersion", json!("v1"));
        default(claim, "kind", json!("PersistentVolumeClaim"));
        let meta = obj(claim, "metadata");
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = Value::Null;
        }
        super::storage::default_pvc_spec(obj(claim, "spec"));
        default(claim, "status", json!({"phase": "Pending"}));
    }
}

pub fn default_daemon_set(ds: &mut Value) {
    let spec = obj(ds, "spec");
    let strategy = obj(spec, "updateStrategy");
    default(strategy, "type", json!("RollingUpdate"));
    if json::str_at(strategy, "type") == Some("RollingUpdate") {
        let ru = obj(strategy, "rollingUpdate");
        default(ru, "maxUnavailable", json!(1));
        default(ru, "maxSurge", json!(0));
    }
    default(spec, "revisionHistoryLimit", json!(10));
    pod::default_template(obj(spec, "template"));
}

pub fn default_replication_controller(rc: &mut Value) {
    let spec = obj(rc, "spec");
    default(spec, "replicas", json!(1));
    if let Some(t) = spec.get_mut("template").filter(|t| t.is_object()) {
        pod::default_template(t);
    }
    let labels = spec.pointer("/template/metadata/labels").cloned();
    if let Some(labels) = labels.filter(|l| l.as_object().is_some_and(|m| !m.is_empty())) {
        if json::len_of(spec, "selector") == 0 {
            spec["selector"] = labels.clone();
        }
        let meta = obj(rc, "metadata");
        if json::len_of(meta, "labels") == 0 {
            meta["labels"] = labels;
        }
    }
}

pub fn default_pod_template(pt: &mut Value) {
    pod::default_template(obj(pt, "template"));
}

fn nonnegative(spec: &Value, key: &str, path: &Path, errs: &mut Errors) {
    if let Some(n) = json::int_at(spec, key)
        && n < 0
    {
        errs.invalid(
            &path.child(key),
            Bad::Int(n),
            "must be greater than or equal to 0",
        );
    }
}

/// The selector every apps/v1 controller needs, and that its template's labels must satisfy.
fn validate_selector_and_template(
    spec: &Value,
    path: &Path,
    what: &str,
    owner: &str,
    errs: &mut Errors,
) {
    let sel_path = path.child("selector");
    let template = spec.get("template");
    match spec.get("selector").filter(|s| s.is_object()) {
        None => errs.required(&sel_path, ""),
        Some(sel) => {
            meta::validate_label_selector(sel, &sel_path, errs);
            if meta::selector_is_empty(sel) {
                errs.invalid(
                    &sel_path,
                    Bad::Raw(meta::go_label_selector(sel)),
                    format!("empty selector is invalid for {what}"),
                );
            } else if let Some(t) = template
                && !meta::selector_matches(sel, t.pointer("/metadata/labels"))
            {
                errs.invalid(
                    &path.child("template").child("metadata").child("labels"),
                    Bad::Raw(go_string_map(
                        t.pointer("/metadata/labels").and_then(Value::as_object),
                    )),
                    "`selector` does not match template `labels`",
                );
            }
        }
    }
    pod::validate_template(
        template,
        &path.child("template"),
        &["Always"],
        Some(owner),
        errs,
    );
}

fn validate_int_or_percent(v: &Value, path: &Path, errs: &mut Errors) -> Option<(bool, i64)> {
    match v {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(0);
            if n < 0 {
                errs.invalid(path, Bad::Int(n), "must be greater than or equal to 0");
            }
            Some((false, n))
        }
        Value::String(s) => {
            let num = s.strip_suffix('%').and_then(|d| {
                (!d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
                    .then(|| d.parse::<i64>().ok())
                    .flatten()
            });
            match num {
                Some(n) => Some((true, n)),
                None => {
                    errs.invalid(
                        path,
                        Bad::str(s),
                        "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                    );
                    None
                }
            }
        }
        _ => None,
    }
}

pub fn validate_deployment(d: &Value, errs: &mut Errors) {
    let spec = json::at(d, "spec");
    let path = Path::root("spec");
    nonnegative(spec, "replicas", &path, errs);
    nonnegative(spec, "minReadySeconds", &path, errs);
    nonnegative(spec, "revisionHistoryLimit", &path, errs);
    validate_selector_and_template(spec, &path, "deployment", "ReplicaSet", errs);
    let strategy = json::at(spec, "strategy");
    let spath = path.child("strategy");
    match json::str_or(strategy, "type") {
        "Recreate" => {
            if json::is_set(strategy, "rollingUpdate") {
                errs.forbidden(
                    &spath.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                );
            }
        }
        "RollingUpdate" => {
            let ru = json::at(strategy, "rollingUpdate");
            let rpath = spath.child("rollingUpdate");
            let unavailable = ru
                .get("maxUnavailable")
                .and_then(|v| validate_int_or_percent(v, &rpath.child("maxUnavailable"), errs));
            let surge = ru
                .get("maxSurge")
                .and_then(|v| validate_int_or_percent(v, &rpath.child("maxSurge"), errs));
            if let Some((true, n)) = unavailable
                && n > 100
            {
                errs.invalid(
                    &rpath.child("maxUnavailable"),
                    Bad::str(&format!("{n}%")),
                    "must not be greater than 100%",
                );
            }
            if let (Some((_, 0)), Some((_, 0))) = (unavailable, surge) {
                errs.invalid(
                    &rpath.child("maxUnavailable"),
                    Bad::Raw(int_or_string_go(json::at(ru, "maxUnavailable"))),
                    "may not be 0 when `maxSurge` is 0",
                );
            }
        }
        "" => errs.required(&spath.child("type"), ""),
        other => errs.not_supported(&spath.child("type"), other, &["Recreate", "RollingUpdate"]),
    }
    if let Some(p) = json::int_at(spec, "progressDeadlineSeconds") {
        nonnegative(spec, "progressDeadlineSeconds", &path, errs);
        if p <= json::int_at(spec, "minReadySeconds").unwrap_or(0) {
            errs.invalid(
                &path.child("progressDeadlineSeconds"),
                Bad::Int(p),
                "must be greater than minReadySeconds",
            );
        }
    }
}

pub fn validate_replica_set(rs: &Value, errs: &mut Errors) {
    let spec = json::at(rs, "spec");
    let path = Path::root("spec");
    nonnegative(spec, "replicas", &path, errs);
    nonnegative(spec, "minReadySeconds", &path, errs);
    validate_selector_and_template(spec, &path, "deployment", "ReplicaSet", errs);
}

pub fn validate_stateful_set(sts: &Value, errs: &mut Errors) {
    let spec = json::at(sts, "spec");
    let path = Path::root("spec");
    nonnegative(spec, "replicas", &path, errs);
    nonnegative(spec, "minReadySeconds", &path, errs);
    nonnegative(spec, "revisionHistoryLimit", &path, errs);
    match json::str_or(spec, "podManagementPolicy") {
        "OrderedReady" | "Parallel" => {}
        "" => errs.required(&path.child("podManagementPolicy"), ""),
        other => errs.invalid(
            &path.child("podManagementPolicy"),
            Bad::str(other),
            "must be 'OrderedReady' or 'Parallel'",
        ),
    }
    let strategy = json::at(spec, "updateStrategy");
    match json::str_or(strategy, "type") {
        "RollingUpdate" => {
            if let Some(p) = strategy
                .pointer("/rollingUpdate/partition")
                .and_then(Value::as_i64)
                && p < 0
            {
                errs.invalid(
                    &path
                        .child("updateStrategy")
                        .child("rollingUpdate")
                        .child("partition"),
                    Bad::Int(p),
                    "must be greater than or equal to 0",
                );
            }
        }
        "OnDelete" => {
            if json::is_set(strategy, "rollingUpdate") {
                errs.invalid(
                    &path.child("updateStrategy").child("rollingUpdate"),
                    Bad::None,
                    "only allowed for updateStrategy 'RollingUpdate'",
                );
            }
        }
        "" => errs.required(&path.child("updateStrategy"), ""),
        other => errs.not_supported(
            &path.child("updateStrategy").child("type"),
            other,
            &["OnDelete", "RollingUpdate"],
        ),
    }
    for key in ["whenDeleted", "whenScaled"] {
        errs.check_enum(
            json::at(spec, "persistentVolumeClaimRetentionPolicy"),
            key,
            &path.child("persistentVolumeClaimRetentionPolicy"),
            &["Retain", "Delete"],
        );
    }
    validate_selector_and_template(
        &with_claim_volumes(spec),
        &path,
        "statefulset",
        "StatefulSet",
        errs,
    );
    for (i, c) in json::items(spec, "volumeClaimTemplates").enumerate() {
        let cp = path.child("volumeClaimTemplates").index(i);
        meta::validate_meta_at(json::at(c, "metadata"), &cp.child("metadata"), errs);
        super::storage::validate_pvc_spec(json::at(c, "spec"), &cp.child("spec"), errs);
    }
}

/// The spec as its pods will be: the controller adds a volume for each claim template the
/// template does not already name, so mounts of a claim template are valid.
fn with_claim_volumes(spec: &Value) -> Value {
    let mut spec = spec.clone();
    let claims: Vec<String> = json::items(&spec, "volumeClaimTemplates")
        .map(|c| json::str_or(json::at(c, "metadata"), "name").to_string())
        .filter(|n| !n.is_empty())
        .collect();
    if claims.is_empty() {
        return spec;
    }
    let Some(pod) = spec
        .pointer_mut("/template/spec")
        .and_then(Value::as_object_mut)
    else {
        return spec;
    };
    let volumes = pod.entry("volumes").or_insert_with(|| json!([]));
    if let Some(list) = volumes.as_array_mut() {
        for name in claims {
            if !list.iter().any(|v| v["name"] == name.as_str()) {
                list.push(json!({"name": name, "persistentVolumeClaim": {"claimName": name}}));
            }
        }
    }
    spec
}

pub fn validate_daemon_set(ds: &Value, errs: &mut Errors) {
    let spec = json::at(ds, "spec");
    let path = Path::root("spec");
    nonnegative(spec, "minReadySeconds", &path, errs);
    nonnegative(spec, "revisionHistoryLimit", &path, errs);
    validate_selector_and_template(spec, &path, "daemonset", "ReplicaSet", errs);
    let strategy = json::at(spec, "updateStrategy");
    let spath = path.child("updateStrategy");
    match json::str_or(strategy, "type") {
        "RollingUpdate" => {
            let ru = json::at(strategy, "rollingUpdate");
            let rpath = spath.child("rollingUpdate");
            let unavailable = ru
                .get("maxUnavailable")
                .and_then(|v| validate_int_or_percent(v, &rpath.child("maxUnavailable"), errs));
            let surge = ru
                .get("maxSurge")
                .and_then(|v| validate_int_or_percent(v, &rpath.child("maxSurge"), errs));
            if let (Some((_, 0)), Some((_, 0))) = (unavailable, surge) {
                errs.invalid(
                    &rpath.child("maxUnavailable"),
                    Bad::Raw(int_or_string_go(json::at(ru, "maxUnavailable"))),
                    "may not be 0 when `maxSurge` is 0",
                );
            }
        }
        "OnDelete" => {}
        "" => errs.required(&spath.child("type"), ""),
        other => errs.not_supported(&spath.child("type"), other, &["OnDelete", "RollingUpdate"]),
    }
}

pub fn validate_replication_controller(rc: &Value, errs: &mut Errors) {
    let spec = json::at(rc, "spec");
    let path = Path::root("spec");
    nonnegative(spec, "replicas", &path, errs);
    nonnegative(spec, "minReadySeconds", &path, errs);
    let selector = spec.get("selector").and_then(Value::as_object);
    match selector {
        None => errs.required(&path.child("selector"), ""),
        Some(s) if s.is_empty() => errs.required(&path.child("selector"), ""),
        Some(_) => meta::validate_labels(spec.get("selector"), &path.child("selector"), errs),
    }
    let template = spec.get("template").filter(|t| t.is_object());
    if let (Some(t), Some(sel)) = (template, selector) {
        let labels = t.pointer("/metadata/labels");
        let matches = sel.iter().all(|(k, v)| {
            labels
                .and_then(|l| l.get(k))
                .is_some_and(|lv| lv.as_str() == v.as_str())
        });
        if !sel.is_empty() && !matches {
            errs.invalid(
                &path.child("template").child("metadata").child("labels"),
                Bad::Raw(go_string_map(labels.and_then(Value::as_object))),
                "`selector` does not match template `labels`",
            );
        }
    }
    pod::validate_template(
        template,
        &path.child("template"),
        &["Always"],
        Some("ReplicationController"),
        errs,
    );
}

pub fn validate_controller_revision(cr: &Value, errs: &mut Errors) {
    if let Some(r) = json::int_at(cr, "revision")
        && r < 0
    {
        errs.invalid(
            &Path::root("revision"),
            Bad::Int(r),
            "must be greater than or equal to 0",
        );
    }
}

pub fn validate_pod_template(pt: &Value, errs: &mut Errors) {
    pod::validate_template(
        pt.get("template"),
        &Path::root("template"),
        &["Always", "OnFailure", "Never"],
        None,
        errs,
    );
}

/// The selector of apps/v1 controllers is fixed once created.
pub fn validate_selector_unchanged(old: &Value, new: &Value, errs: &mut Errors) {
    let (o, n) = (old.pointer("/spec/selector"), new.pointer("/spec/selector"));
    if o != n {
        errs.invalid(
            &Path::root("spec").child("selector"),
            Bad::Raw(meta::go_label_selector(n.unwrap_or(&json::EMPTY))),
            "field is immutable",
        );
    }
}

const STS_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
    "revisionHistoryLimit",
];

pub fn validate_stateful_set_update(old: &Value, new: &Value, errs: &mut Errors) {
    let strip = |v: &Value| {
        let mut spec = json::at(v, "spec").clone();
        for k in STS_MUTABLE {
            json::remove(&mut spec, k);
        }
        spec
    };
    if strip(old) != strip(new) {
        errs.forbidden(
            &Path::root("spec"),
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        );
    }
}

pub fn validate_controller_revision_update(old: &Value, new: &Value, errs: &mut Errors) {
    if old.get("data") != new.get("data") {
        errs.invalid(
            &Path::root("data"),
            Bad::Raw("runtime.RawExtension{...}".into()),
            "field is immutable",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_default_and_validate() {
        let mut d = json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "other"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}});
        default_deployment(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            d["spec"]["template"]["metadata"]["creationTimestamp"],
            Value::Null
        );
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut errs = Errors::new();
        validate_deployment(&d, &mut errs);
        assert_eq!(
            errs.0[0].message(),
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"
        );
    }

    #[test]
    fn stateful_set_mounts_its_claim_templates() {
        let set = |mount: &str| {
            let mut s = json!({"metadata": {"name": "db"}, "spec": {"serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                    "containers": [{"name": "c", "image": "busybox",
                        "volumeMounts": [{"name": mount, "mountPath": "/data"}]}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}]}});
            default_stateful_set(&mut s);
            let mut errs = Errors::new();
            validate_stateful_set(&s, &mut errs);
            errs.0.iter().map(|e| e.message()).collect::<Vec<_>>()
        };
        assert_eq!(set("data"), Vec::<String>::new());
        assert_eq!(
            set("other"),
            ["spec.template.spec.containers[0].volumeMounts[0].name: Not found: \"other\""]
        );
    }

    #[test]
    fn stateful_and_daemon_sets_default() {
        let mut s = json!({"spec": {"template": {"spec": {"containers": []}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}]}});
        default_stateful_set(&mut s);
        assert_eq!(s["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
        assert_eq!(
            s["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
            "Retain"
        );
        assert_eq!(
            s["spec"]["volumeClaimTemplates"][0]["spec"]["volumeMode"],
            "Filesystem"
        );
        let mut d = json!({"spec": {}});
        default_daemon_set(&mut d);
        assert_eq!(
            d["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            1
        );
        assert_eq!(d["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"], 0);
    }
}
