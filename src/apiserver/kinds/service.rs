//! Services: defaulting, validation, and ClusterIP / NodePort allocation.
//!
//! Allocations are not kept in a bitmap as Kubernetes does: the stored Services are the record
//! of what is taken, so a deleted Service frees its IP and ports with nothing to release, and a
//! restarted server knows its allocations by reading the store. A short-lived table of
//! allocations handed out but maybe not yet stored closes the race between two creates.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::field::{Bad, Errors, Path, go_quote, go_string_slice};
use super::json::{self, default, obj};
use super::meta;
use super::names;
use crate::cluster::cidr::Ipv4Cidr;
use crate::store::Store;

pub const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/16";
/// Where the service IP range is recorded, as Kubernetes records its RangeAllocation.
pub const RANGE_KEY: &str = "/registry/ranges/serviceips";
pub const NODE_PORT_MIN: u16 = 30000;
pub const NODE_PORT_MAX: u16 = 32767;
/// The cluster DNS service's conventional address (the 10th of the range) is never handed out
/// to a Service that did not ask for it.
const DNS_OFFSET: u32 = 10;
const SERVICES_PREFIX: &str = "/registry/core/services/";
/// How long an allocation that has not shown up in the store still blocks others.
const PENDING_TTL: Duration = Duration::from_secs(30);

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

fn svc_type(svc: &Value) -> &str {
    svc.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn needs_cluster_ip(svc: &Value) -> bool {
    svc_type(svc) != "ExternalName"
}

fn needs_node_ports(svc: &Value) -> bool {
    match svc_type(svc) {
        "NodePort" => true,
        "LoadBalancer" => svc.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&json!(false)),
        _ => false,
    }
}

fn externally_accessible(svc: &Value) -> bool {
    matches!(svc_type(svc), "NodePort" | "LoadBalancer")
        || (svc_type(svc) == "ClusterIP" && json::len_of(json::at(svc, "spec"), "externalIPs") > 0)
}

fn is_headless(svc: &Value) -> bool {
    svc.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None")
}

/// SetDefaults_Service.
pub fn default_service(svc: &mut Value) {
    let spec = obj(svc, "spec");
    default(spec, "sessionAffinity", json!("None"));
    match json::str_or(spec, "sessionAffinity") {
        "None" => {
            json::remove(spec, "sessionAffinityConfig");
        }
        "ClientIP" => {
            let cfg = obj(obj(spec, "sessionAffinityConfig"), "clientIP");
            default(cfg, "timeoutSeconds", json!(10800));
        }
        _ => {}
    }
    default(spec, "type", json!("ClusterIP"));
    for p in json::items_mut(spec, "ports") {
        default(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset && let Some(port) = p.get("port").cloned() {
            p["targetPort"] = port;
        }
    }
    let ty = json::str_or(spec, "type").to_string();
    if externally_accessible(&json!({"spec": spec.clone()})) {
        default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

/// NormalizeClusterIPs: keeps spec.clusterIP and spec.clusterIPs telling the same story.
fn normalize_cluster_ips(svc: &mut Value, old: Option<&Value>) {
    let spec = obj(svc, "spec");
    let ip = json::str_or(spec, "clusterIP").to_string();
    let ips: Vec<String> = json::items(spec, "clusterIPs")
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if let Some(old) = old {
        let old_ip = old
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let old_ips: Vec<String> = old
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        if ip != old_ip && ips == old_ips {
            spec["clusterIPs"] = if ip.is_empty() {
                Value::Null
            } else {
                json!([ip])
            };
            if ip.is_empty() {
                json::remove(spec, "clusterIPs");
            }
            return;
        }
        if ip == old_ip && ips != old_ips {
            match ips.first() {
                Some(first) => spec["clusterIP"] = json!(first),
                None => {
                    json::remove(spec, "clusterIP");
                }
            }
            return;
        }
    }
    if ip.is_empty() && !ips.is_empty() {
        spec["clusterIP"] = json!(ips[0]);
    } else if !ip.is_empty() && ips.is_empty() {
        spec["clusterIPs"] = json!([ip]);
    }
}

/// The update strategy's view of an incoming Service: what was allocated carries over when the
/// client did not send it, and what the new type does not use is dropped.
pub fn prepare_update(old: &Value, new: &mut Value) {
    normalize_cluster_ips(new, Some(old));
    let keep_ip = needs_cluster_ip(old) && needs_cluster_ip(new);
    if keep_ip && json::str_or(json::at(new, "spec"), "clusterIP").is_empty() {
        let spec = obj(new, "spec");
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old.pointer(&format!("/spec/{key}")) {
                spec[key] = v.clone();
            }
        }
    }
    if keep_ip {
        let spec = obj(new, "spec");
        for key in ["ipFamilies", "ipFamilyPolicy"] {
            if !json::is_set(spec, key)
                && let Some(v) = old.pointer(&format!("/spec/{key}"))
            {
                spec[key] = v.clone();
            }
        }
    }
    if needs_node_ports(old) && needs_node_ports(new) {
        let old_ports: Vec<Value> = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let spec = obj(new, "spec");
        for p in json::items_mut(spec, "ports") {
            if json::int_at(p, "nodePort").unwrap_or(0) != 0 {
                continue;
            }
            let found = old_ports
                .iter()
                .find(|o| o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol"));
            if let Some(np) = found.and_then(|o| o.get("nodePort")) {
                p["nodePort"] = np.clone();
            }
        }
        if !json::is_set(spec, "healthCheckNodePort")
            && let Some(h) = old.pointer("/spec/healthCheckNodePort")
        {
            spec["healthCheckNodePort"] = h.clone();
        }
    }
    drop_type_dependent_fields(old, new);
}

fn drop_type_dependent_fields(old: &Value, new: &mut Value) {
    let unchanged = |new: &Value, key: &str| new.pointer(key) == old.pointer(key);
    if needs_cluster_ip(old) && !needs_cluster_ip(new) {
        for key in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if unchanged(new, &format!("/spec/{key}")) {
                json::remove(obj(new, "spec"), key);
            }
        }
    }
    if needs_node_ports(old) && !needs_node_ports(new) {
        let old_ports: Vec<Value> = old
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for p in json::items_mut(obj(new, "spec"), "ports") {
            let same = old_ports
                .iter()
                .any(|o| o.get("port") == p.get("port") && o.get("nodePort") == p.get("nodePort"));
            if same {
                json::remove(p, "nodePort");
            }
        }
    }
    let spec_new = json::at(new, "spec").clone();
    let wrapped = json!({"spec": spec_new});
    if svc_type(new) != "LoadBalancer" && unchanged(new, "/spec/allocateLoadBalancerNodePorts") {
        json::remove(obj(new, "spec"), "allocateLoadBalancerNodePorts");
    }
    if !externally_accessible(&wrapped) && unchanged(new, "/spec/externalTrafficPolicy") {
        json::remove(obj(new, "spec"), "externalTrafficPolicy");
    }
    if svc_type(new) == "ExternalName" && unchanged(new, "/spec/internalTrafficPolicy") {
        json::remove(obj(new, "spec"), "internalTrafficPolicy");
    }
    if svc_type(new) != "LoadBalancer" && unchanged(new, "/spec/healthCheckNodePort") {
        json::remove(obj(new, "spec"), "healthCheckNodePort");
    }
}

pub fn prepare_create(svc: &mut Value) {
    normalize_cluster_ips(svc, None);
    svc["status"] = json!({"loadBalancer": {}});
}

/// Go's `%#v` of a core.ServicePort, for duplicate-port messages.
fn go_service_port(p: &Value) -> String {
    let target = match p.get("targetPort") {
        Some(Value::String(s)) => format!(
            "intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}",
            go_quote(s)
        ),
        Some(v) => format!(
            "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
            v.as_i64().unwrap_or(0)
        ),
        None => "intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}".into(),
    };
    let app = match json::str_at(p, "appProtocol") {
        Some(a) => format!("&{}", go_quote(a)),
        None => "(*string)(nil)".into(),
    };
    format!(
        "core.ServicePort{{Name:{}, Protocol:{}, AppProtocol:{app}, Port:{}, TargetPort:{target}, NodePort:{}}}",
        go_quote(json::str_or(p, "name")),
        go_quote(json::str_or(p, "protocol")),
        json::int_at(p, "port").unwrap_or(0),
        json::int_at(p, "nodePort").unwrap_or(0)
    )
}

pub fn validate_service(svc: &Value, errs: &mut Errors) {
    let spec = json::at(svc, "spec");
    let path = Path::root("spec");
    let ty = json::str_or(spec, "type");
    if !TYPES.contains(&ty) {
        errs.not_supported(&path.child("type"), ty, TYPES);
    }
    errs.check_enum(spec, "sessionAffinity", &path, &["ClientIP", "None"]);
    if let Some(t) = spec
        .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
        .and_then(Value::as_i64)
        && !(1..=86400).contains(&t)
    {
        errs.invalid(
            &path
                .child("sessionAffinityConfig")
                .child("clientIP")
                .child("timeoutSeconds"),
            Bad::Int(t),
            "must be greater than 0 and less than 86400",
        );
    }
    let ports: Vec<&Value> = json::items(spec, "ports").collect();
    if ports.is_empty() && !is_headless(svc) && ty != "ExternalName" {
        errs.required(&path.child("ports"), "");
    }
    let mut seen_names: Vec<&str> = Vec::new();
    let mut seen_ports: Vec<(i64, &str)> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = path.child("ports").index(i);
        let name = json::str_or(p, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.required(&pp.child("name"), "");
        } else if !name.is_empty() {
            for msg in names::dns1123_label(name) {
                errs.invalid(&pp.child("name"), Bad::str(name), msg);
            }
            if seen_names.contains(&name) {
                errs.duplicate(&pp.child("name"), Bad::str(name));
            }
            seen_names.push(name);
        }
        let port = json::int_at(p, "port").unwrap_or(0);
        for msg in names::port_number(port) {
            errs.invalid(&pp.child("port"), Bad::Int(port), msg);
        }
        let proto = json::str_or(p, "protocol");
        if proto.is_empty() {
            errs.required(&pp.child("protocol"), "");
        } else if !PROTOCOLS.contains(&proto) {
            errs.not_supported(&pp.child("protocol"), proto, PROTOCOLS);
        }
        super::pod::validate_port_ref(p.get("targetPort"), &pp.child("targetPort"), errs);
        if seen_ports.contains(&(port, proto)) {
            errs.duplicate(&pp, Bad::Raw(go_service_port(p)));
        }
        seen_ports.push((port, proto));
        let node_port = json::int_at(p, "nodePort").unwrap_or(0);
        if node_port != 0 && ty == "ClusterIP" {
            errs.forbidden(
                &pp.child("nodePort"),
                "may not be used when `type` is 'ClusterIP'",
            );
        }
        if node_port != 0 && ty != "ClusterIP" && !(1..=65535).contains(&node_port) {
            errs.invalid(
                &pp.child("nodePort"),
                Bad::Int(node_port),
                "must be between 1 and 65535, inclusive",
            );
        }
    }
    if ty == "ExternalName" {
        match json::str_at(spec, "externalName").filter(|n| !n.is_empty()) {
            None => errs.required(&path.child("externalName"), ""),
            Some(n) => {
                for msg in names::dns1123_subdomain(n.trim_end_matches('.')) {
                    errs.invalid(&path.child("externalName"), Bad::str(n), msg);
                }
            }
        }
        if !json::str_or(spec, "clusterIP").is_empty() {
            errs.forbidden(
                &path.child("clusterIPs"),
                "may not be set for ExternalName services",
            );
        }
    } else {
        for (i, ip) in json::items(spec, "clusterIPs").enumerate() {
            let Some(ip) = ip.as_str() else { continue };
            if ip == "None" {
                if i == 0 && matches!(ty, "NodePort" | "LoadBalancer") {
                    errs.invalid(
                        &path.child("clusterIPs").index(0),
                        Bad::str(ip),
                        format!("may not be set to 'None' for {ty} services"),
                    );
                }
                continue;
            }
            for msg in names::ip_address(ip) {
                errs.invalid(&path.child("clusterIPs").index(i), Bad::str(ip), msg);
            }
        }
    }
    match json::str_at(spec, "externalTrafficPolicy") {
        None | Some("") => {}
        Some(p) if !externally_accessible(svc) => errs.invalid(
            &path.child("externalTrafficPolicy"),
            Bad::str(p),
            "may only be set for externally-accessible services",
        ),
        Some(_) => errs.check_enum(spec, "externalTrafficPolicy", &path, &["Cluster", "Local"]),
    }
    errs.check_enum(spec, "internalTrafficPolicy", &path, &["Cluster", "Local"]);
    errs.check_enum(
        spec,
        "ipFamilyPolicy",
        &path,
        &["SingleStack", "PreferDualStack", "RequireDualStack"],
    );
    for (i, f) in json::items(spec, "ipFamilies").enumerate() {
        if let Some(f) = f.as_str()
            && f != "IPv4"
            && f != "IPv6"
        {
            errs.not_supported(&path.child("ipFamilies").index(i), f, &["IPv4", "IPv6"]);
        }
    }
    meta::validate_labels(spec.get("selector"), &path.child("selector"), errs);
    for (i, ip) in json::items(spec, "externalIPs").enumerate() {
        let ip = ip.as_str().unwrap_or_default();
        for msg in names::ip_address(ip) {
            errs.invalid(&path.child("externalIPs").index(i), Bad::str(ip), msg);
        }
    }
}

pub fn validate_service_update(old: &Value, new: &Value, errs: &mut Errors) {
    if !needs_cluster_ip(old) || !needs_cluster_ip(new) {
        return;
    }
    if is_headless(old) && is_headless(new) {
        return;
    }
    let list = |v: &Value| -> Vec<String> {
        v.pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let (o, n) = (list(old), list(new));
    if o.is_empty() {
        return;
    }
    let path = Path::root("spec").child("clusterIPs");
    if n.is_empty() {
        errs.invalid(
            &path.index(0),
            Bad::Raw("[]string(nil)".into()),
            "primary clusterIP can not be unset",
        );
        return;
    }
    for (i, ip) in o.iter().enumerate() {
        if n.get(i).is_some_and(|x| x != ip) {
            errs.invalid(
                &path.index(i),
                Bad::Raw(go_string_slice(&n)),
                "may not change once set",
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Allocation

#[derive(Default)]
struct Pending {
    ips: HashMap<Ipv4Addr, (String, Instant)>,
    ports: HashMap<u16, (String, Instant)>,
}

static PENDING: LazyLock<Mutex<Pending>> = LazyLock::new(|| Mutex::new(Pending::default()));

fn owner_of(svc: &Value) -> String {
    format!(
        "{}/{}",
        svc.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        svc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    )
}

/// The service range this cluster allocates from (recorded at bootstrap).
pub fn service_range(store: &Store) -> Ipv4Cidr {
    let fallback = || {
        DEFAULT_SERVICE_SUBNET
            .parse()
            .expect("valid default subnet")
    };
    match store.get(RANGE_KEY) {
        Ok(Some(kv)) => serde_json::from_slice::<Value>(&kv.value)
            .ok()
            .and_then(|v| v.get("range").and_then(Value::as_str).map(str::to_string))
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(fallback),
        _ => fallback(),
    }
}

fn random_u64() -> u64 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[8]])
}

struct Used {
    ips: HashMap<Ipv4Addr, String>,
    ports: HashMap<u16, String>,
}

/// What the stored Services (and recent allocations not yet stored) hold, other than `owner`'s.
fn used(store: &Store, owner: &str, pending: &mut Pending) -> Used {
    let mut used = Used {
        ips: HashMap::new(),
        ports: HashMap::new(),
    };
    let mut stored_ips: HashMap<Ipv4Addr, String> = HashMap::new();
    let mut stored_ports: HashMap<u16, String> = HashMap::new();
    if let Ok((kvs, _)) = store.list(SERVICES_PREFIX) {
        for kv in kvs {
            let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else {
                continue;
            };
            let who = owner_of(&svc);
            for ip in json::items(json::at(&svc, "spec"), "clusterIPs") {
                if let Some(ip) = ip.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok()) {
                    stored_ips.insert(ip, who.clone());
                }
            }
            if let Some(ip) = svc
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            {
                stored_ips.insert(ip, who.clone());
            }
            for p in json::items(json::at(&svc, "spec"), "ports") {
                if let Some(np) = json::int_at(p, "nodePort").and_then(|n| u16::try_from(n).ok())
                    && np != 0
                {
                    stored_ports.insert(np, who.clone());
                }
            }
            if let Some(h) = svc
                .pointer("/spec/healthCheckNodePort")
                .and_then(Value::as_i64)
                .and_then(|n| u16::try_from(n).ok())
            {
                stored_ports.insert(h, who.clone());
            }
        }
    }
    let now = Instant::now();
    // A pending allocation is settled once the store shows it, or forgotten when it is old.
    pending.ips.retain(|ip, (who, at)| {
        now.duration_since(*at) < PENDING_TTL && stored_ips.get(ip) != Some(who)
    });
    pending.ports.retain(|p, (who, at)| {
        now.duration_since(*at) < PENDING_TTL && stored_ports.get(p) != Some(who)
    });
    for (ip, who) in stored_ips
        .into_iter()
        .chain(pending.ips.iter().map(|(ip, (w, _))| (*ip, w.clone())))
    {
        if who != owner {
            used.ips.insert(ip, who);
        }
    }
    for (p, who) in stored_ports
        .into_iter()
        .chain(pending.ports.iter().map(|(p, (w, _))| (*p, w.clone())))
    {
        if who != owner {
            used.ports.insert(p, who);
        }
    }
    used
}

fn range_size(cidr: &Ipv4Cidr) -> u32 {
    u32::try_from(cidr.size()).unwrap_or(u32::MAX)
}

/// Picks a free address: Kubernetes prefers the upper part of the range for dynamic addresses,
/// keeping the lower part (its first 16–256 addresses) for those asked for by number.
fn pick_ip(cidr: &Ipv4Cidr, used: &Used) -> Option<Ipv4Addr> {
    let size = range_size(cidr);
    if size < 4 {
        return None;
    }
    let first = 1u32;
    let last = size - 2;
    let usable = last - first + 1;
    let static_band = (usable / 16).clamp(16, 256).min(usable);
    let free = |n: u32| {
        cidr.nth(n)
            .filter(|ip| n != 1 && n != DNS_OFFSET && !used.ips.contains_key(ip))
    };
    let bands = [
        (first + static_band, last),
        (first, first + static_band - 1),
    ];
    for (lo, hi) in bands {
        if lo > hi {
            continue;
        }
        let span = hi - lo + 1;
        let start = (random_u64() % u64::from(span)) as u32;
        for i in 0..span {
            let n = lo + (start + i) % span;
            if let Some(ip) = free(n) {
                return Some(ip);
            }
        }
    }
    None
}

fn pick_port(used: &Used, taken_here: &[u16]) -> Option<u16> {
    let span = u32::from(NODE_PORT_MAX - NODE_PORT_MIN) + 1;
    let start = (random_u64() % u64::from(span)) as u32;
    (0..span)
        .map(|i| NODE_PORT_MIN + ((start + i) % span) as u16)
        .find(|p| !used.ports.contains_key(p) && !taken_here.contains(p))
}

/// Assigns the Service its ClusterIP and NodePorts (honouring requested ones), or reports the
/// conflicts as Kubernetes words them.
pub fn allocate(store: &Store, svc: &mut Value) -> Result<(), Errors> {
    let cidr = service_range(store);
    let owner = owner_of(svc);
    let mut errs = Errors::new();
    let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
    let used = used(store, &owner, &mut pending);
    let now = Instant::now();
    let mut new_ips: Vec<Ipv4Addr> = Vec::new();
    let mut new_ports: Vec<u16> = Vec::new();

    if needs_cluster_ip(svc) {
        let spec = obj(svc, "spec");
        let requested = json::str_or(spec, "clusterIP").to_string();
        let has_selector = json::len_of(spec, "selector") > 0;
        if requested == "None" {
            spec["clusterIPs"] = json!(["None"]);
            default(spec, "ipFamilies", json!(["IPv4"]));
            let policy = if has_selector {
                "SingleStack"
            } else {
                "RequireDualStack"
            };
            default(spec, "ipFamilyPolicy", json!(policy));
        } else {
            let field = Path::root("spec").child("clusterIPs");
            let ip = if requested.is_empty() {
                match pick_ip(&cidr, &used) {
                    Some(ip) => Some(ip),
                    None => {
                        errs.invalid(
                            &field,
                            Bad::Raw("[]string(nil)".into()),
                            "failed to allocate IP: range is full",
                        );
                        None
                    }
                }
            } else {
                match requested.parse::<Ipv4Addr>() {
                    // Validation has already explained an address that is not one.
                    Err(_) => None,
                    Ok(ip) => {
                        let n = u32::from(ip).wrapping_sub(u32::from(cidr.network()));
                        let shown = Bad::Raw(go_string_slice(std::slice::from_ref(&requested)));
                        if !cidr.contains(ip) || n == 0 || n == range_size(&cidr) - 1 {
                            errs.invalid(
                                &field,
                                shown,
                                format!(
                                    "failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {cidr}"
                                ),
                            );
                            None
                        } else if used.ips.contains_key(&ip) {
                            errs.invalid(
                                &field,
                                shown,
                                format!(
                                    "failed to allocate IP {ip}: provided IP is already allocated"
                                ),
                            );
                            None
                        } else {
                            Some(ip)
                        }
                    }
                }
            };
            if let Some(ip) = ip {
                spec["clusterIP"] = json!(ip.to_string());
                spec["clusterIPs"] = json!([ip.to_string()]);
                new_ips.push(ip);
            }
            let families: Vec<&str> = json::items(spec, "ipFamilies")
                .filter_map(Value::as_str)
                .collect();
            if families.contains(&"IPv6") {
                errs.invalid(
                    &Path::root("spec").child("ipFamilies").index(0),
                    Bad::str("IPv6"),
                    "not configured on this cluster",
                );
            }
            default(spec, "ipFamilies", json!(["IPv4"]));
            default(spec, "ipFamilyPolicy", json!("SingleStack"));
            if json::str_at(spec, "ipFamilyPolicy") == Some("RequireDualStack") {
                errs.invalid(
                    &Path::root("spec").child("ipFamilyPolicy"),
                    Bad::str("RequireDualStack"),
                    "this cluster is not configured for dual-stack services",
                );
            }
        }
    }

    if needs_node_ports(svc) {
        let spec = obj(svc, "spec");
        // A node port may serve one port number over several protocols within one Service.
        let mut here: Vec<(u16, i64)> = Vec::new();
        let mut ports: Vec<Value> = spec
            .get("ports")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, p) in ports.iter_mut().enumerate() {
            let path = Path::root("spec").child("ports").index(i).child("nodePort");
            let port = json::int_at(p, "port").unwrap_or(0);
            let requested = json::int_at(p, "nodePort").unwrap_or(0);
            if requested == 0 {
                let reuse = here.iter().find(|(_, pn)| *pn == port).map(|(np, _)| *np);
                let taken: Vec<u16> = here.iter().map(|(np, _)| *np).collect();
                match reuse.or_else(|| pick_port(&used, &taken)) {
                    Some(np) => {
                        p["nodePort"] = json!(np);
                        here.push((np, port));
                        new_ports.push(np);
                    }
                    None => errs.invalid(&path, Bad::Int(0), "range is full"),
                }
                continue;
            }
            let in_range = u16::try_from(requested)
                .ok()
                .filter(|n| (NODE_PORT_MIN..=NODE_PORT_MAX).contains(n));
            match in_range {
                None => errs.invalid(
                    &path,
                    Bad::Int(requested),
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {NODE_PORT_MIN}-{NODE_PORT_MAX}"
                    ),
                ),
                Some(np) => {
                    let clash_here = here.iter().any(|(n, pn)| *n == np && *pn != port);
                    if used.ports.contains_key(&np) || clash_here {
                        errs.invalid(
                            &path,
                            Bad::Int(requested),
                            "provided port is already allocated",
                        );
                    } else {
                        here.push((np, port));
                        new_ports.push(np);
                    }
                }
            }
        }
        spec["ports"] = Value::Array(ports);
        let wants_health = svc_type(&json!({"spec": spec.clone()})) == "LoadBalancer"
            && json::str_at(spec, "externalTrafficPolicy") == Some("Local");
        if wants_health && json::int_at(spec, "healthCheckNodePort").unwrap_or(0) == 0 {
            let taken: Vec<u16> = here.iter().map(|(np, _)| *np).collect();
            if let Some(np) = pick_port(&used, &taken) {
                spec["healthCheckNodePort"] = json!(np);
                new_ports.push(np);
            }
        }
    }

    if !errs.is_empty() {
        return Err(errs);
    }
    for ip in new_ips {
        pending.ips.insert(ip, (owner.clone(), now));
    }
    for p in new_ports {
        pending.ports.insert(p, (owner.clone(), now));
    }
    Ok(())
}

/// The `kubernetes` Service in `default`, as the API server keeps it: the first address of the
/// range, 443 → the API server's own port.
pub fn kubernetes_service(cidr: &Ipv4Cidr, port: u16) -> Value {
    let ip = cidr
        .nth(1)
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "10.96.0.1".into());
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ipFamilies": ["IPv4"],
                 "ipFamilyPolicy": "SingleStack",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
                 "sessionAffinity": "None", "type": "ClusterIP"},
        "status": {"loadBalancer": {}},
    });
    default_service(&mut svc);
    svc
}

/// The `kubernetes` Service's Endpoints and EndpointSlice: `hosts` (the API servers) at `port`.
pub fn kubernetes_endpoints(hosts: &[String], port: u16) -> (Value, Value) {
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": hosts.iter().map(|h| json!({"ip": h})).collect::<Vec<_>>(),
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": hosts.iter().map(|h| json!({"addresses": [h], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    (endpoints, slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, spec: Value) -> Value {
        let mut s = json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec});
        default_service(&mut s);
        prepare_create(&mut s);
        s
    }

    #[tokio::test]
    async fn allocations_honour_requests_and_conflicts() {
        let store = Store::in_memory().unwrap();
        let mut a = svc(
            "a",
            json!({"clusterIP": "10.96.0.50", "type": "NodePort",
                   "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        allocate(&store, &mut a).unwrap();
        assert_eq!(a["spec"]["clusterIPs"], json!(["10.96.0.50"]));
        assert_eq!(a["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(a["spec"]["externalTrafficPolicy"], "Cluster");
        store
            .create(
                &format!("{SERVICES_PREFIX}default/a"),
                serde_json::to_vec(&a).unwrap().into(),
            )
            .await
            .unwrap();
        let mut b = svc(
            "b",
            json!({"clusterIP": "10.96.0.50", "type": "NodePort",
                   "ports": [{"port": 80, "nodePort": 30080}, {"name": "x", "port": 81, "nodePort": 80}]}),
        );
        let errs = allocate(&store, &mut b).unwrap_err();
        let msgs: Vec<String> = errs.0.iter().map(|e| e.message()).collect();
        assert_eq!(
            msgs,
            vec![
                "spec.clusterIPs: Invalid value: []string{\"10.96.0.50\"}: failed to allocate IP 10.96.0.50: provided IP is already allocated".to_string(),
                "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated".to_string(),
                "spec.ports[1].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767".to_string(),
            ]
        );
        let mut c = svc("c", json!({"ports": [{"port": 80}]}));
        allocate(&store, &mut c).unwrap();
        let ip: Ipv4Addr = c["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(ip != Ipv4Addr::new(10, 96, 0, 10) && ip != Ipv4Addr::new(10, 96, 0, 50));
        assert!(c["spec"]["ports"][0].get("nodePort").is_none());
        // The same owner may ask again (a retried create) without conflicting with itself.
        let mut c2 = svc(
            "c",
            json!({"clusterIP": ip.to_string(), "ports": [{"port": 80}]}),
        );
        allocate(&store, &mut c2).unwrap();
    }

    #[test]
    fn headless_and_updates() {
        let store = Store::in_memory().unwrap();
        let mut h = svc("h", json!({"clusterIP": "None", "selector": {"app": "x"}}));
        allocate(&store, &mut h).unwrap();
        assert_eq!(h["spec"]["clusterIPs"], json!(["None"]));
        let mut errs = Errors::new();
        validate_service(&h, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");

        let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7"],
            "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}});
        let mut new =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        prepare_update(&old, &mut new);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.7");
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30001);
        let mut changed = old.clone();
        changed["spec"]["clusterIP"] = json!("10.96.0.8");
        prepare_update(&old, &mut changed);
        let mut errs = Errors::new();
        validate_service_update(&old, &changed, &mut errs);
        assert_eq!(
            errs.0[0].message(),
            "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.8\"}: may not change once set"
        );
        let mut to_cluster_ip = old.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        prepare_update(&old, &mut to_cluster_ip);
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
    }
}
