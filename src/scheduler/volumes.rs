//! kube-scheduler's VolumeBinding, for node-local volumes: a pod whose claim is bound to a
//! volume pinned to a node must go to that node (Filter), and a claim that waits for its first
//! consumer learns the chosen node before the pod is bound (PreBind), so its provisioner can
//! make the volume there.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{debug, warn};

use crate::controllers::localpath::SELECTED_NODE;
use crate::controllers::runtime::{Informer, ObjKey};

pub const REASON_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// How long binding waits for a provisioner to bind a claim on the chosen node.
const BIND_WAIT: Duration = Duration::from_secs(30);

fn claim_names(pod: &Pod) -> impl Iterator<Item = &str> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.as_str())
}

/// The node selector terms of the volumes behind the pod's bound claims (each list: one
/// volume's terms, any of which must match).
pub fn node_terms(
    pod: &Pod,
    claims: &Informer<PersistentVolumeClaim>,
    volumes: &Informer<PersistentVolume>,
) -> Vec<Vec<NodeSelectorTerm>> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    claim_names(pod)
        .filter_map(|name| claims.get(&ObjKey::new(ns, name)))
        .filter_map(|claim| claim.spec.as_ref()?.volume_name.clone())
        .filter_map(|pv| volumes.get(&ObjKey::new("", &pv)))
        .filter_map(|pv| {
            Some(
                pv.spec
                    .as_ref()?
                    .node_affinity
                    .as_ref()?
                    .required
                    .as_ref()?
                    .node_selector_terms
                    .clone(),
            )
        })
        .collect()
}

pub fn node_fits(terms: &[Vec<NodeSelectorTerm>], node: &Node) -> bool {
    terms
        .iter()
        .all(|any| any.iter().any(|t| super::plugins::term_matches(t, node)))
}

/// PreBind: names `node` on each unbound WaitForFirstConsumer claim of the pod, then waits a
/// while for the claims to be bound so the pod starts with its volumes there.
pub async fn select_node(client: &kube::Client, pod: &Pod, node: &str) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let classes: Api<StorageClass> = Api::all(client.clone());
    let mut waiting = vec![];
    for name in claim_names(pod) {
        let Ok(Some(claim)) = claims.get_opt(name).await else {
            continue;
        };
        let spec = claim.spec.clone().unwrap_or_default();
        if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let Some(class) = spec.storage_class_name.filter(|c| !c.is_empty()) else {
            continue;
        };
        let waits = matches!(classes.get_opt(&class).await, Ok(Some(c))
            if c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
        if !waits {
            continue;
        }
        let selected = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SELECTED_NODE));
        if selected.is_none() {
            let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
            if let Err(e) = claims
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                warn!(claim = %format!("{ns}/{name}"), error = %e, "cannot record the selected node on the claim");
                continue;
            }
        }
        waiting.push(name.to_string());
    }
    let deadline = Instant::now() + BIND_WAIT;
    for name in waiting {
        loop {
            let bound = matches!(claims.get_opt(&name).await, Ok(Some(c))
                if c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty()));
            if bound {
                break;
            }
            if Instant::now() >= deadline {
                debug!(claim = %format!("{ns}/{name}"), "claim not bound yet; binding the pod anyway");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
