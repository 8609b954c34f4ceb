//! What the proxy routes, read from Services and EndpointSlices: one `ServicePort` per port of
//! every Service that has a cluster IP, with the endpoints its slices list for that port.
//! ExternalName and headless Services are DNS only and have no rules.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// kube-proxy's default for `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_SECONDS: u32 = 10800;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node (its `nodeName` is ours).
    pub local: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name, or its number when it has none (chain names need something).
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    /// spec.externalIPs and status.loadBalancer.ingress IPs: reached like a NodePort.
    pub external_ips: Vec<Ipv4Addr>,
    pub external_local: bool,
    pub internal_local: bool,
    pub affinity_seconds: Option<u32>,
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// `ns/name/proto/port`: what chain names are made of.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace,
            self.name,
            self.protocol.name(),
            self.port_name
        )
    }

    /// Endpoints for traffic that may go anywhere in the cluster: the ready ones, or, when none
    /// is ready, those still serving while they terminate (kube-proxy's CategorizeEndpoints).
    pub fn cluster_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter())
    }

    /// The same choice among this node's endpoints only.
    pub fn local_endpoints(&self) -> Vec<&Endpoint> {
        usable(self.endpoints.iter().filter(|e| e.local))
    }
}

fn usable<'a>(endpoints: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<&'a Endpoint> {
    let ready: Vec<&Endpoint> = endpoints.clone().filter(|e| e.ready).collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints.filter(|e| e.serving && e.terminating).collect()
}

/// A Service the proxy had to leave out, and why (reported as a Warning event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

/// Every routable service port, sorted by id, plus the Services left out.
pub fn service_ports(
    services: &[&Service],
    slices: &[&EndpointSlice],
    node_name: &str,
) -> (Vec<ServicePort>, Vec<Skipped>) {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(slice);
    }
    let mut ports = Vec::new();
    let mut skipped = Vec::new();
    for svc in services {
        let namespace = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let slices = by_service
            .get(&(namespace.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        match ports_of(svc, slices, node_name) {
            Ok(p) => ports.extend(p),
            Err(reason) => skipped.push(Skipped {
                namespace,
                name,
                reason,
            }),
        }
    }
    ports.sort_by_key(|p| p.id());
    (ports, skipped)
}

fn ports_of(
    svc: &Service,
    slices: &[&EndpointSlice],
    node_name: &str,
) -> Result<Vec<ServicePort>, String> {
    let Some(spec) = svc.spec.as_ref() else {
        return Ok(Vec::new());
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Ok(Vec::new());
    }
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => return Ok(Vec::new()),
        Some(ip) => match ip.parse::<Ipv4Addr>() {
            Ok(ip) => ip,
            // An IPv6 cluster IP: this proxy programs IPv4 only.
            Err(_) if ip.contains(':') => return Ok(Vec::new()),
            Err(_) => return Err(format!("clusterIP {ip:?} is not an IPv4 address")),
        },
    };
    let with_node_ports = matches!(kind, "NodePort" | "LoadBalancer");
    let mut external_ips: BTreeSet<Ipv4Addr> = BTreeSet::new();
    for ip in spec.external_ips.iter().flatten() {
        if let Ok(ip) = ip.parse() {
            external_ips.insert(ip);
        }
    }
    if kind == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for i in ingress.into_iter().flatten() {
            // ipMode Proxy: the load balancer forwards to node ports itself.
            if i.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            if let Some(ip) = i.ip.as_deref().and_then(|ip| ip.parse().ok()) {
                external_ips.insert(ip);
            }
        }
    }
    let external_local = (with_node_ports || !external_ips.is_empty())
        && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let affinity_seconds = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_SECONDS)
    });
    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
            return Err(format!("port {} has an unknown protocol", port.port));
        };
        let number = u16::try_from(port.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port {} is out of range", port.port))?;
        let port_name = port
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| number.to_string());
        let node_port = if with_node_ports {
            port.node_port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
        } else {
            None
        };
        let endpoints = endpoints_for(slices, port.name.as_deref(), protocol, node_name)?;
        out.push(ServicePort {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            port_name,
            protocol,
            cluster_ip,
            port: number,
            node_port,
            external_ips: external_ips.iter().copied().collect(),
            external_local,
            internal_local,
            affinity_seconds,
            endpoints,
        });
    }
    Ok(out)
}

/// The endpoints of one service port: every slice port with the same name and protocol, each
/// address once.
fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: Option<&str>,
    protocol: Protocol,
    node_name: &str,
) -> Result<Vec<Endpoint>, String> {
    let wanted = port_name.unwrap_or("");
    let mut seen: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        let slice_name = slice.metadata.name.as_deref().unwrap_or("");
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == wanted
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(port) = port else {
            continue;
        };
        // A port without a number does not restrict anything (the API's rule); nothing to DNAT to.
        let Some(number) = port.port else { continue };
        let number = u16::try_from(number)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                format!(
                    "EndpointSlice {slice_name} has port {:?} with number {number}, out of range",
                    port.name.as_deref().unwrap_or("")
                )
            })?;
        for ep in &slice.endpoints {
            let conditions = ep.conditions.as_ref();
            // Unknown readiness counts as ready (the API's rule for a nil `ready`).
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let local = ep.node_name.as_deref() == Some(node_name);
            let Some(address) = ep.addresses.first() else {
                continue;
            };
            let ip: Ipv4Addr = address.parse().map_err(|_| {
                format!("EndpointSlice {slice_name} has an endpoint address {address:?} that is not IPv4")
            })?;
            seen.entry((ip, number)).or_insert(Endpoint {
                ip,
                port: number,
                ready,
                serving,
                terminating,
                local,
            });
        }
    }
    Ok(seen.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }
    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ports_take_their_endpoints_by_name_and_protocol() {
        let svc = service(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.20", "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                     "externalTrafficPolicy": "Local",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                               {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]}
        }));
        let a = slice(json!({
            "metadata": {"name": "web-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}, "nodeName": "me"},
                          {"addresses": ["10.244.1.5"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "other"}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353, "protocol": "UDP"}]
        }));
        // A second slice with another target port for the same name (named targetPorts resolve per pod).
        let b = slice(json!({
            "metadata": {"name": "web-b", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.2.7"]}],
            "ports": [{"name": "http", "port": 9090, "protocol": "TCP"}]
        }));
        let (ports, skipped) = service_ports(&[&svc], &[&a, &b], "me");
        assert!(skipped.is_empty());
        assert_eq!(ports.len(), 2);
        let dns = &ports[1];
        assert_eq!(dns.id(), "default/web/udp/dns");
        assert_eq!(dns.endpoints.len(), 2);
        let http = &ports[0];
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.affinity_seconds, Some(60));
        assert!(http.external_local);
        let eps: Vec<(String, u16, bool)> = http
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.port, e.local))
            .collect();
        assert_eq!(
            eps,
            [
                ("10.244.0.5".into(), 8080, true),
                ("10.244.1.5".into(), 8080, false),
                ("10.244.2.7".into(), 9090, false)
            ]
        );
        let cluster: Vec<_> = http.cluster_endpoints().iter().map(|e| e.ip).collect();
        assert_eq!(cluster.len(), 2, "ready ones only: {cluster:?}");
        assert_eq!(http.local_endpoints().len(), 1);
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let svc = service(json!({
            "metadata": {"name": "s", "namespace": "n"},
            "spec": {"clusterIP": "10.96.0.21", "ports": [{"port": 80}]}
        }));
        let s = slice(json!({
            "metadata": {"name": "s-1", "namespace": "n", "labels": {"kubernetes.io/service-name": "s"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.8"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                          {"addresses": ["10.244.0.9"], "conditions": {"ready": false, "serving": false, "terminating": true}}],
            "ports": [{"port": 80, "protocol": "TCP"}]
        }));
        let (ports, _) = service_ports(&[&svc], &[&s], "me");
        let used: Vec<String> = ports[0]
            .cluster_endpoints()
            .iter()
            .map(|e| e.ip.to_string())
            .collect();
        assert_eq!(used, ["10.244.0.8"]);
        assert_eq!(ports[0].port_name, "80");
    }

    #[test]
    fn dns_only_services_have_no_ports_and_bad_slices_skip_their_service() {
        let external = service(json!({
            "metadata": {"name": "ext", "namespace": "n"},
            "spec": {"type": "ExternalName", "externalName": "example.org"}
        }));
        let headless = service(json!({
            "metadata": {"name": "h", "namespace": "n"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        let bad = service(json!({
            "metadata": {"name": "bad", "namespace": "n"},
            "spec": {"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}
        }));
        let good = service(json!({
            "metadata": {"name": "good", "namespace": "n"},
            "spec": {"clusterIP": "10.96.0.31", "ports": [{"port": 80}]}
        }));
        let broken = slice(json!({
            "metadata": {"name": "bad-1", "namespace": "n", "labels": {"kubernetes.io/service-name": "bad"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["not-an-ip"]}],
            "ports": [{"port": 80, "protocol": "TCP"}]
        }));
        let (ports, skipped) =
            service_ports(&[&external, &headless, &bad, &good], &[&broken], "me");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].name, "good");
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].name, "bad");
        assert!(skipped[0].reason.contains("not-an-ip"), "{skipped:?}");
    }
}
