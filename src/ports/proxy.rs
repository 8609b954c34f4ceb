//! `kcluster node port-proxy`: the process in one proxy container. It listens on one port
//! (published on the host by Docker) and forwards TCP connections or UDP flows to the Service's
//! node port on the nodes. Targets are node container names, resolved through Docker's DNS so a
//! restart that hands out new addresses changes nothing; a node that does not answer is skipped
//! for a few seconds and the next one is tried.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use super::want::Protocol;
use crate::cluster::cidr::Ipv4Cidr;

#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    /// tcp or udp.
    #[arg(long, value_parser = parse_protocol)]
    pub protocol: Protocol,
    /// The port to listen on (inside the container; Docker publishes it on the host).
    #[arg(long)]
    pub port: u16,
    /// host:port to forward to (a node name and the Service's node port); repeat for each node.
    #[arg(long = "target", required = true)]
    pub targets: Vec<String>,
    /// Forward to this cluster IP (at the targets' port) instead, routed through the first node
    /// that answers: for LoadBalancer Services without node ports. Needs CAP_NET_ADMIN.
    #[arg(long)]
    pub cluster_ip: Option<std::net::Ipv4Addr>,
    /// Let through only clients in this range (a LoadBalancer's `loadBalancerSourceRanges`);
    /// repeat for each. None: everyone.
    #[arg(long = "allow")]
    pub allow: Vec<Ipv4Cidr>,
    /// Start each TCP connection to the target with a PROXY protocol v2 header naming the
    /// client (the host itself as 127.0.0.1), for a target that trusts this proxy to say so.
    #[arg(long)]
    pub proxy_protocol: bool,
}

/// Which clients may use the port. Docker hands over connections to a published port from the
/// host itself (127.0.0.1) with the Docker network's gateway as their source, so the gateway
/// stands for 127.0.0.1; clients elsewhere keep their own address (Docker DNATs them).
#[derive(Debug, Clone)]
struct Allow {
    ranges: Vec<Ipv4Cidr>,
    gateway: Option<Ipv4Addr>,
}

impl Allow {
    /// The client a peer stands for: the gateway is the host's own 127.0.0.1.
    fn client(&self, peer: IpAddr) -> IpAddr {
        match peer {
            IpAddr::V4(ip) if Some(ip) == self.gateway => IpAddr::V4(Ipv4Addr::LOCALHOST),
            other => other,
        }
    }

    fn admits(&self, peer: IpAddr) -> bool {
        if self.ranges.is_empty() {
            return true;
        }
        let IpAddr::V4(ip) = peer else {
            return false;
        };
        let IpAddr::V4(seen_as) = self.client(peer) else {
            return false;
        };
        self.ranges
            .iter()
            .any(|r| r.contains(seen_as) || r.contains(ip))
    }
}

/// The default route's gateway from `/proc/net/route` (hex, little-endian fields).
fn default_gateway(route_table: &str) -> Option<Ipv4Addr> {
    route_table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&"00000000") {
            return None;
        }
        let raw = u32::from_str_radix(fields.get(2)?, 16).ok()?;
        Some(Ipv4Addr::from(raw.to_le_bytes()))
    })
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::parse(s).ok_or_else(|| format!("{s:?}: the protocol is tcp or udp"))
}

/// How long a resolved address is trusted, and how long a target that did not answer is skipped.
const RESOLVE_TTL: Duration = Duration::from_secs(10);
const DOWN_FOR: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);
const UDP_IDLE: Duration = Duration::from_secs(60);
/// Larger than tokio's 8 KiB default: bulk transfers through the host port run at several
/// Gbit/s instead of being bound by per-copy syscalls.
const BUFFER: usize = 256 * 1024;

#[derive(Default)]
struct TargetState {
    address: Option<(SocketAddr, Instant)>,
    down_until: Option<Instant>,
}

/// The nodes' node ports, tried in rotation.
struct Targets {
    names: Vec<(String, u16)>,
    state: Mutex<HashMap<usize, TargetState>>,
    next: AtomicUsize,
    /// Set for a cluster IP target: the node the /32 route to it goes through now.
    cluster_ip: Option<(std::net::Ipv4Addr, Mutex<Option<IpAddr>>)>,
}

impl Targets {
    fn new(targets: &[String], cluster_ip: Option<std::net::Ipv4Addr>) -> Result<Targets> {
        let names = targets
            .iter()
            .map(|t| crate::node::split_host_port(t))
            .collect::<Result<Vec<_>>>()?;
        Ok(Targets {
            names,
            state: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            cluster_ip: cluster_ip.map(|ip| (ip, Mutex::new(None))),
        })
    }

    /// For a cluster IP target: the address to dial, after routing the cluster IP through
    /// node `i` (only when the route names another node, so connections do not flap it).
    async fn via(&self, i: usize, node: SocketAddr) -> Result<SocketAddr> {
        let Some((cluster_ip, current)) = &self.cluster_ip else {
            return Ok(node);
        };
        let mut current = current.lock().await;
        if *current != Some(node.ip()) {
            let IpAddr::V4(gateway) = node.ip() else {
                bail!(
                    "node {} has no IPv4 address to route through",
                    self.names[i].0
                );
            };
            route_via(*cluster_ip, gateway).await?;
            info!(cluster_ip = %cluster_ip, via = %self.names[i].0, "routing the cluster IP");
            *current = Some(node.ip());
        }
        Ok(SocketAddr::new(IpAddr::V4(*cluster_ip), node.port()))
    }

    async fn address(&self, i: usize) -> Result<SocketAddr> {
        let now = Instant::now();
        if let Some(TargetState {
            address: Some((addr, at)),
            ..
        }) = self.state.lock().await.get(&i)
            && now.duration_since(*at) < RESOLVE_TTL
        {
            return Ok(*addr);
        }
        let (host, port) = &self.names[i];
        let started = Instant::now();
        // Docker's DNS forwards names it does not know (a stopped node's) to the host's
        // resolvers, which may take seconds to fail: a node that does not resolve at once
        // is treated as down.
        let ip: IpAddr = tokio::time::timeout(RESOLVE_TIMEOUT, crate::node::client::resolve(host))
            .await
            .with_context(|| format!("{host} does not resolve within {RESOLVE_TIMEOUT:?}"))??;
        debug!(%host, %ip, ms = started.elapsed().as_millis() as u64, "resolved");
        let addr = SocketAddr::new(ip, *port);
        self.state.lock().await.entry(i).or_default().address = Some((addr, now));
        Ok(addr)
    }

    async fn mark_down(&self, i: usize) {
        let mut state = self.state.lock().await;
        let entry = state.entry(i).or_default();
        entry.down_until = Some(Instant::now() + DOWN_FOR);
        // Re-resolve next time: the node may have come back with another address.
        entry.address = None;
    }

    /// Target indexes in the order to try: the rotation's next one first, targets marked down
    /// last (still tried, so that all-down does not mean nothing is tried).
    async fn order(&self) -> Vec<usize> {
        let n = self.names.len();
        // A routed cluster IP keeps its node while it answers; node ports take turns.
        let start = match self.cluster_ip {
            Some(_) => 0,
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        };
        let now = Instant::now();
        let state = self.state.lock().await;
        let is_down = |i: &usize| {
            state
                .get(i)
                .and_then(|s| s.down_until)
                .is_some_and(|until| until > now)
        };
        let rotated: Vec<usize> = (0..n).map(|k| (start + k) % n).collect();
        let (down, up): (Vec<usize>, Vec<usize>) = rotated.into_iter().partition(is_down);
        up.into_iter().chain(down).collect()
    }

    async fn connect_tcp(&self) -> Result<TcpStream> {
        let mut last = None;
        for i in self.order().await {
            let attempt = async {
                let addr = self.via(i, self.address(i).await?).await?;
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
                    .await
                    .with_context(|| format!("{addr}: no answer"))?
                    .with_context(|| format!("cannot connect to {addr}"))?;
                anyhow::Ok(stream)
            };
            let started = Instant::now();
            let result = attempt.await;
            debug!(target = %self.names[i].0, ms = started.elapsed().as_millis() as u64, ok = result.is_ok(), "dial");
            match result {
                Ok(stream) => return Ok(stream),
                Err(e) => {
                    debug!(target = %self.names[i].0, error = %format!("{e:#}"), "target skipped");
                    self.mark_down(i).await;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no targets")))
    }
}

pub async fn run(args: ProxyArgs) -> Result<()> {
    if args.targets.is_empty() {
        bail!("give at least one --target host:port");
    }
    let targets = Arc::new(Targets::new(&args.targets, args.cluster_ip)?);
    let listen = SocketAddr::from(([0, 0, 0, 0], args.port));
    let allow = Allow {
        ranges: args.allow.clone(),
        gateway: std::fs::read_to_string("/proc/net/route")
            .ok()
            .and_then(|t| default_gateway(&t)),
    };
    if !allow.ranges.is_empty() {
        info!(ranges = ?allow.ranges, gateway = ?allow.gateway, "only these clients are let through");
    }
    let work = async {
        match args.protocol {
            Protocol::Tcp => serve_tcp(listen, targets, allow, args.proxy_protocol).await,
            Protocol::Udp => serve_udp(listen, targets, allow).await,
        }
    };
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        r = work => r,
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

async fn serve_tcp(
    listen: SocketAddr,
    targets: Arc<Targets>,
    allow: Allow,
    proxy_protocol: bool,
) -> Result<()> {
    let allow = Arc::new(allow);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    info!(%listen, targets = ?targets.names, "forwarding TCP");
    loop {
        let (mut client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !allow.admits(peer.ip()) {
            debug!(%peer, "client outside the source ranges; closed");
            drop(client);
            continue;
        }
        let targets = targets.clone();
        let allow = allow.clone();
        tokio::spawn(async move {
            let _ = client.set_nodelay(true);
            let accepted = Instant::now();
            let upstream = targets.connect_tcp().await;
            debug!(%peer, connect_ms = accepted.elapsed().as_millis() as u64, "upstream connect");
            let mut upstream = match upstream {
                Ok(s) => s,
                Err(e) => {
                    warn!(%peer, error = %format!("{e:#}"), "no node answered; closing the connection");
                    return;
                }
            };
            let _ = upstream.set_nodelay(true);
            if proxy_protocol {
                let header = super::proxy_protocol::encode(
                    SocketAddr::new(allow.client(peer.ip()), peer.port()),
                    client.local_addr().unwrap_or(listen),
                );
                if let Err(e) = upstream.write_all(&header).await {
                    debug!(%peer, error = %e, "cannot send the PROXY header");
                    return;
                }
            }
            if let Err(e) =
                tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, BUFFER, BUFFER)
                    .await
            {
                debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

/// UDP: one upstream socket per client address, so replies find their way back; a flow idle for
/// a minute is forgotten (as conntrack forgets it).
async fn serve_udp(listen: SocketAddr, targets: Arc<Targets>, allow: Allow) -> Result<()> {
    let socket = Arc::new(
        UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?,
    );
    info!(%listen, targets = ?targets.names, "forwarding UDP");
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                debug!(error = %e, "recv failed");
                continue;
            }
        };
        if !allow.admits(peer.ip()) {
            debug!(%peer, "client outside the source ranges; datagram dropped");
            continue;
        }
        let existing = flows.lock().await.get(&peer).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => match open_flow(&targets).await {
                Ok(u) => {
                    let u = Arc::new(u);
                    flows.lock().await.insert(peer, u.clone());
                    tokio::spawn(replies(u.clone(), socket.clone(), peer, flows.clone()));
                    u
                }
                Err(e) => {
                    warn!(%peer, error = %format!("{e:#}"), "no node to send to; datagram dropped");
                    continue;
                }
            },
        };
        if let Err(e) = upstream.send(&buf[..n]).await {
            debug!(%peer, error = %e, "send upstream failed");
        }
    }
}

async fn open_flow(targets: &Targets) -> Result<UdpSocket> {
    let mut last = None;
    for i in targets.order().await {
        match async { targets.via(i, targets.address(i).await?).await }.await {
            Ok(addr) => {
                let socket = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))).await?;
                socket.connect(addr).await?;
                return Ok(socket);
            }
            Err(e) => {
                targets.mark_down(i).await;
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no targets")))
}

async fn replies(
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>>,
) {
    let mut buf = vec![0u8; 65536];
    loop {
        match tokio::time::timeout(UDP_IDLE, upstream.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let _ = socket.send_to(&buf[..n], peer).await;
            }
            // An ICMP error from a node (refused) is not the end of the flow.
            Ok(Err(e)) => debug!(%peer, error = %e, "upstream error"),
            Err(_) => break,
        }
    }
    flows.lock().await.remove(&peer);
}

/// `<cluster ip>/32 via <node>` in this container's network namespace (replacing the route
/// through another node).
async fn route_via(cluster_ip: std::net::Ipv4Addr, gateway: std::net::Ipv4Addr) -> Result<()> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("cannot open a netlink socket")?;
    let task = tokio::spawn(connection);
    let route = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
        .destination_prefix(cluster_ip, 32)
        .gateway(gateway)
        .build();
    let result = handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .with_context(|| {
            format!("cannot route {cluster_ip} via {gateway} (the proxy needs CAP_NET_ADMIN)")
        });
    task.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_admit_their_clients_and_the_gateway_stands_for_the_host() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                     eth0\t00000000\t010015AC\t0003\t0\t0\t0\t00000000\n\
                     eth0\t000015AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n";
        let gateway = default_gateway(table);
        assert_eq!(gateway, Some(Ipv4Addr::new(172, 21, 0, 1)));
        let open = Allow {
            ranges: vec![],
            gateway,
        };
        assert!(open.admits("203.0.113.9".parse().unwrap()));
        let local_only = Allow {
            ranges: vec!["127.0.0.1/32".parse().unwrap()],
            gateway,
        };
        assert!(local_only.admits("172.21.0.1".parse().unwrap()));
        assert!(!local_only.admits("172.21.0.7".parse().unwrap()));
        let lan = Allow {
            ranges: vec!["192.168.0.0/16".parse().unwrap()],
            gateway,
        };
        assert!(lan.admits("192.168.3.4".parse().unwrap()));
        assert!(!lan.admits("172.21.0.1".parse().unwrap()));
        assert!(!lan.admits("::1".parse().unwrap()));
    }
}
