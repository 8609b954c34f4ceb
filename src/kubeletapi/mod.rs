//! The node agent's kubelet API on port 10250 (HTTPS, client certificates from the cluster CA):
//! what the API server's pods/log, exec, attach and portforward subresources reach.
//!
//! * `find` — a pod's containers on this node, by the runtime annotations the kubelet sets.
//! * `logs` — `/containerLogs/{ns}/{pod}/{container}` from the CRI log files.
//! * `remotecommand` — `/exec` and `/attach` over WebSocket (`v5`/`v4.channel.k8s.io`) or
//!   SPDY/3.1 (`v4.channel.k8s.io`); `channel` is the WebSocket channel codec.
//! * `portforward` — `/portForward/{ns}/{pod}` over SPDY, plain or tunnelled in a WebSocket;
//!   `portforward_channels` — the same over WebSocket channels (`v4.channel.k8s.io`).
//! * `spdy` — the SPDY/3.1 framing and server connection.
//! * `stats` — `/stats/summary` and `/metrics/resource` from the node's and pods' cgroups.
//! * `certs` — the serving certificate (issued by `kcluster create`, or here where the CA key is).

pub mod certs;
pub mod channel;
mod find;
mod logs;
mod portforward;
mod portforward_channels;
pub mod remotecommand;
pub mod spdy;
pub mod stats;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::runtime::container::Runtime;

pub const PORT: u16 = 10250;

pub type Body = BoxBody<Bytes, Infallible>;

/// Who may use the API: the API server's kubelet client (and any cluster admin).
const ALLOWED_GROUP: &str = "system:masters";

pub struct KubeletApi {
    pub runtime: Arc<Runtime>,
    pub stats: Arc<stats::Stats>,
}

/// Serves the kubelet API on 0.0.0.0:10250 until the task is dropped.
pub async fn serve(api: Arc<KubeletApi>, tls: rustls::ServerConfig) -> Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], PORT)))
        .await
        .with_context(|| format!("cannot listen on port {PORT} for the kubelet API"))?;
    serve_on(api, listener, tls).await
}

pub async fn serve_on(
    api: Arc<KubeletApi>,
    listener: TcpListener,
    tls: rustls::ServerConfig,
) -> Result<()> {
    info!(addr = %listener.local_addr()?, "kubelet API listening");
    crate::apiserver::tls::accept_loop(listener, tls, move |conn| {
        let api = api.clone();
        async move {
            let peer = conn.peer;
            let allowed = conn
                .identity
                .is_some_and(|id| id.groups.iter().any(|g| g == ALLOWED_GROUP));
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                async move {
                    if !allowed {
                        return Ok::<_, Infallible>(status(
                            StatusCode::FORBIDDEN,
                            "Forbidden",
                            "this client may not use the kubelet API",
                        ));
                    }
                    Ok::<_, Infallible>(api.handle(req).await)
                }
            });
            let io = hyper_util::rt::TokioIo::new(conn.stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await
            {
                debug!(%peer, error = %e, "kubelet API connection ended with an error");
            }
        }
    })
    .await;
    Ok(())
}

/// A Kubernetes Status body (what the API server relays and kubectl prints).
pub fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(full(body.to_string()))
        .unwrap_or_else(|_| Response::new(full("")))
}

pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed()
}

pub fn bad_request(message: &str) -> Response<Body> {
    status(StatusCode::BAD_REQUEST, "BadRequest", message)
}

pub fn not_found(message: &str) -> Response<Body> {
    status(StatusCode::NOT_FOUND, "NotFound", message)
}

/// The query as (name, value) pairs, repeated names kept (exec's `command`).
pub fn query_pairs(req: &Request<Incoming>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A boolean parameter, decoded as the API server decodes it, since the API server passes its
/// clients' spellings (`stdin=True`, `follow=1`) through unchanged.
pub fn query_flag(query: &[(String, String)], name: &str) -> bool {
    crate::apiserver::params::bool_param(query_value(query, name))
}

pub fn query_value<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl KubeletApi {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let parts: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        debug!(method = %req.method(), %path, "kubelet API request");
        match parts.as_slice() {
            ["healthz"] => Response::new(full("ok")),
            ["stats", "summary"] if req.method() == http::Method::GET => self.stats.summary().await,
            ["metrics", "resource"] if req.method() == http::Method::GET => {
                self.stats.resource_metrics().await
            }
            ["containerLogs", ns, pod, container] => {
                logs::handle(&self.runtime, ns, pod, container, &query_pairs(&req)).await
            }
            ["exec", ns, pod, container] => {
                remotecommand::handle(self.runtime.clone(), req, ns, pod, container, false).await
            }
            ["attach", ns, pod, container] => {
                remotecommand::handle(self.runtime.clone(), req, ns, pod, container, true).await
            }
            // The uid segment some clients add is not needed: the pod name is unique.
            ["exec", ns, pod, _uid, container] => {
                remotecommand::handle(self.runtime.clone(), req, ns, pod, container, false).await
            }
            ["attach", ns, pod, _uid, container] => {
                remotecommand::handle(self.runtime.clone(), req, ns, pod, container, true).await
            }
            ["portForward", ns, pod] | ["portForward", ns, pod, _] => {
                portforward::handle(self.runtime.clone(), req, ns, pod).await
            }
            _ => not_found(&format!("the kubelet API has no {path}")),
        }
    }
}

fn percent_decode(segment: &str) -> String {
    form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| segment.to_string())
}
