//! What runs inside a node container: `kcluster node server` (API server, controllers and the
//! node's own agent in one process) and `kcluster node agent` (worker nodes).

pub mod client;
pub mod containers;
mod elected;
pub mod etcd_member;
mod files;
pub mod images;
pub mod incluster;
pub mod net;
mod reaper;
mod server;
pub mod standalone;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub use files::{NODE_CONFIG_PATH, PKI_DIR};
pub use server::{API_PORT, local_ips};

/// The node's settings, written by the CLI into the container before it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSettings {
    pub cluster: String,
    pub node_name: String,
    pub role: String,
    /// host:port of the API server as seen from inside the cluster network.
    pub server: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub pod_subnet: String,
    pub service_subnet: String,
    /// A failed pull may use the node's own image (`images.pullFallback`); on for nodes made
    /// before the setting existed.
    #[serde(default = "pull_fallback_default")]
    pub pull_fallback: bool,
    /// system-reserved + kube-reserved (`nodes[].resources`), kept out of allocatable.
    #[serde(default)]
    pub reserved: crate::noderesources::Reserved,
    /// kubelet's --eviction-hard for this node (`nodes[].resources.evictionHard`); unset:
    /// `KCLUSTER_EVICTION_HARD`, else kind's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eviction_hard: Option<String>,
    /// The built-in Ingress controller (server node only); on for nodes made before it existed.
    #[serde(default)]
    pub ingress: crate::ingress::IngressConfig,
    /// `registries.mirrors`: registry name → endpoints.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// `create --store etcd=…`: the server keeps the cluster's state in this etcd instead of
    /// its own volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<crate::store::etcd::EtcdConfig>,
    /// `create --servers 3` without an external etcd: this server runs a member of the
    /// cluster's own etcd, and its API server keeps the state there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_member: Option<etcd_member::EtcdMember>,
    /// How many server nodes the cluster has (0 in settings written before this existed: one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub servers: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl NodeSettings {
    /// The hard-eviction thresholds this node applies (conditions and allocatable).
    pub fn eviction_thresholds(&self) -> crate::agent::pressure::Thresholds {
        use crate::agent::pressure::Thresholds;
        match &self.eviction_hard {
            Some(text) => Thresholds::parse(text).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "evictionHard in the node settings is not valid; using the defaults");
                Thresholds::from_env()
            }),
            None => Thresholds::from_env(),
        }
    }
}

fn pull_fallback_default() -> bool {
    true
}

/// Where a node keeps its state: the container's named volume is mounted at /var.
pub fn state_dir() -> PathBuf {
    std::env::var_os("KCLUSTER_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/kcluster"))
}

pub fn load_settings() -> Result<NodeSettings> {
    let text = std::fs::read_to_string(NODE_CONFIG_PATH)
        .with_context(|| format!("cannot read {NODE_CONFIG_PATH}: this command runs inside a node container made by `kcluster create`"))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{NODE_CONFIG_PATH} is not valid node settings"))
}

pub async fn run_server() -> Result<()> {
    let settings = load_settings()?;
    tokio::spawn(reaper::run());
    crate::runtime::images::registry::set_mirrors(settings.mirrors.clone());
    with_signals(server::run(settings)).await
}

pub async fn run_standalone(options: standalone::Options) -> Result<()> {
    with_signals(standalone::run(options)).await
}

pub async fn run_agent() -> Result<()> {
    let settings = load_settings()?;
    crate::runtime::images::registry::set_mirrors(settings.mirrors.clone());
    let creds = files::node_credentials()?;
    let (host, port) = split_host_port(&settings.server)?;
    tokio::spawn(reaper::run());
    tokio::spawn(crate::volumes::localpath::run_cleaner(
        host.clone(),
        port,
        creds.clone(),
    ));
    with_signals(crate::agent::run(settings.clone(), host, port, creds)).await
}

pub fn split_host_port(server: &str) -> Result<(String, u16)> {
    let (host, port) = server
        .rsplit_once(':')
        .with_context(|| format!("server address {server:?} has no port"))?;
    Ok((
        host.to_string(),
        port.parse()
            .with_context(|| format!("server address {server:?} has a bad port"))?,
    ))
}

/// As PID 1 the process gets no default signal handling: stop cleanly on SIGTERM/SIGINT so that
/// `docker stop` is quick.
async fn with_signals(work: impl std::future::Future<Output = Result<()>>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        r = work => r,
        _ = term.recv() => { tracing::info!("SIGTERM: stopping"); stop_pods().await; Ok(()) }
        _ = int.recv() => { tracing::info!("SIGINT: stopping"); stop_pods().await; Ok(()) }
    }
}

/// Stopping a node stops its pods (SIGTERM, then SIGKILL) within Docker's stop timeout.
async fn stop_pods() {
    crate::kubelet::shutdown(std::time::Duration::from_secs(6)).await;
}
