//! Moving a cluster's state from the embedded store into etcd: a cluster made with one server
//! keeps it in that server's volume, and gets its first etcd member when a second server is
//! added (`kcluster node add --role server`).
//!
//! Resource versions must never move backwards for a client: an informer resuming a watch
//! from a version it saw before the move would otherwise be told that version lies in the
//! future (kube-rs retries that forever). So etcd's revision is first raised past the embedded
//! store's, and only then are the keys written: every object comes out of the move with a
//! resourceVersion newer than any a client has seen, and a watch resumed from an old one
//! replays each object as added.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use super::super::lease::now_ms;
use super::super::{KeyValue, LeaseId, Revision, Store, StoreError};
use super::client::{Client, EtcdConfig};
use super::wire::{self, RangeResponse, TxnResponse};

/// etcd refuses a transaction of more than 128 operations (`--max-txn-ops`) or a request over
/// 1.5 MiB (`--max-request-bytes`); stay under both.
const BATCH_OPS: usize = 100;
const BATCH_BYTES: usize = 1024 * 1024;

/// Writes in flight while etcd's revision is raised: etcd commits concurrent writes together,
/// so this is what makes tens of thousands of revisions take seconds rather than minutes.
const BUMPS_IN_FLIGHT: usize = 64;

/// What a move did.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub keys: usize,
    /// The embedded store's revision.
    pub from: Revision,
    /// etcd's revision once every key was written.
    pub to: Revision,
}

/// Writes every key of `embedded` under `prefix` in etcd, after raising etcd's revision to at
/// least the embedded store's. What `prefix` held before is replaced: a move cut short (the
/// node stopped halfway) is simply done again.
pub async fn import_embedded(
    config: &EtcdConfig,
    prefix: &str,
    embedded: &Store,
) -> Result<Imported, StoreError> {
    if embedded.is_etcd() {
        return Err(StoreError::Backend(
            "the store to move into etcd is already on etcd".into(),
        ));
    }
    let client = Client::new(config)?;
    let (kvs, from) = embedded.list("")?;
    let start = wire::b64(prefix.as_bytes());
    let end = wire::b64(&wire::prefix_end(prefix.as_bytes()));
    let _: serde_json::Value = client
        .call(
            "/v3/kv/deleterange",
            &json!({"key": start, "range_end": end}),
        )
        .await?;
    let floor = floor_key(prefix);
    let probe: RangeResponse = client
        .call(
            "/v3/kv/range",
            &json!({"key": wire::b64(floor.as_bytes()), "count_only": true}),
        )
        .await?;
    raise_revision(&client, &floor, from - probe.header.revision).await?;
    let leased = embedded.leased_keys()?;
    // Leased keys (Events) keep their time to live, each under an etcd lease of its own (see
    // `Store::lease_for`).
    let mut granted: HashMap<&str, LeaseId> = HashMap::new();
    for (key, ends) in &leased {
        let left = (ends - now_ms()).max(1000) / 1000;
        granted.insert(key, super::grant(&client, left).await?);
    }
    let mut to = probe.header.revision;
    for batch in batches(&kvs) {
        let ops: Vec<_> = batch
            .iter()
            .map(|kv| {
                let lease = granted.get(kv.key.as_str()).copied();
                wire::put(format!("{prefix}{}", kv.key).as_bytes(), &kv.value, lease)
            })
            .collect();
        let answer: TxnResponse = client
            .call("/v3/kv/txn", &json!({"compare": [], "success": ops}))
            .await?;
        to = answer.header.revision;
    }
    let _: serde_json::Value = client
        .call(
            "/v3/kv/deleterange",
            &json!({"key": wire::b64(floor.as_bytes())}),
        )
        .await?;
    Ok(Imported {
        keys: kvs.len(),
        from,
        to,
    })
}

/// A key outside the cluster's prefix (and every other cluster's: names hold no `#`), whose
/// writes only move the revision.
fn floor_key(prefix: &str) -> String {
    format!("{}#revision-floor", prefix.trim_end_matches('/'))
}

/// Makes `count` revisions: one write each, many in flight.
async fn raise_revision(client: &Client, key: &str, count: Revision) -> Result<(), StoreError> {
    if count <= 0 {
        return Ok(());
    }
    tracing::info!(
        revisions = count,
        "raising etcd's revision past the embedded store's"
    );
    let body = json!({"key": wire::b64(key.as_bytes()), "value": wire::b64(b"")});
    futures::stream::iter(0..count)
        .map(|_| client.call::<serde_json::Value>("/v3/kv/put", &body))
        .buffer_unordered(BUMPS_IN_FLIGHT)
        .try_for_each(|_| async { Ok(()) })
        .await
}

/// The keys in transactions etcd takes; a key too big for one is alone in its own (and etcd
/// answers for it).
fn batches(kvs: &[KeyValue]) -> Vec<&[KeyValue]> {
    let mut out = Vec::new();
    let mut first = 0;
    let mut bytes = 0;
    for (i, kv) in kvs.iter().enumerate() {
        let size = kv.key.len() + kv.value.len();
        if i > first && (i - first == BATCH_OPS || bytes + size > BATCH_BYTES) {
            out.push(&kvs[first..i]);
            first = i;
            bytes = 0;
        }
        bytes += size;
    }
    if first < kvs.len() {
        out.push(&kvs[first..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn kv(key: &str, len: usize) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(vec![b'x'; len]),
            create_revision: 1,
            mod_revision: 1,
        }
    }

    #[test]
    fn batches_stay_under_etcds_limits_and_keep_every_key_once() {
        let mut kvs: Vec<KeyValue> = (0..250).map(|i| kv(&format!("k{i:03}"), 10)).collect();
        kvs.insert(10, kv("big", 2 * BATCH_BYTES));
        kvs.insert(20, kv("half1", BATCH_BYTES / 2));
        kvs.insert(21, kv("half2", BATCH_BYTES / 2));
        let cut = batches(&kvs);
        let flat: Vec<&str> = cut
            .iter()
            .flat_map(|b| b.iter())
            .map(|k| k.key.as_str())
            .collect();
        assert_eq!(flat, kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>());
        for b in &cut {
            assert!(b.len() <= BATCH_OPS, "{} ops", b.len());
            let bytes: usize = b.iter().map(|k| k.key.len() + k.value.len()).sum();
            assert!(
                b.len() == 1 || bytes <= BATCH_BYTES,
                "{bytes} bytes in {} ops",
                b.len()
            );
        }
        assert!(cut.iter().any(|b| b.len() == 1 && b[0].key == "big"));
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn the_floor_key_lies_outside_the_clusters_prefix() {
        let prefix = crate::store::etcd::cluster_prefix("dev");
        assert!(!floor_key(&prefix).starts_with(&prefix));
        assert!(!floor_key(&prefix).starts_with(&crate::store::etcd::cluster_prefix("dev2")));
    }
}
