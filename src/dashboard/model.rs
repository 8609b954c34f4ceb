//! What the pages see: per kind, the summaries of the objects the watches delivered and whether
//! the kind can be read at all. Watch events go in; deltas for connected pages come out, and a
//! page that (re)connects gets the whole snapshot. Kept free of I/O so recorded watch streams can
//! drive it in tests.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// The kinds a page shows. Metrics are polled (metrics.k8s.io has no watch) but flow through
/// the same relist path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Nodes,
    Pods,
    Deployments,
    ReplicaSets,
    Services,
    EndpointSlices,
    Hpas,
    Events,
    NodeMetrics,
    PodMetrics,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Nodes,
        Kind::Pods,
        Kind::Deployments,
        Kind::ReplicaSets,
        Kind::Services,
        Kind::EndpointSlices,
        Kind::Hpas,
        Kind::Events,
        Kind::NodeMetrics,
        Kind::PodMetrics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Nodes => "nodes",
            Kind::Pods => "pods",
            Kind::Deployments => "deployments",
            Kind::ReplicaSets => "replicasets",
            Kind::Services => "services",
            Kind::EndpointSlices => "endpointslices",
            Kind::Hpas => "horizontalpodautoscalers",
            Kind::Events => "events",
            Kind::NodeMetrics => "nodemetrics",
            Kind::PodMetrics => "podmetrics",
        }
    }
}

/// Whether a kind can be read right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Not listed yet.
    Loading,
    Ok,
    /// The API server said 403: the user may not list this kind. Not retried quickly.
    Forbidden(String),
    /// No answer from the API server (connection refused, timeout, TLS): retried.
    Unreachable(String),
    /// Anything else the API server answered (404 for metrics without a metrics API, 5xx).
    Error(String),
}

impl Access {
    fn to_json(&self, limited: Option<&str>) -> Value {
        let (state, message) = match self {
            Access::Loading => ("loading", ""),
            Access::Ok => ("ok", ""),
            Access::Forbidden(m) => ("forbidden", m.as_str()),
            Access::Unreachable(m) => ("unreachable", m.as_str()),
            Access::Error(m) => ("error", m.as_str()),
        };
        json!({"state": state, "message": message, "limited": limited})
    }
}

/// One step of a watch, already summarised.
#[derive(Clone, Debug)]
pub enum Input {
    /// A (re)list starts: the objects that follow replace the kind's objects at `Synced`.
    Relist(Kind),
    /// An object of the current list (between `Relist` and `Synced`).
    Listed(Kind, String, Value),
    /// The list is complete.
    Synced(Kind),
    /// An object was added or changed.
    Applied(Kind, String, Value),
    Deleted(Kind, String),
    Failed(Kind, Access),
    /// Listing every namespace was forbidden (the reason given): the watch now covers only the
    /// namespace of the user's context.
    Narrowed(Kind, String),
}

/// Events kept for the ticker and the replay; the oldest go first.
pub const MAX_EVENTS: usize = 1000;

#[derive(Default)]
struct KindState {
    objects: BTreeMap<String, Value>,
    listing: Option<BTreeMap<String, Value>>,
    access: Option<Access>,
    limited: Option<String>,
}

pub struct Model {
    kinds: BTreeMap<Kind, KindState>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

fn upsert(kind: Kind, key: &str, obj: &Value) -> Value {
    json!({"t": "upsert", "kind": kind.name(), "key": key, "obj": obj})
}

fn delete(kind: Kind, key: &str) -> Value {
    json!({"t": "delete", "kind": kind.name(), "key": key})
}

impl Model {
    pub fn new() -> Self {
        Model {
            kinds: Kind::ALL
                .iter()
                .map(|k| (*k, KindState::default()))
                .collect(),
        }
    }

    /// Applies one input; returns the deltas pages must apply (none when nothing they show
    /// changed, e.g. a node heartbeat).
    pub fn apply(&mut self, input: Input) -> Vec<Value> {
        let kind = match &input {
            Input::Relist(k)
            | Input::Listed(k, ..)
            | Input::Synced(k)
            | Input::Applied(k, ..)
            | Input::Deleted(k, _)
            | Input::Failed(k, _)
            | Input::Narrowed(k, _) => *k,
        };
        let state = self.kinds.entry(kind).or_default();
        let mut out = Vec::new();
        // Anything but a failure means the kind is readable again.
        let access = match &input {
            Input::Failed(_, a) => a.clone(),
            Input::Relist(_) | Input::Listed(..) | Input::Narrowed(..) => {
                state.access.clone().unwrap_or(Access::Loading)
            }
            _ => Access::Ok,
        };
        let limited = match &input {
            Input::Narrowed(_, why) => Some(why.clone()),
            _ => state.limited.clone(),
        };
        if state.access.as_ref() != Some(&access) || state.limited != limited {
            let status = access.to_json(limited.as_deref());
            out.push(json!({"t": "status", "kind": kind.name(), "status": status}));
            state.access = Some(access);
            state.limited = limited;
        }
        match input {
            Input::Relist(_) => state.listing = Some(BTreeMap::new()),
            Input::Listed(_, key, obj) => {
                state.listing.get_or_insert_default().insert(key, obj);
            }
            Input::Synced(_) => {
                let fresh = state.listing.take().unwrap_or_default();
                for key in state.objects.keys() {
                    if !fresh.contains_key(key) {
                        out.push(delete(kind, key));
                    }
                }
                for (key, obj) in &fresh {
                    if state.objects.get(key) != Some(obj) {
                        out.push(upsert(kind, key, obj));
                    }
                }
                state.objects = fresh;
            }
            Input::Applied(_, key, obj) => {
                if state.objects.get(&key) != Some(&obj) {
                    out.push(upsert(kind, &key, &obj));
                    state.objects.insert(key, obj);
                }
            }
            Input::Deleted(_, key) => {
                if state.objects.remove(&key).is_some() {
                    out.push(delete(kind, &key));
                }
            }
            Input::Failed(..) | Input::Narrowed(..) => {}
        }
        if kind == Kind::Events && state.objects.len() > MAX_EVENTS {
            out.extend(trim_events(&mut state.objects));
        }
        out
    }

    /// Everything a page needs to draw from scratch.
    pub fn snapshot(&self) -> Value {
        let kinds: serde_json::Map<String, Value> = self
            .kinds
            .iter()
            .map(|(kind, state)| {
                let status = state
                    .access
                    .clone()
                    .unwrap_or(Access::Loading)
                    .to_json(state.limited.as_deref());
                let objects: serde_json::Map<String, Value> = state
                    .objects
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (
                    kind.name().to_string(),
                    json!({"status": status, "objects": objects}),
                )
            })
            .collect();
        json!({"t": "snapshot", "kinds": kinds})
    }

    #[cfg(test)]
    pub fn objects(&self, kind: Kind) -> usize {
        self.kinds.get(&kind).map_or(0, |s| s.objects.len())
    }
}

/// Drops the oldest events (by their time, then key) beyond `MAX_EVENTS`.
fn trim_events(objects: &mut BTreeMap<String, Value>) -> Vec<Value> {
    let mut by_time: Vec<(String, String)> = objects
        .iter()
        .map(|(k, v)| (v["time"].as_str().unwrap_or("").to_string(), k.clone()))
        .collect();
    by_time.sort();
    let excess = objects.len().saturating_sub(MAX_EVENTS);
    by_time
        .into_iter()
        .take(excess)
        .map(|(_, key)| {
            objects.remove(&key);
            delete(Kind::Events, &key)
        })
        .collect()
}
