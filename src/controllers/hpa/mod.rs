//! The HorizontalPodAutoscaler controller (kube-controller-manager's podautoscaler): every
//! sync period, and whenever an autoscaler is created or its spec changes, each autoscaler
//! reads its target's scale subresource and its pods' usage from the resource metrics API,
//! and sets the target's replicas. `calculator` turns usage into a proposal, `behavior`
//! stabilizes and rate-limits it, `reconcile` is one pass with its conditions and events,
//! `metrics` reads metrics.k8s.io.

pub mod behavior;
pub mod calculator;
pub mod metrics;
pub mod reconcile;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::BoxFuture;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{CrossVersionObjectReference, HorizontalPodAutoscaler};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use tracing::info;

use crate::controllers::runtime::events::Recorder;
use crate::controllers::runtime::queue::WorkQueue;
use crate::controllers::runtime::{Change, Informer, ObjKey, error_message, is_not_found};
use behavior::History;
use calculator::Settings;
use metrics::{MetricsApi, ResourceMetrics};
use reconcile::{Inputs, Scales};

/// kube-controller-manager's `--horizontal-pod-autoscaler-*` settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How often every autoscaler is synced (`--horizontal-pod-autoscaler-sync-period`).
    pub sync_period: Duration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`.
    pub downscale_window_seconds: i32,
    pub settings: Settings,
}

fn env_seconds(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

impl Default for Options {
    /// Kubernetes' defaults; `KCLUSTER_HPA_SYNC_PERIOD_SECONDS` and
    /// `KCLUSTER_HPA_DOWNSCALE_STABILIZATION_SECONDS` override them (tests shorten both).
    fn default() -> Self {
        Options {
            sync_period: Duration::from_secs(
                env_seconds("KCLUSTER_HPA_SYNC_PERIOD_SECONDS")
                    .filter(|s| *s > 0)
                    .unwrap_or(15),
            ),
            downscale_window_seconds: env_seconds("KCLUSTER_HPA_DOWNSCALE_STABILIZATION_SECONDS")
                .and_then(|s| i32::try_from(s).ok())
                .unwrap_or(300),
            settings: Settings::default(),
        }
    }
}

pub struct HpaController {
    client: kube::Client,
    hpas: Arc<Informer<HorizontalPodAutoscaler>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue<ObjKey>>,
    recorder: Recorder,
    metrics: Box<dyn ResourceMetrics>,
    scales: ApiScales,
    histories: Mutex<HashMap<ObjKey, History>>,
    options: Options,
}

impl HpaController {
    pub fn new(
        client: kube::Client,
        hpas: Arc<Informer<HorizontalPodAutoscaler>>,
        pods: Arc<Informer<Pod>>,
        recorder: Recorder,
        options: Options,
    ) -> Arc<Self> {
        let queue = WorkQueue::new();
        let q = queue.clone();
        hpas.add_handler(move |change| {
            // Our own status writes change only the status; they wait for the next period. A
            // deletion is synced so that the autoscaler's history goes with it.
            let enqueue = match change {
                Change::Added(_) | Change::Deleted(_) => true,
                Change::Updated { old, new } => old.metadata.generation != new.metadata.generation,
            };
            if enqueue {
                q.add(ObjKey::of(&**change.object()));
            }
        });
        Arc::new(HpaController {
            metrics: Box::new(MetricsApi::new(client.clone())),
            scales: ApiScales::new(client.clone()),
            client,
            hpas,
            pods,
            queue,
            recorder,
            histories: Mutex::new(HashMap::new()),
            options,
        })
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.hpas.wait_synced().await;
        self.pods.wait_synced().await;
        let ticker = async {
            let mut tick = tokio::time::interval(self.options.sync_period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                for hpa in self.hpas.list_all() {
                    self.queue.add(ObjKey::of(&*hpa));
                }
            }
        };
        let workers = self
            .queue
            .run_workers(2, "horizontal-pod-autoscaler", |key| self.sync(key));
        tokio::join!(ticker, workers);
        Ok(())
    }

    async fn sync(&self, key: ObjKey) -> Result<()> {
        let Some(hpa) = self.hpas.get(&key) else {
            // Deleted: its recommendations and scale events go with it.
            if let Ok(mut h) = self.histories.lock() {
                h.remove(&key);
            }
            return Ok(());
        };
        let mut history = self
            .histories
            .lock()
            .ok()
            .and_then(|mut h| h.remove(&key))
            .unwrap_or_default();
        let pods = self.pods.list_namespace(&key.namespace);
        let inputs = Inputs {
            settings: &self.options.settings,
            downscale_window_seconds: self.options.downscale_window_seconds,
            metrics: &*self.metrics,
            scales: &self.scales,
            pods: &pods,
        };
        let outcome =
            reconcile::reconcile(&inputs, &mut history, &hpa, jiff::Timestamp::now()).await;
        if let Ok(mut h) = self.histories.lock() {
            h.insert(key.clone(), history);
        }
        for e in &outcome.events {
            self.recorder
                .event(&*hpa, e.type_, e.reason, "Autoscale", e.message.clone());
        }
        if let Some(e) = &outcome.error {
            info!(hpa = %key, error = %e, "autoscaler pass did not finish");
        }
        if hpa.status.as_ref() == Some(&outcome.status) {
            return Ok(());
        }
        // An unconditional update of the status (no resourceVersion), which is all its role
        // allows: the controller is the status' only writer, and a write that waited for a
        // fresh resourceVersion could make a retried pass scale twice.
        let mut updated = (*hpa).clone();
        updated.metadata.resource_version = None;
        updated.metadata.managed_fields = None;
        updated.status = Some(outcome.status.clone());
        let api: Api<HorizontalPodAutoscaler> =
            Api::namespaced(self.client.clone(), &key.namespace);
        match api
            .replace_status(&key.name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot update the status of autoscaler {key}"))
            }
        }
    }
}

/// The scale subresource of whatever kind a scaleTargetRef names, found through discovery
/// (deployments, replicasets, statefulsets, replicationcontrollers, and custom resources with
/// a scale subresource).
pub struct ApiScales {
    client: kube::Client,
    resources: Mutex<HashMap<(String, String), ApiResource>>,
}

impl ApiScales {
    pub fn new(client: kube::Client) -> Self {
        ApiScales {
            client,
            resources: Mutex::new(HashMap::new()),
        }
    }

    /// The RESTMapper step: apiVersion and kind to a resource, in Kubernetes' words on failure.
    async fn resource(&self, target: &CrossVersionObjectReference) -> Result<ApiResource, String> {
        let api_version = target.api_version.clone().unwrap_or_default();
        let cache_key = (api_version.clone(), target.kind.clone());
        if let Some(r) = self
            .resources
            .lock()
            .ok()
            .and_then(|c| c.get(&cache_key).cloned())
        {
            return Ok(r);
        }
        let (group, version) = match api_version.split('/').collect::<Vec<_>>()[..] {
            [version] if !version.is_empty() => (String::new(), version.to_string()),
            [group, version] if !group.is_empty() && !version.is_empty() => {
                (group.to_string(), version.to_string())
            }
            _ => return Err(format!("unexpected GroupVersion string: {api_version}")),
        };
        let gvk = GroupVersionKind::gvk(&group, &version, &target.kind);
        let (resource, _) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|_| format!("no matches for kind {:?} in group {:?}", target.kind, group))?;
        if let Ok(mut c) = self.resources.lock() {
            c.insert(cache_key, resource.clone());
        }
        Ok(resource)
    }

    async fn api(
        &self,
        namespace: &str,
        target: &CrossVersionObjectReference,
    ) -> Result<Api<DynamicObject>, String> {
        let resource = self.resource(target).await?;
        Ok(Api::namespaced_with(
            self.client.clone(),
            namespace,
            &resource,
        ))
    }
}

impl Scales for ApiScales {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        target: &'a CrossVersionObjectReference,
    ) -> BoxFuture<'a, Result<Scale, String>> {
        Box::pin(async move {
            let api = self.api(namespace, target).await?;
            api.get_scale(&target.name)
                .await
                .map_err(|e| error_message(&e))
        })
    }

    fn update<'a>(
        &'a self,
        namespace: &'a str,
        target: &'a CrossVersionObjectReference,
        scale: Scale,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let api = self.api(namespace, target).await?;
            api.replace_scale(&target.name, &PostParams::default(), &scale)
                .await
                .map(|_| ())
                .map_err(|e| error_message(&e))
        })
    }
}
