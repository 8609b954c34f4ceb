//! The agent's side of the pod network: wait until the node IPAM controller has given this
//! Node a pod CIDR, set the node's network up once, then keep the routes to the other nodes'
//! pods current as Nodes come, go or move. Runs beside the heartbeats so a slow controller
//! never delays registration.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cluster::cidr::Ipv4Cidr;
use crate::network::{PodNetwork, wanted_routes};
use crate::node::NodeSettings;
use crate::node::client::{self, Credentials};

/// The node's pod network once it is set up (None until then). The kubelet waits on it
/// before attaching pods: `rx.wait_for(Option::is_some)`.
pub type NetworkHandle = watch::Receiver<Option<Arc<PodNetwork>>>;

/// Routes are also re-applied this often, in case something removed them.
const RESYNC: Duration = Duration::from_secs(30);
const CIDR_POLL: Duration = Duration::from_millis(250);

pub fn start(settings: NodeSettings, host: String, port: u16, creds: Credentials) -> NetworkHandle {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(run(settings, host, port, creds, tx));
    rx
}

async fn run(
    settings: NodeSettings,
    host: String,
    port: u16,
    creds: Credentials,
    tx: watch::Sender<Option<Arc<PodNetwork>>>,
) {
    let state_dir = crate::node::state_dir();
    let name = settings.node_name.clone();
    let mut delay = Duration::from_millis(200);
    loop {
        let result = async {
            let client = client::connect(&host, port, &creds).await?;
            let nodes: Api<Node> = Api::all(client);
            let existing = tx.borrow().clone();
            let network = match existing {
                Some(n) => n,
                None => {
                    let cidr = wait_for_pod_cidr(&nodes, &name).await?;
                    let started = std::time::Instant::now();
                    let network = Arc::new(PodNetwork::init(&name, &cidr, &state_dir).await?);
                    info!(
                        cidr,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "node network set up"
                    );
                    tx.send_replace(Some(network.clone()));
                    network
                }
            };
            keep_routes(&nodes, &network, &name).await
        }
        .await;
        if let Err(e) = result {
            warn!(
                error = format!("{e:#}"),
                retry_in_ms = delay.as_millis() as u64,
                "pod network setup failed"
            );
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn wait_for_pod_cidr(nodes: &Api<Node>, name: &str) -> Result<String> {
    let mut told = false;
    loop {
        let cidr = nodes
            .get_opt(name)
            .await
            .context("cannot read this node")?
            .and_then(|n| n.spec)
            .and_then(|s| s.pod_cidr)
            .filter(|c| !c.is_empty());
        if let Some(cidr) = cidr {
            return Ok(cidr);
        }
        if !told {
            info!(
                node = name,
                "waiting for the node IPAM controller to assign a pod CIDR"
            );
            told = true;
        }
        tokio::time::sleep(CIDR_POLL).await;
    }
}

async fn keep_routes(nodes: &Api<Node>, network: &PodNetwork, name: &str) -> Result<()> {
    let own: Ipv4Cidr = network.pod_cidr();
    let config = watcher::Config::default().timeout(25);
    let mut stream = watcher::watcher(nodes.clone(), config)
        .default_backoff()
        .boxed();
    let mut known: BTreeMap<String, Node> = BTreeMap::new();
    let mut relist: Option<BTreeMap<String, Node>> = None;
    let mut synced = false;
    let mut applied: Option<BTreeMap<Ipv4Cidr, Ipv4Addr>> = None;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        let mut force = false;
        tokio::select! {
            event = stream.next() => match event {
                None => bail!("the node watch ended"),
                Some(Ok(Event::Init)) => relist = Some(BTreeMap::new()),
                Some(Ok(Event::InitApply(n))) => {
                    if let Some(buf) = relist.as_mut() {
                        buf.insert(n.metadata.name.clone().unwrap_or_default(), n);
                    }
                }
                Some(Ok(Event::InitDone)) => {
                    known = relist.take().unwrap_or_default();
                    synced = true;
                }
                Some(Ok(Event::Apply(n))) => {
                    known.insert(n.metadata.name.clone().unwrap_or_default(), n);
                }
                Some(Ok(Event::Delete(n))) => {
                    known.remove(n.metadata.name.as_deref().unwrap_or_default());
                }
                Some(Err(e)) => warn!(error = %e, "node watch failed; it will be retried"),
            },
            _ = resync.tick() => force = true,
        }
        if !synced {
            continue;
        }
        let list: Vec<Node> = known.values().cloned().collect();
        let wanted = wanted_routes(name, own, &list);
        // Heartbeats update every Node every few seconds; only a change of routes matters.
        if !force && applied.as_ref() == Some(&wanted) {
            continue;
        }
        match network.sync_routes(&list).await {
            Ok(()) => applied = Some(wanted),
            Err(e) => {
                applied = None;
                warn!(
                    error = format!("{e:#}"),
                    "cannot update the routes to other nodes' pods"
                );
            }
        }
    }
}
