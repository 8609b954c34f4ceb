//! The resource quota controller: keeps each ResourceQuota's status.hard equal to spec.hard and
//! status.used equal to what the namespace's objects count against it (the API server's own
//! accounting in `apiserver::kinds::quota`), on every quota or pod change and every few seconds
//! for the other counted kinds, which is what `kubectl describe quota` shows.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use serde_json::Value;
use tracing::info;

use super::runtime::queue::WorkQueue;
use super::runtime::{Change, Informer, ObjKey, is_conflict, is_not_found};
use crate::apiserver::kinds::quantity::Quantity;
use crate::apiserver::kinds::quota;

const RESYNC: Duration = Duration::from_secs(5);

pub struct ResourceQuotaController {
    client: kube::Client,
    quotas: Arc<Informer<ResourceQuota>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue<ObjKey>>,
}

/// The kind (group, version, plural) a quota resource name counts.
fn counted_kind(resource: &str) -> Option<(String, String, String)> {
    let core = |p: &str| Some((String::new(), "v1".to_string(), p.to_string()));
    match resource {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
        r if r.starts_with("requests.") && r != "requests.storage" => core("pods"),
        r if r.starts_with("limits.") => core("pods"),
        "services" | "services.loadbalancers" | "services.nodeports" => core("services"),
        "requests.storage" => core("persistentvolumeclaims"),
        r if r.contains(".storageclass.storage.k8s.io/") => core("persistentvolumeclaims"),
        "configmaps"
        | "secrets"
        | "persistentvolumeclaims"
        | "replicationcontrollers"
        | "resourcequotas" => core(resource),
        r => {
            let name = r.strip_prefix("count/")?;
            match name.split_once('.') {
                None => core(name),
                Some((plural, group)) => {
                    let version = match group {
                        "autoscaling" => "v2",
                        _ => "v1",
                    };
                    Some((group.to_string(), version.to_string(), plural.to_string()))
                }
            }
        }
    }
}

impl ResourceQuotaController {
    pub fn new(
        client: kube::Client,
        quotas: Arc<Informer<ResourceQuota>>,
        pods: Arc<Informer<Pod>>,
    ) -> Arc<Self> {
        let this = Arc::new(ResourceQuotaController {
            client,
            quotas,
            pods,
            queue: WorkQueue::new(),
        });
        let weak = Arc::downgrade(&this);
        this.quotas.add_handler(move |change| {
            if let Some(c) = weak.upgrade()
                && !matches!(change, Change::Deleted(_))
            {
                c.queue.add(ObjKey::of(&**change.object()));
            }
        });
        let weak = Arc::downgrade(&this);
        this.pods.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                let ns = change.object().namespace().unwrap_or_default();
                for q in c.quotas.list_namespace(&ns) {
                    c.queue.add(ObjKey::of(&*q));
                }
            }
        });
        this
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.quotas.wait_synced().await;
        self.pods.wait_synced().await;
        info!("resourcequota controller started");
        let ticker = {
            let this = self.clone();
            async move {
                loop {
                    tokio::time::sleep(RESYNC).await;
                    for q in this.quotas.list_all() {
                        this.queue.add(ObjKey::of(&*q));
                    }
                }
            }
        };
        futures::join!(
            ticker,
            self.queue.run_workers(2, "resourcequota", |key| {
                let this = &self;
                async move { this.sync(&key).await }
            })
        );
        Ok(())
    }

    /// The namespace's objects of one kind as JSON.
    async fn objects(&self, ns: &str, kind: &(String, String, String)) -> Result<Vec<Value>> {
        let (group, version, plural) = kind;
        if (group.as_str(), plural.as_str()) == ("", "pods") {
            return Ok(self
                .pods
                .list_namespace(ns)
                .iter()
                .filter_map(|p| serde_json::to_value(&**p).ok())
                .collect());
        }
        let api_version = if group.is_empty() {
            version.clone()
        } else {
            format!("{group}/{version}")
        };
        let resource = ApiResource {
            group: group.clone(),
            version: version.clone(),
            api_version,
            kind: String::new(),
            plural: plural.clone(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &resource);
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            // A kind this server does not serve counts nothing.
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot list {plural} in {ns}"));
            }
        };
        Ok(list
            .items
            .iter()
            .filter_map(|o| serde_json::to_value(o).ok())
            .collect())
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let Some(rq) = self.quotas.get(key) else {
            return Ok(());
        };
        let hard: BTreeMap<String, KQuantity> = rq
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default();
        let kinds: HashSet<(String, String, String)> =
            hard.keys().filter_map(|k| counted_kind(k)).collect();
        let mut used: BTreeMap<String, Quantity> =
            hard.keys().map(|k| (k.clone(), Quantity::int(0))).collect();
        let quota_value = serde_json::to_value(&*rq).unwrap_or_default();
        for kind in &kinds {
            for obj in self.objects(&key.namespace, kind).await? {
                if quota::in_scope(&quota_value, &kind.0, &kind.2, &obj) != Some(true) {
                    continue;
                }
                for (k, q) in quota::usage(&kind.0, &kind.2, &obj) {
                    if let Some(total) = used.get_mut(&k) {
                        *total = total.add(&q);
                    }
                }
            }
        }
        let status = ResourceQuotaStatus {
            hard: Some(hard),
            used: Some(
                used.into_iter()
                    .map(|(k, q)| (k, KQuantity(q.canonical())))
                    .collect(),
            ),
        };
        if rq.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<ResourceQuota> = Api::namespaced(self.client.clone(), &key.namespace);
        let mut target = (*rq).clone();
        target.status = Some(status);
        match api
            .replace_status(&rq.name_any(), &PostParams::default(), &target)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) if is_conflict(&e) => {
                self.queue
                    .add_after(key.clone(), Duration::from_millis(200));
                Ok(())
            }
            Err(e) => Err(e).with_context(|| format!("cannot update the status of quota {key}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_names_map_to_the_kinds_they_count() {
        let k = |r: &str| counted_kind(r).map(|(g, _, p)| format!("{g}/{p}"));
        assert_eq!(k("requests.cpu").as_deref(), Some("/pods"));
        assert_eq!(
            k("requests.storage").as_deref(),
            Some("/persistentvolumeclaims")
        );
        assert_eq!(
            k("count/deployments.apps").as_deref(),
            Some("apps/deployments")
        );
        assert_eq!(k("count/configmaps").as_deref(), Some("/configmaps"));
        assert_eq!(k("services.nodeports").as_deref(), Some("/services"));
    }
}
