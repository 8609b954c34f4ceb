//! Pods and pod templates: Kubernetes' defaulting (SetDefaults_PodSpec, _Container, _Probe,
//! volume sources…), what the admission plugins add to a new Pod (service account, priority,
//! default tolerations, Pending status with its QoS class), validation, and the update rule
//! that only images, activeDeadlineSeconds and added tolerations may change.

use serde_json::{Value, json};

use super::field::{Bad, Errors, Path};
use super::json::{self, default, obj};
use super::meta;
use super::names;
use super::quantity::{self, Quantity};

const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

// ---------------------------------------------------------------------------------------------
// Defaulting

/// Always for `:latest` or no tag (and no digest), IfNotPresent otherwise.
pub fn default_pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or_default();
    let has_digest = image.contains('@');
    let last = without_digest.rsplit('/').next().unwrap_or_default();
    let tag = last.split_once(':').map(|(_, t)| t);
    match tag {
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if has_digest => "IfNotPresent",
        None => "Always",
    }
}

fn default_http_get(action: &mut Value) {
    if let Some(h) = action.get_mut("httpGet").filter(|h| h.is_object()) {
        default(h, "path", json!("/"));
        default(h, "scheme", json!("HTTP"));
    }
}

fn default_probe(probe: &mut Value) {
    if !probe.is_object() {
        return;
    }
    default(probe, "timeoutSeconds", json!(1));
    default(probe, "periodSeconds", json!(10));
    default(probe, "successThreshold", json!(1));
    default(probe, "failureThreshold", json!(3));
    default_http_get(probe);
    if let Some(g) = probe.get_mut("grpc").filter(|g| g.is_object()) {
        default(g, "service", json!(""));
    }
}

fn default_field_refs(item: &mut Value) {
    if let Some(f) = item.get_mut("fieldRef").filter(|f| f.is_object()) {
        default(f, "apiVersion", json!("v1"));
    }
    if let Some(r) = item.get_mut("resourceFieldRef").filter(|r| r.is_object()) {
        match r.get_mut("divisor") {
            Some(d) if !d.is_null() => quantity::canonicalize(d),
            _ => {
                r["divisor"] = json!("0");
            }
        }
    }
}

fn default_container(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    let image = json::str_or(c, "image").to_string();
    default(c, "imagePullPolicy", json!(default_pull_policy(&image)));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    let resources = obj(c, "resources");
    for list in ["limits", "requests"] {
        if let Some(l) = resources.get_mut(list) {
            quantity::canonicalize_list(l);
        }
    }
    for p in json::items_mut(c, "ports") {
        default(p, "protocol", json!("TCP"));
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe) {
            default_probe(p);
        }
    }
    if let Some(lc) = c.get_mut("lifecycle").filter(|l| l.is_object()) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lc.get_mut(hook) {
                default_http_get(h);
            }
        }
    }
    for e in json::items_mut(c, "env") {
        if let Some(vf) = e.get_mut("valueFrom").filter(|v| v.is_object()) {
            default_field_refs(vf);
        }
    }
}

fn default_volume(v: &mut Value) {
    let Some(map) = v.as_object() else {
        return;
    };
    if map.keys().all(|k| k == "name") {
        v["emptyDir"] = json!({});
    }
    for (source, mode) in [
        ("secret", 420),
        ("configMap", 420),
        ("downwardAPI", 420),
        ("projected", 420),
    ] {
        if let Some(s) = v.get_mut(source).filter(|s| s.is_object()) {
            default(s, "defaultMode", json!(mode));
        }
    }
    if let Some(d) = v.get_mut("downwardAPI") {
        for item in json::items_mut(d, "items") {
            default_field_refs(item);
        }
    }
    if let Some(p) = v.get_mut("projected") {
        for src in json::items_mut(p, "sources") {
            if let Some(t) = src.get_mut("serviceAccountToken").filter(|t| t.is_object()) {
                default(t, "expirationSeconds", json!(3600));
            }
            if let Some(d) = src.get_mut("downwardAPI") {
                for item in json::items_mut(d, "items") {
                    default_field_refs(item);
                }
            }
        }
    }
    if let Some(h) = v.get_mut("hostPath").filter(|h| h.is_object()) {
        default(h, "type", json!(""));
    }
    if let Some(e) = v.get_mut("emptyDir").filter(|e| e.is_object())
        && let Some(size) = e.get_mut("sizeLimit")
    {
        quantity::canonicalize(size);
    }
    if let Some(e) = v.get_mut("ephemeral").filter(|e| e.is_object())
        && let Some(spec) = e
            .get_mut("volumeClaimTemplate")
            .and_then(|t| t.get_mut("spec"))
    {
        super::storage::default_pvc_spec(spec);
    }
}

/// SetDefaults_PodSpec and the defaults of everything inside it: what every pod template gets.
pub fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "securityContext", json!({}));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "schedulerName", json!("default-scheduler"));
    // The v1 conversion keeps the deprecated serviceAccount in step with serviceAccountName.
    match (
        json::str_or(spec, "serviceAccountName").to_string(),
        json::str_or(spec, "serviceAccount").to_string(),
    ) {
        (name, _) if !name.is_empty() => spec["serviceAccount"] = json!(name),
        (_, old) if !old.is_empty() => spec["serviceAccountName"] = json!(old),
        _ => {}
    }
    for list in CONTAINER_LISTS {
        for c in json::items_mut(spec, list) {
            default_container(c);
        }
    }
    for v in json::items_mut(spec, "volumes") {
        default_volume(v);
    }
    if let Some(overhead) = spec.get_mut("overhead") {
        quantity::canonicalize_list(overhead);
    }
}

/// A PodTemplateSpec as Go serializes it: its metadata always present, with a null creationTimestamp.
pub fn default_template(template: &mut Value) {
    if !template.is_object() {
        return;
    }
    let meta = obj(template, "metadata");
    if meta.get("creationTimestamp").is_none() {
        meta["creationTimestamp"] = Value::Null;
    }
    default_pod_spec(obj(template, "spec"));
}

/// SetDefaults_Pod: what only a Pod (not a template) gets.
pub fn default_pod(pod: &mut Value) {
    let spec = obj(pod, "spec");
    default_pod_spec(spec);
    for list in ["containers", "initContainers"] {
        for c in json::items_mut(spec, list) {
            let Some(limits) = c.pointer("/resources/limits").cloned() else {
                continue;
            };
            let Some(limits) = limits.as_object() else {
                continue;
            };
            let requests = obj(obj(c, "resources"), "requests");
            for (k, v) in limits {
                if requests.get(k).is_none() {
                    requests[k] = v.clone();
                }
            }
        }
    }
    default(spec, "enableServiceLinks", json!(true));
    if json::bool_at(spec, "hostNetwork") == Some(true) {
        for list in ["containers", "initContainers"] {
            for c in json::items_mut(spec, list) {
                for p in json::items_mut(c, "ports") {
                    if json::int_at(p, "hostPort").unwrap_or(0) == 0
                        && let Some(cp) = p.get("containerPort").cloned()
                    {
                        p["hostPort"] = cp;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What admission and the create strategy add to a new Pod

/// The QoS class of a pod from its containers' cpu and memory requests and limits.
pub fn qos_class(spec: &Value) -> &'static str {
    let mut any = false;
    let mut guaranteed = true;
    for list in ["containers", "initContainers"] {
        for c in json::items(spec, list) {
            let req = c.pointer("/resources/requests");
            let lim = c.pointer("/resources/limits");
            for res in ["cpu", "memory"] {
                let r = req.and_then(|r| r.get(res)).and_then(Quantity::from_json);
                let l = lim.and_then(|l| l.get(res)).and_then(Quantity::from_json);
                if r.is_some_and(|q| !q.is_zero()) || l.is_some_and(|q| !q.is_zero()) {
                    any = true;
                }
                match (r, l) {
                    (Some(r), Some(l)) if r.cmp_value(&l).is_eq() => {}
                    (None, Some(_)) => {}
                    _ => guaranteed = false,
                }
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn tolerates(tolerations: &[Value], key: &str) -> bool {
    tolerations.iter().any(|t| {
        let effect = json::str_or(t, "effect");
        let effect_ok = effect.is_empty() || effect == "NoExecute";
        let tkey = json::str_or(t, "key");
        let exists = json::str_or(t, "operator") == "Exists";
        effect_ok && (tkey == key || (tkey.is_empty() && exists))
    })
}

/// The ServiceAccount, DefaultTolerationSeconds and Priority admission plugins' changes, plus the
/// create strategy's Pending status. `priority` is what the PriorityClass resolved to.
pub fn admit_new_pod(pod: &mut Value, priority: Option<(i64, String)>) {
    let spec = obj(pod, "spec");
    if json::str_or(spec, "serviceAccountName").is_empty() {
        spec["serviceAccountName"] = json!("default");
        spec["serviceAccount"] = json!("default");
    }
    let (value, preemption) = priority.unwrap_or((0, "PreemptLowerPriority".into()));
    spec["priority"] = json!(value);
    default(spec, "preemptionPolicy", json!(preemption));
    let mut tolerations: Vec<Value> = spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        if !tolerates(&tolerations, key) {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    spec["tolerations"] = Value::Array(tolerations);
    let qos = qos_class(spec);
    pod["status"] = json!({"phase": "Pending", "qosClass": qos});
}

// ---------------------------------------------------------------------------------------------
// Validation

fn validate_resources(res: &Value, path: &Path, errs: &mut Errors) {
    for list in ["limits", "requests"] {
        let Some(map) = res.get(list).and_then(Value::as_object) else {
            continue;
        };
        for (name, v) in map {
            let p = path.child(list).key(name);
            match Quantity::from_json(v) {
                Some(q) if q.is_negative() => errs.invalid(
                    &p,
                    Bad::str(&q.canonical()),
                    "must be greater than or equal to 0",
                ),
                Some(_) => {}
                None => errs.invalid(&p, Bad::json(v), quantity::REGEX_MESSAGE),
            }
        }
    }
    let (Some(limits), Some(requests)) = (
        res.get("limits").and_then(Value::as_object),
        res.get("requests").and_then(Value::as_object),
    ) else {
        return;
    };
    for (name, req) in requests {
        let (Some(r), Some(l)) = (
            Quantity::from_json(req),
            limits.get(name).and_then(Quantity::from_json),
        ) else {
            continue;
        };
        if r.cmp_value(&l).is_gt() {
            errs.invalid(
                &path.child("requests").key(name),
                Bad::str(&r.canonical()),
                format!(
                    "must be less than or equal to {name} limit of {}",
                    l.canonical()
                ),
            );
        }
    }
}

const HANDLERS: [&str; 4] = ["exec", "httpGet", "tcpSocket", "grpc"];

fn validate_probe(probe: &Value, path: &Path, kind: &str, errs: &mut Errors) {
    if !probe.is_object() {
        return;
    }
    let handlers = HANDLERS.iter().filter(|h| json::is_set(probe, h)).count();
    if handlers == 0 {
        errs.required(path, "must specify a handler type");
    } else if handlers > 1 {
        errs.forbidden(path, "may not specify more than 1 handler type");
    }
    if kind != "readinessProbe"
        && let Some(s) = json::int_at(probe, "successThreshold")
        && s != 1
    {
        errs.invalid(&path.child("successThreshold"), Bad::Int(s), "must be 1");
    }
    for key in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        if let Some(n) = json::int_at(probe, key)
            && n < 0
        {
            errs.invalid(
                &path.child(key),
                Bad::Int(n),
                "must be greater than or equal to 0",
            );
        }
    }
    if let Some(h) = probe.get("httpGet") {
        validate_port_ref(h.get("port"), &path.child("httpGet").child("port"), errs);
    }
    if let Some(t) = probe.get("tcpSocket") {
        validate_port_ref(t.get("port"), &path.child("tcpSocket").child("port"), errs);
    }
}

/// An IntOrString port: a number in range or an IANA service name.
pub fn validate_port_ref(port: Option<&Value>, path: &Path, errs: &mut Errors) {
    match port {
        None | Some(Value::Null) => errs.required(path, ""),
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            for msg in names::port_number(n) {
                errs.invalid(path, Bad::Int(n), msg);
            }
        }
        Some(Value::String(s)) => {
            for msg in names::port_name(s) {
                errs.invalid(path, Bad::str(s), msg);
            }
        }
        Some(other) => errs.invalid(path, Bad::json(other), "must be an integer or a string"),
    }
}

struct Seen {
    names: Vec<String>,
}

fn validate_container(
    c: &Value,
    path: &Path,
    volumes: &[String],
    seen: &mut Seen,
    is_init: bool,
    errs: &mut Errors,
) {
    let name = json::str_or(c, "name");
    if name.is_empty() {
        errs.required(&path.child("name"), "");
    } else {
        for msg in names::dns1123_label(name) {
            errs.invalid(&path.child("name"), Bad::str(name), msg);
        }
        if seen.names.iter().any(|n| n == name) {
            errs.duplicate(&path.child("name"), Bad::str(name));
        }
        seen.names.push(name.to_string());
    }
    let image = json::str_or(c, "image");
    if image.is_empty() {
        errs.required(&path.child("image"), "");
    } else if image.trim() != image {
        errs.invalid(
            &path.child("image"),
            Bad::str(image),
            "must not have leading or trailing whitespace",
        );
    }
    errs.check_enum(
        c,
        "imagePullPolicy",
        path,
        &["Always", "IfNotPresent", "Never"],
    );
    errs.check_enum(
        c,
        "terminationMessagePolicy",
        path,
        &["File", "FallbackToLogsOnError"],
    );
    if is_init {
        errs.check_enum(c, "restartPolicy", path, &["Always"]);
    } else if json::is_set(c, "restartPolicy") {
        errs.forbidden(
            &path.child("restartPolicy"),
            "may not be set for non-init containers",
        );
    }
    let mut port_names: Vec<&str> = Vec::new();
    for (i, p) in json::items(c, "ports").enumerate() {
        let pp = path.child("ports").index(i);
        match json::int_at(p, "containerPort") {
            None | Some(0) => errs.required(&pp.child("containerPort"), ""),
            Some(n) => {
                for msg in names::port_number(n) {
                    errs.invalid(&pp.child("containerPort"), Bad::Int(n), msg);
                }
            }
        }
        if let Some(n) = json::int_at(p, "hostPort")
            && n != 0
        {
            for msg in names::port_number(n) {
                errs.invalid(&pp.child("hostPort"), Bad::Int(n), msg);
            }
        }
        errs.check_enum(p, "protocol", &pp, &["SCTP", "TCP", "UDP"]);
        if let Some(n) = json::str_at(p, "name").filter(|n| !n.is_empty()) {
            for msg in names::port_name(n) {
                errs.invalid(&pp.child("name"), Bad::str(n), msg);
            }
            if port_names.contains(&n) {
                errs.duplicate(&pp.child("name"), Bad::str(n));
            }
            port_names.push(n);
        }
    }
    for (i, e) in json::items(c, "env").enumerate() {
        let ep = path.child("env").index(i);
        let n = json::str_or(e, "name");
        if n.is_empty() {
            errs.required(&ep.child("name"), "");
        } else {
            for msg in names::env_var_name(n) {
                errs.invalid(&ep.child("name"), Bad::str(n), msg);
            }
        }
        if let Some(vf) = e.get("valueFrom").filter(|v| v.is_object()) {
            let sources = [
                "fieldRef",
                "resourceFieldRef",
                "configMapKeyRef",
                "secretKeyRef",
            ]
            .iter()
            .filter(|s| json::is_set(vf, s))
            .count();
            if sources == 0 {
                errs.invalid(
                    &ep.child("valueFrom"),
                    Bad::str(""),
                    "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
                );
            } else if sources > 1 {
                errs.invalid(
                    &ep.child("valueFrom"),
                    Bad::str(""),
                    "may not have more than one field specified at a time",
                );
            }
            if json::is_set(e, "value") && !json::str_or(e, "value").is_empty() {
                errs.invalid(
                    &ep.child("valueFrom"),
                    Bad::str(""),
                    "may not be specified when `value` is not empty",
                );
            }
        }
    }
    let mut mount_paths: Vec<&str> = Vec::new();
    for (i, m) in json::items(c, "volumeMounts").enumerate() {
        let mp = path.child("volumeMounts").index(i);
        let n = json::str_or(m, "name");
        if n.is_empty() {
            errs.required(&mp.child("name"), "");
        } else if !volumes.iter().any(|v| v == n) {
            errs.not_found(&mp.child("name"), Bad::str(n));
        }
        let mount = json::str_or(m, "mountPath");
        if mount.is_empty() {
            errs.required(&mp.child("mountPath"), "");
        } else if mount_paths.contains(&mount) {
            errs.invalid(&mp.child("mountPath"), Bad::str(mount), "must be unique");
        }
        mount_paths.push(mount);
    }
    validate_resources(json::at(c, "resources"), &path.child("resources"), errs);
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get(probe) {
            validate_probe(p, &path.child(probe), probe, errs);
        }
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

/// A PodSpec, at `path` (`spec`, or `spec.template.spec` in a workload).
pub fn validate_pod_spec(spec: &Value, path: &Path, errs: &mut Errors) {
    let mut volumes: Vec<String> = Vec::new();
    for (i, v) in json::items(spec, "volumes").enumerate() {
        let vp = path.child("volumes").index(i);
        let n = json::str_or(v, "name");
        if n.is_empty() {
            errs.required(&vp.child("name"), "");
        } else {
            for msg in names::dns1123_label(n) {
                errs.invalid(&vp.child("name"), Bad::str(n), msg);
            }
            if volumes.iter().any(|x| x == n) {
                errs.duplicate(&vp.child("name"), Bad::str(n));
            }
            volumes.push(n.to_string());
        }
        let sources = VOLUME_SOURCES.iter().filter(|s| json::is_set(v, s)).count();
        if sources == 0 {
            errs.required(&vp, "must specify a volume type");
        } else if sources > 1 {
            errs.forbidden(&vp, "may not specify more than 1 volume type");
        }
        if let Some(pvc) = v.get("persistentVolumeClaim")
            && json::str_or(pvc, "claimName").is_empty()
        {
            errs.required(&vp.child("persistentVolumeClaim").child("claimName"), "");
        }
        if let Some(s) = v.get("secret").filter(|s| s.is_object())
            && json::str_or(s, "secretName").is_empty()
        {
            errs.required(&vp.child("secret").child("secretName"), "");
        }
        if let Some(h) = v.get("hostPath")
            && json::str_or(h, "path").is_empty()
        {
            errs.required(&vp.child("hostPath").child("path"), "");
        }
    }
    let containers = json::items(spec, "containers").count();
    if containers == 0 {
        errs.required(&path.child("containers"), "");
    }
    let mut seen = Seen { names: Vec::new() };
    for list in ["containers", "initContainers"] {
        for (i, c) in json::items(spec, list).enumerate() {
            validate_container(
                c,
                &path.child(list).index(i),
                &volumes,
                &mut seen,
                list == "initContainers",
                errs,
            );
        }
    }
    match json::str_at(spec, "restartPolicy") {
        None | Some("") => errs.required(&path.child("restartPolicy"), ""),
        Some(_) => errs.check_enum(
            spec,
            "restartPolicy",
            path,
            &["Always", "OnFailure", "Never"],
        ),
    }
    errs.check_enum(
        spec,
        "dnsPolicy",
        path,
        &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
    );
    if json::str_at(spec, "dnsPolicy") == Some("None") && !json::is_set(spec, "dnsConfig") {
        errs.required(
            &path.child("dnsConfig"),
            "must provide `dnsConfig` when `dnsPolicy` is None",
        );
    }
    meta::validate_labels(spec.get("nodeSelector"), &path.child("nodeSelector"), errs);
    for (i, t) in json::items(spec, "tolerations").enumerate() {
        let tp = path.child("tolerations").index(i);
        let op = json::str_or(t, "operator");
        errs.check_enum(t, "operator", &tp, &["Exists", "Equal"]);
        errs.check_enum(
            t,
            "effect",
            &tp,
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        );
        if op == "Exists" && !json::str_or(t, "value").is_empty() {
            errs.invalid(
                &tp.child("operator"),
                Bad::str(op),
                "value must be empty when `operator` is 'Exists'",
            );
        }
        if json::str_or(t, "key").is_empty() && op != "Exists" {
            errs.invalid(
                &tp.child("operator"),
                Bad::str(op),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            );
        }
        if json::is_set(t, "tolerationSeconds") && json::str_or(t, "effect") != "NoExecute" {
            errs.invalid(
                &tp.child("effect"),
                Bad::str(json::str_or(t, "effect")),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            );
        }
    }
    if let Some(n) = json::int_at(spec, "activeDeadlineSeconds")
        && !(1..=i64::from(i32::MAX)).contains(&n)
    {
        errs.invalid(
            &path.child("activeDeadlineSeconds"),
            Bad::Int(n),
            "must be between 1 and 2147483647, inclusive",
        );
    }
    for key in ["serviceAccountName", "priorityClassName"] {
        if let Some(n) = json::str_at(spec, key).filter(|n| !n.is_empty()) {
            for msg in names::dns1123_subdomain(n) {
                errs.invalid(&path.child(key), Bad::str(n), msg);
            }
        }
    }
    for key in ["hostname", "subdomain"] {
        if let Some(n) = json::str_at(spec, key).filter(|n| !n.is_empty()) {
            for msg in names::dns1123_label(n) {
                errs.invalid(&path.child(key), Bad::str(n), msg);
            }
        }
    }
    if let Some(n) = json::str_at(spec, "nodeName").filter(|n| !n.is_empty()) {
        for msg in names::dns1123_subdomain(n) {
            errs.invalid(&path.child("nodeName"), Bad::str(n), msg);
        }
    }
    for (i, s) in json::items(spec, "imagePullSecrets").enumerate() {
        if json::str_or(s, "name").is_empty() {
            errs.required(&path.child("imagePullSecrets").index(i).child("name"), "");
        }
    }
}

/// A PodTemplateSpec with its labels and the restart policies its controller allows.
/// `no_deadline_in` names the controller (ReplicaSet, StatefulSet) whose pods may not have an
/// activeDeadlineSeconds.
pub fn validate_template(
    template: Option<&Value>,
    path: &Path,
    restart: &[&str],
    no_deadline_in: Option<&str>,
    errs: &mut Errors,
) {
    let Some(template) = template.filter(|t| t.is_object()) else {
        errs.required(path, "");
        return;
    };
    meta::validate_meta_at(
        json::at(template, "metadata"),
        &path.child("metadata"),
        errs,
    );
    let spec = json::at(template, "spec");
    let spec_path = path.child("spec");
    validate_pod_spec(spec, &spec_path, errs);
    if let Some(rp) = json::str_at(spec, "restartPolicy")
        && !rp.is_empty()
        && !restart.contains(&rp)
    {
        errs.not_supported(&spec_path.child("restartPolicy"), rp, restart);
    }
    if let Some(owner) = no_deadline_in
        && json::is_set(spec, "activeDeadlineSeconds")
    {
        errs.forbidden(
            &spec_path.child("activeDeadlineSeconds"),
            format!("activeDeadlineSeconds in {owner} is not Supported"),
        );
    }
}

pub fn validate_pod(pod: &Value, errs: &mut Errors) {
    validate_pod_spec(json::at(pod, "spec"), &Path::root("spec"), errs);
}

const UPDATE_MESSAGE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// ValidatePodUpdate: the spec is fixed once created, but for images, a shorter deadline, added
/// tolerations and removed scheduling gates.
pub fn validate_pod_update(old: &Value, new: &Value, errs: &mut Errors) {
    let spec_path = Path::root("spec");
    let (old_spec, new_spec) = (json::at(old, "spec"), json::at(new, "spec"));
    for list in ["containers", "initContainers"] {
        if json::len_of(old_spec, list) != json::len_of(new_spec, list) {
            errs.forbidden(
                &spec_path.child(list),
                "pod updates may not add or remove containers",
            );
            return;
        }
    }
    if let Some(n) = json::int_at(new_spec, "activeDeadlineSeconds") {
        match json::int_at(old_spec, "activeDeadlineSeconds") {
            Some(o) if n > o => errs.invalid(
                &spec_path.child("activeDeadlineSeconds"),
                Bad::Int(n),
                "must be less than or equal to previous value",
            ),
            _ => {}
        }
    } else if json::is_set(old_spec, "activeDeadlineSeconds") {
        errs.invalid(
            &spec_path.child("activeDeadlineSeconds"),
            Bad::Raw("null".into()),
            "must not update from a positive integer to nil value",
        );
    }
    let old_tol: Vec<Value> = json::items(old_spec, "tolerations").cloned().collect();
    let new_tol: Vec<Value> = json::items(new_spec, "tolerations").cloned().collect();
    for t in &old_tol {
        if !new_tol.contains(t) {
            errs.forbidden(
                &spec_path.child("tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            );
            break;
        }
    }
    // Everything else must be as it was: compare with the mutable fields taken from the old spec.
    let mut munged = new_spec.clone();
    for list in ["containers", "initContainers"] {
        let old_images: Vec<Value> = json::items(old_spec, list)
            .map(|c| c.get("image").cloned().unwrap_or(Value::Null))
            .collect();
        for (c, img) in json::items_mut(&mut munged, list).zip(old_images) {
            c["image"] = img;
        }
    }
    for key in [
        "activeDeadlineSeconds",
        "tolerations",
        "terminationGracePeriodSeconds",
        "schedulingGates",
    ] {
        match old_spec.get(key) {
            Some(v) => munged[key] = v.clone(),
            None => {
                json::remove(&mut munged, key);
            }
        }
    }
    if &munged != old_spec {
        errs.forbidden(&spec_path, UPDATE_MESSAGE);
    }
}

/// Forbidden message for a pod whose priority was set by hand to something else.
pub fn priority_mismatch(given: i64, computed: i64) -> String {
    format!(
        "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {computed} from the given PriorityClass name"
    )
}

pub fn missing_priority_class(name: &str) -> String {
    format!("no PriorityClass with name {name} was found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_get_kubernetes_defaults() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
             "readinessProbe": {"httpGet": {"port": 80}},
             "resources": {"limits": {"cpu": "0.5", "memory": "128Mi"}}},
            {"name": "side", "image": "busybox:1.36"}]}});
        default_pod(&mut pod);
        admit_new_pod(&mut pod, None);
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["serviceAccount"], "default");
        assert_eq!(spec["priority"], 0);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(spec["tolerations"].as_array().unwrap().len(), 2);
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(spec["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(spec["containers"][1]["resources"], json!({}));
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["readinessProbe"]["periodSeconds"], 10);
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/");
        assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(c["resources"]["limits"]["cpu"], "500m");
        assert_eq!(c["resources"]["requests"]["cpu"], "500m");
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "Burstable");
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/app"), "Always");
        assert_eq!(default_pull_policy("localhost:5000/app:v1"), "IfNotPresent");
        assert_eq!(default_pull_policy("app@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn invalid_pods_are_explained() {
        let mut pod = json!({"spec": {"containers": [{"name": "Web"}, {"name": "Web", "image": "x",
            "volumeMounts": [{"name": "data", "mountPath": "/d"}]}], "restartPolicy": "Sometimes"}});
        default_pod(&mut pod);
        pod["spec"]["restartPolicy"] = json!("Sometimes");
        let mut errs = Errors::new();
        validate_pod(&pod, &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert!(
            msgs.iter()
                .any(|m| m == "spec.containers[0].image: Required value"),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m == "spec.containers[1].name: Duplicate value: \"Web\""),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m == "spec.containers[1].volumeMounts[0].name: Not found: \"data\""),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("spec.restartPolicy: Unsupported value: \"Sometimes\"")),
            "{msgs:?}"
        );
    }

    #[test]
    fn pod_updates_only_change_images() {
        let mut old = json!({"spec": {"containers": [{"name": "a", "image": "x:1"}]}});
        default_pod(&mut old);
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("x:2");
        let mut errs = Errors::new();
        validate_pod_update(&old, &new, &mut errs);
        assert!(errs.is_empty());
        new["spec"]["restartPolicy"] = json!("Never");
        validate_pod_update(&old, &new, &mut errs);
        assert_eq!(errs.0.len(), 1);
        assert!(
            errs.0[0]
                .message()
                .starts_with("spec: Forbidden: pod updates may not change fields")
        );
    }
}
