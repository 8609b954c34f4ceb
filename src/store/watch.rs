//! A watch: replayed history, then the live events the writer routes to it.
//!
//! The writer hands each committed event only to the watches whose prefix the key starts with
//! (see [`Registry`]): with a thousand watches open on other prefixes a write wakes none of them,
//! where a broadcast to every watcher would wake all thousand for each write.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll, ready};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::{Event, Revision, Revs, StoreError};

/// An event as a watcher receives it. A live event is one allocation shared by every watch it is
/// routed to, so a value derived from it (the API server's decoded object and encoded line) can
/// be computed once for all of them with [`SharedEvent::memo`].
#[derive(Clone)]
pub struct SharedEvent(Arc<Shared>);

struct Shared {
    event: Event,
    memo: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl SharedEvent {
    pub fn new(event: Event) -> SharedEvent {
        SharedEvent(Arc::new(Shared {
            event,
            memo: OnceLock::new(),
        }))
    }

    pub fn event(&self) -> &Event {
        &self.0.event
    }

    /// The value `init` derives from the event, computed by the first caller and shared with the
    /// rest. One type per event: `None` if an earlier caller stored a value of another type.
    pub fn memo<T: Any + Send + Sync>(&self, init: impl FnOnce(&Event) -> T) -> Option<&T> {
        self.0
            .memo
            .get_or_init(|| Box::new(init(&self.0.event)))
            .downcast_ref()
    }
}

/// The live watches, grouped by prefix so routing an event costs one comparison per distinct
/// prefix rather than one per watch.
#[derive(Default)]
pub(super) struct Registry {
    next_id: u64,
    by_prefix: HashMap<String, Vec<Slot>>,
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<SharedEvent>,
    /// Set (before the sender is dropped) when the watch's queue overflowed.
    lagged: Arc<AtomicBool>,
}

impl Registry {
    fn add(
        &mut self,
        prefix: &str,
        capacity: usize,
    ) -> (u64, mpsc::Receiver<SharedEvent>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(capacity);
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id;
        self.next_id += 1;
        self.by_prefix
            .entry(prefix.to_owned())
            .or_default()
            .push(Slot {
                id,
                tx,
                lagged: lagged.clone(),
            });
        (id, rx, lagged)
    }

    /// How many watches are registered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_prefix.values().map(Vec::len).sum()
    }

    fn remove(&mut self, prefix: &str, id: u64) {
        if let Some(slots) = self.by_prefix.get_mut(prefix) {
            slots.retain(|s| s.id != id);
            if slots.is_empty() {
                self.by_prefix.remove(prefix);
            }
        }
    }

    /// Cuts every watch off: they end with `Compacted`, so their clients re-list.
    pub(super) fn cut_all(&mut self) {
        for slot in self.by_prefix.drain().flat_map(|(_, slots)| slots) {
            slot.lagged.store(true, Ordering::Release);
        }
    }

    /// Queues each event for every watch whose prefix matches. Never blocks the writer: a watch
    /// whose queue is full has fallen `watch_buffer` events behind and is cut off.
    pub(super) fn route(&mut self, events: &[SharedEvent]) {
        self.by_prefix.retain(|prefix, slots| {
            for event in events {
                if !event.event().key().starts_with(prefix.as_str()) {
                    continue;
                }
                slots.retain(|slot| match slot.tx.try_send(event.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        slot.lagged.store(true, Ordering::Release);
                        false
                    }
                    // The watch was dropped without deregistering (it could not lock us).
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
            }
            !slots.is_empty()
        });
    }
}

/// Stream of `Result<Event, StoreError>`; see [`super::Store::watch`].
pub struct Watch {
    prefix: String,
    replay: VecDeque<Event>,
    /// Highest revision already covered, delivered or filtered out. Live events at or below it
    /// were part of the replay snapshot and are skipped, which is what makes the hand-over from
    /// replay to live free of duplicates.
    seen: Revision,
    live: mpsc::Receiver<SharedEvent>,
    lagged: Arc<AtomicBool>,
    /// To deregister on drop; weak so that dropping the store still ends the watch.
    registry: Weak<Mutex<Registry>>,
    id: u64,
    revs: Arc<Revs>,
    done: bool,
}

impl Watch {
    /// Registers a watch of `prefix` whose live queue holds at most `capacity` events. Call
    /// before reading the replay snapshot, so no commit falls between the two.
    pub(super) fn register(
        registry: &Arc<Mutex<Registry>>,
        prefix: &str,
        capacity: usize,
        revs: Arc<Revs>,
    ) -> Watch {
        let (id, live, lagged) = registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .add(prefix, capacity);
        Watch {
            prefix: prefix.to_owned(),
            replay: VecDeque::new(),
            seen: 0,
            live,
            lagged,
            registry: Arc::downgrade(registry),
            id,
            revs,
            done: false,
        }
    }

    /// Sets what was read from history and the revision that snapshot covers.
    pub(super) fn start_after(&mut self, replay: Vec<Event>, seen: Revision) {
        self.replay = replay.into();
        self.seen = seen;
    }

    pub async fn next_event(&mut self) -> Option<Result<Event, StoreError>> {
        self.next().await
    }

    /// Like [`Watch::next_event`], but a live event comes as the allocation every other watch of
    /// it shares.
    pub async fn next_shared(&mut self) -> Option<Result<SharedEvent, StoreError>> {
        std::future::poll_fn(|cx| self.poll_shared(cx)).await
    }

    fn cut_off(&mut self) -> Poll<Option<Result<SharedEvent, StoreError>>> {
        // Events this watcher has not seen were dropped, so it can no longer be continued
        // gaplessly; the client must re-list, exactly as after a compaction.
        self.done = true;
        Poll::Ready(Some(Err(StoreError::Compacted {
            requested: self.seen,
            compacted: self
                .revs
                .current
                .load(Ordering::Acquire)
                .max(self.seen.saturating_add(1)),
        })))
    }

    fn poll_shared(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<SharedEvent, StoreError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(event) = self.replay.pop_front() {
            return Poll::Ready(Some(Ok(SharedEvent::new(event))));
        }
        loop {
            if self.lagged.load(Ordering::Acquire) {
                return self.cut_off();
            }
            match ready!(self.live.poll_recv(cx)) {
                None if self.lagged.load(Ordering::Acquire) => return self.cut_off(),
                // The store is gone.
                None => {
                    self.done = true;
                    return Poll::Ready(None);
                }
                Some(event) => {
                    let revision = event.event().revision();
                    if revision <= self.seen {
                        continue;
                    }
                    self.seen = revision;
                    return Poll::Ready(Some(Ok(event)));
                }
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .remove(&self.prefix, self.id);
        }
    }
}

impl Stream for Watch {
    type Item = Result<Event, StoreError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_shared(cx)
            .map(|item| item.map(|r| r.map(|shared| shared.event().clone())))
    }
}
