//! Liveness, readiness and startup probes (httpGet, tcpSocket, exec, grpc in `grpcprobe`) with
//! their timing fields, and the lifecycle hooks postStart / preStop (exec, httpGet, sleep).
//! Network checks dial inside the pod's network namespace (see `netns`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{
    Container, ExecAction, HTTPGetAction, LifecycleHandler, ObjectReference, Probe,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::Context;
use super::worker::WorkerEvent;
use crate::controllers::runtime::events::WARNING;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

impl ProbeKind {
    fn title(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
            ProbeKind::Startup => "Startup",
        }
    }
}

/// Where a container can be reached.
#[derive(Clone)]
pub struct Target {
    pub ctx: Arc<Context>,
    pub netns: PathBuf,
    pub pod_ip: Option<Ipv4Addr>,
    pub container: Container,
    pub container_id: String,
    pub reference: ObjectReference,
}

fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).with_context(|| format!("invalid port {p}")),
        IntOrString::String(name) => {
            if let Ok(p) = name.parse::<u16>() {
                return Ok(p);
            }
            container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .with_context(|| format!("couldn't find port {name} in the container's ports"))
        }
    }
}

fn host_ip(target: &Target, host: Option<&str>) -> Result<IpAddr> {
    match host.filter(|h| !h.is_empty()) {
        Some(h) => h
            .parse()
            .with_context(|| format!("host {h:?} must be an IP address on this node")),
        None => Ok(IpAddr::V4(target.pod_ip.unwrap_or(Ipv4Addr::LOCALHOST))),
    }
}

/// Runs an httpGet action; Ok(None) on a 2xx/3xx answer, Ok(Some(why)) on a failure.
async fn http_get(
    target: &Target,
    action: &HTTPGetAction,
    timeout: Duration,
) -> Result<Option<String>> {
    let port = resolve_port(&action.port, &target.container)?;
    let ip = host_ip(target, action.host.as_deref())?;
    let scheme = action.scheme.as_deref().unwrap_or("HTTP");
    let path = action
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let url = format!(
        "{}://{}{path}",
        scheme.to_ascii_lowercase(),
        SocketAddr::new(ip, port)
    );
    let tls = scheme.eq_ignore_ascii_case("HTTPS");
    let work = async {
        let tcp = super::netns::connect(&target.netns, SocketAddr::new(ip, port), timeout)
            .await
            .map_err(|e| anyhow::anyhow!("Get {url:?}: {}", dial_error(&e, ip, port)))?;
        // HTTPS probes do not verify the certificate, as kubelet's do not.
        let mut stream: Box<dyn Stream> = if tls {
            let connector = tokio_rustls::TlsConnector::from(insecure_tls());
            let name = rustls::pki_types::ServerName::IpAddress(ip.into());
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("Get {url:?}: TLS handshake failed"))?,
            )
        } else {
            Box::new(tcp)
        };
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n",
            SocketAddr::new(ip, port)
        );
        for h in action.http_headers.iter().flatten() {
            request.push_str(&format!("{}: {}\r\n", h.name, h.value));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("Get {url:?}: malformed HTTP response"))?;
        Ok::<_, anyhow::Error>(if (200..400).contains(&code) {
            None
        } else {
            Some(format!("HTTP probe failed with statuscode: {code}"))
        })
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Ok(Some(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ))),
    }
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A TLS client that accepts any server certificate (kubelet's probes skip verification).
fn insecure_tls() -> Arc<rustls::ClientConfig> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    #[derive(Debug)]
    struct AcceptAny(Vec<rustls::SignatureScheme>);
    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.clone()
        }
    }
    let provider = rustls::crypto::ring::default_provider();
    let schemes = provider
        .signature_verification_algorithms
        .supported_schemes();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(schemes)))
                .with_no_client_auth()
        });
    match config {
        Ok(c) => Arc::new(c),
        // The ring provider always supports the default versions; keep a usable fallback.
        Err(_) => Arc::new(
            rustls::ClientConfig::builder()
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(Vec::new())))
                .with_no_client_auth(),
        ),
    }
}

fn dial_error(e: &anyhow::Error, ip: IpAddr, port: u16) -> String {
    let refused = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    });
    if refused {
        format!(
            "dial tcp {}: connect: connection refused",
            SocketAddr::new(ip, port)
        )
    } else {
        format!("{e:#}")
    }
}

async fn tcp_check(
    target: &Target,
    host: Option<&str>,
    port: &IntOrString,
    timeout: Duration,
) -> Result<Option<String>> {
    let port = resolve_port(port, &target.container)?;
    let ip = host_ip(target, host)?;
    match super::netns::connect(&target.netns, SocketAddr::new(ip, port), timeout).await {
        Ok(_) => Ok(None),
        Err(e) => Ok(Some(dial_error(&e, ip, port))),
    }
}

async fn exec_check(
    target: &Target,
    action: &ExecAction,
    timeout: Duration,
) -> Result<Option<String>> {
    let argv = action.command.clone().unwrap_or_default();
    let out = super::seams::exec(&target.ctx, &target.container_id, &argv, timeout).await?;
    if out.0 == 0 {
        Ok(None)
    } else {
        let text = String::from_utf8_lossy(&out.1).trim_end().to_string();
        Ok(Some(if text.is_empty() {
            format!("command {argv:?} exited with {}", out.0)
        } else {
            text
        }))
    }
}

/// One probe attempt: None on success, Some(why) on failure.
async fn probe_once(target: &Target, probe: &Probe) -> Option<String> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let result = if let Some(h) = &probe.http_get {
        http_get(target, h, timeout).await
    } else if let Some(t) = &probe.tcp_socket {
        tcp_check(target, t.host.as_deref(), &t.port, timeout).await
    } else if let Some(e) = &probe.exec {
        exec_check(target, e, timeout).await
    } else if let Some(g) = &probe.grpc {
        // gRPC probes have no host field: always the pod's own address.
        match host_ip(target, None) {
            Ok(ip) => {
                let service = g.service.as_deref().unwrap_or("");
                super::grpcprobe::check(target, g.port, service, ip, timeout).await
            }
            Err(e) => Err(e),
        }
    } else {
        Ok(None)
    };
    result.unwrap_or_else(|e| Some(format!("{e:#}")))
}

/// Runs one probe of one container attempt until the task is aborted (the container stopped)
/// or a liveness/startup probe gives up.
pub async fn run(
    kind: ProbeKind,
    probe: Probe,
    target: Target,
    attempt: u32,
    container_started: tokio::time::Instant,
    mut started: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<WorkerEvent>,
) {
    // initialDelaySeconds counts from the container's start, as kubelet's does (a slow startup
    // probe or postStart hook eats into the liveness and readiness delays).
    // Only liveness and startup failures kill; readiness has no grace of its own.
    let grace = match kind {
        ProbeKind::Readiness => None,
        _ => probe
            .termination_grace_period_seconds
            .map(|g| g.max(0) as u64),
    };
    if kind != ProbeKind::Startup {
        while !*started.borrow_and_update() {
            if started.changed().await.is_err() {
                return;
            }
        }
    }
    let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    tokio::time::sleep_until(container_started + delay).await;
    let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
    let success_needed = probe.success_threshold.unwrap_or(1).max(1);
    let failure_needed = probe.failure_threshold.unwrap_or(3).max(1);
    let (mut successes, mut failures) = (0, 0);
    let mut reported: Option<bool> = None;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match probe_once(&target, &probe).await {
            None => {
                successes += 1;
                failures = 0;
                if successes >= success_needed && reported != Some(true) {
                    reported = Some(true);
                    let _ = tx.send(WorkerEvent::Probe {
                        name: target.container.name.clone(),
                        attempt,
                        kind,
                        ok: true,
                        message: String::new(),
                        grace,
                    });
                    if kind == ProbeKind::Startup {
                        return;
                    }
                }
            }
            Some(why) => {
                failures += 1;
                successes = 0;
                target.ctx.recorder().event_ref(
                    target.reference.clone(),
                    WARNING,
                    "Unhealthy",
                    "Probing",
                    format!("{} probe failed: {why}", kind.title()),
                );
                if failures >= failure_needed && reported != Some(false) {
                    reported = Some(false);
                    let _ = tx.send(WorkerEvent::Probe {
                        name: target.container.name.clone(),
                        attempt,
                        kind,
                        ok: false,
                        message: why,
                        grace,
                    });
                    if kind != ProbeKind::Readiness {
                        return;
                    }
                }
            }
        }
    }
}

/// Runs a lifecycle hook; Err says why it failed.
pub async fn run_hook(target: &Target, hook: &LifecycleHandler, limit: Duration) -> Result<()> {
    let work = async {
        if let Some(e) = &hook.exec {
            let argv = e.command.clone().unwrap_or_default();
            let (code, output) =
                super::seams::exec(&target.ctx, &target.container_id, &argv, limit).await?;
            if code != 0 {
                bail!(
                    "command {:?} exited with {code}: {}",
                    argv.join(" "),
                    String::from_utf8_lossy(&output).trim_end()
                );
            }
            Ok(())
        } else if let Some(h) = &hook.http_get {
            match http_get(target, h, limit).await? {
                None => Ok(()),
                Some(why) => bail!("{why}"),
            }
        } else if let Some(s) = &hook.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
            Ok(())
        } else if let Some(t) = &hook.tcp_socket {
            match tcp_check(target, t.host.as_deref(), &t.port, limit).await? {
                None => Ok(()),
                Some(why) => bail!("{why}"),
            }
        } else {
            Ok(())
        }
    };
    match tokio::time::timeout(limit, work).await {
        Ok(r) => r,
        Err(_) => bail!("the hook did not finish within {}s", limit.as_secs()),
    }
}
