//! The built-in Ingress controller, speaking ingress-nginx's dialect (class `nginx`, its
//! annotations, its routing and certificate rules), so Ingresses work the moment the cluster is
//! up with nothing to install.
//!
//! It runs in the server node's process: `proxy` listens on the node's ports 80 and 443, and
//! this controller publishes them as the selector-less LoadBalancer Service
//! `kube-system/ingress-nginx-controller` whose Endpoints name the server node — so the host-port
//! publisher (`ports/`) puts them on the host's 127.0.0.1:80/443 (or the next free ports), and
//! `kcluster port ls` lists them. Watches of Ingresses, IngressClasses, Services,
//! EndpointSlices and Secrets rebuild the route table (`translate`) and the certificate map
//! (`tls`), swapped whole, within 100 ms of a change; problems become Warning events on the
//! Ingress, and served Ingresses get the Service's host address as their status. The
//! ConfigMap `kube-system/ingress-nginx-controller` (`config`) carries cluster-wide settings,
//! as ingress-nginx's does; keys we do not implement become Warning events on it.

pub mod annotations;
pub mod auth;
pub mod config;
mod port_proxies;
pub mod proxy;
pub mod routes;
mod send_timeout;
pub mod tls;
pub mod translate;
mod upstream_tls;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::controllers::runtime::events::{EventSink, Recorder, WARNING};
use crate::controllers::runtime::{Informer, ObjKey, api_code};

pub const SERVICE_NAMESPACE: &str = "kube-system";
pub const SERVICE_NAME: &str = "ingress-nginx-controller";
/// Ports the proxy listens on inside the server node.
pub const NODE_HTTP_PORT: u16 = 80;
pub const NODE_HTTPS_PORT: u16 = 443;
/// Where the host-port proxies deliver HTTP and HTTPS, each connection opened with a PROXY
/// protocol header naming the client (`port_proxies` says who is believed).
pub const NODE_HTTP_PROXIED_PORT: u16 = 10080;
pub const NODE_HTTPS_PROXIED_PORT: u16 = 10443;

/// The cluster file's `ingress:` section, as the server node gets it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressConfig {
    pub enabled: bool,
    /// Host ports tried first; the next free ones are used when these are taken.
    pub http_port: u16,
    pub https_port: u16,
    /// A `namespace/name` TLS secret served to hosts without a certificate of their own
    /// (ingress-nginx's `--default-ssl-certificate`); unset: a self-signed one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_certificate: Option<String>,
}

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            enabled: true,
            http_port: 80,
            https_port: 443,
            default_certificate: None,
        }
    }
}

fn class() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": translate::CLASS_NAME,
                     "labels": {"app.kubernetes.io/name": "ingress-nginx",
                                "app.kubernetes.io/component": "controller",
                                "app.kubernetes.io/managed-by": "kcluster"},
                     "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": translate::CONTROLLER},
    })
}

/// The Service the host ports are published for. Its node ports serve callers inside the
/// cluster; the host's port proxies go straight to this node's PROXY-protocol listeners
/// instead, so the client's address survives the hop.
fn service(cfg: &IngressConfig, node: &str) -> Value {
    let proxied = format!(
        "{}={node}:{NODE_HTTP_PROXIED_PORT},{}={node}:{NODE_HTTPS_PROXIED_PORT}",
        cfg.http_port, cfg.https_port
    );
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE,
                     "labels": {"app.kubernetes.io/name": "ingress-nginx",
                                "app.kubernetes.io/component": "controller",
                                "app.kubernetes.io/managed-by": "kcluster"},
                     "annotations": {crate::ports::PROXY_PROTOCOL_ANNOTATION: proxied}},
        "spec": {"type": "LoadBalancer",
                 "ports": [{"name": "http", "port": cfg.http_port, "protocol": "TCP", "targetPort": NODE_HTTP_PORT},
                           {"name": "https", "port": cfg.https_port, "protocol": "TCP", "targetPort": NODE_HTTPS_PORT}]},
    })
}

fn endpoints(node: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE,
                     "labels": {"app.kubernetes.io/name": "ingress-nginx"}},
        "subsets": [{"addresses": [{"ip": ip, "nodeName": node}],
                     "ports": [{"name": "http", "port": NODE_HTTP_PORT, "protocol": "TCP"},
                               {"name": "https", "port": NODE_HTTPS_PORT, "protocol": "TCP"}]}],
    })
}

async fn create<K>(api: &Api<K>, obj: Value) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(obj)?;
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => Ok(()),
        Err(e) if api_code(&e) == Some(409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates the class, Service and Endpoints (kept if they exist: a user may have edited them).
async fn publish(client: &kube::Client, cfg: &IngressConfig, node: &str) -> Result<()> {
    create(&Api::<IngressClass>::all(client.clone()), class())
        .await
        .context("IngressClass nginx")?;
    let services = Api::<Service>::namespaced(client.clone(), SERVICE_NAMESPACE);
    let want = service(cfg, node);
    create(&services, want.clone()).await.context("Service")?;
    adopt_proxy_protocol(&services, &want)
        .await
        .context("Service")?;
    // Empty, as the chart installs it: there for `kubectl edit` to find.
    create(
        &Api::<ConfigMap>::namespaced(client.clone(), config::NAMESPACE),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": config::NAME, "namespace": config::NAMESPACE,
                            "labels": {"app.kubernetes.io/name": "ingress-nginx",
                                       "app.kubernetes.io/component": "controller",
                                       "app.kubernetes.io/managed-by": "kcluster"}}}),
    )
    .await
    .context("ConfigMap")?;
    let ip = crate::agent::sysinfo::internal_ip()
        .context("the server node has no address")?
        .to_string();
    let eps: Api<Endpoints> = Api::namespaced(client.clone(), SERVICE_NAMESPACE);
    let want = endpoints(node, &ip);
    match eps.get_opt(SERVICE_NAME).await? {
        None => create(&eps, want).await.context("Endpoints")?,
        Some(cur) => {
            let cur_ip = cur
                .subsets
                .as_ref()
                .and_then(|s| s.first())
                .and_then(|s| s.addresses.as_ref())
                .and_then(|a| a.first())
                .map(|a| a.ip.clone());
            // The node's address changes when it restarts on another network address.
            if cur_ip.as_deref() != Some(ip.as_str()) {
                let patch = json!({"subsets": want["subsets"]});
                eps.patch(SERVICE_NAME, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .context("Endpoints")?;
            }
        }
    }
    Ok(())
}

/// Clusters made before the host-port proxies spoke PROXY protocol have an ingress Service
/// without its annotation: add it (nothing else a user may have edited is touched), so their
/// backends too see the host's client address from now on.
async fn adopt_proxy_protocol(services: &Api<Service>, want: &Value) -> Result<()> {
    let Some(cur) = services.get_opt(SERVICE_NAME).await? else {
        return Ok(());
    };
    let ours = cur
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .is_some_and(|m| m == "kcluster");
    let has = cur
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(crate::ports::PROXY_PROTOCOL_ANNOTATION));
    if ours && !has {
        let ann = &want["metadata"]["annotations"];
        let patch = json!({"metadata": {"annotations": ann}});
        services
            .patch(SERVICE_NAME, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        info!("ingress Service annotated for PROXY protocol from the host-port proxies");
    }
    Ok(())
}

/// The host address and ports the publisher gave the Service, from its
/// `kcluster.dev/host-ports` annotation (`80/TCP=127.0.0.1:80,443/TCP=127.0.0.1:8443`).
fn published(svc: &Service) -> Option<(String, u16, u16)> {
    let spec = svc.spec.as_ref()?;
    let port_of = |name: &str| {
        spec.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.port)
    };
    let (http, https) = (port_of("http")?, port_of("https")?);
    let ann = svc
        .metadata
        .annotations
        .as_ref()?
        .get(crate::ports::HOST_PORTS_ANNOTATION)?;
    let mut host = None;
    let (mut h, mut s) = (None, None);
    for part in ann.split(',') {
        let (svc_port, addr) = part.split_once('=')?;
        let port: i32 = svc_port.split('/').next()?.parse().ok()?;
        let addr: SocketAddr = addr.parse().ok()?;
        host = Some(addr.ip().to_string());
        if port == http {
            h = Some(addr.port());
        } else if port == https {
            s = Some(addr.port());
        }
    }
    Some((host?, h?, s?))
}

/// Runs forever in the server node.
pub async fn run(
    client: kube::Client,
    cfg: IngressConfig,
    cluster: String,
    node: String,
) -> Result<()> {
    let shared = proxy::Shared::new().context("the ingress proxy's upstream TLS settings")?;
    let resolver = Arc::new(tls::Resolver::new(
        tls::fake()?,
        cfg.default_certificate.clone(),
    ));
    let listen = |port: u16| async move {
        tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .with_context(|| format!("the ingress proxy cannot listen on port {port}"))
    };
    let http = listen(NODE_HTTP_PORT).await?;
    let https = listen(NODE_HTTPS_PORT).await?;
    let http_proxied = listen(NODE_HTTP_PROXIED_PORT).await?;
    let https_proxied = listen(NODE_HTTPS_PROXIED_PORT).await?;
    let port_proxies = Arc::new(port_proxies::PortProxies::new(&cluster));
    let via_proxies = proxy::Clients::PortProxies(port_proxies.clone());
    tokio::spawn(proxy::serve_http(
        http,
        shared.clone(),
        proxy::Clients::Peer,
    ));
    tokio::spawn(proxy::serve_https(
        https,
        shared.clone(),
        resolver.clone(),
        proxy::Clients::Peer,
    ));
    tokio::spawn(proxy::serve_http(
        http_proxied,
        shared.clone(),
        via_proxies.clone(),
    ));
    tokio::spawn(proxy::serve_https(
        https_proxied,
        shared.clone(),
        resolver.clone(),
        via_proxies,
    ));

    let mut delay = Duration::from_millis(200);
    while let Err(e) = publish(&client, &cfg, &node).await {
        warn!(
            error = format!("{e:#}"),
            "cannot publish the ingress controller; retrying"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    info!("ingress controller publishing class nginx on ports {NODE_HTTP_PORT}/{NODE_HTTPS_PORT}");

    let wake = Arc::new(Notify::new());
    let ingresses = Informer::<Ingress>::new(client.clone());
    let classes = Informer::<IngressClass>::new(client.clone());
    let services = Informer::<Service>::new(client.clone());
    let slices = Informer::<EndpointSlice>::new(client.clone());
    let secrets = Informer::<Secret>::new(client.clone());
    let settings = Informer::<ConfigMap>::with_fields(
        client.clone(),
        Some(format!(
            "metadata.namespace={},metadata.name={}",
            config::NAMESPACE,
            config::NAME
        )),
    );
    macro_rules! watch {
        ($inf:expr) => {{
            let w = wake.clone();
            $inf.add_handler(move |_| w.notify_one());
            tokio::spawn($inf.clone().run());
        }};
    }
    watch!(ingresses);
    watch!(classes);
    watch!(services);
    watch!(slices);
    watch!(secrets);
    watch!(settings);
    ingresses.wait_synced().await;
    settings.wait_synced().await;
    classes.wait_synced().await;
    services.wait_synced().await;
    slices.wait_synced().await;
    secrets.wait_synced().await;

    let sink = EventSink::start(client.clone());
    let recorder = sink.recorder("nginx-ingress-controller");
    let mut reported: BTreeSet<translate::Problem> = BTreeSet::new();
    let mut reported_config: BTreeSet<(&'static str, String)> = BTreeSet::new();
    // Status writes are API round trips, one per Ingress: on their own task, so a burst of new
    // Ingresses gets its routes at once and its statuses as fast as the API takes them.
    let (statuses, wanted) = tokio::sync::watch::channel(None);
    tokio::spawn(status_writer(client.clone(), wanted));
    loop {
        let cm = settings.get(&ObjKey::new(config::NAMESPACE, config::NAME));
        let empty = BTreeMap::new();
        let (global, findings) =
            config::parse(cm.as_ref().and_then(|c| c.data.as_ref()).unwrap_or(&empty));
        let now: BTreeSet<(&'static str, String)> = findings
            .unsupported
            .into_iter()
            .map(|k| {
                (
                    "UnsupportedConfig",
                    format!(
                        "ConfigMap key {k} is not supported by kcluster's ingress and is ignored"
                    ),
                )
            })
            .chain(findings.invalid.into_iter().map(|i| {
                (
                    "InvalidConfig",
                    format!("ConfigMap key {i}; its default is kept"),
                )
            }))
            .collect();
        if let Some(cm) = &cm {
            for (reason, message) in now.difference(&reported_config) {
                warn!(reason, "{message}");
                recorder.event(cm.as_ref(), WARNING, reason, "Sync", message.clone());
            }
        }
        reported_config = now;
        let snap = translate::Snapshot {
            global: Arc::new(global),
            ingresses: ingresses.list_all(),
            classes: classes.list_all(),
            services: services.list_all(),
            slices: slices.list_all(),
            secrets: secrets.list_all(),
        };
        let built = translate::build(&snap);
        let tls_problems = resolver.update(&built.tls, |key| {
            let (ns, name) = key.split_once('/')?;
            secrets.get(&ObjKey::new(ns, name))
        });
        shared.set_table(built.table);
        let svc = services.get(&ObjKey::new(SERVICE_NAMESPACE, SERVICE_NAME));
        let address = svc.as_deref().and_then(published);
        if let Some((_, h, s)) = &address {
            shared.http_port.store(*h, Ordering::Relaxed);
            shared.https_port.store(*s, Ordering::Relaxed);
            port_proxies.set_host_ports(&[*h, *s]);
        }

        let now: BTreeSet<translate::Problem> =
            built.problems.into_iter().chain(tls_problems).collect();
        for p in now.difference(&reported) {
            report(&recorder, &ingresses, p);
        }
        reported = now;

        if let Some((host, h, s)) = &address {
            statuses.send_replace(Some(StatusWant {
                served: built.served,
                host: host.clone(),
                http: *h,
                https: *s,
            }));
        }

        wake.notified().await;
        // Let a burst of changes (a Deployment's endpoints, kubectl apply of many objects) land.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report(recorder: &Recorder, ingresses: &Informer<Ingress>, p: &translate::Problem) {
    let Some((ns, name)) = p.ingress.split_once('/') else {
        return;
    };
    if let Some(ing) = ingresses.get(&ObjKey::new(ns, name)) {
        warn!(ingress = %p.ingress, reason = p.reason, "{}", p.message);
        recorder.event(ing.as_ref(), WARNING, p.reason, "Sync", p.message.clone());
    }
}

/// What the statuses should say after the latest route rebuild.
struct StatusWant {
    served: Vec<Arc<Ingress>>,
    host: String,
    http: u16,
    https: u16,
}

/// Status writes in flight at once: enough to keep up with a burst, few enough to leave the
/// API server to everyone else.
const STATUS_WRITERS: usize = 8;

/// Writes statuses for the latest wish only: wishes that come while a round runs are merged
/// into the next one.
async fn status_writer(
    client: kube::Client,
    mut wanted: tokio::sync::watch::Receiver<Option<StatusWant>>,
) {
    let mut written: BTreeMap<String, Value> = BTreeMap::new();
    while wanted.changed().await.is_ok() {
        let Some(want) = wanted
            .borrow_and_update()
            .as_ref()
            .map(|w| (w.served.clone(), w.host.clone(), w.http, w.https))
        else {
            continue;
        };
        let (served, host, http, https) = want;
        write_statuses(&client, &served, &host, http, https, &mut written).await;
    }
}

/// `status.loadBalancer.ingress` of each served Ingress: the host address, and the ports it
/// listens on there.
async fn write_statuses(
    client: &kube::Client,
    served: &[Arc<Ingress>],
    host: &str,
    http: u16,
    https: u16,
    written: &mut BTreeMap<String, Value>,
) {
    use futures::StreamExt;
    let mut keep = BTreeMap::new();
    let mut patches = Vec::new();
    for ing in served {
        let key = translate::key(ing);
        let mut ports = vec![json!({"port": http, "protocol": "TCP"})];
        if ing
            .spec
            .as_ref()
            .and_then(|s| s.tls.as_ref())
            .is_some_and(|t| !t.is_empty())
        {
            ports.push(json!({"port": https, "protocol": "TCP"}));
        }
        let want = json!([{"ip": host, "ports": ports}]);
        let current = ing
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        if current != want && written.get(&key) != Some(&want) {
            let (Some(ns), Some(name)) =
                (ing.metadata.namespace.clone(), ing.metadata.name.clone())
            else {
                continue;
            };
            patches.push((key, ns, name, want));
        } else {
            keep.insert(key, want);
        }
    }
    let results = futures::stream::iter(patches)
        .map(|(key, ns, name, want)| async move {
            let api: Api<Ingress> = Api::namespaced(client.clone(), &ns);
            let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => Some((key, want)),
                Err(e) => {
                    warn!(ingress = %key, error = %e, "cannot write the Ingress status");
                    None
                }
            }
        })
        .buffer_unordered(STATUS_WRITERS)
        .collect::<Vec<_>>()
        .await;
    keep.extend(results.into_iter().flatten());
    *written = keep;
}
