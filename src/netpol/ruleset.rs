//! What the kernel should hold for the policies of this node's pods: named sets (pod addresses
//! per selector, `address . protocol . port` per named port) and the chains that use them.
//!
//! Layout of table `ip kcluster-netpol` (the base chains are fixed, see `base_chains`):
//! ```text
//! forward-egress  (forward, filter 0)  ct established,related accept; ip saddr != @egress-isolated accept; jump egress; drop
//! input-egress    (input, filter 0)    the same, for pods talking to their node (cluster DNS)
//! forward-ingress (forward, filter 1)  ct established,related accept; ip daddr != @ingress-isolated accept; jump ingress; drop
//! ingress / egress                     jump np-<H>-in / np-<H>-eg, one per policy of that type
//! np-<H>-in    ip daddr != @np-<H>-sel return                      (egress: ip saddr)
//!              ip saddr @np-<H>-in-r1-peers tcp dport 80 accept     (rules without ipBlocks, inline)
//!              jump np-<H>-in-r0                                    (rules with ipBlocks)
//! np-<H>-in-r0 ip saddr @np-<H>-in-r0-peers goto np-<H>-in-r0-ports; jump np-<H>-in-r0-b0
//! np-<H>-in-r0-b0     ip saddr <except> return; ip saddr <cidr> goto np-<H>-in-r0-ports
//! np-<H>-in-r0-ports  meta l4proto tcp th dport 80 accept; ip daddr . meta l4proto . th dport @np-<H>-in-r0-n1 accept
//! ```
//! `accept` in any of them ends the base chain's walk (the other base chain still judges), and a
//! policy that does not allow the packet returns, so policies add up; what none allows is
//! dropped. All base chains hook after the service proxy's DNAT (prerouting, dstnat -100), so a
//! connection to a Service is judged by the pod it reaches. Traffic from the node to its own
//! pods (kubelet probes, host-network pods) takes the output hook and is never judged, as
//! Kubernetes documents.
//!
//! A pod, namespace or label change only changes set elements; a chain is rewritten only when
//! its policy's spec changes.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use crate::controllers::runtime::selector_matches;
use crate::nftables::rule;
use crate::nftables::{
    BaseChain, ChainType, CmpOp, CtKey, DataType, Expr, Hook, MetaKey, PayloadBase, Policy, REG_1,
    Set, SetFlags, Verdict, key, reg32,
};

pub const TABLE: &str = "kcluster-netpol";
pub const INGRESS_ISOLATED: &str = "ingress-isolated";
pub const EGRESS_ISOLATED: &str = "egress-isolated";
const INGRESS: &str = "ingress";
const EGRESS: &str = "egress";

const IP_SADDR: u32 = 12;
const IP_DADDR: u32 = 16;
/// ct state bits: established (1 << 1) and related (1 << 2).
const CT_ESTABLISHED_RELATED: u32 = 0b110;

/// The key of a named set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// `ipv4_addr`
    Addr,
    /// `ipv4_addr . inet_proto . inet_service` (a named port resolved per pod)
    AddrProtoPort,
}

impl SetKind {
    pub fn set(self, name: &str) -> Set {
        Set {
            name: name.to_string(),
            key: match self {
                SetKind::Addr => vec![DataType::Ipv4Addr],
                SetKind::AddrProtoPort => vec![
                    DataType::Ipv4Addr,
                    DataType::InetProto,
                    DataType::InetService,
                ],
            },
            data: None,
            flags: SetFlags::default(),
            timeout: None,
        }
    }
}

/// Everything but the base chains.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Set name → key type and elements (keys in register layout).
    pub sets: BTreeMap<String, (SetKind, BTreeSet<Vec<u8>>)>,
    /// Regular chains and their rules.
    pub chains: BTreeMap<String, Vec<Vec<Expr>>>,
}

/// A pod as policies see it: only pods with an address of their own (not host-network) that
/// have not finished.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    pub local: bool,
    /// Container ports by name: (name, protocol number, port).
    pub ports: Vec<(String, u8, u16)>,
}

pub fn pod_info(pod: &Pod, node: &str) -> Option<PodInfo> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ip = status.pod_ip.as_deref()?.parse::<Ipv4Addr>().ok()?;
    let ports = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let name = p.name.clone()?;
            let port = u16::try_from(p.container_port).ok()?;
            Some((name, protocol(p.protocol.as_deref()), port))
        })
        .collect();
    Some(PodInfo {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        ip,
        local: spec.node_name.as_deref() == Some(node),
        ports,
    })
}

/// IPPROTO_* of a Kubernetes protocol name (TCP when unset, as defaulting does).
pub fn protocol(p: Option<&str>) -> u8 {
    match p {
        Some("UDP") => 17,
        Some("SCTP") => 132,
        _ => 6,
    }
}

/// The short name all of a policy's chains and sets start with (set names stay under 32 bytes,
/// the limit of older kernels).
pub fn policy_id(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let hex: String = digest[..5].iter().map(|b| format!("{b:02x}")).collect();
    format!("np-{hex}")
}

/// Kubernetes' defaulting of `policyTypes` (for objects stored before it ran).
fn policy_types(np: &NetworkPolicy) -> (bool, bool) {
    let spec = np.spec.as_ref();
    match spec
        .and_then(|s| s.policy_types.as_ref())
        .filter(|t| !t.is_empty())
    {
        Some(t) => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        None => (
            true,
            spec.and_then(|s| s.egress.as_ref())
                .is_some_and(|e| !e.is_empty()),
        ),
    }
}

pub fn desired(
    policies: &[&NetworkPolicy],
    pods: &[PodInfo],
    namespaces: &[&Namespace],
) -> Desired {
    let ns_labels: BTreeMap<&str, BTreeMap<String, String>> = namespaces
        .iter()
        .filter_map(|n| {
            Some((
                n.metadata.name.as_deref()?,
                n.metadata.labels.clone().unwrap_or_default(),
            ))
        })
        .collect();
    let mut by_ns: BTreeMap<&str, Vec<&PodInfo>> = BTreeMap::new();
    for p in pods {
        by_ns.entry(p.namespace.as_str()).or_default().push(p);
    }
    let memo = RefCell::new(HashMap::new());
    let mut d = Desired::default();
    let mut ingress_isolated = BTreeSet::new();
    let mut egress_isolated = BTreeSet::new();
    let mut ingress_dispatch = Vec::new();
    let mut egress_dispatch = Vec::new();
    let mut sorted: Vec<&NetworkPolicy> = policies.to_vec();
    sorted.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    for np in sorted {
        let (Some(ns), Some(name)) = (
            np.metadata.namespace.as_deref(),
            np.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let Some(spec) = np.spec.as_ref() else {
            continue;
        };
        let id = policy_id(ns, name);
        let selected: Vec<&PodInfo> = by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| {
                p.local
                    && spec
                        .pod_selector
                        .as_ref()
                        .is_none_or(|s| selector_matches(Some(s), Some(&p.labels)))
            })
            .collect();
        let sel = format!("{id}-sel");
        d.sets.insert(
            sel.clone(),
            (
                SetKind::Addr,
                selected.iter().map(|p| key::ipv4(p.ip)).collect(),
            ),
        );
        let (ingress, egress) = policy_types(np);
        let ctx = Ctx {
            ns,
            by_ns: &by_ns,
            ns_labels: &ns_labels,
            memo: &memo,
        };
        if ingress {
            ingress_isolated.extend(selected.iter().map(|p| p.ip));
            let chain = format!("{id}-in");
            ingress_dispatch.push(jump(&chain));
            let rules: Vec<RuleSpec> = spec
                .ingress
                .iter()
                .flatten()
                .map(|r| (r.from.as_ref(), r.ports.as_ref()))
                .collect();
            direction(&mut d, &ctx, &chain, &sel, Dir::In, &rules, &selected);
        }
        if egress {
            egress_isolated.extend(selected.iter().map(|p| p.ip));
            let chain = format!("{id}-eg");
            egress_dispatch.push(jump(&chain));
            let rules: Vec<RuleSpec> = spec
                .egress
                .iter()
                .flatten()
                .map(|r| (r.to.as_ref(), r.ports.as_ref()))
                .collect();
            let everyone: Vec<&PodInfo> = pods.iter().collect();
            direction(&mut d, &ctx, &chain, &sel, Dir::Eg, &rules, &everyone);
        }
    }
    d.sets.insert(
        INGRESS_ISOLATED.into(),
        (
            SetKind::Addr,
            ingress_isolated.into_iter().map(key::ipv4).collect(),
        ),
    );
    d.sets.insert(
        EGRESS_ISOLATED.into(),
        (
            SetKind::Addr,
            egress_isolated.into_iter().map(key::ipv4).collect(),
        ),
    );
    d.chains.insert(INGRESS.into(), ingress_dispatch);
    d.chains.insert(EGRESS.into(), egress_dispatch);
    d
}

struct Ctx<'a> {
    ns: &'a str,
    by_ns: &'a BTreeMap<&'a str, Vec<&'a PodInfo>>,
    ns_labels: &'a BTreeMap<&'a str, BTreeMap<String, String>>,
    /// Members of peer lists already computed (policies often repeat selectors).
    memo: &'a RefCell<HashMap<String, BTreeSet<Vec<u8>>>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Eg,
}

impl Dir {
    /// Where the policy's own pod is in the packet.
    fn own(self) -> u32 {
        match self {
            Dir::In => IP_DADDR,
            Dir::Eg => IP_SADDR,
        }
    }
    /// Where the peer is.
    fn peer(self) -> u32 {
        match self {
            Dir::In => IP_SADDR,
            Dir::Eg => IP_DADDR,
        }
    }
}

type RuleSpec<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

/// The chains and sets of one direction of one policy. `destinations` are the pods whose named
/// ports count: the selected pods for ingress, every pod for egress.
fn direction(
    d: &mut Desired,
    ctx: &Ctx,
    chain: &str,
    sel: &str,
    dir: Dir,
    rules: &[RuleSpec],
    destinations: &[&PodInfo],
) {
    let mut top = vec![[lookup_addr(dir.own(), sel, true), verdict(Verdict::Return)].concat()];
    for (i, (peers, ports)) in rules.iter().enumerate() {
        let r = format!("{chain}-r{i}");
        let port_rules = port_rules(d, &r, ports.map(Vec::as_slice), destinations);
        let peers = peers.map(Vec::as_slice).unwrap_or_default();
        let selector_peers: Vec<&NetworkPolicyPeer> =
            peers.iter().filter(|p| p.ip_block.is_none()).collect();
        let blocks: Vec<&IPBlock> = peers.iter().filter_map(|p| p.ip_block.as_ref()).collect();
        let peer_set = (!selector_peers.is_empty()).then(|| {
            let set = format!("{r}-peers");
            d.sets.insert(
                set.clone(),
                (SetKind::Addr, peer_members(ctx, &selector_peers)),
            );
            set
        });
        // Rules without ipBlocks stay in the policy's chain: every chain a jump reaches is
        // walked by the kernel on each commit that adds a jump, so fewer chains make every
        // policy change cheaper.
        if blocks.is_empty() {
            match &peer_set {
                None if peers.is_empty() => top.extend(port_rules),
                None => {}
                Some(set) => top.extend(
                    port_rules
                        .into_iter()
                        .map(|pr| [lookup_addr(dir.peer(), set, false), pr].concat()),
                ),
            }
            continue;
        }
        let ports_chain = format!("{r}-ports");
        let mut rule_chain = Vec::new();
        if let Some(set) = &peer_set {
            rule_chain.push(
                [
                    lookup_addr(dir.peer(), set, false),
                    verdict(Verdict::Goto(ports_chain.clone())),
                ]
                .concat(),
            );
        }
        for (b, block) in blocks.into_iter().enumerate() {
            let Some(block_rules) = ip_block(block, dir.peer(), &ports_chain) else {
                continue;
            };
            let bc = format!("{r}-b{b}");
            rule_chain.push(jump(&bc));
            d.chains.insert(bc, block_rules);
        }
        top.push(jump(&r));
        d.chains.insert(r, rule_chain);
        d.chains.insert(ports_chain, port_rules);
    }
    d.chains.insert(chain.to_string(), top);
}

/// The addresses of the pods some selector peer (podSelector, namespaceSelector or both)
/// selects.
fn peer_members(ctx: &Ctx, peers: &[&NetworkPolicyPeer]) -> BTreeSet<Vec<u8>> {
    let memo_key = format!(
        "{}\0{}",
        ctx.ns,
        serde_json::to_string(peers).unwrap_or_default()
    );
    if let Some(m) = ctx.memo.borrow().get(&memo_key) {
        return m.clone();
    }
    let mut out = BTreeSet::new();
    for peer in peers {
        for (ns, pods) in ctx.by_ns {
            let in_namespaces = match &peer.namespace_selector {
                None => *ns == ctx.ns,
                Some(s) => selector_matches(
                    Some(s),
                    Some(ctx.ns_labels.get(ns).unwrap_or(&BTreeMap::new())),
                ),
            };
            if !in_namespaces {
                continue;
            }
            for p in pods {
                if peer
                    .pod_selector
                    .as_ref()
                    .is_none_or(|s| selector_matches(Some(s), Some(&p.labels)))
                {
                    out.insert(key::ipv4(p.ip));
                }
            }
        }
    }
    ctx.memo.borrow_mut().insert(memo_key, out.clone());
    out
}

/// An ipBlock's chain: its exceptions return, its CIDR goes on to the ports. IPv6 blocks match no
/// packet of this IPv4 table (None).
fn ip_block(block: &IPBlock, offset: u32, ports_chain: &str) -> Option<Vec<Vec<Expr>>> {
    let (net, prefix) = parse_v4_cidr(&block.cidr)?;
    let mut rules = Vec::new();
    for ex in block.except.iter().flatten() {
        if let Some((n, p)) = parse_v4_cidr(ex) {
            rules.push([addr_in(offset, n, p), verdict(Verdict::Return)].concat());
        }
    }
    rules.push(
        [
            addr_in(offset, net, prefix),
            verdict(Verdict::Goto(ports_chain.to_string())),
        ]
        .concat(),
    );
    Some(rules)
}

pub fn parse_v4_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, bits) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok().filter(|b| *b <= 32)?;
    Some((ip, bits))
}

/// One rule per port entry, each ending in accept; no ports: accept all.
fn port_rules(
    d: &mut Desired,
    rule_chain: &str,
    ports: Option<&[NetworkPolicyPort]>,
    destinations: &[&PodInfo],
) -> Vec<Vec<Expr>> {
    let accept = verdict(Verdict::Accept);
    let ports = ports.unwrap_or_default();
    if ports.is_empty() {
        return vec![accept];
    }
    let mut out = Vec::new();
    for (k, p) in ports.iter().enumerate() {
        let proto = protocol(p.protocol.as_deref());
        match &p.port {
            None => out.push([rule::l4proto_eq(proto), accept.clone()].concat()),
            Some(IntOrString::Int(port)) => {
                let Ok(port) = u16::try_from(*port) else {
                    continue;
                };
                let end = p.end_port.and_then(|e| u16::try_from(e).ok());
                let dport = match end {
                    Some(end) if end > port => dport_range(port, end),
                    _ => rule::th_dport_eq(port),
                };
                out.push([rule::l4proto_eq(proto), dport, accept.clone()].concat());
            }
            Some(IntOrString::String(name)) => {
                // A named port means each destination pod's own container port of that name
                // and protocol; pods without one are not reached through this entry.
                let set = format!("{rule_chain}-n{k}");
                let members: BTreeSet<Vec<u8>> = destinations
                    .iter()
                    .flat_map(|pod| {
                        pod.ports
                            .iter()
                            .filter(|(n, pr, _)| n == name && *pr == proto)
                            .map(|(_, pr, port)| {
                                [key::ipv4(pod.ip), key::proto(*pr), key::port(*port)].concat()
                            })
                    })
                    .collect();
                out.push([lookup_daddr_proto_dport(&set), accept.clone()].concat());
                d.sets.insert(set, (SetKind::AddrProtoPort, members));
            }
        }
    }
    out
}

/// The fixed base chains (name, hook, rules).
pub fn base_chains() -> Vec<(String, BaseChain, Vec<Vec<Expr>>)> {
    let base = |hook, priority| BaseChain {
        kind: ChainType::Filter,
        hook,
        priority,
        policy: Policy::Accept,
    };
    let egress_rules = vec![
        [ct_established_related(), verdict(Verdict::Accept)].concat(),
        [
            lookup_addr(IP_SADDR, EGRESS_ISOLATED, true),
            verdict(Verdict::Accept),
        ]
        .concat(),
        jump(EGRESS),
        verdict(Verdict::Drop),
    ];
    vec![
        (
            "forward-egress".into(),
            base(Hook::Forward, 0),
            egress_rules.clone(),
        ),
        ("input-egress".into(), base(Hook::Input, 0), egress_rules),
        (
            "forward-ingress".into(),
            base(Hook::Forward, 1),
            vec![
                [ct_established_related(), verdict(Verdict::Accept)].concat(),
                [
                    lookup_addr(IP_DADDR, INGRESS_ISOLATED, true),
                    verdict(Verdict::Accept),
                ]
                .concat(),
                jump(INGRESS),
                verdict(Verdict::Drop),
            ],
        ),
    ]
}

fn verdict(v: Verdict) -> Vec<Expr> {
    rule::verdict(v)
}

fn jump(chain: &str) -> Vec<Expr> {
    rule::verdict(Verdict::Jump(chain.to_string()))
}

/// `ct state established,related`
fn ct_established_related() -> Vec<Expr> {
    vec![
        Expr::Ct {
            key: CtKey::State,
            dreg: REG_1,
        },
        Expr::Bitwise {
            sreg: REG_1,
            dreg: REG_1,
            mask: CT_ESTABLISHED_RELATED.to_ne_bytes().to_vec(),
            xor: 0u32.to_ne_bytes().to_vec(),
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Neq,
            data: 0u32.to_ne_bytes().to_vec(),
        },
    ]
}

/// `ip saddr @set` / `ip daddr != @set`
fn lookup_addr(offset: u32, set: &str, invert: bool) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset,
            len: 4,
            dreg: REG_1,
        },
        Expr::Lookup {
            set: set.to_string(),
            sreg: REG_1,
            dreg: None,
            invert,
        },
    ]
}

/// `ip saddr 10.0.0.0/8` / `ip daddr …`
fn addr_in(offset: u32, net: Ipv4Addr, prefix: u8) -> Vec<Expr> {
    if offset == IP_SADDR {
        rule::ip_saddr_in(net, prefix, false)
    } else {
        rule::ip_daddr_in(net, prefix, false)
    }
}

/// `th dport 80-90` as two comparisons (big-endian bytes compare as numbers).
fn dport_range(from: u16, to: u16) -> Vec<Expr> {
    let load = Expr::Payload {
        base: PayloadBase::Transport,
        offset: 2,
        len: 2,
        dreg: REG_1,
    };
    vec![
        load,
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Gte,
            data: from.to_be_bytes().to_vec(),
        },
        Expr::Cmp {
            sreg: REG_1,
            op: CmpOp::Lte,
            data: to.to_be_bytes().to_vec(),
        },
    ]
}

/// `ip daddr . meta l4proto . th dport @set`
fn lookup_daddr_proto_dport(set: &str) -> Vec<Expr> {
    vec![
        Expr::Payload {
            base: PayloadBase::Network,
            offset: IP_DADDR,
            len: 4,
            dreg: REG_1,
        },
        Expr::Meta {
            key: MetaKey::L4Proto,
            dreg: reg32(1),
        },
        Expr::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: reg32(2),
        },
        Expr::Lookup {
            set: set.to_string(),
            sreg: REG_1,
            dreg: None,
            invert: false,
        },
    ]
}
