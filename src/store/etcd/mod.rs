//! The store on etcd: for clusters whose state must outlive one machine, or that share it
//! between several API servers.
//!
//! etcd holds the truth; this process keeps a mirror of its part of the keyspace (everything
//! under the cluster's prefix) in an in-memory store, fed by one etcd watch. Reads, watches and
//! history come from the mirror, so they keep the embedded store's synchronous, never-blocking
//! API (the way kube-apiserver serves most reads from its watch cache). Writes are etcd
//! transactions that compare the key's revision, so two API servers cannot both win a
//! conflicting update; a write returns only once the mirror has applied it, so a client reads
//! its own writes from any path. Revisions are etcd's own: resourceVersions stay comparable
//! between API servers.

mod client;
mod import;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tokio::sync::watch as notify;
use tokio::task::JoinHandle;

use client::Client;
pub use client::EtcdConfig;
pub use import::import_embedded;
use wire::{RangeResponse, TxnResponse, WatchMessage};

use super::writer::{Change, Op};
use super::{KeyValue, LeaseId, Revision, Store, StoreError, StoreOptions};

/// Keys per range call while seeding the mirror; keeps each answer well under etcd's limits.
const SEED_PAGE: i64 = 500;

/// How long a write waits for the mirror to apply it before reporting the mirror as stuck.
const MIRROR_WAIT: Duration = Duration::from_secs(30);

/// How often etcd's own history is compacted, to what was current one interval earlier
/// (kube-apiserver's default interval).
const ETCD_COMPACTION_INTERVAL: Duration = Duration::from_secs(5 * 60);

pub(super) struct Remote {
    client: Client,
    /// The cluster's part of the keyspace, e.g. `/kcluster/dev/`; stripped from every key.
    prefix: String,
    /// The latest revision the mirror has applied.
    mirrored: notify::Receiver<Revision>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Remote {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The etcd key prefix of a cluster: several clusters may share one etcd.
pub fn cluster_prefix(cluster: &str) -> String {
    format!("/kcluster/{cluster}/")
}

impl Store {
    /// Connects to etcd, mirrors everything under `prefix` and keeps the mirror current. Fails
    /// (naming the endpoints) if etcd cannot be reached now. Needs a tokio runtime.
    pub async fn etcd(config: &EtcdConfig, prefix: &str) -> Result<Store, StoreError> {
        let client = Client::new(config)?;
        // Seeded first: a server waiting for its etcd member retries this every second.
        let (kvs, revision) = seed(&client, prefix).await?;
        let local = Store::in_memory_with(StoreOptions {
            // The mirror lives in memory: keep its page cache small, it only indexes.
            cache_size: 16 * 1024 * 1024,
            ..StoreOptions::default()
        })?;
        let keys = kvs.len();
        local.submit(Op::Reset { kvs, revision }).await?;
        let (tell, mirrored) = notify::channel(revision);
        let follow = tokio::spawn(follow(
            client.clone(),
            prefix.to_owned(),
            local.clone(),
            tell,
        ));
        let compact = tokio::spawn(compact_etcd(client.clone(), mirrored.clone()));
        tracing::info!(
            endpoints = ?config.endpoints,
            prefix,
            revision,
            keys,
            "store: following etcd"
        );
        Ok(Store {
            inner: local.inner.clone(),
            remote: Some(Arc::new(Remote {
                client,
                prefix: prefix.to_owned(),
                mirrored,
                tasks: vec![follow, compact],
            })),
        })
    }
}

impl Store {
    /// Whether the store can serve a linearizable read now: etcd answers through its quorum
    /// within `HEALTH_TIMEOUT` (kube-apiserver's etcd check reads a key the same way). The
    /// embedded store is always healthy while the process runs.
    pub async fn check_health(&self) -> Result<(), StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let key = format!("{}health", remote.prefix);
        let body = json!({"key": wire::b64(key.as_bytes()), "count_only": true});
        match tokio::time::timeout(
            HEALTH_TIMEOUT,
            remote
                .client
                .call::<serde_json::Value>("/v3/kv/range", &body),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Backend(format!(
                "etcd did not answer a read within {HEALTH_TIMEOUT:?}"
            ))),
        }
    }
}

impl Store {
    /// Waits until this store holds everything etcd's quorum has committed now, so a read
    /// after it is as current as kube-apiserver's quorum reads (GET and LIST without a
    /// resourceVersion). Fails when etcd cannot answer a linearizable read, as during a loss
    /// of quorum, rather than serve the mirror's possibly stale state. The embedded store is
    /// always current.
    pub async fn consistent(&self) -> Result<(), StoreError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        tokio::time::timeout(CONSISTENT_READ_TIMEOUT, remote.catch_up(self))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Backend(format!(
                    "etcd did not confirm the latest state within {CONSISTENT_READ_TIMEOUT:?}"
                )))
            })
    }
}

/// How long a quorum read may take before the request fails.
const CONSISTENT_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Remote {
    /// Brings the mirror up to etcd's quorum. One linearizable read of a single key gives
    /// etcd's revision; a mirror already there is current (the usual case: the cluster's own
    /// etcd, idle or not, only ever moves by the mirror's keys). When etcd has moved past the
    /// mirror, either the mirror's changes are still on their way or others write to the same
    /// etcd (revisions the mirror never sees): then the prefix is read at that revision, and the
    /// mirror is current if nothing under the prefix changed since its revision and both hold
    /// as many keys; otherwise the next applied change is waited for and all of it repeated.
    /// `mirror` is the store whose local part (its key count and revision) is compared.
    async fn catch_up(&self, mirror: &Store) -> Result<(), StoreError> {
        let start = wire::b64(self.prefix.as_bytes());
        let end = wire::b64(&wire::prefix_end(self.prefix.as_bytes()));
        loop {
            let (count, mirrored) = mirror.key_count()?;
            let probe: RangeResponse = self
                .client
                .call("/v3/kv/range", &json!({"key": start, "count_only": true}))
                .await?;
            let revision = probe.header.revision;
            if revision <= mirrored {
                return Ok(());
            }
            let at = |extra: serde_json::Value| {
                let mut r =
                    json!({"key": start, "range_end": end, "revision": revision.to_string()});
                for (k, v) in extra.as_object().into_iter().flatten() {
                    r[k] = v.clone();
                }
                r
            };
            let all: RangeResponse = self
                .client
                .call("/v3/kv/range", &at(json!({"count_only": true})))
                .await?;
            if u64::try_from(all.count).ok() == Some(count) {
                let changed: RangeResponse = self
                    .client
                    .call(
                        "/v3/kv/range",
                        &at(json!({"keys_only": true,
                                   "min_mod_revision": (mirrored + 1).to_string()})),
                    )
                    .await?;
                if changed.kvs.is_empty() {
                    return Ok(());
                }
            }
            let mut seen = self.mirrored.clone();
            seen.wait_for(|r| *r > mirrored)
                .await
                .map_err(|_| StoreError::Backend("the etcd mirror has stopped".into()))?;
        }
    }
}

/// A health read that takes longer fails: a load balancer checks every 2 s.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// Checks, before a cluster is made, that etcd answers and holds nothing under `prefix` yet.
pub async fn check_empty(config: &EtcdConfig, prefix: &str) -> Result<(), StoreError> {
    let client = Client::new(config)?;
    let body = json!({
        "key": wire::b64(prefix.as_bytes()),
        "range_end": wire::b64(&wire::prefix_end(prefix.as_bytes())),
        "count_only": true,
    });
    let answer: serde_json::Value = client.call("/v3/kv/range", &body).await?;
    let count = answer
        .get("count")
        .and_then(|c| {
            c.as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .or(c.as_u64())
        })
        .unwrap_or(0);
    if count > 0 {
        return Err(StoreError::AlreadyExists {
            key: prefix.to_owned(),
        });
    }
    Ok(())
}

/// Deletes every key under `prefix` (a deleted cluster's state); returns how many there were.
pub async fn wipe(config: &EtcdConfig, prefix: &str) -> Result<u64, StoreError> {
    let client = Client::new(config)?;
    let body = json!({
        "key": wire::b64(prefix.as_bytes()),
        "range_end": wire::b64(&wire::prefix_end(prefix.as_bytes())),
    });
    let answer: serde_json::Value = client.call("/v3/kv/deleterange", &body).await?;
    Ok(answer
        .get("deleted")
        .and_then(|c| {
            c.as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .or(c.as_u64())
        })
        .unwrap_or(0))
}

/// Grants an etcd lease of `ttl_secs` (at least 1).
async fn grant(client: &Client, ttl_secs: i64) -> Result<LeaseId, StoreError> {
    #[derive(serde::Deserialize)]
    struct Granted {
        #[serde(rename = "ID")]
        id: String,
    }
    let granted: Granted = client
        .call(
            "/v3/lease/grant",
            &json!({"TTL": ttl_secs.max(1).to_string()}),
        )
        .await?;
    granted.id.parse().map_err(|_| {
        StoreError::Backend(format!("etcd granted a lease with the ID {:?}", granted.id))
    })
}

/// One member of an etcd cluster as its membership API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// etcd's member ID (a uint64, as JSON carries it: a decimal string).
    pub id: String,
    /// Empty for a member added but not started yet.
    pub name: String,
    pub peer_urls: Vec<String>,
}

fn members_of(answer: &serde_json::Value) -> Vec<Member> {
    answer
        .get("members")
        .and_then(serde_json::Value::as_array)
        .map(|members| {
            members
                .iter()
                .map(|m| Member {
                    id: match m.get("ID") {
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(other) => other.to_string(),
                        None => String::new(),
                    },
                    name: m
                        .get("name")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    peer_urls: m
                        .get("peerURLs")
                        .and_then(serde_json::Value::as_array)
                        .map(|u| {
                            u.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The members of the etcd cluster behind `config`.
pub async fn members(config: &EtcdConfig) -> Result<Vec<Member>, StoreError> {
    let client = Client::new(config)?;
    let answer: serde_json::Value = client.call("/v3/cluster/member/list", &json!({})).await?;
    Ok(members_of(&answer))
}

/// Adds a member that will listen on `peer_url`; returns every member, the new one included
/// (with no name until it starts).
pub async fn add_member(config: &EtcdConfig, peer_url: &str) -> Result<Vec<Member>, StoreError> {
    let client = Client::new(config)?;
    let answer: serde_json::Value = client
        .call("/v3/cluster/member/add", &json!({"peerURLs": [peer_url]}))
        .await?;
    Ok(members_of(&answer))
}

/// Removes the member with etcd's ID `id`.
pub async fn remove_member(config: &EtcdConfig, id: &str) -> Result<(), StoreError> {
    let client = Client::new(config)?;
    let _: serde_json::Value = client
        .call("/v3/cluster/member/remove", &json!({"ID": id}))
        .await?;
    Ok(())
}

/// Everything under `prefix` at one revision, page by page.
async fn seed(client: &Client, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
    let end = wire::b64(&wire::prefix_end(prefix.as_bytes()));
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut kvs = Vec::new();
    loop {
        let mut body = json!({
            "key": wire::b64(&from),
            "range_end": end,
            "limit": SEED_PAGE.to_string(),
        });
        if revision > 0 {
            body["revision"] = json!(revision.to_string());
        }
        let page: RangeResponse = client.call("/v3/kv/range", &body).await?;
        if revision == 0 {
            revision = page.header.revision;
        }
        let last = page.kvs.last().map(|kv| kv.key.clone());
        for kv in page.kvs {
            kvs.push(kv.into_kv(prefix)?);
        }
        match (page.more, last) {
            (true, Some(mut key)) => {
                key.push(0);
                from = key;
            }
            _ => return Ok((kvs, revision)),
        }
    }
}

/// Applies etcd's changes to the mirror, for as long as the store lives: reconnects after a
/// broken stream, and starts over from a fresh copy if etcd compacted what the mirror missed.
async fn follow(client: Client, prefix: String, local: Store, tell: notify::Sender<Revision>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let from = local.current_revision() + 1;
        match follow_once(&client, &prefix, &local, &tell, from).await {
            Ok(Resume::Reseed) => {
                tracing::warn!(
                    "store: etcd compacted past the mirror; copying the cluster's keys again (open watches restart)"
                );
                match seed(&client, &prefix).await {
                    Ok((kvs, revision)) => match local.submit(Op::Reset { kvs, revision }).await {
                        Ok(_) => {
                            let _ = tell.send(revision);
                            backoff = Duration::from_millis(200);
                            continue;
                        }
                        Err(e) => tracing::error!(error = %e, "store: resetting the mirror failed"),
                    },
                    Err(e) => tracing::warn!(error = %e, "store: copying from etcd failed"),
                }
            }
            Ok(Resume::Reconnect) => backoff = Duration::from_millis(200),
            Err(e) => tracing::warn!(error = %e, "store: etcd watch failed; reconnecting"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

enum Resume {
    Reconnect,
    Reseed,
}

async fn follow_once(
    client: &Client,
    prefix: &str,
    local: &Store,
    tell: &notify::Sender<Revision>,
    from: Revision,
) -> Result<Resume, StoreError> {
    let body = json!({"create_request": {
        "key": wire::b64(prefix.as_bytes()),
        "range_end": wire::b64(&wire::prefix_end(prefix.as_bytes())),
        "start_revision": from.to_string(),
    }});
    let mut stream = client.watch(&body).await?;
    while let Some(message) = stream.next().await {
        let WatchMessage { result, error } = message?;
        if let Some(error) = error {
            return Err(StoreError::Backend(format!("etcd watch: {error}")));
        }
        let Some(result) = result else { continue };
        if result.compact_revision > 0 {
            return Ok(Resume::Reseed);
        }
        if result.canceled {
            return Err(StoreError::Backend(format!(
                "etcd cancelled the watch: {}",
                result.cancel_reason
            )));
        }
        if result.events.is_empty() {
            continue;
        }
        let mut changes = Vec::with_capacity(result.events.len());
        for event in result.events {
            let revision = event.kv.mod_revision;
            changes.push(match event.kind.as_deref() {
                Some("DELETE") => Change::Delete {
                    key: event.kv.into_kv(prefix)?.key,
                    revision,
                },
                _ => Change::Put(event.kv.into_kv(prefix)?),
            });
        }
        local.submit(Op::Mirror { changes }).await?;
        let _ = tell.send(local.current_revision());
    }
    Ok(Resume::Reconnect)
}

/// Compacts etcd every interval to the revision the mirror had reached one interval before.
async fn compact_etcd(client: Client, mirrored: notify::Receiver<Revision>) {
    let mut previous: Option<Revision> = None;
    loop {
        tokio::time::sleep(ETCD_COMPACTION_INTERVAL).await;
        if let Some(revision) = previous {
            let body = json!({"revision": revision.to_string()});
            match client
                .call::<serde_json::Value>("/v3/kv/compaction", &body)
                .await
            {
                Ok(_) => tracing::debug!(revision, "store: compacted etcd"),
                // Another API server sharing the etcd got there first.
                Err(e) if e.to_string().contains("compacted") => {}
                Err(e) => tracing::warn!(error = %e, "store: compacting etcd failed"),
            }
        }
        previous = Some(*mirrored.borrow());
    }
}

/// The compare an update or delete goes ahead on: the key still at `expected`, or (none
/// expected) the key existing at all.
fn guard(full: &[u8], expected: Option<Revision>) -> serde_json::Value {
    match expected {
        Some(e) => wire::compare(full, "MOD", "EQUAL", e),
        None => wire::compare(full, "CREATE", "GREATER", 0),
    }
}

impl Remote {
    fn key(&self, key: &str) -> Vec<u8> {
        format!("{}{key}", self.prefix).into_bytes()
    }

    async fn txn(
        &self,
        compare: serde_json::Value,
        success: serde_json::Value,
        key: &[u8],
    ) -> Result<TxnResponse, StoreError> {
        let body = json!({
            "compare": [compare],
            "success": [success],
            "failure": [wire::get(key)],
        });
        self.client.call("/v3/kv/txn", &body).await
    }

    /// Waits until the mirror has applied `revision`, so the writer reads what it wrote.
    async fn mirrored(&self, revision: Revision) -> Result<(), StoreError> {
        let mut seen = self.mirrored.clone();
        match tokio::time::timeout(MIRROR_WAIT, seen.wait_for(|r| *r >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Backend("the etcd mirror has stopped".into())),
            Err(_) => Err(StoreError::Backend(format!(
                "written to etcd at revision {revision}, but the watch of etcd has not delivered it within {MIRROR_WAIT:?}"
            ))),
        }
    }

    /// Why a compare failed: the key is gone, or it moved on.
    fn refusal(&self, key: &str, answer: &TxnResponse, expected: Option<Revision>) -> StoreError {
        let current = answer
            .responses
            .first()
            .and_then(|r| r.response_range.as_ref())
            .and_then(|r| r.kvs.first());
        match (current, expected) {
            (None, _) => StoreError::NotFound {
                key: key.to_owned(),
            },
            (Some(kv), Some(expected)) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                actual: kv.mod_revision,
            },
            (Some(_), None) => {
                StoreError::Backend(format!("etcd refused an unconditional write of {key:?}"))
            }
        }
    }

    pub(super) async fn create(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<KeyValue, StoreError> {
        let full = self.key(key);
        let answer = self
            .txn(
                wire::compare(&full, "CREATE", "EQUAL", 0),
                wire::put(&full, &value, lease),
                &full,
            )
            .await?;
        if !answer.succeeded {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        let revision = answer.header.revision;
        self.mirrored(revision).await?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: revision,
            mod_revision: revision,
        })
    }

    pub(super) async fn update(
        &self,
        local: &Store,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
        lease: Option<LeaseId>,
    ) -> Result<KeyValue, StoreError> {
        let full = self.key(key);
        // A byte-identical update writes nothing (as the embedded store): confirmed against
        // etcd, since the mirror may lag another API server's write.
        if let Some(current) = local.get(key)?
            && current.value == value
            && expected.is_none_or(|e| e == current.mod_revision)
        {
            let body = json!({
                "compare": [wire::compare(&full, "MOD", "EQUAL", current.mod_revision)],
                "success": [],
                "failure": [],
            });
            let answer: TxnResponse = self.client.call("/v3/kv/txn", &body).await?;
            if answer.succeeded {
                return Ok(current);
            }
        }
        let answer = self
            .txn(
                guard(&full, expected),
                wire::put(&full, &value, lease),
                &full,
            )
            .await?;
        if !answer.succeeded {
            return Err(self.refusal(key, &answer, expected));
        }
        let prev = answer
            .responses
            .into_iter()
            .next()
            .and_then(|r| r.response_put)
            .and_then(|p| p.prev_kv)
            .ok_or_else(|| StoreError::Backend("etcd's put answer lacks prev_kv".into()))?;
        let revision = answer.header.revision;
        self.mirrored(revision).await?;
        Ok(KeyValue {
            key: key.to_owned(),
            value,
            create_revision: prev.create_revision,
            mod_revision: revision,
        })
    }

    /// etcd's own lease: its keys are deleted by etcd, and the mirror hears of it.
    pub(super) async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        grant(&self.client, ttl.as_secs() as i64).await
    }

    pub(super) async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self
            .client
            .call::<serde_json::Value>("/v3/lease/revoke", &json!({"ID": lease.to_string()}))
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Backend(m)) if m.contains("requested lease not found") => {
                Err(StoreError::LeaseNotFound { lease })
            }
            Err(e) => Err(e),
        }
    }

    pub(super) async fn delete(
        &self,
        key: &str,
        expected: Option<Revision>,
    ) -> Result<(KeyValue, Revision), StoreError> {
        let full = self.key(key);
        let answer = self
            .txn(guard(&full, expected), wire::delete(&full), &full)
            .await?;
        if !answer.succeeded {
            return Err(self.refusal(key, &answer, expected));
        }
        let prev = answer
            .responses
            .into_iter()
            .next()
            .and_then(|r| r.response_delete_range)
            .and_then(|d| d.prev_kvs.into_iter().next())
            .ok_or_else(|| StoreError::Backend("etcd's delete answer lacks prev_kvs".into()))?
            .into_kv(&self.prefix)?;
        let revision = answer.header.revision;
        self.mirrored(revision).await?;
        Ok((prev, revision))
    }
}
