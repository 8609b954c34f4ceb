//! Calls one webhook: an AdmissionReview POSTed over HTTPS (HTTP/1.1) to its URL or Service,
//! trusting its caBundle, with errors in the words Go's HTTP client gives kube-apiserver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use serde_json::Value;
use tokio::net::TcpStream;
use tracing::debug;

use crate::apiserver::kinds::json as j;
use crate::apiserver::resources;
use crate::store::Store;

/// Answers larger than this are refused rather than read into memory.
const MAX_ANSWER_BYTES: usize = 3 * 1024 * 1024;

/// The TLS settings of a webhook: its caBundle as the only roots, or the public roots
/// without one (kube-apiserver would use the system's).
pub fn tls_config(ca_bundle: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_bundle.filter(|b| !b.is_empty()) {
        Some(b64) => {
            use base64::Engine;
            let pem = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("caBundle is not base64: {e}"))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("caBundle is not PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("caBundle holds an unusable certificate: {e}"))?;
            }
            if roots.is_empty() {
                return Err("caBundle holds no certificate".into());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::apiserver::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Where a webhook is: the URL to report, the address to dial and the name to verify.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// As Go prints it in `Post "…"` errors, with the `?timeout=` kube-apiserver adds.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub server_name: String,
    pub path_and_query: String,
}

/// `clientConfig` plus the timeout, resolved to an endpoint. A Service is dialled at its
/// ClusterIP (as kube-apiserver's default service resolver does) and verified as
/// `<name>.<namespace>.svc`.
pub fn endpoint(
    store: &Store,
    client_config: &Value,
    timeout_seconds: u64,
) -> Result<Endpoint, String> {
    let timeout = format!("timeout={timeout_seconds}s");
    if let Some(url) = client_config.get("url").and_then(Value::as_str) {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad url {url:?}: {e}"))?;
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(443);
        let path = uri.path();
        let sep = if uri.query().is_some() { "&" } else { "?" };
        let full = format!("{url}{sep}{timeout}");
        return Ok(Endpoint {
            url: full,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            server_name: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            path_and_query: format!("{path}?{timeout}"),
        });
    }
    let svc = j::at(client_config, "service");
    let name = j::str_or(svc, "name");
    let namespace = j::str_or(svc, "namespace");
    let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443) as u16;
    let path = svc.get("path").and_then(Value::as_str).unwrap_or("/");
    let server_name = format!("{name}.{namespace}.svc");
    let url = format!("https://{server_name}:{port}{path}?{timeout}");
    let post = |why: String| format!("Post {url:?}: {why}");
    let def = resources::find("", "v1", "services")
        .ok_or_else(|| post("services are not served".into()))?;
    let kv = store
        .get(&def.key(Some(namespace), name))
        .map_err(|e| post(e.to_string()))?
        .ok_or_else(|| post(format!("service \"{name}\" not found")))?;
    let service: Value =
        serde_json::from_slice(&kv.value).map_err(|e| post(format!("unreadable service: {e}")))?;
    let cluster_ip = service
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let host = match service.pointer("/spec/type").and_then(Value::as_str) {
        Some("ExternalName") => service
            .pointer("/spec/externalName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        _ if cluster_ip.is_empty() || cluster_ip == "None" => {
            return Err(post(format!(
                "cannot route to service with ClusterIP {cluster_ip:?}"
            )));
        }
        _ => cluster_ip.to_string(),
    };
    Ok(Endpoint {
        path_and_query: format!("{path}?{timeout}"),
        url,
        host,
        port,
        server_name,
    })
}

fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connect: connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "read: connection reset by peer".into(),
        _ => e.to_string(),
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Most connections kept open to one webhook address between calls.
const MAX_IDLE: usize = 16;

/// Open connections to a webhook, kept between calls as Go's transport keeps them: a TLS
/// handshake per admission would cost more than most webhooks take to answer.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<String, Vec<Sender>>>,
}

impl Pool {
    fn take(&self, key: &str) -> Option<Sender> {
        let mut idle = match self.idle.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let senders = idle.get_mut(key)?;
        while let Some(s) = senders.pop() {
            if !s.is_closed() && s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, key: String, sender: Sender) {
        let mut idle = match self.idle.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let senders = idle.entry(key).or_default();
        if senders.len() < MAX_IDLE {
            senders.push(sender);
        }
    }
}

async fn dial(tls: Arc<rustls::ClientConfig>, ep: &Endpoint) -> Result<Sender, String> {
    let ip = crate::node::client::resolve(&ep.host)
        .await
        .map_err(|e| format!("dial tcp: lookup {}: {e:#}", ep.host))?;
    let addr = std::net::SocketAddr::new(ip, ep.port);
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {}", io_text(&e)))?;
    let _ = tcp.set_nodelay(true);
    let server_name = ServerName::try_from(ep.server_name.clone())
        .map_err(|e| format!("bad server name {:?}: {e}", ep.server_name))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "webhook connection ended");
        }
    });
    Ok(sender)
}

/// POSTs `body` and returns the answer of a 2xx. The caller bounds the whole call with the
/// webhook's timeout.
pub async fn post(
    pool: &Pool,
    tls: Arc<rustls::ClientConfig>,
    ep: &Endpoint,
    body: Vec<u8>,
) -> Result<Bytes, String> {
    let post_err = |why: String| format!("Post {:?}: {why}", ep.url);
    let key = format!("{}:{}/{}", ep.host, ep.port, ep.server_name);
    let authority = if ep.port == 443 {
        ep.server_name.clone()
    } else {
        format!("{}:{}", ep.server_name, ep.port)
    };
    let body = Bytes::from(body);
    let request = || {
        Request::post(ep.path_and_query.as_str())
            .header(header::HOST, authority.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, */*")
            .body(Full::new(body.clone()))
            .map_err(|e| post_err(e.to_string()))
    };
    let send_err = |e: hyper::Error| {
        post_err(if e.is_incomplete_message() {
            "EOF".into()
        } else {
            e.to_string()
        })
    };
    // A kept connection the webhook closed meanwhile fails before anything is sent; the call
    // then goes over a new one.
    let pooled = match pool.take(&key) {
        Some(mut sender) => match sender.send_request(request()?).await {
            Ok(response) => Some((sender, response)),
            Err(e) if e.is_canceled() || e.is_closed() => None,
            Err(e) => return Err(send_err(e)),
        },
        None => None,
    };
    let (sender, response) = match pooled {
        Some(pair) => pair,
        None => {
            let mut sender = dial(tls, ep).await.map_err(post_err)?;
            let response = sender.send_request(request()?).await.map_err(send_err)?;
            (sender, response)
        }
    };
    let code = response.status();
    let answer = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map_err(|e| post_err(format!("reading the answer: {e}")))?
        .to_bytes();
    pool.put(key, sender);
    if code.is_success() {
        return Ok(answer);
    }
    // client-go turns a Status body into its message, anything else into a generic text.
    if let Ok(status) = serde_json::from_slice::<Value>(&answer)
        && status.get("kind").and_then(Value::as_str) == Some("Status")
        && let Some(message) = status.get("message").and_then(Value::as_str)
    {
        return Err(message.to_string());
    }
    if code.is_server_error() || code == StatusCode::TOO_MANY_REQUESTS {
        let text = String::from_utf8_lossy(&answer[..answer.len().min(1024)]).into_owned();
        return Err(format!(
            "an error on the server ({text:?}) has prevented the request from succeeding"
        ));
    }
    Err(format!(
        "the server responded with the status code {} but did not return more information",
        code.as_u16()
    ))
}
