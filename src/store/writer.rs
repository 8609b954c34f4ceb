//! The single owner of the write side.
//!
//! redb allows one write transaction at a time and a durable commit costs an fsync, so instead of
//! every caller taking turns, callers queue requests and this thread commits everything queued
//! in one transaction (group commit). Each request is still checked on its own against the state
//! left by the requests before it in the batch, so a failed compare-and-swap fails alone.
//! Answers go out only after the commit, so nothing is acknowledged before it is durable.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, Table, WriteTransaction};
use tokio::sync::oneshot;

use super::lease::{LEASED, LEASES, LeaseId, META_NEXT_LEASE, now_ms};
use super::{
    Context, Event, HISTORY, KV, KeyValue, META, META_COMPACTED, META_REVISION, Revision, Revs,
    StoreError, StoreOptions, codec, watch,
};

/// History records deleted per transaction by the background compactor: deleting minutes of
/// history at once would stall writers for the whole time.
const COMPACT_CHUNK: usize = 4096;

/// The longest a commit waits for more writers to join it (see `Writer::gather`).
const MAX_GATHER: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub(super) enum Op {
    Create {
        key: String,
        value: Bytes,
        lease: Option<LeaseId>,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Option<Revision>,
        lease: Option<LeaseId>,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
    /// A lease that ends `ttl` after `now` (milliseconds since the epoch).
    Grant {
        ttl_ms: i64,
        now_ms: i64,
    },
    /// Ends a lease now: its keys are deleted.
    Revoke {
        lease: LeaseId,
    },
    /// Ends every lease whose time is up at `now_ms` (the writer's own tick).
    Expire {
        now_ms: i64,
    },
    /// Changes another store (etcd) already made, at its revisions: applied as they are, the
    /// previous values taken from our own state. Changes at or below the current revision were
    /// applied before (a resumed watch) and are skipped.
    Mirror {
        changes: Vec<Change>,
    },
    /// Replaces everything with `kvs` as of `revision`, history included: every watch is cut
    /// off (its client re-lists), as after a compaction.
    Reset {
        kvs: Vec<KeyValue>,
        revision: Revision,
    },
}

#[derive(Debug)]
pub(super) enum Change {
    Put(KeyValue),
    Delete { key: String, revision: Revision },
}

#[derive(Debug)]
pub(super) enum Reply {
    Kv(KeyValue),
    Deleted(KeyValue, Revision),
    Compacted,
    Applied,
    Lease(LeaseId),
}

pub(super) struct Request {
    pub(super) op: Op,
    pub(super) reply: oneshot::Sender<Result<Reply, StoreError>>,
}

pub(super) struct Writer {
    db: Arc<Database>,
    queue: mpsc::Receiver<Request>,
    watchers: Arc<Mutex<watch::Registry>>,
    revs: Arc<Revs>,
    options: StoreOptions,
    /// (when, current revision then), one per compactor tick: the revision that was current
    /// `retention` ago is the newest one that may be compacted by age.
    samples: VecDeque<(Instant, Revision)>,
    /// Set while the background compactor still has history to delete, chunk by chunk.
    compact_target: Option<Revision>,
    /// Requests in the last batch and how long committing it took, for `gather`.
    last_batch: usize,
    last_commit: Duration,
    /// When the next lease ends (ms since the epoch), if any lease is granted.
    lease_deadline: Option<i64>,
}

/// The tables of one write transaction plus the counters as they stand inside it.
struct Tx<'t> {
    kv: Table<'t, &'static str, &'static [u8]>,
    history: Table<'t, i64, &'static [u8]>,
    leases: Table<'t, i64, i64>,
    leased: Table<'t, &'static str, i64>,
    current: Revision,
    compacted: Revision,
    next_lease: LeaseId,
    /// Set when a lease was granted or ended, so the writer looks for the next deadline again.
    leases_changed: bool,
    dirty: bool,
}

impl Writer {
    pub(super) fn new(
        db: Arc<Database>,
        queue: mpsc::Receiver<Request>,
        watchers: Arc<Mutex<watch::Registry>>,
        revs: Arc<Revs>,
        options: StoreOptions,
    ) -> Writer {
        Writer {
            db,
            queue,
            watchers,
            revs,
            options,
            samples: VecDeque::new(),
            compact_target: None,
            last_batch: 0,
            last_commit: Duration::ZERO,
            lease_deadline: None,
        }
    }

    pub(super) fn run(mut self) {
        let mut compaction_tick = self.options.compaction_interval.map(|i| Instant::now() + i);
        self.find_lease_deadline();
        loop {
            self.expire_leases();
            let lease_tick = self.lease_deadline.map(|at| {
                Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()).max(0) as u64)
            });
            let next_tick = match (compaction_tick, lease_tick) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = if self.compact_target.is_some() {
                // Compaction work is pending: serve writers first, but do not sleep.
                match self.queue.try_recv() {
                    Ok(r) => Some(r),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            } else if let Some(tick) = next_tick {
                let wait = tick.saturating_duration_since(Instant::now());
                match self.queue.recv_timeout(wait) {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            } else {
                match self.queue.recv() {
                    Ok(r) => Some(r),
                    Err(_) => return,
                }
            };
            if let Some(first) = first {
                let max = self.options.max_batch.max(1);
                let mut batch = vec![first];
                while batch.len() < max {
                    match self.queue.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                self.gather(&mut batch, max);
                self.last_batch = batch.len();
                let started = Instant::now();
                self.commit_batch(batch);
                self.last_commit = started.elapsed();
            }
            if let (Some(tick), Some(interval)) =
                (compaction_tick, self.options.compaction_interval)
                && Instant::now() >= tick
            {
                self.plan_compaction();
                compaction_tick = Some(Instant::now() + interval);
            }
            if let Some(target) = self.compact_target {
                self.compact_chunk(target);
            }
        }
    }

    /// When the last commit served several writers they are probably still turning around
    /// (reading their answer, sending the next request) as this one starts. Waiting for them a
    /// little, a fraction of what a commit costs and at most `MAX_GATHER`, lets one fsync cover
    /// them all instead of splitting them over commits that each pay a full one: on a disk with
    /// slow fsyncs that is most of the write throughput. A lone writer never waits.
    fn gather(&self, batch: &mut Vec<Request>, max: usize) {
        let want = self.last_batch.min(max);
        if batch.len() >= want {
            return;
        }
        let deadline = Instant::now() + (self.last_commit / 2).min(MAX_GATHER);
        while batch.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.queue.recv_timeout(left) {
                Ok(r) => batch.push(r),
                // A closed queue is noticed by the main loop once this batch is committed.
                Err(_) => break,
            }
        }
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().map(|r| (r.op, r.reply)).unzip();
        let reset = ops.iter().any(|op| matches!(op, Op::Reset { .. }));
        let mut events = Vec::new();
        match self.apply_all(ops, &mut events) {
            Ok(results) => {
                if reset {
                    self.watchers
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .cut_all();
                }
                // Watchers hear of a write no later than its author does.
                if !events.is_empty() {
                    let events: Vec<_> = events.into_iter().map(watch::SharedEvent::new).collect();
                    self.watchers
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .route(&events);
                }
                for (reply, result) in replies.into_iter().zip(results) {
                    // The caller may have given up waiting; the write stands regardless.
                    let _ = reply.send(result);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "store: write batch failed");
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Applies every op in one transaction and commits it. The outer error is a backend failure,
    /// which fails the whole batch: even the answers of requests that were rejected on their own
    /// were computed against state that is now rolled back.
    fn apply_all(
        &mut self,
        ops: Vec<Op>,
        events: &mut Vec<Event>,
    ) -> Result<Vec<Result<Reply, StoreError>>, StoreError> {
        let txn = self.begin()?;
        let mut results = Vec::with_capacity(ops.len());
        let (current, compacted, dirty, leases_changed) = {
            let mut tx = Tx::open(&txn)?;
            for op in ops {
                results.push(tx.apply(op, events)?);
            }
            tx.finish(&txn)?;
            (tx.current, tx.compacted, tx.dirty, tx.leases_changed)
        };
        if dirty {
            txn.commit().ctx("committing writes")?;
            self.publish(current, compacted);
            if leases_changed {
                self.find_lease_deadline();
            }
        } else {
            // Nothing to persist (all rejected or no-ops): skip the fsync.
            txn.abort().ctx("aborting empty transaction")?;
        }
        Ok(results)
    }

    /// Reads when the next lease ends.
    fn find_lease_deadline(&mut self) {
        let found = (|| -> Result<Option<i64>, StoreError> {
            let txn = self.db.begin_read().ctx("starting read transaction")?;
            let leases = match txn.open_table(LEASES) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e).ctx("opening lease table"),
            };
            let mut earliest: Option<i64> = None;
            for entry in leases.iter().ctx("reading leases")? {
                let (_, until) = entry.ctx("reading leases")?;
                earliest = Some(earliest.map_or(until.value(), |e| e.min(until.value())));
            }
            Ok(earliest)
        })();
        self.lease_deadline = match found {
            Ok(deadline) => deadline,
            Err(err) => {
                // Looked for again in a second: a lease must not outlive its time for good.
                tracing::warn!(error = %err, "store: cannot read the leases");
                Some(now_ms() + 1000)
            }
        };
    }

    /// Ends the leases whose time is up, deleting their keys as any delete does (watchers see
    /// each go).
    fn expire_leases(&mut self) {
        let now = now_ms();
        if self.lease_deadline.is_none_or(|at| at > now) {
            return;
        }
        let (reply, _) = oneshot::channel();
        self.commit_batch(vec![Request {
            op: Op::Expire { now_ms: now },
            reply,
        }]);
        // commit_batch found the next deadline if anything changed; if nothing did (the
        // deadline was stale), look again so the writer does not spin.
        if self.lease_deadline.is_some_and(|at| at <= now) {
            self.find_lease_deadline();
            if self.lease_deadline.is_some_and(|at| at <= now) {
                self.lease_deadline = Some(now + 1000);
            }
        }
    }

    fn begin(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().ctx("starting write transaction")?;
        // Explicit, because the durability of acknowledged writes depends on it.
        txn.set_durability(Durability::Immediate)
            .ctx("setting durability")?;
        Ok(txn)
    }

    fn publish(&self, current: Revision, compacted: Revision) {
        self.revs.current.store(current, Ordering::Release);
        self.revs.compacted.store(compacted, Ordering::Release);
    }

    /// Records a sample of the current revision and, if history older than both retention
    /// limits exists, schedules its deletion.
    fn plan_compaction(&mut self) {
        let now = Instant::now();
        let current = self.revs.current.load(Ordering::Acquire);
        self.samples.push_back((now, current));
        let retention = self.options.retention;
        let old_enough = |at: &Instant| now.duration_since(*at) >= retention;
        // Keep only the newest sample that is old enough, and the younger ones.
        while self.samples.get(1).is_some_and(|(at, _)| old_enough(at)) {
            self.samples.pop_front();
        }
        let by_age = self
            .samples
            .front()
            .filter(|(at, _)| old_enough(at))
            .map(|&(_, rev)| rev);
        let Some(by_age) = by_age else { return };
        let by_count = current.saturating_sub(self.options.min_retained_revisions.max(0));
        let target = by_age.min(by_count);
        if target > self.revs.compacted.load(Ordering::Acquire) {
            tracing::debug!(target, "store: compacting history");
            self.compact_target = Some(target);
        }
    }

    fn compact_chunk(&mut self, target: Revision) {
        let result = (|| -> Result<bool, StoreError> {
            let txn = self.begin()?;
            let (current, compacted, done, dirty) = {
                let mut tx = Tx::open(&txn)?;
                let done = tx.compact(target, Some(COMPACT_CHUNK))?;
                tx.finish(&txn)?;
                (tx.current, tx.compacted, done, tx.dirty)
            };
            if dirty {
                txn.commit().ctx("committing compaction")?;
                self.publish(current, compacted);
            } else {
                txn.abort().ctx("aborting empty transaction")?;
            }
            Ok(done)
        })();
        match result {
            Ok(false) => {}
            Ok(true) => self.compact_target = None,
            Err(err) => {
                // Keeping history longer is harmless; retry at the next tick.
                tracing::warn!(error = %err, "store: background compaction failed");
                self.compact_target = None;
            }
        }
    }
}

impl<'t> Tx<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Tx<'t>, StoreError> {
        let meta = txn.open_table(META).ctx("opening meta table")?;
        let get = |name: &str| -> Result<Revision, StoreError> {
            meta.get(name)
                .ctx("reading meta table")?
                .map(|g| g.value())
                .ok_or_else(|| StoreError::Backend(format!("meta table lacks {name:?}")))
        };
        let current = get(META_REVISION)?;
        let compacted = get(META_COMPACTED)?;
        // Files from before leases have no counter: the first lease is 1.
        let next_lease = meta
            .get(META_NEXT_LEASE)
            .ctx("reading meta table")?
            .map_or(1, |g| g.value());
        Ok(Tx {
            kv: txn.open_table(KV).ctx("opening kv table")?,
            history: txn.open_table(HISTORY).ctx("opening history table")?,
            leases: txn.open_table(LEASES).ctx("opening lease table")?,
            leased: txn.open_table(LEASED).ctx("opening leased-key table")?,
            current,
            compacted,
            next_lease,
            leases_changed: false,
            dirty: false,
        })
    }

    fn finish(&mut self, txn: &WriteTransaction) -> Result<(), StoreError> {
        if self.dirty {
            let mut meta = txn.open_table(META).ctx("opening meta table")?;
            meta.insert(META_REVISION, self.current)
                .ctx("writing revision")?;
            meta.insert(META_COMPACTED, self.compacted)
                .ctx("writing compacted revision")?;
            if self.leases_changed {
                meta.insert(META_NEXT_LEASE, self.next_lease)
                    .ctx("writing the lease counter")?;
            }
        }
        Ok(())
    }

    /// Ties `key` to `lease`, or frees it of any (a put without a lease, as in etcd). Refused
    /// for a lease that is not granted (it ended, or never was).
    fn attach(
        &mut self,
        key: &str,
        lease: Option<LeaseId>,
    ) -> Result<Result<(), StoreError>, StoreError> {
        match lease {
            Some(id) => {
                if self.leases.get(id).ctx("reading leases")?.is_none() {
                    return Ok(Err(StoreError::LeaseNotFound { lease: id }));
                }
                self.leased.insert(key, id).ctx("writing a leased key")?;
            }
            None => {
                self.leased.remove(key).ctx("freeing a leased key")?;
            }
        }
        Ok(Ok(()))
    }

    /// Deletes every key of the leases `doomed` and the leases themselves.
    fn end_leases(
        &mut self,
        doomed: &[LeaseId],
        events: &mut Vec<Event>,
    ) -> Result<(), StoreError> {
        if doomed.is_empty() {
            return Ok(());
        }
        let mut keys = Vec::new();
        for entry in self.leased.iter().ctx("reading leased keys")? {
            let (key, id) = entry.ctx("reading leased keys")?;
            if doomed.contains(&id.value()) {
                keys.push(key.value().to_owned());
            }
        }
        for key in keys {
            self.leased
                .remove(key.as_str())
                .ctx("freeing a leased key")?;
            if let Some(prev) = self.current_kv(&key)? {
                let event = Event::Delete {
                    prev,
                    revision: self.current + 1,
                };
                self.record(&event)?;
                events.push(event);
            }
        }
        for id in doomed {
            self.leases.remove(*id).ctx("ending a lease")?;
        }
        self.leases_changed = true;
        self.dirty = true;
        Ok(())
    }

    fn current_kv(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let found = self.kv.get(key).ctx("reading key")?;
        found.map(|g| codec::decode_kv(key, g.value())).transpose()
    }

    /// Inner result: the request's own outcome. Outer error: the backend failed.
    fn apply(
        &mut self,
        op: Op,
        events: &mut Vec<Event>,
    ) -> Result<Result<Reply, StoreError>, StoreError> {
        match op {
            Op::Create { key, value, lease } => {
                if self.kv.get(key.as_str()).ctx("reading key")?.is_some() {
                    return Ok(Err(StoreError::AlreadyExists { key }));
                }
                if let Err(e) = self.attach(&key, lease)? {
                    return Ok(Err(e));
                }
                let revision = self.current + 1;
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: revision,
                    mod_revision: revision,
                };
                let event = Event::Put {
                    kv: kv.clone(),
                    prev: None,
                };
                self.record(&event)?;
                events.push(event);
                Ok(Ok(Reply::Kv(kv)))
            }
            Op::Update {
                key,
                value,
                expected,
                lease,
            } => {
                let Some(prev) = self.current_kv(&key)? else {
                    return Ok(Err(StoreError::NotFound { key }));
                };
                if let Some(expected) = expected
                    && expected != prev.mod_revision
                {
                    return Ok(Err(StoreError::Conflict {
                        key,
                        expected,
                        actual: prev.mod_revision,
                    }));
                }
                if prev.value == value {
                    return Ok(Ok(Reply::Kv(prev)));
                }
                if let Err(e) = self.attach(&key, lease)? {
                    return Ok(Err(e));
                }
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: prev.create_revision,
                    mod_revision: self.current + 1,
                };
                let event = Event::Put {
                    kv: kv.clone(),
                    prev: Some(prev),
                };
                self.record(&event)?;
                events.push(event);
                Ok(Ok(Reply::Kv(kv)))
            }
            Op::Delete { key, expected } => {
                let Some(prev) = self.current_kv(&key)? else {
                    return Ok(Err(StoreError::NotFound { key }));
                };
                if let Some(expected) = expected
                    && expected != prev.mod_revision
                {
                    return Ok(Err(StoreError::Conflict {
                        key,
                        expected,
                        actual: prev.mod_revision,
                    }));
                }
                let revision = self.current + 1;
                let event = Event::Delete {
                    prev: prev.clone(),
                    revision,
                };
                self.leased
                    .remove(key.as_str())
                    .ctx("freeing a leased key")?;
                self.record(&event)?;
                events.push(event);
                Ok(Ok(Reply::Deleted(prev, revision)))
            }
            Op::Grant { ttl_ms, now_ms } => {
                let id = self.next_lease;
                self.next_lease += 1;
                self.leases
                    .insert(id, now_ms.saturating_add(ttl_ms))
                    .ctx("granting a lease")?;
                self.leases_changed = true;
                self.dirty = true;
                Ok(Ok(Reply::Lease(id)))
            }
            Op::Revoke { lease } => {
                if self.leases.get(lease).ctx("reading leases")?.is_none() {
                    return Ok(Err(StoreError::LeaseNotFound { lease }));
                }
                self.end_leases(&[lease], events)?;
                Ok(Ok(Reply::Applied))
            }
            Op::Expire { now_ms } => {
                let mut doomed = Vec::new();
                for entry in self.leases.iter().ctx("reading leases")? {
                    let (id, until) = entry.ctx("reading leases")?;
                    if until.value() <= now_ms {
                        doomed.push(id.value());
                    }
                }
                self.end_leases(&doomed, events)?;
                Ok(Ok(Reply::Applied))
            }
            Op::Compact { revision } => {
                if revision > self.current {
                    return Ok(Err(StoreError::FutureRevision {
                        requested: revision,
                        current: self.current,
                    }));
                }
                self.compact(revision, None)?;
                Ok(Ok(Reply::Compacted))
            }
            Op::Mirror { changes } => {
                for change in changes {
                    let event = match change {
                        Change::Put(kv) if kv.mod_revision > self.current => Event::Put {
                            prev: self.current_kv(&kv.key)?,
                            kv,
                        },
                        Change::Delete { key, revision } if revision > self.current => {
                            match self.current_kv(&key)? {
                                Some(prev) => Event::Delete { prev, revision },
                                // Never seen here (created and deleted between copies).
                                None => continue,
                            }
                        }
                        _ => continue,
                    };
                    self.record(&event)?;
                    events.push(event);
                }
                Ok(Ok(Reply::Applied))
            }
            Op::Reset { kvs, revision } => {
                self.kv.retain(|_, _| false).ctx("clearing the kv table")?;
                self.history.retain(|_, _| false).ctx("clearing history")?;
                for kv in kvs {
                    let raw = codec::encode_kv(kv.create_revision, kv.mod_revision, &kv.value);
                    self.kv
                        .insert(kv.key.as_str(), raw.as_slice())
                        .ctx("writing key")?;
                }
                self.current = revision;
                self.compacted = revision;
                self.dirty = true;
                Ok(Ok(Reply::Applied))
            }
        }
    }

    /// Applies one event (whose revision is past the current one) to the current state and history.
    fn record(&mut self, event: &Event) -> Result<(), StoreError> {
        let revision = event.revision();
        match event {
            Event::Put { kv, .. } => {
                let raw = codec::encode_kv(kv.create_revision, kv.mod_revision, &kv.value);
                self.kv
                    .insert(kv.key.as_str(), raw.as_slice())
                    .ctx("writing key")?;
            }
            Event::Delete { prev, .. } => {
                self.kv.remove(prev.key.as_str()).ctx("deleting key")?;
            }
        }
        let raw = codec::encode_event(event);
        self.history
            .insert(revision, raw.as_slice())
            .ctx("writing history")?;
        self.current = revision;
        self.dirty = true;
        Ok(())
    }

    /// Deletes history at or below `target`, at most `limit` records. Returns whether
    /// everything up to `target` is gone; `compacted` only advances as far as was deleted, so
    /// a partial run never claims history is gone that is still readable, or the reverse.
    fn compact(&mut self, target: Revision, limit: Option<usize>) -> Result<bool, StoreError> {
        if target <= self.compacted {
            return Ok(true);
        }
        let limit = limit.unwrap_or(usize::MAX);
        let mut removed = 0;
        let mut last = None;
        {
            let doomed = self
                .history
                .extract_from_if(..=target, |_, _| true)
                .ctx("compacting history")?;
            for entry in doomed.take(limit) {
                let (r, _) = entry.ctx("compacting history")?;
                last = Some(r.value());
                removed += 1;
            }
        }
        let done = removed < limit;
        self.compacted = match (done, last) {
            (true, _) | (false, None) => target,
            (false, Some(last)) => last,
        };
        self.dirty = true;
        Ok(done)
    }
}
