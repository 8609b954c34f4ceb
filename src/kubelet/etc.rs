//! The /etc files a pod's containers get: the managed hosts file, hostname and resolv.conf by
//! dnsPolicy and dnsConfig.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Pod;

pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// The pod's hostname and, with a subdomain, its fully qualified name.
pub fn hostname(pod: &Pod) -> (String, Option<String>) {
    let spec = pod.spec.as_ref();
    let name = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    // A hostname is at most 63 characters; kubelet truncates longer pod names.
    let name: String = name.chars().take(63).collect();
    let name = name.trim_end_matches(['-', '.']).to_string();
    let fqdn = spec
        .and_then(|s| s.subdomain.clone())
        .filter(|d| !d.is_empty())
        .map(|sub| {
            format!(
                "{name}.{sub}.{}.svc.{CLUSTER_DOMAIN}",
                pod.metadata.namespace.as_deref().unwrap_or("default")
            )
        });
    (name, fqdn)
}

fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The kubelet-managed /etc/hosts.
pub fn hosts_file(pod: &Pod, pod_ip: Option<&str>) -> String {
    let mut out = String::new();
    if host_network(pod) {
        out.push_str("# Kubernetes-managed hosts file (host network).\n");
        out.push_str(&std::fs::read_to_string("/etc/hosts").unwrap_or_default());
    } else {
        out.push_str("# Kubernetes-managed hosts file.\n");
        out.push_str("127.0.0.1\tlocalhost\n");
        out.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
        out.push_str("fe00::0\tip6-localnet\n");
        out.push_str("fe00::0\tip6-mcastprefix\n");
        out.push_str("fe00::1\tip6-allnodes\n");
        out.push_str("fe00::2\tip6-allrouters\n");
        if let Some(ip) = pod_ip {
            let (name, fqdn) = hostname(pod);
            match fqdn {
                Some(f) => out.push_str(&format!("{ip}\t{f}\t{name}\n")),
                None => out.push_str(&format!("{ip}\t{name}\n")),
            }
        }
    }
    let aliases = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.unwrap_or_default();
            if !names.is_empty() {
                out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
            }
        }
    }
    out
}

/// The 10th address of the service subnet: where cluster DNS answers.
pub fn cluster_dns(service_subnet: &str) -> Option<Ipv4Addr> {
    let (base, _) = service_subnet.split_once('/')?;
    let ip: Ipv4Addr = base.parse().ok()?;
    Some(Ipv4Addr::from(u32::from(ip).wrapping_add(10)))
}

struct Resolv {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

fn parse_resolv(text: &str) -> Resolv {
    let mut r = Resolv {
        nameservers: Vec::new(),
        searches: Vec::new(),
        options: Vec::new(),
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => r.nameservers.extend(words.map(str::to_string)),
            Some("search" | "domain") => r.searches = words.map(str::to_string).collect(),
            Some("options") => r.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    r
}

/// resolv.conf by dnsPolicy (ClusterFirst, ClusterFirstWithHostNet, Default, None) with
/// dnsConfig merged in. `node_dns` stands in for the node's loopback nameservers (Docker's
/// 127.0.0.11), which a pod in its own network namespace cannot reach: the node forwards
/// queries there for `dnsPolicy: Default` pods (`dns/`, forward-only on the pods' gateway).
pub fn resolv_conf(pod: &Pod, service_subnet: &str, node_dns: Option<Ipv4Addr>) -> String {
    let node = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    resolv_conf_from(pod, service_subnet, node_dns, &node)
}

fn resolv_conf_from(
    pod: &Pod,
    service_subnet: &str,
    node_dns: Option<Ipv4Addr>,
    node_resolv: &str,
) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.clone())
        .unwrap_or_else(|| "ClusterFirst".into());
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut node = parse_resolv(node_resolv);
    if !host_network(pod) {
        let mut reachable = Vec::new();
        for ns in std::mem::take(&mut node.nameservers) {
            let ns = match ns.parse::<std::net::IpAddr>() {
                Ok(ip) if ip.is_loopback() => match node_dns {
                    Some(d) => d.to_string(),
                    None => continue,
                },
                _ => ns,
            };
            if !reachable.contains(&ns) {
                reachable.push(ns);
            }
        }
        node.nameservers = reachable;
    }
    let cluster_first = match policy.as_str() {
        "ClusterFirst" => !host_network(pod),
        "ClusterFirstWithHostNet" => true,
        _ => false,
    };
    let mut r = if policy == "None" {
        Resolv {
            nameservers: Vec::new(),
            searches: Vec::new(),
            options: Vec::new(),
        }
    } else if cluster_first {
        Resolv {
            nameservers: cluster_dns(service_subnet)
                .map(|ip| vec![ip.to_string()])
                .unwrap_or_default(),
            searches: vec![
                format!("{namespace}.svc.{CLUSTER_DOMAIN}"),
                format!("svc.{CLUSTER_DOMAIN}"),
                CLUSTER_DOMAIN.to_string(),
            ],
            options: vec!["ndots:5".to_string()],
        }
    } else {
        node
    };
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        for ns in cfg.nameservers.iter().flatten() {
            if !r.nameservers.contains(ns) {
                r.nameservers.push(ns.clone());
            }
        }
        for s in cfg.searches.iter().flatten() {
            if !r.searches.contains(s) {
                r.searches.push(s.clone());
            }
        }
        for o in cfg.options.iter().flatten() {
            let text = match &o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = text.split(':').next().unwrap_or_default().to_string();
            r.options
                .retain(|existing| existing.split(':').next() != Some(name.as_str()));
            r.options.push(text);
        }
    }
    r.nameservers.truncate(3);
    r.searches.truncate(32);
    let mut out = String::new();
    if !r.searches.is_empty() {
        out.push_str(&format!("search {}\n", r.searches.join(" ")));
    }
    for ns in &r.nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    if !r.options.is_empty() {
        out.push_str(&format!("options {}\n", r.options.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn default_policy_replaces_the_nodes_loopback_resolver() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "d", "namespace": "x"},
            "spec": {"containers": [], "dnsPolicy": "Default"}}),
        );
        let node = "search example.lan\nnameserver 127.0.0.11\noptions ndots:0\n";
        assert_eq!(
            resolv_conf_from(&p, "10.96.0.0/12", Some(Ipv4Addr::new(10, 244, 1, 1)), node),
            "search example.lan\nnameserver 10.244.1.1\noptions ndots:0\n"
        );
    }

    #[test]
    fn cluster_first_and_none_with_config() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"containers": []}}),
        );
        assert_eq!(
            resolv_conf(&p, "10.96.0.0/12", None),
            "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        let p = pod(
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["a.b"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}}),
        );
        assert_eq!(
            resolv_conf(&p, "10.96.0.0/12", None),
            "search a.b\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn hosts_file_names_the_pod_and_aliases() {
        let p = pod(
            serde_json::json!({"metadata": {"name": "web", "namespace": "shop"}, "spec": {"containers": [],
            "hostname": "h", "subdomain": "s", "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["foo", "bar"]}]}}),
        );
        let text = hosts_file(&p, Some("10.244.0.5"));
        assert!(text.starts_with("# Kubernetes-managed hosts file.\n"));
        assert!(text.contains("10.244.0.5\th.s.shop.svc.cluster.local\th\n"));
        assert!(text.ends_with("# Entries added by HostAliases.\n1.2.3.4\tfoo\tbar\n"));
    }
}
