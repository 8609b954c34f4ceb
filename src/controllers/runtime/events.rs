//! Events as client-go's recorder writes them (core/v1, `source.component` = the controller), with
//! its correlator's deduplication: the same event again (same object, type, reason and message)
//! bumps `count` and `lastTimestamp` of the existing Event instead of creating another one, which
//! is what `kubectl describe` shows as "(x3 over 2m)".
//!
//! Recording never blocks a controller: events go through a channel to a task that writes them
//! concurrently, keeping writes for one Event in order.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::debug;

pub const NORMAL: &str = "Normal";
pub const WARNING: &str = "Warning";

/// How many distinct events the correlator remembers (client-go keeps an LRU of 4096).
const REMEMBERED: usize = 4096;
const CONCURRENT_WRITES: usize = 32;

struct Record {
    component: &'static str,
    /// The node an agent's events come from (`source.host`, `reportingInstance`).
    host: Option<Arc<str>>,
    regarding: ObjectReference,
    type_: &'static str,
    reason: String,
    action: &'static str,
    message: String,
}

#[derive(Clone)]
pub struct Recorder {
    component: &'static str,
    host: Option<Arc<str>>,
    tx: mpsc::UnboundedSender<Record>,
}

/// The object an event is about, in the form Events carry.
pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).to_string()),
        kind: Some(K::kind(&()).to_string()),
        name: obj.meta().name.clone(),
        namespace: obj.meta().namespace.clone(),
        uid: obj.meta().uid.clone(),
        resource_version: obj.meta().resource_version.clone(),
        field_path: None,
    }
}

impl Recorder {
    pub fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: &'static str,
        reason: &str,
        action: &'static str,
        message: String,
    ) {
        self.event_ref(reference(obj), type_, reason, action, message);
    }

    pub fn event_ref(
        &self,
        regarding: ObjectReference,
        type_: &'static str,
        reason: &str,
        action: &'static str,
        message: String,
    ) {
        let _ = self.tx.send(Record {
            component: self.component,
            host: self.host.clone(),
            regarding,
            type_,
            reason: reason.to_string(),
            action,
            message,
        });
    }
}

/// One writer task for the process; each controller gets a Recorder naming itself.
pub struct EventSink {
    tx: mpsc::UnboundedSender<Record>,
    host: Option<Arc<str>>,
}

impl EventSink {
    pub fn start(client: kube::Client) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_events(client, rx));
        EventSink { tx, host: None }
    }

    /// A sink for a node agent: its events name the node as their source host.
    pub fn start_on_host(client: kube::Client, host: String) -> Self {
        let mut sink = Self::start(client);
        sink.host = Some(host.into());
        sink
    }

    pub fn recorder(&self, component: &'static str) -> Recorder {
        Recorder {
            component,
            host: self.host.clone(),
            tx: self.tx.clone(),
        }
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    component: &'static str,
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    type_: &'static str,
    reason: String,
    message: String,
}

struct Seen {
    name: String,
    namespace: String,
    count: i32,
    last_use: u64,
    /// The previous write for this Event: the next one waits for it (create before patch).
    write: Option<JoinHandle<()>>,
}

async fn write_events(client: kube::Client, mut rx: mpsc::UnboundedReceiver<Record>) {
    let mut seen: HashMap<Key, Seen> = HashMap::new();
    let mut tick = 0u64;
    let limit = Arc::new(Semaphore::new(CONCURRENT_WRITES));
    while let Some(record) = rx.recv().await {
        tick += 1;
        let r = &record.regarding;
        let key = Key {
            component: record.component,
            kind: r.kind.clone().unwrap_or_default(),
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone().unwrap_or_default(),
            uid: r.uid.clone().unwrap_or_default(),
            type_: record.type_,
            reason: record.reason.clone(),
            message: record.message.clone(),
        };
        let now = jiff::Timestamp::now();
        let entry = seen.entry(key).or_insert_with(|| Seen {
            // client-go names events <object>.<unix nanoseconds in hex>.
            name: format!(
                "{}.{:x}",
                r.name.as_deref().unwrap_or("unknown"),
                now.as_nanosecond()
            ),
            // Events about cluster-scoped objects (nodes) live in the default namespace.
            namespace: r
                .namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "default".into()),
            count: 0,
            last_use: tick,
            write: None,
        });
        entry.count += 1;
        entry.last_use = tick;
        let previous = entry.write.take();
        let api: Api<Event> = Api::namespaced(client.clone(), &entry.namespace);
        let (name, namespace, count) = (entry.name.clone(), entry.namespace.clone(), entry.count);
        let limit = limit.clone();
        entry.write = Some(tokio::spawn(async move {
            if let Some(p) = previous {
                let _ = p.await;
            }
            let Ok(_permit) = limit.acquire().await else {
                return;
            };
            write_one(&api, &name, &namespace, count, record, now).await;
        }));
        if seen.len() > REMEMBERED {
            // Forget the least recently used half rather than one at a time.
            let mut ticks: Vec<u64> = seen.values().map(|s| s.last_use).collect();
            ticks.sort_unstable();
            let cutoff = ticks[ticks.len() / 2];
            seen.retain(|_, s| s.last_use > cutoff);
        }
    }
}

async fn write_one(
    api: &Api<Event>,
    name: &str,
    namespace: &str,
    count: i32,
    record: Record,
    now: jiff::Timestamp,
) {
    let stamp = Time(now);
    if count > 1 {
        let patch = json!({"count": count, "lastTimestamp": stamp, "message": record.message});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return,
            // Deleted (or never written): write it afresh below.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                debug!(event = name, error = %e, "cannot update event");
                return;
            }
        }
    }
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        },
        involved_object: record.regarding.clone(),
        reason: Some(record.reason.clone()),
        message: Some(record.message.clone()),
        type_: Some(record.type_.to_string()),
        source: Some(EventSource {
            component: Some(record.component.to_string()),
            host: record.host.as_deref().map(str::to_string),
        }),
        first_timestamp: Some(stamp.clone()),
        last_timestamp: Some(stamp),
        count: Some(count),
        action: Some(record.action.to_string()),
        reporting_component: Some(record.component.to_string()),
        reporting_instance: Some(
            record
                .host
                .as_deref()
                .unwrap_or(record.component)
                .to_string(),
        ),
        event_time: None::<MicroTime>,
        ..Default::default()
    };
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        debug!(event = name, error = %e, "cannot write event");
    }
}
