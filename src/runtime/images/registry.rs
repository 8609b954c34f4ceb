//! A client for the registry HTTP API (Docker Registry v2 / OCI distribution): the few
//! requests a pull makes, authentication (anonymous, Basic, and the Bearer token flow that a
//! `WWW-Authenticate` challenge describes), redirects (blob stores hand out other hosts), and
//! the choice between HTTPS and plain HTTP.
//!
//! HTTPS is verified against the Mozilla roots compiled into the binary (nodes are FROM scratch:
//! there is no system store). Plain HTTP is used only for registries on a loopback or private
//! address (`localhost`, 127/8, 10/8, 172.16/12, 192.168/16, link-local, IPv6 ULA), and only
//! after HTTPS failed to connect — what Docker does for 127/8 and `insecure-registries`, with
//! the private ranges added because a local registry for a kcluster cluster lives on the
//! Docker host or network, never on the internet.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tracing::debug;

/// How long each step of reaching a registry (name lookup, TCP connect, TLS handshake) may
/// take before the registry counts as unreachable, unless the caller asks for less.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a response's headers may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 5;
const USER_AGENT: &str = concat!("kcluster/", env!("CARGO_PKG_VERSION"));

/// What went wrong, sorted the way a user acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The registry has no such repository, tag or digest.
    NotFound,
    /// The registry refused the credentials (or wants some).
    Unauthorized,
    /// No connection could be made: the name does not resolve, the connection is refused or
    /// times out, or the TLS handshake fails or times out. Nothing was asked of the registry.
    Unreachable,
    /// Anything else: a damaged blob, an unsupported image, a registry error, a connection
    /// that broke off after it was made.
    Failed,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct PullError {
    pub kind: ErrorKind,
    pub message: String,
}

impl PullError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> PullError {
        PullError {
            kind,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> PullError {
        PullError::new(ErrorKind::Failed, message)
    }
}

impl From<anyhow::Error> for PullError {
    fn from(e: anyhow::Error) -> PullError {
        PullError::failed(format!("{e:#}"))
    }
}

/// A user name and password (or token) for one registry, from an imagePullSecret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.username)
    }
}

impl Credentials {
    fn basic(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The host the API of a registry named in a reference lives on.
pub fn endpoint_host(registry: &str) -> &str {
    if registry == super::reference::DEFAULT_REGISTRY {
        "registry-1.docker.io"
    } else {
        registry
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }
}

/// One registry, for one repository's pull: remembers the scheme that worked and the token.
pub struct Registry {
    /// The registry as the reference names it (`docker.io`, `10.0.0.1:5000`).
    name: String,
    /// `host[:port]` requests go to.
    authority: String,
    scheme: Option<Scheme>,
    repository: String,
    credentials: Option<Credentials>,
    /// The Authorization header that worked last.
    authorization: Option<String>,
    /// The limit on each step of making a connection (see [`CONNECT_TIMEOUT`]).
    connect_timeout: Duration,
    /// Mirrors to try before the registry itself (`registries.mirrors`), in order.
    mirrors: Vec<(Option<Scheme>, String)>,
}

static MIRRORS: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();

/// Sets the node's mirror table once at start: registry name as references spell it
/// (`localhost:5001`, `docker.io`) → endpoints (`http://kcluster-registry:5000`). What
/// containerd's `hosts.toml` does; an endpoint with `http://` is spoken to in plain HTTP
/// whatever its address, as the cluster's owner asked for it.
pub fn set_mirrors(mirrors: impl IntoIterator<Item = (String, Vec<String>)>) {
    let _ = MIRRORS.set(mirrors.into_iter().collect());
}

fn mirrors_for(registry: &str) -> Vec<(Option<Scheme>, String)> {
    let Some(table) = MIRRORS.get() else {
        return Vec::new();
    };
    table
        .get(registry)
        .map(|endpoints| endpoints.iter().map(|e| parse_endpoint(e)).collect())
        .unwrap_or_default()
}

/// `http://host:port` → plain HTTP, `https://…` → HTTPS, a bare `host:port` → probed as for
/// any registry.
pub fn parse_endpoint(endpoint: &str) -> (Option<Scheme>, String) {
    let trimmed = endpoint.trim_end_matches('/');
    if let Some(rest) = trimmed.strip_prefix("http://") {
        (Some(Scheme::Http), rest.to_string())
    } else if let Some(rest) = trimmed.strip_prefix("https://") {
        (Some(Scheme::Https), rest.to_string())
    } else {
        (None, trimmed.to_string())
    }
}

/// A response whose status was a success.
pub struct Reply {
    pub response: Response<Incoming>,
}

impl Registry {
    pub fn new(registry: &str, repository: &str, credentials: Option<Credentials>) -> Registry {
        Registry {
            name: registry.to_string(),
            authority: endpoint_host(registry).to_string(),
            scheme: None,
            repository: repository.to_string(),
            credentials,
            authorization: None,
            connect_timeout: CONNECT_TIMEOUT,
            mirrors: mirrors_for(registry),
        }
    }

    /// A shorter limit on reaching the registry, for callers that have something better to do
    /// than wait (a node that holds the image already).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Registry {
        self.connect_timeout = timeout;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// GETs `/v2/<repository>/<path>`, authenticating when challenged and following redirects.
    pub async fn get(&mut self, path: &str, accept: &[&str]) -> Result<Reply, PullError> {
        let scheme = self.scheme().await?;
        let uri = format!(
            "{}://{}/v2/{}/{path}",
            scheme.as_str(),
            self.authority,
            self.repository
        );
        let mut challenged = false;
        loop {
            let response = self
                .follow(&uri, accept, self.authorization.clone())
                .await?;
            if response.status() == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if let Some(challenge) = challenge {
                    self.authorization = Some(self.authenticate(&challenge).await?);
                    continue;
                }
            }
            return self.check(response).await;
        }
    }

    /// Turns an error status into a PullError that says what failed.
    async fn check(&self, response: Response<Incoming>) -> Result<Reply, PullError> {
        let status = response.status();
        if status.is_success() {
            return Ok(Reply { response });
        }
        let detail = error_detail(response).await;
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        Err(match status {
            StatusCode::NOT_FOUND => PullError::new(
                ErrorKind::NotFound,
                format!("not found: the registry {} answered 404{detail}", self.name),
            ),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => PullError::new(
                ErrorKind::Unauthorized,
                format!(
                    "unauthorized: the registry {} answered {status}{detail}: {}",
                    self.name,
                    if self.credentials.is_some() {
                        "check the credentials in the pod's imagePullSecrets"
                    } else {
                        "the repository needs credentials (add an imagePullSecret) or does not exist"
                    }
                ),
            ),
            _ => PullError::failed(format!(
                "the registry {} answered {status}{detail}",
                self.name
            )),
        })
    }

    /// Decides HTTPS or HTTP with a ping of `/v2/`, once per registry while the process runs
    /// (a pull with imagePullPolicy Always then costs no failed HTTPS attempt).
    async fn scheme(&mut self) -> Result<Scheme, PullError> {
        if self.scheme.is_some() || self.mirrors.is_empty() {
            return self.upstream_scheme().await;
        }
        let mut failures = Vec::new();
        for (scheme, authority) in std::mem::take(&mut self.mirrors) {
            let schemes = match scheme {
                Some(s) => vec![s],
                None => vec![Scheme::Https, Scheme::Http],
            };
            for s in schemes {
                let url = format!("{}://{authority}/v2/", s.as_str());
                match send(&url, &[], None, self.connect_timeout, true).await {
                    Ok(_) => {
                        debug!(registry = %self.name, mirror = %url, "pulling through a mirror");
                        self.authority = authority;
                        self.scheme = Some(s);
                        return Ok(s);
                    }
                    Err(e) => failures.push(format!("mirror {url}: {}", e.message)),
                }
            }
        }
        // As containerd: when no mirror answers, the registry itself.
        self.upstream_scheme().await.map_err(|e| {
            PullError::new(
                e.kind,
                format!(
                    "{} (and every mirror failed: {})",
                    e.message,
                    failures.join("; ")
                ),
            )
        })
    }

    async fn upstream_scheme(&mut self) -> Result<Scheme, PullError> {
        static KNOWN: OnceLock<Mutex<HashMap<String, Scheme>>> = OnceLock::new();
        let known = KNOWN.get_or_init(Default::default);
        if self.scheme.is_none() {
            self.scheme = known
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&self.authority)
                .copied();
        }
        if let Some(s) = self.scheme {
            return Ok(s);
        }
        let scheme = self.probe_scheme().await?;
        known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.authority.clone(), scheme);
        Ok(scheme)
    }

    async fn probe_scheme(&mut self) -> Result<Scheme, PullError> {
        let https = format!("https://{}/v2/", self.authority);
        let err = match send(&https, &[], None, self.connect_timeout, true).await {
            Ok(_) => {
                self.scheme = Some(Scheme::Https);
                return Ok(Scheme::Https);
            }
            Err(e) => e,
        };
        if !may_use_plain_http(&self.authority, self.connect_timeout).await {
            return Err(err);
        }
        debug!(registry = %self.name, error = %err, "HTTPS failed; trying plain HTTP");
        let http = format!("http://{}/v2/", self.authority);
        match send(&http, &[], None, self.connect_timeout, true).await {
            Ok(_) => {
                self.scheme = Some(Scheme::Http);
                Ok(Scheme::Http)
            }
            // Plain HTTP had the last word: its kind is what the registry's state is.
            Err(e) => Err(PullError::new(
                e.kind,
                format!("{} (and over plain HTTP: {})", err.message, e.message),
            )),
        }
    }

    /// Answers a `WWW-Authenticate` challenge; returns the Authorization header to use.
    async fn authenticate(&self, challenge: &str) -> Result<String, PullError> {
        let (scheme, params) = parse_challenge(challenge);
        if scheme.eq_ignore_ascii_case("basic") {
            return match &self.credentials {
                Some(c) => Ok(c.basic()),
                None => Err(PullError::new(
                    ErrorKind::Unauthorized,
                    format!(
                        "unauthorized: the registry {} needs credentials: add an imagePullSecret for it to the pod",
                        self.name
                    ),
                )),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(PullError::new(
                ErrorKind::Unauthorized,
                format!(
                    "the registry {} asks for {scheme} authentication, which is not supported (Basic and Bearer are)",
                    self.name
                ),
            ));
        }
        let realm = params.get("realm").ok_or_else(|| {
            PullError::failed(format!(
                "the registry {} sent a Bearer challenge without a realm",
                self.name
            ))
        })?;
        let scope = params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
        let query = {
            let mut query = form_urlencoded::Serializer::new(String::new());
            if let Some(service) = params.get("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &scope);
            query.finish()
        };
        let separator = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{separator}{query}");
        let basic = self.credentials.as_ref().map(Credentials::basic);
        let response = follow_redirects(
            &url,
            &[],
            basic.clone(),
            basic.is_some(),
            self.connect_timeout,
        )
        .await?;
        let status = response.status();
        if !status.is_success() {
            let detail = error_detail(response).await;
            let kind = if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                ErrorKind::Unauthorized
            } else {
                ErrorKind::Failed
            };
            return Err(PullError::new(
                kind,
                format!(
                    "unauthorized: the token service {realm} answered {status}{}",
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(" ({detail})")
                    }
                ),
            ));
        }
        #[derive(Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let body = read_limited(response, 1 << 20).await?;
        let token: Token = serde_json::from_slice(&body).map_err(|e| {
            PullError::failed(format!("the token service {realm} sent no token: {e}"))
        })?;
        let token = token
            .token
            .or(token.access_token)
            .ok_or_else(|| PullError::failed(format!("the token service {realm} sent no token")))?;
        Ok(format!("Bearer {token}"))
    }

    async fn follow(
        &self,
        uri: &str,
        accept: &[&str],
        authorization: Option<String>,
    ) -> Result<Response<Incoming>, PullError> {
        follow_redirects(uri, accept, authorization, false, self.connect_timeout).await
    }
}

/// GETs a URL, following redirects; the Authorization header goes only to the first host
/// (blob stores behind a redirect use signed URLs) unless `keep_auth`.
async fn follow_redirects(
    url: &str,
    accept: &[&str],
    authorization: Option<String>,
    keep_auth: bool,
    connect_timeout: Duration,
) -> Result<Response<Incoming>, PullError> {
    let mut url = url.to_string();
    let first_authority = authority_of(&url);
    for _ in 0..=MAX_REDIRECTS {
        let auth = if keep_auth || authority_of(&url) == first_authority {
            authorization.as_deref()
        } else {
            None
        };
        let response = send(&url, accept, auth, connect_timeout, false).await?;
        if response.status().is_redirection()
            && let Some(location) = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
        {
            url = resolve_location(&url, location);
            continue;
        }
        return Ok(response);
    }
    Err(PullError::failed(format!(
        "too many redirects fetching {url}"
    )))
}

fn authority_of(url: &str) -> Option<String> {
    url.parse::<Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.to_string()))
}

/// A Location header made absolute against the URL it answered.
fn resolve_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let Ok(uri) = base.parse::<Uri>() else {
        return location.to_string();
    };
    let scheme = uri.scheme_str().unwrap_or("https");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        let path = uri.path();
        let dir = &path[..path.rfind('/').map(|i| i + 1).unwrap_or(0)];
        format!("{scheme}://{authority}{dir}{location}")
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth());
            match config {
                Ok(c) => Arc::new(c),
                // The ring provider supports the default versions; this cannot happen.
                Err(e) => panic!("the TLS client configuration is invalid: {e}"),
            }
        })
        .clone()
}

/// The addresses of a registry host. Names are resolved in-process (a static binary in a
/// FROM-scratch node has no C resolver to ask), within `timeout`.
async fn addresses(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host == "localhost" {
        return Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))]);
    }
    let resolver = hickory_resolver::Resolver::builder_tokio()
        .and_then(|b| b.build())
        .map_err(|e| format!("cannot resolve {host}: no usable /etc/resolv.conf ({e})"))?;
    lookup(&resolver, host, port, timeout).await
}

async fn lookup(
    resolver: &hickory_resolver::TokioResolver,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, String> {
    let answer = tokio::time::timeout(timeout, resolver.lookup_ip(host))
        .await
        .map_err(|_| format!("the name {host} did not resolve within {timeout:?}"))?
        .map_err(|e| format!("the name {host} does not resolve: {e}"))?;
    let mut ips: Vec<IpAddr> = answer.iter().collect();
    // IPv4 first: node containers are on IPv4 Docker networks.
    ips.sort_by_key(|ip| !ip.is_ipv4());
    if ips.is_empty() {
        return Err(format!("the name {host} has no address"));
    }
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// A TCP connection to the first of `addrs` that accepts one, all within `timeout` (a name
/// with many addresses behind a black hole must not cost a wait per address).
async fn connect(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::from("no address to connect to");
    for addr in addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = format!("{addr} refused the connection");
            }
            Ok(Err(e)) => last = format!("cannot connect to {addr}: {e}"),
            Err(_) => {
                last = format!("no connection to {addr} within {timeout:?}");
                break;
            }
        }
    }
    Err(last)
}

/// One request on a fresh connection. Failing to make the connection (name, TCP, TLS) is
/// [`ErrorKind::Unreachable`]; a connection that breaks afterwards is not. A `ping` (the
/// `/v2/` request that finds the scheme) is part of reaching the registry: no answer within
/// `connect_timeout` is unreachable too, where other requests wait [`RESPONSE_TIMEOUT`].
async fn send(
    url: &str,
    accept: &[&str],
    authorization: Option<&str>,
    connect_timeout: Duration,
    ping: bool,
) -> Result<Response<Incoming>, PullError> {
    let uri: Uri = url
        .parse()
        .map_err(|e| PullError::failed(format!("{url} is not a valid URL: {e}")))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            return Err(PullError::failed(format!(
                "{url} is neither an http nor an https URL"
            )));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| PullError::failed(format!("{url} has no host")))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let unreachable = |what: String| {
        PullError::new(
            ErrorKind::Unreachable,
            format!("cannot reach the registry at {authority}: {what}"),
        )
    };
    let addrs = addresses(host, port, connect_timeout)
        .await
        .map_err(unreachable)?;
    let tcp = connect(&addrs, connect_timeout)
        .await
        .map_err(unreachable)?;
    let _ = tcp.set_nodelay(true);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let mut builder = Request::get(path)
        .header(header::HOST, authority.as_str())
        .header(header::USER_AGENT, USER_AGENT);
    if !accept.is_empty() {
        builder = builder.header(header::ACCEPT, accept.join(", "));
    }
    if let Some(auth) = authorization
        && let Ok(value) = HeaderValue::from_str(auth)
    {
        builder = builder.header(header::AUTHORIZATION, value);
    }
    let request = builder
        .body(Empty::<Bytes>::new())
        .map_err(|e| PullError::failed(format!("cannot build a request for {url}: {e}")))?;
    let response = if https {
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| unreachable(format!("{host} is not a valid TLS server name: {e}")))?;
        let tls = tokio::time::timeout(
            connect_timeout,
            tokio_rustls::TlsConnector::from(tls_config()).connect(name, tcp),
        )
        .await
        .map_err(|_| unreachable(format!("no TLS handshake within {connect_timeout:?}")))?
        .map_err(|e| unreachable(format!("TLS handshake failed: {e}")))?;
        request_on(
            TokioIo::new(tls),
            request,
            url,
            ping.then_some(connect_timeout),
        )
        .await?
    } else {
        request_on(
            TokioIo::new(tcp),
            request,
            url,
            ping.then_some(connect_timeout),
        )
        .await?
    };
    Ok(response)
}

async fn request_on<T>(
    io: T,
    request: Request<Empty<Bytes>>,
    url: &str,
    ping_timeout: Option<Duration>,
) -> Result<Response<Incoming>, PullError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| PullError::failed(format!("{url}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "registry connection ended");
        }
    });
    let wait = ping_timeout.unwrap_or(RESPONSE_TIMEOUT);
    let kind = if ping_timeout.is_some() {
        ErrorKind::Unreachable
    } else {
        ErrorKind::Failed
    };
    tokio::time::timeout(wait, sender.send_request(request))
        .await
        .map_err(|_| PullError::new(kind, format!("{url}: no answer within {wait:?}")))?
        .map_err(|e| PullError::failed(format!("{url}: the connection broke off: {e}")))
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub async fn read_limited(
    response: Response<Incoming>,
    limit: usize,
) -> Result<Vec<u8>, PullError> {
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| PullError::failed(format!("the registry's answer broke off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(PullError::failed(format!(
                    "the registry sent more than {limit} bytes of metadata"
                )));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

/// The registry's `{"errors":[{"code","message"}]}` body, as `CODE: message`.
async fn error_detail(response: Response<Incoming>) -> String {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(body) = read_limited(response, 64 << 10).await else {
        return String::new();
    };
    match serde_json::from_slice::<Errors>(&body) {
        Ok(e) => e
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => String::new(),
    }
}

/// `Bearer realm="…",service="…",scope="…"` → ("Bearer", {realm, service, scope}).
fn parse_challenge(text: &str) -> (String, HashMap<String, String>) {
    let text = text.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        params.insert(key, value);
    }
    (scheme.to_string(), params)
}

/// Whether a registry may be spoken to without TLS: it is on this machine or a private network.
async fn may_use_plain_http(authority: &str, timeout: Duration) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return is_local(ip);
    }
    // The same in-process resolver the connection uses.
    match addresses(host, 0, timeout).await {
        Ok(addrs) => addrs.iter().all(|a| is_local(a.ip())),
        Err(_) => false,
    }
}

fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_endpoints_name_their_scheme() {
        assert_eq!(
            parse_endpoint("http://kcluster-registry:5000/"),
            (Some(Scheme::Http), "kcluster-registry:5000".to_string())
        );
        assert_eq!(
            parse_endpoint("https://cache.example"),
            (Some(Scheme::Https), "cache.example".to_string())
        );
        assert_eq!(
            parse_endpoint("10.0.0.1:5000"),
            (None, "10.0.0.1:5000".to_string())
        );
    }

    #[test]
    fn challenges_parse() {
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull");
        let (scheme, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(scheme, "Basic");
        assert_eq!(p["realm"], "Registry Realm");
    }

    #[test]
    fn redirects_resolve() {
        assert_eq!(
            resolve_location("https://r.io/v2/a/blobs/x", "https://cdn.io/b?sig=1"),
            "https://cdn.io/b?sig=1"
        );
        assert_eq!(
            resolve_location("http://r.io:5000/v2/a/blobs/x", "/other/y"),
            "http://r.io:5000/other/y"
        );
    }

    const SHORT: Duration = Duration::from_millis(300);

    /// A `/v2/` request with the short timeouts that must fail: its error.
    async fn fails(url: &str) -> PullError {
        send(url, &[], None, SHORT, true)
            .await
            .expect_err("the request must fail")
    }

    #[tokio::test]
    async fn only_failures_to_connect_are_unreachable() {
        // Refused: nothing listens.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = fails(&format!("http://127.0.0.1:{port}/v2/")).await;
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        assert!(e.message.contains("refused the connection"), "{e}");

        // Accepted, but no TLS handshake ever comes: unreachable within the short timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((c, _)) = silent.accept().await {
                conns.push(c);
            }
        });
        let started = std::time::Instant::now();
        let e = fails(&format!("https://localhost:{port}/v2/")).await;
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        assert!(e.message.contains("no TLS handshake within"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The same silence to a plain HTTP ping.
        let e = fails(&format!("http://127.0.0.1:{port}/v2/")).await;
        assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
        assert!(e.message.contains("no answer within"), "{e}");
        held.abort();

        // Connected, then closed without an answer: the registry was reached, it failed.
        let rude = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = rude.local_addr().unwrap().port();
        let closer = tokio::spawn(async move {
            while let Ok((c, _)) = rude.accept().await {
                drop(c);
            }
        });
        let e = fails(&format!("http://127.0.0.1:{port}/v2/")).await;
        assert_eq!(e.kind, ErrorKind::Failed, "{e}");
        closer.abort();
    }

    /// A resolver asking only a name server on 127.0.0.1:`port`, over UDP.
    fn resolver_at(port: u16) -> hickory_resolver::TokioResolver {
        use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
        let mut udp = ConnectionConfig::udp();
        udp.port = port;
        let server = NameServerConfig::new(IpAddr::from([127, 0, 0, 1]), true, vec![udp]);
        hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_name_servers(vec![server]),
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        )
        .build()
        .unwrap()
    }

    /// A name server that answers every question with NXDOMAIN, or never when `silent`.
    async fn name_server(silent: bool) -> u16 {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = socket.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                if silent || n < 12 {
                    continue;
                }
                // The question ends after its name's zero label and QTYPE/QCLASS.
                let mut end = 12;
                while end < n && buf[end] != 0 {
                    end += buf[end] as usize + 1;
                }
                let end = (end + 5).min(n);
                let mut reply = Vec::from(&buf[..2]);
                reply.extend_from_slice(&[0x81, 0x83, 0, 1, 0, 0, 0, 0, 0, 0]);
                reply.extend_from_slice(&buf[12..end]);
                let _ = socket.send_to(&reply, from).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn names_that_do_not_resolve_are_told_apart() {
        let resolver = resolver_at(name_server(false).await);
        let e = lookup(&resolver, "registry.example", 443, SHORT)
            .await
            .unwrap_err();
        assert!(e.contains("does not resolve"), "{e}");
        let resolver = resolver_at(name_server(true).await);
        let e = lookup(&resolver, "registry.example", 443, SHORT)
            .await
            .unwrap_err();
        assert!(e.contains("did not resolve within"), "{e}");
        // Addresses need no resolver.
        let addrs = addresses("10.1.2.3", 5000, SHORT).await.unwrap();
        assert_eq!(addrs, vec![SocketAddr::from(([10, 1, 2, 3], 5000))]);
    }

    #[tokio::test]
    async fn plain_http_only_for_local_addresses() {
        assert!(may_use_plain_http("localhost:5000", SHORT).await);
        assert!(may_use_plain_http("127.0.0.1:5000", SHORT).await);
        assert!(may_use_plain_http("172.18.0.1:5000", SHORT).await);
        assert!(may_use_plain_http("192.168.1.2", SHORT).await);
        assert!(may_use_plain_http("[::1]:5000", SHORT).await);
        assert!(!may_use_plain_http("8.8.8.8:5000", SHORT).await);
    }
}
