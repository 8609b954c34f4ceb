//! Objects as Kubernetes compares them. Its field manager diffs typed Go objects, so a
//! non-pointer struct is always there (`spec.template.metadata`, `spec.strategy`), some fields are
//! written even when zero (`creationTimestamp: null`, `containers: null`), and an omitempty field
//! holding its zero value (`paused: false`, `args: []`) is not there at all. `normalize` gives a
//! JSON object that shape, from `go_fields.txt`, so that what this server stores compares the way
//! Go's objects do: a created Deployment owns `f:strategy.f:rollingUpdate` (a pointer, new) but
//! not `f:strategy` itself (always present, so never added).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::typed::Ty;
use crate::apiserver::schema::Shape;

const TABLE: &str = include_str!("go_fields.txt");

#[derive(Debug)]
enum Zero {
    /// A non-pointer struct of this type: always present.
    Struct,
    /// Always written, with this value when zero.
    Literal(Value),
    /// Omitted when zero.
    Omitted,
}

type Table = HashMap<&'static str, Vec<(&'static str, Zero)>>;

fn table() -> &'static Table {
    static TABLE_CELL: OnceLock<Table> = OnceLock::new();
    TABLE_CELL.get_or_init(|| {
        let mut out: Table = HashMap::new();
        let mut current: Option<&'static str> = None;
        for line in TABLE.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('=') {
                current = Some(name);
                continue;
            }
            let (Some(ty), Some((field, zero))) = (current, line.split_once(' ')) else {
                continue;
            };
            let zero = match zero {
                "~" => Zero::Omitted,
                z if z.starts_with('@') => Zero::Struct,
                z => match serde_json::from_str(z) {
                    Ok(v) => Zero::Literal(v),
                    Err(_) => continue,
                },
            };
            out.entry(ty).or_default().push((field, zero));
        }
        out
    })
}

fn is_zero_scalar(v: &Value) -> bool {
    match v {
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// `v` as Go would write it back after decoding it into its type (see the module comment).
pub fn normalize(ty: Ty<'_>, v: &Value) -> Value {
    let Some(schema) = ty.schema() else {
        return v.clone();
    };
    match (schema.shape(), v) {
        (Shape::Object, Value::Object(map)) => {
            let mut map = map.clone();
            let fields = schema.name().and_then(|n| table().get(n));
            let always = |name: &str| {
                fields.is_some_and(|f| {
                    f.iter()
                        .any(|(n, z)| *n == name && !matches!(z, Zero::Omitted))
                })
            };
            for (name, zero) in fields.into_iter().flatten() {
                match zero {
                    Zero::Struct => {
                        if map.get(*name).is_none_or(Value::is_null) {
                            map.insert(name.to_string(), Value::Object(Map::new()));
                        }
                    }
                    Zero::Literal(lit) => {
                        map.entry(name.to_string()).or_insert_with(|| lit.clone());
                    }
                    Zero::Omitted => {
                        if map.get(*name).is_some_and(is_zero_scalar) {
                            map.remove(*name);
                        }
                    }
                }
            }
            let mut out = Map::new();
            for (k, child) in map {
                let child_ty = ty.field(&k);
                if !always(&k) {
                    // omitempty pointers, slices and maps: nil, empty or absent are one.
                    let is_map = child_ty.schema().is_some_and(|s| s.shape() == Shape::Map);
                    let empty = match &child {
                        Value::Null => true,
                        Value::Array(a) => a.is_empty(),
                        Value::Object(m) => m.is_empty() && is_map,
                        _ => false,
                    };
                    if empty && ty.declares(&k) {
                        continue;
                    }
                }
                out.insert(k.clone(), normalize(child_ty, &child));
            }
            Value::Object(out)
        }
        (Shape::Map, Value::Object(map)) => Value::Object(
            map.iter()
                .map(|(k, child)| (k.clone(), normalize(ty.field(k), child)))
                .collect(),
        ),
        (Shape::List, Value::Array(items)) => {
            let item = ty.list_item();
            Value::Array(items.iter().map(|i| normalize(item, i)).collect())
        }
        _ => v.clone(),
    }
}

#[cfg(test)]
pub fn has_type(name: &str) -> bool {
    table().contains_key(name)
}
