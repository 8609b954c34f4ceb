//! One pod's worker: a task that owns everything of the pod on this node. Each round it reads
//! the runtime's records of the pod's containers, decides what to start, restart or kill
//! (kubelet's syncPod), and writes the resulting status. It wakes on pod updates, container
//! exits (a pidfd on each container's helper), probe results and timers (back-off ends).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ObjectReference, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::probes::{self, ProbeKind, Target};
use super::qos::{self, QosClass};
use super::sandbox::{self, Sandbox};
use super::seams::{self, PodVolumes};
use super::status::{self, k8s_time};
use super::{Context, FIELD_MANAGER, PodMessage, env, etc};
use crate::controllers::runtime::events::{NORMAL, WARNING};
use crate::runtime::container::{self, State, Status};
use crate::runtime::spec::{BindMount, ContainerConfig, Namespaces, UserOverride};

pub const ANNOTATION_POD_UID: &str = "io.kubernetes.pod.uid";
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A back-off is forgotten after this long without a restart (kubelet: twice the maximum).
const BACKOFF_RESET: Duration = Duration::from_secs(600);
const CONFIG_RETRY: Duration = Duration::from_secs(2);
/// How long a removed or shut-down pod's containers get to stop.
const FORCED_GRACE: Duration = Duration::from_secs(2);

pub enum WorkerEvent {
    /// A container's helper ended: the container's exit is on record.
    Exited { id: String },
    Probe {
        name: String,
        attempt: u32,
        kind: ProbeKind,
        ok: bool,
        message: String,
        /// The probe's own terminationGracePeriodSeconds, for the kill its failure causes.
        grace: Option<u64>,
    },
    /// An image pull a container waited for finished.
    Pulled {
        slot: usize,
        result: super::images::PullResult,
        /// From the worker's request to the result, including waiting for a shared pull.
        waited: Duration,
    },
}

#[derive(Default)]
struct Backoff {
    delay: Duration,
    last_update: Option<Instant>,
}

impl Backoff {
    /// None: go ahead now (and the next failure waits longer); Some(t): wait until t.
    fn check(&mut self, failed_at: Instant) -> Option<Instant> {
        let now = Instant::now();
        let live = self
            .last_update
            .is_some_and(|t| now.duration_since(t) <= BACKOFF_RESET);
        if live && now < failed_at + self.delay {
            return Some(failed_at + self.delay);
        }
        self.delay = if live {
            (self.delay * 2).min(BACKOFF_MAX)
        } else {
            BACKOFF_INITIAL
        };
        self.last_update = Some(now);
        None
    }

    /// Records a failure that happened without a [`Backoff::check`] before it (a failed
    /// image pull): the next attempt waits the current delay, the first one 10 s.
    fn note_failure(&mut self) {
        let now = Instant::now();
        let live = self
            .last_update
            .is_some_and(|t| now.duration_since(t) <= BACKOFF_RESET);
        if !live {
            self.delay = BACKOFF_INITIAL;
        }
        self.last_update = Some(now);
    }
}

/// A slot's image pull.
enum PullState {
    Running,
    Done(super::images::PullResult, Duration),
}

struct Slot {
    name: String,
    init: bool,
    /// An init container with restartPolicy Always: it keeps running beside the app containers.
    sidecar: bool,
    /// The latest attempt that has a container (its restartCount).
    attempt: Option<u32>,
    /// Why the container is not running, when it is not (shown as state.waiting).
    waiting: Option<(String, String)>,
    /// When the latest attempt was seen to exit.
    exited_at: Option<Instant>,
    restart_backoff: Backoff,
    image_backoff: Backoff,
    image_failed_at: Option<Instant>,
    pull: Option<PullState>,
    retry_at: Option<Instant>,
    ready: bool,
    started: bool,
    started_tx: Option<watch::Sender<bool>>,
    probes: Vec<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
    /// A liveness or startup probe gave up: kill and restart per policy (with the probe's
    /// own grace period when it sets one).
    kill: Option<(String, Option<u64>)>,
    /// No further attempts (its pod finished, or restartPolicy says so).
    final_state: bool,
}

impl Slot {
    fn new(name: &str, init: bool, sidecar: bool) -> Slot {
        Slot {
            name: name.to_string(),
            init,
            sidecar,
            attempt: None,
            waiting: None,
            exited_at: None,
            restart_backoff: Backoff::default(),
            image_backoff: Backoff::default(),
            image_failed_at: None,
            pull: None,
            retry_at: None,
            ready: false,
            started: false,
            started_tx: None,
            probes: Vec::new(),
            watcher: None,
            kill: None,
            final_state: false,
        }
    }

    fn stop_probes(&mut self) {
        for p in self.probes.drain(..) {
            p.abort();
        }
        self.started_tx = None;
        self.ready = false;
        self.started = false;
    }
}

struct Worker {
    ctx: Arc<Context>,
    uid: String,
    pod: Arc<Pod>,
    slots: Vec<Slot>,
    sandbox: Option<Sandbox>,
    pod_ip: Option<Ipv4Addr>,
    volumes: Option<PodVolumes>,
    volume_error: Option<String>,
    qos: QosClass,
    cgroup: String,
    /// Succeeded or Failed: nothing runs any more.
    final_phase: Option<&'static str>,
    /// The pod was deleted and its containers are stopped.
    terminated: bool,
    pod_deleted_once: bool,
    events_tx: mpsc::UnboundedSender<WorkerEvent>,
    events_rx: mpsc::UnboundedReceiver<WorkerEvent>,
    last_status: Option<Value>,
    start_time: String,
    /// Pod-level reason and message (activeDeadlineSeconds ran out).
    pod_reason: Option<(&'static str, String)>,
    sandbox_retry: Option<Instant>,
    /// Where the time of the pod's first start went, until its first Running status is written.
    startup: Option<Startup>,
}

/// Durations of the steps of a pod's first start, logged once when the pod first reports
/// Running: the numbers behind the pod start latency benchmark.
struct Startup {
    began: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl Startup {
    fn log(&self, pod: &str) {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(name, d)| format!("{name}={:.1}", d.as_secs_f64() * 1000.0))
            .collect();
        let total_ms = (self.began.elapsed().as_secs_f64() * 10_000.0).round() / 10.0;
        info!(%pod, total_ms, steps_ms = %steps.join(","), "pod running");
    }
}

pub fn container_id(uid: &str, name: &str, attempt: u32) -> String {
    format!("{uid}-{name}-{attempt}")
}

/// Runs one pod until its object is gone (and its files are cleaned up) or the node stops.
pub async fn run(ctx: Arc<Context>, uid: String, mut rx: watch::Receiver<PodMessage>) {
    let pod = match rx.borrow_and_update().clone() {
        PodMessage::Update(p) => p,
        _ => return,
    };
    let mut w = Worker::new(ctx.clone(), uid.clone(), pod);
    w.adopt().await;
    let mut first = true;
    loop {
        if !first {
            let msg = rx.borrow_and_update().clone();
            match msg {
                PodMessage::Update(p) => w.pod = p,
                PodMessage::Removed => {
                    w.stop_all(FORCED_GRACE, false).await;
                    w.cleanup().await;
                    break;
                }
                PodMessage::Shutdown(grace) => {
                    w.stop_all(grace, false).await;
                    break;
                }
            }
        }
        first = false;
        let mut wake = None;
        if w.pod.metadata.deletion_timestamp.is_some() {
            if !w.terminated {
                w.terminate().await;
            }
        } else if w.final_phase.is_none() {
            wake = w.sync().await;
        }
        if !w.publish_status().await {
            // The API server did not take it: try again soon rather than on the next event.
            let retry = Instant::now() + Duration::from_secs(1);
            wake = Some(wake.map_or(retry, |t: Instant| t.min(retry)));
        }
        if w.terminated && !w.pod_deleted_once {
            w.pod_deleted_once = true;
            w.delete_pod_object().await;
        }
        // Never spin: a timer that is already due still waits a moment.
        let wake = wake.map(|t| t.max(Instant::now() + Duration::from_millis(20)));
        let sleep = tokio::time::sleep_until(
            wake.map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
        );
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            Some(ev) = w.events_rx.recv() => {
                w.handle(ev);
                // Take whatever else has arrived in the same round.
                while let Ok(ev) = w.events_rx.try_recv() {
                    w.handle(ev);
                }
            }
            _ = sleep => {}
        }
    }
    for s in &mut w.slots {
        s.stop_probes();
        if let Some(h) = s.watcher.take() {
            h.abort();
        }
    }
    super::forget(&uid);
    debug!(pod_uid = %uid, "pod worker ended");
}

impl Worker {
    fn new(ctx: Arc<Context>, uid: String, pod: Arc<Pod>) -> Worker {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut slots = Vec::new();
        if let Some(spec) = &pod.spec {
            for c in spec.init_containers.iter().flatten() {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                slots.push(Slot::new(&c.name, true, sidecar));
            }
            for c in &spec.containers {
                slots.push(Slot::new(&c.name, false, false));
            }
        }
        let qos = qos::qos_class(&pod);
        let start_time = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(status::now);
        let final_phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => Some("Succeeded"),
            Some("Failed") => Some("Failed"),
            _ => None,
        };
        Worker {
            cgroup: qos::pod_cgroup(&uid, qos),
            ctx,
            uid,
            pod,
            slots,
            sandbox: None,
            pod_ip: None,
            volumes: None,
            volume_error: None,
            qos,
            final_phase,
            terminated: false,
            pod_deleted_once: false,
            events_tx,
            events_rx,
            last_status: None,
            start_time,
            pod_reason: None,
            sandbox_retry: None,
            startup: Some(Startup {
                began: Instant::now(),
                steps: Vec::new(),
            }),
        }
    }

    /// Records a step of the first start that began at `since`.
    fn step(&mut self, name: &'static str, since: Instant) {
        self.took(name, since.elapsed());
    }

    fn took(&mut self, name: &'static str, duration: Duration) {
        if let Some(s) = self.startup.as_mut() {
            s.steps.push((name, duration));
        }
    }

    fn spec_container(&self, idx: usize) -> Option<&Container> {
        let spec = self.pod.spec.as_ref()?;
        let slot = self.slots.get(idx)?;
        if slot.init {
            spec.init_containers
                .iter()
                .flatten()
                .find(|c| c.name == slot.name)
        } else {
            spec.containers.iter().find(|c| c.name == slot.name)
        }
    }

    fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    fn namespace(&self) -> String {
        self.pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into())
    }

    fn restart_policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    fn reference(&self, idx: usize) -> ObjectReference {
        let mut r = crate::controllers::runtime::events::reference(self.pod.as_ref());
        if let Some(slot) = self.slots.get(idx) {
            let list = if slot.init {
                "initContainers"
            } else {
                "containers"
            };
            r.field_path = Some(format!("spec.{list}{{{}}}", slot.name));
        }
        r
    }

    fn event(&self, idx: Option<usize>, type_: &'static str, reason: &str, message: String) {
        let r = match idx {
            Some(i) => self.reference(i),
            None => crate::controllers::runtime::events::reference(self.pod.as_ref()),
        };
        self.ctx.recorder().event_ref(r, type_, reason, "", message);
    }

    fn state_of(&self, idx: usize) -> Option<(String, State)> {
        let slot = &self.slots[idx];
        let id = container_id(&self.uid, &slot.name, slot.attempt?);
        let state = self.ctx.runtime.state(&id).ok()?;
        Some((id, state))
    }

    fn pod_dir(&self) -> std::path::PathBuf {
        self.ctx.pod_dir(&self.uid)
    }

    fn termination_file(&self, name: &str, attempt: u32) -> std::path::PathBuf {
        self.pod_dir()
            .join("containers")
            .join(name)
            .join(attempt.to_string())
    }

    /// Finds the containers an earlier run of this agent left, watches the running ones and
    /// marks the ones whose helper is gone as ended.
    async fn adopt(&mut self) {
        let prefix = format!("{}-", self.uid);
        let ids: Vec<String> = self
            .ctx
            .runtime
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| id.starts_with(&prefix))
            .collect();
        for idx in 0..self.slots.len() {
            let name_prefix = format!("{prefix}{}-", self.slots[idx].name);
            let latest = ids
                .iter()
                .filter_map(|id| id.strip_prefix(&name_prefix)?.parse::<u32>().ok())
                .max();
            let Some(attempt) = latest else { continue };
            self.slots[idx].attempt = Some(attempt);
            let id = container_id(&self.uid, &self.slots[idx].name, attempt);
            mark_dead_if_stale(&self.ctx.runtime, &id);
            match self.ctx.runtime.state(&id) {
                Ok(state) if state.status == Status::Running => {
                    info!(%id, "adopting a running container");
                    let helper = state.helper_pid.map(|p| p as i32);
                    self.slots[idx].watcher = helper.map(|p| self.watch_exit(id.clone(), p));
                    self.slots[idx].started = true;
                    self.start_probes(idx, attempt, &id, true, tokio::time::Instant::now());
                }
                Ok(_) => self.slots[idx].exited_at = Some(Instant::now()),
                Err(_) => {}
            }
        }
        if self.slots.iter().any(|s| s.attempt.is_some()) {
            let share_pid = self.share_pid();
            let sb = Sandbox::at(&sandbox::run_dir(&self.uid), share_pid);
            if sb.is_complete() {
                self.sandbox = Some(sb);
            }
        }
    }

    fn share_pid(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.share_process_namespace)
            .unwrap_or(false)
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    /// A task that reports when the container's helper process ends.
    fn watch_exit(&self, id: String, helper_pid: i32) -> JoinHandle<()> {
        let tx = self.events_tx.clone();
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            wait_process(helper_pid).await;
            // The helper records the exit before it ends; make sure the record says so.
            for _ in 0..100 {
                match ctx.runtime.state(&id) {
                    Ok(s) if s.status != Status::Exited => {
                        tokio::time::sleep(Duration::from_millis(10)).await
                    }
                    _ => break,
                }
            }
            mark_dead_if_stale(&ctx.runtime, &id);
            let _ = tx.send(WorkerEvent::Exited { id });
        })
    }

    fn handle(&mut self, ev: WorkerEvent) {
        match ev {
            WorkerEvent::Pulled {
                slot,
                result,
                waited,
            } => {
                if let Some(s) = self.slots.get_mut(slot)
                    && matches!(s.pull, Some(PullState::Running))
                {
                    s.pull = Some(PullState::Done(result, waited));
                }
            }
            WorkerEvent::Exited { id } => {
                for (idx, slot) in self.slots.iter_mut().enumerate() {
                    if slot
                        .attempt
                        .is_some_and(|a| container_id(&self.uid, &slot.name, a) == id)
                    {
                        slot.exited_at = Some(Instant::now());
                        slot.watcher = None;
                        slot.stop_probes();
                        debug!(%id, idx, "container exited");
                    }
                }
            }
            WorkerEvent::Probe {
                name,
                attempt,
                kind,
                ok,
                message,
                grace,
            } => {
                let Some(idx) = self
                    .slots
                    .iter()
                    .position(|s| s.name == name && (!s.init || s.sidecar))
                else {
                    return;
                };
                if self.slots[idx].attempt != Some(attempt) {
                    return;
                }
                // Without a readiness probe a container is ready as soon as it has started.
                let no_readiness_probe = self
                    .spec_container(idx)
                    .is_some_and(|c| c.readiness_probe.is_none());
                let slot = &mut self.slots[idx];
                match (kind, ok) {
                    (ProbeKind::Readiness, ok) => slot.ready = ok,
                    (ProbeKind::Startup, true) => {
                        slot.started = true;
                        if no_readiness_probe {
                            slot.ready = true;
                        }
                        if let Some(tx) = &slot.started_tx {
                            let _ = tx.send(true);
                        }
                    }
                    (ProbeKind::Startup | ProbeKind::Liveness, false) => {
                        let what = if kind == ProbeKind::Liveness {
                            "liveness"
                        } else {
                            "startup"
                        };
                        slot.kill = Some((
                            format!("Container {name} failed {what} probe, will be restarted"),
                            grace,
                        ));
                        let _ = message;
                    }
                    (ProbeKind::Liveness, true) => {}
                }
            }
        }
    }

    /// Makes the node match the pod; returns when to look again (None: on the next event).
    async fn sync(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let left = self.active_deadline_left();
        if left.is_some_and(|l| l.is_zero()) {
            let msg = "Pod was active on the node longer than the specified deadline".to_string();
            self.event(None, NORMAL, "DeadlineExceeded", msg.clone());
            self.pod_reason = Some(("DeadlineExceeded", msg));
            self.finish("Failed").await;
            return None;
        }
        let wake = self.sync_containers(now).await;
        match (wake, left.map(|l| now + l)) {
            (Some(w), Some(d)) => Some(w.min(d)),
            (w, d) => w.or(d),
        }
    }

    /// How long until spec.activeDeadlineSeconds runs out, counted from the pod's startTime.
    fn active_deadline_left(&self) -> Option<Duration> {
        let seconds = self.pod.spec.as_ref()?.active_deadline_seconds?;
        let started: jiff::Timestamp = self.start_time.parse().ok()?;
        let end = started.as_second().saturating_add(seconds);
        let left = end - jiff::Timestamp::now().as_second();
        Some(Duration::from_secs(left.max(0) as u64))
    }

    async fn sync_containers(&mut self, now: Instant) -> Option<Instant> {
        let need_sandbox = self.sandbox.is_none();
        if need_sandbox && self.sandbox_retry.is_some_and(|t| now < t) {
            return self.sandbox_retry;
        }
        // Volumes need nothing of the sandbox: their API reads and token requests run while
        // the sandbox helper and the network attach do, instead of after them.
        let volumes = self.volumes.is_none().then(|| {
            let (ctx, pod) = (self.ctx.clone(), self.pod.clone());
            async move {
                let t = Instant::now();
                (seams::setup_volumes(&ctx, &pod).await, t.elapsed())
            }
        });
        let (sandbox, volumes) = tokio::join!(
            async {
                if need_sandbox {
                    Some(self.make_sandbox().await)
                } else {
                    None
                }
            },
            async {
                match volumes {
                    Some(f) => Some(f.await),
                    None => None,
                }
            },
        );
        let volumes = volumes.map(|(result, took)| {
            self.took("volumes", took);
            result
        });
        let volumes = match volumes {
            Some(Ok(v)) => {
                self.volumes = Some(v);
                self.volume_error = None;
                None
            }
            other => other,
        };
        if let Some(Err(e)) = sandbox {
            warn!(pod = %self.name(), error = format!("{e:#}"), "cannot create the pod sandbox");
            self.event(
                None,
                WARNING,
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {e:#}"),
            );
            self.sandbox_retry = Some(now + Duration::from_secs(5));
            return self.sandbox_retry;
        }
        if let Some(Err(msg)) = volumes {
            if self.volume_error.as_deref() != Some(msg.as_str()) {
                self.event(None, WARNING, "FailedMount", msg.clone());
            }
            self.volume_error = Some(msg);
            return Some(now + Duration::from_secs(10));
        }
        let refresh_at = match self.volumes.as_mut() {
            Some(v) => Some(seams::refresh_volumes(&self.ctx, &self.pod, v).await),
            None => None,
        };
        let mut wake: Option<Instant> = None;
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w: Instant| w.min(t)));
            }
        };
        earliest(refresh_at);
        // Init containers, one at a time, in order.
        let policy = self.restart_policy();
        let init_count = self.slots.iter().filter(|s| s.init).count();
        let app_started = self.slots[init_count..].iter().any(|s| s.attempt.is_some());
        for idx in 0..init_count {
            if self.slots[idx].sidecar {
                self.kill_if_unhealthy(idx).await;
                match self.state_of(idx) {
                    None => {
                        earliest(self.start_container(idx).await);
                        return wake;
                    }
                    Some((_, state)) if state.status != Status::Exited => {
                        if self.slots[idx].started || app_started {
                            continue;
                        }
                        return wake;
                    }
                    Some(_) => {
                        // Sidecars restart whatever the pod's policy.
                        earliest(self.restart(idx).await);
                        if app_started {
                            continue;
                        }
                        return wake;
                    }
                }
            }
            match self.state_of(idx) {
                None => {
                    earliest(self.start_container(idx).await);
                    return wake;
                }
                Some((_, state)) if state.status != Status::Exited => return wake,
                Some((_, state)) => {
                    if state.exit_code == Some(0) && state.error.is_none() {
                        continue;
                    }
                    if policy == "Never" {
                        self.slots[idx].final_state = true;
                        self.finish("Failed").await;
                        return None;
                    }
                    earliest(self.restart(idx).await);
                    return wake;
                }
            }
        }
        for idx in init_count..self.slots.len() {
            self.kill_if_unhealthy(idx).await;
            match self.state_of(idx) {
                None => earliest(self.start_container(idx).await),
                Some((_, state)) if state.status != Status::Exited => {}
                Some((_, state)) => {
                    let failed = state.exit_code != Some(0) || state.error.is_some();
                    let restart = match policy.as_str() {
                        "Never" => false,
                        "OnFailure" => failed,
                        _ => true,
                    };
                    if restart {
                        earliest(self.restart(idx).await);
                    } else {
                        self.slots[idx].final_state = true;
                        self.slots[idx].waiting = None;
                    }
                }
            }
        }
        let regular = &self.slots[init_count..];
        if !regular.is_empty() && regular.iter().all(|s| s.final_state) {
            let all_ok = (init_count..self.slots.len()).all(|i| {
                self.state_of(i)
                    .is_some_and(|(_, s)| s.exit_code == Some(0) && s.error.is_none())
            });
            self.finish(if all_ok { "Succeeded" } else { "Failed" })
                .await;
            return None;
        }
        wake
    }

    /// A liveness or startup probe gave up on the container: stop it (the caller restarts it
    /// per policy).
    async fn kill_if_unhealthy(&mut self, idx: usize) {
        if let Some((why, probe_grace)) = self.slots[idx].kill.take()
            && let Some((id, state)) = self.state_of(idx)
            && state.status == Status::Running
        {
            self.event(Some(idx), NORMAL, "Killing", why);
            // A probe-level terminationGracePeriodSeconds overrides the pod's for this kill.
            let grace = probe_grace.unwrap_or_else(|| self.grace_seconds());
            self.stop_container(idx, &id, Duration::from_secs(grace))
                .await;
            self.slots[idx].exited_at = Some(Instant::now());
        }
    }

    /// Restarts an exited container unless it is in back-off; returns when to try again.
    async fn restart(&mut self, idx: usize) -> Option<Instant> {
        let (pod_name, namespace) = (self.name(), self.namespace());
        let uid = self.uid.clone();
        let slot = &mut self.slots[idx];
        if slot.image_failed_at.is_some() || slot.retry_at.is_some() || slot.pull.is_some() {
            // A previous start attempt is still waiting on its image or configuration.
            return self.start_container(idx).await;
        }
        let exited_at = *slot.exited_at.get_or_insert_with(Instant::now);
        if let Some(until) = slot.restart_backoff.check(exited_at) {
            let delay = slot.restart_backoff.delay;
            let name = slot.name.clone();
            let first = slot
                .waiting
                .as_ref()
                .is_none_or(|(r, _)| r != "CrashLoopBackOff");
            slot.waiting = Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {} restarting failed container={name} pod={pod_name}_{namespace}({uid})",
                    human_duration(delay),
                ),
            ));
            if first {
                self.event(
                    Some(idx),
                    WARNING,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {name} in pod {}_{}({})",
                        self.name(),
                        self.namespace(),
                        self.uid
                    ),
                );
            }
            return Some(until);
        }
        self.start_container(idx).await
    }

    async fn make_sandbox(&mut self) -> anyhow::Result<()> {
        let (hostname, _) = etc::hostname(&self.pod);
        let spec = self.pod.spec.as_ref();
        let args = sandbox::CreateArgs {
            dir: sandbox::run_dir(&self.uid),
            hostname,
            host_network: self.host_network(),
            host_ipc: spec.and_then(|s| s.host_ipc).unwrap_or(false),
            share_pid: self.share_pid(),
        };
        let t = Instant::now();
        let sb = sandbox::create(&args).await?;
        self.step("sandbox", t);
        if !self.host_network() {
            let t = Instant::now();
            self.pod_ip = seams::attach_network(&self.ctx, &self.uid, &sb.net).await?;
            self.step("network", t);
        }
        let t = Instant::now();
        let limits = qos::pod_limits(&self.pod, self.qos);
        let cgroup = self.cgroup.clone();
        let _ = tokio::task::spawn_blocking(move || qos::create_pod_cgroup(&cgroup, &limits)).await;
        std::fs::create_dir_all(self.pod_dir())?;
        let hosts = etc::hosts_file(&self.pod, self.pod_ip_text().as_deref());
        std::fs::write(self.pod_dir().join("etc-hosts"), hosts)?;
        self.step("cgroup", t);
        self.sandbox = Some(sb);
        Ok(())
    }

    fn pod_ip_text(&self) -> Option<String> {
        if self.host_network() {
            return self.ctx.node.host_ip.clone();
        }
        self.pod_ip.map(|ip| ip.to_string())
    }

    fn grace_seconds(&self) -> u64 {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64
    }

    /// Makes sure the container's image is on the node, pulling it per imagePullPolicy;
    /// Err(when to look again) with the waiting reason set while it is not. A pull runs in its
    /// own task and reports back with [`WorkerEvent::Pulled`].
    async fn ensure_image(&mut self, idx: usize, c: &Container) -> Result<(), Instant> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tag_latest = !image.contains('@')
                && image
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| !last.contains(':') || last.ends_with(":latest"));
            if tag_latest { "Always" } else { "IfNotPresent" }.to_string()
        });
        let now = Instant::now();
        // Nothing wakes the worker before the pull reports, which it always does.
        let until_reported = now + Duration::from_secs(3600);
        match self.slots[idx].pull.take() {
            Some(PullState::Running) => {
                self.slots[idx].pull = Some(PullState::Running);
                return Err(until_reported);
            }
            Some(PullState::Done(Ok(done), _)) if done.fallback.is_some() => {
                self.slots[idx].image_failed_at = None;
                if let Some(fallback) = &done.fallback {
                    let message = fallback.message(&image, &done.pulled.image.id);
                    self.event(Some(idx), WARNING, "PullFallback", message);
                }
                return Ok(());
            }
            Some(PullState::Done(Ok(done), waited)) => {
                debug!(
                    image,
                    layers_fetched = done.pulled.layers_fetched,
                    bytes_fetched = done.pulled.bytes_fetched,
                    "image pulled"
                );
                self.slots[idx].image_failed_at = None;
                self.event(
                    Some(idx),
                    NORMAL,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {} ({} including waiting). Image size: {} bytes.",
                        super::images::go_duration(done.duration),
                        super::images::go_duration(waited),
                        done.pulled.image.size
                    ),
                );
                return Ok(());
            }
            Some(PullState::Done(Err(e), _)) => {
                let slot = &mut self.slots[idx];
                slot.image_failed_at = Some(now);
                slot.image_backoff.note_failure();
                let msg = format!("Failed to pull image \"{image}\": {e}");
                slot.waiting = Some(("ErrImagePull".into(), msg.clone()));
                self.event(Some(idx), WARNING, "Failed", msg);
                self.event(Some(idx), WARNING, "Failed", "Error: ErrImagePull".into());
                // Show ErrImagePull for a moment, then ImagePullBackOff until the retry.
                return Err(now + Duration::from_secs(1));
            }
            None => {}
        }
        let present = self.ctx.store.resolve(&image).ok().flatten().is_some();
        if present && policy != "Always" {
            self.slots[idx].image_failed_at = None;
            self.event(
                Some(idx),
                NORMAL,
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            );
            return Ok(());
        }
        if policy == "Never" {
            let msg =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.slots[idx].waiting = Some(("ErrImageNeverPull".into(), msg.clone()));
            self.event(Some(idx), WARNING, "ErrImageNeverPull", msg);
            return Err(now + CONFIG_RETRY);
        }
        let slot = &mut self.slots[idx];
        if let Some(failed_at) = slot.image_failed_at
            && let Some(until) = slot.image_backoff.check(failed_at)
        {
            let event = format!("Back-off pulling image \"{image}\"");
            let last_error = match &slot.waiting {
                Some((reason, msg)) if reason == "ErrImagePull" => format!(": {reason}: {msg}"),
                Some((reason, msg)) if reason == "ImagePullBackOff" => {
                    // Keep the failure the first back-off message named.
                    msg.strip_prefix(&event).unwrap_or_default().to_string()
                }
                _ => String::new(),
            };
            let first = slot
                .waiting
                .as_ref()
                .is_none_or(|(r, _)| r != "ImagePullBackOff");
            slot.waiting = Some(("ImagePullBackOff".into(), format!("{event}{last_error}")));
            if first {
                self.event(Some(idx), NORMAL, "BackOff", event);
                self.event(
                    Some(idx),
                    WARNING,
                    "Failed",
                    "Error: ImagePullBackOff".into(),
                );
            }
            return Err(until);
        }
        let (credentials, unreadable) =
            super::images::pull_credentials(self.ctx.client(), &self.pod, &image).await;
        if !unreadable.is_empty() {
            self.event(
                Some(idx),
                WARNING,
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    unreadable.join(", ")
                ),
            );
        }
        self.event(
            Some(idx),
            NORMAL,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        self.slots[idx].pull = Some(PullState::Running);
        let pull = self.ctx.puller.pull(&image, credentials);
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let result = pull.await;
            let _ = tx.send(WorkerEvent::Pulled {
                slot: idx,
                result,
                waited: now.elapsed(),
            });
        });
        Err(until_reported)
    }

    /// What the runtime runs for one attempt of a container.
    async fn container_config(
        &self,
        idx: usize,
        c: &Container,
        attempt: u32,
    ) -> Result<(ContainerConfig, Vec<String>), String> {
        let client = self
            .ctx
            .client()
            .ok_or_else(|| "no connection to the API server".to_string())?;
        let pod_ip = self.pod_ip_text();
        let env_ctx = env::EnvContext {
            client: &client,
            pod: &self.pod,
            pod_ip: pod_ip.clone(),
            host_ip: self.ctx.node.host_ip.clone(),
            node_cpu_millis: self.ctx.node.allocatable.cpu_millis(),
            node_memory: self.ctx.node.allocatable.memory_bytes(),
        };
        let (vars, warnings) = env::container_env(&env_ctx, c)
            .await
            .map_err(|e| e.to_string())?;
        let defined: BTreeMap<String, String> = vars
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect();
        let expand_all = |list: &Option<Vec<String>>| {
            list.as_ref()
                .map(|l| l.iter().map(|a| env::expand(a, &defined)).collect())
        };
        let spec = self.pod.spec.as_ref();
        let pod_sc = spec.and_then(|s| s.security_context.as_ref());
        let sc = c.security_context.as_ref();
        let uid = sc
            .and_then(|s| s.run_as_user)
            .or_else(|| pod_sc.and_then(|p| p.run_as_user));
        let gid = sc
            .and_then(|s| s.run_as_group)
            .or_else(|| pod_sc.and_then(|p| p.run_as_group));
        let mut groups: Vec<u32> = pod_sc
            .and_then(|p| p.supplemental_groups.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|g| u32::try_from(g).ok())
            .collect();
        if let Some(fs) = pod_sc
            .and_then(|p| p.fs_group)
            .and_then(|g| u32::try_from(g).ok())
            && !groups.contains(&fs)
        {
            groups.push(fs);
        }
        let user = (uid.is_some() || gid.is_some() || !groups.is_empty()).then(|| UserOverride {
            uid: uid.and_then(|u| u32::try_from(u).ok()),
            gid: gid.and_then(|g| u32::try_from(g).ok()),
            supplemental_groups: groups,
        });
        if sc
            .and_then(|s| s.run_as_non_root)
            .or_else(|| pod_sc.and_then(|p| p.run_as_non_root))
            == Some(true)
            && uid == Some(0)
        {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: \"{}_{}({})\", container: {})",
                self.name(),
                self.namespace(),
                self.uid,
                c.name
            ));
        }
        let Some(sb) = &self.sandbox else {
            return Err("the pod sandbox is not ready".into());
        };
        let host_pid = spec.and_then(|s| s.host_pid).unwrap_or(false);
        let namespaces = Namespaces {
            network: Some(sb.net.clone()),
            ipc: Some(sb.ipc.clone()),
            uts: Some(sb.uts.clone()),
            pid: if host_pid {
                Some("/proc/1/ns/pid".into())
            } else {
                sb.pid.clone()
            },
        };
        let mut mounts: Vec<BindMount> = match &self.volumes {
            Some(v) => v.mounts_for(c)?,
            None => Vec::new(),
        };
        let term_path = c
            .termination_message_path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/dev/termination-log".into());
        let term_file = self.termination_file(&c.name, attempt);
        if let Some(dir) = term_file.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(&term_file, b"")
            .map_err(|e| format!("cannot create {}: {e}", term_file.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&term_file, std::fs::Permissions::from_mode(0o666));
        }
        mounts.push(BindMount {
            source: term_file,
            destination: term_path,
            read_only: false,
        });
        let (hostname, _) = etc::hostname(&self.pod);
        let caps = sc.and_then(|s| s.capabilities.as_ref());
        let slot = &self.slots[idx];
        let annotations = BTreeMap::from([
            ("io.kubernetes.pod.namespace".to_string(), self.namespace()),
            ("io.kubernetes.pod.name".to_string(), self.name()),
            (ANNOTATION_POD_UID.to_string(), self.uid.clone()),
            ("io.kubernetes.container.name".to_string(), c.name.clone()),
            (
                "io.kubernetes.container.restartCount".to_string(),
                attempt.to_string(),
            ),
            (
                "io.kubernetes.container.type".to_string(),
                if slot.init { "init" } else { "regular" }.to_string(),
            ),
        ]);
        let hosts = std::fs::read_to_string(self.pod_dir().join("etc-hosts"))
            .unwrap_or_else(|_| etc::hosts_file(&self.pod, pod_ip.as_deref()));
        // Fields the runtime may gain later keep their defaults.
        #[allow(clippy::needless_update)]
        let config = ContainerConfig {
            id: container_id(&self.uid, &c.name, attempt),
            image: c.image.clone().unwrap_or_default(),
            command: expand_all(&c.command),
            args: expand_all(&c.args),
            env: vars,
            working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
            user,
            hostname,
            namespaces,
            resources: qos::container_limits(c),
            cgroup_parent: self.cgroup.clone(),
            mounts,
            read_only_root_filesystem: sc
                .and_then(|s| s.read_only_root_filesystem)
                .unwrap_or(false),
            privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
            capabilities_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
            capabilities_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
            no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
            oom_score_adj: Some(qos::oom_score_adj(
                &self.pod,
                c,
                self.qos,
                self.ctx.node.allocatable.memory_bytes(),
            )),
            hosts: Some(hosts),
            resolv_conf: Some(etc::resolv_conf(
                &self.pod,
                &self.ctx.node.service_subnet,
                self.ctx.node.network.borrow().as_ref().map(|n| n.gateway()),
            )),
            annotations,
            tty: c.tty.unwrap_or(false),
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            ..Default::default()
        };
        Ok((config, warnings))
    }

    /// Starts the next attempt of a container; returns when to try again if it could not.
    async fn start_container(&mut self, idx: usize) -> Option<Instant> {
        let now = Instant::now();
        if let Some(t) = self.slots[idx].retry_at
            && now < t
        {
            return Some(t);
        }
        self.slots[idx].retry_at = None;
        let c = self.spec_container(idx)?.clone();
        let t = Instant::now();
        if let Err(retry) = self.ensure_image(idx, &c).await {
            return Some(retry);
        }
        self.step("image", t);
        let attempt = self.slots[idx].attempt.map_or(0, |a| a + 1);
        let t = Instant::now();
        let config = self.container_config(idx, &c, attempt).await;
        self.step("config", t);
        let (config, warnings) = match config {
            Ok(c) => c,
            Err(msg) => {
                self.slots[idx].waiting = Some(("CreateContainerConfigError".into(), msg.clone()));
                self.event(Some(idx), WARNING, "Failed", format!("Error: {msg}"));
                self.slots[idx].retry_at = Some(now + CONFIG_RETRY);
                return Some(now + CONFIG_RETRY);
            }
        };
        for w in warnings {
            self.event(None, WARNING, "InvalidEnvironmentVariableNames", w);
        }
        let id = config.id.clone();
        // The previous attempt stays for `logs --previous`; older ones go.
        let ctx = self.ctx.clone();
        let uid = self.uid.clone();
        let name = c.name.clone();
        let t = Instant::now();
        let created = tokio::task::spawn_blocking(move || {
            if attempt >= 2 {
                for old in 0..attempt - 1 {
                    let old_id = container_id(&uid, &name, old);
                    if ctx.runtime.dir(&old_id).exists() {
                        mark_dead_if_stale(&ctx.runtime, &old_id);
                        if let Err(e) = ctx.runtime.remove(&old_id) {
                            debug!(id = %old_id, error = format!("{e:#}"), "cannot remove an old attempt");
                        }
                    }
                }
            }
            if ctx.runtime.dir(&config.id).exists() {
                mark_dead_if_stale(&ctx.runtime, &config.id);
                let _ = ctx.runtime.remove(&config.id);
            }
            ctx.runtime.create(&ctx.store, config)
        })
        .await;
        self.step("create", t);
        let created = match created {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("the create task failed: {e}")),
        };
        if let Err(e) = created {
            let msg = format!("{e:#}");
            self.slots[idx].waiting = Some(("CreateContainerError".into(), msg.clone()));
            self.event(Some(idx), WARNING, "Failed", format!("Error: {msg}"));
            self.slots[idx].retry_at = Some(now + BACKOFF_INITIAL);
            return Some(now + BACKOFF_INITIAL);
        }
        {
            let slot = &mut self.slots[idx];
            slot.attempt = Some(attempt);
            slot.waiting = None;
            slot.exited_at = None;
            slot.final_state = false;
            slot.stop_probes();
        }
        self.event(
            Some(idx),
            NORMAL,
            "Created",
            format!("Created container: {}", c.name),
        );
        let t = Instant::now();
        let helper = match self.ctx.runtime.start(&id) {
            Ok(child) => child,
            Err(e) => {
                let msg = format!("{e:#}");
                self.event(Some(idx), WARNING, "Failed", format!("Error: {msg}"));
                self.slots[idx].exited_at = Some(Instant::now());
                return Some(Instant::now() + Duration::from_millis(100));
            }
        };
        self.step("spawn", t);
        let t = Instant::now();
        let helper_pid = helper.id() as i32;
        // The exit watcher reaps the helper; the handle is not needed.
        drop(helper);
        self.slots[idx].watcher = Some(self.watch_exit(id.clone(), helper_pid));
        // Wait until it runs (or failed to start) so Started means started.
        let mut state = self.ctx.runtime.state(&id).ok();
        let deadline = Instant::now() + Duration::from_secs(60);
        while state.as_ref().is_some_and(|s| s.status == Status::Created)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(3)).await;
            state = self.ctx.runtime.state(&id).ok();
        }
        self.step("start", t);
        match state {
            Some(s)
                if s.status == Status::Running
                    || (s.status == Status::Exited && s.error.is_none()) =>
            {
                self.event(
                    Some(idx),
                    NORMAL,
                    "Started",
                    format!("Started container {}", c.name),
                );
                info!(pod = %self.name(), container = %c.name, attempt, "container started");
            }
            Some(s) => {
                let why = s
                    .error
                    .unwrap_or_else(|| "the container did not start".into());
                self.event(Some(idx), WARNING, "Failed", format!("Error: {why}"));
                return None;
            }
            None => return None,
        }
        // As kubelet: probing starts once postStart has completed (initialDelaySeconds still
        // counts from the container's start).
        let started_at = tokio::time::Instant::now();
        if let Some(post) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let slot = &mut self.slots[idx];
            slot.stop_probes();
            slot.started = false;
            slot.ready = false;
            let target = self.target(idx, &id);
            let limit = Duration::from_secs(self.grace_seconds().max(30));
            if let Err(e) = probes::run_hook(&target, post, limit).await {
                let msg = format!("{e:#}");
                self.event(
                    Some(idx),
                    WARNING,
                    "FailedPostStartHook",
                    format!("PostStartHook failed: {msg}"),
                );
                self.event(
                    Some(idx),
                    NORMAL,
                    "Killing",
                    format!(
                        "FailedPostStartHook: Container {} failed post start hook",
                        c.name
                    ),
                );
                self.stop_container(idx, &id, Duration::from_secs(self.grace_seconds()))
                    .await;
                self.slots[idx].exited_at = Some(Instant::now());
                return None;
            }
        }
        self.start_probes(idx, attempt, &id, false, started_at);
        None
    }

    fn target(&self, idx: usize, id: &str) -> Target {
        Target {
            ctx: self.ctx.clone(),
            netns: self
                .sandbox
                .as_ref()
                .map(|s| s.net.clone())
                .unwrap_or_else(|| "/proc/self/ns/net".into()),
            pod_ip: if self.host_network() {
                self.ctx
                    .node
                    .host_ip
                    .as_deref()
                    .and_then(|i| i.parse().ok())
            } else {
                self.pod_ip
            },
            container: self.spec_container(idx).cloned().unwrap_or_default(),
            container_id: id.to_string(),
            reference: self.reference(idx),
        }
    }

    fn start_probes(
        &mut self,
        idx: usize,
        attempt: u32,
        id: &str,
        adopted: bool,
        started_at: tokio::time::Instant,
    ) {
        let Some(c) = self.spec_container(idx).cloned() else {
            return;
        };
        if self.slots[idx].init && !self.slots[idx].sidecar {
            return;
        }
        let target = self.target(idx, id);
        let has_startup = c.startup_probe.is_some();
        let (started_tx, started_rx) = watch::channel(!has_startup || adopted);
        let slot = &mut self.slots[idx];
        slot.stop_probes();
        slot.started = !has_startup || adopted;
        slot.ready = c.readiness_probe.is_none() && slot.started;
        let mut tasks = Vec::new();
        for (kind, probe) in [
            (ProbeKind::Startup, c.startup_probe.clone()),
            (ProbeKind::Liveness, c.liveness_probe.clone()),
            (ProbeKind::Readiness, c.readiness_probe.clone()),
        ] {
            let Some(probe) = probe else { continue };
            if kind == ProbeKind::Startup && adopted {
                continue;
            }
            tasks.push(tokio::spawn(probes::run(
                kind,
                probe,
                target.clone(),
                attempt,
                started_at,
                started_rx.clone(),
                self.events_tx.clone(),
            )));
        }
        let slot = &mut self.slots[idx];
        slot.probes = tasks;
        slot.started_tx = Some(started_tx);
    }

    /// SIGTERM, then SIGKILL after `grace`; runs the preStop hook first.
    async fn stop_container(&mut self, idx: usize, id: &str, grace: Duration) {
        let started = Instant::now();
        if let Some(pre) = self
            .spec_container(idx)
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.clone())
        {
            let target = self.target(idx, id);
            if let Err(e) = probes::run_hook(&target, &pre, grace).await {
                self.event(
                    Some(idx),
                    WARNING,
                    "FailedPreStopHook",
                    format!("PreStopHook failed: {e:#}"),
                );
            }
        }
        let remaining = grace.saturating_sub(started.elapsed());
        let ctx = self.ctx.clone();
        let id = id.to_string();
        let _ = tokio::task::spawn_blocking(move || ctx.runtime.stop(&id, remaining)).await;
        self.slots[idx].stop_probes();
    }

    /// Stops every running container of the pod concurrently, each with preStop and `grace`.
    async fn stop_all(&mut self, grace: Duration, events: bool) {
        let mut running = Vec::new();
        for idx in 0..self.slots.len() {
            if let Some((id, state)) = self.state_of(idx)
                && state.status != Status::Exited
            {
                running.push((idx, id));
            }
        }
        let mut tasks = Vec::new();
        for (idx, id) in running {
            if events {
                self.event(
                    Some(idx),
                    NORMAL,
                    "Killing",
                    format!("Stopping container {}", self.slots[idx].name),
                );
            }
            let target = self.target(idx, &id);
            let pre = self
                .spec_container(idx)
                .and_then(|c| c.lifecycle.as_ref())
                .and_then(|l| l.pre_stop.clone());
            let ctx = self.ctx.clone();
            let reference = self.reference(idx);
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                if let Some(pre) = pre
                    && let Err(e) = probes::run_hook(&target, &pre, grace).await
                {
                    ctx.recorder().event_ref(
                        reference,
                        WARNING,
                        "FailedPreStopHook",
                        "",
                        format!("PreStopHook failed: {e:#}"),
                    );
                }
                let remaining = grace.saturating_sub(started.elapsed());
                let ctx2 = ctx.clone();
                let _ =
                    tokio::task::spawn_blocking(move || ctx2.runtime.stop(&id, remaining)).await;
            }));
        }
        futures::future::join_all(tasks).await;
        for s in &mut self.slots {
            s.stop_probes();
            s.final_state = true;
            s.waiting = None;
            if s.exited_at.is_none() {
                s.exited_at = Some(Instant::now());
            }
        }
    }

    /// The pod reached Succeeded or Failed: nothing more runs; its namespaces go.
    async fn finish(&mut self, phase: &'static str) {
        self.stop_all(Duration::from_secs(self.grace_seconds()), true)
            .await;
        self.final_phase = Some(phase);
        info!(pod = %self.name(), phase, "pod finished");
        self.release_sandbox().await;
    }

    async fn release_sandbox(&mut self) {
        if let Err(e) = seams::detach_network(&self.ctx, &self.uid).await {
            warn!(pod = %self.name(), error = format!("{e:#}"), "cannot detach the pod network");
        }
        sandbox::remove(&sandbox::run_dir(&self.uid)).await;
    }

    /// Graceful deletion: preStop, SIGTERM, the grace period, SIGKILL; then the pod object is
    /// deleted for good.
    async fn terminate(&mut self) {
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0) as u64;
        info!(pod = %self.name(), grace_s = grace, "stopping the pod's containers");
        self.stop_all(Duration::from_secs(grace), true).await;
        self.release_sandbox().await;
        if self.final_phase.is_none() {
            let all_ok = (0..self.slots.len())
                .filter(|i| !self.slots[*i].init)
                .all(|i| {
                    self.state_of(i)
                        .is_some_and(|(_, s)| s.exit_code == Some(0) && s.error.is_none())
                });
            self.final_phase = Some(if all_ok { "Succeeded" } else { "Failed" });
        }
        self.terminated = true;
    }

    async fn delete_pod_object(&self) {
        let Some(client) = self.ctx.client() else {
            return;
        };
        let api: Api<Pod> = Api::namespaced(client, &self.namespace());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.name(), &params).await {
            Ok(_) => debug!(pod = %self.name(), "pod object deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => warn!(pod = %self.name(), error = %e, "cannot delete the pod object"),
        }
    }

    /// Removes everything of the pod from the node.
    async fn cleanup(&mut self) {
        self.release_sandbox().await;
        clean_pod_files(&self.ctx, &self.uid).await;
    }

    fn container_status(&self, idx: usize, c: &Container) -> Value {
        let slot = &self.slots[idx];
        let image = c.image.clone().unwrap_or_default();
        let image_ref = self.ctx.store.resolve(&image).ok().flatten();
        let mut s = json!({
            "name": c.name,
            "image": image_ref.as_ref().and_then(|i| i.names.first().cloned()).unwrap_or_else(|| image.clone()),
            "imageID": image_ref.as_ref().map(|i| i.id.clone()).unwrap_or_default(),
            "restartCount": slot.attempt.unwrap_or(0),
            "ready": false,
            "started": false,
            "state": {"waiting": {"reason": if slot.init || self.init_done() { "ContainerCreating" } else { "PodInitializing" }}},
            "lastState": {},
        });
        let Some(attempt) = slot.attempt else {
            if let Some((reason, message)) = &slot.waiting {
                s["state"] = json!({"waiting": {"reason": reason, "message": message}});
            }
            return s;
        };
        let id = container_id(&self.uid, &c.name, attempt);
        let policy = c
            .termination_message_policy
            .as_deref()
            .unwrap_or("File")
            .to_string();
        let terminated_of = |attempt: u32| -> Option<Value> {
            let id = container_id(&self.uid, &c.name, attempt);
            let st = self.ctx.runtime.state(&id).ok()?;
            if st.status != Status::Exited {
                return None;
            }
            let failed = st.exit_code != Some(0);
            let msg = status::termination_message(
                &self.termination_file(&c.name, attempt),
                policy == "FallbackToLogsOnError",
                failed,
                &self.ctx.runtime.log_path(&id),
            );
            Some(status::terminated(&st, &id, msg))
        };
        let previous = attempt
            .checked_sub(1)
            .and_then(terminated_of)
            .map(|t| json!({"terminated": t}))
            .unwrap_or_else(|| json!({}));
        let Ok(state) = self.ctx.runtime.state(&id) else {
            return s;
        };
        s["containerID"] = json!(format!("kcluster://{id}"));
        match state.status {
            Status::Created => {
                s["lastState"] = previous;
            }
            Status::Running => {
                s["state"] = json!({"running": {"startedAt": state.started_at.as_deref().map(k8s_time).unwrap_or_else(status::now)}});
                s["lastState"] = previous;
                s["started"] = json!(slot.started);
                s["ready"] = json!(slot.ready && slot.started && (!slot.init || slot.sidecar));
            }
            Status::Exited => {
                let this = terminated_of(attempt).unwrap_or_else(|| json!({}));
                match &slot.waiting {
                    Some((reason, message)) if !slot.final_state => {
                        s["state"] = json!({"waiting": {"reason": reason, "message": message}});
                        s["lastState"] = json!({"terminated": this});
                    }
                    _ if !slot.final_state
                        && self.final_phase.is_none()
                        && slot.exited_at.is_some()
                        && !self.terminated =>
                    {
                        // About to be restarted.
                        s["state"] = json!({"terminated": this});
                        s["lastState"] = previous;
                    }
                    _ => {
                        s["state"] = json!({"terminated": this});
                        s["lastState"] = previous;
                    }
                }
            }
        }
        s
    }

    /// An init container has done its part: completed, or (a sidecar) started.
    fn init_complete(&self, i: usize) -> bool {
        let slot = &self.slots[i];
        self.state_of(i).is_some_and(|(_, s)| {
            if slot.sidecar {
                (s.status == Status::Running && slot.started)
                    || self.slots.iter().any(|o| !o.init && o.attempt.is_some())
            } else {
                s.status == Status::Exited && s.exit_code == Some(0) && s.error.is_none()
            }
        })
    }

    fn init_done(&self) -> bool {
        (0..self.slots.len())
            .filter(|i| self.slots[*i].init)
            .all(|i| self.init_complete(i))
    }

    fn phase(&self) -> &'static str {
        if let Some(p) = self.final_phase {
            return p;
        }
        if !self.init_done() {
            return "Pending";
        }
        let mut running = 0;
        let mut waiting = 0;
        let mut stopped = 0;
        for idx in 0..self.slots.len() {
            if self.slots[idx].init {
                continue;
            }
            match self.state_of(idx) {
                Some((_, s)) if s.status == Status::Running => running += 1,
                Some((_, s)) if s.status == Status::Exited => stopped += 1,
                _ if self.slots[idx].attempt.unwrap_or(0) > 0 => stopped += 1,
                _ => waiting += 1,
            }
        }
        if waiting > 0 {
            "Pending"
        } else if running > 0 || stopped > 0 {
            "Running"
        } else {
            "Pending"
        }
    }

    fn build_status(&self) -> Value {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let phase = self.phase();
        let mut init_statuses = Vec::new();
        let mut statuses = Vec::new();
        for (idx, slot) in self.slots.iter().enumerate() {
            let Some(c) = self.spec_container(idx) else {
                continue;
            };
            let s = self.container_status(idx, c);
            if slot.init {
                init_statuses.push(s);
            } else {
                statuses.push(s);
            }
        }
        let initialized = self.init_done() || phase == "Succeeded";
        let incomplete: Vec<String> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(i, s)| s.init && !self.init_complete(*i))
            .map(|(_, s)| s.name.clone())
            .collect();
        let unready: Vec<String> = statuses
            .iter()
            .filter(|s| s["ready"] != json!(true))
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect();
        let finished = matches!(phase, "Succeeded" | "Failed");
        let containers_ready = unready.is_empty() && !finished;
        let mut gates_ok = true;
        let mut gate_message = None;
        for gate in spec.readiness_gates.iter().flatten() {
            let cond = self
                .pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == gate.condition_type));
            match cond {
                Some(c) if c.status == "True" => {}
                Some(_) => {
                    gates_ok = false;
                    gate_message = Some(format!(
                        "the status of pod readiness gate \"{}\" is not \"True\", but False",
                        gate.condition_type
                    ));
                }
                None => {
                    gates_ok = false;
                    gate_message = Some(format!(
                        "corresponding condition of pod readiness gate \"{}\" does not exist.",
                        gate.condition_type
                    ));
                }
            }
        }
        let pod = &self.pod;
        let unready_msg = format!("containers with unready status: [{}]", unready.join(" "));
        let mut conditions = vec![
            status::condition(
                pod,
                "PodReadyToStartContainers",
                self.sandbox.is_some() && !finished,
                None,
                None,
            ),
            if initialized {
                status::condition(pod, "Initialized", true, None, None)
            } else {
                status::condition(
                    pod,
                    "Initialized",
                    false,
                    Some("ContainersNotInitialized"),
                    Some(format!(
                        "containers with incomplete status: [{}]",
                        incomplete.join(" ")
                    )),
                )
            },
        ];
        let (cr_reason, cr_msg) = if finished {
            (Some("PodCompleted"), None)
        } else if containers_ready {
            (None, None)
        } else {
            (Some("ContainersNotReady"), Some(unready_msg.clone()))
        };
        conditions.push(status::condition(
            pod,
            "ContainersReady",
            containers_ready,
            cr_reason,
            cr_msg.clone(),
        ));
        let ready = containers_ready && gates_ok;
        let (r_reason, r_msg) = if finished {
            (Some("PodCompleted"), None)
        } else if !containers_ready {
            (Some("ContainersNotReady"), cr_msg)
        } else if !gates_ok {
            (Some("ReadinessGatesNotReady"), gate_message)
        } else {
            (None, None)
        };
        conditions.push(status::condition(pod, "Ready", ready, r_reason, r_msg));
        let mut out = json!({
            "phase": phase,
            "conditions": conditions,
            "startTime": self.start_time,
            "qosClass": self.qos.as_str(),
            "containerStatuses": statuses,
        });
        if !init_statuses.is_empty() {
            out["initContainerStatuses"] = json!(init_statuses);
        }
        if let Some(ip) = &self.ctx.node.host_ip {
            out["hostIP"] = json!(ip);
            out["hostIPs"] = json!([{"ip": ip}]);
        }
        if let Some(ip) = self.pod_ip_text() {
            out["podIP"] = json!(ip);
            out["podIPs"] = json!([{"ip": ip}]);
        }
        if let Some((reason, message)) = &self.pod_reason {
            out["reason"] = json!(reason);
            out["message"] = json!(message);
        }
        out
    }

    /// Writes the status if it changed; false when the write failed.
    async fn publish_status(&mut self) -> bool {
        let status = self.build_status();
        if self.last_status.as_ref() == Some(&status) {
            return true;
        }
        let Some(client) = self.ctx.client() else {
            return false;
        };
        let api: Api<Pod> = Api::namespaced(client, &self.namespace());
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let patch = json!({"metadata": {"uid": self.uid}, "status": status});
        let t = Instant::now();
        match api
            .patch_status(&self.name(), &params, &Patch::Strategic(&patch))
            .await
        {
            Ok(p) => {
                self.pod = Arc::new(p);
                // Conditions carry transition times taken from the pod: compare as rebuilt.
                self.last_status = Some(self.build_status());
                if self.startup.is_some() && status["phase"] == "Running" {
                    self.step("status", t);
                    if let Some(s) = self.startup.take() {
                        s.log(&self.name());
                    }
                }
                true
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                self.last_status = Some(status);
                true
            }
            Err(e) => {
                warn!(pod = %self.name(), error = %e, "cannot update the pod status");
                false
            }
        }
    }
}

/// Waits until a process ends (a pidfd polled by tokio), then reaps it if it is our child.
async fn wait_process(pid: i32) {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: the kernel just returned this fd; nothing else owns it.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same until dropped.
        let registered = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE)
        };
        match registered {
            Ok(afd) => {
                let _ = afd.readable().await;
            }
            Err(_) => {
                while std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    let _ = nix::sys::wait::waitpid(
        nix::unistd::Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// A container whose record says created/running but whose helper is gone (the node
/// restarted, or the helper was killed) is recorded as ended, so it can be removed and
/// replaced.
pub fn mark_dead_if_stale(runtime: &container::Runtime, id: &str) {
    let Ok(mut state) = runtime.state(id) else {
        return;
    };
    if state.status == Status::Exited {
        return;
    }
    let alive = state.helper_pid.is_some_and(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let text = String::from_utf8_lossy(&c);
                text.contains("container-run") && text.contains(id)
            })
            .unwrap_or(false)
    });
    if alive || (state.status == Status::Created && state.helper_pid.is_none()) {
        return;
    }
    state.status = Status::Exited;
    state.exit_code = Some(255);
    state.pid = None;
    state.error = Some(status::LOST_MARKER.to_string());
    state.finished_at = Some(jiff::Timestamp::now().to_string());
    if let Err(e) = container::write_state(&runtime.dir(id), &state) {
        warn!(%id, error = format!("{e:#}"), "cannot record a lost container");
    }
}

/// Removes a pod's containers, sandbox, cgroups and files from the node.
pub async fn clean_pod_files(ctx: &Arc<Context>, uid: &str) {
    if let Err(e) = seams::teardown_volumes(ctx, uid).await {
        warn!(pod_uid = %uid, error = format!("{e:#}"), "cannot tear down the pod's volumes");
    }
    sandbox::remove(&sandbox::run_dir(uid)).await;
    let ctx2 = ctx.clone();
    let uid2 = uid.to_string();
    let _ = tokio::task::spawn_blocking(move || {
        let prefix = format!("{uid2}-");
        for (id, state) in ctx2.runtime.list().unwrap_or_default() {
            if !id.starts_with(&prefix) {
                continue;
            }
            if state.status == Status::Running {
                let _ = ctx2.runtime.stop(&id, Duration::from_secs(1));
            }
            mark_dead_if_stale(&ctx2.runtime, &id);
            if let Err(e) = ctx2.runtime.remove(&id) {
                warn!(%id, error = format!("{e:#}"), "cannot remove a container");
            }
        }
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            qos::remove_pod_cgroup(&qos::pod_cgroup(&uid2, qos));
        }
        let dir = ctx2.pod_dir(&uid2);
        if dir.exists() {
            crate::runtime::images::remove_tree(&dir);
        }
    })
    .await;
    debug!(pod_uid = %uid, "pod cleaned up");
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m0s", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_back_off_starts_at_ten_seconds_and_doubles_to_five_minutes() {
        let mut b = Backoff::default();
        // The first restart is immediate; the next failure waits 10 s.
        assert_eq!(b.check(Instant::now()), None);
        assert_eq!(b.delay, Duration::from_secs(10));
        let now = Instant::now();
        let until = b.check(now).expect("in back-off");
        assert_eq!(until, now + Duration::from_secs(10));
        let mut delays = Vec::new();
        for _ in 0..7 {
            let long_ago = Instant::now()
                .checked_sub(b.delay + Duration::from_secs(1))
                .expect("a past instant");
            assert_eq!(b.check(long_ago), None);
            delays.push(b.delay.as_secs());
        }
        assert_eq!(delays, [20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(human_duration(Duration::from_secs(300)), "5m0s");
        assert_eq!(human_duration(Duration::from_secs(80)), "1m20s");
    }
}
