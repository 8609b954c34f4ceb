//! The proxy's nf_tables rules, in kube-proxy's nftables-mode layout (KEP-3866), in a table of
//! our own (`ip kcluster`): verdict maps from (address, protocol, port) to one chain per service
//! port, which DNATs to an endpoint picked with `numgen random` from a named map of the
//! service's endpoints (`dnat ip to numgen random mod N map @endpoints-…`). Unlike kube-proxy
//! there is no chain per endpoint: every chain a verdict reaches is walked by the kernel's
//! loop check on each commit that adds a jump or a NAT rule, so 10,000 endpoint chains made
//! one endpoint change cost 40 ms; a map element costs nothing there. Hairpin traffic (a pod
//! reaching itself through a Service) is masqueraded by one set of `pod . pod` pairs in
//! postrouting instead of a mark in each endpoint chain. Only ClientIP affinity keeps
//! endpoint chains, which record the client in a set per endpoint. Marked packets are
//! masqueraded in postrouting. Services with no usable endpoint are rejected (ICMP port
//! unreachable: connection refused at once, not a hang).
//!
//! `static_part` is made once per full sync; `desired` is everything that depends on Services,
//! EndpointSlices and this node's pods, compared with what was applied by `plan`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::cluster::cidr::Ipv4Cidr;
use crate::nftables::{
    BaseChain, ChainType, DataType, Expr, Hook, Policy, Set, SetFlags, Verdict, key, rule,
};

use super::model::{Endpoint, Protocol, ServicePort};

pub const TABLE: &str = "kcluster";
/// The mark of packets to masquerade (kube-proxy's bit).
const MASQ_BIT: u32 = 0x4000;

pub const SERVICE_IPS: &str = "service-ips";
pub const SERVICE_NODEPORTS: &str = "service-nodeports";
pub const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub const CLUSTER_IPS: &str = "cluster-ips";
/// `ip saddr . ip daddr` pairs of this node's endpoints with themselves: hairpin traffic.
pub const HAIRPIN: &str = "hairpin";
/// The maps whose elements `desired` fills, and their key types.
pub const MAPS: [&str; 4] = [
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    NO_ENDPOINT_NODEPORTS,
];

const SERVICES: &str = "services";
const HOSTPORTS: &str = "hostports";
const MARK_FOR_MASQUERADE: &str = "mark-for-masquerade";
const MASQUERADING: &str = "masquerading";
const REJECT_CHAIN: &str = "reject-chain";
const SERVICE_ENDPOINTS_CHECK: &str = "service-endpoints-check";
const NODEPORT_ENDPOINTS_CHECK: &str = "nodeport-endpoints-check";
const CLUSTER_IPS_CHECK: &str = "cluster-ips-check";

/// One rule of a dynamic chain, or (`Numgen`) the random pick among endpoint chains, which
/// `sync` spells as one rule per endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Exprs(Vec<Expr>),
    /// Goto one of these chains, chosen uniformly with `numgen random`.
    Numgen(Vec<String>),
}

/// Everything that changes with the cluster's objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub chains: BTreeMap<String, Vec<Rule>>,
    /// Map name → key bytes → verdict.
    pub maps: BTreeMap<&'static str, BTreeMap<Vec<u8>, Verdict>>,
    pub cluster_ips: BTreeSet<Ipv4Addr>,
    /// Affinity set name → timeout in seconds.
    pub affinity_sets: BTreeMap<String, u32>,
    /// Endpoint map name → the endpoints `numgen` picks from, in order (index = key).
    pub endpoint_maps: BTreeMap<String, Vec<(Ipv4Addr, u16)>>,
    /// Addresses of this node's endpoints (members of `HAIRPIN` as `ip . ip`).
    pub hairpin: BTreeSet<Ipv4Addr>,
}

/// A hostPort of a pod on this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub protocol: Protocol,
    pub pod_ip: Ipv4Addr,
    pub container_port: u16,
}

/// A fixed chain: its name, its hook (base chains) and its rules.
pub type StaticChain = (&'static str, Option<BaseChain>, Vec<Vec<Expr>>);

/// The fixed chains (with hooks) and their rules, maps and sets.
pub struct StaticPart {
    pub chains: Vec<StaticChain>,
    pub sets: Vec<Set>,
}

fn base(kind: ChainType, hook: Hook, priority: i32) -> Option<BaseChain> {
    Some(BaseChain {
        kind,
        hook,
        priority,
        policy: Policy::Accept,
    })
}

fn cat(parts: Vec<Vec<Expr>>) -> Vec<Expr> {
    parts.into_iter().flatten().collect()
}

fn jump(chain: &str) -> Vec<Expr> {
    rule::verdict(Verdict::Jump(chain.to_string()))
}

fn goto(chain: &str) -> Vec<Expr> {
    rule::verdict(Verdict::Goto(chain.to_string()))
}

pub fn static_part(pod_subnet: Ipv4Cidr, service_subnet: Ipv4Cidr) -> StaticPart {
    let pods = (pod_subnet.network(), pod_subnet.prefix_len());
    let not_loopback = || rule::ip_daddr_in(Ipv4Addr::new(127, 0, 0, 0), 8, true);
    let new_conn = rule::ct_state_new;
    let chains = vec![
        (
            "nat-prerouting",
            base(ChainType::Nat, Hook::Prerouting, -100),
            vec![jump(HOSTPORTS), jump(SERVICES)],
        ),
        (
            "nat-output",
            base(ChainType::Nat, Hook::Output, -100),
            vec![jump(HOSTPORTS), jump(SERVICES)],
        ),
        (
            "nat-postrouting",
            base(ChainType::Nat, Hook::Postrouting, 100),
            vec![
                jump(MASQUERADING),
                // A pod that reached itself through a Service answers itself unless its own
                // address is hidden (kube-proxy marks these in each endpoint chain).
                cat(vec![
                    rule::lookup_saddr_daddr(HAIRPIN),
                    rule::masquerade(true),
                ]),
                // Pod egress (kindnetd's rule): anything a pod sends out of the pod network
                // leaves with the node's address, so the Docker network and beyond can answer.
                cat(vec![
                    rule::ip_saddr_in(pods.0, pods.1, false),
                    rule::ip_daddr_in(pods.0, pods.1, true),
                    rule::masquerade(false),
                ]),
            ],
        ),
        (
            "filter-input",
            base(ChainType::Filter, Hook::Input, -10),
            vec![
                cat(vec![new_conn(), jump(NODEPORT_ENDPOINTS_CHECK)]),
                cat(vec![new_conn(), jump(SERVICE_ENDPOINTS_CHECK)]),
            ],
        ),
        (
            "filter-forward",
            base(ChainType::Filter, Hook::Forward, -10),
            vec![
                cat(vec![new_conn(), jump(SERVICE_ENDPOINTS_CHECK)]),
                cat(vec![new_conn(), jump(CLUSTER_IPS_CHECK)]),
            ],
        ),
        (
            "filter-output",
            base(ChainType::Filter, Hook::Output, -10),
            vec![cat(vec![new_conn(), jump(SERVICE_ENDPOINTS_CHECK)])],
        ),
        (
            "filter-output-post-dnat",
            base(ChainType::Filter, Hook::Output, -90),
            vec![cat(vec![new_conn(), jump(CLUSTER_IPS_CHECK)])],
        ),
        (
            SERVICES,
            None,
            vec![
                rule::vmap_daddr_proto_dport(SERVICE_IPS),
                cat(vec![
                    rule::fib_daddr_type_local(false),
                    not_loopback(),
                    rule::vmap_proto_dport(SERVICE_NODEPORTS),
                ]),
            ],
        ),
        (
            SERVICE_ENDPOINTS_CHECK,
            None,
            vec![rule::vmap_daddr_proto_dport(NO_ENDPOINT_SERVICES)],
        ),
        (
            NODEPORT_ENDPOINTS_CHECK,
            None,
            vec![cat(vec![
                rule::fib_daddr_type_local(false),
                not_loopback(),
                rule::vmap_proto_dport(NO_ENDPOINT_NODEPORTS),
            ])],
        ),
        (
            CLUSTER_IPS_CHECK,
            None,
            vec![
                // A cluster IP on a port no Service defines: refused.
                cat(vec![
                    rule::lookup_daddr(CLUSTER_IPS),
                    rule::reject_icmp_port_unreachable(),
                ]),
                // An address of the range that no Service holds: dropped.
                cat(vec![
                    rule::ip_daddr_in(service_subnet.network(), service_subnet.prefix_len(), false),
                    rule::verdict(Verdict::Drop),
                ]),
            ],
        ),
        (
            REJECT_CHAIN,
            None,
            vec![rule::reject_icmp_port_unreachable()],
        ),
        (MARK_FOR_MASQUERADE, None, vec![rule::mark_set_or(MASQ_BIT)]),
        (
            MASQUERADING,
            None,
            vec![
                cat(vec![
                    rule::mark_and_is_zero(MASQ_BIT),
                    rule::verdict(Verdict::Return),
                ]),
                rule::mark_set_xor(MASQ_BIT),
                rule::masquerade(true),
            ],
        ),
    ];
    let vmap = |name: &str, key: Vec<DataType>| Set {
        name: name.to_string(),
        key,
        data: Some(vec![DataType::Verdict]),
        flags: SetFlags::default(),
        timeout: None,
    };
    let ip_proto_port = || {
        vec![
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ]
    };
    let proto_port = || vec![DataType::InetProto, DataType::InetService];
    let sets = vec![
        vmap(SERVICE_IPS, ip_proto_port()),
        vmap(SERVICE_NODEPORTS, proto_port()),
        vmap(NO_ENDPOINT_SERVICES, ip_proto_port()),
        vmap(NO_ENDPOINT_NODEPORTS, proto_port()),
        Set {
            name: CLUSTER_IPS.to_string(),
            key: vec![DataType::Ipv4Addr],
            data: None,
            flags: SetFlags::default(),
            timeout: None,
        },
        Set {
            name: HAIRPIN.to_string(),
            key: vec![DataType::Ipv4Addr, DataType::Ipv4Addr],
            data: None,
            flags: SetFlags::default(),
            timeout: None,
        },
    ];
    StaticPart { chains, sets }
}

/// The sets of one affinity: made on demand, one per endpoint (kube-proxy's layout).
pub fn affinity_set(name: &str, seconds: u32) -> Set {
    Set {
        name: name.to_string(),
        key: vec![DataType::Ipv4Addr],
        data: None,
        flags: SetFlags {
            timeout: true,
            dynamic: true,
            ..SetFlags::default()
        },
        timeout: Some(Duration::from_secs(seconds.into())),
    }
}

/// The map an endpoint pick reads: index (`numgen` output, host order) → address . port.
pub fn endpoint_map(name: &str) -> Set {
    Set {
        name: name.to_string(),
        key: vec![DataType::Integer],
        data: Some(vec![DataType::Ipv4Addr, DataType::InetService]),
        flags: SetFlags::default(),
        timeout: None,
    }
}

/// Key and value bytes of the element at `index` of an endpoint map.
pub fn endpoint_element(index: usize, ip: Ipv4Addr, port: u16) -> (Vec<u8>, Vec<u8>) {
    (
        key::u32_host(index as u32),
        cat_bytes([key::ipv4(ip), key::port(port)]),
    )
}

/// A short, stable hash of a name, so chain names stay unique yet readable.
fn hash(id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(id.as_bytes()))[..8].to_string()
}

pub fn service_chain(sp: &ServicePort) -> String {
    let id = sp.id();
    format!("service-{}-{id}", hash(&id))
}
fn external_chain(sp: &ServicePort) -> String {
    let id = sp.id();
    format!("external-{}-{id}", hash(&id))
}
/// The endpoint map of a service port: all its endpoints, or (`local`) this node's only.
fn endpoints_map_name(sp: &ServicePort, local: bool) -> String {
    let id = sp.id();
    let which = if local {
        "local-endpoints"
    } else {
        "endpoints"
    };
    format!("{which}-{}-{id}", hash(&id))
}
fn endpoint_id(sp: &ServicePort, ep: &Endpoint) -> String {
    format!("{}__{}/{}", sp.id(), ep.ip, ep.port)
}
fn endpoint_chain(sp: &ServicePort, ep: &Endpoint) -> String {
    let id = endpoint_id(sp, ep);
    format!("endpoint-{}-{id}", hash(&id))
}
fn affinity_name(sp: &ServicePort, ep: &Endpoint) -> String {
    let id = endpoint_id(sp, ep);
    format!("affinity-{}-{id}", hash(&id))
}

fn ip_proto_port(ip: Ipv4Addr, p: Protocol, port: u16) -> Vec<u8> {
    cat_bytes([key::ipv4(ip), key::proto(p.number()), key::port(port)])
}
fn proto_port(p: Protocol, port: u16) -> Vec<u8> {
    cat_bytes([key::proto(p.number()), key::port(port)])
}
fn cat_bytes<const N: usize>(parts: [Vec<u8>; N]) -> Vec<u8> {
    parts.into_iter().flatten().collect()
}

/// Rules that send a packet to one of `endpoints` (`local`: the node-local subset). With
/// ClientIP affinity: the affinity checks, then a random pick among endpoint chains (which
/// `affinity_chains` are to make); otherwise a DNAT straight from the endpoint map.
fn pick(
    sp: &ServicePort,
    endpoints: &[&Endpoint],
    local: bool,
    d: &mut Desired,
    affinity_chains: &mut BTreeSet<Endpoint>,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    if sp.affinity_seconds.is_some() {
        for ep in endpoints {
            rules.push(Rule::Exprs(cat(vec![
                rule::lookup_saddr(&affinity_name(sp, ep)),
                goto(&endpoint_chain(sp, ep)),
            ])));
        }
        let chains: Vec<String> = endpoints.iter().map(|e| endpoint_chain(sp, e)).collect();
        if chains.len() == 1 {
            rules.push(Rule::Exprs(goto(&chains[0])));
        } else {
            rules.push(Rule::Numgen(chains));
        }
        affinity_chains.extend(endpoints.iter().map(|e| (*e).clone()));
        return rules;
    }
    let proto = rule::l4proto_eq(sp.protocol.number());
    if let [ep] = endpoints {
        rules.push(Rule::Exprs(cat(vec![proto, rule::dnat(ep.ip, ep.port)])));
    } else {
        let map = endpoints_map_name(sp, local);
        let n = endpoints.len() as u32;
        d.endpoint_maps.insert(
            map.clone(),
            endpoints.iter().map(|e| (e.ip, e.port)).collect(),
        );
        rules.push(Rule::Exprs(cat(vec![
            proto,
            rule::dnat_numgen_map(&map, n),
        ])));
    }
    rules
}

/// Everything the Services, their endpoints and this node's hostPorts ask for.
pub fn desired(ports: &[ServicePort], pod_subnet: Ipv4Cidr, hostports: &[HostPort]) -> Desired {
    let mut d = Desired::default();
    for name in MAPS {
        d.maps.insert(name, BTreeMap::new());
    }
    let pods = (pod_subnet.network(), pod_subnet.prefix_len());
    let reject = || Verdict::Goto(REJECT_CHAIN.to_string());
    for sp in ports {
        d.cluster_ips.insert(sp.cluster_ip);
        let cluster = sp.cluster_endpoints();
        let local = sp.local_endpoints();
        let internal: &[&Endpoint] = if sp.internal_local { &local } else { &cluster };
        let external: &[&Endpoint] = if sp.external_local { &local } else { &cluster };
        let mut affinity_chains: BTreeSet<Endpoint> = BTreeSet::new();
        d.hairpin.extend(
            internal
                .iter()
                .chain(external.iter())
                .filter(|e| e.local)
                .map(|e| e.ip),
        );

        // Traffic to the cluster IP.
        let svc_chain = service_chain(sp);
        let cluster_key = ip_proto_port(sp.cluster_ip, sp.protocol, sp.port);
        if internal.is_empty() {
            // internalTrafficPolicy Local without a local endpoint drops, as kube-proxy.
            let verdict = if sp.internal_local && !cluster.is_empty() {
                Verdict::Drop
            } else {
                reject()
            };
            d.maps
                .entry(NO_ENDPOINT_SERVICES)
                .or_default()
                .insert(cluster_key, verdict);
        } else {
            let mut rules = vec![Rule::Exprs(cat(vec![
                rule::ip_daddr_eq(sp.cluster_ip),
                rule::l4proto_eq(sp.protocol.number()),
                rule::th_dport_eq(sp.port),
                rule::ip_saddr_in(pods.0, pods.1, true),
                jump(MARK_FOR_MASQUERADE),
            ]))];
            rules.extend(pick(
                sp,
                internal,
                sp.internal_local,
                &mut d,
                &mut affinity_chains,
            ));
            d.chains.insert(svc_chain.clone(), rules);
            d.maps
                .entry(SERVICE_IPS)
                .or_default()
                .insert(cluster_key, Verdict::Goto(svc_chain.clone()));
        }

        // Traffic to a node port, an external IP or a load balancer IP.
        let externally_reached = sp.node_port.is_some() || !sp.external_ips.is_empty();
        if externally_reached {
            let ext_chain = external_chain(sp);
            let has_cluster_chain = d.chains.contains_key(&svc_chain);
            let target: Option<Verdict> = if sp.external_local {
                // Pods and the node itself may still use any endpoint; outside clients keep
                // their source address and only reach this node's endpoints (or are dropped).
                let mut rules = Vec::new();
                if has_cluster_chain {
                    rules.push(Rule::Exprs(cat(vec![
                        rule::ip_saddr_in(pods.0, pods.1, false),
                        goto(&svc_chain),
                    ])));
                    rules.push(Rule::Exprs(cat(vec![
                        rule::fib_saddr_type_local(),
                        jump(MARK_FOR_MASQUERADE),
                    ])));
                    rules.push(Rule::Exprs(cat(vec![
                        rule::fib_saddr_type_local(),
                        goto(&svc_chain),
                    ])));
                }
                if external.is_empty() {
                    rules.push(Rule::Exprs(rule::verdict(Verdict::Drop)));
                } else {
                    rules.extend(pick(
                        sp,
                        external,
                        sp.external_local,
                        &mut d,
                        &mut affinity_chains,
                    ));
                }
                d.chains.insert(ext_chain.clone(), rules);
                Some(Verdict::Goto(ext_chain))
            } else if sp.internal_local && !cluster.is_empty() {
                // The cluster IP keeps to this node's endpoints, but outside clients may
                // reach any (kube-proxy's external chain goes to the cluster-wide policy).
                let mut rules = vec![Rule::Exprs(jump(MARK_FOR_MASQUERADE))];
                rules.extend(pick(sp, &cluster, false, &mut d, &mut affinity_chains));
                d.chains.insert(ext_chain.clone(), rules);
                Some(Verdict::Goto(ext_chain))
            } else if has_cluster_chain && !sp.internal_local {
                d.chains.insert(
                    ext_chain.clone(),
                    vec![
                        Rule::Exprs(jump(MARK_FOR_MASQUERADE)),
                        Rule::Exprs(goto(&svc_chain)),
                    ],
                );
                Some(Verdict::Goto(ext_chain))
            } else {
                None
            };
            let (map, no_map) = (SERVICE_IPS, NO_ENDPOINT_SERVICES);
            for ip in &sp.external_ips {
                let k = ip_proto_port(*ip, sp.protocol, sp.port);
                match &target {
                    Some(v) => d.maps.entry(map).or_default().insert(k, v.clone()),
                    None => d.maps.entry(no_map).or_default().insert(k, reject()),
                };
            }
            if let Some(np) = sp.node_port {
                let k = proto_port(sp.protocol, np);
                match &target {
                    Some(v) => d
                        .maps
                        .entry(SERVICE_NODEPORTS)
                        .or_default()
                        .insert(k, v.clone()),
                    None => d
                        .maps
                        .entry(NO_ENDPOINT_NODEPORTS)
                        .or_default()
                        .insert(k, reject()),
                };
            }
        }

        if let Some(seconds) = sp.affinity_seconds {
            for ep in &affinity_chains {
                let set = affinity_name(sp, ep);
                let rules = vec![
                    // The set's own timeout applies (kube-proxy's `update @set { ip saddr }`).
                    Rule::Exprs(rule::dynset_update_saddr(&set, None)),
                    Rule::Exprs(cat(vec![
                        rule::l4proto_eq(sp.protocol.number()),
                        rule::dnat(ep.ip, ep.port),
                    ])),
                ];
                d.affinity_sets.insert(set, seconds);
                d.chains.insert(endpoint_chain(sp, ep), rules);
            }
        }
    }
    let rules = hostport_rules(hostports, &mut d);
    d.chains.insert(HOSTPORTS.to_string(), rules);
    d
}

/// `hostports` jumps to one chain per mapping, which marks hairpin traffic and DNATs, as the
/// portmap CNI plugin does (only for traffic to this node's own addresses).
fn hostport_rules(hostports: &[HostPort], d: &mut Desired) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut sorted = hostports.to_vec();
    sorted.sort();
    sorted.dedup();
    for hp in sorted {
        let id = format!(
            "{}/{}/{}__{}/{}",
            hp.host_ip.map(|i| i.to_string()).unwrap_or_default(),
            hp.protocol.name(),
            hp.host_port,
            hp.pod_ip,
            hp.container_port
        );
        let chain = format!("hostport-{}-{id}", hash(&id));
        let mut m = vec![rule::fib_daddr_type_local(false)];
        if let Some(ip) = hp.host_ip {
            m.push(rule::ip_daddr_eq(ip));
        }
        m.push(rule::l4proto_eq(hp.protocol.number()));
        m.push(rule::th_dport_eq(hp.host_port));
        m.push(goto(&chain));
        rules.push(Rule::Exprs(cat(m)));
        d.chains.insert(
            chain,
            vec![
                Rule::Exprs(cat(vec![
                    rule::ip_saddr_eq(hp.pod_ip),
                    jump(MARK_FOR_MASQUERADE),
                ])),
                Rule::Exprs(cat(vec![
                    rule::l4proto_eq(hp.protocol.number()),
                    rule::dnat(hp.pod_ip, hp.container_port),
                ])),
            ],
        );
    }
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(name: &str, endpoints: Vec<Endpoint>) -> ServicePort {
        ServicePort {
            namespace: "default".into(),
            name: name.into(),
            port_name: "http".into(),
            protocol: Protocol::Tcp,
            cluster_ip: Ipv4Addr::new(10, 96, 0, 50),
            port: 80,
            node_port: None,
            external_ips: Vec::new(),
            external_local: false,
            internal_local: false,
            affinity_seconds: None,
            endpoints,
        }
    }
    fn ep(last: u8, ready: bool, local: bool) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::new(10, 244, 0, last),
            port: 8080,
            ready,
            serving: ready,
            terminating: false,
            local,
        }
    }
    fn pods() -> Ipv4Cidr {
        "10.244.0.0/16".parse().unwrap()
    }

    #[test]
    fn a_service_with_two_endpoints_dnats_from_its_endpoint_map() {
        let s = sp("web", vec![ep(5, true, true), ep(6, true, false)]);
        let d = desired(std::slice::from_ref(&s), pods(), &[]);
        let svc = service_chain(&s);
        let rules = &d.chains[&svc];
        assert_eq!(rules.len(), 2);
        let map = endpoints_map_name(&s, false);
        assert_eq!(
            rules[1],
            Rule::Exprs(cat(vec![
                rule::l4proto_eq(6),
                rule::dnat_numgen_map(&map, 2)
            ]))
        );
        assert_eq!(
            d.endpoint_maps[&map],
            vec![
                (Ipv4Addr::new(10, 244, 0, 5), 8080),
                (Ipv4Addr::new(10, 244, 0, 6), 8080)
            ]
        );
        // No chain per endpoint; only the local endpoint can hairpin here.
        assert_eq!(d.chains.len(), 2, "{:?}", d.chains.keys());
        assert_eq!(d.hairpin, BTreeSet::from([Ipv4Addr::new(10, 244, 0, 5)]));
        let key = ip_proto_port(s.cluster_ip, Protocol::Tcp, 80);
        assert_eq!(d.maps[SERVICE_IPS][&key], Verdict::Goto(svc));
        assert!(d.maps[NO_ENDPOINT_SERVICES].is_empty());
        assert!(d.cluster_ips.contains(&s.cluster_ip));
        // The hostports chain always exists, empty here.
        assert_eq!(d.chains["hostports"], Vec::<Rule>::new());
    }

    #[test]
    fn one_endpoint_is_dnatted_without_a_map_and_local_policies_get_their_own_map() {
        let s = sp("one", vec![ep(5, true, false)]);
        let d = desired(std::slice::from_ref(&s), pods(), &[]);
        assert!(d.endpoint_maps.is_empty());
        assert_eq!(
            d.chains[&service_chain(&s)][1],
            Rule::Exprs(cat(vec![
                rule::l4proto_eq(6),
                rule::dnat(Ipv4Addr::new(10, 244, 0, 5), 8080)
            ]))
        );

        let mut s = sp(
            "mixed",
            vec![ep(5, true, true), ep(6, true, true), ep(7, true, false)],
        );
        s.external_local = true;
        s.node_port = Some(30090);
        let d = desired(std::slice::from_ref(&s), pods(), &[]);
        assert_eq!(d.endpoint_maps[&endpoints_map_name(&s, false)].len(), 3);
        assert_eq!(d.endpoint_maps[&endpoints_map_name(&s, true)].len(), 2);

        // The other way round: the cluster IP keeps to local endpoints, node ports do not.
        s.external_local = false;
        s.internal_local = true;
        let d = desired(std::slice::from_ref(&s), pods(), &[]);
        assert_eq!(d.endpoint_maps[&endpoints_map_name(&s, false)].len(), 3);
        assert_eq!(d.endpoint_maps[&endpoints_map_name(&s, true)].len(), 2);
    }

    #[test]
    fn no_ready_endpoint_rejects_and_local_policies_drop() {
        let mut s = sp("empty", vec![ep(5, false, true)]);
        s.node_port = Some(30080);
        let d = desired(std::slice::from_ref(&s), pods(), &[]);
        let key = ip_proto_port(s.cluster_ip, Protocol::Tcp, 80);
        assert_eq!(
            d.maps[NO_ENDPOINT_SERVICES][&key],
            Verdict::Goto("reject-chain".into())
        );
        assert_eq!(
            d.maps[NO_ENDPOINT_NODEPORTS][&proto_port(Protocol::Tcp, 30080)],
            Verdict::Goto("reject-chain".into())
        );
        assert!(d.maps[SERVICE_IPS].is_empty());

        // Only a remote endpoint: internal Local drops; external Local goes through the
        // external chain, which lets pods and the node through and drops the rest.
        let mut s = sp("remote", vec![ep(7, true, false)]);
        s.internal_local = true;
        let d = desired(std::slice::from_ref(&s), pods(), &[]);
        assert_eq!(d.maps[NO_ENDPOINT_SERVICES][&key], Verdict::Drop);
        let mut s = sp("remote", vec![ep(7, true, false)]);
        s.external_local = true;
        s.node_port = Some(30081);
        let d = desired(std::slice::from_ref(&s), pods(), &[]);
        let Verdict::Goto(ext) = &d.maps[SERVICE_NODEPORTS][&proto_port(Protocol::Tcp, 30081)]
        else {
            panic!()
        };
        let rules = &d.chains[ext];
        assert_eq!(
            rules.last(),
            Some(&Rule::Exprs(rule::verdict(Verdict::Drop)))
        );
    }

    #[test]
    fn affinity_checks_every_endpoint_before_the_pick() {
        let mut s = sp("sticky", vec![ep(5, true, true), ep(6, true, true)]);
        s.affinity_seconds = Some(30);
        let d = desired(std::slice::from_ref(&s), pods(), &[]);
        assert_eq!(d.affinity_sets.len(), 2);
        let rules = &d.chains[&service_chain(&s)];
        // masquerade check, two affinity lookups, the pick among endpoint chains
        assert_eq!(rules.len(), 4);
        let Rule::Numgen(targets) = &rules[3] else {
            panic!("{rules:?}")
        };
        for t in targets {
            assert!(d.chains.contains_key(t), "{t}");
            assert!(t.starts_with("endpoint-"), "{t}");
        }
        assert!(d.affinity_sets.values().all(|t| *t == 30));
        assert!(d.endpoint_maps.is_empty());
    }

    #[test]
    fn hostports_get_their_own_chains() {
        let hp = HostPort {
            host_ip: None,
            host_port: 8081,
            protocol: Protocol::Tcp,
            pod_ip: Ipv4Addr::new(10, 244, 0, 9),
            container_port: 80,
        };
        let d = desired(&[], pods(), &[hp.clone(), hp]);
        assert_eq!(d.chains["hostports"].len(), 1);
        assert_eq!(d.chains.len(), 2);
    }
}
