//! The Deployment controller, as kube-controller-manager's: one ReplicaSet per pod template
//! (`<deployment>-<pod-template-hash>`), rolling updates within maxSurge/maxUnavailable,
//! Recreate, proportional scaling during a rollout or while paused, revisions and their history
//! (which is what `kubectl rollout history|undo` read and write), cleanup beyond
//! revisionHistoryLimit, and the Progressing/Available conditions `kubectl rollout status` reads.

mod rolling;
mod status;
pub mod util;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tracing::{debug, info};

use super::runtime::events::{NORMAL, Recorder, WARNING};
use super::runtime::queue::WorkQueue;
use super::runtime::{
    Change, Informer, ObjKey, controller_of, controller_ref, error_message, is_conflict,
    is_not_found, selector_is_empty, selector_matches,
};
use util::*;

/// kube-controller-manager's --concurrent-deployment-syncs.
const WORKERS: usize = 5;

pub struct DeploymentController {
    client: kube::Client,
    deployments: Arc<Informer<Deployment>>,
    sets: Arc<Informer<ReplicaSet>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue<ObjKey>>,
    recorder: Recorder,
}

impl DeploymentController {
    pub fn new(
        client: kube::Client,
        deployments: Arc<Informer<Deployment>>,
        sets: Arc<Informer<ReplicaSet>>,
        pods: Arc<Informer<Pod>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(DeploymentController {
            client,
            deployments,
            sets,
            pods,
            queue: WorkQueue::new(),
            recorder,
        });
        let weak = Arc::downgrade(&this);
        this.deployments.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                let d = change.object();
                c.queue.add(ObjKey::of(&**d));
            }
        });
        let weak = Arc::downgrade(&this);
        this.sets.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                c.on_replica_set(change);
            }
        });
        let weak = Arc::downgrade(&this);
        this.pods.add_handler(move |change| {
            if let (Some(c), Change::Deleted(pod)) = (weak.upgrade(), change) {
                c.on_pod_deleted(pod);
            }
        });
        this
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.deployments.wait_synced().await;
        self.sets.wait_synced().await;
        self.pods.wait_synced().await;
        info!("deployment controller started");
        self.queue
            .run_workers(WORKERS, "deployment", |key| {
                let this = &self;
                async move { this.sync(&key).await }
            })
            .await;
        Ok(())
    }

    fn resolve(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        uid: &str,
    ) -> Option<Arc<Deployment>> {
        if kind != "Deployment" {
            return None;
        }
        let d = self.deployments.get(&ObjKey::new(namespace, name))?;
        (d.metadata.uid.as_deref() == Some(uid)).then_some(d)
    }

    /// Deployments whose selector matches an orphan ReplicaSet's labels.
    fn deployments_for_orphan(&self, rs: &ReplicaSet) -> Vec<Arc<Deployment>> {
        let ns = rs.namespace().unwrap_or_default();
        self.deployments
            .list_namespace(&ns)
            .into_iter()
            .filter(|d| {
                let sel = d.spec.as_ref().map(|s| &s.selector);
                sel.is_some_and(|s| !selector_is_empty(s))
                    && selector_matches(sel, rs.metadata.labels.as_ref())
            })
            .collect()
    }

    fn enqueue_owner(&self, rs: &ReplicaSet) -> bool {
        let ns = rs.namespace().unwrap_or_default();
        match controller_of(&rs.metadata) {
            Some(owner) => {
                if let Some(d) = self.resolve(&ns, &owner.kind, &owner.name, &owner.uid) {
                    self.queue.add(ObjKey::of(&*d));
                }
                true
            }
            None => false,
        }
    }

    fn on_replica_set(&self, change: &Change<ReplicaSet>) {
        match change {
            Change::Added(rs) => {
                if !self.enqueue_owner(rs) && rs.metadata.deletion_timestamp.is_none() {
                    for d in self.deployments_for_orphan(rs) {
                        self.queue.add(ObjKey::of(&*d));
                    }
                }
            }
            Change::Updated { old, new } => {
                let old_ref = controller_of(&old.metadata);
                let new_ref = controller_of(&new.metadata);
                let ref_changed = old_ref != new_ref;
                if ref_changed && old_ref.is_some() {
                    self.enqueue_owner(old);
                }
                if self.enqueue_owner(new) {
                    return;
                }
                if old.metadata.labels != new.metadata.labels || ref_changed {
                    for d in self.deployments_for_orphan(new) {
                        self.queue.add(ObjKey::of(&*d));
                    }
                }
            }
            Change::Deleted(rs) => {
                self.enqueue_owner(rs);
            }
        }
    }

    /// A Recreate rollout waits for every old pod to be gone: their deletion wakes it up.
    fn on_pod_deleted(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        let Some(owner) = controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet") else {
            return;
        };
        let Some(rs) = self.sets.get(&ObjKey::new(&ns, &owner.name)) else {
            return;
        };
        if rs.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
            return;
        }
        if let Some(d_ref) = controller_of(&rs.metadata)
            && let Some(d) = self.resolve(&ns, &d_ref.kind, &d_ref.name, &d_ref.uid)
            && !is_rolling_update(&d)
        {
            self.queue.add(ObjKey::of(&*d));
        }
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let Some(cached) = self.deployments.get(key) else {
            return Ok(());
        };
        let mut d = (*cached).clone();
        let selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if selector_is_empty(&selector) {
            self.recorder.event(
                &d,
                WARNING,
                "SelectingAll",
                "Select",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            let status = d.status.get_or_insert_with(Default::default);
            if status.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
                status.observed_generation = d.metadata.generation;
                self.update_status(&mut d).await?;
            }
            return Ok(());
        }
        let rs_list = self.claim_replica_sets(&d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            return self.sync_status_only(&mut d, rs_list).await;
        }
        self.check_paused_conditions(&mut d).await?;
        if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            return self.sync_scale(&mut d, rs_list).await;
        }
        if self.is_scaling_event(&mut d, &rs_list).await? {
            return self.sync_scale(&mut d, rs_list).await;
        }
        if is_rolling_update(&d) {
            self.rollout_rolling(&mut d, rs_list).await
        } else {
            let pods = self.pod_map(&d, &rs_list);
            self.rollout_recreate(&mut d, rs_list, &pods).await
        }
    }

    /// ClaimReplicaSets: keep ours that still match, adopt matching orphans, release the rest.
    async fn claim_replica_sets(&self, d: &Deployment) -> Result<Vec<ReplicaSet>> {
        let ns = d.namespace().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let selector = d.spec.as_ref().map(|s| &s.selector);
        let deleting = d.metadata.deletion_timestamp.is_some();
        let mut claimed = Vec::new();
        let mut may_adopt: Option<bool> = None;
        for rs in self.sets.list_namespace(&ns) {
            let matches = selector_matches(selector, rs.metadata.labels.as_ref());
            match controller_of(&rs.metadata) {
                Some(owner) if owner.uid != uid => {}
                Some(_) => {
                    if matches {
                        claimed.push((*rs).clone());
                    } else if !deleting {
                        self.patch_owner(&rs, json!([{"$patch": "delete", "uid": uid}]))
                            .await?;
                    }
                }
                None => {
                    if !matches || deleting || rs.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if may_adopt.is_none() {
                        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
                        may_adopt = Some(api.get_opt(&d.name_any()).await?.is_some_and(|f| {
                            f.metadata.uid == d.metadata.uid
                                && f.metadata.deletion_timestamp.is_none()
                        }));
                    }
                    if may_adopt == Some(true) {
                        let owner = controller_ref("apps/v1", "Deployment", &d.metadata);
                        if let Some(adopted) = self.patch_owner(&rs, json!([owner])).await? {
                            claimed.push(adopted);
                        }
                    }
                }
            }
        }
        Ok(claimed)
    }

    async fn patch_owner(
        &self,
        rs: &ReplicaSet,
        owner_references: serde_json::Value,
    ) -> Result<Option<ReplicaSet>> {
        let api: Api<ReplicaSet> =
            Api::namespaced(self.client.clone(), &rs.namespace().unwrap_or_default());
        let patch =
            json!({"metadata": {"ownerReferences": owner_references, "uid": rs.metadata.uid}});
        match api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(updated) => Ok(Some(updated)),
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(None),
            Err(e) => Err(e).with_context(|| {
                format!("cannot change the owner of replica set {}", rs.name_any())
            }),
        }
    }

    /// The deployment's pods grouped by the ReplicaSet that controls them (terminated ones too:
    /// Recreate must see that no old pod still runs).
    fn pod_map(&self, d: &Deployment, rs_list: &[ReplicaSet]) -> HashMap<String, Vec<Arc<Pod>>> {
        let mut map: HashMap<String, Vec<Arc<Pod>>> = rs_list
            .iter()
            .filter_map(|rs| rs.metadata.uid.clone())
            .map(|uid| (uid, Vec::new()))
            .collect();
        let selector = d.spec.as_ref().map(|s| &s.selector);
        for pod in self.pods.list_namespace(&d.namespace().unwrap_or_default()) {
            if !selector_matches(selector, pod.metadata.labels.as_ref()) {
                continue;
            }
            if let Some(owner) = controller_of(&pod.metadata)
                && let Some(list) = map.get_mut(&owner.uid)
            {
                list.push(pod);
            }
        }
        map
    }

    /// getAllReplicaSetsAndSyncRevision: the new ReplicaSet (created if asked and missing) with
    /// its revision brought up to date, and all the old ones.
    async fn new_and_old(
        &self,
        d: &mut Deployment,
        rs_list: &[ReplicaSet],
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>)> {
        let template = d_template(d);
        let mut sorted: Vec<&ReplicaSet> = rs_list.iter().collect();
        sorted.sort_by(|a, b| by_creation(a, b));
        // The oldest with our template, should there ever be two (kubernetes#40415).
        let existing = sorted
            .iter()
            .find(|rs| equal_ignore_hash(&rs_template(rs), &template))
            .map(|rs| (*rs).clone());
        let old: Vec<ReplicaSet> = rs_list
            .iter()
            .filter(|rs| {
                existing
                    .as_ref()
                    .is_none_or(|n| n.metadata.uid != rs.metadata.uid)
            })
            .cloned()
            .collect();
        let new = self.new_replica_set(d, existing, &old, create).await?;
        Ok((new, old))
    }

    async fn new_replica_set(
        &self,
        d: &mut Deployment,
        existing: Option<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>> {
        let new_revision = max_revision(old) + 1;
        let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        if let Some(existing) = existing {
            let mut rs = existing.clone();
            let annotations_changed = set_new_rs_annotations(d, &mut rs, new_revision, true);
            let rs_min_ready = rs.spec.as_ref().and_then(|s| s.min_ready_seconds);
            if annotations_changed || rs_min_ready.unwrap_or(0) != min_ready.unwrap_or(0) {
                if let Some(spec) = rs.spec.as_mut() {
                    spec.min_ready_seconds = min_ready;
                }
                return Ok(Some(self.replace_rs(&rs).await?));
            }
            let revision = rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                .cloned()
                .unwrap_or_default();
            self.set_revision(d, &revision).await?;
            let mut needs_update = false;
            let has_progressing = d
                .status
                .as_ref()
                .is_some_and(|s| get_condition(s, "Progressing").is_some());
            if has_progress_deadline(d) && !has_progressing {
                let c = new_condition(
                    "Progressing",
                    "True",
                    REASON_FOUND_NEW_RS,
                    format!("Found new replica set \"{}\"", rs.name_any()),
                );
                set_condition(d.status.get_or_insert_with(Default::default), c);
                needs_update = true;
            }
            if needs_update {
                self.update_status(d).await?;
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }

        let ns = d.namespace().unwrap_or_default();
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let mut template = d_template(d);
        let hash = compute_hash(&template, collision_count);
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let labels = meta.labels.clone();
        let mut selector = d
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(HASH_LABEL.into(), hash.clone());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(format!("{}-{hash}", d.name_any())),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![controller_ref("apps/v1", "Deployment", &d.metadata)]),
                labels,
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: min_ready,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut all: Vec<&ReplicaSet> = old.iter().collect();
        all.push(&rs);
        let replicas = new_rs_new_replicas(d, &all, &rs);
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        set_new_rs_annotations(d, &mut rs, new_revision, false);

        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &ns);
        let (created, already_existed) = match api.create(&PostParams::default(), &rs).await {
            Ok(created) => (created, false),
            Err(e) if e_code(&e) == Some(409) => {
                // Our cache was behind, or another template hashed to the same name.
                let Some(found) = api.get_opt(&rs.name_any()).await? else {
                    return Err(e).context("the new replica set vanished after a name clash");
                };
                let ours = controller_of(&found.metadata)
                    .is_some_and(|o| Some(&o.uid) == d.metadata.uid.as_ref());
                if ours && equal_ignore_hash(&rs_template(&found), &d_template(d)) {
                    (found, true)
                } else {
                    let status = d.status.get_or_insert_with(Default::default);
                    status.collision_count = Some(status.collision_count.unwrap_or(0) + 1);
                    info!(deployment = %d.name_any(), "hash collision: bumping collisionCount");
                    self.update_status(d).await?;
                    bail!("replica set {} exists with another template", rs.name_any());
                }
            }
            Err(e) => {
                let msg = format!(
                    "Failed to create new replica set \"{}\": {}",
                    rs.name_any(),
                    error_message(&e)
                );
                if has_progress_deadline(d) {
                    let c =
                        new_condition("Progressing", "False", REASON_RS_CREATE_ERROR, msg.clone());
                    set_condition(d.status.get_or_insert_with(Default::default), c);
                    let _ = self.update_status(d).await;
                }
                self.recorder
                    .event(&*d, WARNING, REASON_RS_CREATE_ERROR, "Create", msg);
                return Err(e).context("cannot create the new replica set");
            }
        };
        if !already_existed && replicas > 0 {
            self.recorder.event(
                &*d,
                NORMAL,
                "ScalingReplicaSet",
                "Scale",
                format!(
                    "Scaled up replica set {} from 0 to {replicas}",
                    created.name_any()
                ),
            );
        }
        self.set_revision(d, &new_revision.to_string()).await?;
        if !already_existed && has_progress_deadline(d) {
            let c = new_condition(
                "Progressing",
                "True",
                REASON_NEW_RS,
                format!("Created new replica set \"{}\"", created.name_any()),
            );
            set_condition(d.status.get_or_insert_with(Default::default), c);
            self.update_status(d).await?;
        }
        Ok(Some(created))
    }

    /// The Deployment's revision annotation, written on the object itself (our API server keeps
    /// metadata out of /status writes, where Kubernetes would let it through).
    async fn set_revision(&self, d: &mut Deployment, revision: &str) -> Result<()> {
        if !set_deployment_revision(d, revision) {
            return Ok(());
        }
        let api: Api<Deployment> =
            Api::namespaced(self.client.clone(), &d.namespace().unwrap_or_default());
        // An update, as Kubernetes' controller writes it (its role has no patch on
        // deployments); a stale copy fails on its resourceVersion and the pass is retried.
        let updated = api
            .replace(&d.name_any(), &PostParams::default(), &*d)
            .await
            .with_context(|| format!("cannot set the revision of deployment {}", d.name_any()))?;
        d.metadata.resource_version = updated.metadata.resource_version;
        Ok(())
    }

    async fn update_status(&self, d: &mut Deployment) -> Result<()> {
        let api: Api<Deployment> =
            Api::namespaced(self.client.clone(), &d.namespace().unwrap_or_default());
        let updated = api
            .replace_status(&d.name_any(), &PostParams::default(), &*d)
            .await?;
        d.metadata.resource_version = updated.metadata.resource_version;
        Ok(())
    }

    async fn replace_rs(&self, rs: &ReplicaSet) -> Result<ReplicaSet> {
        let api: Api<ReplicaSet> =
            Api::namespaced(self.client.clone(), &rs.namespace().unwrap_or_default());
        Ok(api
            .replace(&rs.name_any(), &PostParams::default(), rs)
            .await?)
    }

    /// scaleReplicaSetAndRecordEvent.
    async fn scale_rs(
        &self,
        rs: &ReplicaSet,
        to: i32,
        d: &Deployment,
    ) -> Result<(bool, ReplicaSet)> {
        if rs_replicas(rs) == to {
            return Ok((false, rs.clone()));
        }
        let op = if rs_replicas(rs) < to { "up" } else { "down" };
        self.scale_rs_with(rs, to, d, op).await
    }

    /// scaleReplicaSet: new size and the replica annotations in one update, and the
    /// ScalingReplicaSet event `kubectl describe deployment` shows.
    async fn scale_rs_with(
        &self,
        rs: &ReplicaSet,
        to: i32,
        d: &Deployment,
        op: &str,
    ) -> Result<(bool, ReplicaSet)> {
        let from = rs_replicas(rs);
        let (desired, max) = (d_replicas(d), d_replicas(d) + max_surge(d));
        let size_changed = from != to;
        if !size_changed && !replicas_annotations_need_update(rs, desired, max) {
            return Ok((false, rs.clone()));
        }
        let mut copy = rs.clone();
        if let Some(spec) = copy.spec.as_mut() {
            spec.replicas = Some(to);
        }
        set_replicas_annotations(&mut copy, desired, max);
        let updated = self.replace_rs(&copy).await?;
        if size_changed {
            self.recorder.event(
                d,
                NORMAL,
                "ScalingReplicaSet",
                "Scale",
                format!(
                    "Scaled {op} replica set {} from {from} to {to}",
                    rs.name_any()
                ),
            );
        }
        Ok((size_changed, updated))
    }

    /// isScalingEvent: an active ReplicaSet was sized for a different replica count.
    async fn is_scaling_event(&self, d: &mut Deployment, rs_list: &[ReplicaSet]) -> Result<bool> {
        let (new, old) = self.new_and_old(d, rs_list, false).await?;
        let desired = d_replicas(d);
        Ok(new
            .iter()
            .chain(old.iter())
            .filter(|rs| rs_replicas(rs) > 0)
            .filter_map(desired_replicas_annotation)
            .any(|want| want != desired))
    }

    /// sync: scaling events and paused deployments.
    async fn sync_scale(&self, d: &mut Deployment, rs_list: Vec<ReplicaSet>) -> Result<()> {
        let (new, old) = self.new_and_old(d, &rs_list, false).await?;
        self.scale(d, new.as_ref(), &old).await?;
        if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
            self.cleanup(d, &old).await?;
        }
        // Sizes changed above: read them back from the cache next time; status uses what we have.
        let all: Vec<ReplicaSet> = old.into_iter().chain(new.clone()).collect();
        self.sync_deployment_status(d, &all, new.as_ref()).await
    }

    async fn sync_status_only(&self, d: &mut Deployment, rs_list: Vec<ReplicaSet>) -> Result<()> {
        let (new, old) = self.new_and_old(d, &rs_list, false).await?;
        let all: Vec<ReplicaSet> = old.into_iter().chain(new.clone()).collect();
        self.sync_deployment_status(d, &all, new.as_ref()).await
    }

    /// scale: sizes every active ReplicaSet in proportion when the Deployment's replica count
    /// changes in the middle of a rollout (or while paused), so neither the new nor the old
    /// template wins by the accident of a scaling event.
    async fn scale(
        &self,
        d: &Deployment,
        new: Option<&ReplicaSet>,
        old: &[ReplicaSet],
    ) -> Result<()> {
        let desired = d_replicas(d);
        let mut active: Vec<&ReplicaSet> = new
            .into_iter()
            .chain(old.iter())
            .filter(|rs| rs_replicas(rs) > 0)
            .collect();
        // FindActiveOrLatest: one active set (or none: the newest) takes the whole count.
        let only = match active.len() {
            0 => new.or_else(|| {
                let mut sorted: Vec<&ReplicaSet> = old.iter().collect();
                sorted.sort_by(|a, b| by_creation(b, a));
                sorted.first().copied()
            }),
            1 => Some(active[0]),
            _ => None,
        };
        if active.len() <= 1 {
            if let Some(rs) = only
                && rs_replicas(rs) != desired
            {
                self.scale_rs(rs, desired, d).await?;
            }
            return Ok(());
        }
        if let Some(n) = new
            && is_saturated(d, n)
        {
            for rs in old.iter().filter(|rs| rs_replicas(rs) > 0) {
                self.scale_rs(rs, 0, d).await?;
            }
            return Ok(());
        }
        if !is_rolling_update(d) {
            return Ok(());
        }
        let current = sum_replicas(active.iter().copied());
        let allowed = if desired > 0 {
            desired + max_surge(d)
        } else {
            0
        };
        let to_add = allowed - current;
        let op = match to_add.cmp(&0) {
            std::cmp::Ordering::Greater => {
                active.sort_by(|a, b| by_size_newer(a, b));
                "up"
            }
            std::cmp::Ordering::Less => {
                active.sort_by(|a, b| by_size_older(a, b));
                "down"
            }
            std::cmp::Ordering::Equal => "",
        };
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::with_capacity(active.len());
        for rs in &active {
            if to_add != 0 {
                let p = get_proportion(rs, d, to_add, added);
                sizes.push(rs_replicas(rs) + p);
                added += p;
            } else {
                sizes.push(rs_replicas(rs));
            }
        }
        for (i, rs) in active.iter().enumerate() {
            let mut size = sizes[i];
            if i == 0 && to_add != 0 {
                // Leftovers go to the largest set.
                size = (size + to_add - added).max(0);
            }
            self.scale_rs_with(rs, size, d, op).await?;
        }
        Ok(())
    }

    /// cleanupDeployment: keep revisionHistoryLimit old ReplicaSets, deleting the oldest
    /// revisions that have no pods left.
    async fn cleanup(&self, d: &Deployment, old: &[ReplicaSet]) -> Result<()> {
        let Some(limit) = revision_history_limit(d) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - limit as i64;
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| by_revision(a, b));
        for rs in cleanable.into_iter().take(diff as usize) {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            if actual_replicas(rs) != 0
                || rs_replicas(rs) != 0
                || rs.metadata.generation.unwrap_or(0) > observed
            {
                continue;
            }
            debug!(replicaset = %rs.name_any(), "deleting old replica set beyond the history limit");
            let api: Api<ReplicaSet> =
                Api::namespaced(self.client.clone(), &rs.namespace().unwrap_or_default());
            match api.delete(&rs.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e).context("cannot delete an old replica set"),
            }
        }
        Ok(())
    }

    /// rolloutRecreate: every old pod gone before the new ReplicaSet scales up.
    async fn rollout_recreate(
        &self,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
        pods: &HashMap<String, Vec<Arc<Pod>>>,
    ) -> Result<()> {
        let (mut new, mut old) = self.new_and_old(d, &rs_list, false).await?;
        let mut scaled_down = false;
        for rs in old.iter_mut().filter(|rs| rs_replicas(rs) != 0) {
            let (scaled, updated) = self.scale_rs(rs, 0, d).await?;
            scaled_down |= scaled;
            *rs = updated;
        }
        if scaled_down {
            let all: Vec<ReplicaSet> = old.into_iter().chain(new.clone()).collect();
            return self.sync_rollout_status(d, &all, new.as_ref()).await;
        }
        if old_pods_running(new.as_ref(), &old, pods) {
            let all: Vec<ReplicaSet> = old.into_iter().chain(new.clone()).collect();
            return self.sync_rollout_status(d, &all, new.as_ref()).await;
        }
        if new.is_none() {
            (new, old) = self.new_and_old(d, &rs_list, true).await?;
        }
        if let Some(n) = new.as_mut() {
            let (_, updated) = self.scale_rs(n, d_replicas(d), d).await?;
            *n = updated;
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        let all: Vec<ReplicaSet> = old.into_iter().chain(new.clone()).collect();
        self.sync_rollout_status(d, &all, new.as_ref()).await
    }
}

/// oldPodsRunning: an old ReplicaSet still reports pods, or any pod of an old ReplicaSet has
/// not finished (pending, running or unknown).
fn old_pods_running(
    new: Option<&ReplicaSet>,
    old: &[ReplicaSet],
    pods: &HashMap<String, Vec<Arc<Pod>>>,
) -> bool {
    if old.iter().map(actual_replicas).sum::<i32>() > 0 {
        return true;
    }
    let new_uid = new.and_then(|n| n.metadata.uid.clone());
    pods.iter()
        .filter(|(uid, _)| Some(*uid) != new_uid.as_ref())
        .flat_map(|(_, list)| list)
        .any(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
}

fn e_code(e: &kube::Error) -> Option<u16> {
    super::runtime::api_code(e)
}
