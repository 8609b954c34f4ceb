//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`): the `k8s\0` envelope and the
//! built-in kinds' messages, decoded into the same JSON the rest of the server works on.
//!
//! Typed clients (kubectl create/run/drain, client-go controllers) send protobuf and do not retry
//! in JSON after a 415, so every built-in kind has to be understood here. Rather than compiling a
//! Rust type per message, a generic wire decoder walks a field table (`schema.txt`, generated from
//! the `k8s-pb` and `k8s-openapi` crates by `generate.rs`) that maps each field number to its JSON
//! name and type.

mod schema;
mod wire;

#[cfg(test)]
mod generate;
#[cfg(test)]
mod tests;

use base64::Engine as _;
use serde_json::{Map, Value};

use self::schema::{Field, Message, Schema, Shape, Type};
use self::wire::{Reader, WireValue};
use super::schema::gofmt::duration as go_duration;
use super::status::ApiError;

const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";
/// Well beyond the deepest built-in message; it only stops a hostile body from exhausting the stack.
const MAX_DEPTH: usize = 64;

pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let schema = schema::schema().map_err(ApiError::internal)?;
    decode_envelope(schema, body, 0)
}

fn decode_envelope(schema: &Schema, body: &[u8], depth: usize) -> Result<Value, ApiError> {
    let unknown = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("the body does not start with the protobuf magic number k8s\\0"))?;
    let envelope = Envelope::parse(unknown)?;
    if !envelope.content_encoding.is_empty() {
        return Err(ApiError::unsupported_media_type(&format!(
            "{MEDIA_TYPE} with contentEncoding {:?}",
            envelope.content_encoding
        )));
    }
    if !envelope.content_type.is_empty() && envelope.content_type != MEDIA_TYPE {
        return Err(ApiError::unsupported_media_type(&format!(
            "{MEDIA_TYPE} wrapping {:?}",
            envelope.content_type
        )));
    }
    if envelope.kind.is_empty() {
        return Err(bad("the protobuf envelope names no kind"));
    }
    let message = schema
        .root(&envelope.api_version, &envelope.kind)
        .ok_or_else(|| {
            ApiError::unsupported_media_type(&format!(
                "{MEDIA_TYPE} (kind {:?} of {:?} cannot be read from protobuf here; send JSON)",
                envelope.kind, envelope.api_version
            ))
        })?;
    let mut object = Map::new();
    decode_message(schema, message, envelope.raw, &mut object, depth)?;
    if !envelope.api_version.is_empty() {
        object.insert("apiVersion".into(), Value::String(envelope.api_version));
    }
    object.insert("kind".into(), Value::String(envelope.kind));
    Ok(Value::Object(object))
}

/// `runtime.Unknown`: the object's own message travels as bytes beside its type.
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Envelope<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, ApiError> {
        let mut envelope = Envelope {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
            content_type: String::new(),
        };
        let mut reader = Reader::new(bytes);
        while let Some((tag, value)) = reader.next().map_err(envelope_error)? {
            match (tag, value) {
                (1, WireValue::Bytes(type_meta)) => {
                    let mut reader = Reader::new(type_meta);
                    while let Some((tag, value)) = reader.next().map_err(envelope_error)? {
                        match (tag, value) {
                            (1, WireValue::Bytes(b)) => envelope.api_version = text(b),
                            (2, WireValue::Bytes(b)) => envelope.kind = text(b),
                            _ => {}
                        }
                    }
                }
                (2, WireValue::Bytes(b)) => envelope.raw = b,
                (3, WireValue::Bytes(b)) => envelope.content_encoding = text(b),
                (4, WireValue::Bytes(b)) => envelope.content_type = text(b),
                (1..=4, _) => {
                    return Err(bad(format!(
                        "protobuf envelope field {tag} has the wrong wire type"
                    )));
                }
                _ => {}
            }
        }
        Ok(envelope)
    }
}

fn envelope_error(e: wire::Error) -> ApiError {
    bad(format!("malformed protobuf envelope: {e}"))
}

/// Go decodes protobuf strings without checking UTF-8 and its JSON encoder then replaces bad
/// sequences; doing the same keeps a stray byte from failing the whole request.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// Decodes into `object` so that inline embedded structs and repeated occurrences of a message
/// field (protobuf merges them) land in the same JSON object.
fn decode_message(
    schema: &Schema,
    message: &Message,
    bytes: &[u8],
    object: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), ApiError> {
    if depth > MAX_DEPTH {
        return Err(bad("the protobuf message is nested too deeply"));
    }
    let mut reader = Reader::new(bytes);
    let wire_err = |e: wire::Error| bad(format!("malformed protobuf in {}: {e}", message.name));
    while let Some((tag, value)) = reader.next().map_err(wire_err)? {
        // Fields this table does not know come from a newer client; Go skips them too.
        let Some(field) = message.field(tag) else {
            continue;
        };
        decode_field(schema, field, value, object, depth).map_err(|e| match e {
            FieldError::Api(e) => e,
            FieldError::Wire(what) => bad(format!(
                "malformed protobuf in {}.{}: {what}",
                message.name,
                if field.json.is_empty() {
                    "(inline)"
                } else {
                    field.json
                }
            )),
        })?;
    }
    Ok(())
}

enum FieldError {
    Api(ApiError),
    Wire(String),
}

impl From<ApiError> for FieldError {
    fn from(e: ApiError) -> Self {
        FieldError::Api(e)
    }
}

impl From<wire::Error> for FieldError {
    fn from(e: wire::Error) -> Self {
        FieldError::Wire(e.to_string())
    }
}

fn decode_field(
    schema: &Schema,
    field: &Field,
    value: WireValue<'_>,
    object: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), FieldError> {
    match field.shape {
        Shape::Single => {
            if let (Type::Message(i), WireValue::Bytes(bytes)) = (field.ty, value) {
                let message = message_at(schema, i)?;
                if field.json.is_empty() {
                    return Ok(decode_message(schema, message, bytes, object, depth + 1)?);
                }
                let slot = object
                    .entry(field.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(inner) = slot {
                    decode_message(schema, message, bytes, inner, depth + 1)?;
                }
                return Ok(());
            }
            let v = single(schema, field.ty, value, depth)?;
            if field.keep_zero || !is_zero(&v, field.ty) {
                object.insert(field.json.into(), v);
            } else {
                // A later zero still overrides an earlier value, as protobuf's last-wins says.
                object.remove(field.json);
            }
        }
        Shape::Repeated => {
            let items = array_slot(object, field.json)?;
            match (field.ty, value) {
                // Packed encoding: proto2 Go writes these unpacked, but a reader must take both.
                (Type::Int32 | Type::Int64 | Type::Bool | Type::Double, WireValue::Bytes(b)) => {
                    let mut reader = Reader::new(b);
                    while !reader.is_empty() {
                        let v = if field.ty == Type::Double {
                            WireValue::Fixed64(reader.fixed64()?)
                        } else {
                            WireValue::Varint(reader.varint()?)
                        };
                        items.push(single(schema, field.ty, v, depth)?);
                    }
                }
                (ty, value) => items.push(single(schema, ty, value, depth)?),
            }
        }
        Shape::Map => {
            let WireValue::Bytes(entry) = value else {
                return Err(FieldError::Wire(
                    "a map entry is not length-delimited".into(),
                ));
            };
            let mut key = String::new();
            let mut val = None;
            let mut reader = Reader::new(entry);
            while let Some((tag, v)) = reader.next()? {
                match (tag, v) {
                    (1, WireValue::Bytes(b)) => key = text(b),
                    (1, _) => return Err(FieldError::Wire("a map key is not a string".into())),
                    (2, v) => val = Some(v),
                    _ => {}
                }
            }
            // An absent value is the zero value of its type, as protobuf defines for map entries.
            let v = match val {
                Some(v) => single(schema, field.ty, v, depth)?,
                None => single(schema, field.ty, WireValue::Bytes(&[]), depth)?,
            };
            let map = object
                .entry(field.json)
                .or_insert_with(|| Value::Object(Map::new()));
            if !map.is_object() {
                *map = Value::Object(Map::new());
            }
            if let Value::Object(map) = map {
                map.insert(key, v);
            }
        }
    }
    Ok(())
}

fn array_slot<'m>(
    object: &'m mut Map<String, Value>,
    key: &str,
) -> Result<&'m mut Vec<Value>, ApiError> {
    if !matches!(object.get(key), Some(Value::Array(_))) {
        object.insert(key.into(), Value::Array(Vec::new()));
    }
    match object.get_mut(key) {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(ApiError::internal("protobuf decoder lost a list it made")),
    }
}

fn message_at(schema: &Schema, index: usize) -> Result<&Message, ApiError> {
    schema
        .message(index)
        .ok_or_else(|| ApiError::internal(format!("protobuf schema has no message {index}")))
}

/// One value of a field, as JSON.
fn single(
    schema: &Schema,
    ty: Type,
    value: WireValue<'_>,
    depth: usize,
) -> Result<Value, FieldError> {
    let wrong = || FieldError::Wire(format!("wire type {} does not fit {ty:?}", value.kind()));
    Ok(match (ty, value) {
        (Type::String, WireValue::Bytes(b)) => Value::String(text(b)),
        (Type::Bytes, WireValue::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Type::Bool, WireValue::Varint(v)) => Value::Bool(v != 0),
        // Protobuf int32 travels sign-extended to 64 bits: truncating restores it.
        (Type::Int32, WireValue::Varint(v)) => Value::from(v as i32),
        (Type::Int64, WireValue::Varint(v)) => Value::from(v as i64),
        (Type::Double, WireValue::Fixed64(v)) => {
            let f = f64::from_bits(v);
            Value::from(
                serde_json::Number::from_f64(f)
                    .ok_or_else(|| FieldError::Wire(format!("{f} has no JSON form")))?,
            )
        }
        (Type::Message(i), WireValue::Bytes(b)) => {
            let mut object = Map::new();
            decode_message(schema, message_at(schema, i)?, b, &mut object, depth + 1)?;
            Value::Object(object)
        }
        (_, WireValue::Bytes(b)) if is_special(ty) => special(schema, ty, b, depth)?,
        _ => return Err(wrong()),
    })
}

fn is_special(ty: Type) -> bool {
    matches!(
        ty,
        Type::Time
            | Type::MicroTime
            | Type::Duration
            | Type::IntOrString
            | Type::Quantity
            | Type::RawExtension
            | Type::FieldsV1
            | Type::Strings
    )
}

fn is_zero(v: &Value, ty: Type) -> bool {
    match ty {
        Type::String | Type::Bytes => v.as_str() == Some(""),
        Type::Bool => v.as_bool() == Some(false),
        Type::Int32 | Type::Int64 => v.as_i64() == Some(0),
        Type::Double => v.as_f64() == Some(0.0),
        _ => false,
    }
}

/// The types whose Go JSON form is not their protobuf structure.
fn special(schema: &Schema, ty: Type, bytes: &[u8], depth: usize) -> Result<Value, FieldError> {
    let mut ints = [0u64; 3];
    let mut texts: [Option<&[u8]>; 3] = [None; 3];
    let mut strings = Vec::new();
    let mut reader = Reader::new(bytes);
    while let Some((tag, value)) = reader.next()? {
        let slot = match tag {
            1..=3 => (tag - 1) as usize,
            _ => continue,
        };
        match value {
            WireValue::Varint(v) => {
                if let Some(i) = ints.get_mut(slot) {
                    *i = v;
                }
            }
            WireValue::Bytes(b) => {
                if ty == Type::Strings && tag == 1 {
                    strings.push(Value::String(text(b)));
                } else if let Some(t) = texts.get_mut(slot) {
                    *t = Some(b);
                }
            }
            _ => {
                return Err(FieldError::Wire(format!(
                    "unexpected fixed-width field in {ty:?}"
                )));
            }
        }
    }
    let [first, second, _] = ints;
    Ok(match ty {
        // Go's metav1.Time marshals the zero time as an empty message and as JSON null; its
        // JSON carries whole seconds only, so protobuf nanos are dropped as the Go server does.
        Type::Time if bytes.is_empty() => Value::Null,
        Type::Time => Value::String(rfc3339(first as i64, 0, false)?),
        Type::MicroTime if bytes.is_empty() => Value::Null,
        Type::MicroTime => Value::String(rfc3339(first as i64, second as i64, true)?),
        Type::Duration => Value::String(go_duration(first as i64)),
        // type 1 is intstr.String; anything else reads as the integer, like Go.
        Type::IntOrString if first == 1 => Value::String(text(texts[2].unwrap_or_default())),
        Type::IntOrString => Value::from(second as i32),
        // A Quantity with no text is Go's zero Quantity, which prints as "0".
        Type::Quantity => match texts[0] {
            Some(t) if !t.is_empty() => Value::String(text(t)),
            _ => Value::String("0".into()),
        },
        Type::RawExtension | Type::FieldsV1 => match texts[0] {
            None | Some([]) => Value::Null,
            Some(raw) => raw_json(schema, raw, depth)?,
        },
        Type::Strings => Value::Array(strings),
        _ => return Err(FieldError::Wire(format!("{ty:?} is not a special type"))),
    })
}

/// RawExtension and FieldsV1 carry JSON bytes; an embedded object from a protobuf client may
/// instead be its own `k8s\0` envelope.
fn raw_json(schema: &Schema, raw: &[u8], depth: usize) -> Result<Value, FieldError> {
    if raw.starts_with(MAGIC) {
        return Ok(decode_envelope(schema, raw, depth + 1)?);
    }
    serde_json::from_slice(raw)
        .map_err(|e| FieldError::Wire(format!("embedded raw object is not JSON: {e}")))
}

fn rfc3339(seconds: i64, nanos: i64, micro: bool) -> Result<String, FieldError> {
    let out_of_range = || FieldError::Wire(format!("time {seconds}s is out of range"));
    let seconds = seconds
        .checked_add(nanos.div_euclid(1_000_000_000))
        .ok_or_else(out_of_range)?;
    let nanos = nanos.rem_euclid(1_000_000_000);
    let ts = jiff::Timestamp::new(seconds, 0).map_err(|_| out_of_range())?;
    let dt = ts.to_zoned(jiff::tz::TimeZone::UTC).datetime();
    // Go refuses to write years outside 0..=9999 in RFC 3339.
    if !(0..=9999).contains(&dt.year()) {
        return Err(out_of_range());
    }
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    Ok(if micro {
        format!("{base}.{:06}Z", nanos / 1000)
    } else {
        format!("{base}Z")
    })
}
