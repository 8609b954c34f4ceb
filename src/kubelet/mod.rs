//! The pod manager of the node agent (what kubelet's pod workers do): it watches the pods bound
//! to this node and runs one worker task per pod that makes the pod real — sandbox namespaces,
//! cgroup, containers (init containers first), restarts with back-off, probes, hooks, graceful
//! termination — and reports status and events as kubelet does.
//!
//! * `sandbox` — the pod's namespaces as bind-mounted files (single-threaded helper subcommand).
//! * `qos` — QoS class, resource arithmetic, the pod cgroup, OOM scores.
//! * `images` — image pulls (one task per image, shared by the pods that wait for it) and
//!   credentials from imagePullSecrets.
//! * `env`, `etc` — a container's environment and /etc files.
//! * `worker` — the per-pod state machine; `status` turns it into a PodStatus.
//! * `probes` — liveness/readiness/startup probes and lifecycle hooks; `netns` dials inside a
//!   pod's network namespace.
//! * `seams` — the one place each of the network and volume plugins is called.

pub mod env;
pub mod etc;
mod grpcprobe;
mod images;
mod netns;
mod probes;
pub mod qos;
pub mod sandbox;
mod seams;
mod status;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::controllers::runtime::events::{EventSink, Recorder};
use crate::runtime::container::Runtime;
use crate::runtime::images::Store;

pub const FIELD_MANAGER: &str = "kubelet";

/// What the agent knows about its node that pods need.
#[derive(Clone)]
pub struct NodeInfo {
    pub node_name: String,
    pub service_subnet: String,
    pub state_dir: PathBuf,
    pub host_ip: Option<String>,
    /// Allocatable CPU and memory, kept current by the agent's heartbeats.
    pub allocatable: std::sync::Arc<crate::agent::sysinfo::LiveAllocatable>,
    /// The node's pod network, None until the Node has a podCIDR.
    pub network: crate::agent::podnet::NetworkHandle,
    /// Whether a failed pull may use the node's own image (`images.pullFallback`).
    pub pull_fallback: bool,
}

/// Shared by every pod worker.
pub struct Context {
    pub node: NodeInfo,
    clients: watch::Receiver<Option<kube::Client>>,
    pub runtime: Runtime,
    pub store: Store,
    pub puller: images::Puller,
    /// Events go through the current client too (replaced with it).
    recorder: Mutex<Recorder>,
}

impl Context {
    /// The current API client (the agent replaces it when it reconnects).
    pub fn client(&self) -> Option<kube::Client> {
        self.clients.borrow().clone()
    }

    pub fn recorder(&self) -> Recorder {
        self.recorder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.node.state_dir.join("pods").join(uid)
    }
}

/// What a worker is told.
#[derive(Clone)]
pub enum PodMessage {
    Update(Arc<Pod>),
    /// The pod object is gone from the API: stop everything and clean up.
    Removed,
    /// The node is stopping: stop containers within the given time.
    Shutdown(Duration),
}

struct WorkerHandle {
    tx: watch::Sender<PodMessage>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Workers {
    by_uid: HashMap<String, WorkerHandle>,
}

static WORKERS: OnceLock<Arc<Mutex<Workers>>> = OnceLock::new();

fn workers() -> Arc<Mutex<Workers>> {
    WORKERS.get_or_init(Default::default).clone()
}

/// Runs the pod manager until the process ends. `clients` carries the agent's current API
/// client; the watch restarts when it changes.
pub async fn run(node: NodeInfo, clients: watch::Receiver<Option<kube::Client>>) -> Result<()> {
    let runtime = Runtime::new(&node.state_dir)?;
    let store = Store::open(&node.state_dir)?;
    let mut clients_rx = clients.clone();
    let first = loop {
        if let Some(c) = clients_rx.borrow_and_update().clone() {
            break c;
        }
        if clients_rx.changed().await.is_err() {
            return Ok(());
        }
    };
    let sink = EventSink::start_on_host(first, node.node_name.clone());
    let pull_fallback = node.pull_fallback;
    let ctx = Arc::new(Context {
        node,
        clients,
        runtime,
        puller: images::Puller::new(store.clone(), pull_fallback),
        store,
        recorder: Mutex::new(sink.recorder("kubelet")),
    });
    // Bumped when the agent hands over a new client; the event sink follows it.
    let (mut generation, mut events_generation) = (0u64, 0u64);
    info!(node = %ctx.node.node_name, "pod manager started");
    let mut cleanup_tick = tokio::time::interval(Duration::from_secs(20));
    loop {
        let Some(client) = clients_rx.borrow_and_update().clone() else {
            let _ = clients_rx.changed().await;
            continue;
        };
        if generation != events_generation {
            let sink = EventSink::start_on_host(client.clone(), ctx.node.node_name.clone());
            *ctx.recorder.lock().unwrap_or_else(|e| e.into_inner()) = sink.recorder("kubelet");
            events_generation = generation;
        }
        let api: Api<Pod> = Api::all(client);
        let config =
            watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node.node_name));
        let mut stream = watcher::watcher(api, config).boxed();
        let mut listing: Option<Vec<String>> = None;
        let mut listed_once = false;
        loop {
            tokio::select! {
                changed = clients_rx.changed() => {
                    if changed.is_err() { return Ok(()); }
                    generation += 1;
                    debug!("API client replaced: restarting the pod watch");
                    break;
                }
                _ = cleanup_tick.tick() => {
                    if listed_once {
                        cleanup_orphans(&ctx).await;
                    }
                }
                event = stream.next() => {
                    match event {
                        None => break,
                        Some(Err(e)) => {
                            debug!(error = %e, "pod watch failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        Some(Ok(watcher::Event::Init)) => listing = Some(Vec::new()),
                        Some(Ok(watcher::Event::InitApply(pod))) => {
                            if let (Some(l), Some(uid)) = (listing.as_mut(), pod.metadata.uid.clone()) {
                                l.push(uid);
                            }
                            dispatch(&ctx, pod);
                        }
                        Some(Ok(watcher::Event::InitDone)) => {
                            let seen = listing.take().unwrap_or_default();
                            let gone: Vec<String> = {
                                let w = workers();
                                let w = w.lock().unwrap_or_else(|e| e.into_inner());
                                w.by_uid.keys().filter(|u| !seen.contains(u)).cloned().collect()
                            };
                            for uid in gone {
                                remove(&uid);
                            }
                            if !listed_once {
                                listed_once = true;
                                cleanup_orphans(&ctx).await;
                            }
                        }
                        Some(Ok(watcher::Event::Apply(pod))) => dispatch(&ctx, pod),
                        Some(Ok(watcher::Event::Delete(pod))) => {
                            if let Some(uid) = pod.metadata.uid.as_deref() {
                                remove(uid);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn dispatch(ctx: &Arc<Context>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let w = workers();
    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
    w.by_uid.retain(|_, h| !h.task.is_finished());
    let pod = Arc::new(pod);
    if let Some(h) = w.by_uid.get(&uid) {
        let _ = h.tx.send(PodMessage::Update(pod));
        return;
    }
    // A pod that finished before this agent saw it (or before it restarted) needs no worker
    // unless something of it is left on the node.
    let (tx, rx) = watch::channel(PodMessage::Update(pod));
    let task = tokio::spawn(worker::run(ctx.clone(), uid.clone(), rx));
    w.by_uid.insert(uid, WorkerHandle { tx, task });
}

fn remove(uid: &str) {
    let w = workers();
    let w = w.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = w.by_uid.get(uid) {
        let _ = h.tx.send(PodMessage::Removed);
    }
}

/// A worker that ended takes itself off the list.
fn forget(uid: &str) {
    let w = workers();
    let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
    w.by_uid.remove(uid);
}

/// Uids of pods this agent has a worker for.
fn known_uids() -> Vec<String> {
    let w = workers();
    let w = w.lock().unwrap_or_else(|e| e.into_inner());
    w.by_uid.keys().cloned().collect()
}

/// Stops and removes containers, sandboxes and pod directories of pods this node no longer has.
async fn cleanup_orphans(ctx: &Arc<Context>) {
    let known = known_uids();
    let ctx2 = ctx.clone();
    let known2 = known.clone();
    let result = tokio::task::spawn_blocking(move || -> Vec<String> {
        let known = known2;
        let mut uids = Vec::new();
        let Ok(list) = ctx2.runtime.list() else {
            return uids;
        };
        for (id, state) in list {
            let Ok(record) = ctx2.runtime.record(&id) else {
                continue;
            };
            let Some(uid) = record.config.annotations.get(worker::ANNOTATION_POD_UID).cloned() else {
                continue;
            };
            if known.contains(&uid) {
                continue;
            }
            if state.status == crate::runtime::container::Status::Running {
                let _ = ctx2.runtime.stop(&id, Duration::from_secs(2));
            }
            worker::mark_dead_if_stale(&ctx2.runtime, &id);
            if let Err(e) = ctx2.runtime.remove(&id) {
                warn!(%id, error = format!("{e:#}"), "cannot remove an orphaned container");
            } else {
                info!(%id, pod_uid = %uid, "removed the container of a pod this node no longer has");
            }
            if !uids.contains(&uid) {
                uids.push(uid);
            }
        }
        uids
    })
    .await
    .unwrap_or_default();
    let mut leftovers = result;
    for base in [
        ctx.node.state_dir.join("pods"),
        sandbox::run_dir("x")
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    ] {
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let uid = e.file_name().to_string_lossy().into_owned();
                if !known.contains(&uid) && !leftovers.contains(&uid) {
                    leftovers.push(uid);
                }
            }
        }
    }
    // A gone pod's address is freed with its files, so its files wait until the network is up
    // (after an agent restart it comes up a moment later): they are how we know it had one.
    if ctx.node.network.borrow().is_none() {
        return;
    }
    let known = known_uids();
    for uid in leftovers.into_iter().filter(|u| !known.contains(u)) {
        if let Err(e) = seams::detach_network(ctx, &uid).await {
            warn!(pod_uid = %uid, error = format!("{e:#}"), "cannot free the address of a gone pod");
        }
        worker::clean_pod_files(ctx, &uid).await;
    }
}

/// Stops every pod's containers when the node stops, within `grace` overall.
pub async fn shutdown(grace: Duration) {
    let handles: Vec<tokio::task::JoinHandle<()>> = {
        let w = workers();
        let mut w = w.lock().unwrap_or_else(|e| e.into_inner());
        w.by_uid
            .drain()
            .map(|(_, h)| {
                let _ = h.tx.send(PodMessage::Shutdown(grace));
                h.task
            })
            .collect()
    };
    if handles.is_empty() {
        return;
    }
    info!(pods = handles.len(), "stopping this node's pods");
    let _ = tokio::time::timeout(
        grace + Duration::from_secs(1),
        futures::future::join_all(handles),
    )
    .await;
}
