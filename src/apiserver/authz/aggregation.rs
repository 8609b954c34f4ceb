//! The ClusterRole aggregation controller: a ClusterRole with an `aggregationRule` holds the
//! rules of every other ClusterRole its `clusterRoleSelectors` select (in name order, each rule
//! once), kept current on every change of a ClusterRole. This is how `admin`, `edit` and `view`
//! pick up `rbac.authorization.k8s.io/aggregate-to-*` roles, a CRD's roles included.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;
use tracing::{debug, warn};

use super::rbac::Rule;
use crate::apiserver::selector;
use crate::store::{Store, StoreError};

const PREFIX: &str = "/registry/rbac.authorization.k8s.io/clusterroles/";

/// Reconciles once, then on every change of a ClusterRole until the store goes away.
pub async fn run(store: Store) {
    loop {
        let after = store.current_revision();
        if let Err(e) = reconcile(&store).await {
            warn!(error = format!("{e:#}"), "ClusterRole aggregation failed");
        }
        let mut watch = match store.watch(PREFIX, after) {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "ClusterRole aggregation: cannot watch");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            match watch.next_event().await {
                Some(Ok(_)) => {
                    if let Err(e) = reconcile(&store).await {
                        warn!(error = format!("{e:#}"), "ClusterRole aggregation failed");
                    }
                }
                Some(Err(_)) => break,
                None => return,
            }
        }
    }
}

/// The rules `role`'s aggregation rule gives it from `all` (sorted by name).
pub fn aggregated_rules(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    let selectors = role
        .pointer("/aggregationRule/clusterRoleSelectors")?
        .as_array()?;
    let name = role.pointer("/metadata/name").and_then(Value::as_str);
    let mut rules: Vec<Value> = Vec::new();
    let mut seen: Vec<Rule> = Vec::new();
    for sel in selectors {
        for other in all {
            if other.pointer("/metadata/name").and_then(Value::as_str) == name {
                continue;
            }
            if !selector::label_selector_matches(sel, &selector::labels_of(other)) {
                continue;
            }
            for rule in other
                .get("rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let parsed = Rule::from_json(rule);
                if !seen.contains(&parsed) {
                    seen.push(parsed);
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

pub async fn reconcile(store: &Store) -> Result<()> {
    // Aggregated roles can select each other (admin selects edit, edit selects view): a few
    // passes let a change travel along the chain before the next event.
    for _ in 0..4 {
        let (kvs, _) = store.list(PREFIX).context("cannot list ClusterRoles")?;
        let mut all: Vec<(Value, i64, String)> = kvs
            .into_iter()
            .filter_map(|kv| {
                serde_json::from_slice(&kv.value)
                    .ok()
                    .map(|v| (v, kv.mod_revision, kv.key))
            })
            .collect();
        all.sort_by(|a, b| {
            let n = |v: &Value| {
                v.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            };
            n(&a.0).cmp(&n(&b.0))
        });
        let objects: Vec<Value> = all.iter().map(|(v, _, _)| v.clone()).collect();
        let mut changed = false;
        for (role, revision, key) in &all {
            let Some(rules) = aggregated_rules(role, &objects) else {
                continue;
            };
            let current = role.get("rules").cloned().unwrap_or(Value::Array(vec![]));
            if current == Value::Array(rules.clone()) {
                continue;
            }
            let mut next = role.clone();
            next["rules"] = Value::Array(rules);
            let bytes = serde_json::to_vec(&next)?;
            match store.update(key, bytes.into(), Some(*revision)).await {
                Ok(_) => {
                    debug!(role = %key, "aggregated ClusterRole updated");
                    changed = true;
                }
                Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound { .. }) => {
                    changed = true
                }
                Err(e) => return Err(e).with_context(|| format!("cannot update {key}")),
            }
        }
        if !changed {
            break;
        }
    }
    Ok(())
}
