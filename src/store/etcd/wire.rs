//! etcd v3's JSON wire format, as its gRPC gateway (`/v3/...` on the client port) speaks it:
//! the protobuf messages in proto3's JSON mapping — bytes as base64, 64-bit integers as strings,
//! fields at their default value (false, 0, empty) left out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::super::{KeyValue, Revision, StoreError};

pub(super) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The key just past every key that starts with `prefix` (etcd's `range_end` for a prefix).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: etcd reads "\0" as "to the end of the keyspace".
    vec![0]
}

fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Number(i64),
    }
    match Int::deserialize(d)? {
        Int::Number(n) => Ok(n),
        Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn base64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let text = String::deserialize(d)?;
    STANDARD.decode(text).map_err(serde::de::Error::custom)
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Header {
    #[serde(default, deserialize_with = "int64")]
    pub revision: Revision,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct WireKv {
    #[serde(deserialize_with = "base64")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "base64")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "int64")]
    pub create_revision: Revision,
    #[serde(default, deserialize_with = "int64")]
    pub mod_revision: Revision,
}

impl WireKv {
    /// The store's view of it: the key with the cluster's prefix taken off.
    pub fn into_kv(self, prefix: &str) -> Result<KeyValue, StoreError> {
        let key = String::from_utf8(self.key)
            .map_err(|_| StoreError::Backend("etcd returned a key that is not UTF-8".into()))?;
        let key = key.strip_prefix(prefix).ok_or_else(|| {
            StoreError::Backend(format!("etcd returned {key:?}, outside {prefix:?}"))
        })?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: Bytes::from(self.value),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        })
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<WireKv>,
    #[serde(default)]
    pub more: bool,
    /// How many keys the range holds (what `count_only` asks for).
    #[serde(default, deserialize_with = "int64")]
    pub count: i64,
}

#[derive(Debug, Deserialize)]
pub(super) struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<OpResponse>,
}

#[derive(Debug, Deserialize)]
pub(super) struct OpResponse {
    #[serde(default)]
    pub response_range: Option<RangeResponse>,
    #[serde(default)]
    pub response_put: Option<PutResponse>,
    #[serde(default)]
    pub response_delete_range: Option<DeleteResponse>,
}

#[derive(Debug, Deserialize)]
pub(super) struct PutResponse {
    #[serde(default)]
    pub prev_kv: Option<WireKv>,
}

#[derive(Debug, Deserialize)]
pub(super) struct DeleteResponse {
    #[serde(default)]
    pub prev_kvs: Vec<WireKv>,
}

/// One message of a watch stream: `{"result": WatchResponse}` or `{"error": …}`.
#[derive(Debug, Deserialize)]
pub(super) struct WatchMessage {
    #[serde(default)]
    pub result: Option<WatchResponse>,
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct WatchResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default, deserialize_with = "int64")]
    pub compact_revision: Revision,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default)]
    pub events: Vec<WireEvent>,
}

#[derive(Debug, Deserialize)]
pub(super) struct WireEvent {
    /// "PUT" is the default and left out.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub kv: WireKv,
    #[serde(default)]
    pub prev_kv: Option<WireKv>,
}

/// A compare of a key's create or mod revision.
pub(super) fn compare(key: &[u8], target: &str, result: &str, revision: Revision) -> Value {
    let field = match target {
        "CREATE" => "create_revision",
        _ => "mod_revision",
    };
    json!({
        "key": b64(key),
        "target": target,
        "result": result,
        field: revision.to_string(),
    })
}

/// A put under `lease`; without one the key is freed of any, as etcd does.
pub(super) fn put(key: &[u8], value: &[u8], lease: Option<i64>) -> Value {
    let mut put = json!({"key": b64(key), "value": b64(value), "prev_kv": true});
    if let Some(lease) = lease {
        put["lease"] = json!(lease.to_string());
    }
    json!({ "request_put": put })
}

pub(super) fn delete(key: &[u8]) -> Value {
    json!({"request_delete_range": {"key": b64(key), "prev_kv": true}})
}

pub(super) fn get(key: &[u8]) -> Value {
    json!({"request_range": {"key": b64(key)}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bumps_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn reads_proto3_json_with_defaults_left_out() {
        let text = r#"{"header":{"revision":"7"},"succeeded":true,"responses":[
            {"response_put":{"header":{"revision":"7"},"prev_kv":{"key":"L3gvYQ==",
            "create_revision":"2","mod_revision":"5","version":"3","value":"djE="}}}]}"#;
        let txn: TxnResponse = serde_json::from_str(text).expect("valid txn response");
        assert_eq!(txn.header.revision, 7);
        assert!(txn.succeeded);
        let prev = txn.responses[0]
            .response_put
            .as_ref()
            .and_then(|p| p.prev_kv.clone())
            .expect("prev_kv");
        let kv = prev.into_kv("/x/").expect("inside the prefix");
        assert_eq!(kv.key, "a");
        assert_eq!(&kv.value[..], b"v1");
        assert_eq!((kv.create_revision, kv.mod_revision), (2, 5));

        let failed: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"9"},"responses":[{"response_range":{"header":{}}}]}"#,
        )
        .expect("valid");
        assert!(!failed.succeeded);
        assert!(
            failed.responses[0]
                .response_range
                .as_ref()
                .is_some_and(|r| r.kvs.is_empty())
        );
    }

    #[test]
    fn a_key_outside_the_prefix_is_an_error_not_a_rename() {
        let kv = WireKv {
            key: b"/other/a".to_vec(),
            value: vec![],
            create_revision: 1,
            mod_revision: 1,
        };
        assert!(kv.into_kv("/x/").is_err());
    }
}
