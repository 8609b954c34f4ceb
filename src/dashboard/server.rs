//! The HTTP side: the embedded page and its assets, `/events` (Server-Sent Events: a snapshot,
//! then deltas; a page that falls behind gets a fresh snapshot) and `/snapshot` (the same state
//! as one JSON document). GET only: the dashboard never changes the cluster.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast::error::RecvError;

use super::Hub;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// A comment line this often keeps proxies from closing a quiet stream and lets the server
/// notice a page that went away.
const KEEPALIVE: Duration = Duration::from_secs(15);

pub(super) type Body = BoxBody<Bytes, Infallible>;

pub async fn serve(
    listener: tokio::net::TcpListener,
    hub: Arc<Hub>,
    loopback_only: bool,
) -> Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: keep serving the pages already open.
                tracing::warn!("dashboard: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let hub = hub.clone();
                async move { Ok::<_, Infallible>(respond(&hub, &request, loopback_only)) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("dashboard connection from {peer}: {e}");
            }
        });
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// Whether the Host header names a loopback address: a page of another site whose name was
/// made to resolve to 127.0.0.1 (DNS rebinding) must not read the cluster through us.
pub(super) fn loopback_host(headers: &http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    let literal = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || literal
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn respond(hub: &Arc<Hub>, request: &Request<Incoming>, loopback_only: bool) -> Response<Body> {
    if loopback_only && !loopback_host(request.headers()) {
        return full(
            StatusCode::FORBIDDEN,
            "text/plain; charset=utf-8",
            "the dashboard answers only to localhost and 127.0.0.1 (serve it with --address to reach it otherwise)\n",
        );
    }
    if request.method() != Method::GET {
        let mut response = full(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "the dashboard is read-only: GET only\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return response;
    }
    match request.uri().path() {
        "/" | "/index.html" => full(StatusCode::OK, "text/html; charset=utf-8", INDEX),
        "/app.js" => full(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
        "/app.css" => full(StatusCode::OK, "text/css; charset=utf-8", STYLE),
        "/snapshot" => full(StatusCode::OK, "application/json", hub.snapshot()),
        "/events" => events(hub),
        _ => full(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n",
        ),
    }
}

fn message(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// The page's stream: `retry` (reconnect after a second), the snapshot, then every change.
pub(super) fn events(hub: &Arc<Hub>) -> Response<Body> {
    let (snapshot, receiver) = hub.subscribe();
    let first = Bytes::from(format!("retry: 1000\ndata: {snapshot}\n\n"));
    let hub = hub.clone();
    let changes = futures::stream::unfold((receiver, hub), |(mut receiver, hub)| async move {
        let chunk = match tokio::time::timeout(KEEPALIVE, receiver.recv()).await {
            Ok(Ok(change)) => message(&change),
            // The page is too far behind to catch up by deltas: start it over.
            Ok(Err(RecvError::Lagged(_))) => {
                let (snapshot, fresh) = hub.subscribe();
                receiver = fresh;
                message(&snapshot)
            }
            Ok(Err(RecvError::Closed)) => return None,
            Err(_) => Bytes::from_static(b": keepalive\n\n"),
        };
        Some((Ok::<_, Infallible>(Frame::data(chunk)), (receiver, hub)))
    });
    let stream = futures::stream::once(async move { Ok(Frame::data(first)) }).chain(changes);
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}
