//! Node lifecycle: a node whose lease is not renewed within the grace period has its conditions
//! set to Unknown ("Kubelet stopped posting node status."), as kube-controller-manager does; and
//! every node carries the taints its state calls for (unreachable, not-ready, pressure, network,
//! unschedulable when cordoned), which go again when the state does.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::{info, warn};

pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

pub struct Options {
    /// kube-controller-manager's node-monitor-grace-period.
    pub grace: Duration,
    pub period: Duration,
}

impl Default for Options {
    fn default() -> Self {
        let grace = std::env::var("KCLUSTER_NODE_MONITOR_GRACE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(40));
        Options {
            grace,
            period: Duration::from_secs(5),
        }
    }
}

/// `reader` lists Nodes and their Leases (kube-controller-manager's shared informers; the
/// node controller's own role cannot read Leases); `client`, the node controller's account,
/// writes.
pub async fn run(reader: kube::Client, client: kube::Client, options: Options) -> Result<()> {
    let nodes: Api<Node> = Api::all(client);
    let leases: Api<Lease> = Api::namespaced(reader, "kube-node-lease");
    let started = jiff::Timestamp::now();
    loop {
        if let Err(e) = pass(&nodes, &leases, &options, started).await {
            warn!(error = format!("{e:#}"), "node lifecycle pass failed");
        }
        tokio::time::sleep(options.period).await;
    }
}

async fn pass(
    nodes: &Api<Node>,
    leases: &Api<Lease>,
    options: &Options,
    started: jiff::Timestamp,
) -> Result<()> {
    let now = jiff::Timestamp::now();
    let lease_list = leases
        .list(&ListParams::default())
        .await
        .context("cannot list node leases")?;
    for node in nodes
        .list(&ListParams::default())
        .await
        .context("cannot list nodes")?
    {
        let Some(name) = node.metadata.name.clone() else {
            continue;
        };
        let renewed = lease_list
            .items
            .iter()
            .find(|l| l.metadata.name.as_deref() == Some(name.as_str()))
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        // After our own restart every node gets a full grace period before it is judged.
        let last_seen = renewed.unwrap_or(started).max(started);
        let lapsed = now.duration_since(last_seen).as_secs() >= options.grace.as_secs() as i64;
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone());
        let mut node = node;
        let ready = if lapsed {
            if ready.as_deref() != Some("Unknown") {
                info!(node = %name, "node stopped renewing its lease: marking it NotReady");
                node = mark_unknown(nodes, &node, &name).await?;
            }
            Some("Unknown".to_string())
        } else {
            ready
        };
        sync_taints(nodes, &node, &name, ready.as_deref()).await?;
    }
    Ok(())
}

async fn mark_unknown(nodes: &Api<Node>, node: &Node, name: &str) -> Result<Node> {
    let now = crate::apiserver::now_rfc3339();
    let conditions: Vec<Value> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            json!({
                "type": c.type_,
                "status": "Unknown",
                "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.",
                "lastHeartbeatTime": c.last_heartbeat_time.map(|t| t.0.to_string()),
                "lastTransitionTime": now,
            })
        })
        .collect();
    let updated = nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"conditions": conditions}})),
        )
        .await
        .with_context(|| format!("cannot mark node {name} NotReady"))?;
    Ok(updated)
}

/// The taints kube-controller-manager derives from a node's state (TaintNodesByCondition and
/// taint-based eviction): not-ready or unreachable (NoSchedule and NoExecute) from the Ready
/// condition, the pressure and network taints from their conditions, and unschedulable from a
/// cordon. Taints anyone else put on the node are left alone.
fn desired_taints(node: &Node, ready: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let mut want = Vec::new();
    match ready {
        Some("True") => {}
        Some("Unknown") => {
            want.push((UNREACHABLE_TAINT, "NoSchedule"));
            want.push((UNREACHABLE_TAINT, "NoExecute"));
        }
        // False, or no Ready condition yet.
        _ => {
            want.push((NOT_READY_TAINT, "NoSchedule"));
            want.push((NOT_READY_TAINT, "NoExecute"));
        }
    }
    let conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten();
    for c in conditions {
        let key = match c.type_.as_str() {
            "MemoryPressure" => "node.kubernetes.io/memory-pressure",
            "DiskPressure" => "node.kubernetes.io/disk-pressure",
            "PIDPressure" => "node.kubernetes.io/pid-pressure",
            "NetworkUnavailable" => "node.kubernetes.io/network-unavailable",
            _ => continue,
        };
        if c.status == "True" {
            want.push((key, "NoSchedule"));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        want.push(("node.kubernetes.io/unschedulable", "NoSchedule"));
    }
    want
}

const MANAGED: &[&str] = &[
    NOT_READY_TAINT,
    UNREACHABLE_TAINT,
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/network-unavailable",
    "node.kubernetes.io/unschedulable",
];

async fn sync_taints(
    nodes: &Api<Node>,
    node: &Node,
    name: &str,
    ready: Option<&str>,
) -> Result<()> {
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let want = desired_taints(node, ready);
    let have: Vec<(String, String)> = current
        .iter()
        .filter(|t| MANAGED.contains(&t.key.as_str()))
        .map(|t| (t.key.clone(), t.effect.clone()))
        .collect();
    let same = have.len() == want.len()
        && want
            .iter()
            .all(|(k, e)| have.iter().any(|(hk, he)| hk == k && he == e));
    if same {
        return Ok(());
    }
    let now = crate::apiserver::now_rfc3339();
    let mut taints: Vec<Value> = current
        .iter()
        .filter(|t| {
            !MANAGED.contains(&t.key.as_str())
                || want.iter().any(|(k, e)| *k == t.key && *e == t.effect)
        })
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect();
    for (k, e) in &want {
        if !current.iter().any(|t| t.key == *k && t.effect == *e) {
            taints.push(json!({"key": k, "effect": e, "timeAdded": now}));
        }
    }
    info!(node = %name, taints = ?want, "updating the node's condition taints");
    let taints = if taints.is_empty() {
        Value::Null
    } else {
        Value::Array(taints)
    };
    let result = nodes
        .patch(
            name,
            &PatchParams::default(),
            // Guarded by resourceVersion: a taint someone adds meanwhile is never overwritten;
            // the next pass recomputes from the new state.
            &Patch::Merge(&json!({
                "metadata": {"resourceVersion": node.metadata.resource_version},
                "spec": {"taints": taints},
            })),
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot update the taints of node {name}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus};

    fn node(conditions: &[(&str, &str)], cordoned: bool) -> Node {
        Node {
            spec: Some(NodeSpec {
                unschedulable: cordoned.then_some(true),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, s)| NodeCondition {
                            type_: t.to_string(),
                            status: s.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn taints_follow_conditions_and_cordon() {
        assert!(desired_taints(&node(&[("Ready", "True")], false), Some("True")).is_empty());
        assert_eq!(
            desired_taints(&node(&[("Ready", "True")], true), Some("True")),
            [("node.kubernetes.io/unschedulable", "NoSchedule")]
        );
        assert_eq!(
            desired_taints(&node(&[("Ready", "False")], false), Some("False")),
            [
                (NOT_READY_TAINT, "NoSchedule"),
                (NOT_READY_TAINT, "NoExecute")
            ]
        );
        let pressured = node(&[("Ready", "True"), ("DiskPressure", "True")], false);
        assert_eq!(
            desired_taints(&pressured, Some("True")),
            [("node.kubernetes.io/disk-pressure", "NoSchedule")]
        );
        assert_eq!(
            desired_taints(&node(&[], false), Some("Unknown")),
            [
                (UNREACHABLE_TAINT, "NoSchedule"),
                (UNREACHABLE_TAINT, "NoExecute")
            ]
        );
    }
}
