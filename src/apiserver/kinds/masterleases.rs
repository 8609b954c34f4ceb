//! The `kubernetes` Service's endpoints when several API servers share one store:
//! kube-apiserver's "lease" endpoint reconciler. Every server records itself under
//! `/registry/masterleases/<ip>` with an expiry, every `INTERVAL`; the endpoints list the
//! addresses whose records are alive. A server that dies or stops drops out within `TTL` plus
//! one pass of another; one that comes back (with a new address, too) joins at its first pass.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::store::{Store, StoreError};

pub const PREFIX: &str = "/registry/masterleases/";
/// kube-apiserver's --endpoint-reconciler-type=lease: a 10 s sync, a 15 s lease.
pub const INTERVAL: Duration = Duration::from_secs(10);
pub const TTL: Duration = Duration::from_secs(15);

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Keeps `host`'s record and the endpoints current for as long as the task runs, from one
/// INTERVAL after the pass `kinds::bootstrap` made.
pub async fn run(store: Store, host: String, port: u16) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + INTERVAL, INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = reconcile(&store, &host, port, now_secs()).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "cannot update the kubernetes Service's endpoints"
            );
        }
    }
}

/// One pass at time `now` (seconds): renew this server's record, drop the expired ones,
/// publish the live addresses.
pub async fn reconcile(store: &Store, host: &str, port: u16, now: u64) -> Result<Vec<String>> {
    let key = format!("{PREFIX}{host}");
    let record = json!({"ip": host, "port": port, "expires": now + TTL.as_secs()});
    let bytes: bytes::Bytes = serde_json::to_vec(&record)?.into();
    match store.get(&key)? {
        Some(_) => store.update(&key, bytes, None).await,
        None => match store.create(&key, bytes.clone()).await {
            Err(StoreError::AlreadyExists { .. }) => store.update(&key, bytes, None).await,
            other => other,
        },
    }
    .with_context(|| format!("cannot record this API server in {key}"))?;
    let (records, _) = store.list(PREFIX)?;
    let mut live = Vec::new();
    for kv in records {
        let value: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
        let expires = value.get("expires").and_then(Value::as_u64).unwrap_or(0);
        match value.get("ip").and_then(Value::as_str) {
            Some(ip) if expires > now => live.push(ip.to_string()),
            _ => match store.delete(&kv.key, Some(kv.mod_revision)).await {
                // Renewed or removed by another server meanwhile: theirs to judge.
                Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e).context("cannot remove an expired API server record"),
            },
        }
    }
    live.sort();
    live.dedup();
    super::publish_kubernetes_endpoints(store, &live, port).await?;
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(store: &Store) -> Vec<String> {
        let key = super::super::def_of("", "endpoints")
            .expect("endpoints are served")
            .key(Some("default"), "kubernetes");
        let kv = store.get(&key).expect("read").expect("endpoints exist");
        let v: Value = serde_json::from_slice(&kv.value).expect("json");
        v.pointer("/subsets/0/addresses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.get("ip").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn endpoints_list_the_servers_whose_records_are_alive() {
        let store = Store::in_memory().expect("store");
        let t = 1_000_000;
        reconcile(&store, "172.18.0.3", 6443, t).await.expect("a");
        let live = reconcile(&store, "172.18.0.2", 6443, t + 1)
            .await
            .expect("b");
        assert_eq!(live, ["172.18.0.2", "172.18.0.3"]);
        assert_eq!(addresses(&store), ["172.18.0.2", "172.18.0.3"]);
        // .3 stops renewing: after the TTL only .2 is left, and .3's record is gone.
        let later = t + TTL.as_secs() + 1;
        let live = reconcile(&store, "172.18.0.2", 6443, later)
            .await
            .expect("b again");
        assert_eq!(live, ["172.18.0.2"]);
        assert_eq!(addresses(&store), ["172.18.0.2"]);
        assert!(
            store
                .get(&format!("{PREFIX}172.18.0.3"))
                .expect("read")
                .is_none()
        );
    }
}
