//! Image pulls for the pod workers: each pull runs in its own task so no worker waits on
//! another pod's download, and concurrent pulls of the same image with the same credentials
//! share one download. Credentials come from the pod's imagePullSecrets.
//!
//! Pull fallback (a deliberate divergence from kubelet, on unless the cluster config sets
//! `images.pullFallback: false`): when the node holds an image under exactly the pulled name,
//! a registry that cannot be reached (name, connection or TLS failure) does not stop the pod;
//! the local image is used and the worker reports it with a `PullFallback` Warning. For images
//! `kcluster image load` put on the node any pull failure falls back the same way, since their
//! registry may never have had them; a registry that does answer with an image still wins.
//! While the node has a fallback, the registry gets [`FALLBACK_CONNECT_TIMEOUT`] per step, and
//! a registry found unreachable is not asked again for [`UNREACHABLE_MEMORY`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;

use crate::runtime::images::credentials::{self, Keyring};
use crate::runtime::images::pull::{self, Pulled};
use crate::runtime::images::reference::Reference;
use crate::runtime::images::registry::{self, Credentials, ErrorKind, PullError, endpoint_host};
use crate::runtime::images::{Image, Store};

/// How long each step of reaching a registry may take when the node has the image anyway.
pub const FALLBACK_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a registry found unreachable is not asked again by pulls that can fall back.
pub const UNREACHABLE_MEMORY: Duration = Duration::from_secs(60);

/// A finished pull and how long the download itself took.
#[derive(Debug, Clone)]
pub struct PullDone {
    pub pulled: Pulled,
    pub duration: Duration,
    /// Set when nothing was pulled and the node's own image is used instead.
    pub fallback: Option<Box<Fallback>>,
}

/// Why the node's own image stands in for a pull.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// What the registry (or reaching it) said.
    pub error: PullError,
    /// The image was put on the node by `kcluster image load`.
    pub loaded: bool,
    /// The registry was not asked: it was found unreachable this long ago.
    pub remembered: Option<Duration>,
}

impl Fallback {
    /// The `PullFallback` event's message.
    pub fn message(&self, image: &str, id: &str) -> String {
        let cause = match self.remembered {
            Some(ago) => format!(
                "the registry was not asked again: {}s ago it could not be reached ({}); it is retried {}s after that",
                ago.as_secs(),
                self.error,
                UNREACHABLE_MEMORY.as_secs()
            ),
            None => self.error.to_string(),
        };
        let what = if self.loaded {
            "the image loaded onto the node with `kcluster image load`"
        } else {
            "the node's own image"
        };
        format!(
            "Failed to pull image \"{image}\": {cause}; using {what} {id} instead (images.pullFallback)"
        )
    }
}

pub type PullResult = Result<PullDone, PullError>;

type Key = (String, Option<Credentials>);

/// Registries (by the host:port requests go to) found unreachable: when, and the error.
#[derive(Default)]
struct Unreachable {
    hosts: Mutex<HashMap<String, (Instant, PullError)>>,
}

impl Unreachable {
    fn recent(&self, host: &str) -> Option<(Duration, PullError)> {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let (at, error) = hosts.get(host)?;
        let ago = at.elapsed();
        (ago < UNREACHABLE_MEMORY).then(|| (ago, error.clone()))
    }

    fn note(&self, host: &str, error: &PullError) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.retain(|_, (at, _)| at.elapsed() < UNREACHABLE_MEMORY);
        hosts.insert(host.to_string(), (Instant::now(), error.clone()));
    }

    fn forget(&self, host: &str) {
        self.hosts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(host);
    }
}

pub struct Puller {
    store: Store,
    /// `images.pullFallback` of the cluster config.
    fallback: bool,
    unreachable: Arc<Unreachable>,
    in_flight: Arc<Mutex<HashMap<Key, Shared<BoxFuture<'static, PullResult>>>>>,
}

impl Puller {
    pub fn new(store: Store, fallback: bool) -> Puller {
        Puller {
            store,
            fallback,
            unreachable: Arc::default(),
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
        let fallback = self.fallback;
        let unreachable = self.unreachable.clone();
        let task = tokio::spawn(async move {
            let result =
                pull_or_fall_back(&store, &reference, credentials, fallback, &unreachable).await;
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

/// One pull, falling back to the node's image of that name when allowed (see the module docs).
async fn pull_or_fall_back(
    store: &Store,
    reference: &str,
    credentials: Option<Credentials>,
    fallback: bool,
    unreachable: &Unreachable,
) -> PullResult {
    let started = Instant::now();
    let host = Reference::parse(reference)
        .map(|r| endpoint_host(&r.registry).to_string())
        .unwrap_or_default();
    // The image that may stand in, and whether it was loaded rather than pulled.
    let local: Option<(Image, bool)> = if fallback {
        let store = store.clone();
        let reference = reference.to_string();
        let found = tokio::task::spawn_blocking(move || {
            let found = store.find_named(&reference)?;
            Ok::<_, anyhow::Error>(found.map(|(name, image)| {
                let loaded = store.is_loaded(&name, &image);
                (image, loaded)
            }))
        })
        .await;
        match found {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), "cannot read the image store");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "the image store lookup failed");
                None
            }
        }
    } else {
        None
    };
    let loaded = local.as_ref().is_some_and(|(_, loaded)| *loaded);
    let stand_in = |error: PullError, remembered: Option<Duration>| {
        local.as_ref().map(|(image, _)| PullDone {
            pulled: Pulled {
                image: image.clone(),
                layers_fetched: 0,
                bytes_fetched: 0,
            },
            duration: started.elapsed(),
            fallback: Some(Box::new(Fallback {
                error,
                loaded,
                remembered,
            })),
        })
    };
    if let Some((ago, error)) = unreachable.recent(&host)
        && let Some(done) = stand_in(error, Some(ago))
    {
        return Ok(done);
    }
    let timeout = if local.is_some() {
        FALLBACK_CONNECT_TIMEOUT
    } else {
        registry::CONNECT_TIMEOUT
    };
    match pull::pull(store, reference, credentials, timeout).await {
        Ok(pulled) => {
            unreachable.forget(&host);
            Ok(PullDone {
                pulled,
                duration: started.elapsed(),
                fallback: None,
            })
        }
        Err(error) => {
            let cannot_reach = error.kind == ErrorKind::Unreachable;
            if cannot_reach {
                unreachable.note(&host, &error);
            }
            if (cannot_reach || loaded)
                && let Some(done) = stand_in(error.clone(), None)
            {
                tracing::warn!(reference, error = %error, "pull failed; using the node's image");
                return Ok(done);
            }
            Err(error)
        }
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

    fn add(store: &Store, reference: &str, config: &[u8]) -> Image {
        let image = Image {
            id: store.put_blob(config).unwrap(),
            names: vec![crate::runtime::images::normalize(reference).unwrap()],
            manifest: None,
            layers: Vec::new(),
            size: 0,
        };
        store.add(image.clone()).unwrap();
        image
    }

    fn closed_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    /// A registry that answers 404 to everything but its `/v2/` ping.
    async fn empty_registry() -> u16 {
        use http_body_util::Full;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: http::Request<_>| async move {
                        let status = if req.uri().path() == "/v2/" {
                            http::StatusCode::OK
                        } else {
                            http::StatusCode::NOT_FOUND
                        };
                        let mut response = http::Response::new(Full::new(bytes::Bytes::new()));
                        *response.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(response)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn the_nodes_image_stands_in_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let offline = format!("127.0.0.1:{}", closed_port());
        let app = format!("{offline}/e2e/app");
        let image = add(&store, &app, b"{\"a\":1}");

        // Unreachable, and the node has the image: it stands in; then the registry is
        // remembered and not asked.
        let memory = Unreachable::default();
        let done = pull_or_fall_back(&store, &app, None, true, &memory)
            .await
            .unwrap();
        assert_eq!(done.pulled.image.id, image.id);
        let fallback = done.fallback.unwrap();
        assert_eq!(fallback.error.kind, ErrorKind::Unreachable);
        assert!(!fallback.loaded && fallback.remembered.is_none());
        let again = pull_or_fall_back(&store, &app, None, true, &memory)
            .await
            .unwrap();
        let fallback = again.fallback.unwrap();
        assert!(fallback.remembered.is_some());
        assert!(
            fallback
                .message(&app, &image.id)
                .contains("the registry was not asked again")
        );

        // Not on the node: the registry's error, remembered or not.
        let absent = pull_or_fall_back(
            &store,
            &format!("{offline}/e2e/absent"),
            None,
            true,
            &memory,
        )
        .await
        .unwrap_err();
        assert_eq!(absent.kind, ErrorKind::Unreachable);

        // Fallback off: the error, as kubelet.
        let strict = pull_or_fall_back(&store, &app, None, false, &Unreachable::default())
            .await
            .unwrap_err();
        assert_eq!(strict.kind, ErrorKind::Unreachable, "{strict}");

        // A registry that answers "not found": only a loaded image stands in.
        let online = format!("127.0.0.1:{}/e2e/app", empty_registry().await);
        let pulled_before = add(&store, &online, b"{\"a\":2}");
        let memory = Unreachable::default();
        let missing = pull_or_fall_back(&store, &online, None, true, &memory)
            .await
            .unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
        store
            .mark_loaded(std::slice::from_ref(&pulled_before))
            .unwrap();
        let done = pull_or_fall_back(&store, &online, None, true, &memory)
            .await
            .unwrap();
        let fallback = done.fallback.unwrap();
        assert!(fallback.loaded);
        assert_eq!(fallback.error.kind, ErrorKind::NotFound);
        assert!(
            fallback
                .message(&online, &pulled_before.id)
                .contains("kcluster image load")
        );
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_millis(0)), "0s");
        assert_eq!(go_duration(Duration::from_micros(523_900)), "523ms");
        assert_eq!(go_duration(Duration::from_millis(1200)), "1.2s");
        assert_eq!(go_duration(Duration::from_millis(2000)), "2s");
        assert_eq!(go_duration(Duration::from_millis(63_500)), "1m3.5s");
    }
}
