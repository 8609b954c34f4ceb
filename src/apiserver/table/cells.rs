//! The cells of each kind's row, computed the way Kubernetes' printers compute them (pod status
//! reasons, restart counts with their age, job durations, service ports, HPA targets…).

use serde_json::{Value, json};

use super::Printer;
use crate::apiserver::kinds::json::{at, bool_at, int_at, items, len_of, str_at, str_or};
use crate::apiserver::kinds::meta::{format_label_selector, format_labels};
use crate::apiserver::kinds::quantity::Quantity;

pub fn cells(printer: Printer, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    let name: Value = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .into();
    let age = Value::String(age(obj, now));
    let spec = at(obj, "spec");
    let status = at(obj, "status");
    use Printer::*;
    match printer {
        Custom(custom) => std::iter::once(name)
            .chain(crate::apiserver::crd::printer::cells(custom, obj, now))
            .collect(),
        Default => vec![
            name,
            obj.pointer("/metadata/creationTimestamp")
                .cloned()
                .unwrap_or(Value::Null),
        ],
        Namespace => vec![name, str_or(status, "phase").into(), age],
        APIService => {
            // kube-aggregator's columns: Local without a service; the Available condition's
            // status, with its reason when it is not True.
            let service = match spec.get("service").filter(|s| s.is_object()) {
                Some(svc) => format!("{}/{}", str_or(svc, "namespace"), str_or(svc, "name")),
                None => "Local".to_string(),
            };
            let available = items(status, "conditions")
                .find(|c| str_or(c, "type") == "Available")
                .map(|c| match str_or(c, "status") {
                    "True" => "True".to_string(),
                    other => format!("{other} ({})", str_or(c, "reason")),
                })
                .unwrap_or_else(|| "Unknown".to_string());
            vec![name, service.into(), available.into(), age]
        }
        Lease => vec![name, str_or(spec, "holderIdentity").into(), age],
        Node => node(obj, name, age),
        Pod => pod(obj, name, age, now),
        PodTemplate => {
            let (names, images) = containers(obj.pointer("/template/spec"));
            vec![
                name,
                names.into(),
                images.into(),
                format_labels(obj.pointer("/template/metadata/labels")).into(),
            ]
        }
        PodDisruptionBudget => {
            let show = |k: &str| match spec.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "N/A".into(),
            };
            vec![
                name,
                show("minAvailable").into(),
                show("maxUnavailable").into(),
                int_or0(status, "disruptionsAllowed"),
                age,
            ]
        }
        ReplicationController | ReplicaSet => {
            let (names, images) = containers(spec.pointer("/template/spec"));
            let selector = if printer == ReplicaSet {
                format_label_selector(spec.get("selector"))
            } else {
                format_labels(spec.get("selector"))
            };
            vec![
                name,
                int_or0(spec, "replicas"),
                int_or0(status, "replicas"),
                int_or0(status, "readyReplicas"),
                age,
                names.into(),
                images.into(),
                selector.into(),
            ]
        }
        DaemonSet => {
            let (names, images) = containers(spec.pointer("/template/spec"));
            vec![
                name,
                int_or0(status, "desiredNumberScheduled"),
                int_or0(status, "currentNumberScheduled"),
                int_or0(status, "numberReady"),
                int_or0(status, "updatedNumberScheduled"),
                int_or0(status, "numberAvailable"),
                format_labels(spec.pointer("/template/spec/nodeSelector")).into(),
                age,
                names.into(),
                images.into(),
                format_label_selector(spec.get("selector")).into(),
            ]
        }
        Job => job(obj, name, age, now),
        CronJob => {
            let last = match str_at(status, "lastScheduleTime") {
                Some(t) => since(t, now),
                None => "<none>".into(),
            };
            let suspend = match bool_at(spec, "suspend") {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            };
            let job_spec = spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null);
            let (names, images) = containers(job_spec.pointer("/template/spec"));
            vec![
                name,
                str_or(spec, "schedule").into(),
                str_at(spec, "timeZone").unwrap_or("<none>").into(),
                suspend.into(),
                json!(len_of(status, "active")),
                last.into(),
                age,
                names.into(),
                images.into(),
                format_label_selector(job_spec.get("selector")).into(),
            ]
        }
        Service => service(obj, name, age),
        Ingress => {
            let class = str_at(spec, "ingressClassName").unwrap_or("<none>");
            let ports = if len_of(spec, "tls") > 0 {
                "80, 443"
            } else {
                "80"
            };
            vec![
                name,
                class.into(),
                ingress_hosts(spec).into(),
                lb_addresses(status.pointer("/loadBalancer/ingress")).into(),
                ports.into(),
                age,
            ]
        }
        IngressClass => {
            let params = match spec.get("parameters").filter(|p| p.is_object()) {
                Some(p) => {
                    let mut s = str_or(p, "kind").to_string();
                    if let Some(g) = str_at(p, "apiGroup") {
                        s = format!("{s}.{g}");
                    }
                    format!("{s}/{}", str_or(p, "name"))
                }
                None => "<none>".into(),
            };
            vec![name, str_or(spec, "controller").into(), params.into(), age]
        }
        StatefulSet => {
            let (names, images) = containers(spec.pointer("/template/spec"));
            vec![
                name,
                format!(
                    "{}/{}",
                    int_at(status, "readyReplicas").unwrap_or(0),
                    int_at(spec, "replicas").unwrap_or(0)
                )
                .into(),
                age,
                names.into(),
                images.into(),
            ]
        }
        Endpoints => vec![name, endpoints(obj).into(), age],
        Event => event(obj, name, now),
        Secret => vec![
            name,
            str_or(obj, "type").into(),
            json!(len_of(obj, "data")),
            age,
        ],
        ServiceAccount => vec![name, json!(len_of(obj, "secrets")), age],
        PersistentVolume => {
            let claim = match spec.get("claimRef").filter(|c| c.is_object()) {
                Some(c) => format!("{}/{}", str_or(c, "namespace"), str_or(c, "name")),
                None => String::new(),
            };
            let phase = if obj.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else {
                str_or(status, "phase")
            };
            vec![
                name,
                quantity_or_zero(spec.pointer("/capacity/storage")).into(),
                access_modes(spec).into(),
                str_or(spec, "persistentVolumeReclaimPolicy").into(),
                phase.into(),
                claim.into(),
                storage_class(obj).into(),
                str_at(spec, "volumeAttributesClassName")
                    .unwrap_or("<unset>")
                    .into(),
                str_or(status, "reason").into(),
                age,
                str_at(spec, "volumeMode").unwrap_or("<unset>").into(),
            ]
        }
        PersistentVolumeClaim => {
            let phase = if obj.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else {
                str_or(status, "phase")
            };
            let bound = !str_or(spec, "volumeName").is_empty();
            let (capacity, modes) = if bound {
                (
                    quantity_or_zero(status.pointer("/capacity/storage")),
                    access_modes(status),
                )
            } else {
                (String::new(), String::new())
            };
            vec![
                name,
                phase.into(),
                str_or(spec, "volumeName").into(),
                capacity.into(),
                modes.into(),
                storage_class(obj).into(),
                str_at(spec, "volumeAttributesClassName")
                    .unwrap_or("<unset>")
                    .into(),
                age,
                str_at(spec, "volumeMode").unwrap_or("<unset>").into(),
            ]
        }
        Deployment => {
            let (names, images) = containers(spec.pointer("/template/spec"));
            let selector = match spec.get("selector") {
                Some(s) if s.is_object() => {
                    let f = format_label_selector(Some(s));
                    if f == "<none>" { String::new() } else { f }
                }
                _ => String::new(),
            };
            vec![
                name,
                format!(
                    "{}/{}",
                    int_at(status, "readyReplicas").unwrap_or(0),
                    int_at(spec, "replicas").unwrap_or(0)
                )
                .into(),
                int_or0(status, "updatedReplicas"),
                int_or0(status, "availableReplicas"),
                age,
                names.into(),
                images.into(),
                selector.into(),
            ]
        }
        HorizontalPodAutoscaler => {
            let target = at(spec, "scaleTargetRef");
            let min = match int_at(spec, "minReplicas") {
                Some(m) => m.to_string(),
                None => "<unset>".into(),
            };
            vec![
                name,
                format!("{}/{}", str_or(target, "kind"), str_or(target, "name")).into(),
                hpa_targets(spec, status).into(),
                min.into(),
                int_or0(spec, "maxReplicas"),
                int_or0(status, "currentReplicas"),
                age,
            ]
        }
        ConfigMap => vec![
            name,
            json!(len_of(obj, "data") + len_of(obj, "binaryData")),
            age,
        ],
        NetworkPolicy => vec![
            name,
            format_label_selector(Some(at(spec, "podSelector")).filter(|s| s.is_object())).into(),
            age,
        ],
        RoleBinding | ClusterRoleBinding => {
            let rr = at(obj, "roleRef");
            let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
            for s in items(obj, "subjects") {
                let n = str_or(s, "name").to_string();
                match str_or(s, "kind") {
                    "User" => users.push(n),
                    "Group" => groups.push(n),
                    "ServiceAccount" => sas.push(format!("{}/{n}", str_or(s, "namespace"))),
                    _ => {}
                }
            }
            vec![
                name,
                format!("{}/{}", str_or(rr, "kind"), str_or(rr, "name")).into(),
                age,
                users.join(", ").into(),
                groups.join(", ").into(),
                sas.join(", ").into(),
            ]
        }
        StorageClass => {
            let default = [
                "storageclass.kubernetes.io/is-default-class",
                "storageclass.beta.kubernetes.io/is-default-class",
            ]
            .iter()
            .any(|k| {
                obj.pointer("/metadata/annotations")
                    .and_then(|a| a.get(*k))
                    .and_then(Value::as_str)
                    == Some("true")
            });
            let shown = if default {
                format!("{} (default)", name.as_str().unwrap_or_default())
            } else {
                name.as_str().unwrap_or_default().to_string()
            };
            vec![
                shown.into(),
                str_or(obj, "provisioner").into(),
                str_at(obj, "reclaimPolicy").unwrap_or("Delete").into(),
                str_at(obj, "volumeBindingMode")
                    .unwrap_or("Immediate")
                    .into(),
                json!(bool_at(obj, "allowVolumeExpansion").unwrap_or(false)),
                age,
            ]
        }
        ControllerRevision => {
            let controller = items(at(obj, "metadata"), "ownerReferences")
                .find(|r| bool_at(r, "controller") == Some(true))
                .map(|r| {
                    let group = str_or(r, "apiVersion")
                        .rsplit_once('/')
                        .map(|(g, _)| g)
                        .unwrap_or_default();
                    let kind = str_or(r, "kind");
                    let gk = if group.is_empty() {
                        kind.to_string()
                    } else {
                        format!("{kind}.{group}")
                    };
                    format!("{}/{}", gk.to_lowercase(), str_or(r, "name"))
                })
                .unwrap_or_else(|| "<none>".into());
            vec![name, controller.into(), int_or0(obj, "revision"), age]
        }
        ResourceQuota => {
            let hard = status.get("hard").and_then(Value::as_object);
            let mut keys: Vec<&String> = hard.into_iter().flatten().map(|(k, _)| k).collect();
            keys.sort();
            let (mut req, mut lim) = (Vec::new(), Vec::new());
            for k in keys {
                let used = quantity_or_zero(status.pointer(&format!("/used/{}", escape(k))));
                let h = quantity_or_zero(status.pointer(&format!("/hard/{}", escape(k))));
                let text = format!("{k}: {used}/{h}");
                if k.split('.').next() == Some("limits") && k.contains('.') {
                    lim.push(text);
                } else {
                    req.push(text);
                }
            }
            vec![name, req.join(", ").into(), lim.join(", ").into(), age]
        }
        PriorityClass => vec![
            name,
            int_or0(obj, "value"),
            json!(bool_at(obj, "globalDefault").unwrap_or(false)),
            age,
            str_or(obj, "preemptionPolicy").into(),
        ],
        WebhookConfiguration => vec![name, json!(items(obj, "webhooks").count()), age],
        ValidatingAdmissionPolicy => {
            let param_kind = match spec.get("paramKind").filter(|p| p.is_object()) {
                Some(p) => format!("{}/{}", str_or(p, "apiVersion"), str_or(p, "kind")),
                None => "<unset>".into(),
            };
            vec![
                name,
                json!(items(spec, "validations").count()),
                param_kind.into(),
                age,
            ]
        }
        ValidatingAdmissionPolicyBinding => {
            let param_ref = match spec.get("paramRef").filter(|p| p.is_object()) {
                Some(p) => match (str_or(p, "namespace"), str_or(p, "name")) {
                    ("", "") => "*".to_string(),
                    ("", name) => format!("*/{name}"),
                    (ns, "") => format!("{ns}/*"),
                    (ns, name) => format!("{ns}/{name}"),
                },
                None => "<unset>".into(),
            };
            vec![
                name,
                str_or(spec, "policyName").into(),
                param_ref.into(),
                age,
            ]
        }
        VolumeAttachment => vec![
            name,
            str_or(spec, "attacher").into(),
            spec.pointer("/source/persistentVolumeName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            str_or(spec, "nodeName").into(),
            json!(bool_at(status, "attached").unwrap_or(false)),
            age,
        ],
        EndpointSlice => {
            let mut ports = Vec::new();
            let mut count = 0;
            for p in items(obj, "ports") {
                if ports.len() < 3 {
                    ports.push(match int_at(p, "port") {
                        Some(n) => n.to_string(),
                        None => str_at(p, "name").unwrap_or("*").to_string(),
                    });
                }
                count += 1;
            }
            let mut addrs = Vec::new();
            let mut acount = 0;
            for e in items(obj, "endpoints") {
                for a in items(e, "addresses") {
                    if addrs.len() < 3 {
                        addrs.push(a.as_str().unwrap_or_default().to_string());
                    }
                    acount += 1;
                }
            }
            vec![
                name,
                str_or(obj, "addressType").into(),
                list_with_more(&ports, count).into(),
                list_with_more(&addrs, acount).into(),
                age,
            ]
        }
        CertificateSigningRequest => crate::apiserver::certificates::cells(obj, name, age),
        CSINode => vec![name, json!(len_of(spec, "drivers")), age],
        CSIDriver => {
            let modes: Vec<&str> = items(spec, "volumeLifecycleModes")
                .filter_map(Value::as_str)
                .collect();
            let tokens = match spec.get("tokenRequests").and_then(Value::as_array) {
                Some(t) => t
                    .iter()
                    .map(|r| str_or(r, "audience"))
                    .collect::<Vec<_>>()
                    .join(","),
                None => "<unset>".into(),
            };
            vec![
                name,
                json!(bool_at(spec, "attachRequired").unwrap_or(true)),
                json!(bool_at(spec, "podInfoOnMount").unwrap_or(false)),
                json!(bool_at(spec, "storageCapacity").unwrap_or(false)),
                tokens.into(),
                json!(bool_at(spec, "requiresRepublish").unwrap_or(false)),
                if modes.is_empty() {
                    "<none>".to_string()
                } else {
                    modes.join(",")
                }
                .into(),
                age,
            ]
        }
        CSIStorageCapacity => vec![
            name,
            str_or(obj, "storageClassName").into(),
            match obj.get("capacity").and_then(Quantity::from_json) {
                Some(q) => q.canonical(),
                None => "<unset>".into(),
            }
            .into(),
        ],
    }
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

fn int_or0(v: &Value, key: &str) -> Value {
    json!(int_at(v, key).unwrap_or(0))
}

fn quantity_or_zero(v: Option<&Value>) -> String {
    v.and_then(Quantity::from_json)
        .map(|q| q.canonical())
        .unwrap_or_else(|| "0".into())
}

fn list_with_more(list: &[String], count: usize) -> String {
    let joined = list.join(",");
    if count > 3 {
        format!("{joined} + {} more...", count - 3)
    } else if joined.is_empty() {
        "<unset>".into()
    } else {
        joined
    }
}

fn containers(spec: Option<&Value>) -> (String, String) {
    let Some(spec) = spec else {
        return (String::new(), String::new());
    };
    let names: Vec<&str> = items(spec, "containers")
        .map(|c| str_or(c, "name"))
        .collect();
    let images: Vec<&str> = items(spec, "containers")
        .map(|c| str_or(c, "image"))
        .collect();
    (names.join(","), images.join(","))
}

fn parse_time(t: &str) -> Option<jiff::Timestamp> {
    t.parse::<jiff::Timestamp>().ok()
}

fn since(t: &str, now: jiff::Timestamp) -> String {
    match parse_time(t) {
        Some(ts) => human_duration(now.as_second() - ts.as_second()),
        None => "<unknown>".into(),
    }
}

fn age(obj: &Value, now: jiff::Timestamp) -> String {
    match obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
    {
        Some(t) => since(t, now),
        None => "<unknown>".into(),
    }
}

/// Kubernetes' HumanDuration: the AGE strings kubectl users know (45s, 3m20s, 5h, 2d3h, …).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let d = (hours / 24) % 365;
        return if d == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{d}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn node(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let addresses = |kind: &str| {
        items(at(obj, "status"), "addresses")
            .find(|a| str_at(a, "type") == Some(kind))
            .and_then(|a| str_at(a, "address"))
            .unwrap_or("<none>")
            .to_string()
    };
    let info = obj.pointer("/status/nodeInfo").unwrap_or(&Value::Null);
    let or_unknown = |k: &str| match str_at(info, k) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => "<unknown>".into(),
    };
    vec![
        name,
        node_status(obj).into(),
        node_roles(obj).into(),
        age,
        str_or(info, "kubeletVersion").into(),
        addresses("InternalIP").into(),
        addresses("ExternalIP").into(),
        or_unknown("osImage").into(),
        or_unknown("kernelVersion").into(),
        or_unknown("containerRuntimeVersion").into(),
    ]
}

fn node_status(obj: &Value) -> String {
    let ready = items(at(obj, "status"), "conditions").find(|c| str_at(c, "type") == Some("Ready"));
    let mut status = match ready.and_then(|c| str_at(c, "status")) {
        Some("True") => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn node_roles(obj: &Value) -> String {
    let mut roles: Vec<String> = obj
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                Some(role.to_string())
            } else if k == "kubernetes.io/role" {
                v.as_str().map(str::to_string)
            } else {
                None
            }
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort();
    roles.dedup();
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    }
}

fn is_restartable_init(spec: &Value, name: &str) -> bool {
    items(spec, "initContainers")
        .any(|c| str_at(c, "name") == Some(name) && str_at(c, "restartPolicy") == Some("Always"))
}

fn condition_true(status: &Value, ty: &str) -> bool {
    items(status, "conditions")
        .any(|c| str_at(c, "type") == Some(ty) && str_at(c, "status") == Some("True"))
}

fn terminated_at(cs: &Value) -> Option<jiff::Timestamp> {
    cs.pointer("/lastState/terminated/finishedAt")
        .and_then(Value::as_str)
        .and_then(parse_time)
}

/// printPod: READY, STATUS with Kubernetes' reason logic, RESTARTS with when the last was.
fn pod(obj: &Value, name: Value, age: Value, now: jiff::Timestamp) -> Vec<Value> {
    let spec = at(obj, "spec");
    let status = at(obj, "status");
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut total = len_of(spec, "containers") as i64;
    let mut ready = 0i64;
    let mut last_restart: Option<jiff::Timestamp> = None;
    let mut last_sidecar_restart: Option<jiff::Timestamp> = None;
    let phase = str_or(status, "phase");
    let mut reason = match str_at(status, "reason").filter(|r| !r.is_empty()) {
        Some(r) => r.to_string(),
        None => phase.to_string(),
    };
    if items(status, "conditions").any(|c| {
        str_at(c, "type") == Some("PodScheduled") && str_at(c, "reason") == Some("SchedulingGated")
    }) {
        reason = "SchedulingGated".into();
    }
    let init_count = len_of(spec, "initContainers");
    total += items(spec, "initContainers")
        .filter(|c| str_at(c, "restartPolicy") == Some("Always"))
        .count() as i64;
    let later = |a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>| match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };

    let mut initializing = false;
    for (i, cs) in items(status, "initContainerStatuses").enumerate() {
        let count = int_at(cs, "restartCount").unwrap_or(0);
        restarts += count;
        last_restart = later(last_restart, terminated_at(cs));
        let cname = str_or(cs, "name");
        let sidecar = is_restartable_init(spec, cname);
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = later(last_sidecar_restart, terminated_at(cs));
        }
        let state = at(cs, "state");
        let terminated = state.get("terminated").filter(|t| t.is_object());
        let waiting = state.get("waiting").filter(|w| w.is_object());
        if terminated.is_some_and(|t| int_at(t, "exitCode") == Some(0)) {
            continue;
        }
        if sidecar && bool_at(cs, "started") == Some(true) {
            if bool_at(cs, "ready") == Some(true) {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            reason = match str_at(t, "reason").filter(|r| !r.is_empty()) {
                Some(r) => format!("Init:{r}"),
                None => match int_at(t, "signal").filter(|s| *s != 0) {
                    Some(sig) => format!("Init:Signal:{sig}"),
                    None => format!("Init:ExitCode:{}", int_at(t, "exitCode").unwrap_or(0)),
                },
            };
        } else if let Some(r) = waiting
            .and_then(|w| str_at(w, "reason"))
            .filter(|r| !r.is_empty() && *r != "PodInitializing")
        {
            reason = format!("Init:{r}");
        } else {
            reason = format!("Init:{i}/{init_count}");
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(status, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        let statuses: Vec<&Value> = items(status, "containerStatuses").collect();
        for cs in statuses.iter().rev() {
            restarts += int_at(cs, "restartCount").unwrap_or(0);
            last_restart = later(last_restart, terminated_at(cs));
            let state = at(cs, "state");
            let waiting = state.get("waiting").filter(|w| w.is_object());
            let terminated = state.get("terminated").filter(|t| t.is_object());
            if let Some(r) = waiting
                .and_then(|w| str_at(w, "reason"))
                .filter(|r| !r.is_empty())
            {
                reason = r.to_string();
            } else if let Some(t) = terminated {
                reason = match str_at(t, "reason").filter(|r| !r.is_empty()) {
                    Some(r) => r.to_string(),
                    None => match int_at(t, "signal").filter(|s| *s != 0) {
                        Some(sig) => format!("Signal:{sig}"),
                        None => format!("ExitCode:{}", int_at(t, "exitCode").unwrap_or(0)),
                    },
                };
            } else if bool_at(cs, "ready") == Some(true)
                && state.get("running").is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(status, "Ready") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    let deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
    if deleting && str_at(status, "reason") == Some("NodeLost") {
        reason = "Unknown".into();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".into();
    }

    let restarts_text = match last_restart {
        Some(t) if restarts != 0 => format!(
            "{restarts} ({} ago)",
            human_duration(now.as_second() - t.as_second())
        ),
        _ => restarts.to_string(),
    };

    let pod_ip = items(status, "podIPs")
        .next()
        .and_then(|p| str_at(p, "ip"))
        .or_else(|| str_at(status, "podIP"))
        .filter(|s| !s.is_empty())
        .unwrap_or("<none>");
    let or_none = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or("<none>").to_string();
    let gates = if len_of(spec, "readinessGates") > 0 {
        let total = len_of(spec, "readinessGates");
        let ok = items(spec, "readinessGates")
            .filter(|g| {
                let ty = str_or(g, "conditionType");
                items(status, "conditions")
                    .find(|c| str_at(c, "type") == Some(ty))
                    .is_some_and(|c| str_at(c, "status") == Some("True"))
            })
            .count();
        format!("{ok}/{total}")
    } else {
        "<none>".into()
    };
    vec![
        name,
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_text.into(),
        age,
        pod_ip.into(),
        or_none(str_at(spec, "nodeName")).into(),
        or_none(str_at(status, "nominatedNodeName")).into(),
        gates.into(),
    ]
}

fn job(obj: &Value, name: Value, age: Value, now: jiff::Timestamp) -> Vec<Value> {
    let spec = at(obj, "spec");
    let status = at(obj, "status");
    let succeeded = int_at(status, "succeeded").unwrap_or(0);
    let completions = match int_at(spec, "completions") {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int_at(spec, "parallelism").unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = str_at(status, "startTime").and_then(parse_time);
    let end = str_at(status, "completionTime").and_then(parse_time);
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now.as_second() - s.as_second()),
        (Some(s), Some(e)) => human_duration(e.as_second() - s.as_second()),
    };
    let state = if condition_true(status, "Complete") {
        "Complete"
    } else if condition_true(status, "Failed") {
        "Failed"
    } else if obj.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if condition_true(status, "Suspended") {
        "Suspended"
    } else if condition_true(status, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers(spec.pointer("/template/spec"));
    vec![
        name,
        state.into(),
        completions.into(),
        duration.into(),
        age,
        names.into(),
        images.into(),
        format_label_selector(spec.get("selector")).into(),
    ]
}

/// Load-balancer ingress points, clipped to 16 characters outside `-o wide` — but the server
/// prints for `-o wide` too, so like Kubernetes' server it never clips.
fn lb_addresses(ingress: Option<&Value>) -> String {
    let mut out: Vec<String> = ingress
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| {
            str_at(i, "ip")
                .filter(|s| !s.is_empty())
                .or_else(|| str_at(i, "hostname").filter(|s| !s.is_empty()))
                .map(str::to_string)
        })
        .collect();
    out.sort();
    out.dedup();
    out.join(",")
}

fn service(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let spec = at(obj, "spec");
    let ty = str_or(spec, "type");
    let cluster_ip = items(spec, "clusterIPs")
        .next()
        .and_then(Value::as_str)
        .or_else(|| str_at(spec, "clusterIP").filter(|s| !s.is_empty()))
        .unwrap_or("<none>");
    let external: Vec<&str> = items(spec, "externalIPs")
        .filter_map(Value::as_str)
        .collect();
    let external_ip = match ty {
        "ClusterIP" | "NodePort" | "" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = lb_addresses(obj.pointer("/status/loadBalancer/ingress"));
            let mut all: Vec<String> = if lb.is_empty() {
                Vec::new()
            } else {
                lb.split(',').map(str::to_string).collect()
            };
            all.extend(external.iter().map(|s| s.to_string()));
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_or(spec, "externalName").to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = items(spec, "ports")
        .map(|p| {
            let port = int_at(p, "port").unwrap_or(0);
            let proto = str_or(p, "protocol");
            match int_at(p, "nodePort").filter(|n| *n > 0) {
                Some(np) => format!("{port}:{np}/{proto}"),
                None => format!("{port}/{proto}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        name,
        ty.into(),
        cluster_ip.into(),
        external_ip.into(),
        ports.into(),
        age,
        format_labels(spec.get("selector")).into(),
    ]
}

fn ingress_hosts(spec: &Value) -> String {
    let rules: Vec<&Value> = items(spec, "rules").collect();
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for r in &rules {
        if list.len() == 3 {
            more = true;
        }
        if !more && let Some(h) = str_at(r, "host").filter(|h| !h.is_empty()) {
            list.push(h);
        }
    }
    if list.is_empty() {
        return "*".into();
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", rules.len() - 3)
    } else {
        joined
    }
}

fn endpoints(obj: &Value) -> String {
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    let mut more = false;
    for ss in items(obj, "subsets") {
        let addrs: Vec<&str> = items(ss, "addresses").map(|a| str_or(a, "ip")).collect();
        let ports: Vec<&Value> = items(ss, "ports").collect();
        if ports.is_empty() {
            count += addrs.len();
            for a in &addrs {
                if list.len() == 3 {
                    more = true;
                    break;
                }
                list.push(a.to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            let port = int_at(p, "port").unwrap_or(0);
            for a in &addrs {
                if list.len() == 3 {
                    more = true;
                    break;
                }
                if a.contains(':') {
                    list.push(format!("[{a}]:{port}"));
                } else {
                    list.push(format!("{a}:{port}"));
                }
            }
        }
    }
    if list.is_empty() && !more {
        return "<none>".into();
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - 3)
    } else {
        joined
    }
}

fn event(obj: &Value, name: Value, now: jiff::Timestamp) -> Vec<Value> {
    let ts = |k: &str| str_at(obj, k).filter(|s| !s.is_empty());
    let first = match ts("firstTimestamp").or_else(|| ts("eventTime")) {
        Some(t) => since(t, now),
        None => "<unknown>".into(),
    };
    let mut last = match ts("lastTimestamp") {
        Some(t) => since(t, now),
        None => first.clone(),
    };
    let mut count = int_at(obj, "count").unwrap_or(0);
    if let Some(series) = obj.get("series").filter(|s| s.is_object()) {
        last = match str_at(series, "lastObservedTime") {
            Some(t) => since(t, now),
            None => "<unknown>".into(),
        };
        count = int_at(series, "count").unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let involved = at(obj, "involvedObject");
    let kind = str_or(involved, "kind").to_lowercase();
    let target = match str_at(involved, "name").filter(|n| !n.is_empty()) {
        Some(n) => format!("{kind}/{n}"),
        None => kind,
    };
    let source = at(obj, "source");
    let component = str_at(source, "component")
        .filter(|s| !s.is_empty())
        .unwrap_or(str_or(obj, "reportingComponent"));
    let host = str_at(source, "host")
        .filter(|s| !s.is_empty())
        .unwrap_or(str_or(obj, "reportingInstance"));
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    vec![
        last.into(),
        str_or(obj, "type").into(),
        str_or(obj, "reason").into(),
        target.into(),
        str_or(involved, "fieldPath").into(),
        source.into(),
        str_or(obj, "message").trim().into(),
        first.into(),
        json!(count),
        name,
    ]
}

fn access_modes(v: &Value) -> String {
    let modes: Vec<&str> = items(v, "accessModes").filter_map(Value::as_str).collect();
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if modes.contains(&mode) {
            out.push(short);
        }
    }
    out.join(",")
}

fn storage_class(obj: &Value) -> String {
    obj.pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
        .and_then(Value::as_str)
        .or_else(|| {
            obj.pointer("/spec/storageClassName")
                .and_then(Value::as_str)
        })
        .unwrap_or_default()
        .to_string()
}

fn hpa_targets(spec: &Value, status: &Value) -> String {
    let metrics: Vec<&Value> = items(spec, "metrics").collect();
    if metrics.is_empty() {
        return "<none>".into();
    }
    let current: Vec<&Value> = items(status, "currentMetrics").collect();
    let q = |v: Option<&Value>| -> Option<String> {
        v.and_then(Quantity::from_json).map(|q| q.canonical())
    };
    let mut list: Vec<String> = Vec::new();
    for (i, m) in metrics.iter().enumerate() {
        let cur = current.get(i).copied();
        let text = match str_or(m, "type") {
            "External" | "Object" => {
                let key = if str_or(m, "type") == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = m.pointer(&format!("/{key}/target")).unwrap_or(&Value::Null);
                let now = cur.and_then(|c| c.pointer(&format!("/{key}/current")));
                if let Some(avg) = q(target.get("averageValue")) {
                    let c = q(now.and_then(|n| n.get("averageValue")))
                        .unwrap_or_else(|| "<unknown>".into());
                    format!("{c}/{avg} (avg)")
                } else {
                    let c =
                        q(now.and_then(|n| n.get("value"))).unwrap_or_else(|| "<unknown>".into());
                    format!(
                        "{c}/{}",
                        q(target.get("value")).unwrap_or_else(|| "0".into())
                    )
                }
            }
            "Pods" => {
                let c = q(cur.and_then(|c| c.pointer("/pods/current/averageValue")))
                    .unwrap_or_else(|| "<unknown>".into());
                format!(
                    "{c}/{}",
                    q(m.pointer("/pods/target/averageValue")).unwrap_or_else(|| "0".into())
                )
            }
            ty @ ("Resource" | "ContainerResource") => {
                let key = if ty == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let src = at(m, key);
                let rname = str_or(src, "name");
                let target = at(src, "target");
                let now = cur.and_then(|c| c.pointer(&format!("/{key}/current")));
                if let Some(avg) = q(target.get("averageValue")) {
                    let c = q(now.and_then(|n| n.get("averageValue")))
                        .unwrap_or_else(|| "<unknown>".into());
                    format!("{rname}: {c}/{avg}")
                } else {
                    let c = now
                        .and_then(|n| int_at(n, "averageUtilization"))
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<unknown>".into());
                    let t = int_at(target, "averageUtilization")
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<auto>".into());
                    format!("{rname}: {c}/{t}")
                }
            }
            _ => "<unknown type>".into(),
        };
        list.push(text);
    }
    let count = list.len();
    if count > 2 {
        list.truncate(2);
        format!("{} + {} more...", list.join(", "), count - 2)
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2024-01-01T00:10:00Z".parse().unwrap()
    }

    fn cell_strings(printer: Printer, obj: &Value) -> Vec<String> {
        cells(printer, obj, now())
            .iter()
            .map(|c| match c {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn human_durations_match_kubernetes() {
        for (secs, want) in [
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (200, "3m20s"),
            (600, "10m"),
            (3600 * 5, "5h"),
            (3600 * 5 + 60 * 7, "5h7m"),
            (3600 * 30, "30h"),
            (3600 * 51, "2d3h"),
            (86400 * 30, "30d"),
            (86400 * 800, "2y70d"),
            (86400 * 365 * 9, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn pod_status_reasons() {
        let base = json!({"metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": {"phase": "Pending"}});
        assert_eq!(
            cell_strings(Printer::Pod, &base)[1..5],
            ["0/2", "Pending", "0", "10m"]
        );

        let mut creating = base.clone();
        creating["status"]["containerStatuses"] = json!([
            {"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}},
            {"name": "b", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]);
        assert_eq!(
            cell_strings(Printer::Pod, &creating)[2],
            "ContainerCreating"
        );

        let mut crash = base.clone();
        crash["status"]["phase"] = json!("Running");
        crash["status"]["containerStatuses"] = json!([
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:08:00Z"}}}]);
        let c = cell_strings(Printer::Pod, &crash);
        assert_eq!(c[1..4], ["1/2", "CrashLoopBackOff", "3 (2m ago)"]);

        let mut init = base.clone();
        init["spec"]["initContainers"] = json!([{"name": "i"}]);
        init["status"]["initContainerStatuses"] = json!([
            {"name": "i", "ready": false, "restartCount": 0, "state": {"running": {}}}]);
        assert_eq!(cell_strings(Printer::Pod, &init)[2], "Init:0/1");

        let mut done = base.clone();
        done["status"]["phase"] = json!("Succeeded");
        done["status"]["containerStatuses"] = json!([
            {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]);
        assert_eq!(cell_strings(Printer::Pod, &done)[2], "Completed");

        let mut deleting = crash.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:09:00Z");
        assert_eq!(cell_strings(Printer::Pod, &deleting)[2], "Terminating");
    }

    #[test]
    fn services_and_deployments() {
        let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}], "selector": {"app": "web"}}});
        assert_eq!(
            cell_strings(Printer::Service, &svc)[1..],
            [
                "NodePort",
                "10.96.0.20",
                "<none>",
                "80:30080/TCP",
                "10m",
                "app=web"
            ]
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": []}});
        assert_eq!(cell_strings(Printer::Service, &lb)[3], "<pending>");
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let c = cells(Printer::Deployment, &d, now());
        assert_eq!(c[1], "2/3");
        assert_eq!(c[2], 3);
        assert_eq!(c[5], "nginx");
        assert_eq!(c[7], "app=web");
    }

    #[test]
    fn jobs_events_and_hpas() {
        let job = json!({"metadata": {"name": "pi"}, "spec": {"completions": 1},
            "status": {"succeeded": 1, "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:00:09Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(
            cell_strings(Printer::Job, &job)[1..4],
            ["Complete", "1/1", "9s"]
        );
        let ev = json!({"metadata": {"name": "e1"}, "type": "Normal", "reason": "Scheduled",
            "involvedObject": {"kind": "Pod", "name": "web-1"}, "message": "Assigned ",
            "firstTimestamp": "2024-01-01T00:09:00Z", "lastTimestamp": "2024-01-01T00:09:30Z", "count": 2});
        assert_eq!(
            cell_strings(Printer::Event, &ev)[..7],
            [
                "30s",
                "Normal",
                "Scheduled",
                "pod/web-1",
                "",
                "",
                "Assigned"
            ]
        );
        let hpa = json!({"metadata": {"name": "web"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5, "metrics": [{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}]}, "status": {"currentReplicas": 1}});
        assert_eq!(
            cell_strings(Printer::HorizontalPodAutoscaler, &hpa)[1..6],
            ["Deployment/web", "cpu: <unknown>/50%", "1", "5", "1"]
        );
    }

    #[test]
    fn endpoints_and_quotas() {
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.244.0.5"}, {"ip": "10.244.0.6"}],
            "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(
            cell_strings(Printer::Endpoints, &ep)[1],
            "10.244.0.5:80,10.244.0.6:80,10.244.0.5:443 + 1 more..."
        );
        let rq = json!({"metadata": {"name": "q"}, "status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
            "used": {"pods": "1", "limits.cpu": "0"}}});
        assert_eq!(
            cell_strings(Printer::ResourceQuota, &rq)[1..3],
            ["pods: 1/10, requests.cpu: 0/1", "limits.cpu: 0/2"]
        );
    }
}
