//! Unknown and duplicate fields, found the way Kubernetes' strict JSON decoder finds them: field
//! names match exactly, paths read `spec.containers[0].foo`, a key the schema does not declare is
//! reported once and not looked into, duplicates are reported for declared fields and map keys,
//! and free-form places (RawExtension, FieldsV1) hold anything.
//!
//! A request body is walked as it was sent, so errors come in body order and duplicates (which
//! a parsed value no longer has) are seen; a patched object is walked as a value, and its
//! errors sorted, as Kubernetes' converter sorts them.

use std::collections::HashSet;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::registry::{Schema, Shape};

/// Kubernetes stops collecting strict errors after this many.
const MAX_ERRORS: usize = 100;

/// How a part of a document is decoded, which decides what is checked in it.
#[derive(Clone, Copy)]
enum Mode<'r> {
    /// Into a typed field: undeclared fields are unknown.
    Typed(Schema<'r>),
    /// Into `map[string]interface{}`: only duplicate keys count.
    Untyped,
    /// Kept as raw bytes (RawExtension, FieldsV1, undeclared fields): nothing is checked.
    Raw,
    /// A JSON patch: a list of operations.
    PatchOps,
    /// One JSON patch operation: op, path, from and an untyped value.
    PatchOp,
}

impl<'r> Mode<'r> {
    fn of(schema: Option<Schema<'r>>) -> Self {
        match schema {
            Some(s) => match s.shape() {
                Shape::FreeForm | Shape::Scalar => Mode::Raw,
                _ => Mode::Typed(s),
            },
            None => Mode::Raw,
        }
    }

    /// The mode of the value under `key`, or None when the key is not declared.
    fn child(&self, key: &str) -> Option<Mode<'r>> {
        match self {
            Mode::Typed(s) => match s.shape() {
                Shape::Object => s.field(key).map(|f| Mode::of(Some(f.schema))),
                Shape::Map => Some(Mode::of(s.values())),
                _ => Some(Mode::Raw),
            },
            Mode::Untyped => Some(Mode::Untyped),
            Mode::Raw | Mode::PatchOps => Some(Mode::Raw),
            Mode::PatchOp => match key {
                "op" | "path" | "from" => Some(Mode::Raw),
                "value" => Some(Mode::Untyped),
                _ => None,
            },
        }
    }

    fn element(&self) -> Mode<'r> {
        match self {
            Mode::Typed(s) => Mode::of(s.items()),
            Mode::Untyped => Mode::Untyped,
            Mode::PatchOps => Mode::PatchOp,
            _ => Mode::Raw,
        }
    }

    fn checks_duplicates(&self) -> bool {
        !matches!(self, Mode::Raw | Mode::PatchOps)
    }
}

/// The strict-decoding errors found, as Kubernetes words each one.
#[derive(Default)]
pub struct Findings {
    path: Vec<String>,
    errors: Vec<String>,
    seen: HashSet<String>,
}

impl Findings {
    fn field_path(&self, field: &str) -> String {
        if self.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.path.concat())
        }
    }

    fn report(&mut self, what: &str, field: &str) {
        if self.errors.len() >= MAX_ERRORS {
            return;
        }
        let error = format!("{what} \"{}\"", self.field_path(field));
        if self.seen.insert(error.clone()) {
            self.errors.push(error);
        }
    }

    fn push_key(&mut self, key: &str) {
        if self.path.is_empty() {
            self.path.push(key.to_string());
        } else {
            self.path.push(format!(".{key}"));
        }
    }

    fn push_index(&mut self, i: usize) {
        self.path.push(format!("[{i}]"));
    }

    pub fn into_errors(self) -> Vec<String> {
        self.errors
    }
}

struct Walk<'a, 'r> {
    findings: &'a mut Findings,
    mode: Mode<'r>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_bytes<E>(self, _: &[u8]) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let element = self.mode.element();
        let findings = self.findings;
        let mut i = 0;
        loop {
            findings.push_index(i);
            let more = seq.next_element_seed(Walk {
                findings: &mut *findings,
                mode: element,
            });
            findings.path.pop();
            if more?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mode = self.mode;
        let findings = self.findings;
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(Key(key)) = map.next_key()? {
            let child = match mode.child(&key) {
                Some(child) => {
                    if mode.checks_duplicates() && !seen.insert(key.clone()) {
                        findings.report("duplicate field", &key);
                    }
                    child
                }
                None => {
                    findings.report("unknown field", &key);
                    Mode::Raw
                }
            };
            findings.push_key(&key);
            let result = map.next_value_seed(Walk {
                findings: &mut *findings,
                mode: child,
            });
            findings.path.pop();
            result?;
        }
        Ok(())
    }
}

/// A map key of any scalar type, as text (YAML allows numbers and booleans as keys).
struct Key(String);

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Key, E> {
                Ok(Key(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Key, E> {
                Ok(Key("null".into()))
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

/// What the body is decoded into.
#[derive(Clone, Copy)]
pub enum BodyKind<'r> {
    /// A whole object of this kind.
    Object(Schema<'r>),
    /// A merge or strategic merge patch: a map, checked for duplicates only.
    Untyped,
    /// A JSON patch.
    JsonPatch,
}

/// Unknown and duplicate fields of a JSON or YAML request body, in body order. A body that does
/// not parse yields what was found before the error (the caller has parsed it already).
pub fn walk_body(body: &[u8], yaml: bool, kind: BodyKind<'_>) -> Vec<String> {
    let mode = match kind {
        BodyKind::Object(schema) => Mode::Typed(schema),
        BodyKind::Untyped => Mode::Untyped,
        BodyKind::JsonPatch => Mode::PatchOps,
    };
    let mut findings = Findings::default();
    let walk = Walk {
        findings: &mut findings,
        mode,
    };
    if yaml {
        let _ = walk.deserialize(serde_yaml::Deserializer::from_slice(body));
    } else {
        let mut de = serde_json::Deserializer::from_slice(body);
        let _ = walk.deserialize(&mut de);
    }
    findings.into_errors()
}

/// Unknown fields of a value (a patched object), sorted as Kubernetes sorts them.
pub fn unknown_fields(schema: Schema<'_>, value: &Value) -> Vec<String> {
    let mut findings = Findings::default();
    walk_value(&mut findings, Mode::Typed(schema), value);
    let mut errors = findings.into_errors();
    errors.sort();
    errors
}

fn walk_value(findings: &mut Findings, mode: Mode<'_>, value: &Value) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match mode.child(key) {
                    Some(child_mode) => {
                        findings.push_key(key);
                        walk_value(findings, child_mode, child);
                        findings.path.pop();
                    }
                    None => findings.report("unknown field", key),
                }
            }
        }
        Value::Array(items) => {
            let element = mode.element();
            for (i, item) in items.iter().enumerate() {
                findings.push_index(i);
                walk_value(findings, element, item);
                findings.path.pop();
            }
        }
        _ => {}
    }
}

/// Drops every field the schema does not declare: Kubernetes decodes into typed objects, so an
/// unknown field that was only warned about (or ignored) is never stored.
pub fn prune(schema: Schema<'_>, value: &mut Value) {
    prune_mode(Mode::Typed(schema), value);
}

fn prune_mode(mode: Mode<'_>, value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| mode.child(key).is_some());
            for (key, child) in map.iter_mut() {
                if let Some(child_mode @ Mode::Typed(_)) = mode.child(key) {
                    prune_mode(child_mode, child);
                }
            }
        }
        Value::Array(items) => {
            if let element @ Mode::Typed(_) = mode.element() {
                for item in items {
                    prune_mode(element, item);
                }
            }
        }
        _ => {}
    }
}

/// Server-side apply's wording: structured-merge-diff paths (`.spec.containers[name="app"].foo`)
/// with "field not declared in schema".
pub fn undeclared_fields(schema: Schema<'_>, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    undeclared(schema, value, &mut String::new(), &mut out);
    out
}

fn undeclared(schema: Schema<'_>, value: &Value, path: &mut String, out: &mut Vec<String>) {
    match (schema.shape(), value) {
        (Shape::Object, Value::Object(map)) => {
            for (key, child) in map {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                match schema.field(key) {
                    Some(field) => {
                        if let (Shape::List, Value::Array(items)) = (field.schema.shape(), child) {
                            let keys: Vec<&str> = field.meta.list_map_keys().collect();
                            let set = field.meta.list_type() == Some("set");
                            if let Some(element) = field.schema.items() {
                                for (i, item) in items.iter().enumerate() {
                                    let l = path.len();
                                    path.push_str(&list_element(item, i, &keys, set));
                                    undeclared(element, item, path, out);
                                    path.truncate(l);
                                }
                            }
                        } else {
                            undeclared(field.schema, child, path, out);
                        }
                    }
                    None => out.push(format!("{path}: field not declared in schema")),
                }
                path.truncate(len);
            }
        }
        (Shape::Map, Value::Object(map)) => {
            if let Some(values) = schema.values() {
                for (key, child) in map {
                    let len = path.len();
                    path.push('.');
                    path.push_str(key);
                    undeclared(values, child, path, out);
                    path.truncate(len);
                }
            }
        }
        (Shape::List, Value::Array(items)) => {
            if let Some(element) = schema.items() {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    undeclared(element, item, path, out);
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
}

fn list_element(item: &Value, index: usize, keys: &[&str], set: bool) -> String {
    if set {
        return format!("[={}]", item);
    }
    if keys.is_empty() {
        return format!("[{index}]");
    }
    let parts: Vec<String> = keys
        .iter()
        .filter_map(|k| item.get(*k).map(|v| format!("{k}={v}")))
        .collect();
    format!("[{}]", parts.join(","))
}
