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
        let removed = docker.remove_cluster(&name).await?;
        kubeconfig::remove(&path, &context_name(&name))?;
        step.done();
        if removed == 0 && !args.all {
            progress.say(&format!("No cluster named {name:?} was running; its network, volumes and kubeconfig entry are gone too."));
        }
    }
    Ok(())
}
