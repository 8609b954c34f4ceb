//! The node-local volume provisioner and its default StorageClass `standard`: a claim of that
//! class waits for its first pod; once the scheduler has picked a node (the claim's
//! `volume.kubernetes.io/selected-node`), a hostPath PersistentVolume pinned to that node is
//! made under `/var/local-path-provisioner/<pv>` and bound to the claim. When a claim goes, its
//! volume goes too (reclaimPolicy Delete); the node removes the directory
//! (`crate::volumes::localpath`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::runtime::events::Recorder;
use super::runtime::{Change, Informer, api_code, is_not_found};

pub const PROVISIONER: &str = "kcluster.io/local-path";
pub const CLASS: &str = "standard";
pub const BASE_DIR: &str = "/var/local-path-provisioner";
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Everything is looked at again this often, besides on every change.
const RESYNC: Duration = Duration::from_secs(10);

pub struct LocalPathProvisioner {
    client: kube::Client,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    volumes: Arc<Informer<PersistentVolume>>,
    recorder: Recorder,
    wake: Notify,
    /// Claims already told they wait for a consumer (uid), so the event is not repeated.
    told_waiting: Mutex<HashSet<String>>,
}

/// The class the cluster's claims get by default.
pub fn default_class() -> StorageClass {
    serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }))
    .unwrap_or_default()
}

impl LocalPathProvisioner {
    pub fn new(
        client: kube::Client,
        claims: Arc<Informer<PersistentVolumeClaim>>,
        volumes: Arc<Informer<PersistentVolume>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(LocalPathProvisioner {
            client,
            claims,
            volumes,
            recorder,
            wake: Notify::new(),
            told_waiting: Mutex::new(HashSet::new()),
        });
        let weak = Arc::downgrade(&this);
        this.claims
            .add_handler(move |_: &Change<PersistentVolumeClaim>| {
                if let Some(c) = weak.upgrade() {
                    c.wake.notify_one();
                }
            });
        let weak = Arc::downgrade(&this);
        this.volumes
            .add_handler(move |_: &Change<PersistentVolume>| {
                if let Some(c) = weak.upgrade() {
                    c.wake.notify_one();
                }
            });
        this
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        let classes: Api<StorageClass> = Api::all(self.client.clone());
        match classes
            .create(&PostParams::default(), &default_class())
            .await
        {
            Ok(_) => info!(class = CLASS, "created the default StorageClass"),
            Err(e) if api_code(&e) == Some(409) => {}
            Err(e) => warn!(error = %e, "cannot create the default StorageClass"),
        }
        self.claims.wait_synced().await;
        self.volumes.wait_synced().await;
        info!("local-path provisioner started");
        loop {
            if let Err(e) = self.sync_all().await {
                warn!(
                    error = format!("{e:#}"),
                    "local-path provisioner pass failed; retrying"
                );
            }
            let _ = tokio::time::timeout(RESYNC, self.wake.notified()).await;
        }
    }

    async fn sync_all(&self) -> Result<()> {
        let classes: Api<StorageClass> = Api::all(self.client.clone());
        let ours: HashSet<String> = classes
            .list(&ListParams::default())
            .await
            .context("cannot list StorageClasses")?
            .items
            .into_iter()
            .filter(|c| c.provisioner == PROVISIONER)
            .map(|c| c.name_any())
            .collect();
        for claim in self.claims.list_all() {
            if claim.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let class = claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.clone())
                .unwrap_or_default();
            if !ours.contains(&class) {
                continue;
            }
            if let Err(e) = self.sync_claim(&claim).await {
                warn!(claim = %claim.name_any(), error = format!("{e:#}"), "cannot provision the claim");
            }
        }
        for volume in self.volumes.list_all() {
            if let Err(e) = self.sync_volume(&volume).await {
                warn!(volume = %volume.name_any(), error = format!("{e:#}"), "cannot reclaim the volume");
            }
        }
        Ok(())
    }

    async fn sync_claim(&self, claim: &PersistentVolumeClaim) -> Result<()> {
        let ns = claim.namespace().unwrap_or_default();
        let uid = claim.uid().unwrap_or_default();
        let spec = claim.spec.clone().unwrap_or_default();
        let pv_name = format!("pvc-{uid}");
        if let Some(bound) = spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
            lock(&self.told_waiting).remove(&uid);
            // Bound (by us, or a finish of an interrupted binding).
            let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase != Some("Bound")
                && let Some(pv) = self.volumes.get(&super::runtime::ObjKey::new("", bound))
            {
                self.mark_bound(claim, &pv).await?;
            }
            return Ok(());
        }
        let Some(node) = claim.annotations().get(SELECTED_NODE).cloned() else {
            if lock(&self.told_waiting).insert(uid.clone()) {
                self.recorder.event(
                    claim,
                    "Normal",
                    "WaitForFirstConsumer",
                    "",
                    "waiting for first consumer to be created before binding".to_string(),
                );
            }
            return Ok(());
        };
        let storage = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "1Gi".into());
        let class = spec.storage_class_name.clone().unwrap_or_default();
        let reclaim = Api::<StorageClass>::all(self.client.clone())
            .get(&class)
            .await
            .ok()
            .and_then(|c| c.reclaim_policy)
            .unwrap_or_else(|| "Delete".into());
        let pv: PersistentVolume = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {PROVISIONED_BY: PROVISIONER}},
            "spec": {
                "capacity": {"storage": storage},
                "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": reclaim,
                "storageClassName": class,
                "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
                "hostPath": {"path": format!("{BASE_DIR}/{pv_name}"), "type": "DirectoryOrCreate"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                             "name": claim.name_any(), "uid": uid,
                             "resourceVersion": claim.resource_version()},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            },
        }))
        .context("building the PersistentVolume")?;
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = match pvs.create(&PostParams::default(), &pv).await {
            Ok(pv) => {
                info!(claim = %format!("{ns}/{}", claim.name_any()), volume = %pv_name, %node, "provisioned");
                self.recorder.event(
                    claim,
                    "Normal",
                    "ProvisioningSucceeded",
                    "",
                    format!("Successfully provisioned volume {pv_name}"),
                );
                pv
            }
            Err(e) if api_code(&e) == Some(409) => pvs.get(&pv_name).await?,
            Err(e) => return Err(e).context("cannot create the PersistentVolume"),
        };
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let bind = json!({"metadata": {"annotations": {
                "pv.kubernetes.io/bind-completed": "yes",
                "pv.kubernetes.io/bound-by-controller": "yes",
                "volume.beta.kubernetes.io/storage-provisioner": PROVISIONER,
                "volume.kubernetes.io/storage-provisioner": PROVISIONER}},
            "spec": {"volumeName": pv_name}});
        let claim = claims
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&bind),
            )
            .await
            .context("cannot bind the claim")?;
        self.mark_bound(&claim, &pv).await
    }

    async fn mark_bound(&self, claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> Result<()> {
        let pv_spec = pv.spec.clone().unwrap_or_default();
        let status = json!({"status": {"phase": "Bound",
            "accessModes": pv_spec.access_modes,
            "capacity": pv_spec.capacity.unwrap_or_default()}});
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &claim.namespace().unwrap_or_default());
        claims
            .patch_status(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
            .context("cannot mark the claim Bound")?;
        if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
            pvs.patch_status(
                &pv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": "Bound"}})),
            )
            .await
            .context("cannot mark the volume Bound")?;
        }
        Ok(())
    }

    /// A volume of ours whose claim is gone: deleted (reclaimPolicy Delete) or Released.
    async fn sync_volume(&self, pv: &PersistentVolume) -> Result<()> {
        if pv.annotations().get(PROVISIONED_BY).map(String::as_str) != Some(PROVISIONER)
            || pv.meta().deletion_timestamp.is_some()
        {
            return Ok(());
        }
        let spec = pv.spec.clone().unwrap_or_default();
        let Some(claim_ref) = spec.claim_ref else {
            return Ok(());
        };
        let ns = claim_ref.namespace.unwrap_or_default();
        let name = claim_ref.name.unwrap_or_default();
        let key = super::runtime::ObjKey::new(&ns, &name);
        let cached_alive = self
            .claims
            .get(&key)
            .is_some_and(|c| c.uid() == claim_ref.uid);
        if cached_alive {
            return Ok(());
        }
        // The cache may lag a just-made claim: ask the server before letting anything go.
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        if let Some(c) = claims.get_opt(&name).await?
            && c.uid() == claim_ref.uid
        {
            return Ok(());
        }
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        if spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete") {
            match pvs.delete(&pv.name_any(), &DeleteParams::default()).await {
                Ok(_) => {
                    info!(volume = %pv.name_any(), claim = %format!("{ns}/{name}"), "claim gone; volume deleted")
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e).context("cannot delete the volume"),
            }
        } else if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released") {
            pvs.patch_status(
                &pv.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": "Released"}})),
            )
            .await
            .context("cannot mark the volume Released")?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_class_waits_for_consumers_and_deletes() {
        let class = default_class();
        assert_eq!(class.name_any(), "standard");
        assert_eq!(class.provisioner, PROVISIONER);
        assert_eq!(
            class.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer")
        );
        assert_eq!(class.reclaim_policy.as_deref(), Some("Delete"));
        assert_eq!(
            class.annotations()["storageclass.kubernetes.io/is-default-class"],
            "true"
        );
    }
}
