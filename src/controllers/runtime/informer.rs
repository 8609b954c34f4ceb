//! Shared informers, as client-go has them: one list+watch per kind for the whole process, a
//! cache every controller reads from, and change notifications (added, updated with the old
//! object, deleted) handed to each controller's handler. Controllers and the scheduler share one
//! informer per kind, so 3,000 pods are watched and held once, not once per controller.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, warn};

const WATCH_SECONDS: u32 = 25;

/// namespace (empty for cluster-scoped objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjKey {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of<K: Resource>(obj: &K) -> Self {
        ObjKey {
            namespace: obj.meta().namespace.clone().unwrap_or_default(),
            name: obj.meta().name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}", self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What a handler is told. `Updated` carries the object as it was before, as client-go's
/// UpdateFunc does, so handlers can tell what changed (labels, owner, readiness).
pub enum Change<K> {
    Added(Arc<K>),
    Updated { old: Arc<K>, new: Arc<K> },
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    /// The object as it now is (for a deletion, as it was last seen).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Added(o) | Change::Updated { new: o, .. } | Change::Deleted(o) => o,
        }
    }
}

type Handler<K> = Box<dyn Fn(&Change<K>) + Send + Sync>;

pub struct Informer<K> {
    api: Api<K>,
    /// Only objects matching this field selector (e.g. one node's pods), if set.
    fields: Option<String>,
    cache: RwLock<BTreeMap<ObjKey, Arc<K>>>,
    handlers: RwLock<Vec<Handler<K>>>,
    synced_tx: watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    pub fn new(client: kube::Client) -> Arc<Self> {
        Self::with_fields(client, None)
    }

    /// An informer of the objects that match a field selector (`spec.nodeName=<node>`).
    pub fn with_fields(client: kube::Client, fields: Option<String>) -> Arc<Self> {
        Arc::new(Informer {
            api: Api::all(client),
            fields,
            cache: RwLock::new(BTreeMap::new()),
            handlers: RwLock::new(Vec::new()),
            synced_tx: watch::channel(false).0,
        })
    }

    /// Registers a handler; handlers run on the informer's task and must only be quick
    /// bookkeeping (enqueueing keys), never API calls.
    pub fn add_handler(&self, handler: impl Fn(&Change<K>) + Send + Sync + 'static) {
        if let Ok(mut handlers) = self.handlers.write() {
            handlers.push(Box::new(handler));
        }
    }

    pub fn get(&self, key: &ObjKey) -> Option<Arc<K>> {
        self.cache.read().ok()?.get(key).cloned()
    }

    /// Every cached object in one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let Ok(cache) = self.cache.read() else {
            return Vec::new();
        };
        let start = ObjKey::new(namespace, "");
        cache
            .range(start..)
            .take_while(|(k, _)| k.namespace == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn list_all(&self) -> Vec<Arc<K>> {
        self.cache
            .read()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until the first full list has been loaded into the cache.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced_tx.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn notify(&self, change: Change<K>) {
        if let Ok(handlers) = self.handlers.read() {
            for h in handlers.iter() {
                h(&change);
            }
        }
    }

    /// Lists and watches forever, re-listing (with backoff) whenever the watch breaks.
    pub async fn run(self: Arc<Self>) {
        let kind = K::kind(&K::DynamicType::default()).to_string();
        // The server ends each watch before the client's 30 s read timeout could fire on a quiet
        // kind (bookmarks come every 60 s); the watcher then resumes from its last revision.
        let mut config = watcher::Config::default().timeout(WATCH_SECONDS);
        if let Some(fields) = &self.fields {
            config = config.fields(fields);
        }
        let mut stream = watcher::watcher(self.api.clone(), config)
            .default_backoff()
            .boxed();
        let mut relist: Option<BTreeMap<ObjKey, Arc<K>>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Init) => relist = Some(BTreeMap::new()),
                Ok(Event::InitApply(obj)) => {
                    if let Some(buf) = relist.as_mut() {
                        buf.insert(ObjKey::of(&obj), Arc::new(obj));
                    }
                }
                Ok(Event::InitDone) => {
                    let fresh = relist.take().unwrap_or_default();
                    self.replace_all(fresh);
                    self.synced_tx.send_replace(true);
                    debug!(kind, "informer synced");
                }
                Ok(Event::Apply(obj)) => self.apply(obj),
                Ok(Event::Delete(obj)) => {
                    let key = ObjKey::of(&obj);
                    if let Ok(mut c) = self.cache.write() {
                        c.remove(&key);
                    }
                    // The watch's copy is the object's last state (deletionTimestamp and all).
                    self.notify(Change::Deleted(Arc::new(obj)));
                }
                Err(e) => warn!(kind, error = %e, "watch failed; it will be retried"),
            }
        }
    }

    fn apply(&self, obj: K) {
        let key = ObjKey::of(&obj);
        let new = Arc::new(obj);
        let old = self
            .cache
            .write()
            .ok()
            .and_then(|mut c| c.insert(key, new.clone()));
        match old {
            None => self.notify(Change::Added(new)),
            Some(old) if old.resource_version() == new.resource_version() => {}
            Some(old) => self.notify(Change::Updated { old, new }),
        }
    }

    /// After a (re-)list: what changed while we were not watching becomes ordinary changes.
    fn replace_all(&self, fresh: BTreeMap<ObjKey, Arc<K>>) {
        let old = match self.cache.write() {
            Ok(mut c) => std::mem::replace(&mut *c, fresh.clone()),
            Err(_) => return,
        };
        for (key, new) in &fresh {
            match old.get(key) {
                None => self.notify(Change::Added(new.clone())),
                Some(o) if o.resource_version() != new.resource_version() => {
                    self.notify(Change::Updated {
                        old: o.clone(),
                        new: new.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        for (key, o) in old {
            if !fresh.contains_key(&key) {
                self.notify(Change::Deleted(o));
            }
        }
    }
}
