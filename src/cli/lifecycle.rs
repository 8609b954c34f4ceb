//! `kcluster stop` and `kcluster start`: a cluster put away and brought back, as a laptop
//! sleeps. Nodes run with the `unless-stopped` restart policy, so a stopped cluster stays down
//! across a Docker restart or a reboot, and a running one comes back by itself.
//!
//! Order matters both ways. Stop: the port publisher first (it would start proxies again), then
//! its proxies, workers, the API load balancer, servers. Start: servers (the store and the API),
//! the balancer, workers, then the publisher and proxies; then wait for every node to be Ready and the cluster DNS to answer, as
//! `create --wait` does. Nothing inside depends on a container keeping its IP address: nodes
//! reach the API server by container name, and every address is re-derived at boot.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::models::ContainerSummary;
use bollard::query_parameters::StopContainerOptions;

use super::Progress;
use crate::cluster::docker::{self, Docker};

/// Stops one container; one removed since it was listed counts as stopped.
pub(super) async fn stop_container(docker: &Docker, container: &str) -> Result<()> {
    let options = StopContainerOptions {
        t: Some(10),
        ..Default::default()
    };
    match docker.api().stop_container(container, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if docker::is_not_found(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot stop {container}")),
    }
}

/// Lower starts first and stops last.
fn start_rank(c: &ContainerSummary) -> u8 {
    match docker::label(c, docker::LABEL_ROLE) {
        Some(docker::ROLE_SERVER) => 0,
        // Before the workers, whose agents reach the API through it.
        Some(docker::ROLE_LB) => 1,
        Some(docker::ROLE_WORKER) => 2,
        Some(docker::ROLE_PORTS) => 3,
        _ => 4,
    }
}

async fn containers(docker: &Docker, name: &str) -> Result<Vec<ContainerSummary>> {
    let all = docker.cluster_containers(Some(name)).await?;
    if !all.iter().any(docker::is_node) {
        bail!("no cluster named {name:?} (see `kcluster list`)");
    }
    Ok(all)
}

pub async fn stop(name: &str, progress: &Progress) -> Result<()> {
    let docker = Docker::connect().await?;
    let all = containers(&docker, name).await?;
    let running = all.iter().filter(|c| docker::is_running(c)).count();
    if running == 0 {
        progress.say(&format!("Cluster {name:?} is already stopped."));
        return Ok(());
    }
    let step = progress.step(format!("Stopping cluster {name:?} ({running} containers)"));
    // The publisher first: while it runs it may be replacing a proxy, so the rest is listed
    // again once it has stopped, and a container it removed meanwhile is already gone.
    for c in all
        .iter()
        .filter(|c| docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_PORTS))
        .filter(|c| docker::is_running(c))
    {
        stop_container(&docker, &docker::container_name(c)).await?;
    }
    let mut rest = containers(&docker, name).await?;
    // Proxies, workers, servers: the reverse of start.
    rest.sort_by_key(|c| match docker::label(c, docker::LABEL_ROLE) {
        Some(docker::ROLE_PORTS) => 0,
        Some(docker::ROLE_SERVER) => 4,
        Some(docker::ROLE_LB) => 3,
        Some(docker::ROLE_WORKER) => 2,
        _ => 1,
    });
    for c in rest.iter().filter(|c| docker::is_running(c)) {
        stop_container(&docker, &docker::container_name(c)).await?;
    }
    step.done();
    progress.say(&format!(
        "Stopped. It stays stopped across Docker restarts; `kcluster start --name {name}` brings it back."
    ));
    Ok(())
}

pub async fn start(name: &str, wait: Duration, progress: &Progress) -> Result<()> {
    let docker = Docker::connect().await?;
    let mut all = containers(&docker, name).await?;
    all.sort_by_key(start_rank);
    // A node whose state volume is gone cannot come back as it was: say so before starting
    // anything, rather than boot an empty node into a cluster that remembers it.
    for c in all.iter().filter(|c| docker::is_node(c)) {
        let node = docker::container_name(c);
        let volume = docker::volume_name(&node);
        if docker.api().inspect_volume(&volume).await.is_err() {
            bail!(
                "node {node}'s state volume {volume} is gone, so cluster {name:?} cannot be started as it was; \
                 delete it (`kcluster delete --name {name}`) and create it again"
            );
        }
    }
    let nodes = all.iter().filter(|c| docker::is_node(c)).count();
    // Heartbeats carry whole seconds: a node that reports at all after this counts as back.
    let started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    let step = progress.step(format!("Starting cluster {name:?} ({nodes} node(s))"));
    let mut moved = Vec::new();
    for c in all.iter().filter(|c| !docker::is_running(c)) {
        let container = docker::container_name(c);
        match docker.api().start_container(&container, None).await {
            Ok(()) => {}
            // The publisher, started just before, is replacing this proxy already.
            Err(e)
                if docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_PORT_PROXY)
                    && docker::is_being_removed(&e) => {}
            // A host port taken while the cluster was down (or a proxy the publisher already
            // replaced): the publisher, started just before, publishes it again on the next
            // free port, as at create.
            Err(e)
                if docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_PORT_PROXY)
                    && (docker::is_not_found(&e)
                        || crate::ports::docker::is_bind_failure(&e.to_string())) =>
            {
                moved.push(format!(
                    "{container}: {}",
                    crate::ports::docker::bind_message(&e.to_string())
                ));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot start {container}")),
        }
    }
    step.done();
    for m in &moved {
        eprintln!(
            "warning: {m}; the port publisher moves it to the next free host port (`kcluster port ls --name {name}`)"
        );
    }
    if wait.is_zero() {
        return Ok(());
    }

    let server = all
        .iter()
        .find(|c| docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER))
        .context("the cluster has no server node")?;
    let server_name = docker::container_name(server);
    let (host, port, creds) = super::kubeconfig::api_access(name, server).await?;
    let deadline = Instant::now() + wait;
    let mut step = progress.step(format!("Waiting for {nodes} node(s) to be Ready"));
    if let Err(e) =
        super::create::wait_ready(&host, port, &creds, nodes, wait, Some(started), &mut step).await
    {
        let logs = docker.logs_tail(&server_name, 15).await;
        return Err(e.context(format!("last lines of {server_name}'s log:\n{logs}")));
    }
    step.set_message("Waiting for cluster DNS to answer".to_string());
    super::create::wait_dns(&docker, &server_name, deadline).await?;
    step.done();
    Ok(())
}
