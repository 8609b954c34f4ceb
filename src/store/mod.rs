//! Embedded, persistent MVCC key-value store: the API server keeps every object here.
//!
//! The model is etcd's, reduced to what a single-node API server needs: one global revision
//! counter, compare-and-swap on a key's `mod_revision`, reads of the latest state or of an older
//! revision, and watches that replay history and then stream live changes.
//!
//! Storage is a redb file with three tables: the current value of every live key, the history
//! of events keyed by revision (everything after the compacted revision), and a few counters.
//! One writer thread owns the write side and commits queued requests together (group commit),
//! so a burst of concurrent writes costs one fsync instead of one each. Readers use redb's
//! snapshot transactions and never wait for the writer.

// The API server that consumes this module is being written in parallel.
#![allow(dead_code)]

mod codec;
pub mod etcd;
mod lease;
mod watch;
mod writer;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

pub use lease::LeaseId;
pub use watch::{SharedEvent, Watch};
use writer::{Op, Reply, Request};

pub type Revision = i64;

#[derive(Clone, Debug, PartialEq)]
pub struct KeyValue {
    pub key: String,
    /// Opaque to the store (the API server keeps an object's JSON here).
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

#[derive(Clone, Debug)]
pub enum Event {
    /// A create (`prev` is `None`) or an update.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// `revision` is the delete's own revision; `prev.mod_revision` is the last write before it.
    Delete { prev: KeyValue, revision: Revision },
}

impl Event {
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {key:?} not found")]
    NotFound { key: String },
    #[error("key {key:?} already exists")]
    AlreadyExists { key: String },
    #[error("conflict on {key:?}: expected mod revision {expected}, found {actual}")]
    Conflict {
        key: String,
        expected: Revision,
        actual: Revision,
    },
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is in the future (current is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("lease {lease} not found (it ended, or was never granted)")]
    LeaseNotFound { lease: LeaseId },
    #[error("storage backend: {0}")]
    Backend(String),
}

/// Tunables; the defaults are what a node runs with, tests shrink them.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// How often the background compactor runs; `None` turns it off.
    pub compaction_interval: Option<Duration>,
    /// History younger than this is kept…
    pub retention: Duration,
    /// …and so are at least this many of the latest revisions, whichever keeps more.
    pub min_retained_revisions: i64,
    /// How many events of its prefix a watcher may fall behind the writer before it is cut off
    /// with `Compacted`.
    pub watch_buffer: usize,
    /// Upper bound of write requests committed in one transaction, so one huge burst cannot
    /// delay its first writer indefinitely.
    pub max_batch: usize,
    /// redb page cache.
    pub cache_size: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            compaction_interval: Some(Duration::from_secs(60)),
            retention: Duration::from_secs(5 * 60),
            min_retained_revisions: 10_000,
            watch_buffer: 4096,
            max_batch: 1024,
            cache_size: 256 * 1024 * 1024,
        }
    }
}

/// Name of the database file inside the directory given to [`Store::open`].
pub const DB_FILE: &str = "store.redb";

/// Largest key or value accepted: the record layout stores lengths as u32.
const MAX_LEN: usize = u32::MAX as usize;

/// Bumped if the record layout in `codec` ever changes, so an old binary refuses a newer file
/// instead of misreading it.
const FORMAT_VERSION: i64 = 1;

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const HISTORY: TableDefinition<i64, &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
const META_REVISION: &str = "revision";
const META_COMPACTED: &str = "compacted";
const META_FORMAT: &str = "format";

/// Revision of an empty store: the first write gets 2, as in etcd.
const INITIAL_REVISION: Revision = 1;

/// Counters published by the writer after each commit, so `current_revision()` and watchers
/// need no transaction.
#[derive(Debug, Default)]
struct Revs {
    current: AtomicI64,
    compacted: AtomicI64,
}

#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Set when etcd holds the truth and `inner` is its mirror (see `etcd`): writes go there.
    remote: Option<Arc<etcd::Remote>>,
}

struct Inner {
    db: Arc<Database>,
    requests: Option<mpsc::Sender<Request>>,
    /// Where the writer routes committed events; owned here and by the writer only, so the
    /// watches' queues close (and their streams end) once the store is gone.
    watchers: Arc<Mutex<watch::Registry>>,
    watch_buffer: usize,
    revs: Arc<Revs>,
    writer: Option<JoinHandle<()>>,
    /// The lease handed out last by `lease_for`, for reuse.
    leases: Mutex<lease::LeaseCache>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit; waiting for it means
        // the redb file is closed (and its lock released) once the last handle is gone, so the
        // same directory can be reopened right away.
        self.requests = None;
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

/// Turns any backend error into `StoreError::Backend` with a note of what was being done.
trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, StoreError>;
}

impl<T, E: Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, StoreError> {
        self.map_err(|e| StoreError::Backend(format!("{what}: {e}")))
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. The writer runs on its own OS thread, so
    /// fsyncs never block the async runtime; no runtime is required to call this.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions::default())
    }

    pub fn open_with(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).ctx(&format!("creating {}", dir.display()))?;
        let path = dir.join(DB_FILE);
        let db = redb::Builder::new()
            .set_cache_size(options.cache_size)
            .create(&path)
            .ctx(&format!("opening {}", path.display()))?;
        Store::start(db, options)
    }

    /// redb's in-memory backend: nothing survives the last handle. For tests.
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::in_memory_with(StoreOptions::default())
    }

    pub fn in_memory_with(options: StoreOptions) -> Result<Store, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(options.cache_size)
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .ctx("creating in-memory database")?;
        Store::start(db, options)
    }

    fn start(db: Database, options: StoreOptions) -> Result<Store, StoreError> {
        let (current, compacted) = init_tables(&db)?;
        let db = Arc::new(db);
        let revs = Arc::new(Revs {
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
        });
        // tokio rejects a zero or absurd queue capacity by panicking.
        let watch_buffer = options.watch_buffer.clamp(1, 1 << 20);
        let watchers = Arc::new(Mutex::new(watch::Registry::default()));
        let (requests, queue) = mpsc::channel();
        let writer =
            writer::Writer::new(db.clone(), queue, watchers.clone(), revs.clone(), options);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run())
            .ctx("starting the store writer thread")?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                requests: Some(requests),
                watchers,
                watch_buffer,
                revs,
                writer: Some(handle),
                leases: lease::new_cache(),
            }),
            remote: None,
        })
    }

    /// Whether etcd, not this process, holds the state.
    pub fn is_etcd(&self) -> bool {
        self.remote.is_some()
    }

    pub fn current_revision(&self) -> Revision {
        self.inner.revs.current.load(Ordering::Acquire)
    }

    pub fn compacted_revision(&self) -> Revision {
        self.inner.revs.compacted.load(Ordering::Acquire)
    }

    pub fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(KV).ctx("opening kv table")?;
        let found = table.get(key).ctx("reading key")?;
        found.map(|g| codec::decode_kv(key, g.value())).transpose()
    }

    /// All keys starting with `prefix`, in key order, as of the latest revision; returns the
    /// items and the revision they are consistent with (a watch from it misses nothing).
    pub fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let txn = self.begin_read()?;
        let (revision, _) = read_revs(&txn)?;
        let table = txn.open_table(KV).ctx("opening kv table")?;
        let mut items = Vec::new();
        for entry in table.range::<&str>(prefix..).ctx("listing")? {
            let (k, v) = entry.ctx("listing")?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            items.push(codec::decode_kv(key, v.value())?);
        }
        Ok((items, revision))
    }

    /// Like [`Store::list`] but as of `revision`, which must lie between the compacted revision
    /// and the current one (inclusive).
    ///
    /// Computed by undoing, newest first, the history events after `revision` on a copy of the
    /// current state: history keeps each event's previous value, so no per-revision copies of
    /// every key are needed.
    pub fn list_at(&self, prefix: &str, revision: Revision) -> Result<Vec<KeyValue>, StoreError> {
        let txn = self.begin_read()?;
        let (current, compacted) = read_revs(&txn)?;
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision < compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted,
            });
        }
        let table = txn.open_table(KV).ctx("opening kv table")?;
        let mut state = BTreeMap::new();
        for entry in table.range::<&str>(prefix..).ctx("listing")? {
            let (k, v) = entry.ctx("listing")?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            state.insert(key.to_owned(), codec::decode_kv(key, v.value())?);
        }
        let history = txn.open_table(HISTORY).ctx("opening history table")?;
        let newer = history.range((revision + 1)..).ctx("reading history")?;
        for entry in newer.rev() {
            let (r, raw) = entry.ctx("reading history")?;
            let (r, raw) = (r.value(), raw.value());
            if !codec::event_key(r, raw)?.starts_with(prefix) {
                continue;
            }
            match codec::decode_event(r, raw)? {
                Event::Put { kv, prev: None } => {
                    state.remove(&kv.key);
                }
                Event::Put { prev: Some(p), .. } | Event::Delete { prev: p, .. } => {
                    state.insert(p.key.clone(), p);
                }
            }
        }
        Ok(state.into_values().collect())
    }

    pub async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue, StoreError> {
        self.create_leased(key, value, None).await
    }

    /// `expected = Some(rev)`: fail with `Conflict` unless the key's current `mod_revision` is
    /// `rev`; `None` is unconditional. `NotFound` if the key is absent. A byte-identical value
    /// writes nothing and returns the current key-value (no revision bump), as the Kubernetes API
    /// server does for no-op updates.
    pub async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
    ) -> Result<KeyValue, StoreError> {
        self.update_leased(key, value, expected, None).await
    }

    /// Returns the deleted key-value (with its last `mod_revision`) and the delete's revision.
    pub async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        if let Some(remote) = &self.remote {
            return remote.delete(key, expected).await;
        }
        let op = Op::Delete {
            key: key.to_owned(),
            expected,
        };
        match self.submit(op).await? {
            Reply::Deleted(kv, revision) => Ok((kv, revision)),
            other => Err(unexpected(other)),
        }
    }

    /// Events for keys under `prefix` with revision > `after`, oldest first, then live events
    /// until the store is dropped. `after` may be ahead of the current revision: the watch then
    /// simply starts with the first event past it. A watcher that falls more than
    /// `watch_buffer` events of its prefix behind gets one `Err(Compacted)` and the stream ends.
    pub fn watch(&self, prefix: &str, after: Revision) -> Result<Watch, StoreError> {
        // Registering before the snapshot is taken closes the race with the writer: anything
        // committed after the snapshot is already queued for us, and the overlap is removed
        // by revision.
        let mut watch = Watch::register(
            &self.inner.watchers,
            prefix,
            self.inner.watch_buffer,
            self.inner.revs.clone(),
        );
        let txn = self.begin_read()?;
        let (current, compacted) = read_revs(&txn)?;
        if after < compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted,
            });
        }
        let mut replay = Vec::new();
        if after < current {
            let history = txn.open_table(HISTORY).ctx("opening history table")?;
            for entry in history.range((after + 1)..).ctx("reading history")? {
                let (r, raw) = entry.ctx("reading history")?;
                let (r, raw) = (r.value(), raw.value());
                if codec::event_key(r, raw)?.starts_with(prefix) {
                    replay.push(codec::decode_event(r, raw)?);
                }
            }
        }
        watch.start_after(replay, after.max(current));
        Ok(watch)
    }

    /// Forgets history at or below `revision`: `list_at` and `watch` from before it fail with
    /// `Compacted` afterwards. Live keys keep their latest value whatever their revision.
    /// Compacting to or below the already compacted revision is a no-op. On etcd this is the
    /// mirror's history; etcd's own is compacted in the background (see `etcd`).
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self.submit(Op::Compact { revision }).await? {
            Reply::Compacted => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// How many keys the store holds and the revision they are at, from one snapshot.
    fn key_count(&self) -> Result<(u64, Revision), StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.begin_read()?;
        let (revision, _) = read_revs(&txn)?;
        let table = txn.open_table(KV).ctx("opening kv table")?;
        let count = table.len().ctx("counting keys")?;
        Ok((count, revision))
    }

    fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.inner.db.begin_read().ctx("starting read transaction")
    }

    async fn submit(&self, op: Op) -> Result<Reply, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Backend("the store writer has stopped".into());
        let queue = self.inner.requests.as_ref().ok_or_else(stopped)?;
        queue.send(Request { op, reply }).map_err(|_| stopped())?;
        // If this future is dropped the request still completes: like etcd, a cancelled write
        // may or may not have been applied.
        answer.await.map_err(|_| stopped())?
    }
}

fn check_len(key: &str, value: &Bytes) -> Result<(), StoreError> {
    if key.len() > MAX_LEN || value.len() > MAX_LEN {
        return Err(StoreError::Backend(format!(
            "key of {} bytes or value of {} bytes exceeds the limit of {MAX_LEN}",
            key.len(),
            value.len()
        )));
    }
    Ok(())
}

fn unexpected(reply: Reply) -> StoreError {
    StoreError::Backend(format!("internal error: unexpected writer reply {reply:?}"))
}

/// (current, compacted) as of a snapshot; the atomics in `Revs` may already be newer.
fn read_revs(txn: &ReadTransaction) -> Result<(Revision, Revision), StoreError> {
    let meta = txn.open_table(META).ctx("opening meta table")?;
    let get = |name: &str| -> Result<Revision, StoreError> {
        meta.get(name)
            .ctx("reading meta table")?
            .map(|g| g.value())
            .ok_or_else(|| StoreError::Backend(format!("meta table lacks {name:?}")))
    };
    Ok((get(META_REVISION)?, get(META_COMPACTED)?))
}

/// Creates the tables of a new file (so readers never meet a missing table) and checks the
/// format of an existing one. Returns (current, compacted).
fn init_tables(db: &Database) -> Result<(Revision, Revision), StoreError> {
    let txn = db.begin_write().ctx("initialising database")?;
    let revs = {
        txn.open_table(KV).ctx("creating kv table")?;
        txn.open_table(HISTORY).ctx("creating history table")?;
        txn.open_table(lease::LEASES).ctx("creating lease table")?;
        txn.open_table(lease::LEASED)
            .ctx("creating leased-key table")?;
        let mut meta = txn.open_table(META).ctx("creating meta table")?;
        let format = meta
            .get(META_FORMAT)
            .ctx("reading format")?
            .map(|g| g.value());
        match format {
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Backend(format!(
                    "database format {other} is not supported (this binary reads {FORMAT_VERSION})"
                )));
            }
            None => {
                meta.insert(META_FORMAT, FORMAT_VERSION)
                    .ctx("writing format")?;
                meta.insert(META_REVISION, INITIAL_REVISION)
                    .ctx("writing revision")?;
                meta.insert(META_COMPACTED, 0)
                    .ctx("writing compacted revision")?;
            }
        }
        let current = meta
            .get(META_REVISION)
            .ctx("reading revision")?
            .map(|g| g.value());
        let compacted = meta
            .get(META_COMPACTED)
            .ctx("reading compacted")?
            .map(|g| g.value());
        match (current, compacted) {
            (Some(c), Some(k)) => (c, k),
            _ => return Err(StoreError::Backend("meta table is incomplete".into())),
        }
    };
    txn.commit().ctx("initialising database")?;
    Ok(revs)
}
