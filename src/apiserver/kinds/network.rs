//! Networking kinds: Ingresses, IngressClasses, NetworkPolicies, Endpoints and EndpointSlices.

use serde_json::{Value, json};

use super::field::{Bad, Errors, Path};
use super::json::{self, default, obj};
use super::meta;
use super::names;

const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];

fn validate_backend(b: &Value, path: &Path, errs: &mut Errors) {
    let has_resource = json::is_set(b, "resource");
    let has_service = json::is_set(b, "service");
    match (has_resource, has_service) {
        (true, true) => errs.invalid(
            path,
            Bad::str(""),
            "cannot set both resource and service backends",
        ),
        (true, false) => {
            let r = json::at(b, "resource");
            if json::str_or(r, "kind").is_empty() {
                errs.required(&path.child("resource").child("kind"), "");
            }
            if json::str_or(r, "name").is_empty() {
                errs.required(&path.child("resource").child("name"), "");
            }
        }
        (false, true) => {
            let s = json::at(b, "service");
            let name = json::str_or(s, "name");
            if name.is_empty() {
                errs.required(&path.child("service").child("name"), "");
            } else {
                for msg in names::dns1035_label(name) {
                    errs.invalid(&path.child("service").child("name"), Bad::str(name), msg);
                }
            }
            let port = json::at(s, "port");
            let pname = json::str_or(port, "name");
            let pnum = json::int_at(port, "number").unwrap_or(0);
            match (pname.is_empty(), pnum == 0) {
                (false, false) => errs.invalid(
                    path,
                    Bad::str(""),
                    "cannot set both port name & port number",
                ),
                (false, true) => {
                    for msg in names::port_name(pname) {
                        errs.invalid(
                            &path.child("service").child("port").child("name"),
                            Bad::str(pname),
                            msg,
                        );
                    }
                }
                (true, false) => {
                    for msg in names::port_number(pnum) {
                        errs.invalid(
                            &path.child("service").child("port").child("number"),
                            Bad::Int(pnum),
                            msg,
                        );
                    }
                }
                (true, true) => errs.required(path, "port name or number is required"),
            }
        }
        (false, false) => errs.invalid(
            path,
            Bad::str(""),
            "resource or service backend is required",
        ),
    }
}

pub fn prepare_ingress(ing: &mut Value) {
    ing["status"] = json!({"loadBalancer": {}});
}

pub fn validate_ingress(ing: &Value, errs: &mut Errors) {
    let spec = json::at(ing, "spec");
    let path = Path::root("spec");
    let rules: Vec<&Value> = json::items(spec, "rules").collect();
    if let Some(b) = spec.get("defaultBackend").filter(|b| b.is_object()) {
        validate_backend(b, &path.child("defaultBackend"), errs);
    } else if rules.is_empty() {
        errs.invalid(
            &path,
            Bad::Raw("[]networking.IngressRule(nil)".into()),
            "either `defaultBackend` or `rules` must be specified",
        );
    }
    if let Some(c) = json::str_at(spec, "ingressClassName") {
        for msg in names::dns1123_subdomain(c) {
            errs.invalid(&path.child("ingressClassName"), Bad::str(c), msg);
        }
    }
    for (i, r) in rules.iter().enumerate() {
        let rp = path.child("rules").index(i);
        if let Some(host) = json::str_at(r, "host").filter(|h| !h.is_empty()) {
            if host.parse::<std::net::IpAddr>().is_ok() {
                errs.invalid(
                    &rp.child("host"),
                    Bad::str(host),
                    "must be a DNS name, not an IP address",
                );
            }
            for msg in names::wildcard_dns1123_subdomain(host) {
                errs.invalid(&rp.child("host"), Bad::str(host), msg);
            }
        }
        let Some(http) = r.get("http").filter(|h| h.is_object()) else {
            continue;
        };
        let paths: Vec<&Value> = json::items(http, "paths").collect();
        if paths.is_empty() {
            errs.required(&rp.child("http").child("paths"), "");
        }
        for (j, p) in paths.iter().enumerate() {
            let pp = rp.child("http").child("paths").index(j);
            let path_str = json::str_or(p, "path");
            match json::str_at(p, "pathType").filter(|t| !t.is_empty()) {
                None => errs.required(&pp.child("pathType"), "pathType must be specified"),
                Some(t) if !PATH_TYPES.contains(&t) => {
                    errs.not_supported(&pp.child("pathType"), t, PATH_TYPES)
                }
                Some(t) => {
                    let needs_abs = t != "ImplementationSpecific" || !path_str.is_empty();
                    if needs_abs && !path_str.starts_with('/') {
                        errs.invalid(
                            &pp.child("path"),
                            Bad::str(path_str),
                            "must be an absolute path",
                        );
                    }
                }
            }
            validate_backend(json::at(p, "backend"), &pp.child("backend"), errs);
        }
    }
    for (i, t) in json::items(spec, "tls").enumerate() {
        for (j, h) in json::items(t, "hosts").enumerate() {
            let h = h.as_str().unwrap_or_default();
            for msg in names::wildcard_dns1123_subdomain(h) {
                errs.invalid(
                    &path.child("tls").index(i).child("hosts").index(j),
                    Bad::str(h),
                    msg,
                );
            }
        }
    }
}

pub fn validate_ingress_class(ic: &Value, errs: &mut Errors) {
    let spec = json::at(ic, "spec");
    let path = Path::root("spec");
    let controller = json::str_or(spec, "controller");
    if controller.is_empty() {
        errs.required(&path.child("controller"), "");
    } else if controller.len() > 250 {
        errs.too_long(&path.child("controller"), 250);
    } else {
        let valid = controller.split_once('/').is_some_and(|(domain, rest)| {
            !rest.is_empty() && names::dns1123_subdomain(domain).is_empty()
        });
        if !valid {
            errs.invalid(
                &path.child("controller"),
                Bad::str(controller),
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            );
        }
    }
    if let Some(p) = spec.get("parameters").filter(|p| p.is_object()) {
        let pp = path.child("parameters");
        if json::str_or(p, "kind").is_empty() {
            errs.required(&pp.child("kind"), "");
        }
        if json::str_or(p, "name").is_empty() {
            errs.required(&pp.child("name"), "");
        }
        errs.check_enum(p, "scope", &pp, &["Cluster", "Namespace"]);
    }
}

pub fn validate_ingress_class_update(old: &Value, new: &Value, errs: &mut Errors) {
    if old.pointer("/spec/controller") != new.pointer("/spec/controller") {
        errs.invalid(
            &Path::root("spec").child("controller"),
            Bad::json(new.pointer("/spec/controller").unwrap_or(&json::EMPTY)),
            "field is immutable",
        );
    }
}

pub fn default_network_policy(np: &mut Value) {
    let spec = obj(np, "spec");
    obj(spec, "podSelector");
    for dir in ["ingress", "egress"] {
        for rule in json::items_mut(spec, dir) {
            for p in json::items_mut(rule, "ports") {
                default(p, "protocol", json!("TCP"));
            }
        }
    }
    if json::len_of(spec, "policyTypes") == 0 {
        let mut types = vec![json!("Ingress")];
        if json::len_of(spec, "egress") > 0 {
            types.push(json!("Egress"));
        }
        spec["policyTypes"] = Value::Array(types);
    }
}

pub fn validate_network_policy(np: &Value, errs: &mut Errors) {
    let spec = json::at(np, "spec");
    let path = Path::root("spec");
    meta::validate_label_selector(
        json::at(spec, "podSelector"),
        &path.child("podSelector"),
        errs,
    );
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in json::items(spec, dir).enumerate() {
            let rp = path.child(dir).index(i);
            for (j, p) in json::items(rule, "ports").enumerate() {
                validate_policy_port(p, &rp.child("ports").index(j), errs);
            }
            for (j, peer) in json::items(rule, peers).enumerate() {
                validate_policy_peer(peer, &rp.child(peers).index(j), errs);
            }
        }
    }
    for (i, t) in json::items(spec, "policyTypes").enumerate() {
        let t = t.as_str().unwrap_or_default();
        if t != "Ingress" && t != "Egress" {
            errs.not_supported(
                &path.child("policyTypes").index(i),
                t,
                &["Ingress", "Egress"],
            );
        }
    }
}

/// ValidateNetworkPolicyPort: protocol, port (number or name) and endPort.
fn validate_policy_port(p: &Value, path: &Path, errs: &mut Errors) {
    errs.check_enum(p, "protocol", path, &["SCTP", "TCP", "UDP"]);
    let end = p.get("endPort").filter(|v| !v.is_null());
    let end_n = end.and_then(Value::as_i64);
    match p.get("port").filter(|v| !v.is_null()) {
        Some(port @ Value::Number(n)) => {
            super::pod::validate_port_ref(Some(port), &path.child("port"), errs);
            let n = n.as_i64().unwrap_or(0);
            if let Some(e) = end_n {
                if e < n {
                    errs.invalid(
                        &path.child("endPort"),
                        Bad::Int(n),
                        "must be greater than or equal to `port`",
                    );
                }
                for msg in names::port_number(e) {
                    errs.invalid(&path.child("endPort"), Bad::Int(e), msg);
                }
            }
        }
        Some(port) => {
            if let Some(e) = end_n {
                errs.invalid(
                    &path.child("endPort"),
                    Bad::Int(e),
                    "may not be specified when `port` is non-numeric",
                );
            }
            super::pod::validate_port_ref(Some(port), &path.child("port"), errs);
        }
        None => {
            if let Some(e) = end_n {
                errs.invalid(
                    &path.child("endPort"),
                    Bad::Int(e),
                    "may not be specified when `port` is not specified",
                );
            }
        }
    }
}

/// ValidateNetworkPolicyPeer: exactly one kind of peer, ipBlock alone.
fn validate_policy_peer(peer: &Value, path: &Path, errs: &mut Errors) {
    let mut peers = 0;
    for sel in ["podSelector", "namespaceSelector"] {
        if let Some(s) = peer.get(sel).filter(|v| !v.is_null()) {
            peers += 1;
            meta::validate_label_selector(s, &path.child(sel), errs);
        }
    }
    let block = peer.get("ipBlock").filter(|v| !v.is_null());
    if let Some(b) = block {
        peers += 1;
        validate_ip_block(b, &path.child("ipBlock"), errs);
    }
    if peers == 0 {
        errs.required(path, "must specify a peer");
    } else if peers > 1 && block.is_some() {
        errs.forbidden(path, "may not specify both ipBlock and another peer");
    }
}

const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// ValidateIPBlock: a CIDR, and exceptions strictly inside it.
fn validate_ip_block(b: &Value, path: &Path, errs: &mut Errors) {
    let cidr = json::str_or(b, "cidr");
    if cidr.is_empty() {
        errs.required(&path.child("cidr"), "");
        return;
    }
    let Some(outer) = parse_cidr(cidr) else {
        errs.invalid(&path.child("cidr"), Bad::str(cidr), CIDR_MSG);
        return;
    };
    for (i, ex) in json::items(b, "except").enumerate() {
        let ep = path.child("except").index(i);
        let ex = ex.as_str().unwrap_or_default();
        let Some(inner) = parse_cidr(ex) else {
            errs.invalid(&ep, Bad::str(ex), CIDR_MSG);
            continue;
        };
        if !outer.contains(&inner.0) || outer.1 >= inner.1 {
            errs.invalid(&ep, Bad::str(ex), "must be a strict subset of `cidr`");
        }
    }
}

/// A CIDR as Go's ParseCIDRSloppy reads it (IPv4 octets may have leading zeros), masked to its
/// network address, with its prefix length.
struct Cidr(std::net::IpAddr, u8);

impl Cidr {
    fn contains(&self, ip: &std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.0, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.1)).unwrap_or(0);
                u32::from(net) & mask == u32::from(*ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.1)).unwrap_or(0);
                u128::from(net) & mask == u128::from(*ip) & mask
            }
            _ => false,
        }
    }
}

fn parse_cidr(s: &str) -> Option<Cidr> {
    let (ip, bits) = s.split_once('/')?;
    if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) || bits.len() > 3 {
        return None;
    }
    let bits: u8 = bits.parse().ok()?;
    let ip = parse_ip_sloppy(ip)?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return None;
    }
    let mut c = Cidr(ip, bits);
    // Mask to the network, as net.ParseCIDR returns it.
    c.0 = match ip {
        std::net::IpAddr::V4(v) => std::net::IpAddr::V4(
            (u32::from(v) & u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0)).into(),
        ),
        std::net::IpAddr::V6(v) => std::net::IpAddr::V6(
            (u128::from(v) & u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0)).into(),
        ),
    };
    Some(c)
}

fn parse_ip_sloppy(s: &str) -> Option<std::net::IpAddr> {
    if s.contains(':') {
        return s.parse::<std::net::Ipv6Addr>().ok().map(Into::into);
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    Some(std::net::IpAddr::V4(octets.into()))
}

pub fn default_endpoints(ep: &mut Value) {
    for s in json::items_mut(ep, "subsets") {
        for p in json::items_mut(s, "ports") {
            default(p, "protocol", json!("TCP"));
        }
    }
}

pub fn validate_endpoints(ep: &Value, errs: &mut Errors) {
    for (i, s) in json::items(ep, "subsets").enumerate() {
        let sp = Path::root("subsets").index(i);
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in json::items(s, list).enumerate() {
                let ip = json::str_or(a, "ip");
                for msg in names::ip_address(ip) {
                    errs.invalid(&sp.child(list).index(j).child("ip"), Bad::str(ip), msg);
                }
            }
        }
        let ports: Vec<&Value> = json::items(s, "ports").collect();
        for (j, p) in ports.iter().enumerate() {
            let pp = sp.child("ports").index(j);
            let name = json::str_or(p, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.required(&pp.child("name"), "");
            }
            let port = json::int_at(p, "port").unwrap_or(0);
            for msg in names::port_number(port) {
                errs.invalid(&pp.child("port"), Bad::Int(port), msg);
            }
            errs.check_enum(p, "protocol", &pp, &["SCTP", "TCP", "UDP"]);
        }
    }
}

pub fn default_endpoint_slice(es: &mut Value) {
    for p in json::items_mut(es, "ports") {
        default(p, "name", json!(""));
        default(p, "protocol", json!("TCP"));
    }
}

pub fn validate_endpoint_slice(es: &Value, errs: &mut Errors) {
    let ty = json::str_or(es, "addressType");
    match ty {
        "IPv4" | "IPv6" | "FQDN" => {}
        "" => errs.required(&Path::root("addressType"), ""),
        other => errs.not_supported(&Path::root("addressType"), other, &["IPv4", "IPv6", "FQDN"]),
    }
    for (i, e) in json::items(es, "endpoints").enumerate() {
        let ep = Path::root("endpoints").index(i);
        let addrs: Vec<&str> = json::items(e, "addresses")
            .filter_map(Value::as_str)
            .collect();
        if addrs.is_empty() {
            errs.required(&ep.child("addresses"), "must contain at least 1 address");
        } else if addrs.len() > 100 {
            errs.too_many(&ep.child("addresses"), addrs.len(), 100);
        }
        for (j, a) in addrs.iter().enumerate() {
            let ok = match ty {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => names::dns1123_subdomain(a).is_empty(),
            };
            if !ok {
                let msg = if ty == "FQDN" {
                    "must be a valid FQDN".to_string()
                } else {
                    format!("must be a valid {ty} address")
                };
                errs.invalid(&ep.child("addresses").index(j), Bad::str(a), msg);
            }
        }
    }
    for (i, p) in json::items(es, "ports").enumerate() {
        let pp = Path::root("ports").index(i);
        if let Some(n) = json::int_at(p, "port") {
            for msg in names::port_number(n) {
                errs.invalid(&pp.child("port"), Bad::Int(n), msg);
            }
        }
        errs.check_enum(p, "protocol", &pp, &["SCTP", "TCP", "UDP"]);
    }
}

pub fn validate_endpoint_slice_update(old: &Value, new: &Value, errs: &mut Errors) {
    if old.get("addressType") != new.get("addressType") {
        errs.invalid(
            &Path::root("addressType"),
            Bad::json(json::at(new, "addressType")),
            "field is immutable",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_rules() {
        let ing = json!({"spec": {"rules": [{"host": "example.com", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
            {"path": "api", "backend": {"service": {"name": "web"}}}]}}]}});
        let mut errs = Errors::new();
        validate_ingress(&ing, &mut errs);
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert_eq!(
            msgs,
            vec![
                "spec.rules[0].http.paths[1].pathType: Required value: pathType must be specified",
                "spec.rules[0].http.paths[1].backend: Required value: port name or number is required"
            ]
        );
    }

    #[test]
    fn network_policy_types_default() {
        let mut np = json!({"spec": {"egress": [{"ports": [{"port": 53}]}]}});
        default_network_policy(&mut np);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["podSelector"], json!({}));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
    }

    fn policy_errors(spec: Value) -> Vec<String> {
        let mut errs = Errors::new();
        validate_network_policy(&json!({ "spec": spec }), &mut errs);
        errs.0.iter().map(|e| e.message()).collect()
    }

    #[test]
    fn network_policy_peers_and_ip_blocks_as_kubernetes_validates_them() {
        let msgs = policy_errors(json!({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/24", "except": ["192.168.0.0/24", "10.0.0.0/24", "10.0.0.128/25", "x"]}},
            {"ipBlock": {"cidr": "10.0.0.300/24"}},
            {"ipBlock": {"cidr": ""}},
            {},
            {"ipBlock": {"cidr": "010.1.0.0/16"}, "podSelector": {}}
        ]}]}));
        assert_eq!(
            msgs,
            vec![
                r#"spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "192.168.0.0/24": must be a strict subset of `cidr`"#,
                r#"spec.ingress[0].from[0].ipBlock.except[1]: Invalid value: "10.0.0.0/24": must be a strict subset of `cidr`"#,
                r#"spec.ingress[0].from[0].ipBlock.except[3]: Invalid value: "x": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"#,
                r#"spec.ingress[0].from[1].ipBlock.cidr: Invalid value: "10.0.0.300/24": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"#,
                "spec.ingress[0].from[2].ipBlock.cidr: Required value",
                "spec.ingress[0].from[3]: Required value: must specify a peer",
                "spec.ingress[0].from[4]: Forbidden: may not specify both ipBlock and another peer",
            ]
        );
    }

    #[test]
    fn network_policy_end_ports() {
        let msgs = policy_errors(json!({"podSelector": {}, "egress": [{"ports": [
            {"protocol": "TCP", "port": 90, "endPort": 80},
            {"protocol": "TCP", "port": "http", "endPort": 80},
            {"protocol": "TCP", "endPort": 80},
            {"protocol": "UDP", "port": 80, "endPort": 70000},
            {"protocol": "UDP", "port": 80, "endPort": 81}
        ]}]}));
        assert_eq!(
            msgs,
            vec![
                "spec.egress[0].ports[0].endPort: Invalid value: 90: must be greater than or equal to `port`",
                "spec.egress[0].ports[1].endPort: Invalid value: 80: may not be specified when `port` is non-numeric",
                "spec.egress[0].ports[2].endPort: Invalid value: 80: may not be specified when `port` is not specified",
                "spec.egress[0].ports[3].endPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ]
        );
    }
}
