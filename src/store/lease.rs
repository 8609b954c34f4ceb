//! Leases, as etcd has them: a lease is granted for a time, keys are written under it, and
//! when the time is up (or the lease is revoked) its keys are deleted like any key — watchers
//! see each one go. The API server gives every Event one, so Events expire after `--event-ttl`
//! (an hour) as in Kubernetes.
//!
//! Embedded, leases live in two tables: each lease's end (wall-clock milliseconds, so a store
//! reopened after a long stop ends overdue leases at once) and each leased key's lease. The
//! writer thread ends leases when their time comes, deleting each key at a revision of its
//! own. On etcd they are etcd's own (`etcd`), one per key (see `Store::lease_for`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::TableDefinition;

use super::writer::{Op, Reply};
use super::{KeyValue, Revision, Store, StoreError, check_len, unexpected};

pub type LeaseId = i64;

pub(super) const LEASES: TableDefinition<i64, i64> = TableDefinition::new("leases");
pub(super) const LEASED: TableDefinition<&str, i64> = TableDefinition::new("leased");
pub(super) const META_NEXT_LEASE: &str = "next_lease";

/// kube-apiserver's lease manager: a lease is reused for objects written within 5% of their
/// time to live, at most a minute, so a burst of Events shares one lease instead of granting
/// one each. Each object then lives between its TTL and its TTL plus that.
const REUSE_SHARE: u32 = 20;
const REUSE_MAX: Duration = Duration::from_secs(60);

pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The lease handed out last, for reuse.
#[derive(Debug, Default)]
pub(super) struct LeaseCache {
    last: Option<(LeaseId, Duration, Instant)>,
}

impl LeaseCache {
    /// A cached lease of this `ttl` that still has at least `ttl` to run.
    fn reusable(&self, ttl: Duration, now: Instant) -> Option<LeaseId> {
        self.last
            .filter(|(_, t, ends)| *t == ttl && ends.saturating_duration_since(now) >= ttl)
            .map(|(id, _, _)| id)
    }
}

/// How much longer than `ttl` a reusable lease is granted for.
fn reuse_window(ttl: Duration) -> Duration {
    (ttl / REUSE_SHARE).min(REUSE_MAX)
}

impl Store {
    /// Grants a lease that ends `ttl` from now.
    pub async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl = ttl.max(Duration::from_secs(1));
        if let Some(remote) = &self.remote {
            return remote.grant(ttl).await;
        }
        let op = Op::Grant {
            ttl_ms: ttl.as_millis() as i64,
            now_ms: now_ms(),
        };
        match self.submit(op).await? {
            Reply::Lease(id) => Ok(id),
            other => Err(unexpected(other)),
        }
    }

    /// Ends a lease now, deleting its keys.
    pub async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        if let Some(remote) = &self.remote {
            return remote.revoke(lease).await;
        }
        match self.submit(Op::Revoke { lease }).await? {
            Reply::Applied => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// A lease that keeps a key written now for `ttl` (and at most a little more): the one
    /// granted last while it lasts that long, else a new one.
    pub async fn lease_for(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        // etcd deletes all of a lease's keys at one revision, and the mirror keeps one event
        // per revision: there, every key gets a lease of its own, so each goes at its own.
        if self.remote.is_some() {
            return self.grant_lease(ttl).await;
        }
        let now = Instant::now();
        if let Some(id) = self.lease_cache().reusable(ttl, now) {
            return Ok(id);
        }
        let granted = ttl + reuse_window(ttl);
        let id = self.grant_lease(granted).await?;
        self.lease_cache().last = Some((id, ttl, now + granted));
        Ok(id)
    }

    fn lease_cache(&self) -> std::sync::MutexGuard<'_, LeaseCache> {
        self.inner
            .leases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// [`Store::create`] under `lease` (`None`: no lease).
    pub async fn create_leased(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<KeyValue, StoreError> {
        check_len(key, &value)?;
        if let Some(remote) = &self.remote {
            return remote.create(key, value, lease).await;
        }
        let op = Op::Create {
            key: key.to_owned(),
            value,
            lease,
        };
        match self.submit(op).await? {
            Reply::Kv(kv) => Ok(kv),
            other => Err(unexpected(other)),
        }
    }

    /// [`Store::update`] under `lease`; `None` frees the key of any lease, as a put in etcd.
    pub async fn update_leased(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
        lease: Option<LeaseId>,
    ) -> Result<KeyValue, StoreError> {
        check_len(key, &value)?;
        if let Some(remote) = &self.remote {
            return remote.update(self, key, value, expected, lease).await;
        }
        let op = Op::Update {
            key: key.to_owned(),
            value,
            expected,
            lease,
        };
        match self.submit(op).await? {
            Reply::Kv(kv) => Ok(kv),
            other => Err(unexpected(other)),
        }
    }
}

impl Store {
    /// Every leased key of the embedded store with its lease's end (ms since the epoch): what a
    /// move into etcd carries over.
    pub(super) fn leased_keys(&self) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        use redb::ReadableTable;

        use super::Context;
        let txn = self.begin_read()?;
        let leases = txn.open_table(LEASES).ctx("opening lease table")?;
        let leased = txn.open_table(LEASED).ctx("opening leased-key table")?;
        let mut out = std::collections::HashMap::new();
        for entry in leased.iter().ctx("reading leased keys")? {
            let (key, id) = entry.ctx("reading leased keys")?;
            let id = id.value();
            if let Some(ends) = leases.get(id).ctx("reading leases")? {
                out.insert(key.value().to_owned(), ends.value());
            }
        }
        Ok(out)
    }
}

/// Reused leases are for a tidy store, not for correctness; a poisoned cache is just empty.
pub(super) fn new_cache() -> Mutex<LeaseCache> {
    Mutex::new(LeaseCache::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_reused_while_it_outlasts_the_ttl() {
        let ttl = Duration::from_secs(3600);
        assert_eq!(reuse_window(ttl), Duration::from_secs(60));
        assert_eq!(
            reuse_window(Duration::from_secs(20)),
            Duration::from_secs(1)
        );
        let start = Instant::now();
        let cache = LeaseCache {
            last: Some((7, ttl, start + ttl + reuse_window(ttl))),
        };
        assert_eq!(cache.reusable(ttl, start), Some(7));
        assert_eq!(
            cache.reusable(ttl, start + Duration::from_secs(59)),
            Some(7)
        );
        assert_eq!(cache.reusable(ttl, start + Duration::from_secs(61)), None);
        assert_eq!(cache.reusable(Duration::from_secs(60), start), None);
        assert_eq!(LeaseCache::default().reusable(ttl, start), None);
    }
}
