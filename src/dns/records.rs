//! The cluster zone: an immutable snapshot built from Services and EndpointSlices, and the
//! answer to one question about a name in it, by the Kubernetes DNS specification (schema
//! 1.1.0) with CoreDNS's choices where the specification leaves room (dashed-IP names for
//! endpoints without a hostname, `pods insecure`, PTR records for ClusterIPs and endpoints).
//!
//! Names are compared lowercased; answers carry the question's name as the client spelled it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// TTL of every positive answer from the cluster zone (kubeadm's Corefile: `ttl 30`).
pub const TTL: u32 = 30;
/// TTL and minimum of the SOA that negative answers carry.
pub const NEGATIVE_TTL: u32 = 5;
/// The schema version `dns-version.<zone>` answers.
pub const SCHEMA_VERSION: &str = "1.1.0";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a Service contributes to DNS (the parts of the object the zone needs).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    pub namespace: String,
    pub name: String,
    pub kind: ServiceKind,
    pub ports: Vec<PortInfo>,
    pub publish_not_ready: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ServiceKind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(String),
}

/// A port; `name` and `protocol` lowercased (`protocol` is tcp, udp or sctp).
#[derive(Debug, Clone, PartialEq)]
pub struct PortInfo {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

/// What an EndpointSlice contributes: its service, ports and endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceInfo {
    pub namespace: String,
    pub service: String,
    pub ports: Arc<Vec<PortInfo>>,
    pub endpoints: Vec<EndpointInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointInfo {
    pub addresses: Vec<IpAddr>,
    pub hostname: Option<String>,
    /// `conditions.ready` (unset means ready) and `conditions.serving` (unset: as ready).
    pub ready: bool,
    pub serving: bool,
}

fn lower_protocol(p: Option<&str>) -> String {
    p.unwrap_or("TCP").to_ascii_lowercase()
}

impl ServiceInfo {
    pub fn from_service(svc: &Service) -> Option<ServiceInfo> {
        let namespace = svc.metadata.namespace.clone()?.to_ascii_lowercase();
        let name = svc.metadata.name.clone()?.to_ascii_lowercase();
        let spec = svc.spec.as_ref()?;
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.clone().unwrap_or_default();
            let target = target.trim_end_matches('.').to_string();
            if target.is_empty() {
                return None;
            }
            ServiceKind::ExternalName(target)
        } else if spec.cluster_ip.as_deref() == Some("None") {
            ServiceKind::Headless
        } else {
            let mut ips: Vec<IpAddr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .filter_map(|ip| ip.parse().ok())
                .collect();
            if ips.is_empty() {
                ips.extend(
                    spec.cluster_ip
                        .as_deref()
                        .and_then(|ip| ip.parse::<IpAddr>().ok()),
                );
            }
            if ips.is_empty() {
                // Not allocated yet: no records until it is.
                return None;
            }
            ServiceKind::ClusterIp(ips)
        };
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortInfo {
                    name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                    protocol: lower_protocol(p.protocol.as_deref()),
                    port: u16::try_from(p.port).ok()?,
                })
            })
            .collect();
        Some(ServiceInfo {
            namespace,
            name,
            kind,
            ports,
            publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
        })
    }
}

impl SliceInfo {
    pub fn from_slice(slice: &EndpointSlice) -> Option<SliceInfo> {
        let namespace = slice.metadata.namespace.clone()?.to_ascii_lowercase();
        let service = slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .to_ascii_lowercase();
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            return None;
        }
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortInfo {
                    name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                    protocol: lower_protocol(p.protocol.as_deref()),
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .map(|e| {
                let conditions = e.conditions.as_ref();
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
                EndpointInfo {
                    addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                    hostname: e
                        .hostname
                        .as_ref()
                        .filter(|h| !h.is_empty())
                        .map(|h| h.to_ascii_lowercase()),
                    ready,
                    serving,
                }
            })
            .collect();
        Some(SliceInfo {
            namespace,
            service,
            ports: Arc::new(ports),
            endpoints,
        })
    }
}

/// One address of a service's endpoints, under its label (hostname or dashed IP).
#[derive(Debug, Clone)]
struct Endpoint {
    ip: IpAddr,
    label: String,
    ports: Arc<Vec<PortInfo>>,
}

#[derive(Debug)]
struct ZoneService {
    info: ServiceInfo,
    endpoints: Vec<Endpoint>,
}

/// The dashed form of an address, as CoreDNS names endpoints without a hostname.
pub fn dashed(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The answer to one question from the zone.
#[derive(Debug, Default)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// Negative answer: the zone's SOA goes in the authority section.
    pub soa: bool,
    /// An ExternalName's target, to be resolved (same type) and its records appended.
    pub chase: Option<Name>,
}

/// What to do with a question.
#[derive(Debug)]
pub enum Outcome {
    Answer(Answer),
    /// Not a name of ours: ask the upstreams.
    Forward,
    /// Ours, but the zone has not been listed yet.
    NotReady,
}

/// The cluster zone at one moment.
#[derive(Debug)]
pub struct Zone {
    /// The cluster domain's labels, lowercased, e.g. ["cluster", "local"].
    domain: Vec<String>,
    domain_name: Name,
    /// namespace → name → service.
    services: HashMap<String, HashMap<String, ZoneService>>,
    /// Address → the names that point back at it (fully qualified, lowercased).
    ptr: HashMap<IpAddr, Vec<String>>,
    synced: bool,
}

/// A name lowercased as dot-separated text in one allocation. Bytes that no name of ours can
/// hold (a dot inside a label, non-ASCII) become NUL, so such names match nothing.
fn lowered(name: &Name) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        for b in label {
            out.push(if b.is_ascii() && *b != b'.' {
                char::from(b.to_ascii_lowercase())
            } else {
                '\0'
            });
        }
    }
    out
}

fn fqdn(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s).ok()?;
    n.set_fqdn(true);
    Some(n)
}

fn address_record(name: Name, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, TTL, data)
}

fn family_matches(qtype: RecordType, ip: &IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

fn nodata() -> Outcome {
    Outcome::Answer(Answer {
        soa: true,
        ..Answer::default()
    })
}

fn nxdomain() -> Outcome {
    Outcome::Answer(Answer {
        rcode: ResponseCode::NXDomain,
        soa: true,
        ..Answer::default()
    })
}

fn answers(answers: Vec<Record>, additionals: Vec<Record>) -> Outcome {
    if answers.is_empty() {
        return nodata();
    }
    Outcome::Answer(Answer {
        answers,
        additionals,
        ..Answer::default()
    })
}

impl Zone {
    /// An empty zone that answers SERVFAIL for its names until the first full list.
    pub fn unsynced(domain: &str) -> Zone {
        let mut zone = Zone::build(domain, std::iter::empty(), std::iter::empty());
        zone.synced = false;
        zone
    }

    pub fn build<'a>(
        domain: &str,
        services: impl Iterator<Item = &'a ServiceInfo>,
        slices: impl Iterator<Item = &'a SliceInfo>,
    ) -> Zone {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let domain_labels: Vec<String> = domain.split('.').map(str::to_string).collect();
        let domain_name = fqdn(&domain).unwrap_or_else(Name::root);
        let mut zone_services: HashMap<String, HashMap<String, ZoneService>> = HashMap::new();
        for info in services {
            zone_services
                .entry(info.namespace.clone())
                .or_default()
                .insert(
                    info.name.clone(),
                    ZoneService {
                        info: info.clone(),
                        endpoints: Vec::new(),
                    },
                );
        }
        for slice in slices {
            let Some(service) = zone_services
                .get_mut(&slice.namespace)
                .and_then(|names| names.get_mut(&slice.service))
            else {
                continue;
            };
            let publish = service.info.publish_not_ready;
            for endpoint in &slice.endpoints {
                if !(endpoint.ready || (publish && endpoint.serving)) {
                    continue;
                }
                for ip in &endpoint.addresses {
                    if service.endpoints.iter().any(|e| e.ip == *ip) {
                        continue;
                    }
                    service.endpoints.push(Endpoint {
                        ip: *ip,
                        label: endpoint.hostname.clone().unwrap_or_else(|| dashed(ip)),
                        ports: slice.ports.clone(),
                    });
                }
            }
        }
        let mut ptr: HashMap<IpAddr, Vec<String>> = HashMap::new();
        for service in zone_services
            .values_mut()
            .flat_map(|names| names.values_mut())
        {
            let key = format!("{}.{}", service.info.name, service.info.namespace);
            service.endpoints.sort_by_key(|e| e.ip);
            if let ServiceKind::ClusterIp(ips) = &service.info.kind {
                for ip in ips {
                    ptr.entry(*ip)
                        .or_default()
                        .push(format!("{key}.svc.{domain}."));
                }
            }
            if service.info.kind == ServiceKind::Headless {
                for e in &service.endpoints {
                    ptr.entry(e.ip)
                        .or_default()
                        .push(format!("{}.{key}.svc.{domain}.", e.label));
                }
            }
        }
        for names in ptr.values_mut() {
            names.sort();
        }
        Zone {
            domain: domain_labels,
            domain_name,
            services: zone_services,
            ptr,
            synced: true,
        }
    }

    /// The zone's SOA record (negative answers carry it in the authority section).
    pub fn soa(&self) -> Record {
        let mname = Name::from_ascii("ns.dns")
            .ok()
            .and_then(|n| n.append_domain(&self.domain_name).ok())
            .unwrap_or_else(|| self.domain_name.clone());
        let rname = Name::from_ascii("hostmaster")
            .ok()
            .and_then(|n| n.append_domain(&self.domain_name).ok())
            .unwrap_or_else(|| self.domain_name.clone());
        let soa = SOA::new(mname, rname, 1, 7200, 1800, 86400, NEGATIVE_TTL);
        Record::from_rdata(self.domain_name.clone(), NEGATIVE_TTL, RData::SOA(soa))
    }

    /// The answer to (`qname`, `qtype`) in class IN.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Outcome {
        if qname.is_root() {
            return Outcome::Forward;
        }
        let text = lowered(qname);
        let labels: Vec<&str> = text.split('.').collect();
        let n = labels.len();
        if n >= 2 && labels[n - 1] == "arpa" {
            return self.reverse(&labels, qname, qtype);
        }
        let d = self.domain.len();
        if n < d || labels[n - d..] != self.domain[..] {
            return Outcome::Forward;
        }
        if !self.synced {
            return Outcome::NotReady;
        }
        // Labels under the zone, nearest the zone first.
        let rest: Vec<&str> = labels[..n - d].iter().rev().copied().collect();
        match rest.as_slice() {
            [] => match qtype {
                RecordType::SOA => answers(vec![self.soa_at(qname)], Vec::new()),
                _ => nodata(),
            },
            ["dns-version"] => match qtype {
                RecordType::TXT | RecordType::ANY => answers(
                    vec![Record::from_rdata(
                        qname.clone(),
                        TTL,
                        RData::TXT(TXT::new(vec![SCHEMA_VERSION.to_string()])),
                    )],
                    Vec::new(),
                ),
                _ => nodata(),
            },
            ["svc"] | ["pod"] => nodata(),
            ["svc", ns] | ["pod", ns] => {
                if self.services.contains_key(*ns) {
                    nodata()
                } else {
                    nxdomain()
                }
            }
            ["pod", _ns, ip] => self.pod(qname, qtype, ip),
            ["svc", ns, svc] => self.service(qname, qtype, ns, svc),
            ["svc", ns, svc, first] => self.below_service(qname, qtype, ns, svc, first),
            ["svc", ns, svc, proto, port] => self.srv(qname, qtype, ns, svc, proto, port),
            _ => nxdomain(),
        }
    }

    fn soa_at(&self, qname: &Name) -> Record {
        let mut soa = self.soa();
        soa.name = qname.clone();
        soa
    }

    fn get(&self, ns: &str, svc: &str) -> Option<&ZoneService> {
        self.services.get(ns)?.get(svc)
    }

    fn service_fqdn(&self, ns: &str, svc: &str) -> Option<Name> {
        fqdn(&format!("{svc}.{ns}.svc.{}", self.domain.join(".")))
    }

    fn pod(&self, qname: &Name, qtype: RecordType, label: &str) -> Outcome {
        let ip = if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
            IpAddr::V4(v4)
        } else if let Ok(v6) = label.replace('-', ":").parse::<Ipv6Addr>() {
            IpAddr::V6(v6)
        } else {
            return nxdomain();
        };
        if family_matches(qtype, &ip) {
            answers(vec![address_record(qname.clone(), ip)], Vec::new())
        } else {
            nodata()
        }
    }

    fn service(&self, qname: &Name, qtype: RecordType, ns: &str, svc: &str) -> Outcome {
        let Some(service) = self.get(ns, svc) else {
            return nxdomain();
        };
        match &service.info.kind {
            ServiceKind::ExternalName(target) => {
                let Some(target) = fqdn(target) else {
                    return nxdomain();
                };
                let cname =
                    Record::from_rdata(qname.clone(), TTL, RData::CNAME(CNAME(target.clone())));
                let chase = (qtype != RecordType::CNAME).then_some(target);
                Outcome::Answer(Answer {
                    answers: vec![cname],
                    chase,
                    ..Answer::default()
                })
            }
            ServiceKind::ClusterIp(ips) => match qtype {
                RecordType::SRV => self.srv_records(service, ns, svc, qname, None, None),
                _ => answers(
                    ips.iter()
                        .filter(|ip| family_matches(qtype, ip))
                        .map(|ip| address_record(qname.clone(), *ip))
                        .collect(),
                    Vec::new(),
                ),
            },
            ServiceKind::Headless => {
                if service.endpoints.is_empty() {
                    return nxdomain();
                }
                match qtype {
                    RecordType::SRV => self.srv_records(service, ns, svc, qname, None, None),
                    _ => answers(
                        service
                            .endpoints
                            .iter()
                            .filter(|e| family_matches(qtype, &e.ip))
                            .map(|e| address_record(qname.clone(), e.ip))
                            .collect(),
                        Vec::new(),
                    ),
                }
            }
        }
    }

    /// `<first>.<svc>.<ns>.svc.<zone>`: an endpoint's name, or `_<proto>` above SRV names.
    fn below_service(
        &self,
        qname: &Name,
        qtype: RecordType,
        ns: &str,
        svc: &str,
        first: &str,
    ) -> Outcome {
        let Some(service) = self.get(ns, svc) else {
            return nxdomain();
        };
        if let Some(proto) = first.strip_prefix('_') {
            // An empty non-terminal when some named port has this protocol.
            let exists = match service.info.kind {
                ServiceKind::Headless => service.endpoints.iter().any(|e| {
                    e.ports
                        .iter()
                        .any(|p| !p.name.is_empty() && p.protocol == proto)
                }),
                _ => service
                    .info
                    .ports
                    .iter()
                    .any(|p| !p.name.is_empty() && p.protocol == proto),
            };
            return if exists { nodata() } else { nxdomain() };
        }
        let matching: Vec<&Endpoint> = service
            .endpoints
            .iter()
            .filter(|e| e.label == first)
            .collect();
        if matching.is_empty() {
            return nxdomain();
        }
        answers(
            matching
                .iter()
                .filter(|e| family_matches(qtype, &e.ip))
                .map(|e| address_record(qname.clone(), e.ip))
                .collect(),
            Vec::new(),
        )
    }

    fn srv(
        &self,
        qname: &Name,
        qtype: RecordType,
        ns: &str,
        svc: &str,
        proto: &str,
        port: &str,
    ) -> Outcome {
        let (Some(proto), Some(port)) = (proto.strip_prefix('_'), port.strip_prefix('_')) else {
            return nxdomain();
        };
        let Some(service) = self.get(ns, svc) else {
            return nxdomain();
        };
        match self.srv_records(service, ns, svc, qname, Some(proto), Some(port)) {
            // The name exists (it has SRV records): other types get no data.
            Outcome::Answer(a) if !a.answers.is_empty() && qtype != RecordType::SRV => {
                if qtype == RecordType::ANY {
                    Outcome::Answer(a)
                } else {
                    nodata()
                }
            }
            Outcome::Answer(a) if a.answers.is_empty() => nxdomain(),
            other => other,
        }
    }

    /// SRV records of a service: for the named port `port`/`proto` when given, else every port.
    fn srv_records(
        &self,
        service: &ZoneService,
        ns: &str,
        svc: &str,
        qname: &Name,
        proto: Option<&str>,
        port: Option<&str>,
    ) -> Outcome {
        let wanted = |p: &PortInfo| match (proto, port) {
            (Some(proto), Some(port)) => {
                !p.name.is_empty() && p.name == port && p.protocol == proto
            }
            _ => true,
        };
        let Some(service_name) = self.service_fqdn(ns, svc) else {
            return nxdomain();
        };
        // (port, target, target's address)
        let mut found: Vec<(u16, Name, Option<IpAddr>)> = Vec::new();
        match &service.info.kind {
            ServiceKind::ClusterIp(_) => {
                for p in service.info.ports.iter().filter(|p| wanted(p)) {
                    found.push((p.port, service_name.clone(), None));
                }
            }
            ServiceKind::ExternalName(target) => {
                if let Some(target) = fqdn(target) {
                    for p in service.info.ports.iter().filter(|p| wanted(p)) {
                        found.push((p.port, target.clone(), None));
                    }
                }
            }
            ServiceKind::Headless => {
                for e in &service.endpoints {
                    for p in e.ports.iter().filter(|p| wanted(p)) {
                        let Ok(target) =
                            Name::from_ascii(&e.label).and_then(|l| l.append_domain(&service_name))
                        else {
                            continue;
                        };
                        found.push((p.port, target, Some(e.ip)));
                    }
                }
            }
        }
        if found.is_empty() {
            return nodata();
        }
        let weight = (100 / found.len()).max(1) as u16;
        let mut additionals = Vec::new();
        if let ServiceKind::ClusterIp(ips) = &service.info.kind {
            for ip in ips {
                additionals.push(address_record(service_name.clone(), *ip));
            }
        }
        let mut records = Vec::with_capacity(found.len());
        for (port, target, ip) in found {
            if let Some(ip) = ip
                && !additionals
                    .iter()
                    .any(|r: &Record| r.name == target && record_ip(r) == Some(ip))
            {
                additionals.push(address_record(target.clone(), ip));
            }
            records.push(Record::from_rdata(
                qname.clone(),
                TTL,
                RData::SRV(SRV::new(0, weight, port, target)),
            ));
        }
        answers(records, additionals)
    }

    /// `d.c.b.a.in-addr.arpa` and nibble `ip6.arpa` names: ours when the address is a
    /// ClusterIP or a headless endpoint, otherwise forwarded.
    fn reverse(&self, labels: &[&str], qname: &Name, qtype: RecordType) -> Outcome {
        let Some(ip) = arpa_address(labels) else {
            return Outcome::Forward;
        };
        let Some(names) = self.ptr.get(&ip) else {
            return Outcome::Forward;
        };
        if qtype != RecordType::PTR && qtype != RecordType::ANY {
            return nodata();
        }
        answers(
            names
                .iter()
                .filter_map(|n| fqdn(n))
                .map(|target| Record::from_rdata(qname.clone(), TTL, RData::PTR(PTR(target))))
                .collect(),
            Vec::new(),
        )
    }
}

fn record_ip(r: &Record) -> Option<IpAddr> {
    match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// The address a full reverse name stands for (labels lowercased, root excluded).
fn arpa_address(labels: &[&str]) -> Option<IpAddr> {
    let n = labels.len();
    if n == 6 && labels[4] == "in-addr" && labels[5] == "arpa" {
        let mut octets = [0u8; 4];
        for (i, label) in labels[..4].iter().enumerate() {
            if label.is_empty() || (label.len() > 1 && label.starts_with('0')) {
                return None;
            }
            octets[3 - i] = label.parse().ok()?;
        }
        return Some(IpAddr::from(octets));
    }
    if n == 34 && labels[32] == "ip6" && labels[33] == "arpa" {
        let mut value: u128 = 0;
        for label in labels[..32].iter().rev() {
            if label.len() != 1 {
                return None;
            }
            value = (value << 4) | u128::from(u8::from_str_radix(label, 16).ok()?);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}

/// The class a cluster answer is in.
pub fn class_is_ours(class: DNSClass) -> bool {
    class == DNSClass::IN || class == DNSClass::ANY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, kind: ServiceKind, ports: &[(&str, &str, u16)]) -> ServiceInfo {
        ServiceInfo {
            namespace: ns.into(),
            name: name.into(),
            kind,
            ports: ports
                .iter()
                .map(|(n, p, port)| PortInfo {
                    name: n.to_string(),
                    protocol: p.to_string(),
                    port: *port,
                })
                .collect(),
            publish_not_ready: false,
        }
    }

    fn ep(ip: &str, hostname: Option<&str>, ready: bool) -> EndpointInfo {
        EndpointInfo {
            addresses: vec![ip.parse().unwrap()],
            hostname: hostname.map(str::to_string),
            ready,
            serving: ready,
        }
    }

    fn slice(
        ns: &str,
        service: &str,
        ports: &[(&str, &str, u16)],
        eps: Vec<EndpointInfo>,
    ) -> SliceInfo {
        SliceInfo {
            namespace: ns.into(),
            service: service.into(),
            ports: Arc::new(
                ports
                    .iter()
                    .map(|(n, p, port)| PortInfo {
                        name: n.to_string(),
                        protocol: p.to_string(),
                        port: *port,
                    })
                    .collect(),
            ),
            endpoints: eps,
        }
    }

    fn zone() -> Zone {
        let mut quiet = svc("default", "quiet", ServiceKind::Headless, &[]);
        quiet.publish_not_ready = true;
        let services = [
            svc(
                "default",
                "web",
                ServiceKind::ClusterIp(vec!["10.96.0.20".parse().unwrap()]),
                &[("http", "tcp", 80), ("", "tcp", 8080)],
            ),
            svc(
                "default",
                "nginx",
                ServiceKind::Headless,
                &[("web", "tcp", 80)],
            ),
            svc("default", "empty", ServiceKind::Headless, &[]),
            svc(
                "default",
                "ext",
                ServiceKind::ExternalName("example.org".into()),
                &[],
            ),
            svc(
                "default",
                "alias",
                ServiceKind::ExternalName("web.default.svc.cluster.local".into()),
                &[],
            ),
            quiet,
            svc(
                "other",
                "db",
                ServiceKind::ClusterIp(vec!["10.96.0.30".parse().unwrap()]),
                &[("pg", "tcp", 5432)],
            ),
        ];
        let slices = [
            slice(
                "default",
                "nginx",
                &[("web", "tcp", 8080)],
                vec![
                    ep("10.244.1.5", Some("web-0"), true),
                    ep("10.244.2.6", None, true),
                    ep("10.244.3.7", Some("web-2"), false),
                ],
            ),
            slice("default", "empty", &[], vec![ep("10.244.1.9", None, false)]),
            slice(
                "default",
                "quiet",
                &[],
                vec![EndpointInfo {
                    addresses: vec!["10.244.1.10".parse().unwrap()],
                    hostname: None,
                    ready: false,
                    serving: true,
                }],
            ),
        ];
        Zone::build("cluster.local", services.iter(), slices.iter())
    }

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn ask(zone: &Zone, q: &str, t: RecordType) -> Answer {
        match zone.lookup(&name(q), t) {
            Outcome::Answer(a) => a,
            other => panic!("{q} {t}: expected an answer, got {other:?}"),
        }
    }

    fn data(a: &Answer) -> Vec<String> {
        a.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[test]
    fn cluster_ip_service_a_and_case_insensitive() {
        let z = zone();
        let a = ask(&z, "web.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(data(&a), ["10.96.0.20"]);
        assert_eq!(a.answers[0].ttl, TTL);
        let a = ask(&z, "WEB.Default.SVC.Cluster.Local.", RecordType::A);
        assert_eq!(data(&a), ["10.96.0.20"]);
        // The owner keeps the client's spelling.
        assert_eq!(
            a.answers[0].name.to_ascii(),
            "WEB.Default.SVC.Cluster.Local."
        );
    }

    #[test]
    fn aaaa_on_ipv4_only_name_is_nodata_with_soa() {
        let z = zone();
        let a = ask(&z, "web.default.svc.cluster.local.", RecordType::AAAA);
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        assert!(a.soa);
        let soa = z.soa();
        match soa.data {
            RData::SOA(s) => assert_eq!(s.minimum, NEGATIVE_TTL),
            other => panic!("not an SOA: {other:?}"),
        }
    }

    #[test]
    fn missing_names_are_nxdomain() {
        let z = zone();
        for q in [
            "nope.default.svc.cluster.local.",
            "web.nope.svc.cluster.local.",
            "nope.svc.cluster.local.",
            "a.b.c.d.e.f.svc.cluster.local.",
            "whatever.cluster.local.",
            "web.default.cluster.local.",
        ] {
            let a = ask(&z, q, RecordType::A);
            assert_eq!(a.rcode, ResponseCode::NXDomain, "{q}");
            assert!(a.soa, "{q}");
        }
    }

    #[test]
    fn empty_non_terminals_are_noerror() {
        let z = zone();
        for q in [
            "cluster.local.",
            "svc.cluster.local.",
            "default.svc.cluster.local.",
            "other.svc.cluster.local.",
            "_tcp.web.default.svc.cluster.local.",
            "pod.cluster.local.",
        ] {
            let a = ask(&z, q, RecordType::A);
            assert_eq!(a.rcode, ResponseCode::NoError, "{q}");
            assert!(a.answers.is_empty() && a.soa, "{q}");
        }
        let a = ask(&z, "cluster.local.", RecordType::SOA);
        assert_eq!(a.answers.len(), 1);
    }

    #[test]
    fn headless_service_has_one_a_per_ready_endpoint() {
        let z = zone();
        let a = ask(&z, "nginx.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&a), ["10.244.1.5", "10.244.2.6"]);
        // No ready endpoints: NXDOMAIN.
        let a = ask(&z, "empty.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        // publishNotReadyAddresses counts serving endpoints.
        let a = ask(&z, "quiet.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&a), ["10.244.1.10"]);
    }

    #[test]
    fn endpoint_hostnames_and_dashed_ips() {
        let z = zone();
        let a = ask(&z, "web-0.nginx.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&a), ["10.244.1.5"]);
        let a = ask(
            &z,
            "10-244-2-6.nginx.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(data(&a), ["10.244.2.6"]);
        // Not ready: not published.
        let a = ask(&z, "web-2.nginx.default.svc.cluster.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        let a = ask(
            &z,
            "web-0.nginx.default.svc.cluster.local.",
            RecordType::AAAA,
        );
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
    }

    #[test]
    fn srv_for_named_ports() {
        let z = zone();
        let a = ask(
            &z,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(data(&a), ["0 100 80 web.default.svc.cluster.local."]);
        assert_eq!(a.additionals.len(), 1);
        assert_eq!(a.additionals[0].data.to_string(), "10.96.0.20");
        let a = ask(
            &z,
            "_HTTP._TCP.web.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(a.answers.len(), 1);
        // Wrong protocol, unknown port: no such name.
        let a = ask(
            &z,
            "_http._udp.web.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(a.rcode, ResponseCode::NXDomain);
        // The name exists: an A question gets no data, not NXDOMAIN.
        let a = ask(
            &z,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::A,
        );
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.answers.is_empty());
        // Headless: one per ready endpoint, the endpoint's port, its name as target.
        let a = ask(
            &z,
            "_web._tcp.nginx.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(
            data(&a),
            [
                "0 50 8080 web-0.nginx.default.svc.cluster.local.",
                "0 50 8080 10-244-2-6.nginx.default.svc.cluster.local."
            ]
        );
        let extra: Vec<String> = a
            .additionals
            .iter()
            .map(|r| format!("{} {}", r.name, r.data))
            .collect();
        assert_eq!(
            extra,
            [
                "web-0.nginx.default.svc.cluster.local. 10.244.1.5",
                "10-244-2-6.nginx.default.svc.cluster.local. 10.244.2.6"
            ]
        );
    }

    #[test]
    fn ptr_for_cluster_ips_and_endpoints() {
        let z = zone();
        let a = ask(&z, "20.0.96.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&a), ["web.default.svc.cluster.local."]);
        let a = ask(&z, "5.1.244.10.IN-ADDR.ARPA.", RecordType::PTR);
        assert_eq!(data(&a), ["web-0.nginx.default.svc.cluster.local."]);
        let a = ask(&z, "6.2.244.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&a), ["10-244-2-6.nginx.default.svc.cluster.local."]);
        // Addresses that are not ours go upstream.
        assert!(matches!(
            z.lookup(&name("8.8.8.8.in-addr.arpa."), RecordType::PTR),
            Outcome::Forward
        ));
        assert!(matches!(
            z.lookup(&name("244.10.in-addr.arpa."), RecordType::PTR),
            Outcome::Forward
        ));
    }

    #[test]
    fn external_name_is_a_cname_to_chase() {
        let z = zone();
        let a = ask(&z, "ext.default.svc.cluster.local.", RecordType::A);
        assert_eq!(data(&a), ["example.org."]);
        assert_eq!(a.answers[0].record_type(), RecordType::CNAME);
        assert_eq!(a.chase.map(|n| n.to_ascii()), Some("example.org.".into()));
        let a = ask(&z, "ext.default.svc.cluster.local.", RecordType::CNAME);
        assert!(a.chase.is_none());
    }

    #[test]
    fn pod_names_answer_without_checking() {
        let z = zone();
        let a = ask(&z, "10-244-1-99.default.pod.cluster.local.", RecordType::A);
        assert_eq!(data(&a), ["10.244.1.99"]);
        let a = ask(
            &z,
            "10-244-1-99.default.pod.cluster.local.",
            RecordType::AAAA,
        );
        assert!(a.answers.is_empty() && a.rcode == ResponseCode::NoError);
        let a = ask(&z, "fd00--1.default.pod.cluster.local.", RecordType::AAAA);
        assert_eq!(data(&a), ["fd00::1"]);
        let a = ask(&z, "not-an-ip.default.pod.cluster.local.", RecordType::A);
        assert_eq!(a.rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn dns_version_txt() {
        let z = zone();
        let a = ask(&z, "dns-version.cluster.local.", RecordType::TXT);
        assert_eq!(data(&a), ["1.1.0"]);
    }

    #[test]
    fn outside_names_forward_and_unsynced_zone_is_not_ready() {
        let z = zone();
        assert!(matches!(
            z.lookup(&name("example.org."), RecordType::A),
            Outcome::Forward
        ));
        assert!(matches!(
            z.lookup(&name("local."), RecordType::A),
            Outcome::Forward
        ));
        let u = Zone::unsynced("cluster.local");
        assert!(matches!(
            u.lookup(&name("web.default.svc.cluster.local."), RecordType::A),
            Outcome::NotReady
        ));
        assert!(matches!(
            u.lookup(&name("example.org."), RecordType::A),
            Outcome::Forward
        ));
    }

    #[test]
    fn from_kubernetes_objects() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "Web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"name": "HTTP", "port": 80}]}
        }))
        .unwrap();
        let info = ServiceInfo::from_service(&service).unwrap();
        assert_eq!(info.name, "web");
        assert_eq!(info.ports[0].name, "http");
        assert_eq!(info.ports[0].protocol, "tcp");
        let s: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.244.0.5"], "hostname": "web-0"},
                          {"addresses": ["10.244.0.6"], "conditions": {"ready": false}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap();
        let info = SliceInfo::from_slice(&s).unwrap();
        assert_eq!(info.service, "web");
        assert!(info.endpoints[0].ready);
        assert!(!info.endpoints[1].ready && !info.endpoints[1].serving);
        assert_eq!(info.ports[0].port, 8080);
    }
}
