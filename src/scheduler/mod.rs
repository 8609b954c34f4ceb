//! The scheduler, behaving like kube-scheduler: pods with no node and schedulerName
//! default-scheduler are taken one at a time in priority order, every node is filtered and the
//! feasible ones scored with the default plugins, the pod is assumed onto the best node in the
//! cache (so the next pod sees it) and bound through pods/binding in the background.
//!
//! A pod that fits nowhere gets kube-scheduler's FailedScheduling event and PodScheduled=False
//! (reason Unschedulable) with the same message users know ("0/3 nodes are available: …
//! preemption: …"), and waits among the unschedulable pods until a node or a pod changes in a
//! way that could help, then retries with per-pod backoff (1 s doubling to 10 s).

mod affinity;
mod cache;
mod plugins;
mod preemption;
pub(crate) mod resources;
mod spread;
mod volumes;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, info, warn};

use crate::controllers::runtime::events::{NORMAL, Recorder, WARNING};
use crate::controllers::runtime::{Change, Informer, ObjKey, error_message, is_not_found};
use cache::{Cache, NodeInfo};
use plugins::{PodFacts, Rejection};
use preemption::PostFilter;

pub use plugins::tolerates;

pub const SCHEDULER_NAME: &str = "default-scheduler";
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at least this often even if nothing seems to change.
const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);
const CONCURRENT_BINDS: usize = 64;

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    priority: i32,
    seq: Reverse<u64>,
    key: ObjKey,
}

/// kube-scheduler's scheduling queue, reduced to what matters here: an active heap ordered by
/// priority then arrival, and the pods parked as unschedulable with their attempt counts.
#[derive(Default)]
struct Queue {
    active: BinaryHeap<Entry>,
    queued: HashSet<ObjKey>,
    unschedulable: HashMap<ObjKey, Instant>,
    attempts: HashMap<ObjKey, u32>,
    seq: u64,
}

pub struct Scheduler {
    client: kube::Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    namespaces: Arc<Informer<Namespace>>,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    volumes: Arc<Informer<PersistentVolume>>,
    cache: Mutex<Cache>,
    queue: Mutex<Queue>,
    wake: Notify,
    recorder: Recorder,
    binds: Arc<Semaphore>,
    random: AtomicU64,
}

/// Why a pod could not be placed, in the words of kube-scheduler's FitError.
pub struct FitError {
    pub num_nodes: usize,
    pub rejections: Vec<Rejection>,
    pub post_filter: Option<String>,
}

impl FitError {
    pub fn message(&self) -> String {
        let mut msg = format!("0/{} nodes are available:", self.num_nodes);
        let histogram = reasons_histogram(self.rejections.iter());
        if !histogram.is_empty() {
            msg.push_str(&format!(" {histogram}."));
        }
        if let Some(post) = &self.post_filter {
            msg.push_str(&format!(" {post}."));
        }
        msg
    }
}

/// "3 node(s) didn't match …, 1 Insufficient cpu": counts per reason, sorted as strings.
pub fn reasons_histogram<'a>(rejections: impl Iterator<Item = &'a Rejection>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rejections {
        for reason in &r.reasons {
            *counts.entry(reason.as_str()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    parts.join(", ")
}

enum Decision {
    Bind(String),
    NoNodes,
    Unschedulable(FitError),
    Preempt {
        fit: FitError,
        node: String,
        victims: Vec<Arc<Pod>>,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; carry on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn is_ours(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n == SCHEDULER_NAME)
}

fn is_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// A change to a pending pod that could change the verdict (not our own status writes).
fn spec_changed(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

/// A node change that could make a pending pod fit (not the heartbeats).
fn node_changed(old: &Node, new: &Node) -> bool {
    let conditions = |n: &Node| -> Vec<(String, String)> {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .map(|c| (c.type_.clone(), c.status.clone()))
            .collect()
    };
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.status.as_ref().and_then(|s| s.allocatable.as_ref())
            != new.status.as_ref().and_then(|s| s.allocatable.as_ref())
        || conditions(old) != conditions(new)
}

impl Scheduler {
    pub fn new(
        client: kube::Client,
        pods: Arc<Informer<Pod>>,
        nodes: Arc<Informer<Node>>,
        namespaces: Arc<Informer<Namespace>>,
        claims: Arc<Informer<PersistentVolumeClaim>>,
        volumes: Arc<Informer<PersistentVolume>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let seed = jiff::Timestamp::now().as_nanosecond() as u64 | 1;
        let this = Arc::new(Scheduler {
            client,
            pods,
            nodes,
            namespaces,
            claims,
            volumes,
            cache: Mutex::new(Cache::default()),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            recorder,
            binds: Arc::new(Semaphore::new(CONCURRENT_BINDS)),
            random: AtomicU64::new(seed),
        });
        let weak = Arc::downgrade(&this);
        this.pods.add_handler(move |change| {
            if let Some(s) = weak.upgrade() {
                s.on_pod(change);
            }
        });
        let weak = Arc::downgrade(&this);
        this.nodes.add_handler(move |change| {
            if let Some(s) = weak.upgrade() {
                s.on_node(change);
            }
        });
        this
    }

    fn on_pod(self: &Arc<Self>, change: &Change<Pod>) {
        match change {
            Change::Added(pod) => {
                if is_bound(pod) {
                    lock(&self.cache).set_pod(pod.clone());
                } else if is_ours(pod) && pod.metadata.deletion_timestamp.is_none() {
                    self.enqueue(ObjKey::of(&**pod), cache::priority(pod));
                }
            }
            Change::Updated { old, new } => {
                let key = ObjKey::of(&**new);
                if is_bound(new) {
                    let freed = !is_bound(old)
                        || matches!(
                            new.status.as_ref().and_then(|s| s.phase.as_deref()),
                            Some("Succeeded" | "Failed")
                        );
                    lock(&self.cache).set_pod(new.clone());
                    self.forget(&key);
                    if freed && is_bound(old) {
                        self.move_all_to_active();
                    }
                    return;
                }
                if new.metadata.deletion_timestamp.is_some() || !is_ours(new) {
                    self.forget(&key);
                    return;
                }
                let parked = lock(&self.queue).unschedulable.contains_key(&key);
                if !parked || spec_changed(old, new) {
                    self.enqueue(key, cache::priority(new));
                }
            }
            Change::Deleted(pod) => {
                let key = ObjKey::of(&**pod);
                self.forget(&key);
                if lock(&self.cache).remove_pod(&key) {
                    // Its resources and ports are free: pending pods may fit now.
                    self.move_all_to_active();
                }
            }
        }
    }

    fn on_node(self: &Arc<Self>, change: &Change<Node>) {
        match change {
            Change::Added(node) => {
                lock(&self.cache).set_node(node.clone());
                self.move_all_to_active();
            }
            Change::Updated { old, new } => {
                lock(&self.cache).set_node(new.clone());
                if node_changed(old, new) {
                    self.move_all_to_active();
                }
            }
            Change::Deleted(node) => lock(&self.cache).remove_node(&node.name_any()),
        }
    }

    fn enqueue(&self, key: ObjKey, priority: i32) {
        let mut q = lock(&self.queue);
        q.unschedulable.remove(&key);
        if q.queued.insert(key.clone()) {
            q.seq += 1;
            let seq = Reverse(q.seq);
            q.active.push(Entry { priority, seq, key });
            drop(q);
            self.wake.notify_one();
        }
    }

    fn forget(&self, key: &ObjKey) {
        let mut q = lock(&self.queue);
        q.unschedulable.remove(key);
        q.attempts.remove(key);
        // A stale heap entry is skipped when popped.
        q.queued.remove(key);
    }

    fn backoff(attempts: u32) -> Duration {
        INITIAL_BACKOFF
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(10))
            .min(MAX_BACKOFF)
    }

    /// Something changed that may let parked pods fit: each goes back to the active queue once
    /// its backoff has passed.
    fn move_all_to_active(self: &Arc<Self>) {
        let moved: Vec<(ObjKey, Duration)> = {
            let mut q = lock(&self.queue);
            let keys: Vec<(ObjKey, Instant)> = q.unschedulable.drain().collect();
            keys.into_iter()
                .map(|(k, since)| {
                    let wait = Self::backoff(q.attempts.get(&k).copied().unwrap_or(1))
                        .saturating_sub(since.elapsed());
                    (k, wait)
                })
                .collect()
        };
        for (key, wait) in moved {
            self.enqueue_later(key, wait);
        }
    }

    fn enqueue_later(self: &Arc<Self>, key: ObjKey, wait: Duration) {
        let priority = self
            .pods
            .get(&key)
            .map(|p| cache::priority(&p))
            .unwrap_or(0);
        if wait.is_zero() {
            self.enqueue(key, priority);
            return;
        }
        // Held as "queued" meanwhile, so events during the backoff do not bring it earlier.
        lock(&self.queue).queued.insert(key.clone());
        let me = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            lock(&me.queue).queued.remove(&key);
            if me.pods.get(&key).is_some() {
                me.enqueue(key, priority);
            }
        });
    }

    async fn pop(&self) -> ObjKey {
        loop {
            let notified = self.wake.notified();
            {
                let mut q = lock(&self.queue);
                while let Some(e) = q.active.pop() {
                    if q.queued.remove(&e.key) {
                        return e.key;
                    }
                }
            }
            notified.await;
        }
    }

    fn park(&self, key: &ObjKey) {
        let mut q = lock(&self.queue);
        *q.attempts.entry(key.clone()).or_default() += 1;
        q.unschedulable.insert(key.clone(), Instant::now());
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.pods.wait_synced().await;
        self.nodes.wait_synced().await;
        info!("scheduler started");
        let flusher = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let stale: Vec<ObjKey> = {
                    let q = lock(&flusher.queue);
                    q.unschedulable
                        .iter()
                        .filter(|(_, since)| since.elapsed() > MAX_UNSCHEDULABLE)
                        .map(|(k, _)| k.clone())
                        .collect()
                };
                for key in stale {
                    let priority = flusher
                        .pods
                        .get(&key)
                        .map(|p| cache::priority(&p))
                        .unwrap_or(0);
                    flusher.enqueue(key, priority);
                }
            }
        });
        loop {
            let key = self.pop().await;
            self.clone().schedule_one(key);
        }
    }

    fn next_random(&self) -> u64 {
        // xorshift64: enough to break ties between equally good nodes.
        let mut x = self.random.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random.store(x, Ordering::Relaxed);
        x
    }

    fn schedule_one(self: Arc<Self>, key: ObjKey) {
        let Some(pod) = self.pods.get(&key) else {
            self.forget(&key);
            return;
        };
        if is_bound(&pod) || pod.metadata.deletion_timestamp.is_some() || !is_ours(&pod) {
            self.forget(&key);
            return;
        }
        if lock(&self.cache).is_assumed(&key) {
            return;
        }
        if is_gated(&pod) {
            // Scheduling gates hold the pod back without an attempt; removing them is a spec
            // change, which brings it back.
            self.park(&key);
            self.set_condition(
                &pod,
                "SchedulingGated",
                "Scheduling is blocked due to non-empty scheduling gates".into(),
            );
            return;
        }
        let facts = PodFacts {
            pod: &pod,
            requests: resources::pod_requests(&pod, false),
            non_zero: resources::pod_requests(&pod, true),
            ports: cache::host_ports(&pod),
            owner: crate::controllers::runtime::controller_of(&pod.metadata).map(|o| o.uid.clone()),
            volume_terms: volumes::node_terms(&pod, &self.claims, &self.volumes),
        };
        let decision = {
            let cache = lock(&self.cache);
            self.decide(&facts, &cache)
        };
        match decision {
            Decision::Bind(node) => {
                let mut bound = (*pod).clone();
                if let Some(spec) = bound.spec.as_mut() {
                    spec.node_name = Some(node.clone());
                }
                lock(&self.cache).assume(Arc::new(bound));
                let this = self.clone();
                tokio::spawn(async move { this.bind(pod, node).await });
            }
            Decision::NoNodes => {
                self.fail(&pod, "no nodes available to schedule pods".into(), None);
            }
            Decision::Unschedulable(fit) => {
                self.fail(&pod, fit.message(), None);
            }
            Decision::Preempt { fit, node, victims } => {
                info!(pod = %key, node = %node, victims = victims.len(), "preempting lower-priority pods");
                for victim in victims {
                    self.evict(&pod, &node, victim);
                }
                // The pod waits for its victims to go; the node is held for it meanwhile.
                self.fail(&pod, fit.message(), Some(node));
            }
        }
    }

    fn decide(&self, facts: &PodFacts, cache: &Cache) -> Decision {
        let nodes: Vec<&NodeInfo> = cache.nodes.values().filter(|n| n.node.is_some()).collect();
        if nodes.is_empty() {
            return Decision::NoNodes;
        }
        // PreFilter: what the spread and inter-pod affinity filters need, counted once.
        let affinity_in_play =
            affinity::has_affinity(facts.pod) || nodes.iter().any(|n| n.affinity_pods > 0);
        let ns_labels = affinity_in_play.then(|| self.namespace_labels());
        let cycle = plugins::Cycle {
            spread: spread::SpreadState::new(facts.pod, &nodes),
            affinity: ns_labels
                .as_ref()
                .map(|ns| affinity::AffinityState::new(facts.pod, &nodes, ns)),
        };
        let mut feasible = Vec::new();
        let mut rejected: Vec<(&NodeInfo, Rejection)> = Vec::new();
        for info in &nodes {
            match plugins::filter(facts, info, &cycle) {
                Ok(()) => feasible.push(*info),
                Err(r) => rejected.push((info, r)),
            }
        }
        if feasible.is_empty() {
            let post = preemption::post_filter(facts, &rejected, &nodes, &cycle);
            let fit = |post_filter| FitError {
                num_nodes: nodes.len(),
                rejections: rejected.iter().map(|(_, r)| r.clone()).collect(),
                post_filter,
            };
            return match post {
                PostFilter::Message(m) => Decision::Unschedulable(fit(Some(m))),
                PostFilter::Nominate { node, victims } => Decision::Preempt {
                    fit: fit(None),
                    node,
                    victims,
                },
            };
        }
        if feasible.len() == 1 {
            return Decision::Bind(feasible[0].name().to_string());
        }
        let scores = plugins::score(facts, &feasible, &nodes, ns_labels.as_ref());
        // The best score, a random one among equals (kube-scheduler's selectHost).
        let best = scores.iter().copied().max().unwrap_or(0);
        let top: Vec<usize> = (0..feasible.len()).filter(|i| scores[*i] == best).collect();
        let pick = top[(self.next_random() % top.len() as u64) as usize];
        Decision::Bind(feasible[pick].name().to_string())
    }

    /// A failed attempt: the event, the condition (and the nominated node, set when preemption
    /// made room and cleared otherwise), and the pod parked until something changes.
    fn namespace_labels(&self) -> affinity::NamespaceLabels {
        self.namespaces
            .list_all()
            .iter()
            .map(|ns| {
                (
                    ns.name_any(),
                    ns.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    fn fail(&self, pod: &Pod, message: String, nominated: Option<String>) {
        let key = ObjKey::of(pod);
        self.park(&key);
        self.recorder.event(
            pod,
            WARNING,
            "FailedScheduling",
            "Scheduling",
            message.clone(),
        );
        self.set_condition_nominated(pod, "Unschedulable", message, nominated);
    }

    /// A victim of preemption: marked as disrupted (DisruptionTarget, as kube-scheduler does),
    /// told why with an event, and deleted with its normal grace period.
    fn evict(&self, preemptor: &Pod, node: &str, victim: Arc<Pod>) {
        self.recorder.event(
            &*victim,
            NORMAL,
            "Preempted",
            "Preempting",
            format!(
                "Preempted by pod {} on node {node}",
                preemptor.metadata.uid.as_deref().unwrap_or_default()
            ),
        );
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &victim.namespace().unwrap_or_default());
        let name = victim.name_any();
        tokio::spawn(async move {
            let patch = json!({"status": {"conditions": [{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "PreemptionByScheduler",
                "message": format!("{SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
                "lastTransitionTime": now_rfc3339(),
            }]}});
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await;
            if let Err(e) = api.delete(&name, &Default::default()).await
                && !is_not_found(&e)
            {
                warn!(pod = %name, error = %e, "cannot delete a preemption victim");
            }
        });
    }

    fn set_condition(&self, pod: &Pod, reason: &str, message: String) {
        self.set_condition_nominated(pod, reason, message, None);
    }

    /// PodScheduled=False with the reason and message, written only when something changes.
    fn set_condition_nominated(
        &self,
        pod: &Pod,
        reason: &str,
        message: String,
        nominated: Option<String>,
    ) {
        let current = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"));
        let current_nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.clone())
            .filter(|n| !n.is_empty());
        if current_nominated == nominated
            && current.is_some_and(|c| {
                c.status == "False"
                    && c.reason.as_deref() == Some(reason)
                    && c.message.as_deref() == Some(message.as_str())
            })
        {
            return;
        }
        let transition = match current {
            Some(c) if c.status == "False" => c
                .last_transition_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_else(now_rfc3339),
            _ => now_rfc3339(),
        };
        let patch = json!({"status": {
            "nominatedNodeName": nominated,
            "conditions": [{
                "type": "PodScheduled",
                "status": "False",
                "reason": reason,
                "message": message,
                "lastProbeTime": null,
                "lastTransitionTime": transition,
            }],
        }});
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let name = pod.name_any();
        tokio::spawn(async move {
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
                && !is_not_found(&e)
            {
                debug!(pod = %name, error = %e, "cannot update the PodScheduled condition");
            }
        });
    }

    async fn bind(self: Arc<Self>, pod: Arc<Pod>, node: String) {
        let key = ObjKey::of(&*pod);
        let Ok(_permit) = self.binds.clone().acquire_owned().await else {
            return;
        };
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        volumes::select_node(&self.client, &pod, &node).await;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let result: Result<serde_json::Value, kube::Error> = api
            .create_subresource("binding", &name, &PostParams::default(), &binding)
            .await;
        match result {
            Ok(_) => {
                self.recorder.event(
                    &*pod,
                    NORMAL,
                    "Scheduled",
                    "Binding",
                    format!("Successfully assigned {ns}/{name} to {node}"),
                );
            }
            Err(e) => {
                lock(&self.cache).forget(&key);
                if is_not_found(&e) {
                    self.forget(&key);
                    return;
                }
                warn!(pod = %key, node = %node, error = %e, "binding failed; will retry");
                self.recorder.event(
                    &*pod,
                    WARNING,
                    "FailedScheduling",
                    "Scheduling",
                    format!("Binding rejected: {}", error_message(&e)),
                );
                self.park(&key);
                let wait =
                    Self::backoff(lock(&self.queue).attempts.get(&key).copied().unwrap_or(1));
                lock(&self.queue).unschedulable.remove(&key);
                self.enqueue_later(key, wait);
            }
        }
    }
}

fn now_rfc3339() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_reads_like_kube_schedulers() {
        let r = |s: &str, unresolvable| Rejection {
            unresolvable,
            reasons: vec![s.to_string()],
        };
        let fit = FitError {
            num_nodes: 3,
            rejections: vec![
                r(plugins::REASON_AFFINITY, true),
                r(plugins::REASON_AFFINITY, true),
                r(plugins::REASON_AFFINITY, true),
            ],
            post_filter: Some(
                "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling"
                    .into(),
            ),
        };
        assert_eq!(
            fit.message(),
            "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
             preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
        );
        let mixed = FitError {
            num_nodes: 3,
            rejections: vec![
                r("Insufficient cpu", false),
                r(plugins::REASON_UNSCHEDULABLE, true),
                r("Insufficient cpu", false),
            ],
            post_filter: None,
        };
        assert_eq!(
            mixed.message(),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
        );
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!(Scheduler::backoff(1), Duration::from_secs(1));
        assert_eq!(Scheduler::backoff(2), Duration::from_secs(2));
        assert_eq!(Scheduler::backoff(4), Duration::from_secs(8));
        assert_eq!(Scheduler::backoff(9), Duration::from_secs(10));
    }
}
