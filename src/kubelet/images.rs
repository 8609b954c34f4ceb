//! Image pulls for the pod workers: each pull runs in its own task so no worker waits on
//! another pod's download, and concurrent pulls of the same image with the same credentials
//! share one download. Credentials come from the pod's imagePullSecrets.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;

use crate::runtime::images::Store;
use crate::runtime::images::credentials::{self, Keyring};
use crate::runtime::images::pull::{self, Pulled};
use crate::runtime::images::reference::Reference;
use crate::runtime::images::registry::{Credentials, PullError};

/// A finished pull and how long the download itself took.
#[derive(Debug, Clone)]
pub struct PullDone {
    pub pulled: Pulled,
    pub duration: Duration,
}

pub type PullResult = Result<PullDone, PullError>;

type Key = (String, Option<Credentials>);

pub struct Puller {
    store: Store,
    in_flight: Arc<Mutex<HashMap<Key, Shared<BoxFuture<'static, PullResult>>>>>,
}

impl Puller {
    pub fn new(store: Store) -> Puller {
        Puller {
            store,
            in_flight: Arc::default(),
        }
    }

    /// Pulls `reference`, or joins the pull of it already under way with the same credentials.
    pub fn pull(
        &self,
        reference: &str,
        credentials: Option<Credentials>,
    ) -> Shared<BoxFuture<'static, PullResult>> {
        let key = (reference.to_string(), credentials.clone());
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pull) = in_flight.get(&key) {
            return pull.clone();
        }
        let store = self.store.clone();
        let map = self.in_flight.clone();
        let task_key = key.clone();
        let reference = reference.to_string();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let result = pull::pull(&store, &reference, credentials)
                .await
                .map(|pulled| PullDone {
                    pulled,
                    duration: started.elapsed(),
                });
            // Done: the next pull (imagePullPolicy Always) asks the registry again.
            map.lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&task_key);
            result
        });
        let shared = async move {
            task.await
                .unwrap_or_else(|e| Err(PullError::failed(format!("the pull task failed: {e}"))))
        }
        .boxed()
        .shared();
        in_flight.insert(key, shared.clone());
        shared
    }
}

/// The credentials for `image` from the pod's imagePullSecrets, and the names of secrets that
/// could not be read (kubelet warns about them and pulls anyway).
pub async fn pull_credentials(
    client: Option<kube::Client>,
    pod: &Pod,
    image: &str,
) -> (Option<Credentials>, Vec<String>) {
    let names: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return (None, Vec::new());
    }
    let Some(client) = client else {
        return (None, names);
    };
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let mut keyrings: Vec<Keyring> = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        let parsed = match api.get(&name).await {
            Ok(secret) => {
                let data: BTreeMap<String, Vec<u8>> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                credentials::parse_secret(secret.type_.as_deref().unwrap_or(""), &data)
                    .map_err(|e| format!("{name}: {e:#}"))
            }
            Err(e) => Err(format!("{name}: {e}")),
        };
        match parsed {
            Ok(ring) => keyrings.push(ring),
            Err(why) => {
                tracing::warn!(secret = %why, "cannot use an image pull secret");
                missing.push(name);
            }
        }
    }
    let registry = Reference::parse(image)
        .map(|r| r.registry)
        .unwrap_or_default();
    (credentials::lookup(&keyrings, &registry).cloned(), missing)
}

/// A duration the way Go prints one truncated to milliseconds (`523ms`, `1.2s`, `1m3.5s`), as
/// kubelet's Pulled events show it.
pub fn go_duration(d: Duration) -> String {
    crate::apiserver::schema::gofmt::duration_millis(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_millis(0)), "0s");
        assert_eq!(go_duration(Duration::from_micros(523_900)), "523ms");
        assert_eq!(go_duration(Duration::from_millis(1200)), "1.2s");
        assert_eq!(go_duration(Duration::from_millis(2000)), "2s");
        assert_eq!(go_duration(Duration::from_millis(63_500)), "1m3.5s");
    }
}
