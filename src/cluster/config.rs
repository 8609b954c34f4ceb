//! The cluster config file (`kcluster create --config cluster.yaml`): which nodes to run, what
//! to publish and mount on each, and the cluster's address ranges.
//!
//! Parsing is strict, like kind's: a misspelt field is an error that names the field and its
//! line, never a silently ignored setting.

// The CLI's `create` reads this; until it is merged only tests do.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use super::cidr::Ipv4Cidr;

pub const API_VERSION: &str = "kcluster.dev/v1alpha1";
pub const KIND: &str = "Cluster";
/// Node names are "<cluster>-server", "<cluster>-worker12"…, and both they and the containers'
/// hostnames must stay within a DNS label's 63 characters.
pub const MAX_CLUSTER_NAME_LEN: usize = 40;
/// Each node gets a block of this size from the pod subnet, as kube-controller-manager's
/// default node-cidr-mask-size; the pod subnet must have room for one per node.
pub const NODE_POD_PREFIX_LEN: u8 = 24;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    /// Empty when the file leaves it out; validation then says what to write.
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    /// Overridden by `--name`; the CLI falls back to its default name when neither is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default = "default_nodes")]
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub networking: Networking,
    #[serde(default)]
    pub images: Images,
    /// The built-in Ingress controller and its host ports.
    #[serde(default)]
    pub ingress: crate::ingress::IngressConfig,
    #[serde(default, skip_serializing_if = "Registries::is_empty")]
    pub registries: Registries,
}

/// Where nodes pull from (containerd's `hosts.toml`, as one table).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Registries {
    /// Registry name as image references spell it (`localhost:5001`, `docker.io`) → the
    /// endpoints tried in order before the registry itself. `kcluster create --registry` adds
    /// `localhost:<port>` → `http://<registry>:5000`; users add their own mirrors and
    /// pull-through caches.
    pub mirrors: BTreeMap<String, Mirror>,
}

impl Registries {
    pub fn is_empty(&self) -> bool {
        self.mirrors.is_empty()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Mirror {
    /// `http://host:port` (plain HTTP), `https://host[:port]`, or `host:port` (HTTPS, then
    /// plain HTTP on private addresses).
    pub endpoints: Vec<String>,
}

/// How nodes get images.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Images {
    /// A pull that cannot reach the registry (or any failed pull of a `kcluster image load`ed
    /// image) uses the node's image of that name, with a PullFallback event. false: kubelet's
    /// strict behaviour.
    pub pull_fallback: bool,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            pull_fallback: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeConfig {
    pub role: Role,
    /// Extra labels for the Node object.
    pub labels: BTreeMap<String, String>,
    pub extra_port_mappings: Vec<PortMapping>,
    pub extra_mounts: Vec<Mount>,
    /// CPUs, memory and reservations (`--node-cpus/--node-memory` set them on every node).
    #[serde(skip_serializing_if = "is_default")]
    pub resources: crate::noderesources::NodeResources,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Servers one cluster may have: each runs an etcd member, and etcd advises against more.
pub const MAX_SERVERS: usize = 7;

/// Like kind, a node without a role is the control plane ("server" here).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Server,
    Worker,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PortMapping {
    /// Required: 0 only means "left out", which validation reports.
    pub container_port: u16,
    /// 0 lets Docker pick a free host port.
    pub host_port: u16,
    pub listen_address: IpAddr,
    pub protocol: Protocol,
}

impl Default for PortMapping {
    fn default() -> Self {
        Self {
            container_port: 0,
            host_port: 0,
            listen_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            protocol: Protocol::Tcp,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The spelling Docker and Kubernetes use, and the config file too.
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Mount {
    /// Both paths are required and absolute; empty means "left out".
    pub host_path: PathBuf,
    pub container_path: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Networking {
    /// Host address the API server is published on, and so the one in the kubeconfig.
    pub api_server_address: IpAddr,
    /// 0 lets kcluster pick a free port.
    pub api_server_port: u16,
    pub pod_subnet: Ipv4Cidr,
    pub service_subnet: Ipv4Cidr,
    /// Host address NodePort and LoadBalancer Services are published on.
    pub host_address: IpAddr,
    /// Publish every NodePort Service on the host (LoadBalancer Services always are).
    pub publish_node_ports: bool,
}

impl Default for Networking {
    fn default() -> Self {
        Self {
            api_server_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            api_server_port: 0,
            pod_subnet: cidr(Ipv4Addr::new(10, 244, 0, 0), 16),
            service_subnet: cidr(Ipv4Addr::new(10, 96, 0, 0), 16),
            host_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            publish_node_ports: true,
        }
    }
}

/// For the built-in defaults only, which are known to be valid.
fn cidr(network: Ipv4Addr, prefix_len: u8) -> Ipv4Cidr {
    match Ipv4Cidr::new(network, prefix_len) {
        Ok(cidr) => cidr,
        Err(e) => unreachable!("built-in subnet {network}/{prefix_len}: {e}"),
    }
}

fn default_nodes() -> Vec<NodeConfig> {
    vec![NodeConfig::default()]
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            name: None,
            nodes: default_nodes(),
            networking: Networking::default(),
            images: Images::default(),
            ingress: crate::ingress::IngressConfig::default(),
            registries: Registries::default(),
        }
    }
}

impl ClusterConfig {
    /// Parses and validates `text`; `source` (usually the file name) starts every message.
    pub fn parse(text: &str, source: &str) -> Result<Self> {
        ensure!(
            !text.trim().is_empty(),
            "{source} is empty; a cluster config needs at least \
             \"apiVersion: {API_VERSION}\" and \"kind: {KIND}\""
        );
        let config: Self =
            serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!(describe(source, &e)))?;
        // One flat message, so "{}" and "{:#}" print the same complete text.
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{source}: {e}"))?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the cluster config {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// One server and `workers` workers, everything else defaulted: the config behind
    /// `kcluster create` without `--config`.
    pub fn default_for(name: &str, workers: usize) -> Self {
        let mut nodes = default_nodes();
        nodes.extend((0..workers).map(|_| NodeConfig {
            role: Role::Worker,
            ..NodeConfig::default()
        }));
        Self {
            name: Some(name.to_owned()),
            nodes,
            ..Self::default()
        }
    }

    pub fn servers(&self) -> usize {
        self.nodes.iter().filter(|n| n.role == Role::Server).count()
    }

    pub fn workers(&self) -> usize {
        self.nodes.iter().filter(|n| n.role == Role::Worker).count()
    }

    /// Checks everything the types cannot. Reports every problem at once, each starting with
    /// the path of the field at fault, so one edit round fixes the whole file.
    pub fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        self.check_header(&mut problems);
        self.check_nodes(&mut problems);
        self.check_host_ports(&mut problems);
        self.check_subnets(&mut problems);
        self.check_ingress(&mut problems);
        self.check_registries(&mut problems);
        match problems.as_slice() {
            [] => Ok(()),
            [one] => bail!("{one}"),
            many => {
                let mut message = format!("{} problems:", many.len());
                for problem in many {
                    let _ = write!(message, "\n  - {problem}");
                }
                bail!(message)
            }
        }
    }

    fn check_ingress(&self, problems: &mut Vec<String>) {
        let i = &self.ingress;
        if i.enabled {
            if i.http_port == 0 || i.https_port == 0 {
                problems.push(
                    "ingress.httpPort and ingress.httpsPort must be between 1 and 65535".into(),
                );
            } else if let Some(c) = i
                .default_certificate
                .as_deref()
                .filter(|c| c.split('/').filter(|p| !p.is_empty()).count() != 2)
            {
                problems.push(format!(
                    "ingress.defaultCertificate {c:?} must name a TLS secret as namespace/name"
                ));
            } else if i.http_port == i.https_port {
                problems.push(format!(
                    "ingress.httpPort and ingress.httpsPort are both {}; give them different ports",
                    i.http_port
                ));
            }
        }
    }

    fn check_registries(&self, problems: &mut Vec<String>) {
        for (name, mirror) in &self.registries.mirrors {
            let field = format!("registries.mirrors[{name:?}]");
            if name.is_empty() || name.contains('/') || name.contains("://") {
                problems.push(format!(
                    "{field}: a registry is named as image references spell it, e.g. \"localhost:5001\" or \"docker.io\""
                ));
            }
            if mirror.endpoints.is_empty() {
                problems.push(format!(
                    "{field}.endpoints: empty; list at least one, e.g. \"http://kcluster-registry:5000\""
                ));
            }
            for (i, endpoint) in mirror.endpoints.iter().enumerate() {
                let host = endpoint
                    .strip_prefix("http://")
                    .or_else(|| endpoint.strip_prefix("https://"))
                    .unwrap_or(endpoint)
                    .trim_end_matches('/');
                let valid = !host.is_empty()
                    && !host.contains('/')
                    && !host.contains("://")
                    && format!("http://{host}/").parse::<http::Uri>().is_ok();
                if !valid {
                    problems.push(format!(
                        "{field}.endpoints[{i}]: {endpoint:?} is not an endpoint; write http://host:port or https://host[:port] (no path)"
                    ));
                }
            }
        }
    }

    fn check_header(&self, problems: &mut Vec<String>) {
        for (field, value, expected) in [
            ("apiVersion", &self.api_version, API_VERSION),
            ("kind", &self.kind, KIND),
        ] {
            if value.is_empty() {
                problems.push(format!("{field}: missing; add \"{field}: {expected}\""));
            } else if value != expected {
                problems.push(format!(
                    "{field}: \"{value}\" is not supported; this kcluster reads \"{expected}\""
                ));
            }
        }
        if let Some(name) = &self.name
            && let Err(e) = validate_cluster_name(name)
        {
            problems.push(format!("name: {e}"));
        }
    }

    fn check_nodes(&self, problems: &mut Vec<String>) {
        let servers: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.role == Role::Server)
            .map(|(i, _)| format!("nodes[{i}]"))
            .collect();
        match servers.len() {
            1..=MAX_SERVERS => {}
            0 => problems.push(
                "nodes: no node has \"role: server\"; a cluster needs at least one".to_owned(),
            ),
            n => problems.push(format!(
                "nodes: {n} nodes have \"role: server\" ({}); at most {MAX_SERVERS} are \
                 supported (etcd's own advice), make the others \"role: worker\"",
                servers.join(", ")
            )),
        }

        for (i, node) in self.nodes.iter().enumerate() {
            node.resources.check(
                &format!("nodes[{i}].resources"),
                node.role == Role::Server,
                problems,
            );
            for (key, value) in &node.labels {
                if let Err(e) = check_label(key, value) {
                    problems.push(format!("nodes[{i}].labels: {e}"));
                }
            }
            for (j, port) in node.extra_port_mappings.iter().enumerate() {
                if port.container_port == 0 {
                    problems.push(format!(
                        "nodes[{i}].extraPortMappings[{j}].containerPort: missing; \
                         give the port (1-65535) to publish from the node"
                    ));
                }
            }
            let mut container_paths = BTreeSet::new();
            for (k, mount) in node.extra_mounts.iter().enumerate() {
                let field = format!("nodes[{i}].extraMounts[{k}]");
                check_absolute(&format!("{field}.hostPath"), &mount.host_path, problems);
                check_absolute(
                    &format!("{field}.containerPath"),
                    &mount.container_path,
                    problems,
                );
                if !mount.container_path.as_os_str().is_empty()
                    && !container_paths.insert(&mount.container_path)
                {
                    problems.push(format!(
                        "{field}.containerPath: {} is mounted twice on this node",
                        mount.container_path.display()
                    ));
                }
            }
        }
    }

    /// Two bindings of one host port fail only at `docker run`, halfway through creating the
    /// cluster; catching them here costs nothing.
    fn check_host_ports(&self, problems: &mut Vec<String>) {
        let mut bindings: Vec<(String, &PortMapping)> = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            for (j, port) in node.extra_port_mappings.iter().enumerate() {
                // Port 0 asks Docker for a fresh port each time: those never collide.
                if port.host_port == 0 {
                    continue;
                }
                let field = format!("nodes[{i}].extraPortMappings[{j}]");
                if let Some((earlier, _)) = bindings.iter().find(|(_, other)| {
                    other.host_port == port.host_port
                        && other.protocol == port.protocol
                        && addresses_collide(other.listen_address, port.listen_address)
                }) {
                    problems.push(format!(
                        "{field}: hostPort {} ({} on {}) is already taken by {earlier}",
                        port.host_port, port.protocol, port.listen_address
                    ));
                }
                bindings.push((field, port));
            }
        }
        let api = &self.networking;
        if api.api_server_port != 0 {
            for (field, port) in &bindings {
                if port.host_port == api.api_server_port
                    && port.protocol == Protocol::Tcp
                    && addresses_collide(port.listen_address, api.api_server_address)
                {
                    problems.push(format!(
                        "networking.apiServerPort: {} on {} is also the hostPort of {field}",
                        api.api_server_port, api.api_server_address
                    ));
                }
            }
        }
    }

    fn check_subnets(&self, problems: &mut Vec<String>) {
        let net = &self.networking;
        if net.pod_subnet.overlaps(&net.service_subnet) {
            problems.push(format!(
                "networking.podSubnet {} and networking.serviceSubnet {} overlap; \
                 pick disjoint ranges, such as the defaults 10.244.0.0/16 and 10.96.0.0/16",
                net.pod_subnet, net.service_subnet
            ));
        }
        let pod_prefix = net.pod_subnet.prefix_len();
        let node_blocks = if pod_prefix <= NODE_POD_PREFIX_LEN {
            1u64 << (NODE_POD_PREFIX_LEN - pod_prefix)
        } else {
            0
        };
        if node_blocks < self.nodes.len() as u64 {
            problems.push(format!(
                "networking.podSubnet: {} is too small: each of the {} nodes gets a \
                 /{NODE_POD_PREFIX_LEN} from it, so it needs a prefix of at most /{}",
                net.pod_subnet,
                self.nodes.len(),
                NODE_POD_PREFIX_LEN
                    .saturating_sub(self.nodes.len().next_power_of_two().ilog2() as u8)
            ));
        }
        // kube-apiserver refuses service ranges over 2^20 addresses, and the range must hold
        // the kubernetes service (.1) and cluster DNS (.10).
        let service_prefix = net.service_subnet.prefix_len();
        if !(12..=28).contains(&service_prefix) {
            problems.push(format!(
                "networking.serviceSubnet: {} must have a prefix from /12 to /28",
                net.service_subnet
            ));
        }
    }
}

/// Lowercase DNS-1123 label of at most 40 characters: it becomes part of container, network
/// and node names, and of the kubeconfig context "kcluster-<name>".
pub fn validate_cluster_name(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty(),
        "the cluster name is empty; use lowercase letters, digits and '-', e.g. \"dev\""
    );
    ensure!(
        name.len() <= MAX_CLUSTER_NAME_LEN,
        "the cluster name \"{name}\" is {} characters long; the limit is {MAX_CLUSTER_NAME_LEN} \
         because node names add suffixes such as \"-worker12\"",
        name.len()
    );
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let hint = if name.chars().any(|c| c.is_ascii_uppercase()) {
            format!("; try \"{}\"", name.to_ascii_lowercase())
        } else {
            String::new()
        };
        bail!(
            "the cluster name \"{name}\" contains {bad:?}; only lowercase letters, digits and \
             '-' are allowed{hint}"
        );
    }
    ensure!(
        !name.starts_with('-') && !name.ends_with('-'),
        "the cluster name \"{name}\" must start and end with a letter or digit"
    );
    Ok(())
}

/// Turns serde_yaml's "path: message at line L column C" into
/// "source: line L, column C: path: message", with "quotes" for its `backticks`.
fn describe(source: &str, err: &serde_yaml::Error) -> String {
    let message = err.to_string();
    let Some(location) = err.location() else {
        return format!("{source}: {}", message.replace('`', "\""));
    };
    let (line, column) = (location.line(), location.column());
    // Syntax errors carry the position mid-sentence, before ", while parsing …": drop it
    // wherever it is, since it now leads the message.
    let message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
    format!(
        "{source}: line {line}, column {column}: {}",
        message.replace('`', "\"")
    )
}

fn check_absolute(field: &str, path: &Path, problems: &mut Vec<String>) {
    if path.as_os_str().is_empty() {
        problems.push(format!("{field}: missing; give an absolute path"));
    } else if !path.is_absolute() {
        problems.push(format!(
            "{field}: \"{}\" is not an absolute path; write it in full, e.g. /home/me/{}",
            path.display(),
            path.display()
        ));
    }
}

/// Whether two listeners on the same port and protocol would fight over it: a wildcard
/// address takes the port on every address.
fn addresses_collide(a: IpAddr, b: IpAddr) -> bool {
    a == b || a.is_unspecified() || b.is_unspecified()
}

/// Kubernetes label rules: `[prefix/]name`, the prefix a DNS subdomain, name and value at most
/// 63 characters of alphanumerics, '-', '_' and '.', beginning and ending alphanumeric.
fn check_label(key: &str, value: &str) -> Result<()> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        ensure!(
            is_dns_subdomain(prefix),
            "key \"{key}\": the prefix before '/' must be a lowercase DNS name such as example.com"
        );
    }
    ensure!(
        is_label_word(name),
        "key \"{key}\" is not a valid label name (at most 63 letters, digits, '-', '_' or '.', \
         starting and ending with a letter or digit)"
    );
    ensure!(
        value.is_empty() || is_label_word(value),
        "value \"{value}\" of \"{key}\" is not a valid label value (at most 63 letters, digits, \
         '-', '_' or '.', starting and ending with a letter or digit)"
    );
    Ok(())
}

fn is_label_word(s: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && edge_ok(s.chars().next())
        && edge_ok(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let edge_ok =
                |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            part.len() <= 63
                && edge_ok(part.chars().next())
                && edge_ok(part.chars().last())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "apiVersion: kcluster.dev/v1alpha1\nkind: Cluster\n";

    fn parse(body: &str) -> Result<ClusterConfig> {
        ClusterConfig::parse(&format!("{HEADER}{body}"), "test.yaml")
    }

    /// The full error text of a config that must be refused.
    fn error_of(body: &str) -> String {
        match parse(body) {
            Ok(config) => panic!("accepted {body:?} as {config:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    fn assert_mentions(message: &str, parts: &[&str]) {
        for part in parts {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
    }

    #[test]
    fn registry_mirrors_parse_and_bad_endpoints_are_named() {
        let config = parse(
            "registries:\n  mirrors:\n    \"localhost:5001\": {endpoints: [\"http://kcluster-registry:5000\"]}\n",
        )
        .unwrap();
        assert_eq!(
            config.registries.mirrors["localhost:5001"].endpoints,
            vec!["http://kcluster-registry:5000".to_string()]
        );
        let message = error_of(
            "registries:\n  mirrors:\n    \"docker.io\": {endpoints: []}\n    \"x/y\": {endpoints: [\"http://a:1/path\"]}\n",
        );
        assert_mentions(
            &message,
            &[
                "registries.mirrors[\"docker.io\"].endpoints: empty",
                "registries.mirrors[\"x/y\"]: a registry is named as image references spell it",
                "registries.mirrors[\"x/y\"].endpoints[0]: \"http://a:1/path\" is not an endpoint",
            ],
        );
        assert_mentions(
            &error_of("registries:\n  mirror: {}\n"),
            &["registries: unknown field \"mirror\", expected \"mirrors\""],
        );
    }

    #[test]
    fn a_minimal_file_takes_every_default() -> Result<()> {
        let config = parse("")?;
        assert_eq!(config, ClusterConfig::default());
        assert_eq!(config.name, None);
        assert_eq!((config.servers(), config.workers()), (1, 0));
        let net = &config.networking;
        assert_eq!(net.api_server_address, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(net.api_server_port, 0);
        assert_eq!(net.pod_subnet.to_string(), "10.244.0.0/16");
        assert_eq!(net.service_subnet.to_string(), "10.96.0.0/16");
        assert!(config.images.pull_fallback);
        Ok(())
    }

    #[test]
    fn pull_fallback_can_be_turned_off_and_is_checked() -> Result<()> {
        assert!(
            !parse("images: {pullFallback: false}\n")?
                .images
                .pull_fallback
        );
        assert!(parse("images: {}\n")?.images.pull_fallback);
        assert_mentions(
            &error_of("images: {pullFallbak: false}\n"),
            &["pullFallbak"],
        );
        assert_mentions(&error_of("images: {pullFallback: maybe}\n"), &["maybe"]);
        Ok(())
    }

    #[test]
    fn the_ingress_section_is_checked() -> Result<()> {
        let c = parse("ingress: {httpPort: 8080, httpsPort: 8443, defaultCertificate: web/tls}\n")?;
        assert_eq!((c.ingress.http_port, c.ingress.https_port), (8080, 8443));
        assert!(c.ingress.enabled);
        assert!(!parse("ingress: {enabled: false}\n")?.ingress.enabled);
        assert_eq!(parse("ingress: {}\n")?.ingress.http_port, 80);
        assert_mentions(&error_of("ingress: {httpPort: 0}\n"), &["ingress.httpPort"]);
        assert_mentions(
            &error_of("ingress: {httpPort: 8080, httpsPort: 8080}\n"),
            &["8080"],
        );
        assert_mentions(
            &error_of("ingress: {defaultCertificate: tls}\n"),
            &["namespace/name"],
        );
        assert_mentions(&error_of("ingress: {httpport: 1}\n"), &["httpport"]);
        Ok(())
    }

    #[test]
    fn omitted_nested_fields_take_their_defaults() -> Result<()> {
        let config = parse(
            "nodes:\n\
             - {}\n\
             - role: worker\n  \
               extraPortMappings: [{containerPort: 80}]\n  \
               extraMounts: [{hostPath: /a, containerPath: /b}]\n\
             networking: {apiServerPort: 6443}\n",
        )?;
        assert_eq!(config.nodes[0], NodeConfig::default());
        assert_eq!(config.nodes[0].role, Role::Server);
        let port = &config.nodes[1].extra_port_mappings[0];
        assert_eq!(port.host_port, 0);
        assert_eq!(port.listen_address, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(port.protocol, Protocol::Tcp);
        assert!(!config.nodes[1].extra_mounts[0].read_only);
        assert_eq!(config.networking.api_server_port, 6443);
        assert_eq!(config.networking.pod_subnet.to_string(), "10.244.0.0/16");
        Ok(())
    }

    #[test]
    fn an_unknown_field_is_named_with_its_line() {
        let text = "apiVersion: kcluster.dev/v1alpha1\n\
                    kind: Cluster\n\
                    name: dev\n\
                    nodes:\n\
                    - role: server\n  \
                      labels: {tier: frontend}\n  \
                      extraPortMapings:\n  \
                      - containerPort: 80\n";
        let message = match ClusterConfig::parse(text, "examples/bad.yaml") {
            Ok(_) => panic!("misspelt field accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            message.starts_with(
                "examples/bad.yaml: line 7, column 3: nodes[0]: unknown field \"extraPortMapings\", \
                 expected one of"
            ),
            "{message}"
        );
        assert_mentions(&message, &["\"extraPortMappings\""]);

        let top = error_of("networkin: {}\n");
        assert_mentions(&top, &["line 3", "unknown field \"networkin\""]);
        let deep = error_of("networking: {podSubnets: 10.0.0.0/16}\n");
        assert_mentions(&deep, &["line 3", "networking", "\"podSubnets\""]);
    }

    #[test]
    fn wrong_or_missing_header_is_refused() {
        let message = match ClusterConfig::parse(
            "apiVersion: kind.x-k8s.io/v1alpha4\nkind: Cluster\n",
            "c.yaml",
        ) {
            Ok(_) => panic!("kind's apiVersion accepted"),
            // Plain Display: the CLI may print errors either way.
            Err(e) => e.to_string(),
        };
        assert_mentions(
            &message,
            &[
                "c.yaml",
                "apiVersion",
                "kind.x-k8s.io/v1alpha4",
                API_VERSION,
            ],
        );

        let message = match ClusterConfig::parse(
            "apiVersion: kcluster.dev/v1alpha1\nkind: Config\n",
            "c.yaml",
        ) {
            Ok(_) => panic!("wrong kind accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert_mentions(&message, &["kind: \"Config\" is not supported"]);

        let message = match ClusterConfig::parse("name: dev\n", "c.yaml") {
            Ok(_) => panic!("missing header accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert_mentions(
            &message,
            &["2 problems", "apiVersion: missing", "kind: missing"],
        );

        let message = match ClusterConfig::parse("  \n", "c.yaml") {
            Ok(_) => panic!("empty file accepted"),
            Err(e) => format!("{e:#}"),
        };
        assert_mentions(&message, &["c.yaml is empty"]);
    }

    #[test]
    fn a_yaml_syntax_error_gives_its_position_once() {
        let message = error_of("nodes:\n  - role: server\n   labels: {}\n");
        assert!(
            message
                .starts_with("test.yaml: line 5, column 4: did not find expected '-' indicator,"),
            "{message}"
        );
        assert_eq!(message.matches("line 5").count(), 1, "{message}");
    }

    #[test]
    fn one_to_seven_servers_are_required() {
        let none = error_of("nodes: [{role: worker}]\n");
        assert_mentions(&none, &["nodes: no node has \"role: server\""]);
        let three = parse("nodes: [{role: server}, {role: worker}, {}, {role: server}]\n")
            .expect("three servers are a valid config");
        assert_eq!((three.servers(), three.workers()), (3, 1));
        let eight = error_of(&format!("nodes: [{}]\n", ["{}"; 8].join(", ")));
        assert_mentions(
            &eight,
            &[
                "8 nodes have \"role: server\"",
                "nodes[0], nodes[1]",
                "at most 7",
            ],
        );
        let empty = error_of("nodes: []\n");
        assert_mentions(&empty, &["no node"]);
    }

    #[test]
    fn a_bad_role_names_the_field_and_line() {
        let message = error_of("nodes:\n- role: master\n");
        assert_mentions(
            &message,
            &[
                "line 4",
                "nodes[0].role",
                "unknown variant \"master\"",
                "\"server\"",
                "\"worker\"",
            ],
        );
    }

    #[test]
    fn mount_paths_must_be_absolute() {
        let message = error_of(
            "nodes:\n- extraMounts:\n  - {hostPath: data, containerPath: /data}\n  \
             - {hostPath: /tmp, containerPath: tmp}\n  - {containerPath: /x}\n  \
             - {hostPath: /y, containerPath: /data}\n",
        );
        assert_mentions(
            &message,
            &[
                "4 problems",
                "nodes[0].extraMounts[0].hostPath: \"data\" is not an absolute path",
                "nodes[0].extraMounts[1].containerPath: \"tmp\" is not an absolute path",
                "nodes[0].extraMounts[2].hostPath: missing",
                "nodes[0].extraMounts[3].containerPath: /data is mounted twice",
            ],
        );
    }

    #[test]
    fn host_port_collisions_are_refused() {
        let same = error_of(
            "nodes:\n- extraPortMappings: [{containerPort: 80, hostPort: 8080, listenAddress: 127.0.0.1}]\n\
             - role: worker\n  extraPortMappings: [{containerPort: 81, hostPort: 8080, listenAddress: 127.0.0.1}]\n",
        );
        assert_mentions(
            &same,
            &[
                "nodes[1].extraPortMappings[0]: hostPort 8080 (TCP on 127.0.0.1)",
                "already taken by nodes[0].extraPortMappings[0]",
            ],
        );
        // The default 0.0.0.0 takes the port on every address.
        let wildcard = error_of(
            "nodes:\n- extraPortMappings:\n  - {containerPort: 80, hostPort: 8080}\n  \
             - {containerPort: 81, hostPort: 8080, listenAddress: 127.0.0.1}\n",
        );
        assert_mentions(&wildcard, &["nodes[0].extraPortMappings[1]: hostPort 8080"]);
        let api = error_of(
            "nodes:\n- extraPortMappings: [{containerPort: 6443, hostPort: 6443}]\n\
             networking: {apiServerPort: 6443}\n",
        );
        assert_mentions(
            &api,
            &[
                "networking.apiServerPort: 6443",
                "nodes[0].extraPortMappings[0]",
            ],
        );
        let missing = error_of("nodes:\n- extraPortMappings: [{hostPort: 80}]\n");
        assert_mentions(
            &missing,
            &["nodes[0].extraPortMappings[0].containerPort: missing"],
        );
    }

    #[test]
    fn distinct_bindings_of_one_port_are_fine() -> Result<()> {
        let config = parse(
            "nodes:\n- extraPortMappings:\n  \
             - {containerPort: 53, hostPort: 5353}\n  \
             - {containerPort: 53, hostPort: 5353, protocol: UDP}\n  \
             - {containerPort: 80, hostPort: 8080, listenAddress: 127.0.0.1}\n  \
             - {containerPort: 81, hostPort: 8080, listenAddress: 127.0.0.2}\n  \
             - {containerPort: 82}\n  - {containerPort: 83}\n",
        )?;
        assert_eq!(
            config.nodes[0].extra_port_mappings[1].protocol,
            Protocol::Udp
        );
        Ok(())
    }

    #[test]
    fn bad_values_name_the_field_and_line() {
        let protocol =
            error_of("nodes:\n- extraPortMappings: [{containerPort: 80, protocol: tcp}]\n");
        assert_mentions(&protocol, &["line 4", "protocol", "\"TCP\""]);
        let port = error_of("nodes:\n- extraPortMappings: [{containerPort: 70000}]\n");
        assert_mentions(&port, &["line 4", "containerPort", "70000"]);
        let address = error_of("networking:\n  apiServerAddress: localhost\n");
        assert_mentions(&address, &["line 4", "networking.apiServerAddress"]);
    }

    #[test]
    fn subnets_must_be_ipv4_cidrs_that_do_not_overlap() {
        let syntax = error_of("networking:\n  podSubnet: 10.244.0.0\n");
        assert_mentions(
            &syntax,
            &["line 4", "networking.podSubnet", "no prefix length"],
        );
        let v6 = error_of("networking:\n  serviceSubnet: fd00::/108\n");
        assert_mentions(&v6, &["networking.serviceSubnet", "not an IPv4 address"]);
        let host_bits = error_of("networking:\n  podSubnet: 10.244.1.0/16\n");
        assert_mentions(&host_bits, &["did you mean 10.244.0.0/16"]);
        let overlap =
            error_of("networking: {podSubnet: 10.0.0.0/8, serviceSubnet: 10.96.0.0/16}\n");
        assert_mentions(
            &overlap,
            &["networking.podSubnet 10.0.0.0/8 and networking.serviceSubnet 10.96.0.0/16 overlap"],
        );
        let tiny_pods = error_of(
            "nodes: [{}, {role: worker}, {role: worker}]\nnetworking: {podSubnet: 10.244.0.0/24}\n",
        );
        assert_mentions(
            &tiny_pods,
            &["networking.podSubnet", "3 nodes", "at most /22"],
        );
        let huge_services =
            error_of("networking: {serviceSubnet: 10.0.0.0/8, podSubnet: 192.168.0.0/16}\n");
        assert_mentions(
            &huge_services,
            &["networking.serviceSubnet: 10.0.0.0/8", "/12 to /28"],
        );
    }

    #[test]
    fn labels_follow_kubernetes_rules() -> Result<()> {
        let config =
            parse("nodes:\n- labels: {tier: frontend, example.com/zone: a-1, empty: \"\"}\n")?;
        assert_eq!(
            config.nodes[0].labels.get("tier").map(String::as_str),
            Some("frontend")
        );
        let message =
            error_of("nodes:\n- labels: {\"bad key\": x, ok: \"-bad\", Bad.Prefix/x: y}\n");
        assert_mentions(
            &message,
            &[
                "3 problems",
                "nodes[0].labels: key \"bad key\"",
                "value \"-bad\"",
                "Bad.Prefix/x",
            ],
        );
        Ok(())
    }

    #[test]
    fn the_name_in_the_file_is_validated() {
        let message = error_of("name: Dev_Cluster\n");
        assert_mentions(
            &message,
            &[
                "name: the cluster name \"Dev_Cluster\"",
                "try \"dev_cluster\"",
            ],
        );
    }

    #[test]
    fn cluster_names_are_short_lowercase_dns_labels() {
        for good in ["dev", "a", "k8s-1", "0day", &"x".repeat(40)] {
            assert!(validate_cluster_name(good).is_ok(), "{good}");
        }
        let message = |name: &str| match validate_cluster_name(name) {
            Ok(()) => panic!("{name:?} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(message("").contains("empty"));
        assert!(message(&"x".repeat(41)).contains("41 characters"));
        assert!(message("Dev").contains("try \"dev\""));
        assert!(message("my.cluster").contains("'.'"));
        assert!(message("my_cluster").contains("'_'"));
        assert!(message("-dev").contains("start and end"));
        assert!(message("dev-").contains("start and end"));
        assert!(message("dév").contains("'é'"));
    }

    #[test]
    fn a_full_config_round_trips() -> Result<()> {
        let config = parse(
            "name: dev\n\
             nodes:\n\
             - role: server\n  \
               labels: {tier: frontend}\n  \
               extraPortMappings:\n  \
               - {containerPort: 80, hostPort: 8080, listenAddress: 127.0.0.1, protocol: TCP}\n  \
               - {containerPort: 5000, hostPort: 5000, listenAddress: '::1', protocol: SCTP}\n  \
               extraMounts: [{hostPath: /tmp/data, containerPath: /data, readOnly: true}]\n\
             - role: worker\n\
             networking:\n  \
               apiServerAddress: 0.0.0.0\n  apiServerPort: 7443\n  \
               podSubnet: 172.16.0.0/12\n  serviceSubnet: 10.100.0.0/20\n",
        )?;
        let text = serde_yaml::to_string(&config)?;
        assert_eq!(ClusterConfig::parse(&text, "round-trip")?, config, "{text}");

        let generated = ClusterConfig::default_for("dev", 2);
        generated.validate()?;
        assert_eq!((generated.servers(), generated.workers()), (1, 2));
        assert_eq!(generated.name.as_deref(), Some("dev"));
        let text = serde_yaml::to_string(&generated)?;
        assert_eq!(
            ClusterConfig::parse(&text, "round-trip")?,
            generated,
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn load_names_a_missing_file() {
        let message = match ClusterConfig::load(Path::new("/nonexistent/cluster.yaml")) {
            Ok(_) => panic!("loaded a missing file"),
            Err(e) => format!("{e:#}"),
        };
        assert_mentions(&message, &["/nonexistent/cluster.yaml"]);
    }

    #[test]
    fn every_example_parses() -> Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let config = ClusterConfig::load(&path)?;
                seen.push((
                    path.file_name().map(|n| n.to_string_lossy().into_owned()),
                    config,
                ));
            }
        }
        let find = |name: &str| {
            seen.iter()
                .find(|(file, _)| file.as_deref() == Some(name))
                .map(|(_, config)| config)
                .with_context(|| format!("examples/{name} is missing"))
        };
        let three = find("three-nodes.yaml")?;
        assert_eq!((three.servers(), three.workers()), (1, 2));
        assert!(three.nodes.iter().any(|n| !n.labels.is_empty()));
        assert!(
            three
                .nodes
                .iter()
                .any(|n| !n.extra_port_mappings.is_empty())
        );
        assert_eq!(find("single-node.yaml")?.nodes.len(), 1);
        let ha = find("ha.yaml")?;
        assert_eq!((ha.servers(), ha.workers()), (3, 2));
        let sized = find("sized-nodes.yaml")?;
        assert!(
            sized
                .nodes
                .iter()
                .all(|n| n.resources.cpus.is_some() && n.resources.memory.is_some())
        );
        assert!(
            find("extra-mounts.yaml")?
                .nodes
                .iter()
                .any(|n| !n.extra_mounts.is_empty())
        );
        Ok(())
    }
}
