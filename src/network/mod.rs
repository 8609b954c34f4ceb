//! The pod network on a node: routed, with no bridge (the shape of kind's kindnetd/ptp).
//! Every node has a /24 of the cluster's pod subnet (`Node.spec.podCIDR`, handed out by the
//! node IPAM controller). Each pod gets a veth pair: `eth0` in the pod's network namespace with
//! an address of the block, the other end left in the node with no address, and a /32 route
//! `<pod ip> dev <host end>` on the node. The block's first address is the pods' gateway; it
//! lives on the node's `lo`, so it is always a local address (the DNS forwarder for
//! `dnsPolicy: Default` pods listens there) and the host end of every veth answers ARP for it.
//! Inside a pod the whole block is routed via the gateway, so even same-node pod traffic passes
//! through the node's IP layer — and so through its netfilter hooks. That is why there is no
//! bridge: a bridge switches same-node replies at layer 2, past the conntrack that must undo a
//! Service's DNAT, unless the host has `br_netfilter` loaded, which a node cannot do.
//! Packets for another node's pods are routed to that node's InternalIP: the nodes share one
//! Docker network, so no tunnel is needed.
//!
//! All of it is done over netlink (rtnetlink); the node image has no `ip` binary. NAT (Service
//! DNAT, masquerade of pod egress) is the service proxy's (`proxy/`).

mod ipam;
pub mod netns;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::cluster::cidr::Ipv4Cidr;
pub use ipam::Allocations;
use ipam::Ipam;

/// The interface that holds the pods' gateway address.
const GATEWAY_INTERFACE: &str = "lo";
/// The interface name inside every pod.
const POD_INTERFACE: &str = "eth0";
/// Routes to other nodes' pod CIDRs carry this protocol number, so a resync finds (and only
/// touches) its own routes.
const ROUTE_PROTOCOL: u8 = 77;
/// Routes to this node's own pods (and the block's unreachable catch-all) carry this one.
const POD_ROUTE_PROTOCOL: u8 = 78;
const RT_TABLE_MAIN: u8 = 254;
const DEFAULT_MTU: u32 = 1500;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const ESRCH: i32 = 3;

/// A pod's address, as `attach` configured it on the pod's `eth0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodAddress {
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
}

/// What `init` set up, saved so `kcluster node net` (another process) can open the same network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeNetwork {
    node_name: String,
    pod_cidr: String,
    mtu: u32,
}

pub struct PodNetwork {
    node_name: String,
    cidr: Ipv4Cidr,
    gateway: Ipv4Addr,
    mtu: u32,
    ipam: Arc<Ipam>,
    /// Netlink in the node's own namespace.
    handle: Handle,
    /// Route resyncs one at a time.
    routes: tokio::sync::Mutex<()>,
}

fn network_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("network")
}

/// The errno of a netlink error answer.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// The host end of a pod's veth: a stable name per pod uid, within the 15 bytes Linux allows.
pub fn host_interface(pod_uid: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(pod_uid.as_bytes());
    format!("veth{}", &hex::encode(digest)[..11])
}

async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot look up interface {name}")),
    }
}

fn mtu_of(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// Adds an IPv4 address to an interface; one already there is fine.
async fn ensure_address(handle: &Handle, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
    match handle
        .address()
        .add(index, ip.into(), prefix_len)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(EEXIST) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot add address {ip}/{prefix_len}")),
    }
}

/// The IPv4 addresses on an interface.
async fn addresses(handle: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>> {
    let messages: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .context("cannot list addresses")?;
    Ok(messages
        .into_iter()
        .filter(|m| m.header.family == AddressFamily::Inet && m.header.index == index)
        .filter_map(|m| {
            let prefix = m.header.prefix_len;
            m.attributes.into_iter().find_map(|a| match a {
                AddressAttribute::Local(std::net::IpAddr::V4(ip))
                | AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some((ip, prefix)),
                _ => None,
            })
        })
        .collect())
}

async fn set_up(handle: &Handle, index: u32) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .with_context(|| format!("cannot bring up interface {index}"))
}

/// A route this node made to another node's pods: destination block → next hop.
fn our_route(route: &RouteMessage) -> Option<(Ipv4Cidr, Ipv4Addr)> {
    if route.header.protocol != RouteProtocol::from(ROUTE_PROTOCOL)
        || route.header.table != RT_TABLE_MAIN
        || route.header.address_family != AddressFamily::Inet
    {
        return None;
    }
    let mut destination = None;
    let mut gateway = None;
    for a in &route.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            _ => {}
        }
    }
    let cidr = Ipv4Cidr::new(destination?, route.header.destination_prefix_length).ok()?;
    Some((cidr, gateway?))
}

/// The other nodes' pod CIDRs and where to send packets for them.
pub fn wanted_routes(
    own_node: &str,
    own_cidr: Ipv4Cidr,
    nodes: &[Node],
) -> BTreeMap<Ipv4Cidr, Ipv4Addr> {
    let mut wanted = BTreeMap::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(own_node) {
            continue;
        }
        let cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| c.parse::<Ipv4Cidr>().ok());
        let via = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse::<Ipv4Addr>().ok());
        if let (Some(cidr), Some(via)) = (cidr, via)
            && !cidr.overlaps(&own_cidr)
        {
            wanted.insert(cidr, via);
        }
    }
    wanted
}

impl PodNetwork {
    /// Once per agent start, after the Node has spec.podCIDR: the gateway address, the block's
    /// catch-all route, IP forwarding, and the address table under `state_dir/network`.
    pub async fn init(node_name: &str, pod_cidr: &str, state_dir: &Path) -> Result<PodNetwork> {
        let cidr: Ipv4Cidr = pod_cidr
            .parse()
            .with_context(|| format!("node {node_name} has a bad pod CIDR {pod_cidr:?}"))?;
        if cidr.prefix_len() > 30 {
            bail!("pod CIDR {cidr} of node {node_name} is too small for pods (at most /30)");
        }
        let gateway = cidr.nth(1).context("pod CIDR has no gateway address")?;
        let handle = netns::connect_here()?;
        // Pods' packets leave through the node's eth0: the same MTU avoids fragmentation.
        let mtu = match find_link(&handle, "eth0").await? {
            Some(link) => mtu_of(&link).unwrap_or(DEFAULT_MTU),
            None => DEFAULT_MTU,
        };
        let lo = find_link(&handle, GATEWAY_INTERFACE)
            .await?
            .context("the node has no loopback interface")?
            .header
            .index;
        for (ip, prefix) in addresses(&handle, lo).await? {
            if !ip.is_loopback() && (ip, prefix) != (gateway, 32) {
                // The gateway of a pod CIDR this node no longer has.
                let stale: Vec<_> = handle
                    .address()
                    .get()
                    .set_link_index_filter(lo)
                    .set_address_filter(ip.into())
                    .execute()
                    .try_collect()
                    .await
                    .unwrap_or_default();
                for m in stale {
                    let _ = handle.address().del(m).execute().await;
                }
            }
        }
        ensure_address(&handle, lo, gateway, 32)
            .await
            .with_context(|| format!("cannot put the pods' gateway {gateway} on {GATEWAY_INTERFACE} (is NET_ADMIN granted?)"))?;
        // Addresses of the block that no pod holds are unreachable here, instead of following
        // the default route out of the node and back.
        let catch_all = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(cidr.network(), cidr.prefix_len())
            .kind(RouteType::Unreachable)
            .protocol(RouteProtocol::from(POD_ROUTE_PROTOCOL))
            .build();
        handle
            .route()
            .add(catch_all)
            .replace()
            .execute()
            .await
            .with_context(|| format!("cannot add the unreachable route for {cidr}"))?;
        enable_forwarding()?;

        let dir = network_dir(state_dir);
        let ipam = Ipam::new(&dir, cidr)?;
        let saved = NodeNetwork {
            node_name: node_name.to_string(),
            pod_cidr: cidr.to_string(),
            mtu,
        };
        let path = dir.join("node.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&saved)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        info!(node = node_name, cidr = %cidr, gateway = %gateway, mtu, "pod network ready");
        Ok(PodNetwork {
            node_name: node_name.to_string(),
            cidr,
            gateway,
            mtu,
            ipam: Arc::new(ipam),
            handle,
            routes: tokio::sync::Mutex::new(()),
        })
    }

    /// The network the agent set up on this node, from another process (`kcluster node net`).
    pub async fn open(state_dir: &Path) -> Result<PodNetwork> {
        let dir = network_dir(state_dir);
        let path = dir.join("node.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: the node agent has not set up the pod network yet (does the Node have spec.podCIDR?)",
                path.display()
            )
        })?;
        let saved: NodeNetwork = serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid", path.display()))?;
        let cidr: Ipv4Cidr = saved
            .pod_cidr
            .parse()
            .with_context(|| format!("{} has a bad pod CIDR", path.display()))?;
        let handle = netns::connect_here()?;
        Ok(PodNetwork {
            node_name: saved.node_name,
            cidr,
            gateway: cidr.nth(1).context("pod CIDR has no gateway address")?,
            mtu: saved.mtu,
            ipam: Arc::new(Ipam::new(&dir, cidr)?),
            handle,
            routes: tokio::sync::Mutex::new(()),
        })
    }

    pub fn pod_cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// The pods' gateway: a local address of the node that every pod reaches.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Which pod holds which address.
    pub async fn allocations(&self) -> Result<Allocations> {
        let ipam = self.ipam.clone();
        tokio::task::spawn_blocking(move || ipam.load()).await?
    }

    /// Gives the pod's network namespace an `eth0` on the node's bridge with an address of the
    /// node's block. Idempotent: the same pod uid gets the same address back, and a namespace
    /// already wired is only checked.
    pub async fn attach(&self, pod_uid: &str, netns: &Path) -> Result<PodAddress> {
        if pod_uid.is_empty() {
            bail!("a pod uid is needed to attach a pod to the network");
        }
        let ipam = self.ipam.clone();
        let uid = pod_uid.to_string();
        let (ip, fresh) = tokio::task::spawn_blocking(move || {
            ipam.update(|a| {
                let had = a.pods.contains_key(&uid);
                let ip = a.allocate(ipam.cidr(), &uid)?;
                Ok((ip, !had))
            })
        })
        .await??;
        let address = PodAddress {
            ip,
            gateway: self.gateway,
            prefix_len: self.cidr.prefix_len(),
        };
        match self.wire(pod_uid, netns, address).await {
            Ok(()) => Ok(address),
            Err(e) => {
                if fresh {
                    let ipam = self.ipam.clone();
                    let uid = pod_uid.to_string();
                    let _ = tokio::task::spawn_blocking(move || ipam.release(&uid)).await;
                }
                Err(e.context(format!(
                    "cannot attach pod {pod_uid} ({}) to the pod network",
                    netns.display()
                )))
            }
        }
    }

    async fn wire(&self, pod_uid: &str, netns: &Path, address: PodAddress) -> Result<()> {
        let host_name = host_interface(pod_uid);
        let pod = netns::connect(netns).await?;
        let host = find_link(&self.handle, &host_name).await?;
        let inside = find_link(&pod, POD_INTERFACE).await?;
        if host.is_none() || inside.is_none() {
            // Half of an earlier attempt, or a veth of an older sandbox of this pod.
            if let Some(h) = host {
                delete_link(&self.handle, h.header.index).await?;
            }
            if let Some(i) = inside {
                delete_link(&pod, i.header.index).await?;
            }
            let ns_file = std::fs::File::open(netns)
                .with_context(|| format!("cannot open {}", netns.display()))?;
            use std::os::fd::AsRawFd;
            // The peer is made straight inside the pod's namespace under its final name.
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(POD_INTERFACE)
                .mtu(self.mtu)
                .setns_by_fd(ns_file.as_raw_fd())
                .build();
            let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(host_name.clone())
                .mtu(self.mtu)
                .up()
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            self.handle
                .link()
                .add(veth)
                .execute()
                .await
                .with_context(|| {
                    format!("cannot create the veth pair {host_name}/{POD_INTERFACE}")
                })?;
            drop(ns_file);
        }
        let host_index = find_link(&self.handle, &host_name)
            .await?
            .with_context(|| format!("{host_name} vanished after it was made"))?
            .header
            .index;
        set_up(&self.handle, host_index).await?;
        let eth0 = find_link(&pod, POD_INTERFACE)
            .await?
            .with_context(|| format!("{POD_INTERFACE} did not appear in {}", netns.display()))?
            .header
            .index;
        if let Some(lo) = find_link(&pod, "lo").await? {
            set_up(&pod, lo.header.index).await?;
        }
        set_up(&pod, eth0).await?;
        for (ip, prefix) in addresses(&pod, eth0).await? {
            if (ip, prefix) != (address.ip, address.prefix_len) {
                bail!(
                    "{POD_INTERFACE} in {} already has {ip}/{prefix}, not this pod's {}",
                    netns.display(),
                    address.ip
                );
            }
        }
        ensure_address(&pod, eth0, address.ip, address.prefix_len).await?;
        // Inside the pod: the gateway is on the link, and everything else — the pod's own block
        // included, replacing the kernel's on-link prefix route — goes through it.
        let routes = [
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(address.gateway, 32)
                .output_interface(eth0)
                .scope(RouteScope::Link)
                .build(),
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(self.cidr.network(), self.cidr.prefix_len())
                .gateway(address.gateway)
                .output_interface(eth0)
                .build(),
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(address.gateway)
                .output_interface(eth0)
                .build(),
        ];
        for route in routes {
            pod.route()
                .add(route)
                .replace()
                .execute()
                .await
                .with_context(|| format!("cannot route the pod via {}", address.gateway))?;
        }
        // On the node: the pod's address is on the other end of its veth.
        let to_pod = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(address.ip, 32)
            .output_interface(host_index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::from(POD_ROUTE_PROTOCOL))
            .build();
        self.handle
            .route()
            .add(to_pod)
            .replace()
            .execute()
            .await
            .with_context(|| format!("cannot route {} to {host_name}", address.ip))?;
        debug!(pod_uid, ip = %address.ip, host_interface = host_name, "pod attached");
        Ok(())
    }

    /// Removes the pod's veth (its namespace may already be gone) and frees its address.
    pub async fn detach(&self, pod_uid: &str) -> Result<()> {
        let host_name = host_interface(pod_uid);
        if let Some(link) = find_link(&self.handle, &host_name).await? {
            delete_link(&self.handle, link.header.index).await?;
        }
        let ipam = self.ipam.clone();
        let uid = pod_uid.to_string();
        let freed = tokio::task::spawn_blocking(move || ipam.release(&uid)).await??;
        debug!(pod_uid, ip = ?freed, "pod detached");
        Ok(())
    }

    /// Detaches every pod not in `live` (e.g. after a node restart, the pods the kubelet no
    /// longer has), so their addresses return to the pool. Returns the uids detached.
    pub async fn retain(&self, live: &std::collections::BTreeSet<String>) -> Result<Vec<String>> {
        let gone: Vec<String> = self
            .allocations()
            .await?
            .pods
            .into_keys()
            .filter(|uid| !live.contains(uid))
            .collect();
        for uid in &gone {
            self.detach(uid).await?;
        }
        Ok(gone)
    }

    /// Routes every other node's pod CIDR via that node's InternalIP, and removes the routes of
    /// nodes that are gone or changed. The agent calls it with the node list whenever it changes.
    pub async fn sync_routes(&self, nodes: &[Node]) -> Result<()> {
        let _one = self.routes.lock().await;
        let wanted = wanted_routes(&self.node_name, self.cidr, nodes);
        let current: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .context("cannot list routes")?;
        let mut have = BTreeMap::new();
        for route in current {
            let Some((cidr, via)) = our_route(&route) else {
                continue;
            };
            if wanted.get(&cidr) == Some(&via) {
                have.insert(cidr, via);
                continue;
            }
            match self.handle.route().del(route).execute().await {
                Ok(()) => info!(cidr = %cidr, via = %via, "removed route to a node's pods"),
                Err(e) if errno(&e) == Some(ESRCH) => {}
                Err(e) => warn!(cidr = %cidr, error = %e, "cannot remove a stale pod route"),
            }
        }
        for (cidr, via) in wanted {
            if have.contains_key(&cidr) {
                continue;
            }
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(cidr.network(), cidr.prefix_len())
                .gateway(via)
                .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
                .build();
            self.handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .with_context(|| format!("cannot route {cidr} via {via}"))?;
            info!(cidr = %cidr, via = %via, "routed a node's pods");
        }
        Ok(())
    }
}

async fn delete_link(handle: &Handle, index: u32) -> Result<()> {
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete interface {index}")),
    }
}

/// Routing between the pods' veths and eth0 needs forwarding on in the node's namespace.
fn enable_forwarding() -> Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    std::fs::write(PATH, "1").with_context(|| {
        format!(
            "cannot turn on IP forwarding ({PATH}): the node container needs a writable /proc/sys"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        let mut spec = json!({});
        if let Some(c) = cidr {
            spec = json!({"podCIDR": c, "podCIDRs": [c]});
        }
        let addresses: Vec<_> = ip
            .map(|ip| json!({"type": "InternalIP", "address": ip}))
            .into_iter()
            .chain([json!({"type": "Hostname", "address": name})])
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": spec,
            "status": {"addresses": addresses},
        }))
        .unwrap()
    }

    #[test]
    fn routes_go_to_every_other_node_with_a_cidr_and_an_address() {
        let own: Ipv4Cidr = "10.244.0.0/24".parse().unwrap();
        let nodes = vec![
            node("me", Some("10.244.0.0/24"), Some("172.18.0.2")),
            node("w1", Some("10.244.1.0/24"), Some("172.18.0.3")),
            node("w2", None, Some("172.18.0.4")),
            node("w3", Some("10.244.3.0/24"), None),
            node("clash", Some("10.244.0.0/24"), Some("172.18.0.9")),
        ];
        let wanted = wanted_routes("me", own, &nodes);
        assert_eq!(wanted.len(), 1, "{wanted:?}");
        assert_eq!(
            wanted.get(&"10.244.1.0/24".parse().unwrap()),
            Some(&Ipv4Addr::new(172, 18, 0, 3))
        );
    }

    #[test]
    fn host_interface_names_fit_linux_and_differ_per_pod() {
        let a = host_interface("0f6c1a2e-1111-4444-8888-123456789abc");
        let b = host_interface("0f6c1a2e-1111-4444-8888-123456789abd");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
        assert_ne!(a, b);
        assert_eq!(a, host_interface("0f6c1a2e-1111-4444-8888-123456789abc"));
    }
}
