//! A client of etcd's v3 API through its gateway: JSON over HTTP(S) on the client port.
//!
//! Why not gRPC through a crate: the etcd client crates generate their code from etcd's .proto
//! files at build time, which needs `protoc` on every machine that builds kcluster; the gateway
//! is part of every etcd since 3.4 and speaks the same API over the HTTP stack we already have.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::super::StoreError;
use super::wire::WatchMessage;

/// Unary calls that take longer than this count as a failed endpoint.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach etcd: `--store etcd=https://a:2379,https://b:2379` plus the TLS files.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    /// PEM texts (not paths): nodes get them in their settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
}

impl EtcdConfig {
    /// `--store VALUE`: `embedded` (None) or `etcd=URL[,URL…]`, with the TLS files read.
    pub fn from_flags(
        store: &str,
        ca: Option<&std::path::Path>,
        cert: Option<&std::path::Path>,
        key: Option<&std::path::Path>,
    ) -> Result<Option<EtcdConfig>, String> {
        let read = |path: Option<&std::path::Path>, flag: &str| -> Result<Option<String>, String> {
            path.map(|p| {
                std::fs::read_to_string(p).map_err(|e| format!("{flag} {}: {e}", p.display()))
            })
            .transpose()
        };
        let endpoints = match store.trim() {
            "embedded" | "" => {
                if ca.or(cert).or(key).is_some() {
                    return Err("--etcd-ca, --etcd-cert and --etcd-key need --store etcd=…".into());
                }
                return Ok(None);
            }
            other => match other.strip_prefix("etcd=") {
                Some(list) => EtcdConfig::parse_endpoints(list)?,
                None => {
                    return Err(format!(
                        "--store {other:?}: expected `embedded` or `etcd=https://host:2379[,https://host2:2379…]`"
                    ));
                }
            },
        };
        Ok(Some(EtcdConfig {
            endpoints,
            ca_pem: read(ca, "--etcd-ca")?,
            cert_pem: read(cert, "--etcd-cert")?,
            key_pem: read(key, "--etcd-key")?,
        }))
    }

    /// Parses the endpoint list of `etcd=URL[,URL…]`.
    pub fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
        let mut endpoints = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let uri: http::Uri = raw
                .parse()
                .map_err(|e| format!("etcd endpoint {raw:?} is not a URL: {e}"))?;
            match (uri.scheme_str(), uri.authority()) {
                (Some("http" | "https"), Some(_)) if matches!(uri.path(), "" | "/") => {}
                _ => {
                    return Err(format!(
                        "etcd endpoint {raw:?} must look like https://host:2379 (http or https, a host, no path)"
                    ));
                }
            }
            endpoints.push(raw.trim_end_matches('/').to_owned());
        }
        if endpoints.is_empty() {
            return Err("etcd=… names no endpoint; give e.g. etcd=https://10.0.0.5:2379".into());
        }
        Ok(endpoints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_flag_values() {
        assert_eq!(
            EtcdConfig::from_flags("embedded", None, None, None),
            Ok(None)
        );
        let etcd = EtcdConfig::from_flags("etcd=https://a:2379, http://b:2379/", None, None, None)
            .expect("valid")
            .expect("etcd");
        assert_eq!(etcd.endpoints, ["https://a:2379", "http://b:2379"]);
        for bad in [
            "etcd=",
            "etcd=a:2379",
            "etcd=ftp://a",
            "etcd=https://a:2379/x",
            "redb",
        ] {
            assert!(
                EtcdConfig::from_flags(bad, None, None, None).is_err(),
                "{bad}"
            );
        }
        let ca = std::path::Path::new("/nonexistent/ca.crt");
        assert!(EtcdConfig::from_flags("embedded", Some(ca), None, None).is_err());
        let missing = EtcdConfig::from_flags("etcd=https://a:2379", Some(ca), None, None);
        assert!(missing.is_err_and(|e| e.contains("/nonexistent/ca.crt")));
    }
}

#[derive(Clone)]
pub(super) struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// The endpoint that answered last; a failure moves on to the next.
    current: AtomicUsize,
    http: HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

fn tls_config(config: &EtcdConfig) -> Result<rustls::ClientConfig, StoreError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| StoreError::Backend(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_pem {
        Some(ca) => {
            for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                let cert = cert.map_err(|e| bad("the etcd CA is not PEM", &e))?;
                roots
                    .add(cert)
                    .map_err(|e| bad("the etcd CA is not a certificate", &e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad("TLS setup", &e))?
    .with_root_certificates(roots);
    let tls = match (&config.cert_pem, &config.key_pem) {
        (Some(cert), Some(key)) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad("the etcd client certificate is not PEM", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
                .map_err(|e| bad("the etcd client key is not PEM", &e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad("the etcd client certificate does not match its key", &e))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(StoreError::Backend(
                "an etcd client certificate needs its key and the key its certificate (--etcd-cert with --etcd-key)".into(),
            ));
        }
    };
    Ok(tls)
}

impl Client {
    pub(super) fn new(config: &EtcdConfig) -> Result<Client, StoreError> {
        let mut connector = HttpConnector::new();
        connector.enforce_http(false);
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.set_keepalive(Some(Duration::from_secs(15)));
        connector.set_nodelay(true);
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(config)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints: config.endpoints.clone(),
                current: AtomicUsize::new(0),
                http,
            }),
        })
    }

    /// POSTs `body` to `path` on one endpoint; a failed endpoint is skipped for the next one.
    async fn send(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<hyper::Response<Incoming>, StoreError> {
        let payload =
            Bytes::from(serde_json::to_vec(body).map_err(|e| StoreError::Backend(e.to_string()))?);
        let count = self.inner.endpoints.len();
        let first = self.inner.current.load(Ordering::Relaxed);
        let mut last_error = String::new();
        for step in 0..count {
            let index = (first + step) % count;
            let endpoint = &self.inner.endpoints[index];
            let request = hyper::Request::post(format!("{endpoint}{path}"))
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(payload.clone()))
                .map_err(|e| StoreError::Backend(format!("etcd request to {endpoint}: {e}")))?;
            match tokio::time::timeout(CALL_TIMEOUT, self.inner.http.request(request)).await {
                Ok(Ok(response)) => {
                    self.inner.current.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Ok(Err(e)) => last_error = format!("{endpoint}: {e}"),
                Err(_) => last_error = format!("{endpoint}: no answer within {CALL_TIMEOUT:?}"),
            }
            tracing::warn!(error = %last_error, "etcd endpoint failed; trying the next one");
        }
        Err(StoreError::Backend(format!(
            "etcd is unreachable (tried {count} endpoint(s)); last error: {last_error}"
        )))
    }

    /// A unary call: the JSON answer, or the gateway's error message.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, StoreError> {
        let response = self.send(path, body).await?;
        let status = response.status();
        let read = tokio::time::timeout(CALL_TIMEOUT, response.into_body().collect()).await;
        let bytes = match read {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => return Err(StoreError::Backend(format!("reading etcd's answer: {e}"))),
            Err(_) => return Err(StoreError::Backend("etcd's answer stalled".into())),
        };
        if !status.is_success() {
            return Err(StoreError::Backend(format!(
                "etcd {path}: {status}: {}",
                gateway_message(&bytes)
            )));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::Backend(format!("etcd {path} answered what is not its JSON: {e}"))
        })
    }

    /// Starts a watch; its messages come one JSON object per line.
    pub(super) async fn watch(&self, body: &Value) -> Result<WatchStream, StoreError> {
        let response = self.send("/v3/watch", body).await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(StoreError::Backend(format!(
                "etcd watch: {status}: {}",
                gateway_message(&bytes)
            )));
        }
        Ok(WatchStream {
            body: response.into_body(),
            buffer: BytesMut::new(),
        })
    }
}

fn gateway_message(bytes: &[u8]) -> String {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned())
}

pub(super) struct WatchStream {
    body: Incoming,
    buffer: BytesMut,
}

impl WatchStream {
    /// The next message; `None` when etcd closed the stream.
    pub(super) async fn next(&mut self) -> Option<Result<WatchMessage, StoreError>> {
        loop {
            if let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
                let line = self.buffer.split_to(end + 1);
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                return Some(serde_json::from_slice(line).map_err(|e| {
                    StoreError::Backend(format!("etcd watch sent what is not its JSON: {e}"))
                }));
            }
            match self.body.frame().await {
                None => {
                    // A last message without its newline.
                    let rest = self.buffer.split();
                    let rest = rest.trim_ascii();
                    if rest.is_empty() {
                        return None;
                    }
                    return Some(serde_json::from_slice(rest).map_err(|e| {
                        StoreError::Backend(format!("etcd watch sent what is not its JSON: {e}"))
                    }));
                }
                Some(Err(e)) => {
                    return Some(Err(StoreError::Backend(format!("etcd watch broke: {e}"))));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}
