//! Objects cut down to what the pages draw. Pages get small JSON, and a change the view cannot
//! show (a node heartbeat, a resourceVersion) compares equal and sends nothing.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::noderesources::quantity;

/// `namespace/name`, or the name of a cluster-scoped object.
pub fn key(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or("");
    match meta.namespace.as_deref() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// CPU in millicores, also from metrics' nanocores (`12345n`) and microcores (`12u`).
pub fn cpu_millis(q: &str) -> u64 {
    if let Some(n) = q.strip_suffix('n') {
        return n.parse::<u64>().map_or(0, |n| n / 1_000_000);
    }
    if let Some(u) = q.strip_suffix('u') {
        return u.parse::<u64>().map_or(0, |u| u / 1_000);
    }
    quantity::parse_cpu_millis(q).unwrap_or(0)
}

pub fn bytes(q: &str) -> u64 {
    quantity::parse_bytes(q).unwrap_or(0)
}

fn cpu_of(map: Option<&BTreeMap<String, Quantity>>) -> u64 {
    map.and_then(|m| m.get("cpu"))
        .map_or(0, |q| cpu_millis(&q.0))
}

fn memory_of(map: Option<&BTreeMap<String, Quantity>>) -> u64 {
    map.and_then(|m| m.get("memory")).map_or(0, |q| bytes(&q.0))
}

fn owner(meta: &ObjectMeta) -> Value {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map_or(Value::Null, |o| json!({"kind": o.kind, "name": o.name}))
}

pub fn node(n: &Node) -> (String, Value) {
    let status = n.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map_or("Unknown", |c| c.status.as_str());
    let spec = n.spec.as_ref();
    let taints: Vec<String> = spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| match &t.value {
            Some(v) if !v.is_empty() => format!("{}={v}:{}", t.key, t.effect),
            _ => format!("{}:{}", t.key, t.effect),
        })
        .collect();
    let allocatable = status.and_then(|s| s.allocatable.as_ref());
    let labels = n.metadata.labels.clone().unwrap_or_default();
    let roles: Vec<&str> = labels
        .keys()
        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    (
        key(&n.metadata),
        json!({
            "name": n.metadata.name,
            "ready": ready,
            "unschedulable": spec.and_then(|s| s.unschedulable).unwrap_or(false),
            "taints": taints,
            "roles": roles,
            "labels": labels,
            "cpu": cpu_of(allocatable),
            "memory": memory_of(allocatable),
        }),
    )
}

pub fn pod(p: &Pod) -> (String, Value) {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let (mut cpu, mut memory) = (0, 0);
    for c in containers {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        cpu += cpu_of(requests);
        memory += memory_of(requests);
    }
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
    let terminated_by = |reason: &str| {
        statuses.iter().any(|c| {
            let now = c.state.as_ref().and_then(|s| s.terminated.as_ref());
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            [now, last]
                .into_iter()
                .flatten()
                .any(|t| t.reason.as_deref() == Some(reason))
        })
    };
    let waiting = statuses
        .iter()
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .next();
    // A running container with a readiness probe that is not ready is failing that probe.
    let unready_probe = statuses.iter().any(|c| {
        let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
        let probed = containers
            .iter()
            .any(|spec| spec.name == c.name && spec.readiness_probe.is_some());
        running && probed && !c.ready
    });
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
    };
    let unschedulable = condition("PodScheduled").filter(|c| c.status == "False");
    let ready = condition("Ready").is_some_and(|c| c.status == "True");
    (
        key(&p.metadata),
        json!({
            "namespace": p.metadata.namespace,
            "name": p.metadata.name,
            "node": spec.and_then(|s| s.node_name.clone()),
            "phase": status.and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into()),
            "ready": ready,
            "deleting": p.metadata.deletion_timestamp.is_some(),
            "restarts": restarts,
            "oomKilled": terminated_by("OOMKilled"),
            "probeFailing": unready_probe,
            "waiting": waiting,
            "unschedulable": unschedulable.map(|c| json!({
                "reason": c.reason,
                "message": c.message,
            })),
            "owner": owner(&p.metadata),
            "cpu": cpu,
            "memory": memory,
            "ip": status.and_then(|s| s.pod_ip.clone()),
        }),
    )
}

pub fn deployment(d: &Deployment) -> (String, Value) {
    let s = d.status.as_ref();
    (
        key(&d.metadata),
        json!({
            "namespace": d.metadata.namespace,
            "name": d.metadata.name,
            "replicas": d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            "ready": s.and_then(|s| s.ready_replicas).unwrap_or(0),
            "updated": s.and_then(|s| s.updated_replicas).unwrap_or(0),
            "available": s.and_then(|s| s.available_replicas).unwrap_or(0),
        }),
    )
}

pub fn replicaset(r: &ReplicaSet) -> (String, Value) {
    let s = r.status.as_ref();
    let revision = r
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision").cloned());
    (
        key(&r.metadata),
        json!({
            "namespace": r.metadata.namespace,
            "name": r.metadata.name,
            "owner": owner(&r.metadata),
            "replicas": r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            "ready": s.and_then(|s| s.ready_replicas).unwrap_or(0),
            "revision": revision,
        }),
    )
}

pub fn service(svc: &Service) -> (String, Value) {
    let spec = svc.spec.as_ref();
    let ports: Vec<String> = spec
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .map(|p| format!("{}/{}", p.port, p.protocol.as_deref().unwrap_or("TCP")))
        .collect();
    (
        key(&svc.metadata),
        json!({
            "namespace": svc.metadata.namespace,
            "name": svc.metadata.name,
            "type": spec.and_then(|s| s.type_.clone()).unwrap_or_else(|| "ClusterIP".into()),
            "clusterIP": spec.and_then(|s| s.cluster_ip.clone()),
            "ports": ports,
        }),
    )
}

pub fn endpointslice(e: &EndpointSlice) -> (String, Value) {
    let service = e
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/service-name").cloned());
    let endpoints: Vec<Value> = e
        .endpoints
        .iter()
        .map(|ep| {
            // Endpoints of selector-less Services (the API server, the node's DNS) name no pod.
            let pod = ep
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .map(|t| {
                    let ns = t.namespace.as_deref().or(e.metadata.namespace.as_deref());
                    format!("{}/{}", ns.unwrap_or(""), t.name.as_deref().unwrap_or(""))
                });
            json!({
                "address": ep.addresses.first(),
                "pod": pod,
                "ready": ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
            })
        })
        .collect();
    (
        key(&e.metadata),
        json!({
            "namespace": e.metadata.namespace,
            "name": e.metadata.name,
            "service": service,
            "endpoints": endpoints,
        }),
    )
}

pub fn hpa(h: &HorizontalPodAutoscaler) -> (String, Value) {
    let spec = h.spec.as_ref();
    let status = h.status.as_ref();
    let target_cpu = spec
        .and_then(|s| s.metrics.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|m| m.resource.as_ref())
        .find(|r| r.name == "cpu")
        .and_then(|r| r.target.average_utilization);
    let current_cpu = status
        .and_then(|s| s.current_metrics.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|m| m.resource.as_ref())
        .find(|r| r.name == "cpu")
        .and_then(|r| r.current.average_utilization);
    (
        key(&h.metadata),
        json!({
            "namespace": h.metadata.namespace,
            "name": h.metadata.name,
            "target": spec.map(|s| json!({
                "kind": s.scale_target_ref.kind,
                "name": s.scale_target_ref.name,
            })),
            "min": spec.and_then(|s| s.min_replicas).unwrap_or(1),
            "max": spec.map_or(0, |s| s.max_replicas),
            "current": status.and_then(|s| s.current_replicas).unwrap_or(0),
            "desired": status.map_or(0, |s| s.desired_replicas),
            "cpuTarget": target_cpu,
            "cpuCurrent": current_cpu,
        }),
    )
}

pub fn event(e: &Event) -> (String, Value) {
    // Newer writers set eventTime only; older ones lastTimestamp/firstTimestamp.
    let time = e
        .last_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.to_string()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        });
    let involved = &e.involved_object;
    (
        key(&e.metadata),
        json!({
            "namespace": e.metadata.namespace,
            "type": e.type_,
            "reason": e.reason,
            "message": e.message,
            "count": e.count.unwrap_or(1),
            "time": time,
            "object": {
                "kind": involved.kind,
                "name": involved.name,
                "namespace": involved.namespace,
            },
        }),
    )
}

/// One item of a NodeMetricsList or PodMetricsList (read as plain JSON: k8s-openapi has no
/// metrics types): usage summed over a pod's containers.
pub fn metrics(item: &Value) -> Option<(String, Value)> {
    let meta = &item["metadata"];
    let name = meta["name"].as_str()?;
    let key = match meta["namespace"].as_str() {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    };
    let usages: Vec<&Value> = match item["containers"].as_array() {
        Some(containers) => containers.iter().map(|c| &c["usage"]).collect(),
        None => vec![&item["usage"]],
    };
    let cpu: u64 = usages
        .iter()
        .map(|u| u["cpu"].as_str().map_or(0, cpu_millis))
        .sum();
    let memory: u64 = usages
        .iter()
        .map(|u| u["memory"].as_str().map_or(0, bytes))
        .sum();
    Some((key, json!({"cpu": cpu, "memory": memory})))
}
