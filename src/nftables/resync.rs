//! The loop that keeps one of our tables in step with the cluster, shared by the service proxy
//! and NetworkPolicy enforcement: both rebuild their table whole after a failure or when it has
//! gone missing, and otherwise write only what changed, folding bursts of watch events together.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{Notify, watch};
use tracing::warn;

use super::{Conn, Family};

/// Bursts of changes (a Deployment scaling, a namespace of pods starting) become one sync.
const COALESCE: Duration = Duration::from_millis(20);
/// How often the table's presence is checked: someone may flush the node's rules.
const DRIFT_CHECK: Duration = Duration::from_secs(30);
/// A failed sync is retried after 200 ms times the number of failures in a row, at most 5 s.
const RETRY_STEP: Duration = Duration::from_millis(200);
const RETRY_STEPS_MAX: u32 = 25;
/// Chains no longer wanted are flushed at once and deleted this long after, as kube-proxy
/// does: before Linux 6.2 a verdict-map element that pointed at a chain keeps it busy for a
/// moment after the element is gone.
pub const STALE_CHAIN_DELAY: Duration = Duration::from_secs(1);

/// What a writer knows is in the kernel.
#[derive(Debug, Default)]
pub struct Applied<S> {
    pub state: S,
    /// Flushed chains waiting to be deleted, with when they were flushed.
    pub stale: BTreeMap<String, Instant>,
}

impl<S> Applied<S> {
    /// Flushed chains whose deletion is due at `now`, leaving out those `wanted` again.
    pub fn due(&self, now: Instant, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        self.stale
            .iter()
            .filter(|(name, since)| {
                now.duration_since(**since) >= STALE_CHAIN_DELAY && !wanted(name.as_str())
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// One table's writer.
pub trait TableWriter {
    /// Brings the table to what the watched objects say. `Ok(true)` when unlinked chains still
    /// wait to be deleted, so a sync must follow after [`STALE_CHAIN_DELAY`] without any change.
    fn sync(&mut self) -> impl Future<Output = Result<bool>> + Send;
    /// Forgets what was applied, so the next sync rebuilds the table whole.
    fn forget(&mut self);
}

/// What the loop says in its logs, and the table it checks for.
pub struct Table {
    /// e.g. "service rules", for "cannot program the service rules".
    pub what: &'static str,
    pub family: Family,
    pub name: &'static str,
}

/// Syncs whenever `wake` is notified, until the API client is replaced (the caller then
/// restarts its watches with the new one). `synced` turns true after each successful sync.
pub async fn run<W: TableWriter>(
    table: &Table,
    writer: &mut W,
    wake: &Notify,
    clients: &mut watch::Receiver<Option<kube::Client>>,
    synced: &watch::Sender<bool>,
) {
    let mut failures = 0u32;
    let mut drift = tokio::time::interval(DRIFT_CHECK);
    drift.tick().await;
    loop {
        let wait = match writer.sync().await {
            Ok(stale) => {
                failures = 0;
                synced.send_replace(true);
                stale.then_some(STALE_CHAIN_DELAY)
            }
            Err(e) => {
                failures += 1;
                writer.forget();
                let delay = RETRY_STEP * failures.min(RETRY_STEPS_MAX);
                warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "cannot program the {}; the next sync rebuilds the table",
                    table.what
                );
                Some(delay)
            }
        };
        let timer = async {
            match wait {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wake.notified() => tokio::time::sleep(COALESCE).await,
            _ = timer => {}
            _ = drift.tick() => {
                let (family, name) = (table.family, table.name);
                match tokio::task::spawn_blocking(move || exists(family, name)).await {
                    Ok(Ok(true)) => continue,
                    Ok(Ok(false)) => {
                        warn!("the table of the {} is gone; rebuilding it", table.what);
                        writer.forget();
                    }
                    Ok(Err(e)) => warn!(error = format!("{e:#}"), "cannot check the {}", table.what),
                    Err(_) => {}
                }
            }
            _ = clients.changed() => return,
        }
    }
}

fn exists(family: Family, name: &str) -> Result<bool> {
    let mut conn = Conn::new()?;
    Ok(conn.table_exists(family, name)?)
}

/// Aborts the informers' tasks when the watches are restarted or dropped.
pub struct AbortOnDrop(pub Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
