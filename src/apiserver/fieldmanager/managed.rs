//! `metadata.managedFields` as a map from manager to owned set, and back.
//!
//! A manager is identified by its name, operation, subresource and, for updates only, API
//! version: an applier keeps one entry whatever version it applies with, while updates through
//! different versions are tracked apart.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::set::FieldSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManagerId {
    pub manager: String,
    pub operation: Operation,
    /// Empty for appliers.
    pub api_version: String,
    pub subresource: String,
}

impl ManagerId {
    pub fn new(manager: &str, operation: Operation, api_version: &str, subresource: &str) -> Self {
        ManagerId {
            manager: manager.to_string(),
            operation,
            api_version: match operation {
                Operation::Apply => String::new(),
                Operation::Update => api_version.to_string(),
            },
            subresource: subresource.to_string(),
        }
    }

    /// How conflict messages name the manager: `"kubectl-edit" using apps/v1`,
    /// `"ctl" with subresource "status"`.
    pub fn describe(&self) -> String {
        let mut out = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            out.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            out.push_str(&format!(" using {}", self.api_version));
        }
        out
    }

    /// The order Kubernetes gives managers in multi-conflict messages (by its JSON identifier).
    pub fn sort_key(&self) -> String {
        let mut m = Map::new();
        if !self.manager.is_empty() {
            m.insert("manager".into(), json!(self.manager));
        }
        m.insert("operation".into(), json!(self.operation.as_str()));
        if !self.api_version.is_empty() {
            m.insert("apiVersion".into(), json!(self.api_version));
        }
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        // Go writes the struct's fields in declaration order.
        let order = ["manager", "operation", "apiVersion", "subresource"];
        let parts: Vec<String> = order
            .iter()
            .filter_map(|k| m.get(*k).map(|v| format!("{k:?}:{v}")))
            .collect();
        format!("{{{}}}", parts.join(","))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub api_version: String,
    pub set: FieldSet,
    /// As written (RFC 3339); None when Kubernetes would leave it out.
    pub time: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Managed {
    pub entries: BTreeMap<ManagerId, Entry>,
}

fn str_of<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry.get(key).and_then(Value::as_str).unwrap_or_default()
}

impl Managed {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads `metadata.managedFields`; an entry Kubernetes would refuse makes the whole list
    /// unreadable.
    pub fn decode(list: &Value) -> Result<Managed, String> {
        let mut out = Managed::default();
        let items = match list {
            Value::Null => return Ok(out),
            Value::Array(items) => items,
            _ => return Err("managedFields must be a list".into()),
        };
        for (i, item) in items.iter().enumerate() {
            if !item.is_object() {
                return Err(format!("managed fields entry {i} is not an object"));
            }
            let operation = match str_of(item, "operation") {
                "Apply" => Operation::Apply,
                "Update" => Operation::Update,
                _ => return Err("operation must be `Apply` or `Update`".into()),
            };
            let api_version = str_of(item, "apiVersion");
            if api_version.is_empty() {
                return Err("apiVersion must not be empty".into());
            }
            match str_of(item, "fieldsType") {
                "FieldsV1" => {}
                "" => return Err(format!("missing fieldsType in managed fields entry {i}")),
                other => {
                    return Err(format!(
                        "invalid fieldsType {other:?} in managed fields entry {i}"
                    ));
                }
            }
            let set = FieldSet::from_fields_v1(item.get("fieldsV1").unwrap_or(&Value::Null))?;
            let id = ManagerId::new(
                str_of(item, "manager"),
                operation,
                api_version,
                str_of(item, "subresource"),
            );
            let time = item.get("time").and_then(Value::as_str).map(str::to_string);
            out.entries.insert(
                id,
                Entry {
                    api_version: api_version.to_string(),
                    set,
                    time,
                },
            );
        }
        Ok(out)
    }

    /// The list Kubernetes writes: appliers first, then by time, manager, version, subresource.
    pub fn encode(&self) -> Option<Value> {
        if self.entries.is_empty() {
            return None;
        }
        let mut rows: Vec<(&ManagerId, &Entry)> = self.entries.iter().collect();
        rows.sort_by(|(a, ea), (b, eb)| {
            a.operation
                .cmp(&b.operation)
                .then_with(|| seconds(ea.time.as_deref()).cmp(&seconds(eb.time.as_deref())))
                .then_with(|| a.manager.cmp(&b.manager))
                .then_with(|| ea.api_version.cmp(&eb.api_version))
                .then_with(|| a.subresource.cmp(&b.subresource))
        });
        let list = rows
            .into_iter()
            .map(|(id, e)| {
                let mut m = Map::new();
                m.insert("apiVersion".into(), json!(e.api_version));
                m.insert("fieldsType".into(), json!("FieldsV1"));
                m.insert("fieldsV1".into(), e.set.to_fields_v1());
                if !id.manager.is_empty() {
                    m.insert("manager".into(), json!(id.manager));
                }
                m.insert("operation".into(), json!(id.operation.as_str()));
                if !id.subresource.is_empty() {
                    m.insert("subresource".into(), json!(id.subresource));
                }
                if let Some(t) = &e.time {
                    m.insert("time".into(), json!(t));
                }
                Value::Object(m)
            })
            .collect();
        Some(Value::Array(list))
    }

    /// Drops entries that own nothing.
    pub fn prune_empty(&mut self) {
        self.entries.retain(|_, e| !e.set.is_empty());
    }

    /// Keeps at most `max` update entries: the oldest are merged into one `ancient-changes`
    /// entry per API version, as Kubernetes does.
    pub fn cap_updates(&mut self, max: usize) {
        let mut updaters: Vec<ManagerId> = self
            .entries
            .keys()
            .filter(|id| id.operation == Operation::Update)
            .cloned()
            .collect();
        if updaters.len() <= max {
            return;
        }
        updaters.sort_by(|a, b| {
            let ta = seconds(self.entries[a].time.as_deref());
            let tb = seconds(self.entries[b].time.as_deref());
            ta.cmp(&tb).then_with(|| a.sort_key().cmp(&b.sort_key()))
        });
        let mut first_of_version: BTreeMap<String, ManagerId> = BTreeMap::new();
        let mut length = updaters.len();
        for id in updaters {
            if length <= max {
                break;
            }
            let Some(entry) = self.entries.get(&id).cloned() else {
                continue;
            };
            let version = entry.api_version.clone();
            let bucket = ManagerId::new("ancient-changes", Operation::Update, &version, "");
            match first_of_version.get(&version) {
                Some(first) => {
                    if !self.entries.contains_key(&bucket)
                        && let Some(first_entry) = self.entries.remove(first)
                    {
                        self.entries.insert(bucket.clone(), first_entry);
                    }
                    if let Some(b) = self.entries.get_mut(&bucket) {
                        b.set = entry.set.union(&b.set);
                        b.time = entry.time.clone();
                    }
                    self.entries.remove(&id);
                    length -= 1;
                }
                None => {
                    first_of_version.insert(version, id);
                }
            }
        }
    }
}

/// Whole seconds since the epoch of an RFC 3339 time; 0 when absent or unreadable.
fn seconds(time: Option<&str>) -> i64 {
    time.and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .unwrap_or(0)
}
