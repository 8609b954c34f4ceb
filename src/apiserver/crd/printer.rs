//! Table cells of custom resources, as apiextensions' table convertor computes them: NAME, then
//! each additionalPrinterColumn (AGE when the version declares none).

use serde_json::Value;

use super::{Column, Custom, jsonpath};
use crate::apiserver::table::cells::human_duration;

/// The description Kubernetes gives the default Age column.
const CREATION_TIMESTAMP: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The printer columns in effect: the declared ones, or AGE.
pub fn columns(custom: &Custom) -> Vec<Column> {
    if !custom.columns.is_empty() {
        return custom
            .columns
            .iter()
            .map(|c| Column {
                description: if c.description.is_empty() {
                    format!(
                        "Custom resource definition column (in JSONPath format): {}",
                        c.json_path
                    )
                } else {
                    c.description.clone()
                },
                ..c.clone()
            })
            .collect();
    }
    vec![Column {
        name: "Age".into(),
        kind: "date".into(),
        format: String::new(),
        description: CREATION_TIMESTAMP.into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }]
}

/// The cells after NAME.
pub fn cells(custom: &Custom, obj: &Value, now: jiff::Timestamp) -> Vec<Value> {
    columns(custom)
        .iter()
        .map(|c| match jsonpath::first(obj, &c.json_path) {
            None | Some(Value::Null) => Value::Null,
            Some(v) => cell(&c.kind, v, now),
        })
        .collect()
}

fn cell(kind: &str, v: &Value, now: jiff::Timestamp) -> Value {
    match kind {
        "integer" => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Value::from)
            .unwrap_or(Value::Null),
        "number" => v.as_f64().map(Value::from).unwrap_or(Value::Null),
        "boolean" => v.as_bool().map(Value::from).unwrap_or(Value::Null),
        "date" => match v.as_str().and_then(|s| s.parse::<jiff::Timestamp>().ok()) {
            Some(t) => Value::String(human_duration(now.as_second() - t.as_second())),
            None => Value::Null,
        },
        _ => match v {
            Value::String(s) => Value::String(s.clone()),
            other => Value::String(other.to_string()),
        },
    }
}
