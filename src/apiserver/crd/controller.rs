//! The apiextensions controllers, run inside the API server beside its store: names checked
//! against the other definitions of the group (NamesAccepted), Established, storedVersions, and
//! the `customresourcecleanup` finalizer. Every change of a definition reconciles them all; the
//! served-resources table is rebuilt before the new status is written, so a client that sees
//! Established can use the resource at once.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::CLEANUP_FINALIZER;
use crate::apiserver::kinds::json as j;
use crate::apiserver::object;
use crate::store::{KeyValue, Store, StoreError};

pub const PREFIX: &str = "/registry/apiextensions.k8s.io/customresourcedefinitions/";

/// How often definitions being deleted look again at objects that still have finalizers.
const CLEANUP_RETRY: Duration = Duration::from_secs(1);

/// Reconciles once, then on every change of a definition until the store goes away.
pub async fn run(store: Store) {
    loop {
        let after = store.current_revision();
        if let Err(e) = reconcile(&store).await {
            warn!(
                error = format!("{e:#}"),
                "custom resource definitions: reconcile failed"
            );
        }
        let mut watch = match store.watch(PREFIX, after) {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "custom resource definitions: cannot watch");
                tokio::time::sleep(CLEANUP_RETRY).await;
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout(CLEANUP_RETRY, watch.next_event()).await;
            match next {
                Ok(Some(Ok(_))) | Err(_) => {
                    if let Err(e) = reconcile(&store).await {
                        warn!(
                            error = format!("{e:#}"),
                            "custom resource definitions: reconcile failed"
                        );
                    }
                }
                Ok(Some(Err(_))) => break,
                Ok(None) => return,
            }
        }
    }
}

fn condition(ty: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({"type": ty, "status": if status { "True" } else { "False" },
           "reason": reason, "message": message})
}

/// The names this definition asks for, in the order Kubernetes checks them.
fn requested(crd: &Value) -> Value {
    j::at(j::at(crd, "spec"), "names").clone()
}

/// Whether `names` clashes with names another definition of the group already holds.
fn conflict(names: &Value, taken: &[Value]) -> Option<(&'static str, String)> {
    let all = |n: &Value| -> Vec<String> {
        let mut v = vec![
            j::str_or(n, "plural").to_string(),
            j::str_or(n, "singular").to_string(),
        ];
        v.extend(
            j::items(n, "shortNames")
                .filter_map(Value::as_str)
                .map(str::to_string),
        );
        v.retain(|s| !s.is_empty());
        v
    };
    for other in taken {
        let plural = j::str_or(names, "plural");
        if all(other).iter().any(|s| s == plural) {
            return Some(("PluralConflict", format!("{plural:?} is already in use")));
        }
        let singular = j::str_or(names, "singular");
        if !singular.is_empty() && all(other).iter().any(|s| s == singular) {
            return Some((
                "SingularConflict",
                format!("{singular:?} is already in use"),
            ));
        }
        for short in j::items(names, "shortNames").filter_map(Value::as_str) {
            if all(other).iter().any(|s| s == short) {
                return Some(("ShortNamesConflict", format!("{short:?} is already in use")));
            }
        }
        let kind = j::str_or(names, "kind");
        if kind == j::str_or(other, "kind") || kind == j::str_or(other, "listKind") {
            return Some(("KindConflict", format!("{kind:?} is already in use")));
        }
        let list = j::str_or(names, "listKind");
        if list == j::str_or(other, "kind") || list == j::str_or(other, "listKind") {
            return Some(("ListKindConflict", format!("{list:?} is already in use")));
        }
    }
    None
}

/// Keeps each condition's lastTransitionTime while its status stays the same.
fn merge_conditions(old: &Value, wanted: Vec<Value>) -> Vec<Value> {
    let now = object::now_rfc3339();
    wanted
        .into_iter()
        .map(|mut c| {
            let previous = j::items(old, "conditions").find(|o| o["type"] == c["type"]);
            c["lastTransitionTime"] = match previous {
                Some(p) if p["status"] == c["status"] => p["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            c
        })
        .collect()
}

/// The status each definition should have; definitions are judged oldest first, so the one
/// that got a name first keeps it.
fn desired(crds: &mut [(KeyValue, Value)]) {
    crds.sort_by_key(|(kv, _)| kv.create_revision);
    let mut taken: Vec<(String, Value)> = Vec::new();
    for (_, crd) in crds.iter_mut() {
        let group = j::str_or(j::at(crd, "spec"), "group").to_string();
        let status = j::at(crd, "status").clone();
        let asked = requested(crd);
        let established_before = j::items(&status, "conditions")
            .any(|c| j::str_or(c, "type") == "Established" && j::str_or(c, "status") == "True");
        let others: Vec<Value> = taken
            .iter()
            .filter(|(g, _)| *g == group)
            .map(|(_, n)| n.clone())
            .collect();
        let mut conditions = Vec::new();
        let accepted = match conflict(&asked, &others) {
            None => {
                conditions.push(condition(
                    "NamesAccepted",
                    true,
                    "NoConflicts",
                    "no conflicts found",
                ));
                asked.clone()
            }
            Some((reason, message)) => {
                conditions.push(condition("NamesAccepted", false, reason, &message));
                // Names accepted before stay in force.
                status
                    .get("acceptedNames")
                    .cloned()
                    .unwrap_or(json!({"kind": "", "plural": ""}))
            }
        };
        let names_ok = !j::str_or(&accepted, "plural").is_empty();
        if names_ok {
            taken.push((group, accepted.clone()));
        }
        // Once established, a definition stays so while a later change's names conflict.
        conditions.push(if names_ok || established_before {
            condition(
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
            )
        } else {
            condition(
                "Established",
                false,
                "NotAccepted",
                "not all names are accepted",
            )
        });
        if crd.pointer("/metadata/deletionTimestamp").is_some() {
            conditions.push(condition(
                "Terminating",
                true,
                "InstanceDeletionInProgress",
                "CustomResource deletion is in progress",
            ));
        }
        let mut stored: Vec<Value> = j::items(&status, "storedVersions").cloned().collect();
        for v in j::items(j::at(crd, "spec"), "versions") {
            if j::bool_at(v, "storage") == Some(true) {
                let name = json!(j::str_or(v, "name"));
                if !stored.contains(&name) {
                    stored.push(name);
                }
            }
        }
        let conditions = merge_conditions(&status, conditions);
        crd["status"] = json!({"acceptedNames": accepted, "conditions": conditions,
                               "storedVersions": stored});
    }
}

pub async fn reconcile(store: &Store) -> Result<()> {
    let (kvs, _) = store.list(PREFIX).context("cannot list definitions")?;
    let mut crds: Vec<(KeyValue, Value)> = Vec::new();
    for kv in kvs {
        let obj = object::from_stored(&kv).map_err(|e| anyhow::anyhow!(e.message))?;
        crds.push((kv, obj));
    }
    let before: Vec<Value> = crds.iter().map(|(_, c)| c.clone()).collect();
    desired(&mut crds);
    // Served first: whoever reads Established may use the resource straight away.
    super::rebuild(&crds.iter().map(|(_, c)| c.clone()).collect::<Vec<_>>());
    for ((kv, crd), old) in crds.iter().zip(before.iter()) {
        if crd["status"] != old["status"] {
            let mut obj = crd.clone();
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
            match store
                .update(
                    &kv.key,
                    object::to_stored(&obj).map_err(|e| anyhow::anyhow!(e.message))?,
                    Some(kv.mod_revision),
                )
                .await
            {
                // Someone else wrote it meanwhile: their change brings another reconcile.
                Ok(_) | Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => return Err(e).context("cannot write a definition's status"),
            }
        }
        if crd.pointer("/metadata/deletionTimestamp").is_some() {
            cleanup(store, kv, crd).await?;
        }
    }
    Ok(())
}

/// Deletes every object of a definition being deleted; once none is left, the finalizer goes
/// and with it (when it was the last) the definition.
async fn cleanup(store: &Store, kv: &KeyValue, crd: &Value) -> Result<()> {
    let has_finalizer = j::items(j::at(crd, "metadata"), "finalizers")
        .any(|f| f.as_str() == Some(CLEANUP_FINALIZER));
    if !has_finalizer {
        return Ok(());
    }
    let spec = j::at(crd, "spec");
    let plural = j::str_or(j::at(spec, "names"), "plural");
    let group = j::str_or(spec, "group");
    let prefix = format!("/registry/{group}/{plural}/");
    let (objects, _) = store
        .list(&prefix)
        .context("cannot list a definition's objects")?;
    let mut left = 0;
    for o in &objects {
        let mut obj = object::from_stored(o).map_err(|e| anyhow::anyhow!(e.message))?;
        let finalized = j::items(j::at(&obj, "metadata"), "finalizers")
            .next()
            .is_some();
        if !finalized {
            match store.delete(&o.key, Some(o.mod_revision)).await {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(StoreError::Conflict { .. }) => left += 1,
                Err(e) => return Err(e).context("cannot delete a custom resource"),
            }
            continue;
        }
        left += 1;
        if obj.pointer("/metadata/deletionTimestamp").is_none() {
            obj["metadata"]["deletionTimestamp"] = json!(object::now_rfc3339());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
            let bytes = object::to_stored(&obj).map_err(|e| anyhow::anyhow!(e.message))?;
            if let Err(e) = store.update(&o.key, bytes, Some(o.mod_revision)).await {
                debug!(key = %o.key, error = %e, "marking a custom resource deleted failed; retrying");
            }
        }
    }
    if left > 0 {
        return Ok(());
    }
    let mut obj = crd.clone();
    let remaining: Vec<Value> = j::items(j::at(crd, "metadata"), "finalizers")
        .filter(|f| f.as_str() != Some(CLEANUP_FINALIZER))
        .cloned()
        .collect();
    let current = store.get(&kv.key).context("cannot read a definition")?;
    let Some(current) = current else {
        return Ok(());
    };
    if remaining.is_empty() {
        match store.delete(&kv.key, Some(current.mod_revision)).await {
            Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e).context("cannot remove a deleted definition"),
        }
    } else {
        obj["metadata"]["finalizers"] = Value::Array(remaining);
        let mut fresh = object::from_stored(&current).map_err(|e| anyhow::anyhow!(e.message))?;
        fresh["metadata"]["finalizers"] = obj["metadata"]["finalizers"].clone();
        if let Some(meta) = fresh.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        let bytes = object::to_stored(&fresh).map_err(|e| anyhow::anyhow!(e.message))?;
        match store
            .update(&kv.key, bytes, Some(current.mod_revision))
            .await
        {
            Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e).context("cannot remove the cleanup finalizer"),
        }
    }
    Ok(())
}
