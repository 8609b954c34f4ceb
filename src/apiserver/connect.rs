//! Subresources that connect through the API server to something else, as Kubernetes' "connect"
//! verbs do: pods/log, exec, attach and portforward and nodes/proxy go to the node's agent (the
//! kubelet API on the node's daemon endpoint, over TLS with the API server's client
//! certificate); pods/proxy and services/proxy go straight to a pod's address. HTTP upgrades
//! (WebSocket, SPDY) are passed through byte for byte once both sides have switched protocols.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, BodyStream, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use super::Body;
use super::handlers::Query;
use super::object;
use super::request::ResourceRequest;
use super::resources;
use super::selector::label_selector_matches;
use super::status::ApiError;
use crate::store::Store;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// kubelet's default port, used when a node does not report its daemon endpoint.
const DEFAULT_KUBELET_PORT: u16 = 10250;

/// Where a connect request goes.
struct Backend {
    address: String,
    /// The TLS name to verify, for node agents; None for plain HTTP to a pod.
    tls_name: Option<String>,
    path_and_query: String,
}

pub async fn handle(
    store: &Store,
    kubelet_tls: Option<&Arc<rustls::ClientConfig>>,
    target: &ResourceRequest,
    full_path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let sub = target.subresource.as_deref().unwrap_or_default();
    let raw_name = target.name.clone().unwrap_or_default();
    let query = req.uri().query().unwrap_or_default().to_string();
    let backend = match (target.def.plural, sub) {
        ("pods", "log" | "exec" | "attach" | "portforward") => {
            let pod = load(store, target, &raw_name)?;
            let ns = target.namespace.as_deref().unwrap_or("default");
            let node = bound_node(&pod, &raw_name)?;
            let container = || choose_container(&pod, &raw_name, &Query::parse(Some(&query)));
            let path = match sub {
                "log" => format!("/containerLogs/{ns}/{raw_name}/{}", container()?),
                "exec" => format!("/exec/{ns}/{raw_name}/{}", container()?),
                "attach" => format!("/attach/{ns}/{raw_name}/{}", container()?),
                _ => format!("/portForward/{ns}/{raw_name}"),
            };
            kubelet_backend(store, &node, with_query(path, &query))?
        }
        ("nodes", "proxy") => {
            let rest = proxy_rest(full_path);
            kubelet_backend(store, &raw_name, with_query(rest, &query))?
        }
        ("pods", "proxy") => {
            let (scheme, name, port) = split_name_port(&raw_name);
            refuse_https(scheme)?;
            let pod = load(store, target, name)?;
            let ip = pod
                .pointer("/status/podIP")
                .and_then(Value::as_str)
                .filter(|ip| !ip.is_empty())
                .ok_or_else(|| {
                    ApiError::service_unavailable(format!("pod {name} has no IP address yet"))
                })?;
            let port = match port {
                Some(p) => resolve_container_port(&pod, p)?,
                None => first_container_port(&pod).unwrap_or(80),
            };
            Backend {
                address: format!("{ip}:{port}"),
                tls_name: None,
                path_and_query: with_query(proxy_rest(full_path), &query),
            }
        }
        ("services", "proxy") => {
            let (scheme, name, port) = split_name_port(&raw_name);
            refuse_https(scheme)?;
            let ns = target.namespace.as_deref().unwrap_or("default");
            let address = service_endpoint(store, ns, name, port)?;
            Backend {
                address,
                tls_name: None,
                path_and_query: with_query(proxy_rest(full_path), &query),
            }
        }
        (plural, sub) => return Err(ApiError::path_not_found(&format!("{plural}/{sub}"))),
    };
    let tls = match &backend.tls_name {
        Some(name) => Some((
            kubelet_tls.cloned().ok_or_else(|| {
                ApiError::service_unavailable("this API server has no credentials for node agents")
            })?,
            name.clone(),
        )),
        None => None,
    };
    forward(req, backend, tls).await
}

fn load(store: &Store, target: &ResourceRequest, name: &str) -> Result<Value, ApiError> {
    let def = target.def;
    let kv = store
        .get(&def.key(target.namespace.as_deref(), name))
        .map_err(|e| ApiError::from_store(e, def.group, def.plural, name))?
        .ok_or_else(|| ApiError::not_found(def.group, def.plural, name))?;
    object::from_stored(&kv)
}

fn bound_node(pod: &Value, name: &str) -> Result<String, ApiError> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request(format!("pod {name} does not have a host assigned")))
}

/// The container named in the query, or the pod's only container, with Kubernetes' messages.
fn choose_container(pod: &Value, name: &str, query: &Query) -> Result<String, ApiError> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect();
    let all: Vec<&str> = names
        .iter()
        .copied()
        .chain(
            ["initContainers", "ephemeralContainers"]
                .iter()
                .flat_map(|f| {
                    pod.pointer(&format!("/spec/{f}"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .filter_map(|c| c.get("name").and_then(Value::as_str)),
        )
        .collect();
    match query.get("container") {
        Some(c) if all.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            names.join(" ")
        ))),
    }
}

fn kubelet_backend(
    store: &Store,
    node_name: &str,
    path_and_query: String,
) -> Result<Backend, ApiError> {
    let def = resources::find("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes are not served"))?;
    let kv = store
        .get(&def.key(None, node_name))
        .map_err(|e| ApiError::from_store(e, "", "nodes", node_name))?
        .ok_or_else(|| ApiError::not_found("", "nodes", node_name))?;
    let node = object::from_stored(&kv)?;
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .ok_or_else(|| {
            ApiError::service_unavailable(format!("node {node_name} reports no InternalIP"))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Ok(Backend {
        address: format!("{ip}:{port}"),
        tls_name: Some(node_name.to_string()),
        path_and_query,
    })
}

/// `name`, `name:port` or `scheme:name:port`, as proxy URLs spell a target.
fn split_name_port(raw: &str) -> (Option<&str>, &str, Option<&str>) {
    let parts: Vec<&str> = raw.split(':').collect();
    match parts.as_slice() {
        [name, port] => (None, *name, nonempty(port)),
        [scheme, name, port, ..] => (nonempty(scheme), *name, nonempty(port)),
        _ => (None, raw, None),
    }
}

fn nonempty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn refuse_https(scheme: Option<&str>) -> Result<(), ApiError> {
    match scheme {
        None | Some("http") => Ok(()),
        Some(other) => Err(ApiError::bad_request(format!(
            "proxying with scheme {other:?} is not supported; use http"
        ))),
    }
}

fn resolve_container_port(pod: &Value, port: &str) -> Result<u16, ApiError> {
    if let Ok(n) = port.parse::<u16>() {
        return Ok(n);
    }
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|p| p.get("name").and_then(Value::as_str) == Some(port))
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| ApiError::bad_request(format!("no container port named {port:?}")))
}

fn first_container_port(pod: &Value) -> Option<u16> {
    pod.pointer("/spec/containers/0/ports/0/containerPort")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
}

/// A ready endpoint of the service for the requested service port (by name or number), from its
/// EndpointSlices.
fn service_endpoint(
    store: &Store,
    ns: &str,
    name: &str,
    port: Option<&str>,
) -> Result<String, ApiError> {
    let svc_def = resources::find("", "v1", "services")
        .ok_or_else(|| ApiError::internal("services are not served"))?;
    let svc = store
        .get(&svc_def.key(Some(ns), name))
        .map_err(|e| ApiError::from_store(e, "", "services", name))?
        .ok_or_else(|| ApiError::not_found("", "services", name))?;
    let svc = object::from_stored(&svc)?;
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let wanted = match port {
        None => ports.first(),
        Some(p) => ports.iter().find(|sp| {
            sp.get("name").and_then(Value::as_str) == Some(p)
                || sp
                    .get("port")
                    .and_then(Value::as_u64)
                    .map(|n| n.to_string())
                    .as_deref()
                    == Some(p)
        }),
    }
    .ok_or_else(|| {
        ApiError::service_unavailable(format!(
            "no service port {:?} on service {name}",
            port.unwrap_or("")
        ))
    })?;
    let port_name = wanted
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let slice_def = resources::find("discovery.k8s.io", "v1", "endpointslices")
        .ok_or_else(|| ApiError::internal("endpointslices are not served"))?;
    let (slices, _) = store
        .list(&slice_def.list_prefix(Some(ns)))
        .map_err(|e| ApiError::from_store(e, "discovery.k8s.io", "endpointslices", ""))?;
    let owner = serde_json::json!({"matchLabels": {"kubernetes.io/service-name": name}});
    for kv in &slices {
        let slice = object::from_stored(kv)?;
        if !label_selector_matches(&owner, &super::selector::labels_of(&slice)) {
            continue;
        }
        let Some(port) = slice
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or_default() == port_name)
            .and_then(|p| p.get("port").and_then(Value::as_u64))
        else {
            continue;
        };
        let ready = slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false));
        if let Some(address) = ready
            .and_then(|e| e.pointer("/addresses/0"))
            .and_then(Value::as_str)
        {
            return Ok(format!("{address}:{port}"));
        }
    }
    Err(ApiError::service_unavailable(format!(
        "no endpoints available for service \"{name}\""
    )))
}

/// What follows `/proxy` in the request path (at least "/").
fn proxy_rest(full_path: &str) -> String {
    let mut segments = full_path.split('/');
    let mut rest = String::new();
    let mut seen = false;
    for s in segments.by_ref() {
        if seen {
            rest.push('/');
            rest.push_str(s);
        } else if s == "proxy" {
            seen = true;
        }
    }
    if rest.is_empty() {
        "/".to_string()
    } else {
        rest
    }
}

fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// `GET path_and_query` from a node's kubelet API, for the API server's own use (the
/// resource metrics): the body of a 200 answer, or why there is none.
pub async fn kubelet_get(
    store: &Store,
    kubelet_tls: &Arc<rustls::ClientConfig>,
    node_name: &str,
    path_and_query: &str,
    max_bytes: usize,
) -> Result<Bytes, ApiError> {
    let backend = kubelet_backend(store, node_name, path_and_query.to_string())?;
    let io = dial(&backend, Some((kubelet_tls.clone(), node_name.to_string()))).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ApiError::service_unavailable(format!("error talking to the backend: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "kubelet connection ended");
        }
    });
    let request = Request::get(path_and_query)
        .header(header::HOST, backend.address.as_str())
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(format!("cannot build the kubelet request: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ApiError::service_unavailable(format!("error talking to the backend: {e}")))?;
    let code = response.status();
    let body = http_body_util::Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|e| {
            ApiError::service_unavailable(format!("cannot read the kubelet's answer: {e}"))
        })?
        .to_bytes();
    if code != StatusCode::OK {
        return Err(ApiError::service_unavailable(format!(
            "node {node_name} answered {path_and_query} with {code}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )));
    }
    Ok(body)
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn dial(
    backend: &Backend,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
) -> Result<Box<dyn Io>, ApiError> {
    let unreachable =
        |e: String| ApiError::service_unavailable(format!("error dialing backend: {e}"));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&backend.address))
        .await
        .map_err(|_| unreachable(format!("dial tcp {}: i/o timeout", backend.address)))?
        .map_err(|e| unreachable(format!("dial tcp {}: {e}", backend.address)))?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Box::new(tcp)),
        Some((config, name)) => {
            let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|e| unreachable(format!("bad node name {name:?}: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, tcp)
                .await
                .map_err(|e| unreachable(format!("TLS with {name}: {e}")))?;
            Ok(Box::new(stream))
        }
    }
}

/// Sends `req` to the backend and relays the answer; a 101 answer switches both connections to
/// a raw byte pipe.
async fn forward(
    mut req: Request<Incoming>,
    backend: Backend,
    tls: Option<(Arc<rustls::ClientConfig>, String)>,
) -> Result<Response<Body>, ApiError> {
    let io = dial(&backend, tls).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ApiError::service_unavailable(format!("error talking to the backend: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            debug!(error = %e, "backend connection ended");
        }
    });
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (parts, body) = req.into_parts();
    let uri: Uri = backend
        .path_and_query
        .parse()
        .map_err(|e| ApiError::bad_request(format!("cannot build the backend URL: {e}")))?;
    let mut outgoing = Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        // The caller's credentials are for us, not for the backend.
        if name == header::HOST || name == header::AUTHORIZATION {
            continue;
        }
        outgoing = outgoing.header(name, value);
    }
    let outgoing = outgoing
        .header(header::HOST, backend.address.as_str())
        .body(body)
        .map_err(|e| ApiError::internal(format!("cannot build the backend request: {e}")))?;
    let mut response = sender
        .send_request(outgoing)
        .await
        .map_err(|e| ApiError::service_unavailable(format!("error talking to the backend: {e}")))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let backend_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::join!(client_upgrade, backend_upgrade) {
                (Ok(client), Ok(server)) => {
                    let (mut client, mut server) = (TokioIo::new(client), TokioIo::new(server));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut server).await {
                        debug!(error = %e, "upgraded stream ended");
                    }
                }
                (c, s) => debug!(
                    client = c.is_ok(),
                    backend = s.is_ok(),
                    "upgrade did not complete"
                ),
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(
            parts,
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        ));
    }
    let (parts, body) = response.into_parts();
    // A body that breaks off mid-stream simply ends: the status line has been sent already.
    let frames = BodyStream::new(body)
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(|r| async move { r.ok() });
    let body = BodyExt::boxed(StreamBody::new(frames.map(Ok::<Frame<Bytes>, Infallible>)));
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_targets_and_paths_parse() {
        assert_eq!(split_name_port("web"), (None, "web", None));
        assert_eq!(split_name_port("web:8080"), (None, "web", Some("8080")));
        assert_eq!(
            split_name_port("https:web:443"),
            (Some("https"), "web", Some("443"))
        );
        assert_eq!(proxy_rest("/api/v1/namespaces/d/pods/p:80/proxy"), "/");
        assert_eq!(
            proxy_rest("/api/v1/namespaces/d/pods/p:80/proxy/a/b"),
            "/a/b"
        );
        assert_eq!(proxy_rest("/api/v1/nodes/n1/proxy/metrics"), "/metrics");
    }

    #[test]
    fn container_choice_follows_kubernetes() {
        let pod = serde_json::json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "init"}]}});
        let q = |s: &str| Query::parse(Some(s));
        assert_eq!(choose_container(&pod, "p", &q("container=b")).unwrap(), "b");
        assert_eq!(
            choose_container(&pod, "p", &q("container=init")).unwrap(),
            "init"
        );
        let err = choose_container(&pod, "p", &q("")).unwrap_err();
        assert_eq!(
            err.message,
            "a container name must be specified for pod p, choose one of: [a b]"
        );
        assert_eq!(
            choose_container(&pod, "p", &q("container=zz"))
                .unwrap_err()
                .code,
            400
        );
    }
}
