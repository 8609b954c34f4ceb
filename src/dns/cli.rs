//! `kcluster node dns` (hidden): the DNS server alone, against any API server a kubeconfig
//! names (tests run it against `kcluster node apiserver`). Prints one `ready …` line with the
//! bound addresses once every listener is bound.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};

use super::{DnsSettings, ListenMode};

#[derive(clap::Args, Debug, Clone)]
pub struct DnsArgs {
    /// Answer the cluster zone here (UDP and TCP; port 0 picks a free one). Repeatable.
    #[arg(long, required = true)]
    pub listen: Vec<SocketAddr>,
    /// Forward everything from here (for dnsPolicy=Default pods). Repeatable.
    #[arg(long)]
    pub forward_only: Vec<SocketAddr>,
    /// Upstream resolver for other names, tried in order (default: /etc/resolv.conf's). Repeatable.
    #[arg(long)]
    pub upstream: Vec<SocketAddr>,
    /// Kubeconfig of the API server to watch (its current context unless --context).
    #[arg(long)]
    pub kubeconfig: PathBuf,
    #[arg(long)]
    pub context: Option<String>,
    /// Prometheus metrics, /health and /ready on this address.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
}

async fn client(args: &DnsArgs) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("cannot read {}", args.kubeconfig.display()))?;
    let options = kube::config::KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .context("cannot configure the API client")?;
    kube::Client::try_from(config).context("cannot create the API client")
}

pub async fn run(args: DnsArgs) -> Result<()> {
    let upstreams = if args.upstream.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf")
            .context("no --upstream and cannot read /etc/resolv.conf")?;
        DnsSettings::upstreams_from_resolv_conf(&text)
    } else {
        args.upstream.clone()
    };
    let mut listen: Vec<(SocketAddr, ListenMode)> = args
        .listen
        .iter()
        .map(|a| (*a, ListenMode::Cluster))
        .collect();
    listen.extend(
        args.forward_only
            .iter()
            .map(|a| (*a, ListenMode::ForwardOnly)),
    );
    let settings = DnsSettings {
        cluster_domain: args.cluster_domain.clone(),
        listen,
        upstreams,
        metrics: args.metrics,
    };
    let client = client(&args).await?;
    let bound = super::bind(settings).await?;
    let mut line = String::from("ready");
    for (addr, mode) in bound.local_addrs() {
        let name = match mode {
            ListenMode::Cluster => "cluster",
            ListenMode::ForwardOnly => "forward-only",
        };
        line.push_str(&format!(" {name}={addr}"));
    }
    if let Some(addr) = bound.metrics_addr() {
        line.push_str(&format!(" metrics={addr}"));
    }
    tracing::info!("{line}");
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
    let (_keep, clients) = tokio::sync::watch::channel(Some(client));
    bound.serve(clients).await
}
