//! The reverse proxy: HTTP on one port, HTTPS (HTTP/1.1 and HTTP/2 by ALPN) on the other,
//! each request matched against the current route table (swapped whole on changes, so open
//! connections keep going), then answered here (redirects, 403, 404, 413, 503, CORS
//! preflights) or forwarded to a ready endpoint over pooled keep-alive connections. Upgrades
//! (WebSocket) are passed through byte for byte.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::annotations::{BackendProtocol, Options};
use super::config::Origin;
use super::port_proxies::PortProxies;
use super::routes::{Route, Table, Upstream};
use super::send_timeout;
use super::tls::Resolver;
use super::upstream_tls;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Connections served at once per listener; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16_384;
/// A client must send a request's headers within this (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head accepted (nginx's large_client_header_buffers 4 × 8k, rounded up).
const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What the proxy reads on every request; the controller writes it.
pub struct Shared {
    pub table: RwLock<Arc<Table>>,
    /// The host ports clients reach us on (for redirects and X-Forwarded-Port).
    pub http_port: AtomicU16,
    pub https_port: AtomicU16,
    client: Client<HttpConnector, Body>,
    h2c: Client<HttpConnector, Body>,
    /// backend-protocol HTTPS: HTTP/1.1 over TLS.
    https: Client<HttpsConnector<HttpConnector>, Body>,
    /// backend-protocol GRPCS: HTTP/2 over TLS.
    grpcs: Client<HttpsConnector<HttpConnector>, Body>,
}

impl Shared {
    pub fn new() -> Result<Arc<Shared>, rustls::Error> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        // HTTP/1.1 upstreams keep a large idle pool; h2 ones multiplex on one connection each.
        let http1 = || {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .pool_max_idle_per_host(320)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .clone()
        };
        let http2 = || {
            Client::builder(TokioExecutor::new())
                .http2_only(true)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .clone()
        };
        let client = http1().build(connector.clone());
        let h2c = http2().build(connector.clone());
        // The TLS connectors dial the same way, but under an https:// URI.
        connector.enforce_http(false);
        let tls = |enable_h2: bool| -> Result<HttpsConnector<HttpConnector>, rustls::Error> {
            let builder = HttpsConnectorBuilder::new()
                .with_tls_config(upstream_tls::config()?)
                .https_only();
            Ok(if enable_h2 {
                builder.enable_http2().wrap_connector(connector.clone())
            } else {
                builder.enable_http1().wrap_connector(connector.clone())
            })
        };
        let https = http1().build(tls(false)?);
        let grpcs = http2().build(tls(true)?);
        Ok(Arc::new(Shared {
            table: RwLock::new(Arc::new(Table::default())),
            http_port: AtomicU16::new(80),
            https_port: AtomicU16::new(443),
            client,
            h2c,
            https,
            grpcs,
        }))
    }

    pub fn set_table(&self, t: Table) {
        if let Ok(mut w) = self.table.write() {
            *w = Arc::new(t);
        }
    }

    fn table(&self) -> Arc<Table> {
        match self.table.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

#[derive(Clone, Copy)]
struct Conn {
    remote: SocketAddr,
    https: bool,
}

/// The next connection, with the permit it holds while it is served. Accept errors (out of
/// file descriptors) are retried after a pause rather than spinning.
async fn next_connection(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
) -> Option<(
    tokio::sync::OwnedSemaphorePermit,
    tokio::net::TcpStream,
    SocketAddr,
)> {
    let permit = limit.clone().acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                return Some((permit, stream, remote));
            }
            Err(e) => {
                debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// How connections on a listener name their client.
#[derive(Clone)]
pub enum Clients {
    /// The TCP peer is the client (callers inside the cluster on ports 80/443).
    Peer,
    /// Only our host-port proxies may connect, each connection opening with a PROXY header.
    PortProxies(Arc<PortProxies>),
}

impl Clients {
    async fn client(
        &self,
        stream: &mut tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Option<SocketAddr> {
        match self {
            Clients::Peer => Some(peer),
            Clients::PortProxies(p) => p.client(stream, peer).await,
        }
    }
}

/// Serves plain HTTP on `listener` forever.
pub async fn serve_http(listener: TcpListener, shared: Arc<Shared>, clients: Clients) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Some((permit, mut stream, peer)) = next_connection(&listener, &limit).await else {
            return;
        };
        let shared = shared.clone();
        let clients = clients.clone();
        tokio::spawn(async move {
            if let Some(remote) = clients.client(&mut stream, peer).await {
                serve_conn(
                    TokioIo::new(stream),
                    shared,
                    Conn {
                        remote,
                        https: false,
                    },
                )
                .await;
            }
            drop(permit);
        });
    }
}

/// Serves HTTPS on `listener` forever, certificates from `resolver`.
pub async fn serve_https(
    listener: TcpListener,
    shared: Arc<Shared>,
    resolver: Arc<Resolver>,
    clients: Clients,
) {
    let config = match super::tls::server_config(resolver) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            warn!(error = %format!("{e:#}"), "cannot set up TLS; HTTPS is not served");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Some((permit, mut stream, peer)) = next_connection(&listener, &limit).await else {
            return;
        };
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let clients = clients.clone();
        tokio::spawn(async move {
            let Some(remote) = clients.client(&mut stream, peer).await else {
                return;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    serve_conn(
                        TokioIo::new(tls),
                        shared,
                        Conn {
                            remote,
                            https: true,
                        },
                    )
                    .await
                }
                Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%remote, "TLS handshake timed out"),
            }
            drop(permit);
        });
    }
}

async fn serve_conn<I>(io: TokioIo<I>, shared: Arc<Shared>, conn: Conn)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(handle(req, &shared, conn).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(256);
    if let Err(e) = builder.serve_connection_with_upgrades(io, svc).await {
        debug!(remote = %conn.remote, error = %e, "connection ended with an error");
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

fn page(status: u16, text: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = status.canonical_reason().unwrap_or("");
    let body = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>{text}</center>\r\n</body>\r\n</html>\r\n",
        code = status.as_u16()
    );
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    r
}

fn redirect(status: u16, location: &str) -> Response<Body> {
    let mut r = page(status, "kcluster ingress");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The request's host without a port, lower case; and the raw value (port kept).
fn host_of(req: &Request<Incoming>) -> (String, String) {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let bare = if raw.starts_with('[') {
        raw.split_inclusive(']')
            .next()
            .unwrap_or_default()
            .to_string()
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
            _ => raw.clone(),
        }
    };
    (bare.to_ascii_lowercase(), raw)
}

fn path_and_query(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into())
}

fn with_port(host: &str, port: u16, default: u16) -> String {
    if port == default {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

async fn handle(req: Request<Incoming>, shared: &Shared, conn: Conn) -> Response<Body> {
    let table = shared.table();
    let (host, raw_host) = host_of(&req);
    let scheme = if conn.https { "https" } else { "http" };
    let https_port = shared.https_port.load(Ordering::Relaxed);
    let http_port = shared.http_port.load(Ordering::Relaxed);
    let ext_port = if conn.https { https_port } else { http_port };

    if let Some(target) = table.www_redirects.get(&host) {
        let loc = format!(
            "{scheme}://{}{}",
            with_port(target, ext_port, if conn.https { 443 } else { 80 }),
            path_and_query(req.uri())
        );
        return redirect(308, &loc);
    }
    let origin = table
        .global
        .origin(conn.remote.ip(), req.headers(), scheme, &raw_host, ext_port);
    let server = table.server(&host).clone();
    let path = req.uri().path().to_string();
    let route: Option<&Route> = server.find(&path);
    let (options, upstream): (&Arc<Options>, &Arc<Upstream>) = match route {
        Some(r) => (&r.options, &r.upstream),
        None => (&server.fallback_options, &server.fallback),
    };

    if let Some(ip) = super::config::v4(origin.ip) {
        if !options.allow.is_empty() && !options.allow.iter().any(|c| c.contains(ip)) {
            return page(403, "kcluster ingress");
        }
        if options.deny.iter().any(|c| c.contains(ip)) {
            return page(403, "kcluster ingress");
        }
    }
    if let Some((url, code)) = options
        .temporal_redirect
        .as_ref()
        .or(options.permanent_redirect.as_ref())
    {
        return redirect(*code, url);
    }
    // Behind a proxy that ends TLS (use-forwarded-headers), X-Forwarded-Proto says https.
    let redirect_to_https = origin.proto == "http"
        && ((server.tls && route.is_some() && options.ssl_redirect != Some(false))
            || options.force_ssl_redirect);
    if redirect_to_https {
        let loc = format!(
            "https://{}{}",
            with_port(&host, https_port, 443),
            path_and_query(req.uri())
        );
        return redirect(308, &loc);
    }
    if let Some(root) = &options.app_root
        && path == "/"
    {
        return redirect(302, &format!("{scheme}://{raw_host}{root}"));
    }
    let cors = options
        .cors
        .as_ref()
        .map(|c| cors_headers(c, req.headers()));
    if cors.is_some() && req.method() == Method::OPTIONS {
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        if let Some(h) = cors {
            r.headers_mut().extend(h);
        }
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain charset=UTF-8"),
        );
        return r;
    }
    if let Some(a) = &options.auth {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !super::auth::allowed(header, &a.users) {
            let mut r = page(401, "kcluster ingress");
            let realm = a.realm.replace('"', "'");
            if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return r;
        }
    }
    if let Some(limit) = options.body_limit {
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return page(413, "kcluster ingress");
        }
    }

    let (upstream, is_canary) = match route.and_then(|r| r.canary.as_ref()) {
        Some(c) if use_canary(c, req.headers()) => (&c.upstream, true),
        _ => (upstream, false),
    };
    let mut set_cookie = None;
    let addr = match upstream.as_ref() {
        Upstream::Fixed { status, reason } => return page(*status, reason),
        Upstream::Addrs { addrs, .. } => {
            let sticky = options.affinity.as_ref().filter(|_| !is_canary);
            let kept = sticky.and_then(|a| {
                let value = cookie(req.headers(), &a.cookie)?;
                addrs.iter().find(|x| affinity_value(x) == value).copied()
            });
            match kept.or_else(|| upstream.pick()) {
                Some(x) => {
                    if let Some(a) = sticky
                        && kept.is_none()
                    {
                        set_cookie = Some(affinity_cookie(a, &x, route.map(|r| r.path.as_str())));
                    }
                    x
                }
                None => return page(503, "kcluster ingress"),
            }
        }
    };

    let mut resp = forward(req, shared, &origin, route, options, addr).await;
    if resp.status() == StatusCode::BAD_GATEWAY
        && let Upstream::Addrs { service, .. } = upstream.as_ref()
    {
        debug!(server = %server.host, %service, %addr, "bad gateway");
    }
    if let Some(h) = cors {
        resp.headers_mut().extend(h);
    }
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The affinity cookie's value for an endpoint: stable across reloads and restarts.
fn affinity_value(addr: &SocketAddr) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(addr.to_string().as_bytes())[..16])
}

fn affinity_cookie(
    a: &super::annotations::Affinity,
    addr: &SocketAddr,
    path: Option<&str>,
) -> String {
    let mut c = format!(
        "{}={}; Path={}; HttpOnly",
        a.cookie,
        affinity_value(addr),
        a.path.as_deref().or(path).unwrap_or("/")
    );
    if let Some(m) = a.max_age {
        c.push_str(&format!("; Max-Age={m}"));
    }
    if let Some(e) = a.expires {
        let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(e as i64);
        c.push_str(&format!(
            "; Expires={}",
            at.strftime("%a, %d %b %Y %H:%M:%S GMT")
        ));
    }
    if let Some(s) = &a.samesite {
        c.push_str(&format!("; SameSite={s}"));
    }
    c
}

fn use_canary(c: &super::routes::CanaryBackend, headers: &HeaderMap) -> bool {
    if let Some(name) = &c.rule.header
        && let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok())
    {
        if let Some(want) = &c.rule.header_value {
            if v == want {
                return true;
            }
        } else if let Some(p) = &c.header_pattern {
            if p.is_match(v) {
                return true;
            }
        } else if v == "always" {
            return true;
        } else if v == "never" {
            return false;
        }
    }
    if let Some(name) = &c.rule.cookie {
        match cookie(headers, name) {
            Some("always") => return true,
            Some("never") => return false,
            _ => {}
        }
    }
    c.rule.weight > 0 && fastrand::u32(0..c.rule.weight_total) < c.rule.weight
}

fn cors_headers(c: &super::annotations::Cors, req: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    let origin = req.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let allowed = if c.allow_origin.iter().any(|o| o == "*") {
        Some("*".to_string())
    } else {
        origin
            .filter(|o| {
                c.allow_origin.iter().any(|a| {
                    a == o
                        || a.split_once("://*.").is_some_and(|(scheme, parent)| {
                            o.strip_prefix(&format!("{scheme}://"))
                                .and_then(|rest| rest.split_once('.'))
                                .is_some_and(|(_, p)| p == parent)
                        })
                })
            })
            .map(str::to_string)
    };
    let Some(allowed) = allowed else {
        return h;
    };
    let mut put = |k: HeaderName, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    put(header::ACCESS_CONTROL_ALLOW_ORIGIN, &allowed);
    if c.allow_credentials {
        put(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    put(header::ACCESS_CONTROL_ALLOW_METHODS, &c.allow_methods);
    put(header::ACCESS_CONTROL_ALLOW_HEADERS, &c.allow_headers);
    if let Some(e) = &c.expose_headers {
        put(header::ACCESS_CONTROL_EXPOSE_HEADERS, e);
    }
    put(header::ACCESS_CONTROL_MAX_AGE, &c.max_age.to_string());
    h
}

/// nginx's `rewrite <regex> <target> break`: the whole path replaced, `$1`…`$9` from the
/// captures (a digit after `$` ends the group number, as nginx reads it).
pub fn rewrite(re: &regex::Regex, target: &str, path: &str) -> Option<String> {
    let caps = re.captures(path)?;
    let mut out = String::new();
    let mut chars = target.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$'
            && let Some(d) = chars.peek().and_then(|d| d.to_digit(10))
        {
            chars.next();
            if let Some(m) = caps.get(d as usize) {
                out.push_str(m.as_str());
            }
            continue;
        }
        out.push(c);
    }
    Some(out)
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if wants {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

async fn forward(
    mut req: Request<Incoming>,
    shared: &Shared,
    origin: &Origin,
    route: Option<&Route>,
    options: &Options,
    addr: SocketAddr,
) -> Response<Body> {
    let original_uri = path_and_query(req.uri());
    let mut path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let mut rewritten = false;
    if let (Some(r), Some(target)) = (route, options.rewrite_target.as_deref())
        && let Some(re) = &r.rewrite
        && let Some(new) = rewrite(re, target, &path)
    {
        rewritten = new != path;
        path = if new.starts_with('/') {
            new
        } else {
            format!("/{new}")
        };
    }
    let pq = match &query {
        Some(q) if !path.contains('?') => format!("{path}?{q}"),
        _ => path,
    };
    let scheme_up = match options.backend_protocol {
        BackendProtocol::Https | BackendProtocol::Grpcs => "https",
        BackendProtocol::Http | BackendProtocol::Grpc => "http",
    };
    let uri: Uri = match format!("{scheme_up}://{addr}{pq}").parse() {
        Ok(u) => u,
        Err(_) => return page(400, "kcluster ingress"),
    };
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    if let Some(u) = &upgrade {
        headers.insert(header::UPGRADE, u.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let host = options.upstream_vhost.as_deref().unwrap_or(&origin.host);
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, v);
    }
    // As nginx's proxy_set_header: the client's own value never passes through.
    headers.remove("x-original-forwarded-for");
    let request_id = headers.get("x-request-id").cloned().unwrap_or_else(|| {
        HeaderValue::from_str(&uuid::Uuid::new_v4().simple().to_string())
            .unwrap_or(HeaderValue::from_static("0"))
    });
    let mut set = |k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            headers.insert(k, v);
        }
    };
    set("x-real-ip", &origin.ip.to_string());
    set("x-forwarded-for", &origin.forwarded_for);
    set("x-forwarded-host", &origin.host);
    set("x-forwarded-port", &origin.port);
    set("x-forwarded-proto", &origin.proto);
    set("x-forwarded-scheme", &origin.proto);
    set("x-scheme", &origin.proto);
    set("x-original-uri", &original_uri);
    if let Some(x) = &origin.original_forwarded_for {
        set("x-original-forwarded-for", x);
    }
    if rewritten && let Some(p) = &options.x_forwarded_prefix {
        set("x-forwarded-prefix", p);
    }
    headers.insert("x-request-id", request_id);

    let body: Body = match options.body_limit {
        Some(limit) => Limited::new(body, limit as usize).boxed(),
        None => body.map_err(|e| Box::new(e) as BoxError).boxed(),
    };
    let h2 = matches!(
        options.backend_protocol,
        BackendProtocol::Grpc | BackendProtocol::Grpcs
    );
    let (body, handed) = send_timeout::Watched::new(body);
    let mut out = Request::new(body.boxed());
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    *out.headers_mut() = headers;
    *out.version_mut() = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let sent = match options.backend_protocol {
        BackendProtocol::Http => shared.client.request(out),
        BackendProtocol::Grpc => shared.h2c.request(out),
        BackendProtocol::Https => shared.https.request(out),
        BackendProtocol::Grpcs => shared.grpcs.request(out),
    };
    let timeout = options.connect_timeout + options.read_timeout;
    let answered = tokio::select! {
        answered = tokio::time::timeout(timeout, sent) => answered,
        _ = handed.stalled(options.send_timeout) => {
            debug!(%addr, "the upstream stopped reading the request (proxy-send-timeout)");
            return page(504, "kcluster ingress");
        }
    };
    let mut resp = match answered {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            debug!(%addr, error = %e, "upstream request failed");
            return page(502, "kcluster ingress");
        }
        Err(_) => return page(504, "kcluster ingress"),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((c, u)) => {
                    let mut c = TokioIo::new(c);
                    let mut u = TokioIo::new(u);
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
                Err(e) => debug!(error = %e, "upgrade failed"),
            }
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, full(Bytes::new()));
    }
    let (mut parts, body) = resp.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_expands_captures_like_nginx() {
        let re = regex::Regex::new("(?i)/api/reviews/(.*)").expect("regex");
        assert_eq!(
            rewrite(&re, "/reviews/$1", "/API/Reviews/0").as_deref(),
            Some("/reviews/0")
        );
        let re = regex::Regex::new("(?i)/something(/|$)(.*)").expect("regex");
        assert_eq!(
            rewrite(&re, "/$2", "/something/new").as_deref(),
            Some("/new")
        );
        assert_eq!(rewrite(&re, "/$2a", "/something/x").as_deref(), Some("/xa"));
        assert_eq!(rewrite(&re, "/", "/other"), None);
    }
}
