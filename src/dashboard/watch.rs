//! One watch per kind for the whole process (every page shares it), and a poll of the metrics
//! API, feeding the hub. Watches retry with kube's backoff for as long as the process runs, so
//! a cluster that comes back, or a permission that is granted, shows without a restart.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Hub;
use super::model::{Access, Input, Kind};
use super::summary;

/// How often the metrics API is read: the agents sample every 10 s.
const METRICS_PERIOD: Duration = Duration::from_secs(10);

pub fn spawn_all(hub: Arc<Hub>, client: Client) {
    // A user who may not list a kind in every namespace may still list it in the namespace of
    // their kubeconfig context (a student's namespace).
    let ns = client.default_namespace().to_string();
    let c = &client;
    spawn(
        &hub,
        Api::<Node>::all(c.clone()),
        None,
        Kind::Nodes,
        summary::node,
    );
    spawn(
        &hub,
        Api::<Pod>::all(c.clone()),
        Some(Api::namespaced(c.clone(), &ns)),
        Kind::Pods,
        summary::pod,
    );
    spawn(
        &hub,
        Api::<Deployment>::all(c.clone()),
        Some(Api::namespaced(c.clone(), &ns)),
        Kind::Deployments,
        summary::deployment,
    );
    spawn(
        &hub,
        Api::<ReplicaSet>::all(c.clone()),
        Some(Api::namespaced(c.clone(), &ns)),
        Kind::ReplicaSets,
        summary::replicaset,
    );
    spawn(
        &hub,
        Api::<Service>::all(c.clone()),
        Some(Api::namespaced(c.clone(), &ns)),
        Kind::Services,
        summary::service,
    );
    spawn(
        &hub,
        Api::<EndpointSlice>::all(c.clone()),
        Some(Api::namespaced(c.clone(), &ns)),
        Kind::EndpointSlices,
        summary::endpointslice,
    );
    spawn(
        &hub,
        Api::<HorizontalPodAutoscaler>::all(c.clone()),
        Some(Api::namespaced(c.clone(), &ns)),
        Kind::Hpas,
        summary::hpa,
    );
    spawn(
        &hub,
        Api::<Event>::all(c.clone()),
        Some(Api::namespaced(c.clone(), &ns)),
        Kind::Events,
        summary::event,
    );
    for (kind, all, one) in [
        (
            Kind::NodeMetrics,
            "/apis/metrics.k8s.io/v1beta1/nodes".to_string(),
            None,
        ),
        (
            Kind::PodMetrics,
            "/apis/metrics.k8s.io/v1beta1/pods".to_string(),
            Some(format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods")),
        ),
    ] {
        tokio::spawn(poll_metrics(hub.clone(), client.clone(), kind, all, one));
    }
}

/// Watches `all` (every namespace); once that is forbidden, `namespaced` instead, if given.
fn spawn<K>(
    hub: &Arc<Hub>,
    all: Api<K>,
    namespaced: Option<Api<K>>,
    kind: Kind,
    summarise: fn(&K) -> (String, Value),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let hub = hub.clone();
    tokio::spawn(async move {
        let mut api = all;
        let mut fallback = namespaced;
        loop {
            let mut stream = watcher(api.clone(), watcher::Config::default())
                .default_backoff()
                .boxed();
            let mut narrowed = false;
            while let Some(event) = stream.next().await {
                let input = match event {
                    Ok(watcher::Event::Init) => Input::Relist(kind),
                    Ok(watcher::Event::InitApply(o)) => {
                        let (key, value) = summarise(&o);
                        Input::Listed(kind, key, value)
                    }
                    Ok(watcher::Event::InitDone) => Input::Synced(kind),
                    Ok(watcher::Event::Apply(o)) => {
                        let (key, value) = summarise(&o);
                        Input::Applied(kind, key, value)
                    }
                    Ok(watcher::Event::Delete(o)) => Input::Deleted(kind, summary::key(o.meta())),
                    Err(e) => match classify_watch(&e) {
                        Some(Access::Forbidden(why)) if fallback.is_some() => {
                            if let Some(one) = fallback.take() {
                                api = one;
                            }
                            hub.feed(Input::Narrowed(kind, why));
                            narrowed = true;
                            break;
                        }
                        Some(access) => {
                            tracing::debug!("watch of {}: {e}", kind.name());
                            Input::Failed(kind, access)
                        }
                        None => continue,
                    },
                };
                hub.feed(input);
            }
            if !narrowed {
                return;
            }
        }
    });
}

/// What a failed watch means for the page. None for the expected expiry of a watch (410
/// Gone), after which the watcher simply lists again.
pub fn classify_watch(e: &watcher::Error) -> Option<Access> {
    match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => Some(classify(e)),
        watcher::Error::WatchError(status) if status.code == 410 => None,
        watcher::Error::WatchError(status) => Some(from_status(status.code, &status.message)),
        watcher::Error::NoResourceVersion => Some(Access::Error(e.to_string())),
    }
}

pub fn classify(e: &kube::Error) -> Access {
    match e {
        kube::Error::Api(status) => from_status(status.code, &status.message),
        other => Access::Unreachable(format!("cannot reach the API server: {other}")),
    }
}

fn from_status(code: u16, message: &str) -> Access {
    match code {
        403 => Access::Forbidden(message.to_string()),
        404 => Access::Error(format!("not served by this cluster ({message})")),
        _ => Access::Error(format!("{code}: {message}")),
    }
}

async fn poll_metrics(
    hub: Arc<Hub>,
    client: Client,
    kind: Kind,
    all: String,
    mut namespaced: Option<String>,
) {
    let mut path = all;
    let mut tick = tokio::time::interval(METRICS_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let request = match http::Request::get(&path).body(Vec::new()) {
            Ok(r) => r,
            Err(e) => {
                hub.feed(Input::Failed(kind, Access::Error(e.to_string())));
                return;
            }
        };
        match client.request::<Value>(request).await {
            Ok(list) => {
                hub.feed(Input::Relist(kind));
                for item in list["items"].as_array().into_iter().flatten() {
                    if let Some((key, value)) = summary::metrics(item) {
                        hub.feed(Input::Listed(kind, key, value));
                    }
                }
                hub.feed(Input::Synced(kind));
            }
            Err(e) => match classify(&e) {
                Access::Forbidden(why) if namespaced.is_some() => {
                    if let Some(one) = namespaced.take() {
                        path = one;
                    }
                    hub.feed(Input::Narrowed(kind, why));
                    tick.reset_immediately();
                }
                access => hub.feed(Input::Failed(kind, access)),
            },
        }
    }
}
