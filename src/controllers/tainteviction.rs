//! Taint-based eviction, as kube-controller-manager's taint-eviction-controller: a pod on a node
//! with a NoExecute taint it does not tolerate is deleted at once; one that tolerates it for
//! tolerationSeconds (the 300 s every pod gets at admission for not-ready and unreachable nodes,
//! or what it asks for) is deleted when that time has passed since the taint was noticed; the
//! eviction is cancelled if the taint goes first. This is what moves pods off a node that
//! stopped (the node lifecycle controller taints it unreachable) so their controllers replace
//! them elsewhere.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use tracing::info;

use super::runtime::events::{NORMAL, Recorder};
use super::runtime::queue::WorkQueue;
use super::runtime::{Change, Informer, ObjKey, is_not_found};

const WORKERS: usize = 4;

pub struct TaintEvictionController {
    client: kube::Client,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    queue: Arc<WorkQueue<ObjKey>>,
    /// When each pending eviction was first scheduled.
    scheduled: Mutex<HashMap<ObjKey, Instant>>,
    recorder: Recorder,
}

fn no_execute_taints(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == "NoExecute")
        .collect()
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// How long the pod may stay: None to evict now, Some(None) to stay for good, or
/// Some(Some(d)) for the smallest tolerationSeconds among the tolerations that match.
fn toleration_time(tolerations: &[Toleration], taints: &[Taint]) -> Option<Option<Duration>> {
    let mut used: Vec<&Toleration> = Vec::new();
    for taint in taints {
        let matching: Vec<&Toleration> = tolerations
            .iter()
            .filter(|t| crate::scheduler::tolerates(t, taint))
            .collect();
        if matching.is_empty() {
            return None;
        }
        used.extend(matching);
    }
    let seconds: Vec<i64> = used.iter().filter_map(|t| t.toleration_seconds).collect();
    match seconds.iter().min() {
        Some(s) => Some(Some(Duration::from_secs((*s).max(0) as u64))),
        None => Some(None),
    }
}

impl TaintEvictionController {
    pub fn new(
        client: kube::Client,
        pods: Arc<Informer<Pod>>,
        nodes: Arc<Informer<Node>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(TaintEvictionController {
            client,
            pods,
            nodes,
            queue: WorkQueue::new(),
            scheduled: Mutex::new(HashMap::new()),
            recorder,
        });
        let weak = Arc::downgrade(&this);
        this.nodes.add_handler(move |change| {
            let Some(c) = weak.upgrade() else {
                return;
            };
            let (old, new) = match change {
                Change::Added(n) => (None, n),
                Change::Updated { old, new } => (Some(old), new),
                Change::Deleted(_) => return,
            };
            let before = old.map(|o| no_execute_taints(o)).unwrap_or_default();
            if before != no_execute_taints(new) {
                c.enqueue_node_pods(&new.name_any());
            }
        });
        let weak = Arc::downgrade(&this);
        this.pods.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                match change {
                    Change::Added(p) | Change::Updated { new: p, .. } => {
                        if node_of(p).is_some() {
                            c.queue.add(ObjKey::of(&**p));
                        }
                    }
                    Change::Deleted(p) => {
                        if let Ok(mut s) = c.scheduled.lock() {
                            s.remove(&ObjKey::of(&**p));
                        }
                    }
                }
            }
        });
        this
    }

    fn enqueue_node_pods(&self, node: &str) {
        for pod in self.pods.list_all() {
            if node_of(&pod) == Some(node) {
                self.queue.add(ObjKey::of(&*pod));
            }
        }
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.pods.wait_synced().await;
        self.nodes.wait_synced().await;
        info!("taint eviction controller started");
        self.queue
            .run_workers(WORKERS, "taint-eviction", |key| {
                let this = &self;
                async move { this.process(&key).await }
            })
            .await;
        Ok(())
    }

    fn cancel(&self, key: &ObjKey, pod: &Pod) {
        let was = self.scheduled.lock().ok().and_then(|mut s| s.remove(key));
        if was.is_some() {
            self.recorder.event(
                pod,
                NORMAL,
                "TaintManagerEviction",
                "Evict",
                format!("Cancelling deletion of Pod {key}"),
            );
        }
    }

    async fn process(&self, key: &ObjKey) -> Result<()> {
        let Some(pod) = self.pods.get(key) else {
            return Ok(());
        };
        if pod.metadata.deletion_timestamp.is_some() {
            if let Ok(mut s) = self.scheduled.lock() {
                s.remove(key);
            }
            return Ok(());
        }
        let Some(node) = node_of(&pod).and_then(|n| self.nodes.get(&ObjKey::new("", n))) else {
            return Ok(());
        };
        let taints = no_execute_taints(&node);
        if taints.is_empty() {
            self.cancel(key, &pod);
            return Ok(());
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        match toleration_time(&tolerations, &taints) {
            None => self.evict(key, &pod).await,
            Some(None) => {
                self.cancel(key, &pod);
                Ok(())
            }
            Some(Some(wait)) => {
                let since = match self.scheduled.lock() {
                    Ok(mut s) => *s.entry(key.clone()).or_insert_with(Instant::now),
                    Err(_) => Instant::now(),
                };
                let elapsed = since.elapsed();
                if elapsed >= wait {
                    self.evict(key, &pod).await
                } else {
                    self.queue.add_after(key.clone(), wait - elapsed);
                    Ok(())
                }
            }
        }
    }

    async fn evict(&self, key: &ObjKey, pod: &Pod) -> Result<()> {
        if let Ok(mut s) = self.scheduled.lock() {
            s.remove(key);
        }
        self.recorder.event(
            pod,
            NORMAL,
            "TaintManagerEviction",
            "Evict",
            format!("Marking for deletion Pod {key}"),
        );
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let patch = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": crate::apiserver::now_rfc3339(),
        }]}});
        match api
            .patch_status(
                &key.name,
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        match api.delete(&key.name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        }
    }

    fn toleration(key: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            toleration_seconds: seconds,
            ..Default::default()
        }
    }

    #[test]
    fn toleration_time_follows_the_taint_manager() {
        let unreachable = taint("node.kubernetes.io/unreachable");
        assert_eq!(
            toleration_time(&[], std::slice::from_ref(&unreachable)),
            None
        );
        assert_eq!(
            toleration_time(
                &[toleration("node.kubernetes.io/unreachable", Some(300))],
                std::slice::from_ref(&unreachable)
            ),
            Some(Some(Duration::from_secs(300)))
        );
        assert_eq!(
            toleration_time(
                &[toleration("node.kubernetes.io/unreachable", None)],
                std::slice::from_ref(&unreachable)
            ),
            Some(None)
        );
        // A second taint without a toleration: out now.
        assert_eq!(
            toleration_time(
                &[toleration("node.kubernetes.io/unreachable", Some(5))],
                &[unreachable, taint("other")]
            ),
            None
        );
    }
}
