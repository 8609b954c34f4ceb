//! `kcluster delete`: everything the cluster's labels name, plus its kubeconfig entry. Deleting
//! what is not there is not an error.

use std::collections::BTreeSet;

use anyhow::Result;

use super::create::{context_name, home};
use super::{DeleteArgs, Progress};
use crate::cluster::docker::{self, Docker};
use crate::cluster::kubeconfig;

pub async fn run(args: DeleteArgs, progress: &Progress) -> Result<()> {
    let docker = Docker::connect().await?;
    let clusters: Vec<String> = if args.all {
        let names: BTreeSet<String> = docker
            .cluster_containers(None)
            .await?
            .iter()
            .filter_map(|c| docker::label(c, docker::LABEL_CLUSTER).map(str::to_string))
            .collect();
        names.into_iter().collect()
    } else {
        vec![args.name.clone()]
    };
    let path = match &args.kubeconfig {
        Some(p) => p.clone(),
        None => kubeconfig::default_path(
            std::env::var("KUBECONFIG").ok().as_deref(),
            home().as_deref(),
        )?,
    };
    for name in clusters {
        let step = progress.step(format!("Deleting cluster {name:?}"));
        let etcd = etcd_of(&docker, &name).await;
        let removed = docker.remove_cluster(&name).await?;
        if let Some(etcd) = etcd {
            let prefix = crate::store::etcd::cluster_prefix(&name);
            if let Err(e) = crate::store::etcd::wipe(&etcd, &prefix).await {
                progress.say(&format!(
                    "The cluster's state in etcd ({prefix}) could not be removed ({e}); remove it with `etcdctl del --prefix {prefix}`."
                ));
            }
        }
        kubeconfig::remove(&path, &context_name(&name))?;
        step.done();
        if removed == 0 && !args.all {
            progress.say(&format!("No cluster named {name:?} was running; its network, volumes and kubeconfig entry are gone too."));
        }
    }
    Ok(())
}

/// The etcd a cluster keeps its state in, from its server node's settings (None: embedded, or
/// no server node left to ask).
async fn etcd_of(docker: &Docker, name: &str) -> Option<crate::store::etcd::EtcdConfig> {
    let containers = docker.node_containers(Some(name)).await.ok()?;
    let server = containers
        .iter()
        .find(|c| docker::label(c, docker::LABEL_ROLE) == Some("server"))?;
    let id = server.id.as_deref()?;
    let raw = docker
        .read_file(id, crate::node::NODE_CONFIG_PATH)
        .await
        .ok()?;
    let settings: crate::node::NodeSettings = serde_json::from_slice(&raw).ok()?;
    settings.etcd
}
