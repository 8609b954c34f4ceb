//! The DaemonSet controller, as kube-controller-manager's: one pod on every node the template
//! fits (nodeName, nodeSelector, required node affinity, NoSchedule/NoExecute taints with the
//! tolerations every daemon pod gets), placed by a required node affinity on `metadata.name`
//! for the scheduler to bind; pods on nodes that stop fitting (or vanish) are deleted, failed
//! ones replaced (with a per-node backoff). Templates are kept as ControllerRevisions
//! (`controller-revision-hash` on pods), and a new template rolls out by RollingUpdate
//! (maxUnavailable, or maxSurge) or OnDelete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Taint, Toleration,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use tracing::info;

use super::deployment::util::{compute_hash, scaled_value};
use super::history::{self, HASH_LABEL};
use super::podcontrol;
use super::runtime::events::{Recorder, WARNING};
use super::runtime::expectations::Expectations;
use super::runtime::queue::WorkQueue;
use super::runtime::{
    Change, Informer, ObjKey, controller_of, controller_ref, is_conflict, is_not_found,
    pod_is_available, pod_is_ready, selector_is_empty, selector_matches,
};
use crate::scheduler::{required_affinity_matches, tolerates};

const WORKERS: usize = 2;
/// The deprecated label kube still puts on daemon pods: the DaemonSet's generation.
const TEMPLATE_GENERATION: &str = "pod-template-generation";

pub struct DaemonSetController {
    client: kube::Client,
    sets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
    queue: Arc<WorkQueue<ObjKey>>,
    expectations: Expectations,
    recorder: Recorder,
    /// Per DaemonSet and node: when a failed pod was last deleted and the wait before the next
    /// deletion (1 s doubling to 15 min), so a node that keeps failing pods is not hot-looped.
    failed_backoff: Mutex<HashMap<(ObjKey, String), (Instant, Duration)>>,
}

const FAILED_BACKOFF_BASE: Duration = Duration::from_secs(1);
const FAILED_BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// The tolerations kube adds to every daemon pod: node problems must not evict or block it.
fn default_tolerations(host_network: bool) -> Vec<Toleration> {
    let mut list = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        list.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    list.into_iter()
        .map(|(key, effect)| Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        })
        .collect()
}

/// util.CreatePodTemplate: the DaemonSet's template with the default tolerations (unless the
/// template already tolerates the same key and effect) and the revision labels.
pub fn pod_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
    let mut t = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let spec = t.spec.get_or_insert_with(Default::default);
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for d in default_tolerations(spec.host_network == Some(true)) {
        let present = tolerations
            .iter()
            .any(|t| t.key == d.key && t.effect == d.effect);
        if !present {
            tolerations.push(d);
        }
    }
    let meta = t.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(HASH_LABEL.into(), hash.into());
    labels.insert(
        TEMPLATE_GENERATION.into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    t
}

fn name_field_term(node: &str) -> NodeSelectorTerm {
    NodeSelectorTerm {
        match_expressions: None,
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.into()]),
        }]),
    }
}

/// ReplaceDaemonSetPodNodeNameNodeAffinity: the required node affinity becomes "this node".
fn pin_to_node(pod: &mut Pod, node: &str) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![name_field_term(node)],
    });
}

/// The node a daemon pod is for: its nodeName, or the node its affinity pins it to.
fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.as_ref()?.iter().find_map(|f| {
            (f.key == "metadata.name" && f.operator == "In")
                .then(|| f.values.as_ref()?.first().cloned())
                .flatten()
        })
    })
}

fn untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[&str],
) -> Option<&'a Taint> {
    taints.iter().find(|t| {
        effects.contains(&t.effect.as_str()) && !tolerations.iter().any(|tol| tolerates(tol, t))
    })
}

/// NodeShouldRunDaemonPod: (should run a pod there now, may keep one that runs there).
pub fn should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let node_name = node.metadata.name.clone().unwrap_or_default();
    let template = pod_template(ds, "");
    let spec = template.spec.clone().unwrap_or_default();
    if spec
        .node_name
        .as_ref()
        .is_some_and(|n| !n.is_empty() && *n != node_name)
    {
        return (false, false);
    }
    let pod = Pod {
        metadata: template.metadata.unwrap_or_default(),
        spec: Some(spec.clone()),
        status: None,
    };
    if !required_affinity_matches(&pod, node) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let tolerations = spec.tolerations.unwrap_or_default();
    if untolerated(&taints, &tolerations, &["NoSchedule", "NoExecute"]).is_some() {
        let keep = untolerated(&taints, &tolerations, &["NoExecute"]).is_none();
        return (false, keep);
    }
    (true, true)
}

fn created(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// podByCreationTimestampAndPhase: scheduled first, then oldest, then by name.
fn sort_oldest_first(pods: &mut [Arc<Pod>]) {
    pods.sort_by(|a, b| {
        let bound = |p: &Pod| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| !n.is_empty())
        };
        bound(b)
            .cmp(&bound(a))
            .then_with(|| created(a).cmp(&created(b)))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

fn is_updated(pod: &Pod, hash: &str) -> bool {
    !hash.is_empty() && pod.labels().get(HASH_LABEL).map(String::as_str) == Some(hash)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// A node's updated pod and old pod, either possibly missing.
type NewAndOld = (Option<Arc<Pod>>, Option<Arc<Pod>>);

/// findUpdatedPodsOnNode: the node's one new and one old pod (not being deleted); None when
/// there are more, which the manage step sorts out first.
fn updated_and_old(pods: &[Arc<Pod>], hash: &str) -> Option<NewAndOld> {
    let (mut new, mut old) = (None, None);
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let slot = if is_updated(pod, hash) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod.clone());
    }
    Some((new, old))
}

fn rolling(ds: &DaemonSet) -> Option<&k8s_openapi::api::apps::v1::RollingUpdateDaemonSet> {
    let strategy = ds.spec.as_ref()?.update_strategy.as_ref()?;
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return None;
    }
    strategy.rolling_update.as_ref()
}

fn allows_surge(ds: &DaemonSet) -> bool {
    rolling(ds)
        .and_then(|r| r.max_surge.as_ref())
        .is_some_and(|s| scaled_value(Some(s), 1, true) > 0)
}

fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// What one sync decided for pods: nodes to place a pod on, pods to delete.
#[derive(Default)]
struct Plan {
    create_on: Vec<String>,
    delete: Vec<Arc<Pod>>,
}

impl DaemonSetController {
    pub fn new(
        client: kube::Client,
        sets: Arc<Informer<DaemonSet>>,
        pods: Arc<Informer<Pod>>,
        nodes: Arc<Informer<Node>>,
        revisions: Arc<Informer<ControllerRevision>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(DaemonSetController {
            client,
            sets,
            pods,
            nodes,
            revisions,
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
            recorder,
            failed_backoff: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&this);
        this.sets.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                let key = ObjKey::of(&**change.object());
                if matches!(change, Change::Deleted(_)) {
                    c.expectations.forget(&key);
                }
                c.queue.add(key);
            }
        });
        let weak = Arc::downgrade(&this);
        this.pods.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                c.on_pod(change);
            }
        });
        let weak = Arc::downgrade(&this);
        this.nodes.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                c.on_node(change);
            }
        });
        this
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.sets.wait_synced().await;
        self.pods.wait_synced().await;
        self.nodes.wait_synced().await;
        self.revisions.wait_synced().await;
        info!("daemonset controller started");
        self.queue
            .run_workers(WORKERS, "daemonset", |key| {
                let this = &self;
                async move { this.sync(&key).await }
            })
            .await;
        Ok(())
    }

    fn owner_key(&self, pod: &Pod) -> Option<ObjKey> {
        let owner = controller_of(&pod.metadata)?;
        if owner.kind != "DaemonSet" {
            return None;
        }
        let key = ObjKey::new(&pod.namespace().unwrap_or_default(), &owner.name);
        let ds = self.sets.get(&key)?;
        (ds.metadata.uid.as_deref() == Some(owner.uid.as_str())).then_some(key)
    }

    fn on_pod(&self, change: &Change<Pod>) {
        let pod = change.object();
        let Some(key) = self.owner_key(pod) else {
            if controller_of(&pod.metadata).is_none() && !matches!(change, Change::Deleted(_)) {
                // An orphan some DaemonSet may adopt.
                let ns = pod.namespace().unwrap_or_default();
                for ds in self.sets.list_namespace(&ns) {
                    let sel = ds.spec.as_ref().map(|s| &s.selector);
                    if sel.is_some_and(|s| !selector_is_empty(s))
                        && selector_matches(sel, pod.metadata.labels.as_ref())
                    {
                        self.queue.add(ObjKey::of(&*ds));
                    }
                }
            }
            return;
        };
        match change {
            Change::Added(p) if p.metadata.deletion_timestamp.is_none() => {
                self.expectations.creation_observed(&key)
            }
            Change::Added(p) | Change::Deleted(p) => {
                self.expectations.deletion_observed(&key, &ObjKey::of(&**p))
            }
            Change::Updated { new, .. } => {
                if new.metadata.deletion_timestamp.is_some() {
                    self.expectations
                        .deletion_observed(&key, &ObjKey::of(&**new));
                }
                if let Some(ds) = self.sets.get(&key) {
                    let secs = min_ready_seconds(&ds);
                    if secs > 0 && pod_is_ready(new) {
                        // Nothing else says when the pod becomes available.
                        self.queue
                            .add_after(key.clone(), Duration::from_secs(secs as u64 + 1));
                    }
                }
            }
        }
        self.queue.add(key);
    }

    fn on_node(&self, change: &Change<Node>) {
        let relevant = match change {
            Change::Added(_) | Change::Deleted(_) => true,
            Change::Updated { old, new } => {
                let taints = |n: &Node| n.spec.as_ref().and_then(|s| s.taints.clone());
                let unschedulable = |n: &Node| n.spec.as_ref().and_then(|s| s.unschedulable);
                old.metadata.labels != new.metadata.labels
                    || taints(old) != taints(new)
                    || unschedulable(old) != unschedulable(new)
            }
        };
        if relevant {
            for ds in self.sets.list_all() {
                self.queue.add(ObjKey::of(&*ds));
            }
        }
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let Some(ds) = self.sets.get(key) else {
            self.expectations.forget(key);
            return Ok(());
        };
        let selector = ds.spec.as_ref().map(|s| s.selector.clone());
        if selector.as_ref().is_none_or(selector_is_empty) {
            return Ok(());
        }
        if ds.metadata.deletion_timestamp.is_some() {
            // The garbage collector removes the pods.
            return Ok(());
        }
        let hash = self.current_revision(&ds).await?;
        let Some(hash) = hash else {
            // A hash collision bumped collisionCount; the update brings us back.
            return Ok(());
        };
        let by_node = self.pods_by_node(&ds).await?;
        let nodes = self.nodes.list_all();
        if self.expectations.satisfied(key) {
            let plan = self.manage(&ds, &nodes, &by_node, &hash);
            let acted = !plan.create_on.is_empty() || !plan.delete.is_empty();
            let plan = if acted {
                plan
            } else {
                self.rolling_update(&ds, &nodes, &by_node, &hash)
            };
            self.apply(key, &ds, plan, &hash).await?;
            self.clean_up_history(&ds, &by_node, &hash).await?;
        }
        self.update_status(&ds, &nodes, &by_node, &hash).await
    }

    /// constructHistory: the revision holding the current template (made, or made newest again
    /// after a rollback), as its hash. None after a collision.
    async fn current_revision(&self, ds: &DaemonSet) -> Result<Option<String>> {
        let ns = ds.namespace().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let template = ds
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let owned = history::owned(&self.revisions, &ns, &uid);
        let max = history::max_revision(&owned);
        if let Some(cur) = owned
            .iter()
            .rev()
            .find(|cr| history::matches(cr, &template))
        {
            if cur.revision < max {
                history::set_revision(&self.client, cur, max + 1).await?;
            }
            return Ok(cur.labels().get(HASH_LABEL).cloned());
        }
        let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&template, collisions);
        let made = history::create(
            &self.client,
            history::NewRevision {
                namespace: &ns,
                name: format!("{}-{hash}", ds.name_any()),
                hash: &hash,
                owner: controller_ref("apps/v1", "DaemonSet", &ds.metadata),
                template: &template,
                annotations: ds.metadata.annotations.clone(),
                revision: max + 1,
            },
        )
        .await?;
        match made {
            history::Created::Made => Ok(Some(hash)),
            history::Created::Collision => {
                let mut status = ds.status.clone().unwrap_or_default();
                status.collision_count = Some(collisions.unwrap_or(0) + 1);
                self.write_status(ds, status).await?;
                Ok(None)
            }
        }
    }

    /// Claims pods (adopting matching orphans, releasing ours that stopped matching) and
    /// groups them by the node they are for.
    async fn pods_by_node(&self, ds: &DaemonSet) -> Result<HashMap<String, Vec<Arc<Pod>>>> {
        let ns = ds.namespace().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let selector = ds.spec.as_ref().map(|s| &s.selector);
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in self.pods.list_namespace(&ns) {
            let matches = selector_matches(selector, pod.metadata.labels.as_ref());
            let claimed = match controller_of(&pod.metadata) {
                Some(owner) if owner.uid != uid => false,
                Some(_) if matches => true,
                Some(_) => {
                    podcontrol::release(&self.client, &uid, &pod).await?;
                    false
                }
                None if matches && pod.metadata.deletion_timestamp.is_none() => {
                    let owner = controller_ref("apps/v1", "DaemonSet", &ds.metadata);
                    podcontrol::adopt(&self.client, owner, &pod).await?
                }
                None => false,
            };
            let terminal_and_deleted = matches!(phase(&pod), "Succeeded" | "Failed")
                && pod.metadata.deletion_timestamp.is_some();
            if claimed
                && !terminal_and_deleted
                && let Some(node) = target_node(&pod)
            {
                by_node.entry(node).or_default().push(pod);
            }
        }
        Ok(by_node)
    }

    /// podsShouldBeOnNode for every node, plus the pods of nodes that no longer exist.
    fn manage(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        by_node: &HashMap<String, Vec<Arc<Pod>>>,
        hash: &str,
    ) -> Plan {
        let mut plan = Plan::default();
        let known: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        for node in nodes {
            let name = node.name_any();
            let (run, keep) = should_run(ds, node);
            let pods = by_node.get(&name).cloned().unwrap_or_default();
            if run && pods.is_empty() {
                plan.create_on.push(name);
            } else if keep {
                let mut running = Vec::new();
                for pod in pods
                    .into_iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                {
                    if matches!(phase(&pod), "Failed" | "Succeeded") {
                        if let Some(wait) = self.failed_pod_backoff(ds, &name) {
                            self.queue.add_after(ObjKey::of(ds), wait);
                            continue;
                        }
                        if phase(&pod) == "Failed" {
                            self.recorder.event(
                                ds,
                                WARNING,
                                "FailedDaemonPod",
                                "Delete",
                                format!(
                                    "Found failed daemon pod {}/{} on node {name}, will try to kill it",
                                    pod.namespace().unwrap_or_default(),
                                    pod.name_any()
                                ),
                            );
                        }
                        plan.delete.push(pod);
                    } else {
                        running.push(pod);
                    }
                }
                sort_oldest_first(&mut running);
                if allows_surge(ds) {
                    // One updated and one old pod may share a node while the new one starts.
                    let newest_ok = running.iter().position(|p| is_updated(p, hash));
                    let oldest_old = running.iter().position(|p| !is_updated(p, hash));
                    for (i, pod) in running.into_iter().enumerate() {
                        if Some(i) != newest_ok && Some(i) != oldest_old {
                            plan.delete.push(pod);
                        }
                    }
                } else {
                    plan.delete.extend(running.into_iter().skip(1));
                }
            } else {
                plan.delete.extend(
                    pods.into_iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none()),
                );
            }
        }
        // Pods for nodes that were deleted: nothing will ever run them.
        for (node, pods) in by_node {
            if !known.contains(node) {
                plan.delete.extend(
                    pods.iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .cloned(),
                );
            }
        }
        plan
    }

    /// None when a failed pod on `node` may be deleted now (starting the next, longer wait);
    /// otherwise how long until it may.
    fn failed_pod_backoff(&self, ds: &DaemonSet, node: &str) -> Option<Duration> {
        let Ok(mut map) = self.failed_backoff.lock() else {
            return None;
        };
        let key = (ObjKey::of(ds), node.to_string());
        let now = Instant::now();
        match map.get(&key).copied() {
            Some((since, wait)) if now.duration_since(since) < wait => {
                Some(wait - now.duration_since(since))
            }
            Some((since, wait)) => {
                // A long quiet spell starts the backoff over, as kube's does after 2 × max.
                let next = if now.duration_since(since) > 2 * FAILED_BACKOFF_MAX {
                    FAILED_BACKOFF_BASE
                } else {
                    (wait * 2).min(FAILED_BACKOFF_MAX)
                };
                map.insert(key, (now, next));
                None
            }
            None => {
                map.insert(key, (now, FAILED_BACKOFF_BASE));
                None
            }
        }
    }

    /// updatedDesiredNodeCounts: (maxSurge, maxUnavailable) over the nodes that should run a
    /// pod, both rounded up; never both zero.
    fn budgets(&self, ds: &DaemonSet, desired: i32) -> (i32, i32) {
        let ru = rolling(ds);
        let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true);
        let mut unavailable =
            scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), desired, true);
        if desired > 0 && surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        (surge, unavailable)
    }

    fn rolling_update(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        by_node: &HashMap<String, Vec<Arc<Pod>>>,
        hash: &str,
    ) -> Plan {
        let mut plan = Plan::default();
        if rolling(ds).is_none() {
            return plan;
        }
        let now = jiff::Timestamp::now();
        let min_ready = min_ready_seconds(ds);
        let mut wanted: Vec<(String, Vec<Arc<Pod>>)> = Vec::new();
        for node in nodes {
            if should_run(ds, node).0 {
                let name = node.name_any();
                let pods = by_node.get(&name).cloned().unwrap_or_default();
                wanted.push((name, pods));
            }
        }
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        let (max_surge, max_unavailable) = self.budgets(ds, wanted.len() as i32);
        let available = |p: &Pod| pod_is_available(p, min_ready, now);
        if max_surge == 0 {
            let mut unavailable = 0;
            let mut replace_now = Vec::new();
            let mut candidates = Vec::new();
            for (_, pods) in &wanted {
                match updated_and_old(pods, hash) {
                    None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                    Some((Some(new), None)) => {
                        if !available(&new) {
                            unavailable += 1;
                        }
                    }
                    Some((None, Some(old))) => {
                        if !available(&old) {
                            replace_now.push(old);
                        } else if unavailable < max_unavailable {
                            candidates.push(old);
                        }
                    }
                }
            }
            let room = (max_unavailable - unavailable).max(0) as usize;
            plan.delete = replace_now;
            plan.delete.extend(candidates.into_iter().take(room));
        } else {
            let mut surging = 0;
            let mut create_now = Vec::new();
            let mut candidates = Vec::new();
            for (node, pods) in &wanted {
                match updated_and_old(pods, hash) {
                    None => surging += 1,
                    Some((_, None)) => {}
                    Some((None, Some(old))) => {
                        if !available(&old) {
                            create_now.push(node.clone());
                        } else if surging < max_surge {
                            candidates.push(node.clone());
                        }
                    }
                    Some((Some(new), Some(old))) => {
                        if available(&new) {
                            plan.delete.push(old);
                        } else {
                            surging += 1;
                        }
                    }
                }
            }
            let room = (max_surge - surging).max(0) as usize;
            plan.create_on = create_now;
            plan.create_on.extend(candidates.into_iter().take(room));
        }
        plan
    }

    /// syncNodes: creations, then deletions, under one expectation.
    async fn apply(&self, key: &ObjKey, ds: &DaemonSet, plan: Plan, hash: &str) -> Result<()> {
        if plan.create_on.is_empty() && plan.delete.is_empty() {
            return Ok(());
        }
        self.expectations.expect(
            key,
            plan.create_on.len(),
            plan.delete.iter().map(|p| ObjKey::of(&**p)),
        );
        let template = pod_template(ds, hash);
        let owner = controller_ref("apps/v1", "DaemonSet", &ds.metadata);
        let creations = plan.create_on.iter().map(|node| {
            podcontrol::create(
                &self.client,
                &self.recorder,
                ds,
                owner.clone(),
                &template,
                format!("{}-", ds.name_any()),
                |pod| pin_to_node(pod, node),
            )
        });
        let deletions = plan
            .delete
            .iter()
            .map(|pod| podcontrol::delete(&self.client, &self.recorder, ds, pod));
        // As kube's syncNodes: the creations finish before the deletions start.
        let created = join_all(creations).await;
        let deleted = join_all(deletions).await;
        let mut first_error = None;
        for r in created {
            if let Err(e) = r {
                // Never created, so never observed.
                self.expectations.creation_observed(key);
                first_error.get_or_insert(e);
            }
        }
        for (pod, r) in plan.delete.iter().zip(deleted) {
            if let Err(e) = r {
                self.expectations
                    .deletion_observed(key, &ObjKey::of(&**pod));
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn clean_up_history(
        &self,
        ds: &DaemonSet,
        by_node: &HashMap<String, Vec<Arc<Pod>>>,
        hash: &str,
    ) -> Result<()> {
        let ns = ds.namespace().unwrap_or_default();
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let owned = history::owned(&self.revisions, &ns, &uid);
        let live: HashSet<String> = by_node
            .values()
            .flatten()
            .filter_map(|p| p.labels().get(HASH_LABEL).cloned())
            .collect();
        let limit = ds
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10);
        let current = format!("{}-{hash}", ds.name_any());
        let current = owned
            .iter()
            .find(|cr| cr.labels().get(HASH_LABEL).map(String::as_str) == Some(hash))
            .map(|cr| cr.name_any())
            .unwrap_or(current);
        history::clean_up(&self.client, &owned, &live, &current, limit).await
    }

    async fn update_status(
        &self,
        ds: &DaemonSet,
        nodes: &[Arc<Node>],
        by_node: &HashMap<String, Vec<Arc<Pod>>>,
        hash: &str,
    ) -> Result<()> {
        let now = jiff::Timestamp::now();
        let min_ready = min_ready_seconds(ds);
        let mut s = ds.status.clone().unwrap_or_default();
        let (mut desired, mut current, mut misscheduled) = (0, 0, 0);
        let (mut ready, mut available, mut updated) = (0, 0, 0);
        for node in nodes {
            let (run, _) = should_run(ds, node);
            let mut pods = by_node.get(&node.name_any()).cloned().unwrap_or_default();
            if !run {
                if !pods.is_empty() {
                    misscheduled += 1;
                }
                continue;
            }
            desired += 1;
            if pods.is_empty() {
                continue;
            }
            current += 1;
            sort_oldest_first(&mut pods);
            let pod = &pods[0];
            if pod_is_ready(pod) {
                ready += 1;
                if pod_is_available(pod, min_ready, now) {
                    available += 1;
                }
            }
            if is_updated(pod, hash) {
                updated += 1;
            }
        }
        s.desired_number_scheduled = desired;
        s.current_number_scheduled = current;
        s.number_misscheduled = misscheduled;
        s.number_ready = ready;
        s.number_available = Some(available);
        s.number_unavailable = Some(desired - available);
        s.updated_number_scheduled = Some(updated);
        s.observed_generation = ds.metadata.generation;
        if Some(&s) != ds.status.as_ref() {
            self.write_status(ds, s).await?;
        }
        if min_ready > 0 && ready != available {
            self.queue
                .add_after(ObjKey::of(ds), Duration::from_secs(min_ready as u64));
        }
        Ok(())
    }

    async fn write_status(&self, ds: &DaemonSet, status: DaemonSetStatus) -> Result<()> {
        let api: Api<DaemonSet> =
            Api::namespaced(self.client.clone(), &ds.namespace().unwrap_or_default());
        let mut target = ds.clone();
        target.status = Some(status);
        match api
            .replace_status(&ds.name_any(), &PostParams::default(), &target)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // A newer copy is on its way through the informer; that sync writes status again.
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| {
                format!("cannot update the status of daemon set {}", ds.name_any())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DaemonSetSpec;
    use k8s_openapi::api::core::v1::{NodeSpec, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn ds(node_selector: &[(&str, &str)]) -> DaemonSet {
        DaemonSet {
            spec: Some(DaemonSetSpec {
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        node_selector: Some(
                            node_selector
                                .iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .collect(),
                        ),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn nodes_are_chosen_by_selector_and_taints() {
        let plain = ds(&[]);
        assert_eq!(should_run(&plain, &node("a", &[], &[])), (true, true));
        // Daemon pods tolerate node problems and cordons by default.
        let troubled = node(
            "b",
            &[],
            &[
                ("node.kubernetes.io/not-ready", "NoExecute"),
                ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ],
        );
        assert_eq!(should_run(&plain, &troubled), (true, true));
        // A NoSchedule taint keeps new pods away but lets a running one stay.
        let dedicated = node("c", &[], &[("dedicated", "NoSchedule")]);
        assert_eq!(should_run(&plain, &dedicated), (false, true));
        let evicting = node("d", &[], &[("dedicated", "NoExecute")]);
        assert_eq!(should_run(&plain, &evicting), (false, false));
        let picky = ds(&[("disk", "ssd")]);
        assert_eq!(should_run(&picky, &node("e", &[], &[])), (false, false));
        assert_eq!(
            should_run(&picky, &node("f", &[("disk", "ssd")], &[])),
            (true, true)
        );
    }

    #[test]
    fn pods_are_pinned_by_node_affinity() {
        let mut pod = Pod::default();
        pin_to_node(&mut pod, "n1");
        assert_eq!(target_node(&pod).as_deref(), Some("n1"));
        let t = pod_template(&ds(&[]), "abc");
        let labels = t.metadata.and_then(|m| m.labels).unwrap_or_default();
        assert_eq!(labels.get(HASH_LABEL).map(String::as_str), Some("abc"));
        let tolerations = t.spec.and_then(|s| s.tolerations).unwrap_or_default();
        assert_eq!(tolerations.len(), 6);
    }
}
