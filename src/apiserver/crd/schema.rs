//! A custom resource against its version's structural OpenAPI v3 schema, as the apiextensions
//! server treats it: defaults filled in, fields the schema does not declare pruned (kept under
//! `x-kubernetes-preserve-unknown-fields`), then the value constraints checked, each failure a
//! field error worded as kube-openapi's validator words it.

use serde_json::{Map, Value};

use crate::apiserver::kinds::field::{Bad, ErrorType, Errors, Path};

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn properties(schema: &Value) -> Option<&Map<String, Value>> {
    schema.get("properties").and_then(Value::as_object)
}

/// Fills in `default`s of missing (or null, non-nullable) fields, depth first as Kubernetes
/// does: a defaulted object gets its own fields' defaults too.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = properties(schema) {
                for (key, sub) in props {
                    let missing = match map.get(key) {
                        None => true,
                        Some(Value::Null) => !flag(sub, "nullable"),
                        Some(_) => false,
                    };
                    if missing && let Some(d) = sub.get("default") {
                        map.insert(key.clone(), d.clone());
                    }
                }
                for (key, sub) in props {
                    if let Some(v) = map.get_mut(key) {
                        apply_defaults(sub, v);
                    }
                }
            } else if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for v in map.values_mut() {
                    apply_defaults(extra, v);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for v in items {
                    apply_defaults(sub, v);
                }
            }
        }
        _ => {}
    }
}

/// Whether any field of the schema has a `default` (objects read from storage then need them
/// filled in; without one they are served as stored).
pub fn has_defaults(schema: &Value) -> bool {
    let Some(map) = schema.as_object() else {
        return false;
    };
    map.contains_key("default")
        || properties(schema).is_some_and(|props| props.values().any(has_defaults))
        || map.get("items").is_some_and(has_defaults)
        || map.get("additionalProperties").is_some_and(has_defaults)
}

/// Removes what the schema does not declare and returns the paths removed
/// (`spec.foo`, as kubectl's `unknown field "spec.foo"` shows them). `root` keeps apiVersion,
/// kind and metadata, which every object has.
pub fn prune(schema: &Value, value: &mut Value, path: &str, root: bool, out: &mut Vec<String>) {
    if flag(schema, "x-kubernetes-preserve-unknown-fields") && properties(schema).is_none() {
        return;
    }
    let child = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(map) => {
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let embedded = root || flag(schema, "x-kubernetes-embedded-resource");
            let props = properties(schema);
            let extra = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if embedded && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&key)).or(match extra {
                    Some(e) if e.is_object() => Some(e),
                    _ => None,
                });
                match sub {
                    Some(sub) => {
                        if let Some(v) = map.get_mut(&key) {
                            prune(sub, v, &child(&key), false, out);
                        }
                    }
                    None if preserve || extra == Some(&Value::Bool(true)) => {}
                    None => {
                        map.remove(&key);
                        out.push(child(&key));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, v) in items.iter_mut().enumerate() {
                    prune(sub, v, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

/// Patterns are compiled once: every object of a kind checks the same few.
fn pattern(p: &str) -> Option<regex::Regex> {
    static CACHE: std::sync::Mutex<
        Option<std::collections::HashMap<String, Option<regex::Regex>>>,
    > = std::sync::Mutex::new(None);
    let mut guard = match CACHE.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    guard
        .get_or_insert_with(Default::default)
        .entry(p.to_string())
        .or_insert_with(|| regex::Regex::new(p).ok())
        .clone()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(want: &str, v: &Value) -> bool {
    match (want, type_name(v)) {
        ("number", "integer") => true,
        (w, have) => w == have,
    }
}

/// Go's `%v` of a number in a message (`10`, `1.5`).
fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        Some(f) => f.to_string(),
        None => v.to_string(),
    }
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        "date" => s.parse::<jiff::civil::Date>().is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok()
        }),
        "email" => s
            .split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && b.contains('.')),
        _ => true,
    }
}

/// Checks `value` at `path` against `schema`, adding one field error per failure.
pub fn validate(schema: &Value, value: &Value, path: &Path, errs: &mut Errors) {
    let shown = path.as_str();
    let bad = |errs: &mut Errors, detail: String| errs.invalid(path, Bad::json(value), detail);
    if value.is_null() {
        if flag(schema, "nullable") || schema.get("type").is_none() {
            return;
        }
        errs.push(
            ErrorType::Invalid,
            path,
            Bad::Raw("\"null\"".into()),
            format!(
                "{shown} in body must be of type {}: \"null\"",
                schema
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            ),
        );
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !matches!(type_name(value), "integer" | "string") {
            errs.push(
                ErrorType::Invalid,
                path,
                Bad::json(value),
                format!(
                    "{shown} in body must be of type integer,string: {:?}",
                    type_name(value)
                ),
            );
            return;
        }
    } else if let Some(want) = schema.get("type").and_then(Value::as_str)
        && !type_matches(want, value)
    {
        errs.push(
            ErrorType::Invalid,
            path,
            Bad::json(value),
            format!(
                "{shown} in body must be of type {want}: {:?}",
                type_name(value)
            ),
        );
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        errs.push(
            ErrorType::NotSupported,
            path,
            Bad::json(value),
            format!("supported values: {}", list.join(", ")),
        );
    }
    match value {
        Value::String(s) => {
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && s.chars().count() as u64 > max
            {
                errs.push(
                    ErrorType::TooLong,
                    path,
                    Bad::None,
                    format!("may not be more than {max} bytes"),
                );
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && (s.chars().count() as u64) < min
            {
                bad(
                    errs,
                    format!("{shown} in body should be at least {min} chars long"),
                );
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str)
                && pattern(p).is_some_and(|re| !re.is_match(s))
            {
                bad(errs, format!("{shown} in body should match '{p}'"));
            }
            if let Some(f) = schema.get("format").and_then(Value::as_str)
                && !format_ok(f, s)
            {
                bad(errs, format!("{shown} in body must be of type {f}: {s:?}"));
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = schema.get("minimum").filter(|m| m.is_number()) {
                let m = min.as_f64().unwrap_or_default();
                if flag(schema, "exclusiveMinimum") && x <= m {
                    bad(
                        errs,
                        format!("{shown} in body should be greater than {}", num(min)),
                    );
                } else if x < m {
                    bad(
                        errs,
                        format!(
                            "{shown} in body should be greater than or equal to {}",
                            num(min)
                        ),
                    );
                }
            }
            if let Some(max) = schema.get("maximum").filter(|m| m.is_number()) {
                let m = max.as_f64().unwrap_or_default();
                if flag(schema, "exclusiveMaximum") && x >= m {
                    bad(
                        errs,
                        format!("{shown} in body should be less than {}", num(max)),
                    );
                } else if x > m {
                    bad(
                        errs,
                        format!(
                            "{shown} in body should be less than or equal to {}",
                            num(max)
                        ),
                    );
                }
            }
            if let Some(k) = schema.get("multipleOf").and_then(Value::as_f64)
                && k != 0.0
                && (x / k).fract() != 0.0
            {
                bad(
                    errs,
                    format!(
                        "{shown} in body should be a multiple of {}",
                        num(&schema["multipleOf"])
                    ),
                );
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                errs.push(
                    ErrorType::TooMany,
                    path,
                    Bad::Int(items.len() as i64),
                    format!("must have at most {max} items"),
                );
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                bad(
                    errs,
                    format!("{shown} in body should have at least {min} items"),
                );
            }
            let set_like = flag(schema, "uniqueItems")
                || schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set");
            if set_like {
                for (i, v) in items.iter().enumerate() {
                    if items[..i].contains(v) {
                        errs.push(ErrorType::Duplicate, &path.index(i), Bad::json(v), "");
                    }
                }
            }
            if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let id = |v: &Value| -> Vec<Value> {
                    keys.iter()
                        .map(|k| v.get(*k).cloned().unwrap_or(Value::Null))
                        .collect()
                };
                for (i, v) in items.iter().enumerate() {
                    if items[..i].iter().any(|o| id(o) == id(v)) {
                        let shown_key = if keys.len() == 1 {
                            Bad::json(v.get(keys[0]).unwrap_or(&Value::Null))
                        } else {
                            Bad::Raw(serde_json::to_string(&id(v)).unwrap_or_default())
                        };
                        errs.push(ErrorType::Duplicate, &path.index(i), shown_key, "");
                    }
                }
            }
            if let Some(sub) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    validate(sub, v, &path.index(i), errs);
                }
            }
        }
        Value::Object(map) => {
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(req) {
                    errs.required(&path.child(req), "");
                }
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                errs.push(
                    ErrorType::TooMany,
                    path,
                    Bad::Int(map.len() as i64),
                    format!("must have at most {max} items"),
                );
            }
            if let Some(min) = schema.get("minProperties").and_then(Value::as_u64)
                && (map.len() as u64) < min
            {
                bad(
                    errs,
                    format!("{shown} in body should have at least {min} properties"),
                );
            }
            let props = properties(schema);
            let extra = schema.get("additionalProperties").filter(|e| e.is_object());
            for (k, v) in map {
                // metadata is ObjectMeta, checked as every kind's is.
                if path.as_str().is_empty()
                    && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    continue;
                }
                if let Some(sub) = props.and_then(|p| p.get(k)) {
                    validate(sub, v, &path.child(k), errs);
                } else if let Some(sub) = extra {
                    validate(sub, v, &path.key(k), errs);
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
    combinators(schema, value, path, errs);
}

fn passes(schema: &Value, value: &Value, path: &Path) -> bool {
    let mut e = Errors::new();
    validate(schema, value, path, &mut e);
    e.is_empty()
}

fn combinators(schema: &Value, value: &Value, path: &Path, errs: &mut Errors) {
    let shown = path.as_str();
    for sub in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        validate(sub, value, path, errs);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(|s| passes(s, value, path))
    {
        errs.invalid(
            path,
            Bad::json(value),
            format!("{shown} in body must validate at least one schema (anyOf)"),
        );
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array)
        && one.iter().filter(|s| passes(s, value, path)).count() != 1
    {
        errs.invalid(
            path,
            Bad::json(value),
            format!("{shown} in body must validate one and only one schema (oneOf)"),
        );
    }
    if let Some(not) = schema.get("not")
        && passes(not, value, path)
    {
        errs.invalid(
            path,
            Bad::json(value),
            format!("{shown} in body must not validate the schema (not)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "pattern": "^[a-z]+$"},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "port": {"x-kubernetes-int-or-string": true},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}})
    }

    #[test]
    fn finds_defaults_anywhere_but_in_property_names() {
        assert!(has_defaults(&schema()));
        let nested = json!({"type": "object", "properties": {"spec": {"type": "array",
            "items": {"type": "object", "additionalProperties": {"type": "string", "default": "x"}}}}});
        assert!(has_defaults(&nested));
        // A property called "default" is not a default.
        let named = json!({"type": "object", "properties": {"default": {"type": "string"}}});
        assert!(!has_defaults(&named));
    }

    #[test]
    fn defaults_prunes_and_validates() {
        let mut o = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"image": "nginx", "junk": 1, "extra": {"any": {"thing": 1}}, "port": "http"}});
        apply_defaults(&schema(), &mut o);
        assert_eq!(o["spec"]["replicas"], 1);
        let mut pruned = Vec::new();
        prune(&schema(), &mut o, "", true, &mut pruned);
        assert_eq!(pruned, vec!["spec.junk"]);
        assert_eq!(o["spec"]["extra"]["any"]["thing"], 1);
        let mut errs = Errors::new();
        validate(&schema(), &o, &Path::default(), &mut errs);
        assert!(errs.is_empty(), "{errs:?}");

        let bad = json!({"spec": {"image": "Nginx1", "replicas": "x", "mode": "c", "port": true}});
        let mut errs = Errors::new();
        validate(&schema(), &bad, &Path::default(), &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert_eq!(
            msgs,
            vec![
                "spec.image: Invalid value: \"Nginx1\": spec.image in body should match '^[a-z]+$'",
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
                "spec.port: Invalid value: true: spec.port in body must be of type integer,string: \"boolean\"",
                "spec.replicas: Invalid value: \"x\": spec.replicas in body must be of type integer: \"string\"",
            ]
        );
        let mut errs = Errors::new();
        validate(
            &schema(),
            &json!({"spec": {"replicas": 20}}),
            &Path::default(),
            &mut errs,
        );
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert_eq!(
            msgs,
            vec![
                "spec.image: Required value",
                "spec.replicas: Invalid value: 20: spec.replicas in body should be less than or equal to 10",
            ]
        );
    }
}
