//! Watch streams: chunked JSON events from a revision, with synthetic ADDED events for a fresh
//! watch, bookmarks, Table-encoded events and 410 errors for revisions too old to replay.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::handlers::{Query, Selectors, select};
use super::object;
use super::request::ResourceRequest;
use super::status::ApiError;
use super::table::{self, IncludeObject};
use crate::store::{Event, SharedEvent, Store, StoreError};

const BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

pub struct WatchParams {
    pub table: bool,
    pub include: IncludeObject,
    pub selectors: Selectors,
    pub start: Option<i64>,
    pub timeout: Option<Duration>,
    pub bookmarks: bool,
    pub send_initial_events: bool,
}

impl WatchParams {
    pub fn from_query(
        query: &Query,
        target: &ResourceRequest,
        table: bool,
        include: IncludeObject,
    ) -> Result<Self, ApiError> {
        let start =
            match query.get("resourceVersion") {
                None | Some("0") => None,
                Some(rv) => Some(rv.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv:?}"))
                })?),
            };
        let mut selectors = Selectors::from_query(query, target.def)?;
        // A watch on a named URL (…/nodes/n1?watch=1) is a watch of that one object.
        if let Some(name) = &target.name {
            let extra = format!("metadata.name={name}");
            selectors.fields = super::selector::FieldSelector::parse(&extra, target.def)?;
        }
        Ok(WatchParams {
            table,
            include,
            selectors,
            start,
            timeout: query
                .get("timeoutSeconds")
                .and_then(|t| t.parse::<u64>().ok())
                .map(Duration::from_secs),
            bookmarks: query.flag("allowWatchBookmarks"),
            send_initial_events: query.flag("sendInitialEvents"),
        })
    }
}

struct Encoder {
    /// The watched kind: a custom resource's objects get the defaults of their schema.
    def: &'static super::resources::ResourceDef,
    table: bool,
    include: IncludeObject,
    printer: table::Printer,
    sent_columns: bool,
}

/// What every watcher of one live event derives from it, computed by the first and shared by
/// the rest (see `SharedEvent::memo`): with a thousand watchers, decoding and encoding each event
/// per watcher cost more than everything else together.
struct Decoded {
    /// A put's new object, as served.
    new: Option<Value>,
    /// A put's previous object (for selectors) or a deleted object, as served.
    old: Option<Value>,
    /// The plain JSON line per event type ("ADDED", "MODIFIED", "DELETED"), encoded on demand.
    lines: [OnceLock<Bytes>; 3],
}

impl Decoded {
    fn new(event: &Event, def: &super::resources::ResourceDef) -> Decoded {
        let decode = |kv: &crate::store::KeyValue| object::from_stored_as(def, kv).ok();
        let (new, old) = match event {
            Event::Put { kv, prev } => (decode(kv), prev.as_ref().and_then(decode)),
            Event::Delete { prev, revision } => {
                let old = decode(prev).map(|mut old| {
                    object::set_resource_version(&mut old, *revision);
                    old
                });
                (None, old)
            }
        };
        Decoded {
            new,
            old,
            lines: Default::default(),
        }
    }

    fn line(&self, kind: &'static str, obj: &Value) -> Bytes {
        let slot = match kind {
            "ADDED" => &self.lines[0],
            "MODIFIED" => &self.lines[1],
            _ => &self.lines[2],
        };
        slot.get_or_init(|| encode_line(kind, obj.clone())).clone()
    }
}

fn encode_line(kind: &str, obj: Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

impl Encoder {
    /// A store event as this watcher sees it, or `None` when its selectors filter it out.
    fn store_event(&mut self, shared: &SharedEvent, selectors: &Selectors) -> Option<Bytes> {
        let fallback;
        let def = self.def;
        let decoded = match shared.memo(|event| Decoded::new(event, def)) {
            Some(d) => d,
            None => {
                fallback = Decoded::new(shared.event(), def);
                &fallback
            }
        };
        let (kind, obj) = translate(shared.event(), decoded, selectors)?;
        if self.table {
            return Some(self.event(kind, obj.clone()));
        }
        Some(decoded.line(kind, obj))
    }

    fn event(&mut self, kind: &str, obj: Value) -> Bytes {
        let obj = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = object::meta_str(&obj, "resourceVersion")
                .unwrap_or_default()
                .to_string();
            let t = table::table(
                self.printer,
                &[obj],
                self.include,
                json!({"resourceVersion": rv}),
                !self.sent_columns,
            );
            self.sent_columns = true;
            t
        } else {
            obj
        };
        encode_line(kind, obj)
    }
}

fn bookmark(def: &super::resources::ResourceDef, revision: i64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": meta})
}

/// Starts the watch and returns the channel its encoded events arrive on; the task ends when the
/// client goes away, the timeout passes, or the store reports the start revision compacted.
pub fn start(
    store: Store,
    target: &ResourceRequest,
    params: WatchParams,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let def = target.def;
    let prefix = def.list_prefix(target.namespace.as_deref());
    let mut enc = Encoder {
        def,
        table: params.table,
        include: params.include,
        printer: def.printer,
        sent_columns: false,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);

    let mut initial = Vec::new();
    let after = match params.start {
        Some(rv) => rv,
        None => {
            let (items, revision) = select(&store, target, &params.selectors)?;
            initial = items;
            revision
        }
    };
    let send_initial_end = params.send_initial_events && params.start.is_none() && params.bookmarks;
    let mut stream = match store.watch(&prefix, after) {
        Ok(s) => Some(s),
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            let err = ApiError::gone(format!(
                "too old resource version: {requested} ({compacted})"
            ));
            let line = enc.event("ERROR", err.to_status());
            let _ = tx.try_send(line);
            None
        }
        Err(e) => return Err(ApiError::from_store(e, def.group, def.plural, "")),
    };

    tokio::spawn(async move {
        for obj in initial {
            if tx.send(enc.event("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if send_initial_end
            && tx
                .send(enc.event("BOOKMARK", bookmark(def, after, true)))
                .await
                .is_err()
        {
            return;
        }
        let Some(stream) = stream.as_mut() else {
            return;
        };
        let deadline = params.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut last_revision = after;
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.tick().await;
        // One timer for the whole watch: a new one per event costs a timer-wheel insert and
        // removal for every event of every watcher.
        let expiry = tokio::time::sleep_until(
            deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365)),
        );
        tokio::pin!(expiry);
        loop {
            let next = tokio::select! {
                ev = stream.next_shared() => ev,
                _ = &mut expiry => return,
                _ = ticker.tick() => {
                    if params.bookmarks && tx.send(enc.event("BOOKMARK", bookmark(def, last_revision, false))).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tx.closed() => return,
            };
            let event = match next {
                None => return,
                Some(Ok(ev)) => ev,
                Some(Err(StoreError::Compacted {
                    requested,
                    compacted,
                })) => {
                    let err = ApiError::gone(format!(
                        "too old resource version: {requested} ({compacted})"
                    ));
                    let _ = tx.send(enc.event("ERROR", err.to_status())).await;
                    return;
                }
                Some(Err(e)) => {
                    let _ = tx
                        .send(enc.event("ERROR", ApiError::internal(e.to_string()).to_status()))
                        .await;
                    return;
                }
            };
            last_revision = event.event().revision();
            let Some(line) = enc.store_event(&event, &params.selectors) else {
                continue;
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

/// Store events become watch events as seen through the selectors: an object that starts or stops
/// matching is ADDED or DELETED for this watcher, as in Kubernetes.
fn translate<'a>(
    event: &Event,
    decoded: &'a Decoded,
    selectors: &Selectors,
) -> Option<(&'static str, &'a Value)> {
    match event {
        Event::Put { prev, .. } => {
            let new = decoded.new.as_ref()?;
            // Most watches select everything; matching would still collect each object's labels.
            let all = selectors.is_empty();
            let new_match = all || selectors.matches(new);
            let old_match = decoded
                .old
                .as_ref()
                .is_some_and(|o| all || selectors.matches(o));
            match (prev.is_some(), old_match, new_match) {
                (false, _, true) => Some(("ADDED", new)),
                (true, true, true) => Some(("MODIFIED", new)),
                (true, false, true) => Some(("ADDED", new)),
                (true, true, false) => Some(("DELETED", new)),
                _ => None,
            }
        }
        Event::Delete { .. } => {
            let old = decoded.old.as_ref()?;
            if !selectors.is_empty() && !selectors.matches(old) {
                return None;
            }
            Some(("DELETED", old))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyValue;

    fn kv(labels: Value, revision: i64) -> KeyValue {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "ns", "labels": labels}});
        KeyValue {
            key: "/registry/configmaps/ns/a".into(),
            value: Bytes::from(serde_json::to_vec(&obj).expect("encodes")),
            create_revision: 2,
            mod_revision: revision,
        }
    }

    fn selectors(labels: &str) -> Selectors {
        let def = super::super::resources::find("", "v1", "configmaps").expect("configmaps");
        let query = Query::parse(Some(&format!("labelSelector={labels}")));
        Selectors::from_query(&query, def).expect("selectors")
    }

    /// What each watcher is sent, through the shared decoding, for every watcher of one event.
    fn lines(event: Event, watchers: &[&Selectors]) -> Vec<Option<String>> {
        let shared = SharedEvent::new(event);
        watchers
            .iter()
            .map(|sel| {
                let mut enc = Encoder {
                    def: super::super::resources::find("", "v1", "configmaps").expect("served"),
                    table: false,
                    include: IncludeObject::Metadata,
                    printer: table::Printer::Default,
                    sent_columns: false,
                };
                enc.store_event(&shared, sel)
                    .map(|b| String::from_utf8(b.to_vec()).expect("UTF-8"))
            })
            .collect()
    }

    #[test]
    fn watchers_see_events_through_their_selectors_from_one_decoding() {
        let all = selectors("");
        let blue = selectors("color=blue");
        let created = Event::Put {
            kv: kv(json!({"color": "blue"}), 2),
            prev: None,
        };
        let out = lines(created, &[&all, &blue]);
        let added = r#"{"object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"labels":{"color":"blue"},"name":"a","namespace":"ns","resourceVersion":"2"}},"type":"ADDED"}
"#;
        assert_eq!(out, [Some(added.to_string()), Some(added.to_string())]);

        // Stops matching: MODIFIED for the watcher of everything, DELETED (with the new object)
        // for the selective one.
        let recoloured = Event::Put {
            kv: kv(json!({"color": "red"}), 3),
            prev: Some(kv(json!({"color": "blue"}), 2)),
        };
        let out = lines(recoloured, &[&all, &blue, &blue]);
        let kinds: Vec<&str> = out
            .iter()
            .map(|l| {
                let l = l.as_deref().expect("sent");
                assert!(l.contains(r#""color":"red""#) && l.contains(r#""resourceVersion":"3""#));
                if l.contains(r#""type":"MODIFIED""#) {
                    "MODIFIED"
                } else {
                    "DELETED"
                }
            })
            .collect();
        assert_eq!(kinds, ["MODIFIED", "DELETED", "DELETED"]);

        // A delete carries the deleted object at the delete's revision; a non-matching one is
        // not sent at all.
        let deleted = Event::Delete {
            prev: kv(json!({"color": "red"}), 3),
            revision: 4,
        };
        let out = lines(deleted, &[&all, &blue]);
        let line = out[0].as_deref().expect("sent");
        assert!(line.contains(r#""resourceVersion":"4""#) && line.contains(r#""type":"DELETED""#));
        assert_eq!(out[1], None);
    }
}
