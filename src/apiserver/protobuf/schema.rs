//! The message table (`schema.txt`) that says, for each built-in message, which JSON field each
//! protobuf field number becomes. It is text rather than Rust so that the compiler sees one string
//! literal instead of thousands of static items; it is parsed once, on the first protobuf request.
//!
//! Format, one item a line:
//! - `@<apiVersion> <Kind> <Message>`: a kind a request body may carry (`*` = any apiVersion);
//! - `=<Message>`: the fields below belong to that message;
//! - `<tag> <json> <type> [z]`: a field. `json` is `+` for a Go `json:",inline"` embedded struct,
//!   whose fields land in the parent object. `type` is a scalar (`string bytes bool int32 int64
//!   double`), a Kubernetes special (`time microtime duration intstr quantity rawext fieldsv1`,
//!   or `strings` for a message that wraps a string list, like `ExtraValue`) or a message name,
//!   prefixed by `[]` when repeated or `{}` for a `map<string, type>`. `z` marks a scalar whose
//!   zero value Go's JSON still writes (a pointer, or a field without `omitempty`); other zero
//!   scalars are what a Go client sends for "unset" and are dropped.

use std::collections::HashMap;
use std::sync::OnceLock;

pub const TABLE: &str = include_str!("schema.txt");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    Double,
    Time,
    MicroTime,
    Duration,
    IntOrString,
    Quantity,
    RawExtension,
    FieldsV1,
    Strings,
    Message(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Single,
    Repeated,
    Map,
}

#[derive(Debug)]
pub struct Field {
    pub tag: u32,
    /// Empty for an inline embedded struct.
    pub json: &'static str,
    pub ty: Type,
    pub shape: Shape,
    pub keep_zero: bool,
}

#[derive(Debug)]
pub struct Message {
    pub name: &'static str,
    /// Sorted by tag.
    pub fields: Vec<Field>,
}

impl Message {
    pub fn field(&self, tag: u32) -> Option<&Field> {
        self.fields
            .binary_search_by_key(&tag, |f| f.tag)
            .ok()
            .and_then(|i| self.fields.get(i))
    }
}

#[derive(Debug)]
pub struct Schema {
    pub messages: Vec<Message>,
    roots: HashMap<(&'static str, &'static str), usize>,
}

impl Schema {
    /// The message of a top-level kind; `*` entries are meta kinds (DeleteOptions) that clients
    /// label with whatever group-version they are talking to.
    pub fn root(&self, api_version: &str, kind: &str) -> Option<&Message> {
        self.roots
            .get(&(api_version, kind))
            .or_else(|| self.roots.get(&("*", kind)))
            .and_then(|&i| self.messages.get(i))
    }

    pub fn message(&self, index: usize) -> Option<&Message> {
        self.messages.get(index)
    }
}

pub fn schema() -> Result<&'static Schema, String> {
    static SCHEMA: OnceLock<Result<Schema, String>> = OnceLock::new();
    SCHEMA
        .get_or_init(|| parse(TABLE))
        .as_ref()
        .map_err(Clone::clone)
}

pub fn parse(text: &'static str) -> Result<Schema, String> {
    let lines: Vec<(usize, &'static str)> = text
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    // Message references may point forward, so number the messages first.
    let mut index = HashMap::new();
    for (_, line) in &lines {
        if let Some(name) = line.strip_prefix('=') {
            let next = index.len();
            if index.insert(name, next).is_some() {
                return Err(format!("message {name} is listed twice"));
            }
        }
    }
    let mut messages: Vec<Message> = Vec::with_capacity(index.len());
    let mut roots = HashMap::new();
    for (n, line) in lines {
        let err = |what: &str| format!("schema line {n}: {what}: {line}");
        if let Some(name) = line.strip_prefix('=') {
            messages.push(Message {
                name,
                fields: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix('@') {
            let parts: Vec<&'static str> = rest.split(' ').collect();
            let [api_version, kind, message] = parts[..] else {
                return Err(err("a root needs apiVersion, kind and message"));
            };
            let &i = index.get(message).ok_or_else(|| err("unknown message"))?;
            roots.insert((api_version, kind), i);
        } else {
            let parts: Vec<&'static str> = line.split(' ').collect();
            let (tag, json, ty, keep_zero) = match parts[..] {
                [tag, json, ty] => (tag, json, ty, false),
                [tag, json, ty, "z"] => (tag, json, ty, true),
                _ => return Err(err("a field needs tag, name and type")),
            };
            let tag: u32 = tag.parse().map_err(|_| err("bad tag"))?;
            let (shape, ty) = if let Some(t) = ty.strip_prefix("[]") {
                (Shape::Repeated, t)
            } else if let Some(t) = ty.strip_prefix("{}") {
                (Shape::Map, t)
            } else {
                (Shape::Single, ty)
            };
            let ty = match ty {
                "string" => Type::String,
                "bytes" => Type::Bytes,
                "bool" => Type::Bool,
                "int32" => Type::Int32,
                "int64" => Type::Int64,
                "double" => Type::Double,
                "time" => Type::Time,
                "microtime" => Type::MicroTime,
                "duration" => Type::Duration,
                "intstr" => Type::IntOrString,
                "quantity" => Type::Quantity,
                "rawext" => Type::RawExtension,
                "fieldsv1" => Type::FieldsV1,
                "strings" => Type::Strings,
                name => Type::Message(*index.get(name).ok_or_else(|| err("unknown type"))?),
            };
            let json = if json == "+" { "" } else { json };
            if json.is_empty() && (shape != Shape::Single || !matches!(ty, Type::Message(_))) {
                return Err(err("only a single message can be inline"));
            }
            let message = messages
                .last_mut()
                .ok_or_else(|| err("a field before any message"))?;
            message.fields.push(Field {
                tag,
                json,
                ty,
                shape,
                keep_zero,
            });
        }
    }
    for message in &mut messages {
        message.fields.sort_by_key(|f| f.tag);
        if message.fields.windows(2).any(|w| w[0].tag == w[1].tag) {
            return Err(format!("message {} repeats a tag", message.name));
        }
    }
    Ok(Schema { messages, roots })
}
