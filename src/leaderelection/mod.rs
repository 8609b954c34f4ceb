//! Leader election on coordination.k8s.io Leases, as client-go's leaderelection package runs it
//! for kube-controller-manager and kube-scheduler (`--leader-elect`, on by default, also with a
//! single server): of the processes that could do the elected work, the one holding the
//! Leases does it and the others wait to take over.
//!
//! A candidate takes a Lease that is free, already its own, or not renewed for its
//! `leaseDurationSeconds` as timed by this process' own clock (from when it last saw the record
//! change, so clocks need not agree); it renews every `retry_period` and gives up when it has
//! not renewed for `renew_deadline`, which is shorter than the lease, so two holders never
//! overlap. Several Leases are taken in order, the next only while holding the one before, so
//! candidates cannot split them.
//!
//! The work runs in a tokio runtime of its own on its own thread: when the Lease is lost,
//! shutting that runtime down stops every task the work spawned (informers, workers, token
//! renewers). kube-controller-manager exits its process instead; this one also serves the
//! API and must not go down with a lost Lease.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::controllers::runtime::api_code;

/// Where the control plane's Leases live.
pub const NAMESPACE: &str = "kube-system";

/// client-go's defaults for kube-controller-manager and kube-scheduler.
#[derive(Clone, Debug)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One Lease to hold, written through `api` (the client whose role may update it).
pub struct LeaseLock {
    pub api: Api<Lease>,
    pub name: String,
}

impl LeaseLock {
    pub fn new(client: kube::Client, name: &str) -> Self {
        LeaseLock {
            api: Api::namespaced(client, NAMESPACE),
            name: name.to_string(),
        }
    }
}

/// The elected work: started anew each time the Leases are won.
pub type Work = Arc<dyn Fn() -> BoxFuture<'static, Result<()>> + Send + Sync>;

/// What a candidate last saw of a Lease and when (by its own clock).
#[derive(Default)]
struct Observed {
    record: Option<(String, Option<String>)>,
    at: Option<Instant>,
}

/// The outcome of one try at a Lease.
#[derive(Debug, PartialEq)]
enum Attempt {
    Held,
    /// Another candidate holds it and renews it.
    Taken(String),
}

/// This process' identity as a candidate: `<name>_<id>`, the id kept in `state` so that a
/// restarted process takes its own Lease back at once instead of waiting for it to expire.
pub fn identity(name: &str, state: &Path) -> Result<String> {
    let file = state.join("leader-election-id");
    let id = match std::fs::read_to_string(&file) {
        Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            std::fs::create_dir_all(state)
                .with_context(|| format!("cannot create {}", state.display()))?;
            std::fs::write(&file, &id)
                .with_context(|| format!("cannot write {}", file.display()))?;
            id
        }
    };
    Ok(format!("{name}_{id}"))
}

/// Campaigns for `locks` forever as `identity`, running `work` while they are all held.
pub async fn run(locks: Vec<LeaseLock>, identity: String, timing: Timing, work: Work) {
    let mut observed: Vec<Observed> = locks.iter().map(|_| Observed::default()).collect();
    let names: Vec<&str> = locks.iter().map(|l| l.name.as_str()).collect();
    loop {
        let mut waiting_on: Option<String> = None;
        loop {
            match try_all(&locks, &mut observed, &identity, &timing).await {
                Ok(None) => break,
                Ok(Some(holder)) => {
                    if waiting_on.as_deref() != Some(holder.as_str()) {
                        info!(leases = ?names, %holder, "waiting for the leader's leases");
                        waiting_on = Some(holder);
                    }
                }
                Err(e) => warn!(error = format!("{e:#}"), "cannot campaign for the leases"),
            }
            tokio::time::sleep(jittered(timing.retry_period)).await;
        }
        info!(leases = ?names, %identity, "became leader");
        let mut elected = match Elected::start(work.clone()) {
            Ok(elected) => elected,
            Err(e) => {
                error!(error = format!("{e:#}"), "cannot start the elected work");
                release(&locks, &identity).await;
                tokio::time::sleep(timing.retry_period).await;
                continue;
            }
        };
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(timing.retry_period) => {}
                _ = &mut elected.done, if !elected.finished => {
                    elected.finished = true;
                    warn!(leases = ?names, "the elected work stopped; giving up the leases");
                    release(&locks, &identity).await;
                    break;
                }
            }
            match try_all(&locks, &mut observed, &identity, &timing).await {
                Ok(None) => renewed = Instant::now(),
                Ok(Some(holder)) => {
                    warn!(leases = ?names, %holder, "leadership lost to another candidate");
                    break;
                }
                Err(e) if renewed.elapsed() >= timing.renew_deadline => {
                    warn!(leases = ?names, error = format!("{e:#}"),
                          "leadership lost: the leases were not renewed within the deadline");
                    break;
                }
                Err(e) => warn!(
                    error = format!("{e:#}"),
                    "cannot renew the leases; retrying"
                ),
            }
        }
        elected.stop().await;
        info!(leases = ?names, "stopped leading");
    }
}

/// Takes or renews every Lease in order: None when all are held, else the holder of the
/// first one that is not.
async fn try_all(
    locks: &[LeaseLock],
    observed: &mut [Observed],
    identity: &str,
    timing: &Timing,
) -> Result<Option<String>> {
    let mut taken = None;
    for (lock, seen) in locks.iter().zip(observed.iter_mut()) {
        if taken.is_some() {
            // Not tried while an earlier one is another's, but watched: its expiry is timed
            // from when this candidate last saw it change, so it must be looked at all along.
            observe(lock, seen).await?;
            continue;
        }
        if let Attempt::Taken(holder) = try_acquire_or_renew(lock, seen, identity, timing).await? {
            taken = Some(holder);
        }
    }
    Ok(taken)
}

async fn observe(lock: &LeaseLock, seen: &mut Observed) -> Result<()> {
    if let Some(lease) = lock
        .api
        .get_opt(&lock.name)
        .await
        .with_context(|| format!("cannot read lease {NAMESPACE}/{}", lock.name))?
    {
        note(seen, &lease.spec.unwrap_or_default());
    }
    Ok(())
}

/// Records the lease's holder and renewal as seen now, restarting its expiry clock when
/// they changed.
fn note(seen: &mut Observed, spec: &LeaseSpec) {
    let record = (
        spec.holder_identity.clone().unwrap_or_default(),
        spec.renew_time.as_ref().map(|t| t.0.to_string()),
    );
    if seen.record.as_ref() != Some(&record) {
        seen.record = Some(record);
        seen.at = Some(Instant::now());
    }
}

async fn try_acquire_or_renew(
    lock: &LeaseLock,
    seen: &mut Observed,
    identity: &str,
    timing: &Timing,
) -> Result<Attempt> {
    let now = MicroTime(jiff::Timestamp::now());
    let seconds = timing.lease_duration.as_secs().max(1) as i32;
    let Some(current) = lock
        .api
        .get_opt(&lock.name)
        .await
        .with_context(|| format!("cannot read lease {NAMESPACE}/{}", lock.name))?
    else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(lock.name.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_string()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match lock.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Held),
            Err(e) if api_code(&e) == Some(409) => Ok(Attempt::Taken(String::new())),
            Err(e) => Err(e).with_context(|| format!("cannot create lease {}", lock.name)),
        };
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    note(seen, &spec);
    let duration = spec
        .lease_duration_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(timing.lease_duration);
    let fresh = seen.at.is_some_and(|at| at.elapsed() < duration);
    if !holder.is_empty() && holder != identity && fresh {
        return Ok(Attempt::Taken(holder));
    }
    let mut next = current.clone();
    let spec = next.spec.get_or_insert_with(LeaseSpec::default);
    if holder != identity {
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(identity.to_string());
    spec.lease_duration_seconds = Some(seconds);
    spec.renew_time = Some(now);
    match lock
        .api
        .replace(&lock.name, &PostParams::default(), &next)
        .await
    {
        Ok(_) => Ok(Attempt::Held),
        // Someone wrote it since we read it: theirs until the next look.
        Err(e) if api_code(&e) == Some(409) => Ok(Attempt::Taken(holder)),
        Err(e) => Err(e).with_context(|| format!("cannot update lease {}", lock.name)),
    }
}

/// Gives the Leases up (holder cleared, one-second duration), as client-go's ReleaseOnCancel
/// does, so the next candidate need not wait for them to expire.
async fn release(locks: &[LeaseLock], identity: &str) {
    for lock in locks.iter().rev() {
        let Ok(Some(mut lease)) = lock.api.get_opt(&lock.name).await else {
            continue;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(identity) {
            continue;
        }
        spec.holder_identity = Some(String::new());
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        if let Err(e) = lock
            .api
            .replace(&lock.name, &PostParams::default(), &lease)
            .await
        {
            warn!(lease = %lock.name, error = %e, "cannot release the lease");
        }
    }
}

/// client-go waits `retry_period` × [1, 1.2) between tries, so candidates spread out.
fn jittered(period: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    period + period.mul_f64(0.2 * f64::from(nanos % 1000) / 1000.0)
}

/// The elected work, running in its own runtime on its own thread.
struct Elected {
    stop: Option<oneshot::Sender<()>>,
    done: oneshot::Receiver<()>,
    finished: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Elected {
    fn start(work: Work) -> Result<Elected> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (finish, done) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("elected".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("elected-worker")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        error!(error = %e, "cannot build the elected work's runtime");
                        let _ = finish.send(());
                        return;
                    }
                };
                runtime.block_on(async move {
                    tokio::select! {
                        result = work() => {
                            if let Err(e) = result {
                                error!(error = format!("{e:#}"), "the elected work failed");
                            }
                        }
                        _ = stopped => {}
                    }
                });
                // Cancels every task the work spawned.
                runtime.shutdown_timeout(Duration::from_secs(2));
                let _ = finish.send(());
            })
            .context("cannot start the elected work's thread")?;
        Ok(Elected {
            stop: Some(stop),
            done,
            finished: false,
            thread: Some(thread),
        })
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if !self.finished {
            let _ = (&mut self.done).await;
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_a_fifth_of_the_period() {
        let period = Duration::from_secs(2);
        let d = jittered(period);
        assert!(d >= period && d < period.mul_f64(1.2), "{d:?}");
    }

    #[test]
    fn identity_is_kept_across_restarts() {
        let dir = std::env::temp_dir().join(format!("kcluster-le-{}", uuid::Uuid::new_v4()));
        let first = identity("server-0", &dir).expect("an identity");
        let again = identity("server-0", &dir).expect("the same identity");
        assert_eq!(first, again);
        assert!(first.starts_with("server-0_"), "{first}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
