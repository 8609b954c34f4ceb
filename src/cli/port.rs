//! `kcluster port ls`: the host ports of a cluster's Services, read from the proxy containers'
//! labels alone (no API server needed).

use anyhow::{Result, bail};

use super::list::print_table;
use crate::cluster::docker::Docker;
use crate::ports::docker as ports_docker;

pub async fn list(cluster: &str) -> Result<()> {
    let docker = Docker::connect().await?;
    if docker.node_containers(Some(cluster)).await?.is_empty() {
        bail!("no cluster named {cluster:?} (see `kcluster list`)");
    }
    let published: Vec<_> = ports_docker::proxies(&docker, cluster)
        .await?
        .iter()
        .filter_map(ports_docker::published)
        .collect();
    if published.is_empty() {
        println!(
            "No host ports. A NodePort or LoadBalancer Service gets one as soon as it exists."
        );
        return Ok(());
    }
    let rows = published
        .iter()
        .map(|p| {
            let proto = p.protocol.map(|p| p.as_str()).unwrap_or("?");
            vec![
                format!("{}:{}/{proto}", p.host_address, p.host_port),
                p.service.clone(),
                format!("{}/{proto}", p.service_port),
                match p.node_port {
                    0 => "-".to_string(),
                    n => n.to_string(),
                },
                p.kind.clone(),
                if p.running { "running" } else { "stopped" }.to_string(),
            ]
        })
        .collect();
    print_table(
        &["HOST", "SERVICE", "PORT", "NODE PORT", "KIND", "STATE"],
        rows,
    );
    Ok(())
}
