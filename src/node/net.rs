//! `kcluster node net …`: the pod network by hand, for tests and people, without the kubelet.
//! `attach UID` makes a network namespace (or takes `--netns`), attaches it as a pod would be
//! and prints its address; `run-once --netns` then runs a container in it. `detach`, `ls`,
//! `retain`, and `bench` (attach latency).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::network::{PodNetwork, netns};

/// Where namespaces made by this command live.
const NETNS_DIR: &str = "/run/kcluster/netns";

#[derive(Debug, Clone, clap::Subcommand)]
pub enum NetCommand {
    /// Attach a pod's network namespace (made under /run/kcluster/netns/UID unless --netns is
    /// given) and print its address as JSON.
    Attach {
        uid: String,
        /// An existing namespace file to attach instead (e.g. /run/kcluster/pods/UID/ns/net).
        #[arg(long)]
        netns: Option<PathBuf>,
    },
    /// Detach a pod: remove its veth, free its address, and remove the namespace this command made.
    Detach { uid: String },
    /// The node's pod CIDR and which pod holds which address, as JSON.
    Ls,
    /// Detach every pod except these uids (what the kubelet does after a restart); prints the
    /// uids detached.
    Retain { uids: Vec<String> },
    /// Attach N fresh namespaces one after another, print the attach latencies, then clean up.
    Bench {
        #[arg(long, default_value_t = 20)]
        pods: usize,
    },
}

fn default_netns(uid: &str) -> Result<PathBuf> {
    if uid.is_empty() || uid.contains('/') || uid.starts_with('.') {
        anyhow::bail!("{uid:?} is not a usable pod uid (no slashes, not empty)");
    }
    Ok(Path::new(NETNS_DIR).join(uid))
}

pub async fn run(command: NetCommand) -> Result<()> {
    let network = PodNetwork::open(&super::state_dir()).await?;
    match command {
        NetCommand::Attach { uid, netns: given } => {
            let path = match given {
                Some(p) => p,
                None => {
                    let p = default_netns(&uid)?;
                    netns::create(&p).await?;
                    p
                }
            };
            let started = Instant::now();
            let address = network.attach(&uid, &path).await?;
            let micros = started.elapsed().as_micros() as u64;
            println!(
                "{}",
                json!({"uid": uid, "ip": address.ip, "gateway": address.gateway,
                       "prefixLen": address.prefix_len, "netns": path, "attachMicros": micros})
            );
        }
        NetCommand::Detach { uid } => {
            network.detach(&uid).await?;
            netns::remove(&default_netns(&uid)?)?;
        }
        NetCommand::Ls => {
            let allocations = network.allocations().await?;
            println!("{}", serde_json::to_string_pretty(&allocations)?);
        }
        NetCommand::Retain { uids } => {
            let live = uids.into_iter().collect();
            for uid in network.retain(&live).await? {
                netns::remove(&default_netns(&uid)?)?;
                println!("{uid}");
            }
        }
        NetCommand::Bench { pods } => bench(&network, pods).await?,
    }
    Ok(())
}

async fn bench(network: &PodNetwork, pods: usize) -> Result<()> {
    let prefix = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut attach = Vec::new();
    let mut create = Vec::new();
    let mut detach = Vec::new();
    let uids: Vec<String> = (0..pods).map(|i| format!("{prefix}-{i}")).collect();
    let result = async {
        for uid in &uids {
            let path = default_netns(uid)?;
            let t = Instant::now();
            netns::create(&path).await?;
            create.push(t.elapsed());
            let t = Instant::now();
            network.attach(uid, &path).await?;
            attach.push(t.elapsed());
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    for uid in &uids {
        let t = Instant::now();
        let detached = network.detach(uid).await;
        detach.push(t.elapsed());
        if let Err(e) = detached.and_then(|()| netns::remove(&default_netns(uid)?)) {
            eprintln!("warning: cannot clean up {uid}: {e:#}");
        }
    }
    result.context("bench stopped")?;
    println!(
        "{}",
        json!({"pods": pods, "netnsCreate": stats(&mut create), "attach": stats(&mut attach), "detach": stats(&mut detach)})
    );
    Ok(())
}

fn stats(samples: &mut [std::time::Duration]) -> serde_json::Value {
    samples.sort();
    let ms = |i: usize| {
        samples
            .get(i.min(samples.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let n = samples.len();
    json!({"p50Ms": ms(n / 2), "p90Ms": ms(n * 9 / 10), "maxMs": ms(n.saturating_sub(1))})
}
