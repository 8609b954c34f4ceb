//! `kcluster node ports`: the per-cluster port publisher. It watches Services through the API
//! server and runs one reconcile pass (`reconcile`) after each change, and every few seconds to
//! notice proxies that died or a Docker restart that left a port taken; `status` writes what is
//! published back into the LoadBalancer Services.

mod reconcile;
mod status;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::cluster::docker::Docker;
use crate::controllers::runtime::Informer;
use crate::controllers::runtime::events::EventSink;
use crate::node::client::Credentials;

#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// The cluster whose Services are published.
    #[arg(long)]
    pub cluster: String,
    /// host:port of the API server on the cluster's network.
    #[arg(long)]
    pub server: String,
    /// The image proxies run (the node image).
    #[arg(long)]
    pub image: String,
    /// Host address ports are published on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host_address: std::net::IpAddr,
    /// Publish NodePort Services too (LoadBalancer Services always are).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub publish_node_ports: bool,
}

/// How often a pass runs with no Service change: a proxy that exited is replaced this quickly.
const RESYNC: Duration = Duration::from_secs(5);

pub async fn run(args: ControllerArgs) -> Result<()> {
    let creds = Credentials {
        ca_pem: read(&format!("{}/ca.crt", super::PKI_DIR))?,
        cert_pem: read(&format!("{}/ports.crt", super::PKI_DIR))?,
        key_pem: read(&format!("{}/ports.key", super::PKI_DIR))?,
    };
    let docker = retry("the Docker engine", Docker::connect).await;
    let (host, port) = crate::node::split_host_port(&args.server)?;
    // The server node may still be starting; so may the name in Docker's DNS.
    let client = retry("the API server", || {
        crate::node::client::connect(&host, port, &creds)
    })
    .await;
    let services: Arc<Informer<Service>> = Informer::new(client.clone());
    let changed = Arc::new(Notify::new());
    let notify = changed.clone();
    services.add_handler(move |_| notify.notify_one());
    tokio::spawn(services.clone().run());
    services.wait_synced().await;
    info!(cluster = %args.cluster, host_address = %args.host_address, "publishing Service ports");
    let events = EventSink::start(client.clone());
    let mut pass =
        reconcile::Reconciler::new(args, docker, client, events.recorder("kcluster-ports"));
    let work = async {
        loop {
            let list: Vec<Service> = services.list_all().iter().map(|s| (**s).clone()).collect();
            if let Err(e) = pass.run(&list).await {
                warn!(error = %format!("{e:#}"), "reconcile pass failed; retrying");
            }
            tokio::select! {
                _ = changed.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
        }
    };
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        () = work => Ok(()),
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
    }
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| {
        format!("cannot read {path}: this command runs in the container `kcluster create` makes")
    })
}

/// Retries with backoff (0.2 s doubling to 5 s) until `connect` succeeds: the component must
/// outlast a slow start of the engine or the API server, never exit for it.
async fn retry<T, F, Fut>(what: &str, mut connect: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match connect().await {
            Ok(v) => return v,
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cannot reach {what} yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
