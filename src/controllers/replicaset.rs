//! The ReplicaSet controller, as kube-controller-manager's, which also runs ReplicationControllers
//! (an RC is a ReplicaSet with an equality selector; `ReplicaOwner` says how to read each): keeps
//! exactly spec.replicas active pods, creating them from the template (generateName `<rs>-`, a controller ownerReference) in
//! slow-start batches, deleting the surplus in kube-controller-manager's order (unassigned,
//! pending, not ready, doubled up on a node, ready for less time, more restarts, newer first),
//! adopting matching orphans and releasing pods that stopped matching, and reporting status.
//! Expectations keep it from acting twice before its informer has caught up with its own writes.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{
    Pod, PodTemplateSpec, ReplicationController, ReplicationControllerCondition,
    ReplicationControllerStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::info;

use super::podcontrol;
use super::runtime::events::Recorder;
use super::runtime::expectations::Expectations;
use super::runtime::queue::WorkQueue;
use super::runtime::{
    Change, Informer, ObjKey, controller_of, controller_ref, error_message, is_conflict,
    is_not_found, pod_is_active, pod_is_available, pod_is_ready, pod_ready_since,
    selector_is_empty, selector_matches,
};

/// kube-controller-manager's --concurrent-replicaset-syncs.
const WORKERS: usize = 5;
/// At most this many pods are created or deleted in one sync (burstReplicas).
const BURST: usize = 500;

/// What the controller needs to know of the kind it runs: ReplicaSets and ReplicationControllers
/// differ only in their selector's shape and their status types.
pub trait ReplicaOwner:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const API_VERSION: &'static str;
    /// An RC's equality selector as a LabelSelector (an empty map selects nothing here, as
    /// the controller refuses to act on selectors that match everything).
    fn selector(&self) -> Option<LabelSelector>;
    fn replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    fn template(&self) -> PodTemplateSpec;
    /// The status in ReplicaSet terms.
    fn counts(&self) -> ReplicaSetStatus;
    fn set_counts(&mut self, status: ReplicaSetStatus);
}

impl ReplicaOwner for ReplicaSet {
    const API_VERSION: &'static str = "apps/v1";
    fn selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> PodTemplateSpec {
        self.spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default()
    }
    fn counts(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }
    fn set_counts(&mut self, status: ReplicaSetStatus) {
        self.status = Some(status);
    }
}

impl ReplicaOwner for ReplicationController {
    const API_VERSION: &'static str = "v1";
    fn selector(&self) -> Option<LabelSelector> {
        let labels = self.spec.as_ref()?.selector.clone()?;
        Some(LabelSelector {
            match_labels: Some(labels),
            match_expressions: None,
        })
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn template(&self) -> PodTemplateSpec {
        self.spec
            .as_ref()
            .and_then(|s| s.template.clone())
            .unwrap_or_default()
    }
    fn counts(&self) -> ReplicaSetStatus {
        let s = self.status.clone().unwrap_or_default();
        ReplicaSetStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            observed_generation: s.observed_generation,
            terminating_replicas: None,
            conditions: s.conditions.map(|cs| {
                cs.into_iter()
                    .map(|c| ReplicaSetCondition {
                        type_: c.type_,
                        status: c.status,
                        reason: c.reason,
                        message: c.message,
                        last_transition_time: c.last_transition_time,
                    })
                    .collect()
            }),
        }
    }
    fn set_counts(&mut self, s: ReplicaSetStatus) {
        self.status = Some(ReplicationControllerStatus {
            replicas: s.replicas,
            fully_labeled_replicas: s.fully_labeled_replicas,
            ready_replicas: s.ready_replicas,
            available_replicas: s.available_replicas,
            observed_generation: s.observed_generation,
            conditions: s.conditions.map(|cs| {
                cs.into_iter()
                    .map(|c| ReplicationControllerCondition {
                        type_: c.type_,
                        status: c.status,
                        reason: c.reason,
                        message: c.message,
                        last_transition_time: c.last_transition_time,
                    })
                    .collect()
            }),
        });
    }
}

pub type ReplicaSetController = ReplicaController<ReplicaSet>;
pub type ReplicationManager = ReplicaController<ReplicationController>;

pub struct ReplicaController<K> {
    client: kube::Client,
    sets: Arc<Informer<K>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue<ObjKey>>,
    expectations: Expectations,
    recorder: Recorder,
}

impl<K: ReplicaOwner> ReplicaController<K> {
    pub fn new(
        client: kube::Client,
        sets: Arc<Informer<K>>,
        pods: Arc<Informer<Pod>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(ReplicaController {
            client,
            sets,
            pods,
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
            recorder,
        });
        let weak = Arc::downgrade(&this);
        this.sets.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                c.on_set(change);
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
        info!(kind = %K::kind(&()), "replica controller started");
        self.queue
            .run_workers(WORKERS, "replicaset", |key| {
                let this = &self;
                async move { this.sync(&key).await }
            })
            .await;
        Ok(())
    }

    fn on_set(&self, change: &Change<K>) {
        match change {
            Change::Added(rs) | Change::Updated { new: rs, .. } => {
                self.queue.add(ObjKey::of(&**rs))
            }
            Change::Deleted(rs) => {
                let key = ObjKey::of(&**rs);
                self.expectations.forget(&key);
                self.queue.add(key);
            }
        }
    }

    /// The owner a controller reference names, if it is the one in the cache (same UID).
    fn resolve(&self, namespace: &str, owner: &OwnerReference) -> Option<Arc<K>> {
        if owner.kind != K::kind(&()) {
            return None;
        }
        let rs = self.sets.get(&ObjKey::new(namespace, &owner.name))?;
        (rs.meta().uid.as_deref() == Some(owner.uid.as_str())).then_some(rs)
    }

    /// ReplicaSets whose selector matches an orphan pod: each may want to adopt it.
    fn matching_sets(&self, pod: &Pod) -> Vec<Arc<K>> {
        let ns = pod.namespace().unwrap_or_default();
        self.sets
            .list_namespace(&ns)
            .into_iter()
            .filter(|rs| {
                let sel = rs.selector();
                sel.as_ref().is_some_and(|s| !selector_is_empty(s))
                    && selector_matches(sel.as_ref(), pod.metadata.labels.as_ref())
            })
            .collect()
    }

    fn pod_deleted(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        let Some(owner) = controller_of(&pod.metadata) else {
            return;
        };
        if let Some(rs) = self.resolve(&ns, owner) {
            let key = ObjKey::of(&*rs);
            self.expectations.deletion_observed(&key, &ObjKey::of(pod));
            self.queue.add(key);
        }
    }

    fn on_pod(&self, change: &Change<Pod>) {
        match change {
            Change::Added(pod) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    self.pod_deleted(pod);
                    return;
                }
                let ns = pod.namespace().unwrap_or_default();
                if let Some(owner) = controller_of(&pod.metadata) {
                    if let Some(rs) = self.resolve(&ns, owner) {
                        let key = ObjKey::of(&*rs);
                        self.expectations.creation_observed(&key);
                        self.queue.add(key);
                    }
                    return;
                }
                for rs in self.matching_sets(pod) {
                    self.queue.add(ObjKey::of(&*rs));
                }
            }
            Change::Updated { old, new } => {
                let labels_changed = old.metadata.labels != new.metadata.labels;
                if new.metadata.deletion_timestamp.is_some() {
                    // A graceful deletion: replace the pod now, not when its kubelet lets go.
                    self.pod_deleted(new);
                    if labels_changed {
                        self.pod_deleted(old);
                    }
                    return;
                }
                let ns = new.namespace().unwrap_or_default();
                let old_ref = controller_of(&old.metadata);
                let new_ref = controller_of(&new.metadata);
                let ref_changed = old_ref != new_ref;
                if ref_changed
                    && let Some(o) = old_ref
                    && let Some(rs) = self.resolve(&ns, o)
                {
                    self.queue.add(ObjKey::of(&*rs));
                }
                if let Some(owner) = new_ref {
                    if let Some(rs) = self.resolve(&ns, owner) {
                        let key = ObjKey::of(&*rs);
                        self.queue.add(key.clone());
                        let min_ready = Some(rs.min_ready_seconds());
                        if let Some(secs) = min_ready.filter(|s| *s > 0)
                            && !pod_is_ready(old)
                            && pod_is_ready(new)
                        {
                            // Nothing else will tell us when the pod becomes available.
                            self.queue
                                .add_after(key, Duration::from_secs(secs as u64 + 1));
                        }
                    }
                    return;
                }
                if labels_changed || ref_changed {
                    for rs in self.matching_sets(new) {
                        self.queue.add(ObjKey::of(&*rs));
                    }
                }
            }
            Change::Deleted(pod) => self.pod_deleted(pod),
        }
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let Some(rs) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(());
        };
        let needs_sync = self.expectations.satisfied(key);
        let active: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|p| pod_is_active(p))
            .collect();
        let claimed = self.claim_pods(&rs, active).await?;

        let mut manage_error = None;
        if needs_sync
            && rs.meta().deletion_timestamp.is_none()
            && let Err(e) = self.manage_replicas(key, &rs, &claimed).await
        {
            manage_error = Some(e);
        }
        let status = calculate_status(&*rs, &claimed, manage_error.as_ref());
        let updated = self.update_status(&rs, status).await?;
        if manage_error.is_none() {
            let min_ready = rs.min_ready_seconds();
            let want = rs.replicas();
            let st = updated.counts();
            if min_ready > 0
                && st.ready_replicas.unwrap_or(0) == want
                && st.available_replicas.unwrap_or(0) != want
            {
                self.queue
                    .add_after(key.clone(), Duration::from_secs(min_ready as u64));
            }
        }
        match manage_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// ClaimPods: keep what we own and still match, adopt matching orphans, release the rest.
    async fn claim_pods(&self, rs: &K, pods: Vec<Arc<Pod>>) -> Result<Vec<Arc<Pod>>> {
        let uid = rs.meta().uid.clone().unwrap_or_default();
        let selector = rs.selector();
        let selector = selector.as_ref();
        let mut claimed = Vec::new();
        let mut may_adopt: Option<bool> = None;
        for pod in pods {
            let matches = selector_matches(selector, pod.metadata.labels.as_ref());
            match controller_of(&pod.metadata) {
                Some(owner) if owner.uid != uid => {}
                Some(_) => {
                    if matches {
                        claimed.push(pod);
                    } else if rs.meta().deletion_timestamp.is_none() {
                        self.release(rs, &pod).await?;
                    }
                }
                None => {
                    if !matches
                        || rs.meta().deletion_timestamp.is_some()
                        || pod.metadata.deletion_timestamp.is_some()
                    {
                        continue;
                    }
                    // Re-read the owner once before adopting: our cache may be stale and the
                    // owner already deleted or replaced.
                    if may_adopt.is_none() {
                        may_adopt = Some(self.can_adopt(rs).await?);
                    }
                    if may_adopt == Some(true) && self.adopt(rs, &pod).await? {
                        claimed.push(pod);
                    }
                }
            }
        }
        Ok(claimed)
    }

    async fn can_adopt(&self, rs: &K) -> Result<bool> {
        let api: Api<K> = Api::namespaced(self.client.clone(), &rs.namespace().unwrap_or_default());
        match api.get_opt(&rs.name_any()).await? {
            Some(fresh) => {
                Ok(fresh.meta().uid == rs.meta().uid && fresh.meta().deletion_timestamp.is_none())
            }
            None => Ok(false),
        }
    }

    async fn adopt(&self, rs: &K, pod: &Pod) -> Result<bool> {
        let owner = controller_ref(K::API_VERSION, &K::kind(&()), rs.meta());
        podcontrol::adopt(&self.client, owner, pod).await
    }

    async fn release(&self, rs: &K, pod: &Pod) -> Result<()> {
        podcontrol::release(
            &self.client,
            rs.meta().uid.as_deref().unwrap_or_default(),
            pod,
        )
        .await
    }

    async fn manage_replicas(&self, key: &ObjKey, rs: &K, pods: &[Arc<Pod>]) -> Result<()> {
        let want = rs.replicas().max(0) as usize;
        if pods.len() < want {
            let diff = (want - pods.len()).min(BURST);
            self.expectations.expect_creations(key, diff);
            let created = self.create_pods(rs, diff).await;
            // Pods we never created will never be observed.
            for _ in created.ok..diff {
                self.expectations.creation_observed(key);
            }
            if let Some(e) = created.error {
                return Err(e);
            }
        } else if pods.len() > want {
            let diff = (pods.len() - want).min(BURST);
            let related = self.related_pods(rs);
            let doomed = pods_to_delete(pods, &related, diff, jiff::Timestamp::now());
            self.expectations
                .expect_deletions(key, doomed.iter().map(|p| ObjKey::of(&**p)));
            let results = join_all(doomed.iter().map(|p| self.delete_pod(rs, p))).await;
            let mut first_error = None;
            for (pod, result) in doomed.iter().zip(results) {
                if let Err(e) = result {
                    self.expectations
                        .deletion_observed(key, &ObjKey::of(&**pod));
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(())
    }

    /// slowStartBatch: 1, 2, 4, … pods at a time, stopping at the first batch with a failure,
    /// so a quota or admission error costs one request, not hundreds.
    async fn create_pods(&self, rs: &K, count: usize) -> Created {
        let mut done = 0;
        let mut batch = 1;
        while done < count {
            let n = batch.min(count - done);
            let results = join_all((0..n).map(|_| self.create_pod(rs))).await;
            let mut error = None;
            for r in results {
                match r {
                    Ok(()) => done += 1,
                    Err(e) => {
                        error.get_or_insert(e);
                    }
                }
            }
            if error.is_some() {
                return Created { ok: done, error };
            }
            batch *= 2;
        }
        Created {
            ok: done,
            error: None,
        }
    }

    async fn create_pod(&self, rs: &K) -> Result<()> {
        let template = rs.template();
        let owner = controller_ref(K::API_VERSION, &K::kind(&()), rs.meta());
        let name = format!("{}-", rs.name_any());
        podcontrol::create(
            &self.client,
            &self.recorder,
            rs,
            owner,
            &template,
            name,
            |_| {},
        )
        .await?;
        Ok(())
    }

    async fn delete_pod(&self, rs: &K, pod: &Pod) -> Result<()> {
        podcontrol::delete(&self.client, &self.recorder, rs, pod).await
    }

    /// Active pods of every owner with the same controller as this one (the Deployment's
    /// other revisions): scale-down prefers pods doubled up on a node with their siblings.
    fn related_pods(&self, rs: &K) -> Vec<Arc<Pod>> {
        let ns = rs.namespace().unwrap_or_default();
        let mut owners: Vec<String> = vec![rs.meta().uid.clone().unwrap_or_default()];
        if let Some(parent) = controller_of(rs.meta()) {
            owners = self
                .sets
                .list_namespace(&ns)
                .iter()
                .filter(|o| controller_of(o.meta()).is_some_and(|r| r.uid == parent.uid))
                .filter_map(|o| o.meta().uid.clone())
                .collect();
        }
        self.pods
            .list_namespace(&ns)
            .into_iter()
            .filter(|p| {
                pod_is_active(p)
                    && controller_of(&p.metadata).is_some_and(|r| owners.contains(&r.uid))
            })
            .collect()
    }

    async fn update_status(&self, rs: &K, status: ReplicaSetStatus) -> Result<K> {
        let generation = rs.meta().generation.unwrap_or(0);
        let current = rs.counts();
        if same_counts(&current, &status) && current.observed_generation == Some(generation) {
            return Ok(rs.clone());
        }
        let ns = rs.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        let mut target = rs.clone();
        for attempt in 0..2 {
            let mut s = status.clone();
            s.observed_generation = target.meta().generation;
            target.set_counts(s);
            match api
                .replace_status(&rs.name_any(), &PostParams::default(), &target)
                .await
            {
                Ok(updated) => return Ok(updated),
                Err(e) if attempt == 0 && is_conflict(&e) => {
                    // Stale copy: take the server's and write our counts onto it once more.
                    match api.get_opt(&rs.name_any()).await? {
                        Some(fresh) => target = fresh,
                        None => return Ok(rs.clone()),
                    }
                }
                Err(e) if is_not_found(&e) => return Ok(rs.clone()),
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!(
                            "cannot update the status of {} {}",
                            K::kind(&()),
                            rs.name_any()
                        )
                    });
                }
            }
        }
        Ok(rs.clone())
    }
}

struct Created {
    ok: usize,
    error: Option<anyhow::Error>,
}

fn same_counts(a: &ReplicaSetStatus, b: &ReplicaSetStatus) -> bool {
    a.replicas == b.replicas
        && a.fully_labeled_replicas.unwrap_or(0) == b.fully_labeled_replicas.unwrap_or(0)
        && a.ready_replicas.unwrap_or(0) == b.ready_replicas.unwrap_or(0)
        && a.available_replicas.unwrap_or(0) == b.available_replicas.unwrap_or(0)
        && a.conditions.as_ref().filter(|c| !c.is_empty())
            == b.conditions.as_ref().filter(|c| !c.is_empty())
}

fn calculate_status<K: ReplicaOwner>(
    rs: &K,
    pods: &[Arc<Pod>],
    manage_error: Option<&anyhow::Error>,
) -> ReplicaSetStatus {
    let mut status = rs.counts();
    let template_labels = rs
        .template()
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    let min_ready = rs.min_ready_seconds();
    let now = jiff::Timestamp::now();
    let (mut fully_labeled, mut ready, mut available) = (0, 0, 0);
    for pod in pods {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            fully_labeled += 1;
        }
        if pod_is_ready(pod) {
            ready += 1;
            if pod_is_available(pod, min_ready, now) {
                available += 1;
            }
        }
    }
    let mut conditions = status.conditions.take().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match manage_error {
        Some(e) if !has_failure => {
            let want = rs.replicas().max(0) as usize;
            let reason = match pods.len().cmp(&want) {
                Ordering::Less => "FailedCreate",
                Ordering::Greater => "FailedDelete",
                Ordering::Equal => "",
            };
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(root_message(e)),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        _ => {}
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    status.replicas = pods.len() as i32;
    status.fully_labeled_replicas = Some(fully_labeled);
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status
}

/// The API server's own words, as Kubernetes puts them into the ReplicaFailure condition.
fn root_message(e: &anyhow::Error) -> String {
    e.chain()
        .find_map(|c| c.downcast_ref::<kube::Error>().map(error_message))
        .unwrap_or_else(|| format!("{e:#}"))
}

/// The pods a scale-down removes: kube-controller-manager's ActivePodsWithRanks order, smallest
/// (most expendable) first.
pub fn pods_to_delete(
    pods: &[Arc<Pod>],
    related: &[Arc<Pod>],
    diff: usize,
    now: jiff::Timestamp,
) -> Vec<Arc<Pod>> {
    let mut pods: Vec<Arc<Pod>> = pods.to_vec();
    if diff < pods.len() {
        let mut on_node: HashMap<String, usize> = HashMap::new();
        for p in related {
            if pod_is_active(p) {
                *on_node.entry(node_of(p)).or_default() += 1;
            }
        }
        pods.sort_by(|a, b| {
            let ra = on_node.get(&node_of(a)).copied().unwrap_or(0);
            let rb = on_node.get(&node_of(b)).copied().unwrap_or(0);
            compare_for_deletion(a, ra, b, rb, now)
        });
    }
    pods.truncate(diff);
    pods
}

fn node_of(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    }
}

fn deletion_cost(pod: &Pod) -> i64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("controller.kubernetes.io/pod-deletion-cost"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn max_restarts(pod: &Pod) -> i32 {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            status
                .and_then(|s| s.init_container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// log2 buckets of age (LogarithmicScaleDown): pods of similar age count as equally old, so a
/// scale-down spreads over them instead of always hitting the single newest one.
fn age_rank(t: Option<jiff::Timestamp>, now: jiff::Timestamp) -> i64 {
    match t {
        Some(t) => {
            let nanos = now.duration_since(t).as_nanos();
            if nanos > 0 {
                (nanos as f64).log2() as i64
            } else {
                -1
            }
        }
        None => -1,
    }
}

/// Less means "delete first". Mirrors ActivePodsWithRanks.Less.
fn compare_for_deletion(
    a: &Pod,
    rank_a: usize,
    b: &Pod,
    rank_b: usize,
    now: jiff::Timestamp,
) -> Ordering {
    let (na, nb) = (node_of(a), node_of(b));
    // 1. Unassigned before assigned.
    if na != nb && (na.is_empty() || nb.is_empty()) {
        return if na.is_empty() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // 2. Pending < Unknown < Running.
    let (pa, pb) = (phase_ordinal(a), phase_ordinal(b));
    if pa != pb {
        return pa.cmp(&pb);
    }
    // 3. Not ready before ready.
    let (ra, rb) = (pod_is_ready(a), pod_is_ready(b));
    if ra != rb {
        return if !ra {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // 4. Lower pod-deletion-cost first.
    let (ca, cb) = (deletion_cost(a), deletion_cost(b));
    if ca != cb {
        return ca.cmp(&cb);
    }
    // 5. Doubled up (more siblings on the node) first.
    if rank_a != rank_b {
        return rank_b.cmp(&rank_a);
    }
    // 6. Ready for less time first, by log2 bucket of the time ready (both are ready or both
    // are not, by step 3). Kubernetes breaks a tie of two different times in one bucket by
    // uid but lets equal times fall through to the next steps; that is not a total order (with
    // second-granular times, A = B, B ~ C and A ~ C disagree) and Rust's sort panics on it. So
    // one bucket falls through here whatever the times, and the uid decides last.
    if ra {
        let (ta, tb) = (pod_ready_since(a), pod_ready_since(b));
        let order = age_rank(ta, now).cmp(&age_rank(tb, now));
        if order != Ordering::Equal {
            return order;
        }
    }
    // 7. More restarts first.
    let (xa, xb) = (max_restarts(a), max_restarts(b));
    if xa != xb {
        return xb.cmp(&xa);
    }
    // 8. Newer first, by log2 bucket of age (a missing time first).
    let (ta, tb) = (
        a.metadata.creation_timestamp.as_ref().map(|t| t.0),
        b.metadata.creation_timestamp.as_ref().map(|t| t.0),
    );
    let order = age_rank(ta, now).cmp(&age_rank(tb, now));
    if order != Ordering::Equal {
        return order;
    }
    // 9. Within a bucket, by uid (Kubernetes' random pick among equally old pods).
    a.metadata.uid.cmp(&b.metadata.uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, node: &str, phase: &str, ready_secs_ago: Option<i64>, age: i64) -> Arc<Pod> {
        let now = jiff::Timestamp::now();
        let ago = |s: i64| Time(now - jiff::SignedDuration::from_secs(s));
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                uid: Some(name.into()),
                creation_timestamp: Some(ago(age)),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: (!node.is_empty()).then(|| node.to_string()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_secs_ago.map(|s| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(ago(s)),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn scale_down_removes_the_least_useful_pods_first() {
        let pods = vec![
            pod("running-old", "n1", "Running", Some(10_000), 20_000),
            pod("unassigned", "", "Pending", None, 30_000),
            pod("pending", "n2", "Pending", None, 30_000),
            pod("running-not-ready", "n1", "Running", None, 30_000),
            pod("running-young", "n2", "Running", Some(5), 10),
        ];
        let now = jiff::Timestamp::now();
        let order = names(&pods_to_delete(&pods, &[], 5, now));
        // Deleting all of them needs no ranking.
        assert_eq!(order.len(), 5);
        let order = names(&pods_to_delete(&pods, &[], 4, now));
        assert_eq!(
            order,
            [
                "unassigned",
                "pending",
                "running-not-ready",
                "running-young"
            ]
        );
    }

    #[test]
    fn deletion_order_is_total_with_equal_and_nearby_ready_times() {
        // Second-granular times: many pods share a ready time exactly, others differ by a
        // second within the same log2 bucket; restarts differ. A sort over such pods used to
        // panic ("comparison does not implement a total order") in a 100-replica rollout.
        let base = jiff::Timestamp::now();
        let at = |secs: i64| Time(base - jiff::SignedDuration::from_secs(secs));
        let pods: Vec<Arc<Pod>> = (0..60)
            .map(|i| {
                Arc::new(Pod {
                    metadata: ObjectMeta {
                        name: Some(format!("p{i}")),
                        uid: Some(format!("{:02}", (i * 37) % 60)),
                        creation_timestamp: Some(at(300 + (i % 2))),
                        ..Default::default()
                    },
                    spec: Some(PodSpec {
                        node_name: Some(format!("n{}", i % 3)),
                        ..Default::default()
                    }),
                    status: Some(PodStatus {
                        phase: Some("Running".into()),
                        conditions: Some(vec![PodCondition {
                            type_: "Ready".into(),
                            status: "True".into(),
                            last_transition_time: Some(at(100 + (i % 3))),
                            ..Default::default()
                        }]),
                        container_statuses: Some(vec![
                            k8s_openapi::api::core::v1::ContainerStatus {
                                name: "c".into(),
                                restart_count: (i % 5 == 0) as i32,
                                ..Default::default()
                            },
                        ]),
                        ..Default::default()
                    }),
                })
            })
            .collect();
        let now = base;
        for a in &pods {
            for b in &pods {
                let ab = compare_for_deletion(a, 0, b, 0, now);
                assert_eq!(ab, compare_for_deletion(b, 0, a, 0, now).reverse());
                for c in &pods {
                    if ab != Ordering::Greater
                        && compare_for_deletion(b, 0, c, 0, now) != Ordering::Greater
                    {
                        assert_ne!(
                            compare_for_deletion(a, 0, c, 0, now),
                            Ordering::Greater,
                            "{} <= {} <= {} but not {} <= {}",
                            a.name_any(),
                            b.name_any(),
                            c.name_any(),
                            a.name_any(),
                            c.name_any()
                        );
                    }
                }
            }
        }
        let chosen = pods_to_delete(&pods, &pods, 25, now);
        assert_eq!(chosen.len(), 25);
        // More restarts go first among equally old pods.
        assert!(chosen.iter().take(12).all(|p| max_restarts(p) == 1));
    }

    #[test]
    fn doubled_up_pods_go_before_lonely_ones() {
        let a = pod("a", "n1", "Running", Some(100), 100);
        let b = pod("b", "n2", "Running", Some(100), 100);
        let sibling = pod("s", "n2", "Running", Some(100), 100);
        let now = jiff::Timestamp::now();
        let order = names(&pods_to_delete(
            &[a.clone(), b.clone()],
            &[a, b, sibling],
            1,
            now,
        ));
        assert_eq!(order, ["b"]);
    }

    #[test]
    fn status_counts_ready_and_available_pods() {
        let rs = ReplicaSet {
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: Some(3),
                min_ready_seconds: Some(60),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = vec![
            pod("a", "n1", "Running", Some(120), 200),
            pod("b", "n1", "Running", Some(5), 200),
            pod("c", "n1", "Pending", None, 200),
        ];
        let s = calculate_status(&rs, &pods, None);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(1));
        let err = anyhow::anyhow!("quota exceeded");
        let rs4 = ReplicaSet {
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                replicas: Some(4),
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = calculate_status(&rs4, &pods, Some(&err));
        let c = &s.conditions.unwrap()[0];
        assert_eq!(c.type_, "ReplicaFailure");
        assert_eq!(c.reason.as_deref(), Some("FailedCreate"));
    }
}
