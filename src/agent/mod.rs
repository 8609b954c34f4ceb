//! The node agent (our kubelet). For now it registers the Node, keeps its status current and
//! renews its Lease, and sets up the node's pod network once the Node has a pod CIDR.

pub mod podnet;
pub mod pressure;
pub mod sysinfo;

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::node::NodeSettings;
use crate::node::client::{self, Credentials};

pub const LEASE_DURATION_SECONDS: i64 = 40;
const HEARTBEAT: Duration = Duration::from_secs(10);
/// The field manager a real kubelet writes as, so managedFields read as on any cluster.
const FIELD_MANAGER: &str = "kubelet";

pub fn version_string() -> String {
    crate::apiserver::git_version()
}

pub fn runtime_version() -> String {
    format!("kcluster://{}", env!("CARGO_PKG_VERSION"))
}

pub async fn run(
    settings: NodeSettings,
    host: String,
    port: u16,
    creds: Credentials,
) -> Result<()> {
    let state_dir = crate::node::state_dir();
    // The kubelet attaches pods through this once it is Some.
    let network: podnet::NetworkHandle =
        podnet::start(settings.clone(), host.clone(), port, creds.clone());
    let capacity = sysinfo::Capacity::detect(&state_dir);
    let thresholds = settings.eviction_thresholds();
    let allocatable = std::sync::Arc::new(sysinfo::LiveAllocatable::new(
        &capacity.allocatable(&settings.reserved, &thresholds),
    ));
    let node = crate::kubelet::NodeInfo {
        node_name: settings.node_name.clone(),
        service_subnet: settings.service_subnet.clone(),
        state_dir: state_dir.clone(),
        host_ip: sysinfo::internal_ip().map(|ip| ip.to_string()),
        allocatable: allocatable.clone(),
        network: network.clone(),
        pull_fallback: settings.pull_fallback,
    };
    // The service proxy (and cluster DNS) follow the same connection as the agent.
    let (service_clients, service_clients_rx) = tokio::sync::watch::channel(None);
    let mut proxy_synced = start_proxy(&settings, service_clients_rx.clone());
    start_dns(network.clone(), service_clients_rx.clone());
    let mut policies_synced = Some(crate::netpol::start(
        settings.node_name.clone(),
        service_clients_rx.clone(),
    ));
    // The pod manager outlives reconnections: it is handed each new client.
    let (clients, clients_rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        if let Err(e) = crate::kubelet::run(node, clients_rx).await {
            tracing::error!(error = format!("{e:#}"), "the pod manager stopped");
        }
    });
    start_kubelet_api(&settings.node_name, &state_dir);
    let mut delay = Duration::from_millis(100);
    loop {
        // A fresh client each round re-resolves the server's name: its address can change when it restarts.
        let result = async {
            let client = client::connect(&host, port, &creds).await?;
            let mut agent = Agent::new(
                client.clone(),
                &settings,
                &state_dir,
                network.clone(),
                allocatable.clone(),
            );
            let mut network_changes = network.clone();
            agent.register().await?;
            info!(node = %settings.node_name, "node registered");
            service_clients.send_replace(Some(client.clone()));
            if clients.borrow().is_none() {
                // After a restart pods come back only once Services route again, so no pod
                // turns Ready while its Services (or DNS) are not reachable.
                wait_for_proxy(&mut proxy_synced).await;
                // Nor does a pod run unprotected by the NetworkPolicies that select it.
                wait_for_policies(&mut policies_synced).await;
            }
            clients.send_replace(Some(client));
            loop {
                network_changes.borrow_and_update();
                agent.heartbeat().await?;
                // Ready turns True as soon as the pod network is up, not a heartbeat later.
                tokio::select! {
                    _ = tokio::time::sleep(HEARTBEAT) => {}
                    changed = network_changes.changed() => {
                        if changed.is_err() {
                            tokio::time::sleep(HEARTBEAT).await;
                        }
                    }
                }
            }
        }
        .await;
        let err: anyhow::Error = match result {
            Ok(()) => continue,
            Err(e) => e,
        };
        warn!(
            error = format!("{err:#}"),
            retry_in_ms = delay.as_millis() as u64,
            "cannot reach the API server"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn start_proxy(
    settings: &NodeSettings,
    clients: tokio::sync::watch::Receiver<Option<kube::Client>>,
) -> Option<tokio::sync::watch::Receiver<bool>> {
    let subnets = settings
        .pod_subnet
        .parse()
        .and_then(|pods| Ok((pods, settings.service_subnet.parse()?)));
    match subnets {
        Ok((pod_subnet, service_subnet)) => Some(crate::proxy::start(
            crate::proxy::ProxySettings {
                node_name: settings.node_name.clone(),
                pod_subnet,
                service_subnet,
            },
            clients,
        )),
        Err(e) => {
            tracing::error!(error = %e, "bad subnets in the node settings: Services will not route on this node");
            None
        }
    }
}

/// Cluster DNS on the node's address (what `kube-system/kube-dns` lists: the proxy sends a
/// pod's queries to its own node), and forward-only on the pods' gateway for `dnsPolicy:
/// Default` pods. Starts once the pod network (and so the gateway address) is up; Docker's
/// resolver (127.0.0.11, reachable from the node's namespace) answers the rest.
fn start_dns(
    mut network: podnet::NetworkHandle,
    clients: tokio::sync::watch::Receiver<Option<kube::Client>>,
) {
    use crate::dns::{DnsSettings, ListenMode};
    use std::net::SocketAddr;
    tokio::spawn(async move {
        let gateway = match network.wait_for(Option::is_some).await {
            Ok(n) => n.as_ref().map(|n| n.gateway()),
            Err(_) => return,
        };
        let mut delay = Duration::from_millis(200);
        loop {
            let Some(node_ip) = sysinfo::internal_ip() else {
                warn!("cluster DNS waits for the node's address");
                tokio::time::sleep(delay).await;
                continue;
            };
            let mut listen = vec![(SocketAddr::from((node_ip, 53)), ListenMode::Cluster)];
            if let Some(gw) = gateway {
                listen.push((SocketAddr::from((gw, 53)), ListenMode::ForwardOnly));
            }
            let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            let settings = DnsSettings {
                cluster_domain: crate::kubelet::etc::CLUSTER_DOMAIN.to_string(),
                listen,
                upstreams: DnsSettings::upstreams_from_resolv_conf(&resolv),
                metrics: Some(SocketAddr::from((node_ip, 9153))),
            };
            if let Err(e) = crate::dns::run(settings, clients.clone()).await {
                warn!(
                    error = format!("{e:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "cluster DNS stopped"
                );
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

/// How long pods wait for the first sync of the service rules before they start anyway.
const PROXY_WAIT: Duration = Duration::from_secs(30);

async fn wait_for_proxy(synced: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    let Some(rx) = synced.as_mut() else { return };
    match tokio::time::timeout(PROXY_WAIT, rx.wait_for(|s| *s)).await {
        Ok(_) => info!("service rules in place; starting pods"),
        Err(_) => {
            warn!("the service rules are not in place after {PROXY_WAIT:?}; starting pods anyway")
        }
    }
}

async fn wait_for_policies(synced: &mut Option<tokio::sync::watch::Receiver<bool>>) {
    let Some(rx) = synced.as_mut() else { return };
    match tokio::time::timeout(PROXY_WAIT, rx.wait_for(|s| *s)).await {
        Ok(_) => info!("network policy rules in place"),
        Err(_) => warn!(
            "the network policy rules are not in place after {PROXY_WAIT:?}; starting pods anyway"
        ),
    }
}

/// Serves the kubelet API (logs, exec, attach, port-forward) in the background; the node
/// works without it, so a failure is only logged.
fn start_kubelet_api(node_name: &str, state_dir: &std::path::Path) {
    let ips = crate::node::local_ips();
    let tls = match crate::kubeletapi::certs::server_config(node_name, &ips) {
        Ok(t) => t,
        Err(e) => {
            return warn!(
                error = format!("{e:#}"),
                "the kubelet API is off: kubectl logs/exec/port-forward will not reach this node"
            );
        }
    };
    let runtime = match crate::runtime::container::Runtime::new(state_dir) {
        Ok(r) => std::sync::Arc::new(r),
        Err(e) => return warn!(error = format!("{e:#}"), "the kubelet API is off"),
    };
    let memory = sysinfo::Capacity::detect(state_dir).memory_bytes;
    let stats = crate::kubeletapi::stats::Stats::start(runtime.clone(), node_name, memory);
    let api = std::sync::Arc::new(crate::kubeletapi::KubeletApi { runtime, stats });
    tokio::spawn(async move {
        if let Err(e) = crate::kubeletapi::serve(api, tls).await {
            warn!(error = format!("{e:#}"), "the kubelet API stopped");
        }
    });
}

/// kubelet's nodeStatusMaxImages: the largest images first, at most this many.
const MAX_STATUS_IMAGES: usize = 50;

/// `status.images`: digest names (`repo@sha256:…`, from the manifest) first, then tags.
fn node_images(store: &crate::runtime::images::Store) -> Vec<Value> {
    let mut images = match store.list() {
        Ok(list) => list,
        Err(e) => {
            warn!(error = format!("{e:#}"), "cannot list the node's images");
            return Vec::new();
        }
    };
    images.sort_by_key(|i| std::cmp::Reverse(i.size));
    images
        .iter()
        .take(MAX_STATUS_IMAGES)
        .map(|image| {
            let mut names: Vec<String> = Vec::new();
            if let Some(manifest) = &image.manifest {
                for name in &image.names {
                    let repo = name.split('@').next().unwrap_or(name);
                    let slash = repo.rfind('/').map_or(0, |i| i + 1);
                    let repo = match repo[slash..].rfind(':') {
                        Some(i) => &repo[..slash + i],
                        None => repo,
                    };
                    let digest_name = format!("{repo}@{manifest}");
                    if !names.contains(&digest_name) {
                        names.push(digest_name);
                    }
                }
            }
            for name in &image.names {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            if names.is_empty() {
                names.push(image.id.clone());
            }
            json!({"names": names, "sizeBytes": image.size})
        })
        .collect()
}

struct Agent<'a> {
    settings: &'a NodeSettings,
    nodes: Api<Node>,
    leases: Api<Lease>,
    /// What the last status reported, to log a change of the node's limits.
    capacity: Option<sysinfo::Capacity>,
    /// Shared with the pod manager.
    allocatable: std::sync::Arc<sysinfo::LiveAllocatable>,
    machine_id: String,
    /// The node is Ready only once pods can get addresses.
    network: podnet::NetworkHandle,
    /// When each condition last changed, so a heartbeat does not move lastTransitionTime.
    transitions: Vec<(String, String, String)>,
    /// The node's images, listed in the status as kubelet does.
    images: Option<crate::runtime::images::Store>,
    state_dir: std::path::PathBuf,
    pressure: pressure::Tracker,
}

impl<'a> Agent<'a> {
    fn new(
        client: kube::Client,
        settings: &'a NodeSettings,
        state_dir: &std::path::Path,
        network: podnet::NetworkHandle,
        allocatable: std::sync::Arc<sysinfo::LiveAllocatable>,
    ) -> Self {
        Agent {
            settings,
            nodes: Api::all(client.clone()),
            leases: Api::namespaced(client, "kube-node-lease"),
            capacity: None,
            allocatable,
            machine_id: sysinfo::machine_id(state_dir),
            network,
            transitions: Vec::new(),
            images: crate::runtime::images::Store::open(state_dir).ok(),
            state_dir: state_dir.to_path_buf(),
            pressure: pressure::Tracker::new(settings.eviction_thresholds()),
        }
    }

    fn labels(&self) -> Value {
        let arch = crate::apiserver::arch_label();
        let mut labels = json!({
            "kubernetes.io/hostname": self.settings.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch,
            "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch,
        });
        if self.settings.role == "server" {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
        }
        for (k, v) in &self.settings.labels {
            labels[k] = json!(v);
        }
        labels
    }

    fn condition(
        &mut self,
        kind: &str,
        status: &str,
        reason: &str,
        message: &str,
        now: &str,
    ) -> Value {
        let since = match self.transitions.iter_mut().find(|(k, _, _)| k == kind) {
            Some((_, s, t)) if s == status => t.clone(),
            Some(entry) => {
                *entry = (kind.to_string(), status.to_string(), now.to_string());
                now.to_string()
            }
            None => {
                self.transitions
                    .push((kind.to_string(), status.to_string(), now.to_string()));
                now.to_string()
            }
        };
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": since})
    }

    fn status(&mut self) -> Value {
        let now = now_seconds();
        // Read at every heartbeat: `kcluster node update` changes the cgroup under us.
        let cap = sysinfo::Capacity::detect(&self.state_dir);
        let alloc = cap.allocatable(&self.settings.reserved, &self.pressure.thresholds);
        if self.capacity.as_ref().is_some_and(|old| {
            old.cpu_millis != cap.cpu_millis || old.memory_bytes != cap.memory_bytes
        }) {
            info!(
                cpu_millis = cap.cpu_millis,
                memory_bytes = cap.memory_bytes,
                "the node's CPU or memory limit changed"
            );
        }
        self.allocatable.set(&alloc);
        self.capacity = Some(cap.clone());
        let quantities = |c: &sysinfo::Capacity| {
            json!({
                "cpu": sysinfo::cpu_quantity(c.cpu_millis),
                "memory": sysinfo::bytes_quantity(c.memory_bytes),
                "ephemeral-storage": sysinfo::bytes_quantity(c.ephemeral_storage_bytes),
                "hugepages-1Gi": "0",
                "hugepages-2Mi": "0",
                "pods": sysinfo::MAX_PODS.to_string(),
            })
        };
        let mut addresses = Vec::new();
        if let Some(ip) = sysinfo::internal_ip() {
            addresses.push(json!({"type": "InternalIP", "address": ip.to_string()}));
        }
        addresses.push(json!({"type": "Hostname", "address": self.settings.node_name}));
        let network_ready = self.network.borrow().is_some();
        let seen = pressure::observe(&self.state_dir);
        let mut conditions: Vec<Value> = self
            .pressure
            .conditions(&seen, std::time::Instant::now())
            .iter()
            .map(|c| self.condition(c.kind, c.status, c.reason, c.message, &now))
            .collect();
        conditions.push(if network_ready {
            self.condition(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
                &now,
            )
        } else {
            self.condition(
                "Ready",
                "False",
                "KubeletNotReady",
                "container runtime network not ready: NetworkReady=false \
                     reason:NetworkPluginNotReady message:the pod network is not set up yet \
                     (waiting for the Node's spec.podCIDR)",
                &now,
            )
        });
        json!({
            "capacity": quantities(&cap),
            "allocatable": quantities(&alloc),
            "conditions": conditions,
            "addresses": addresses,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "images": self.images.as_ref().map(node_images).unwrap_or_default(),
            "nodeInfo": {
                "machineID": self.machine_id,
                "systemUUID": self.machine_id,
                "bootID": sysinfo::boot_id(),
                "kernelVersion": sysinfo::kernel_version(),
                "osImage": format!("kcluster {}", env!("CARGO_PKG_VERSION")),
                "containerRuntimeVersion": runtime_version(),
                "kubeletVersion": version_string(),
                "kubeProxyVersion": version_string(),
                "operatingSystem": "linux",
                "architecture": crate::apiserver::arch_label(),
            },
        })
    }

    async fn register(&mut self) -> Result<()> {
        let name = self.settings.node_name.clone();
        // Keep transition times across agent restarts when nothing changed.
        if let Some(existing) = self
            .nodes
            .get_opt(&name)
            .await
            .context("cannot read this node")?
        {
            for c in existing
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
            {
                if let Some(t) = c.last_transition_time {
                    self.transitions.push((c.type_, c.status, t.0.to_string()));
                }
            }
            let patch = json!({"metadata": {"labels": self.labels()}});
            self.nodes
                .patch(
                    &name,
                    &PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &Patch::Merge(&patch),
                )
                .await
                .context("cannot update this node's labels")?;
        } else {
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": self.labels(),
                             "annotations": {"node.alpha.kubernetes.io/ttl": "0", "volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
                "spec": {},
                "status": self.status(),
            }))
            .context("cannot build the Node object")?;
            let post = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match self.nodes.create(&post, &node).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e).context("cannot register this node"),
            }
        }
        self.heartbeat().await
    }

    async fn heartbeat(&mut self) -> Result<()> {
        let name = self.settings.node_name.clone();
        let status = json!({"status": self.status()});
        self.nodes
            .patch_status(&name, &patch_params(), &Patch::Merge(&status))
            .await
            .context("cannot update this node's status")?;
        self.renew_lease().await
    }

    async fn renew_lease(&self) -> Result<()> {
        let name = &self.settings.node_name;
        let spec = json!({"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now_micros()});
        match self
            .leases
            .patch(name, &patch_params(), &Patch::Merge(&json!({"spec": spec})))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let lease: Lease = serde_json::from_value(json!({
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": "kube-node-lease"},
                    "spec": spec,
                }))
                .context("cannot build the Lease object")?;
                let post = PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                };
                self.leases
                    .create(&post, &lease)
                    .await
                    .context("cannot create this node's lease")?;
                Ok(())
            }
            Err(e) => Err(e).context("cannot renew this node's lease"),
        }
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

pub fn now_seconds() -> String {
    crate::apiserver::now_rfc3339()
}

fn now_micros() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}
