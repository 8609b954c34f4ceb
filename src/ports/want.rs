//! Which host ports a cluster's Services want. NodePort Services: the node port itself (unless
//! publishing NodePorts is turned off). LoadBalancer Services: each Service port, forwarded to
//! its node port; the controller moves it to the next free host port when it is taken.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

use crate::cluster::cidr::Ipv4Cidr;

/// The legacy annotation kube-proxy reads when `spec.loadBalancerSourceRanges` is empty.
const SOURCE_RANGES_ANNOTATION: &str = "service.beta.kubernetes.io/load-balancer-source-ranges";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    NodePort,
    LoadBalancer,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NodePort => "NodePort",
            Kind::LoadBalancer => "LoadBalancer",
        }
    }
}

/// One host port a Service wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Stable identity across passes and restarts: kind, Service, protocol and Service port.
    pub key: String,
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub protocol: Protocol,
    pub service_port: u16,
    pub node_port: u16,
    /// The host port tried first: the node port (NodePort) or the Service port (LoadBalancer).
    pub preferred: u16,
    /// A LoadBalancer port without a node port (`allocateLoadBalancerNodePorts: false`) is
    /// forwarded to the cluster IP instead, routed through a node.
    pub cluster_ip: Option<std::net::Ipv4Addr>,
    /// `loadBalancerSourceRanges` of a LoadBalancer: the only client addresses let through
    /// (empty: everyone).
    pub source_ranges: Vec<Ipv4Cidr>,
    /// `node:port` to dial instead of the node port, each connection opened with a PROXY
    /// protocol v2 header (the Service's `kcluster.dev/proxy-protocol` for this port).
    pub proxy_protocol: Option<String>,
}

impl Wanted {
    /// As the proxy's label records it (empty: none).
    pub fn proxy_protocol_label(&self) -> String {
        self.proxy_protocol.clone().unwrap_or_default()
    }

    /// The source ranges as the proxy's label records them (`a/n,b/m`).
    pub fn source_ranges_label(&self) -> String {
        join_ranges(&self.source_ranges)
    }
}

pub fn join_ranges(ranges: &[Ipv4Cidr]) -> String {
    ranges
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The `kcluster.dev/proxy-protocol` annotation: Service port → `node:port`.
fn proxy_protocol_targets(svc: &Service) -> Result<BTreeMap<u16, String>, String> {
    let Some(value) = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(super::PROXY_PROTOCOL_ANNOTATION))
    else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = part.split_once('=').and_then(|(port, target)| {
            let port: u16 = port.trim().parse().ok()?;
            let (host, target_port) = target.trim().rsplit_once(':')?;
            let valid_host = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            (valid_host && target_port.parse::<u16>().is_ok_and(|p| p != 0))
                .then(|| (port, target.trim().to_string()))
        });
        let Some((port, target)) = parsed else {
            return Err(format!(
                "{}: {part:?} is not <service port>=<node>:<port>; the host ports forward to the node ports without a PROXY header",
                super::PROXY_PROTOCOL_ANNOTATION
            ));
        };
        out.insert(port, target);
    }
    Ok(out)
}

/// A LoadBalancer's source ranges (the field, else the legacy annotation), normalized and
/// sorted. As Kubernetes, `1.2.3.4/8` means `1.0.0.0/8`. An IPv6 range cannot be honoured on
/// an IPv4-only host port: an error, so that the port stays closed rather than wide open.
fn source_ranges(svc: &Service) -> Result<Vec<Ipv4Cidr>, String> {
    let from_spec = svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_source_ranges.clone())
        .unwrap_or_default();
    let raw: Vec<String> = if from_spec.is_empty() {
        svc.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SOURCE_RANGES_ANNOTATION))
            .map(|v| {
                v.split(',')
                    .map(|r| r.trim().to_string())
                    .filter(|r| !r.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    } else {
        from_spec
    };
    let mut out = Vec::new();
    for r in raw {
        let parsed = r.split_once('/').and_then(|(ip, len)| {
            let ip: std::net::Ipv4Addr = ip.trim().parse().ok()?;
            let len: u8 = len.trim().parse().ok().filter(|l| *l <= 32)?;
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            Ipv4Cidr::new(std::net::Ipv4Addr::from(u32::from(ip) & mask), len).ok()
        });
        match parsed {
            Some(c) => out.push(c),
            None => {
                return Err(format!(
                    "loadBalancerSourceRanges entry {r:?} is not an IPv4 CIDR (a.b.c.d/n); the \
                     Service's host ports stay closed until it is"
                ));
            }
        }
    }
    out.sort_by_key(|c| (u32::from(c.network()), c.prefix_len()));
    out.dedup();
    Ok(out)
}

/// A Service port that cannot be published, with the reason for a Warning event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub namespace: String,
    pub name: String,
    pub reason: &'static str,
    pub message: String,
}

/// Every wanted host port, oldest Service first, so when two Services want one host port the
/// older keeps it whatever order the watch delivered them in.
pub fn wanted(services: &[Service], publish_node_ports: bool) -> (Vec<Wanted>, Vec<Problem>) {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| {
        let created = |s: &Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
        created(a)
            .cmp(&created(b))
            .then_with(|| a.metadata.namespace.cmp(&b.metadata.namespace))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for svc in sorted {
        let (Some(namespace), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        if svc.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let kind = match spec.type_.as_deref() {
            Some("NodePort") if publish_node_ports => Kind::NodePort,
            Some("LoadBalancer") => Kind::LoadBalancer,
            _ => continue,
        };
        // Source ranges restrict a load balancer's address, not node ports (as kube-proxy).
        let ranges = match kind {
            Kind::LoadBalancer => match source_ranges(svc) {
                Ok(r) => r,
                Err(message) => {
                    problems.push(Problem {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        reason: "InvalidSourceRange",
                        message,
                    });
                    continue;
                }
            },
            Kind::NodePort => Vec::new(),
        };
        let proxied = match proxy_protocol_targets(svc) {
            Ok(t) => t,
            Err(message) => {
                problems.push(Problem {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    reason: "InvalidProxyProtocol",
                    message,
                });
                BTreeMap::new()
            }
        };
        for port in spec.ports.iter().flatten() {
            let proto_name = port.protocol.as_deref().unwrap_or("TCP");
            let problem = |reason, message| Problem {
                namespace: namespace.to_string(),
                name: name.to_string(),
                reason,
                message,
            };
            let Some(protocol) = Protocol::parse(proto_name) else {
                problems.push(problem(
                    "UnsupportedProtocol",
                    format!(
                        "port {}/{proto_name} is not published on the host: only TCP and UDP are forwarded",
                        port.port
                    ),
                ));
                continue;
            };
            let node_port = port
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0);
            let cluster_ip = spec
                .cluster_ip
                .as_deref()
                .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok());
            let (node_port, cluster_ip) = match (node_port, cluster_ip) {
                (Some(node_port), _) => (node_port, None),
                (None, Some(ip)) if kind == Kind::LoadBalancer => (0, Some(ip)),
                _ => {
                    problems.push(problem(
                        "NoNodePort",
                        format!(
                            "port {}/{proto_name} has neither a node port nor an IPv4 cluster IP to forward the host port to",
                            port.port
                        ),
                    ));
                    continue;
                }
            };
            let Ok(service_port) = u16::try_from(port.port) else {
                continue;
            };
            let preferred = match kind {
                Kind::NodePort => node_port,
                Kind::LoadBalancer => service_port,
            };
            out.push(Wanted {
                key: format!(
                    "{}/{namespace}/{name}/{}/{service_port}",
                    kind.as_str(),
                    protocol.as_str()
                ),
                kind,
                namespace: namespace.to_string(),
                name: name.to_string(),
                protocol,
                service_port,
                node_port,
                preferred,
                cluster_ip,
                source_ranges: ranges.clone(),
                proxy_protocol: proxied.get(&service_port).cloned(),
            });
        }
    }
    (out, problems)
}

/// A PROXY protocol target must be one of the cluster's nodes: a Service may not make the
/// publisher dial anything else on the Docker network. Others are dropped (the port forwards
/// to its node port as usual) with a problem to report.
pub fn only_to_nodes(wanted: &mut [Wanted], nodes: &[String]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for w in wanted.iter_mut() {
        let Some(target) = &w.proxy_protocol else {
            continue;
        };
        let host = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
        if !nodes.iter().any(|n| n == host) {
            problems.push(Problem {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                reason: "InvalidProxyProtocol",
                message: format!(
                    "{}: {host:?} is not a node of this cluster; port {} forwards to its node port without a PROXY header",
                    super::PROXY_PROTOCOL_ANNOTATION,
                    w.service_port
                ),
            });
            w.proxy_protocol = None;
        }
    }
    problems
}

/// Host ports to try, in order: the preferred one, then for a LoadBalancer the next ones up
/// (skipping those this cluster's own proxies hold). A NodePort keeps its number or nothing,
/// since users reach it by the number kubectl shows.
pub fn candidates(want: &Wanted, held: &dyn Fn(u16) -> bool) -> Vec<u16> {
    let tries: u32 = match want.kind {
        Kind::NodePort => 1,
        Kind::LoadBalancer => 64,
    };
    (u32::from(want.preferred)..=65535)
        .take(tries as usize)
        .filter_map(|p| u16::try_from(p).ok())
        .filter(|p| !held(*p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, type_: &str, ports: serde_json::Value, created: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": {"type": type_, "ports": ports},
        }))
        .expect("a valid Service")
    }

    #[test]
    fn node_port_and_load_balancer_ports() {
        let services = vec![
            svc(
                "lb",
                "LoadBalancer",
                serde_json::json!([{"port": 8080, "nodePort": 31000}, {"port": 53, "protocol": "UDP", "nodePort": 31001}]),
                "2026-01-01T00:00:02Z",
            ),
            svc(
                "np",
                "NodePort",
                serde_json::json!([{"port": 80, "nodePort": 30080}]),
                "2026-01-01T00:00:01Z",
            ),
            svc(
                "ip",
                "ClusterIP",
                serde_json::json!([{"port": 80}]),
                "2026-01-01T00:00:00Z",
            ),
        ];
        let (wanted, problems) = wanted(&services, true);
        assert!(problems.is_empty());
        let got: Vec<(&str, u16, u16, Protocol)> = wanted
            .iter()
            .map(|w| (w.key.as_str(), w.preferred, w.node_port, w.protocol))
            .collect();
        assert_eq!(
            got,
            vec![
                ("NodePort/default/np/TCP/80", 30080, 30080, Protocol::Tcp),
                (
                    "LoadBalancer/default/lb/TCP/8080",
                    8080,
                    31000,
                    Protocol::Tcp
                ),
                ("LoadBalancer/default/lb/UDP/53", 53, 31001, Protocol::Udp),
            ]
        );
        let (only_lb, _) = super::wanted(&services, false);
        assert!(only_lb.iter().all(|w| w.kind == Kind::LoadBalancer));
        assert_eq!(only_lb.len(), 2);
    }

    #[test]
    fn a_load_balancer_without_node_ports_goes_to_its_cluster_ip() {
        let mut lb = svc(
            "lb",
            "LoadBalancer",
            serde_json::json!([{"port": 80}]),
            "2026-01-01T00:00:00Z",
        );
        if let Some(spec) = lb.spec.as_mut() {
            spec.cluster_ip = Some("10.96.0.20".into());
            spec.allocate_load_balancer_node_ports = Some(false);
        }
        let (wanted, problems) = wanted(&[lb], true);
        assert!(problems.is_empty());
        assert_eq!(
            wanted[0].cluster_ip,
            Some(std::net::Ipv4Addr::new(10, 96, 0, 20))
        );
        assert_eq!((wanted[0].node_port, wanted[0].preferred), (0, 80));
    }

    #[test]
    fn ports_that_cannot_be_published_are_problems() {
        let services = vec![svc(
            "lb",
            "LoadBalancer",
            serde_json::json!([{"port": 80}, {"port": 81, "protocol": "SCTP", "nodePort": 30001}]),
            "2026-01-01T00:00:00Z",
        )];
        let (wanted, problems) = wanted(&services, true);
        assert!(wanted.is_empty());
        let reasons: Vec<&str> = problems.iter().map(|p| p.reason).collect();
        assert_eq!(reasons, vec!["NoNodePort", "UnsupportedProtocol"]);
    }

    #[test]
    fn source_ranges_come_from_the_field_or_the_annotation_and_bad_ones_close_the_port() {
        let mut lb = svc(
            "lb",
            "LoadBalancer",
            serde_json::json!([{"port": 80, "nodePort": 30001}]),
            "2026-01-01T00:00:00Z",
        );
        if let Some(spec) = lb.spec.as_mut() {
            spec.load_balancer_source_ranges =
                Some(vec!["192.168.7.9/16".into(), "127.0.0.1/32".into()]);
        }
        let (wanted, problems) = wanted(std::slice::from_ref(&lb), true);
        assert!(problems.is_empty());
        assert_eq!(
            wanted[0].source_ranges_label(),
            "127.0.0.1/32,192.168.0.0/16"
        );

        if let Some(spec) = lb.spec.as_mut() {
            spec.load_balancer_source_ranges = None;
        }
        lb.metadata.annotations = Some(
            [(
                SOURCE_RANGES_ANNOTATION.to_string(),
                "10.0.0.0/8, 172.16.0.0/12".to_string(),
            )]
            .into(),
        );
        let (wanted, _) = super::wanted(std::slice::from_ref(&lb), true);
        assert_eq!(wanted[0].source_ranges_label(), "10.0.0.0/8,172.16.0.0/12");

        if let Some(spec) = lb.spec.as_mut() {
            spec.load_balancer_source_ranges = Some(vec!["fd00::/8".into()]);
        }
        let (wanted, problems) = super::wanted(std::slice::from_ref(&lb), true);
        assert!(wanted.is_empty());
        assert_eq!(problems[0].reason, "InvalidSourceRange");

        // A NodePort Service's node port is not a load balancer address: no ranges apply.
        let mut np = lb.clone();
        if let Some(spec) = np.spec.as_mut() {
            spec.type_ = Some("NodePort".into());
        }
        let (wanted, problems) = super::wanted(&[np], true);
        assert!(problems.is_empty());
        assert!(wanted[0].source_ranges.is_empty());
    }

    #[test]
    fn load_balancers_move_up_node_ports_do_not() {
        let (wanted, _) = wanted(
            &[
                svc(
                    "lb",
                    "LoadBalancer",
                    serde_json::json!([{"port": 8080, "nodePort": 31000}]),
                    "2026-01-01T00:00:00Z",
                ),
                svc(
                    "np",
                    "NodePort",
                    serde_json::json!([{"port": 80, "nodePort": 30080}]),
                    "2026-01-01T00:00:01Z",
                ),
            ],
            true,
        );
        let lb = candidates(&wanted[0], &|p| p == 8081);
        assert_eq!(&lb[..3], &[8080, 8082, 8083]);
        assert_eq!(candidates(&wanted[1], &|_| false), vec![30080]);
        assert!(candidates(&wanted[1], &|p| p == 30080).is_empty());
    }

    #[test]
    fn proxy_protocol_targets_only_nodes() {
        let mut lb = svc(
            "ingress",
            "LoadBalancer",
            serde_json::json!([{"port": 80, "nodePort": 31080}, {"port": 443, "nodePort": 31443}]),
            "2026-01-01T00:00:01Z",
        );
        lb.metadata.annotations = Some(
            [(
                crate::ports::PROXY_PROTOCOL_ANNOTATION.to_string(),
                "80=c-server-0:10080, 443=elsewhere:10443".to_string(),
            )]
            .into(),
        );
        let (mut w, problems) = wanted(std::slice::from_ref(&lb), true);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(w[0].proxy_protocol.as_deref(), Some("c-server-0:10080"));
        assert_eq!(w[1].proxy_protocol.as_deref(), Some("elsewhere:10443"));
        let problems = only_to_nodes(&mut w, &["c-server-0".to_string()]);
        assert_eq!(w[0].proxy_protocol_label(), "c-server-0:10080");
        assert_eq!(w[1].proxy_protocol, None);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("\"elsewhere\" is not a node"));

        for bad in ["80", "80=host", "80=host:0", "x=host:1", "80=ho st:1"] {
            lb.metadata.annotations = Some(
                [(
                    crate::ports::PROXY_PROTOCOL_ANNOTATION.to_string(),
                    bad.to_string(),
                )]
                .into(),
            );
            let (w, problems) = wanted(std::slice::from_ref(&lb), true);
            assert_eq!(w.len(), 2, "{bad}: the ports are still published");
            assert!(w.iter().all(|w| w.proxy_protocol.is_none()), "{bad}");
            assert_eq!(problems[0].reason, "InvalidProxyProtocol", "{bad}");
        }
    }
}
