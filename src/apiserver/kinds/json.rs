//! Small helpers for working on objects as JSON, so that fields this server does not model
//! survive defaulting untouched.

use serde_json::{Map, Value};

/// The object at `key`, created (or replaced, if it was null or not an object) when needed.
pub fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let map = v.as_object_mut().expect("just made an object");
    let entry = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry
}

/// Sets `key` when it is absent or null, as Go defaulting fills nil pointers and empty strings.
pub fn default(v: &mut Value, key: &str, value: Value) {
    let Some(map) = v.as_object_mut() else {
        return;
    };
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.to_string(), value);
        }
        Some(Value::String(s)) if s.is_empty() && value.is_string() => {
            map.insert(key.to_string(), value);
        }
        _ => {}
    }
}

/// The array at `key`, for changing each element in place.
pub fn items_mut<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
}

pub fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// The strings of the array at `key` (other elements skipped; none when it is missing).
pub fn strings(v: &Value, key: &str) -> Vec<String> {
    items(v, key)
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

pub fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

pub fn str_or<'a>(v: &'a Value, key: &str) -> &'a str {
    str_at(v, key).unwrap_or_default()
}

pub fn int_at(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

pub fn bool_at(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

pub fn is_set(v: &Value, key: &str) -> bool {
    !matches!(v.get(key), None | Some(Value::Null))
}

/// A map's entry count, zero when absent.
pub fn len_of(v: &Value, key: &str) -> usize {
    match v.get(key) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

pub fn remove(v: &mut Value, key: &str) -> Option<Value> {
    v.as_object_mut().and_then(|m| m.remove(key))
}

/// Whether a sub-value is absent, null, or an empty object/array (Go's omitempty view).
pub fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    }
}

pub const EMPTY: Value = Value::Null;

/// `v[key]` or null, for reading paths that may be missing.
pub fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&EMPTY)
}
