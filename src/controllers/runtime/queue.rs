//! A work queue with client-go's guarantees: a key waiting in the queue is there once however
//! often it is added; a key being processed is never handed to a second worker at the same time
//! (if it is added meanwhile it is processed again afterwards); failures are retried with
//! per-key exponential backoff; keys can be added after a delay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::Notify;
use tracing::{debug, warn};

struct State<K> {
    queue: VecDeque<K>,
    dirty: HashSet<K>,
    processing: HashSet<K>,
    failures: HashMap<K, u32>,
}

pub struct WorkQueue<K> {
    state: Mutex<State<K>>,
    notify: Notify,
    base_delay: Duration,
    max_delay: Duration,
}

impl<K: Clone + Eq + Hash + Send + Sync + 'static> WorkQueue<K> {
    pub fn new() -> Arc<Self> {
        Arc::new(WorkQueue {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                dirty: HashSet::new(),
                processing: HashSet::new(),
                failures: HashMap::new(),
            }),
            notify: Notify::new(),
            // client-go's controller rate limiter starts at 5 ms; we cap lower than its 1000 s
            // so a controller that failed while the API server restarted recovers quickly.
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(30),
        })
    }

    pub fn add(&self, key: K) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if !s.dirty.insert(key.clone()) {
            return;
        }
        if s.processing.contains(&key) {
            // Re-queued by done() once the current worker finishes.
            return;
        }
        s.queue.push_back(key);
        drop(s);
        self.notify.notify_one();
    }

    pub fn add_after(self: &Arc<Self>, key: K, delay: Duration) {
        if delay.is_zero() {
            self.add(key);
            return;
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Adds the key again after its backoff, which doubles with every consecutive failure.
    pub fn add_rate_limited(self: &Arc<Self>, key: K) {
        let failures = match self.state.lock() {
            Ok(mut s) => {
                let n = s.failures.entry(key.clone()).or_insert(0);
                *n += 1;
                *n
            }
            Err(_) => return,
        };
        let delay = self
            .base_delay
            .saturating_mul(1u32 << failures.min(20).saturating_sub(1))
            .min(self.max_delay);
        self.add_after(key, delay);
    }

    /// The key was handled successfully: its backoff starts over.
    pub fn forget(&self, key: &K) {
        if let Ok(mut s) = self.state.lock() {
            s.failures.remove(key);
        }
    }

    #[cfg(test)]
    pub fn failures(&self, key: &K) -> u32 {
        self.state
            .lock()
            .ok()
            .and_then(|s| s.failures.get(key).copied())
            .unwrap_or(0)
    }

    /// Waits for the next key; the caller must call done() with it afterwards.
    pub async fn get(&self) -> K {
        loop {
            let notified = self.notify.notified();
            if let Ok(mut s) = self.state.lock()
                && let Some(key) = s.queue.pop_front()
            {
                s.dirty.remove(&key);
                s.processing.insert(key.clone());
                let more = !s.queue.is_empty();
                drop(s);
                if more {
                    // Another worker may be waiting; notify_one stores only one permit.
                    self.notify.notify_one();
                }
                return key;
            }
            notified.await;
        }
    }

    pub fn done(&self, key: &K) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.processing.remove(key);
        if s.dirty.contains(key) {
            s.queue.push_back(key.clone());
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Runs `workers` loops that take keys off the queue and hand them to `sync`, as every
    /// controller's workers do: success forgets the key's failures, an error retries it with
    /// back-off. A 409 Conflict is only a debug line: the next sync sees the newer object.
    pub async fn run_workers<F, Fut>(
        self: &Arc<Self>,
        workers: usize,
        controller: &'static str,
        sync: F,
    ) where
        K: std::fmt::Display,
        F: Fn(K) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let sync = &sync;
        join_all((0..workers).map(|_| async move {
            loop {
                let key = self.get().await;
                match sync(key.clone()).await {
                    Ok(()) => self.forget(&key),
                    Err(e) => {
                        let conflict = e
                            .downcast_ref::<kube::Error>()
                            .is_some_and(super::is_conflict);
                        if conflict {
                            debug!(controller, %key, "conflict; syncing again");
                        } else {
                            warn!(controller, %key, error = format!("{e:#}"), "sync failed; retrying");
                        }
                        self.add_rate_limited(key.clone());
                    }
                }
                self.done(&key);
            }
        }))
        .await;
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.queue.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_never_processed_twice_at_once() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let first = q.get().await;
        assert_eq!(first, "a");
        // Added while being processed: not handed out again until done.
        q.add("a");
        assert_eq!(q.get().await, "b");
        assert_eq!(q.len(), 0);
        q.done(&"a");
        assert_eq!(q.get().await, "a");
        q.done(&"a");
        q.done(&"b");
        assert_eq!(q.len(), 0);
    }

    #[tokio::test]
    async fn failures_back_off_and_forget_resets() {
        let q = WorkQueue::new();
        q.add_rate_limited("k");
        q.add_rate_limited("k");
        assert_eq!(q.failures(&"k"), 2);
        let k = tokio::time::timeout(Duration::from_secs(1), q.get())
            .await
            .expect("the key comes back after its backoff");
        q.forget(&k);
        assert_eq!(q.failures(&"k"), 0);
    }
}
