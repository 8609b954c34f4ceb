//! Object metadata handling shared by every handler: what the server owns in `metadata`, how the
//! stored bytes and the served object differ, and name validation.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::resources::ResourceDef;
use super::status::ApiError;
use crate::store::KeyValue;

/// The server sets resourceVersion from the store's revision on the way out, so it is never stored.
pub fn from_stored(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// An object of `def`'s kind read from storage, as served: `from_stored`, then pruned and
/// defaulted by the custom resource's schema in force (see `crd::normalize_stored`).
pub fn from_stored_as(def: &ResourceDef, kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj = from_stored(kv)?;
    super::crd::normalize_stored(def, &mut obj);
    Ok(obj)
}

/// Appends `serde_json::to_vec(&from_stored(kv)?)` to `out` without building the object: only
/// the top level and `metadata` are parsed and every other field is copied as stored, which is
/// what makes a list of thousands of objects cheap in time and memory.
pub fn write_served(kv: &KeyValue, out: &mut Vec<u8>) -> Result<(), ApiError> {
    let not_json = |e: serde_json::Error| {
        ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key))
    };
    // Stored objects are JSON objects; anything else takes the slow path, with its exact output.
    let Ok(mut top) = serde_json::from_slice::<BTreeMap<String, &RawValue>>(&kv.value) else {
        return serde_json::to_writer(out, &from_stored(kv)?).map_err(not_json);
    };
    let served_meta;
    if let Some(meta) = top.get("metadata").copied()
        && let Ok(mut fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(meta.get())
    {
        let revision =
            serde_json::value::to_raw_value(&kv.mod_revision.to_string()).map_err(not_json)?;
        fields.insert("resourceVersion".into(), &revision);
        served_meta = serde_json::value::to_raw_value(&fields).map_err(not_json)?;
        top.insert("metadata".into(), &served_meta);
    }
    serde_json::to_writer(out, &top).map_err(not_json)
}

/// A `<Kind>List` as `json!({"apiVersion", "items", "kind", "metadata"})` would encode it: items
/// already decoded are encoded, the rest are copied from the store with [`write_served`] unless
/// they change on read (custom resources with a schema: pruning and defaults).
pub fn encode_list(
    def: &ResourceDef,
    items: &[(&KeyValue, Option<Value>)],
    meta: &Value,
) -> Result<bytes::Bytes, ApiError> {
    let api_version = def.api_version();
    let kind = def.kind;
    let raw = !super::crd::decoded_on_read(def);
    let fail = |e: serde_json::Error| ApiError::internal(format!("cannot encode a list: {e}"));
    let size: usize = items.iter().map(|(kv, _)| kv.value.len() + 40).sum();
    let mut out = Vec::with_capacity(size + 256);
    // The keys in the order serde_json's sorted maps give them.
    out.extend_from_slice(b"{\"apiVersion\":");
    serde_json::to_writer(&mut out, &api_version).map_err(fail)?;
    out.extend_from_slice(b",\"items\":[");
    for (i, (kv, obj)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match obj {
            Some(obj) => serde_json::to_writer(&mut out, obj).map_err(fail)?,
            None if raw => write_served(kv, &mut out)?,
            None => serde_json::to_writer(&mut out, &from_stored_as(def, kv)?).map_err(fail)?,
        }
    }
    out.extend_from_slice(b"],\"kind\":");
    serde_json::to_writer(&mut out, &format!("{kind}List")).map_err(fail)?;
    out.extend_from_slice(b",\"metadata\":");
    serde_json::to_writer(&mut out, meta).map_err(fail)?;
    out.push(b'}');
    Ok(out.into())
}

pub fn to_stored(obj: &Value) -> Result<bytes::Bytes, ApiError> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj)
        .map(bytes::Bytes::from)
        .map_err(|e| ApiError::internal(format!("cannot encode object: {e}")))
}

pub fn set_resource_version(obj: &mut Value, revision: i64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
}

pub fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// Now, to the second, truncated as Go's metav1.Time serialises it (rounding could put an
/// object's creationTimestamp after the moment a client saw it created).
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Second)
                .mode(jiff::RoundMode::Trunc),
        )
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub fn new_uid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Checks apiVersion/kind against the URL (filling them in when absent) so a Pod can't be posted to /nodes.
pub fn check_type(obj: &mut Value, def: &ResourceDef) -> Result<(), ApiError> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let want_version = def.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), want_version.clone().into());
        }
        Some(v) if v == want_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want_version})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), def.kind.into());
        }
        Some(k) if k == def.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                def.kind
            )));
        }
    }
    Ok(())
}

/// The kind's name rule (DNS subdomain, DNS label, DNS-1035 label or path segment), with
/// Kubernetes' messages.
pub fn validate_name(name: &str, def: &ResourceDef) -> Option<String> {
    if name.is_empty() {
        return Some("name or generateName is required".into());
    }
    super::kinds::name_problems(def, name).into_iter().next()
}

/// Kubernetes appends five characters from this alphabet (no vowels, no look-alikes).
/// How many random characters generate_name appends.
pub const GENERATED_SUFFIX_LEN: usize = 5;

pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let suffix: String = bytes[..GENERATED_SUFFIX_LEN]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    let max_prefix = 58usize.min(prefix.len());
    format!("{}{suffix}", &prefix[..max_prefix])
}

/// Everything but metadata and status: what metadata.generation tracks.
pub fn spec_of(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(map) = obj.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(value: &str) -> KeyValue {
        KeyValue {
            key: "/registry/configmaps/ns/a".into(),
            value: bytes::Bytes::from(value.to_owned()),
            create_revision: 3,
            mod_revision: 42,
        }
    }

    fn slow(kv: &KeyValue) -> Vec<u8> {
        serde_json::to_vec(&from_stored(kv).expect("decodes")).expect("encodes")
    }

    #[test]
    fn served_bytes_are_what_decoding_and_encoding_gives() {
        let stored = [
            // As the server stores objects: compact, keys sorted.
            r#"{"apiVersion":"v1","data":{"a":"1"},"kind":"ConfigMap","metadata":{"name":"a","namespace":"ns","uid":"u"}}"#,
            // Escapes, unicode, numbers, nesting, empty containers.
            r#"{"data":{"q\"uote":"line\nbreak \u00e9 ü \ud83d\ude00","n":[1,-2.5,1e300,{}],"e":[]},"metadata":{"labels":{"z":"1","a":"2"},"generation":7}}"#,
            // Keys out of order and a stored resourceVersion: both served as decoding would.
            r#"{"metadata":{"resourceVersion":"7","name":"b"},"kind":"Secret","apiVersion":"v1"}"#,
            // Whitespace from another writer.
            "{ \"kind\" : \"X\", \"metadata\" : { \"name\" : \"c\" } }",
            // No metadata, metadata that is not an object, not an object at all.
            r#"{"kind":"X"}"#,
            r#"{"kind":"X","metadata":null}"#,
            r#"["not","an","object"]"#,
            // Duplicate keys: the last one wins either way.
            r#"{"kind":"A","kind":"B","metadata":{"name":"x","name":"y"}}"#,
        ];
        for text in stored {
            let kv = kv(text);
            let mut fast = Vec::new();
            write_served(&kv, &mut fast).expect("writes");
            let fast: Value = serde_json::from_slice(&fast).expect("valid JSON");
            let slow: Value = serde_json::from_slice(&slow(&kv)).expect("valid JSON");
            assert_eq!(fast, slow, "{text}");
        }
        // Compact sorted input (what the store holds) is copied byte for byte.
        let kv = kv(stored[0]);
        let mut fast = Vec::new();
        write_served(&kv, &mut fast).expect("writes");
        assert_eq!(fast, slow(&kv));
        assert!(write_served(&self::tests::kv("{not json"), &mut Vec::new()).is_err());
    }

    #[test]
    fn encoded_lists_match_the_tree_encoding() {
        let a = kv(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}"#);
        let b = kv(r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}"#);
        let b_obj = from_stored(&b).expect("decodes");
        let meta = json!({"resourceVersion": "42", "continue": "abc", "remainingItemCount": 3});
        let items = [(&a, None), (&b, Some(b_obj.clone()))];
        let configmaps = super::super::resources::find("", "v1", "configmaps").expect("served");
        let encoded = encode_list(configmaps, &items, &meta).expect("encodes");
        let tree = json!({
            "kind": "ConfigMapList",
            "apiVersion": "v1",
            "metadata": meta,
            "items": [from_stored(&a).expect("decodes"), b_obj],
        });
        assert_eq!(
            encoded.as_ref(),
            serde_json::to_vec(&tree).expect("encodes")
        );
        let deployments =
            super::super::resources::find("apps", "v1", "deployments").expect("served");
        let empty = encode_list(deployments, &[], &json!({})).expect("encodes");
        assert_eq!(
            empty.as_ref(),
            br#"{"apiVersion":"apps/v1","items":[],"kind":"DeploymentList","metadata":{}}"#
        );
    }
}
