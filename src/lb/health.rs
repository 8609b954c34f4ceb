//! Active health checks: `GET /readyz` over TLS, verified against the cluster CA, as a load
//! balancer in front of kube-apiservers checks them. The API server's `/readyz` fails while its
//! store cannot answer, so a server cut off from the etcd quorum leaves the rotation too.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::{Backend, CHECK_INTERVAL, Health};

/// One check that takes longer fails.
const CHECK_TIMEOUT: Duration = Duration::from_millis(1500);
/// Connecting takes at most this long; a server that does not answer TCP is gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Checks in a row that must fail, for a server that still answers, before it is out.
const FALL: u32 = 2;

/// Why a check failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The name does not resolve or the port refuses: the server is not there.
    Gone(String),
    /// It is there but not ready, or too slow.
    Bad(String),
}

pub fn tls_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("the cluster CA file is not PEM")?)
            .context("the cluster CA is not a usable certificate")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup failed")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Checks `backend` every CHECK_INTERVAL for as long as the process runs.
pub async fn watch_backend(backend: Arc<Backend>, tls: Arc<rustls::ClientConfig>) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0;
    loop {
        tick.tick().await;
        if backend.retired() {
            return;
        }
        let result = tokio::time::timeout(
            CHECK_TIMEOUT,
            check(&backend.address, &backend.host, tls.clone()),
        )
        .await
        .unwrap_or_else(|_| Err(Failure::Bad("no answer within 1.5s".into())));
        let before = *backend.healthy.borrow();
        let now = match &result {
            Ok(()) => {
                failures = 0;
                Health::Up
            }
            Err(Failure::Gone(_)) => Health::Gone,
            Err(Failure::Bad(_)) => {
                failures += 1;
                if failures >= FALL {
                    Health::Unready
                } else {
                    before
                }
            }
        };
        if now != before {
            match &result {
                Ok(()) => info!(backend = %backend.address, "API server is ready: in rotation"),
                Err(f) => {
                    warn!(backend = %backend.address, failure = ?f, state = ?now, "API server out of rotation (gone: its connections cut)")
                }
            }
            backend.healthy.send_replace(now);
        }
    }
}

/// One `GET /readyz`.
pub async fn check(
    address: &str,
    host: &str,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(), Failure> {
    let mut addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|e| Failure::Gone(format!("{address} does not resolve: {e}")))?;
    let addr = addrs
        .next()
        .ok_or_else(|| Failure::Gone(format!("{address} resolves to nothing")))?;
    // No TCP at all (refused, unreachable, or no answer within a second) means nothing can
    // come back on the connections it holds either.
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(Failure::Gone(format!("cannot connect to {addr}: {e}"))),
        Err(_) => {
            return Err(Failure::Gone(format!(
                "{addr} did not answer a connection within {CONNECT_TIMEOUT:?}"
            )));
        }
    };
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| Failure::Bad(format!("{host} is not a server name: {e}")))?;
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| Failure::Bad(format!("TLS with {address} failed: {e}")))?;
    let request = format!(
        "GET /readyz HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kcluster-lb\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| Failure::Bad(format!("cannot ask {address}: {e}")))?;
    let mut answer = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < 4096 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| Failure::Bad(format!("no answer from {address}: {e}")))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(Failure::Bad(format!(
            "{address}/readyz answered {status_line:?}"
        ))),
    }
}
