//! The StatefulSet controller, as kube-controller-manager's: pods with stable identities
//! `<set>-<ordinal>` (hostname, subdomain = serviceName, `statefulset.kubernetes.io/pod-name`
//! and `apps.kubernetes.io/pod-index` labels), one PersistentVolumeClaim per claim template and
//! ordinal (`<template>-<set>-<ordinal>`, created before the pod, kept or deleted as
//! persistentVolumeClaimRetentionPolicy says through ownerReferences), OrderedReady (one pod at a
//! time, each waiting for the one before to be Running and Ready; removal from the highest
//! ordinal down) or Parallel management, and updates by RollingUpdate (highest ordinal first,
//! down to the partition; maxUnavailable at a time) or OnDelete, with the templates kept as
//! ControllerRevisions (currentRevision/updateRevision, the pods' `controller-revision-hash`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use tracing::info;

use super::deployment::util::scaled_value;
use super::history::{self, HASH_LABEL};
use super::podcontrol;
use super::runtime::events::{NORMAL, Recorder, WARNING};
use super::runtime::queue::WorkQueue;
use super::runtime::{
    Change, Informer, ObjKey, controller_of, controller_ref, error_message, is_conflict,
    is_not_found, pod_is_available, pod_is_ready, selector_is_empty, selector_matches,
};

const WORKERS: usize = 2;
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub struct StatefulSetController {
    client: kube::Client,
    sets: Arc<Informer<StatefulSet>>,
    pods: Arc<Informer<Pod>>,
    revisions: Arc<Informer<ControllerRevision>>,
    queue: Arc<WorkQueue<ObjKey>>,
    recorder: Recorder,
}

fn spec_of(set: &StatefulSet) -> k8s_openapi::api::apps::v1::StatefulSetSpec {
    set.spec.clone().unwrap_or_default()
}

fn replicas(set: &StatefulSet) -> i32 {
    spec_of(set).replicas.unwrap_or(1).max(0)
}

fn start_ordinal(set: &StatefulSet) -> i32 {
    spec_of(set)
        .ordinals
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

fn ordered(set: &StatefulSet) -> bool {
    spec_of(set).pod_management_policy.as_deref() != Some("Parallel")
}

fn on_delete(set: &StatefulSet) -> bool {
    spec_of(set)
        .update_strategy
        .and_then(|s| s.type_)
        .as_deref()
        == Some("OnDelete")
}

fn partition(set: &StatefulSet) -> i32 {
    spec_of(set)
        .update_strategy
        .and_then(|s| s.rolling_update)
        .and_then(|r| r.partition)
        .unwrap_or(0)
}

fn max_unavailable(set: &StatefulSet) -> i32 {
    let ru = spec_of(set).update_strategy.and_then(|s| s.rolling_update);
    let v = ru.and_then(|r| r.max_unavailable);
    match v {
        None => 1,
        Some(v) => scaled_value(Some(&v), replicas(set), false).max(1),
    }
}

fn min_ready_seconds(set: &StatefulSet) -> i32 {
    spec_of(set).min_ready_seconds.unwrap_or(0)
}

/// The ordinal in a pod's name if the pod is a member of this set (`<set>-<ordinal>`).
fn ordinal_of(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let rest = name.strip_prefix(&format!("{}-", set.name_any()))?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && pod_is_ready(pod)
}

fn healthy(pod: &Pod) -> bool {
    running_and_ready(pod) && !terminating(pod)
}

fn revision_of(pod: &Pod) -> String {
    pod.labels().get(HASH_LABEL).cloned().unwrap_or_default()
}

fn claim_name(template: &PersistentVolumeClaim, set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{}-{ordinal}", template.name_any(), set.name_any())
}

fn retention(set: &StatefulSet) -> (String, String) {
    let policy = spec_of(set)
        .persistent_volume_claim_retention_policy
        .unwrap_or_default();
    (
        policy.when_deleted.unwrap_or_else(|| "Retain".into()),
        policy.when_scaled.unwrap_or_else(|| "Retain".into()),
    )
}

/// newStatefulSetPod: the identity and storage of ordinal `ordinal` on top of `template`.
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let name = format!("{}-{ordinal}", set.name_any());
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    if let Some(service) = spec_of(set).service_name.filter(|s| !s.is_empty()) {
        spec.subdomain = Some(service);
    }
    let claims = spec_of(set).volume_claim_templates.unwrap_or_default();
    if !claims.is_empty() {
        let mut volumes: Vec<Volume> = spec
            .volumes
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !claims.iter().any(|c| c.name_any() == v.name))
            .collect();
        for claim in &claims {
            volumes.push(Volume {
                name: claim.name_any(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(claim, set, ordinal),
                    read_only: None,
                }),
                ..Default::default()
            });
        }
        spec.volumes = Some(volumes);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(
                "apps/v1",
                "StatefulSet",
                &set.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// What sync found: the revisions and the pods by ordinal.
struct Revisions {
    current: String,
    current_template: PodTemplateSpec,
    update: String,
    update_template: PodTemplateSpec,
}

impl StatefulSetController {
    pub fn new(
        client: kube::Client,
        sets: Arc<Informer<StatefulSet>>,
        pods: Arc<Informer<Pod>>,
        revisions: Arc<Informer<ControllerRevision>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(StatefulSetController {
            client,
            sets,
            pods,
            revisions,
            queue: WorkQueue::new(),
            recorder,
        });
        let weak = Arc::downgrade(&this);
        this.sets.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                c.queue.add(ObjKey::of(&**change.object()));
            }
        });
        let weak = Arc::downgrade(&this);
        this.pods.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                c.on_pod(change);
            }
        });
        this
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.sets.wait_synced().await;
        self.pods.wait_synced().await;
        self.revisions.wait_synced().await;
        info!("statefulset controller started");
        self.queue
            .run_workers(WORKERS, "statefulset", |key| {
                let this = &self;
                async move { this.sync(&key).await }
            })
            .await;
        Ok(())
    }

    fn on_pod(&self, change: &Change<Pod>) {
        let pod = change.object();
        let ns = pod.namespace().unwrap_or_default();
        if let Some(owner) = controller_of(&pod.metadata) {
            if owner.kind != "StatefulSet" {
                return;
            }
            let key = ObjKey::new(&ns, &owner.name);
            if let Some(set) = self.sets.get(&key) {
                if let Change::Updated { old, new } = change
                    && !pod_is_ready(old)
                    && pod_is_ready(new)
                    && min_ready_seconds(&set) > 0
                {
                    let secs = min_ready_seconds(&set) as u64 + 1;
                    self.queue.add_after(key.clone(), Duration::from_secs(secs));
                }
                self.queue.add(key);
            }
            return;
        }
        if matches!(change, Change::Deleted(_)) {
            return;
        }
        for set in self.sets.list_namespace(&ns) {
            let sel = set.spec.as_ref().map(|s| &s.selector);
            if sel.is_some_and(|s| !selector_is_empty(s))
                && selector_matches(sel, pod.metadata.labels.as_ref())
            {
                self.queue.add(ObjKey::of(&*set));
            }
        }
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let Some(set) = self.sets.get(key) else {
            return Ok(());
        };
        let selector = set.spec.as_ref().map(|s| s.selector.clone());
        if selector.as_ref().is_none_or(selector_is_empty)
            || set.metadata.deletion_timestamp.is_some()
        {
            return Ok(());
        }
        let Some(revs) = self.revisions(&set).await? else {
            return Ok(());
        };
        let pods = self.claim_pods(&set).await?;
        let outcome = self.update_set(&set, &revs, &pods).await;
        // Status reflects what the cache shows; the writes above come back through it.
        let pods = self.claim_pods(&set).await?;
        self.update_status(&set, &revs, &pods).await?;
        self.clean_up_history(&set, &revs, &pods).await?;
        outcome
    }

    /// getStatefulSetRevisions: the update revision holds the current template (made, or made
    /// newest again after a rollback); the current revision is the one status names.
    async fn revisions(&self, set: &StatefulSet) -> Result<Option<Revisions>> {
        let ns = set.namespace().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let template = spec_of(set).template;
        let owned = history::owned(&self.revisions, &ns, &uid);
        let max = history::max_revision(&owned);
        let update = match owned
            .iter()
            .rev()
            .find(|cr| history::matches(cr, &template))
        {
            Some(cr) => {
                if cr.revision < max {
                    history::set_revision(&self.client, cr, max + 1).await?;
                }
                cr.name_any()
            }
            None => {
                let collisions = set.status.as_ref().and_then(|s| s.collision_count);
                let hash = history::hash_data(&history::data_for(&template), collisions);
                let name = format!("{}-{hash}", set.name_any());
                let made = history::create(
                    &self.client,
                    history::NewRevision {
                        namespace: &ns,
                        name: name.clone(),
                        hash: &hash,
                        owner: controller_ref("apps/v1", "StatefulSet", &set.metadata),
                        template: &template,
                        annotations: None,
                        revision: max + 1,
                    },
                )
                .await?;
                if let history::Created::Collision = made {
                    let mut status = set.status.clone().unwrap_or_default();
                    status.collision_count = Some(collisions.unwrap_or(0) + 1);
                    self.write_status(set, status).await?;
                    return Ok(None);
                }
                name
            }
        };
        let named = set.status.as_ref().and_then(|s| s.current_revision.clone());
        let current = named
            .and_then(|n| owned.iter().find(|cr| cr.name_any() == n).cloned())
            .and_then(|cr| Some((cr.name_any(), history::template_of(&cr)?)));
        let (current, current_template) =
            current.unwrap_or_else(|| (update.clone(), template.clone()));
        Ok(Some(Revisions {
            current,
            current_template,
            update,
            update_template: template,
        }))
    }

    /// Our pods (adopting matching orphans named as members, releasing those that stopped
    /// matching).
    async fn claim_pods(&self, set: &StatefulSet) -> Result<Vec<Arc<Pod>>> {
        let ns = set.namespace().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let selector = set.spec.as_ref().map(|s| &s.selector);
        let mut claimed = Vec::new();
        for pod in self.pods.list_namespace(&ns) {
            let matches = selector_matches(selector, pod.metadata.labels.as_ref())
                && ordinal_of(set, &pod).is_some();
            match controller_of(&pod.metadata) {
                Some(owner) if owner.uid != uid => {}
                Some(_) if matches => claimed.push(pod),
                Some(_) => podcontrol::release(&self.client, &uid, &pod).await?,
                None if matches && !terminating(&pod) => {
                    let owner = controller_ref("apps/v1", "StatefulSet", &set.metadata);
                    if podcontrol::adopt(&self.client, owner, &pod).await? {
                        claimed.push(pod);
                    }
                }
                None => {}
            }
        }
        Ok(claimed)
    }

    /// updateStatefulSet: one pass over replicas and condemned pods, stopping where ordered
    /// management must wait.
    async fn update_set(
        &self,
        set: &StatefulSet,
        revs: &Revisions,
        pods: &[Arc<Pod>],
    ) -> Result<()> {
        let start = start_ordinal(set);
        let end = start + replicas(set);
        let monotonic = ordered(set);
        let mut slots: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        let mut condemned: Vec<Arc<Pod>> = Vec::new();
        for pod in pods {
            let Some(ord) = ordinal_of(set, pod) else {
                continue;
            };
            if (start..end).contains(&ord) {
                slots.insert(ord, pod.clone());
            } else {
                condemned.push(pod.clone());
            }
        }
        condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(set, p)));
        let min_ready = min_ready_seconds(set);
        let now = jiff::Timestamp::now();

        for ord in start..end {
            let pod = match slots.get(&ord) {
                Some(p) if matches!(phase(p), "Failed" | "Succeeded") && !terminating(p) => {
                    self.recorder.event(
                        set,
                        WARNING,
                        "RecreatingFailedPod",
                        "Delete",
                        format!(
                            "StatefulSet {}/{} is recreating failed Pod {}",
                            set.namespace().unwrap_or_default(),
                            set.name_any(),
                            p.name_any()
                        ),
                    );
                    self.delete_pod(set, p).await?;
                    if monotonic {
                        return Ok(());
                    }
                    continue;
                }
                Some(p) => p.clone(),
                None => {
                    // Below the partition a new pod gets the current revision, above it the
                    // update revision.
                    let use_current = !on_delete(set) && ord < start + partition(set);
                    let (rev, template) = if use_current {
                        (&revs.current, &revs.current_template)
                    } else {
                        (&revs.update, &revs.update_template)
                    };
                    self.create_pod(set, ord, rev, template).await?;
                    if monotonic {
                        return Ok(());
                    }
                    continue;
                }
            };
            if monotonic {
                if terminating(&pod) || !running_and_ready(&pod) {
                    return Ok(());
                }
                if !pod_is_available(&pod, min_ready, now) {
                    self.queue
                        .add_after(ObjKey::of(set), Duration::from_secs(1));
                    return Ok(());
                }
            }
        }

        // Scale down from the highest ordinal, one at a time when ordered.
        let mut deletions = Vec::new();
        for pod in &condemned {
            if terminating(pod) {
                if monotonic {
                    return Ok(());
                }
                continue;
            }
            if monotonic
                && !running_and_ready(pod)
                && Some(pod) != condemned.iter().find(|p| !healthy(p))
            {
                return Ok(());
            }
            self.release_claims_on_scale_down(set, pod).await?;
            if monotonic {
                return self.delete_pod(set, pod).await;
            }
            deletions.push(self.delete_pod(set, pod));
        }
        for r in join_all(deletions).await {
            r?;
        }
        if !condemned.is_empty() && monotonic {
            return Ok(());
        }

        if on_delete(set) {
            return Ok(());
        }
        // Rolling update: from the highest ordinal down to the partition, replace pods of an
        // old revision, at most maxUnavailable unhealthy at a time.
        let floor = start + partition(set);
        let budget = max_unavailable(set);
        let mut unavailable = (floor..end)
            .filter(|o| slots.get(o).is_none_or(|p| !healthy(p)))
            .count() as i32;
        for ord in (floor..end).rev() {
            let Some(pod) = slots.get(&ord) else {
                continue;
            };
            if revision_of(pod) != revs.update && !terminating(pod) {
                if healthy(pod) {
                    if unavailable >= budget {
                        return Ok(());
                    }
                    unavailable += 1;
                }
                self.delete_pod(set, pod).await?;
                if budget <= 1 {
                    return Ok(());
                }
                continue;
            }
            if !healthy(pod) && budget <= 1 {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn create_claims(&self, set: &StatefulSet, ordinal: i32, pod_name: &str) -> Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        let (when_deleted, _) = retention(set);
        let selector_labels = spec_of(set).selector.match_labels.unwrap_or_default();
        for template in spec_of(set).volume_claim_templates.unwrap_or_default() {
            let name = claim_name(&template, set, ordinal);
            let mut labels = template.metadata.labels.clone().unwrap_or_default();
            labels.extend(selector_labels.clone());
            let owners = (when_deleted == "Delete").then(|| {
                vec![OwnerReference {
                    controller: Some(true),
                    ..controller_ref("apps/v1", "StatefulSet", &set.metadata)
                }]
            });
            let claim = PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    annotations: template.metadata.annotations.clone(),
                    owner_references: owners,
                    ..Default::default()
                },
                spec: template.spec.clone(),
                status: None,
            };
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => self.recorder.event(
                    set,
                    NORMAL,
                    "SuccessfulCreate",
                    "Create",
                    format!(
                        "create Claim {name} Pod {pod_name} in StatefulSet {} success",
                        set.name_any()
                    ),
                ),
                Err(e) if is_conflict(&e) => {}
                Err(e) => {
                    self.recorder.event(
                        set,
                        WARNING,
                        "FailedCreate",
                        "Create",
                        format!(
                            "create Claim {name} for Pod {pod_name} in StatefulSet {} failed error: {}",
                            set.name_any(),
                            error_message(&e)
                        ),
                    );
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot create persistent volume claim {name}")));
                }
            }
        }
        Ok(())
    }

    /// whenScaled=Delete: the condemned pod becomes its claims' only owner, so they go with it.
    async fn release_claims_on_scale_down(&self, set: &StatefulSet, pod: &Pod) -> Result<()> {
        let (_, when_scaled) = retention(set);
        if when_scaled != "Delete" {
            return Ok(());
        }
        let Some(ordinal) = ordinal_of(set, pod) else {
            return Ok(());
        };
        let ns = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        for template in spec_of(set).volume_claim_templates.unwrap_or_default() {
            let name = claim_name(&template, set, ordinal);
            let owner = OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.name_any(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                controller: None,
                block_owner_deletion: Some(true),
            };
            // The pod replaces the set as owner: the collector deletes a claim only once
            // every owner is gone. Read and updated, as the role allows (no patch on claims);
            // a conflict retries the pass.
            let mut claim = match api.get_opt(&name).await {
                Ok(Some(claim)) => claim,
                Ok(None) => continue,
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!("cannot read claim {name}")));
                }
            };
            claim.metadata.owner_references = Some(vec![owner]);
            match api.replace(&name, &PostParams::default(), &claim).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot set the owner of claim {name}")));
                }
            }
        }
        Ok(())
    }

    async fn create_pod(
        &self,
        set: &StatefulSet,
        ordinal: i32,
        revision: &str,
        template: &PodTemplateSpec,
    ) -> Result<()> {
        let pod = new_pod(set, template, ordinal, revision);
        let name = pod.name_any();
        self.create_claims(set, ordinal, &name).await?;
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                self.recorder.event(
                    set,
                    NORMAL,
                    "SuccessfulCreate",
                    "Create",
                    format!(
                        "create Pod {name} in StatefulSet {} successful",
                        set.name_any()
                    ),
                );
                Ok(())
            }
            // Our cache had not seen it yet.
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => {
                self.recorder.event(
                    set,
                    WARNING,
                    "FailedCreate",
                    "Create",
                    format!(
                        "create Pod {name} in StatefulSet {} failed error: {}",
                        set.name_any(),
                        error_message(&e)
                    ),
                );
                Err(anyhow::Error::new(e).context(format!("cannot create pod {name}")))
            }
        }
    }

    async fn delete_pod(&self, set: &StatefulSet, pod: &Pod) -> Result<()> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                self.recorder.event(
                    set,
                    NORMAL,
                    "SuccessfulDelete",
                    "Delete",
                    format!(
                        "delete Pod {name} in StatefulSet {} successful",
                        set.name_any()
                    ),
                );
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => {
                self.recorder.event(
                    set,
                    WARNING,
                    "FailedDelete",
                    "Delete",
                    format!(
                        "delete Pod {name} in StatefulSet {} failed error: {}",
                        set.name_any(),
                        error_message(&e)
                    ),
                );
                Err(anyhow::Error::new(e).context(format!("cannot delete pod {name}")))
            }
        }
    }

    async fn update_status(
        &self,
        set: &StatefulSet,
        revs: &Revisions,
        pods: &[Arc<Pod>],
    ) -> Result<()> {
        let now = jiff::Timestamp::now();
        let min_ready = min_ready_seconds(set);
        let mut s = set.status.clone().unwrap_or_default();
        let (mut created, mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0, 0);
        for pod in pods {
            if ordinal_of(set, pod).is_none() {
                continue;
            }
            let is_created = !phase(pod).is_empty();
            if is_created {
                created += 1;
            }
            if running_and_ready(pod) {
                ready += 1;
                if pod_is_available(pod, min_ready, now) {
                    available += 1;
                }
            }
            if is_created && !terminating(pod) {
                let rev = revision_of(pod);
                if rev == revs.current {
                    current += 1;
                }
                if rev == revs.update {
                    updated += 1;
                }
            }
        }
        s.replicas = created;
        s.ready_replicas = Some(ready);
        s.available_replicas = Some(available);
        s.current_replicas = Some(current);
        s.updated_replicas = Some(updated);
        s.current_revision = Some(revs.current.clone());
        s.update_revision = Some(revs.update.clone());
        s.observed_generation = set.metadata.generation;
        // completeRollingUpdate: once every pod is updated and ready, the update is current.
        if !on_delete(set) && updated == created && ready == created {
            s.current_replicas = Some(updated);
            s.current_revision = Some(revs.update.clone());
        }
        if Some(&s) != set.status.as_ref() {
            self.write_status(set, s).await?;
        }
        if min_ready > 0 && ready != available {
            self.queue
                .add_after(ObjKey::of(set), Duration::from_secs(1));
        }
        Ok(())
    }

    async fn write_status(&self, set: &StatefulSet, status: StatefulSetStatus) -> Result<()> {
        let api: Api<StatefulSet> =
            Api::namespaced(self.client.clone(), &set.namespace().unwrap_or_default());
        let mut target = set.clone();
        target.status = Some(status);
        match api
            .replace_status(&set.name_any(), &PostParams::default(), &target)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // A newer copy is on its way through the informer; its sync writes status again.
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot update the status of stateful set {}",
                    set.name_any()
                )
            }),
        }
    }

    async fn clean_up_history(
        &self,
        set: &StatefulSet,
        revs: &Revisions,
        pods: &[Arc<Pod>],
    ) -> Result<()> {
        let ns = set.namespace().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let owned = history::owned(&self.revisions, &ns, &uid);
        let mut live: HashSet<String> = pods.iter().map(|p| revision_of(p)).collect();
        live.insert(revs.current.clone());
        let limit = spec_of(set).revision_history_limit.unwrap_or(10);
        history::clean_up(&self.client, &owned, &live, &revs.update, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::PodSpec;

    #[test]
    fn pods_get_stable_identity_and_claims() {
        let set = StatefulSet {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                service_name: Some("nginx".into()),
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("www".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        let template = PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec::default()),
        };
        let pod = new_pod(&set, &template, 2, "web-abc");
        assert_eq!(pod.name_any(), "web-2");
        assert_eq!(ordinal_of(&set, &pod), Some(2));
        let spec = pod.spec.clone().unwrap_or_default();
        assert_eq!(spec.hostname.as_deref(), Some("web-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volumes = spec.volumes.unwrap_or_default();
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .map(|c| c.claim_name.as_str()),
            Some("www-web-2")
        );
        let labels = pod.labels();
        assert_eq!(labels.get(POD_INDEX_LABEL).map(String::as_str), Some("2"));
        assert_eq!(labels.get(HASH_LABEL).map(String::as_str), Some("web-abc"));
        let other = Pod {
            metadata: ObjectMeta {
                name: Some("web-x".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(ordinal_of(&set, &other), None);
    }
}
