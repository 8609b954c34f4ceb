//! Who may tell the proxy who the client is. Connections from the host reach the server node
//! through the host-port proxy containers (`ports/`), so their TCP peer is a proxy, not the
//! client; those proxies dial the internal listeners (`NODE_HTTP_PROXIED_PORT`/`…HTTPS…`)
//! and open each connection with a PROXY protocol v2 header naming the client. A header is
//! believed only from the proxy containers publishing the ingress Service's host ports: their
//! addresses come from Docker's DNS by container name, so a pod or any other container that
//! reaches those listeners is refused (its connection closed), never believed.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tracing::debug;

use crate::ports::want::Protocol;

/// A proxy must send its header within this after connecting.
const HEADER_WAIT: Duration = Duration::from_secs(5);
/// Names are resolved again at most this often for peers not yet known (a proxy just started,
/// or restarted on another address), so unknown peers cannot make us flood the DNS.
const RESOLVE_EVERY: Duration = Duration::from_millis(250);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct PortProxies {
    cluster: String,
    host_ports: Mutex<Vec<u16>>,
    known: tokio::sync::Mutex<Known>,
}

#[derive(Default)]
struct Known {
    addresses: HashSet<IpAddr>,
    resolved_at: Option<Instant>,
}

impl PortProxies {
    pub fn new(cluster: &str) -> PortProxies {
        PortProxies {
            cluster: cluster.to_string(),
            host_ports: Mutex::new(Vec::new()),
            known: tokio::sync::Mutex::new(Known::default()),
        }
    }

    /// The host ports the ingress Service is published on (from its `kcluster.dev/host-ports`).
    pub fn set_host_ports(&self, ports: &[u16]) {
        if let Ok(mut p) = self.host_ports.lock() {
            *p = ports.to_vec();
        }
    }

    fn names(&self) -> Vec<String> {
        let ports = match self.host_ports.lock() {
            Ok(p) => p.clone(),
            Err(p) => p.into_inner().clone(),
        };
        ports
            .iter()
            .map(|p| crate::ports::proxy_name(&self.cluster, *p, Protocol::Tcp))
            .collect()
    }

    /// Whether `peer` is one of our port proxies, resolving their names again when it is not
    /// known yet (at most every `RESOLVE_EVERY`; concurrent askers share one resolution).
    async fn trusts(&self, peer: IpAddr) -> bool {
        let asked = Instant::now();
        let mut known = self.known.lock().await;
        if known.addresses.contains(&peer) {
            return true;
        }
        if known.resolved_at.is_some_and(|at| at >= asked) {
            return false;
        }
        if let Some(at) = known.resolved_at {
            let next = at + RESOLVE_EVERY;
            if next > Instant::now() {
                tokio::time::sleep_until(next.into()).await;
            }
        }
        let mut addresses = HashSet::new();
        for name in self.names() {
            match tokio::time::timeout(RESOLVE_TIMEOUT, crate::node::client::resolve(&name)).await {
                Ok(Ok(ip)) => {
                    addresses.insert(ip);
                }
                Ok(Err(e)) => debug!(%name, error = %format!("{e:#}"), "port proxy not resolved"),
                Err(_) => debug!(%name, "port proxy name did not resolve in time"),
            }
        }
        known.addresses = addresses;
        known.resolved_at = Some(Instant::now());
        known.addresses.contains(&peer)
    }

    /// The client of a connection accepted on an internal listener: the address in its PROXY
    /// header, once the peer is known to be one of our port proxies. `None`: close it.
    pub async fn client(&self, stream: &mut TcpStream, peer: SocketAddr) -> Option<SocketAddr> {
        if !self.trusts(peer.ip()).await {
            debug!(%peer, "not a port proxy of this cluster; a PROXY header from it is not believed");
            return None;
        }
        match tokio::time::timeout(HEADER_WAIT, crate::ports::proxy_protocol::read(stream)).await {
            Ok(Ok(client)) => Some(client.unwrap_or(peer)),
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "bad PROXY header");
                None
            }
            Err(_) => {
                debug!(%peer, "no PROXY header in time");
                None
            }
        }
    }
}
