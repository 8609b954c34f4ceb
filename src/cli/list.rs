//! `kcluster list` and `kcluster get nodes`: read from container labels alone.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use bollard::models::ContainerSummary;

use crate::cluster::docker::{self, Docker};
use crate::noderesources::quantity;

pub(super) fn print_table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", parts.join("   ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub async fn clusters() -> Result<()> {
    let docker = Docker::connect().await?;
    let mut by_cluster: BTreeMap<String, Vec<ContainerSummary>> = BTreeMap::new();
    for c in docker.node_containers(None).await? {
        if let Some(name) = docker::label(&c, docker::LABEL_CLUSTER) {
            by_cluster.entry(name.to_string()).or_default().push(c);
        }
    }
    if by_cluster.is_empty() {
        println!("No clusters. Create one with `kcluster create`.");
        return Ok(());
    }
    let rows = by_cluster
        .iter()
        .map(|(name, nodes)| {
            let count = |role: &str| {
                let of_role: Vec<_> = nodes
                    .iter()
                    .filter(|c| docker::label(c, docker::LABEL_ROLE) == Some(role))
                    .collect();
                format!(
                    "{}/{}",
                    of_role.iter().filter(|c| docker::is_running(c)).count(),
                    of_role.len()
                )
            };
            let running = nodes.iter().filter(|c| docker::is_running(c)).count();
            let state = if running == nodes.len() {
                "running"
            } else if running == 0 {
                "stopped"
            } else {
                "degraded"
            };
            let api = nodes
                .iter()
                .find_map(|c| {
                    let port = docker::label(c, docker::LABEL_API_PORT)?;
                    let addr = docker::label(c, docker::LABEL_API_ADDRESS).unwrap_or("127.0.0.1");
                    let addr = if addr == "0.0.0.0" { "127.0.0.1" } else { addr };
                    Some(format!("https://{addr}:{port}"))
                })
                .unwrap_or_else(|| "-".into());
            vec![
                name.clone(),
                count("server"),
                count("worker"),
                state.to_string(),
                api,
            ]
        })
        .collect();
    print_table(&["NAME", "SERVERS", "WORKERS", "STATE", "API"], rows);
    Ok(())
}

pub async fn nodes(cluster: &str) -> Result<()> {
    let docker = Docker::connect().await?;
    let nodes = docker.node_containers(Some(cluster)).await?;
    if nodes.is_empty() {
        bail!("no cluster named {cluster:?} (see `kcluster list`)");
    }
    // Limits live in each container's host config, which the list does not carry.
    let limits = futures::future::join_all(
        nodes
            .iter()
            .map(|c| async { docker.limits(&docker::container_name(c)).await }),
    )
    .await;
    let rows = nodes
        .iter()
        .zip(limits)
        .map(|(c, limits)| {
            let limits = limits.unwrap_or_else(|e| {
                tracing::warn!(error = format!("{e:#}"), "cannot read a node's limits");
                docker::NodeLimits::default()
            });
            vec![
                docker::container_name(c),
                docker::label(c, docker::LABEL_ROLE)
                    .unwrap_or("-")
                    .to_string(),
                docker::state_str(c),
                docker::container_ip(c).unwrap_or_else(|| "-".into()),
                limits
                    .cpu_millis
                    .map_or_else(|| "host".into(), quantity::format_cpus),
                limits
                    .memory_bytes
                    .map_or_else(|| "host".into(), quantity::format_bytes),
                c.image.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &["NAME", "ROLE", "STATUS", "IP", "CPUS", "MEMORY", "IMAGE"],
        rows,
    );
    Ok(())
}
