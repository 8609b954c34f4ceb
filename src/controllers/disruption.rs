//! The disruption controller, as kube-controller-manager's: keeps each PodDisruptionBudget's
//! status (currentHealthy, desiredHealthy, expectedPods, disruptionsAllowed and the
//! DisruptionAllowed condition) in step with its pods, which is what the eviction API — and so
//! `kubectl drain` — consults. Expected pods come from the scale of the pods' controllers
//! (a Deployment through its ReplicaSets, a ReplicaSet, StatefulSet or ReplicationController)
//! when the budget is a percentage or maxUnavailable, and from the pods themselves otherwise.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use tracing::info;

use super::deployment::util::scaled_value;
use super::runtime::events::{Recorder, WARNING};
use super::runtime::queue::WorkQueue;
use super::runtime::{
    Change, Informer, ObjKey, controller_of, is_conflict, is_not_found, pod_is_ready,
    selector_matches,
};

const WORKERS: usize = 2;
/// An entry in disruptedPods that the pod's deletion never followed expires (DeletionTimeout).
const DELETION_TIMEOUT: i64 = 2 * 60;

pub struct DisruptionController {
    client: kube::Client,
    budgets: Arc<Informer<PodDisruptionBudget>>,
    pods: Arc<Informer<Pod>>,
    sets: Arc<Informer<ReplicaSet>>,
    deployments: Arc<Informer<Deployment>>,
    queue: Arc<WorkQueue<ObjKey>>,
    recorder: Recorder,
}

impl DisruptionController {
    pub fn new(
        client: kube::Client,
        budgets: Arc<Informer<PodDisruptionBudget>>,
        pods: Arc<Informer<Pod>>,
        sets: Arc<Informer<ReplicaSet>>,
        deployments: Arc<Informer<Deployment>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(DisruptionController {
            client,
            budgets,
            pods,
            sets,
            deployments,
            queue: WorkQueue::new(),
            recorder,
        });
        let weak = Arc::downgrade(&this);
        this.budgets.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                let b = change.object();
                c.queue.add(ObjKey::of(&**b));
            }
        });
        let weak = Arc::downgrade(&this);
        this.pods.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                match change {
                    Change::Added(p) | Change::Deleted(p) => c.enqueue_for(p),
                    Change::Updated { old, new } => {
                        c.enqueue_for(new);
                        if old.metadata.labels != new.metadata.labels {
                            c.enqueue_for(old);
                        }
                    }
                }
            }
        });
        // A controller's scale change moves expectedPods for percentage budgets.
        let weak = Arc::downgrade(&this);
        this.deployments.add_handler(move |change| {
            if let (Some(c), Change::Updated { new, .. }) = (weak.upgrade(), change) {
                c.enqueue_namespace(&new.namespace().unwrap_or_default());
            }
        });
        this
    }

    /// Budgets whose selector picks this pod.
    fn enqueue_for(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        for b in self.budgets.list_namespace(&ns) {
            let sel = b.spec.as_ref().and_then(|s| s.selector.as_ref());
            if selector_matches(sel, pod.metadata.labels.as_ref()) {
                self.queue.add(ObjKey::of(&*b));
            }
        }
    }

    fn enqueue_namespace(&self, ns: &str) {
        for b in self.budgets.list_namespace(ns) {
            self.queue.add(ObjKey::of(&*b));
        }
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.budgets.wait_synced().await;
        self.pods.wait_synced().await;
        info!("disruption controller started");
        self.queue
            .run_workers(WORKERS, "disruption", |key| {
                let this = &self;
                async move { this.sync(&key).await }
            })
            .await;
        Ok(())
    }

    /// The scale of a pod's controller: (controller uid, replicas), or None when unmanaged.
    async fn controller_scale(&self, pod: &Pod) -> Result<Option<(String, i32)>> {
        let Some(owner) = controller_of(&pod.metadata) else {
            return Ok(None);
        };
        let ns = pod.namespace().unwrap_or_default();
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let Some(rs) = self.sets.get(&ObjKey::new(&ns, &owner.name)) else {
                    return Ok(None);
                };
                if rs.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
                    return Ok(None);
                }
                // A Deployment's ReplicaSets count as the Deployment.
                if let Some(d_ref) = controller_of(&rs.metadata).filter(|o| o.kind == "Deployment")
                    && let Some(d) = self.deployments.get(&ObjKey::new(&ns, &d_ref.name))
                    && d.metadata.uid.as_deref() == Some(d_ref.uid.as_str())
                {
                    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                    return Ok(Some((d_ref.uid.clone(), replicas)));
                }
                let replicas = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                Ok(Some((owner.uid.clone(), replicas)))
            }
            "StatefulSet" => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &ns);
                Ok(api
                    .get_opt(&owner.name)
                    .await?
                    .filter(|s| s.metadata.uid.as_deref() == Some(owner.uid.as_str()))
                    .map(|s| {
                        (
                            owner.uid.clone(),
                            s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                        )
                    }))
            }
            "ReplicationController" => {
                let api: Api<ReplicationController> = Api::namespaced(self.client.clone(), &ns);
                Ok(api
                    .get_opt(&owner.name)
                    .await?
                    .filter(|s| s.metadata.uid.as_deref() == Some(owner.uid.as_str()))
                    .map(|s| {
                        (
                            owner.uid.clone(),
                            s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                        )
                    }))
            }
            _ => Ok(None),
        }
    }

    /// The pods' controllers' total scale (each controller once) and how many pods have none.
    async fn expected_scale(&self, pods: &[Arc<Pod>]) -> Result<(i32, usize)> {
        let mut scales: HashMap<String, i32> = HashMap::new();
        let mut unmanaged = 0;
        for pod in pods {
            match self.controller_scale(pod).await? {
                Some((uid, n)) => {
                    scales.insert(uid, n);
                }
                None => unmanaged += 1,
            }
        }
        Ok((scales.values().sum(), unmanaged))
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let Some(pdb) = self.budgets.get(key) else {
            return Ok(());
        };
        let spec = pdb.spec.clone().unwrap_or_default();
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|p| selector_matches(spec.selector.as_ref(), p.metadata.labels.as_ref()))
            .collect();
        if pods.is_empty() {
            self.recorder.event(
                &*pdb,
                WARNING,
                "NoPods",
                "Sync",
                "No matching pods found".into(),
            );
        }
        let (expected, desired) = if let Some(max) = spec.max_unavailable.as_ref() {
            let (expected, _) = self.expected_scale(&pods).await?;
            let max = scaled_value(Some(max), expected, true);
            (expected, (expected - max).max(0))
        } else if let Some(min) = spec.min_available.as_ref() {
            match min {
                IntOrString::Int(n) => (pods.len() as i32, *n),
                IntOrString::String(_) => {
                    let (expected, _) = self.expected_scale(&pods).await?;
                    (expected, scaled_value(Some(min), expected, true))
                }
            }
        } else {
            (pods.len() as i32, 0)
        };

        let now = jiff::Timestamp::now();
        // Pods the eviction API let go of, until they are deleted or the entry is too old.
        let disrupted: BTreeMap<String, Time> = pdb
            .status
            .as_ref()
            .and_then(|s| s.disrupted_pods.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, at)| {
                let live = pods
                    .iter()
                    .any(|p| p.name_any() == *name && p.metadata.deletion_timestamp.is_none());
                live && now.duration_since(at.0).as_secs() < DELETION_TIMEOUT
            })
            .collect();
        let healthy = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && !disrupted.contains_key(&p.name_any())
                    && pod_is_ready(p)
            })
            .count() as i32;
        let mut allowed = healthy - desired;
        if expected <= 0 || allowed <= 0 {
            allowed = 0;
        }
        let generation = pdb.metadata.generation;
        let current = pdb.status.clone().unwrap_or_default();
        let (status, reason) = if allowed > 0 {
            ("True", "SufficientPods")
        } else {
            ("False", "InsufficientPods")
        };
        let previous = current
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionAllowed");
        let transition = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)),
        };
        let new_status = PodDisruptionBudgetStatus {
            current_healthy: healthy,
            desired_healthy: desired,
            expected_pods: expected,
            disruptions_allowed: allowed,
            disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
            observed_generation: generation,
            conditions: Some(vec![Condition {
                type_: "DisruptionAllowed".into(),
                status: status.into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: generation,
                last_transition_time: transition,
            }]),
        };
        if pdb.status.as_ref() == Some(&new_status) {
            return Ok(());
        }
        let mut updated = (*pdb).clone();
        updated.status = Some(new_status);
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), &key.namespace);
        match api
            .replace_status(&key.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) if is_conflict(&e) => {
                self.queue
                    .add_after(key.clone(), Duration::from_millis(100));
                Ok(())
            }
            Err(e) => Err(e).context("cannot update the budget's status"),
        }
    }
}
