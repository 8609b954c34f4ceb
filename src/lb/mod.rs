//! The API load balancer of a cluster with several servers (the `<cluster>-lb` container,
//! `kcluster node lb`): it holds the published API port and passes each TCP connection
//! through, TLS untouched, to a server that answers `/readyz`.
//!
//! Backends are container names, resolved through Docker's DNS for every connection and
//! every check, so a server that comes back with a new address is found again. A server whose
//! name stops resolving or whose port refuses is down at once (a killed container leaves
//! Docker's DNS); one that answers badly or slowly is out after two checks in a row. A server
//! found gone has its connections cut (HAProxy's `on-marked-down shutdown-sessions`): a killed
//! server never answers again, and a client's watch would otherwise hang on it until TCP gives
//! up, minutes later. An unready one keeps them, so requests in flight get its answer.

pub mod docker;
mod health;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How often every backend's `/readyz` is asked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// A connection attempt to a backend that takes longer than this tries the next one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(clap::Args, Debug, Clone)]
pub struct LbArgs {
    /// The port to listen on (Docker publishes it on the host).
    #[arg(long, default_value_t = 6443)]
    pub port: u16,
    /// host:port of an API server (a server node's name); repeat for each.
    #[arg(long = "backend", required = true)]
    pub backends: Vec<String>,
    /// The cluster CA, to check the servers' certificates during health checks.
    #[arg(long, default_value = "/etc/kcluster/pki/ca.crt")]
    pub ca: PathBuf,
    /// More backends, one host:port a line, read again every CHECK_INTERVAL: `kcluster node
    /// add --role server` writes it, so a new server joins without a restart.
    #[arg(long, default_value = BACKENDS_FILE)]
    pub backends_file: PathBuf,
}

pub const BACKENDS_FILE: &str = "/etc/kcluster/lb/backends";

/// One API server as the balancer sees it.
pub struct Backend {
    pub address: String,
    /// The name its certificate is checked against.
    host: String,
    healthy: watch::Sender<Health>,
    /// Taken out of the backends (its server was deleted): its checks stop.
    retired: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not checked yet: tried like a healthy one.
    Unknown,
    Up,
    /// Answers, but not ready (e.g. its store lost quorum) two checks in a row: no new
    /// connections while another backend connects; open ones finish what they asked.
    Unready,
    /// Unreachable (its name does not resolve, its port refuses or never answers): its
    /// connections are cut, since nothing will come back on them.
    Gone,
}

impl Backend {
    fn new(address: &str) -> Result<Backend> {
        let (host, _) = crate::node::split_host_port(address)?;
        Ok(Backend {
            address: address.to_owned(),
            host,
            healthy: watch::channel(Health::Unknown).0,
            retired: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    fn usable(&self) -> bool {
        matches!(*self.healthy.borrow(), Health::Unknown | Health::Up)
    }
}

pub struct Balancer {
    backends: RwLock<Vec<Arc<Backend>>>,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(addresses: &[String]) -> Result<Balancer> {
        Ok(Balancer {
            backends: RwLock::new(
                addresses
                    .iter()
                    .map(|a| Backend::new(a).map(Arc::new))
                    .collect::<Result<_>>()?,
            ),
            next: AtomicUsize::new(0),
        })
    }

    fn all(&self) -> Vec<Arc<Backend>> {
        self.backends
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Adds the addresses not known yet; returns the new backends.
    fn add(&self, addresses: &[String]) -> Vec<Arc<Backend>> {
        let mut backends = self
            .backends
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut added = Vec::new();
        for address in addresses {
            if backends.iter().any(|b| &b.address == address) {
                continue;
            }
            match Backend::new(address) {
                Ok(b) => {
                    let b = Arc::new(b);
                    backends.push(b.clone());
                    added.push(b);
                }
                Err(e) => warn!(%address, error = %e, "not a backend address; ignored"),
            }
        }
        added
    }

    /// Makes `addresses` the backends: adds the new ones (returned) and takes out the others,
    /// whose open connections are cut (their server is being deleted).
    fn set(&self, addresses: &[String]) -> Vec<Arc<Backend>> {
        let added = self.add(addresses);
        let mut backends = self
            .backends
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        backends.retain(|b| {
            let keep = addresses.contains(&b.address);
            if !keep {
                b.retired.store(true, Ordering::Release);
                b.healthy.send_replace(Health::Gone);
                info!(backend = %b.address, "API server removed from the backends");
            }
            keep
        });
        added
    }

    /// Backends in the order to try them: round robin over the usable ones, then the rest (a
    /// check may be stale, and a connection refused by all is worse than one more attempt).
    fn candidates(&self) -> Vec<Arc<Backend>> {
        let backends = self.all();
        let n = backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let ring = (0..n).map(|i| backends[(start + i) % n].clone());
        let (mut usable, down): (Vec<_>, Vec<_>) = ring.partition(|b| b.usable());
        usable.extend(down);
        usable
    }

    async fn connect(&self) -> Option<(Arc<Backend>, TcpStream)> {
        for backend in self.candidates() {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&backend.address)).await
            {
                Ok(Ok(stream)) => return Some((backend, stream)),
                Ok(Err(e)) => {
                    debug!(backend = %backend.address, error = %e, "cannot connect; trying the next")
                }
                Err(_) => debug!(backend = %backend.address, "connect timed out; trying the next"),
            }
        }
        None
    }
}

pub async fn run(args: LbArgs) -> Result<()> {
    let ca_pem = std::fs::read_to_string(&args.ca)
        .with_context(|| format!("cannot read the cluster CA {}", args.ca.display()))?;
    let balancer = Arc::new(Balancer::new(&args.backends)?);
    let tls = health::tls_config(&ca_pem)?;
    for backend in balancer.all() {
        tokio::spawn(health::watch_backend(backend, tls.clone()));
    }
    tokio::spawn(follow_backends_file(
        balancer.clone(),
        args.backends_file.clone(),
        tls,
    ));
    let listener = TcpListener::bind(("0.0.0.0", args.port))
        .await
        .with_context(|| format!("cannot listen on port {}", args.port))?;
    info!(port = args.port, backends = ?args.backends, "API load balancer listening");
    serve(listener, balancer).await
}

/// Reads `path` every CHECK_INTERVAL: once it exists, it lists every backend (`node add`
/// and `node delete` of a server rewrite it), so the ones it adds are checked from then on
/// and the ones it leaves out are taken out.
async fn follow_backends_file(
    balancer: Arc<Balancer>,
    path: PathBuf,
    tls: Arc<rustls::ClientConfig>,
) {
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tick.tick().await;
        let Ok(text) = tokio::fs::read_to_string(&path).await else {
            continue;
        };
        let addresses = backends_in(&text);
        // An empty list is a file being written, never a cluster without servers.
        if addresses.is_empty() {
            continue;
        }
        for backend in balancer.set(&addresses) {
            info!(backend = %backend.address, "new API server from {}", path.display());
            tokio::spawn(health::watch_backend(backend, tls.clone()));
        }
    }
}

/// One host:port a line; blank lines and `#` comments skipped.
fn backends_in(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

pub async fn serve(listener: TcpListener, balancer: Arc<Balancer>) -> Result<()> {
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: the next accept may work.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let balancer = balancer.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let Some((backend, upstream)) = balancer.connect().await else {
                warn!(%peer, "no API server accepts connections; closing the client's");
                return;
            };
            let _ = upstream.set_nodelay(true);
            pipe(client, upstream, &backend).await;
        });
    }
}

/// Copies both ways until either side closes or the backend is found gone. A connection made
/// to a backend already gone (the last resort when none is up) stays until it is found gone
/// again after coming back. An unready backend keeps its connections: a request in flight
/// gets the server's own answer (a 5xx naming the store) rather than an EOF.
async fn pipe(mut client: TcpStream, mut upstream: TcpStream, backend: &Backend) {
    let mut health = backend.healthy.subscribe();
    health.borrow_and_update();
    let marked_down = async {
        loop {
            if health.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            if *health.borrow_and_update() == Health::Gone {
                return;
            }
        }
    };
    tokio::select! {
        r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Err(e) = r {
                debug!(backend = %backend.address, error = %e, "connection ended");
            }
        }
        _ = marked_down => {
            debug!(backend = %backend.address, "backend gone: cutting its connection");
        }
    }
}

#[cfg(test)]
mod tests;
