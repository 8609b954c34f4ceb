//! A cluster made with one server, about to get more (`kcluster node add --role server`).
//!
//! Such a cluster keeps its state in the server's own embedded store, and the server's
//! container publishes the API port. Several servers need a store they share and a balancer
//! in front of them, so before the first new server joins:
//! - the server is made anew (same name, same volume, same published ports but the API's) on
//!   the node image with etcd, as the first member of its own etcd; its first start moves the
//!   embedded store into that member (`node::server`, `store::etcd::import`). A cluster on an
//!   external etcd (`--store etcd=…`) keeps its store and only changes how it is reached.
//! - the balancer `<name>-lb` takes the API port, so kubeconfig keeps working unchanged;
//! - every other node, and the port publisher, is pointed at the balancer and restarted. Pods
//!   restart with their nodes, as after a Docker restart.
//!
//! Each step is skipped when it was done before (the server dials the balancer, the balancer
//! exists, a node dials it, the publisher does), so running `node add --role server` again
//! after a failure part-way finishes the job. Then `node add` goes on as for any cluster with
//! several servers: the new members join through the first one.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::models::{ContainerCreateBody, ContainerSummary, HostConfig};
use bollard::query_parameters::{
    InspectContainerOptions, RemoveContainerOptionsBuilder, RestartContainerOptions,
};

use super::Progress;
use super::node::{NodeTemplate, read_settings};
use crate::cluster::docker::{self, Docker, NodeSpec};
use crate::cluster::image;
use crate::node::NodeSettings;
use crate::node::etcd_member::EtcdMember;
use crate::pki::CertificateAuthority;

/// How long the server may take to come back with its state moved, and the nodes to be Ready
/// again through the balancer.
const BACK_WITHIN: Duration = Duration::from_secs(300);

/// Gives a one-server cluster a shared store and the balancer; `servers` is how many it will
/// have. Each step is done unless it was done before, so running it again after a failure
/// finishes the job. Returns false (and changes nothing) if the cluster has them already.
pub(super) async fn into_several(
    docker: &Docker,
    cluster: &str,
    nodes: &[ContainerSummary],
    servers: usize,
    etcd_binary: Option<&Path>,
    progress: &Progress,
) -> Result<bool> {
    let [server] = nodes
        .iter()
        .filter(|c| docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER))
        .collect::<Vec<_>>()[..]
    else {
        return Ok(false);
    };
    let name = docker::container_name(server);
    let settings = read_settings(docker, &name).await?;
    let balancer = crate::lb::docker::container_name(cluster);
    let api_in_cluster = format!("{balancer}:{}", crate::node::API_PORT);
    let template = NodeTemplate::inspect(docker, server).await?;
    let read_pki = |file| super::kubeconfig::read_pki(docker, &name, file);
    let ca_pem = read_pki("ca.crt").await?;
    let ca = CertificateAuthority::from_pem(&ca_pem, &read_pki("ca.key").await?)
        .context("cannot load the cluster CA from the server node")?;

    // A server that dials the balancer was made for several already (or made anew before).
    let mut changed = false;
    if settings.server != api_in_cluster {
        let grown = NodeSettings {
            server: api_in_cluster.clone(),
            servers: servers as u32,
            ..settings.clone()
        };
        make_server_anew(
            docker,
            cluster,
            &template,
            &ca,
            settings,
            grown,
            etcd_binary,
            progress,
        )
        .await?;
        changed = true;
    }
    if !exists(docker, &balancer).await? {
        let step = progress.step(format!("Starting the API load balancer {balancer}"));
        let log = std::env::var("KCLUSTER_NODE_LOG").unwrap_or_else(|_| "info".into());
        let label = |key| template.labels.get(key).cloned();
        crate::lb::docker::run_balancer(
            docker,
            &crate::lb::docker::BalancerSpec {
                cluster,
                image: &template.image,
                host_address: label(docker::LABEL_API_ADDRESS)
                    .unwrap_or_else(|| "127.0.0.1".to_string()),
                host_port: label(docker::LABEL_API_PORT)
                    .and_then(|p| p.parse().ok())
                    .with_context(|| format!("{name} has no API port label"))?,
                backends: vec![format!("{name}:{}", crate::node::API_PORT)],
                ca_pem,
                log: &log,
            },
        )
        .await?;
        step.done();
        changed = true;
    }

    let since = jiff::Timestamp::now();
    let mut elsewhere = Vec::new();
    for node in nodes.iter().map(docker::container_name) {
        if node != name && read_settings(docker, &node).await?.server != api_in_cluster {
            elsewhere.push(node);
        }
    }
    if !elsewhere.is_empty() {
        let step = progress.step(format!(
            "Restarting {} node(s) to dial the balancer (their pods restart)",
            elsewhere.len()
        ));
        futures::future::try_join_all(
            elsewhere
                .iter()
                .map(|node| dial_balancer(docker, node, &api_in_cluster)),
        )
        .await?;
        step.done();
        changed = true;
    }
    if repoint_publisher(docker, cluster, &api_in_cluster, progress).await? {
        changed = true;
    }
    if !changed {
        return Ok(false);
    }

    let (host, port, creds) = super::kubeconfig::api_access(cluster, server).await?;
    let mut step = progress.step(format!(
        "Waiting for the API through {balancer} and {} Ready node(s)",
        nodes.len()
    ));
    super::create::wait_ready(
        &host,
        port,
        &creds,
        nodes.len(),
        BACK_WITHIN,
        Some(since),
        &mut step,
    )
    .await
    .with_context(|| {
        format!("{name} did not come back with its state (see `docker logs {name}`)")
    })?;
    step.done();
    Ok(true)
}

/// Makes the one server anew with `grown` settings: on the etcd image as the first member of
/// a new etcd (unless its store is an external etcd), without the API port. Everything that
/// can fail without changing anything comes first; a new container that fails to start is
/// replaced by the old one again.
#[allow(clippy::too_many_arguments)]
async fn make_server_anew(
    docker: &Docker,
    cluster: &str,
    template: &NodeTemplate,
    ca: &CertificateAuthority,
    settings: NodeSettings,
    mut grown: NodeSettings,
    etcd_binary: Option<&Path>,
    progress: &Progress,
) -> Result<()> {
    let name = settings.node_name.clone();
    let etcd = match settings.etcd {
        Some(_) => None,
        None => Some(image::find_etcd(etcd_binary).context(
            "a cluster with several servers keeps its state in etcd, and the node image gets it from this machine",
        )?),
    };
    grown.etcd_member = etcd.as_ref().map(|_| EtcdMember {
        peers: vec![name.clone()],
        token: cluster.to_string(),
        join: false,
    });
    let mut kept = Vec::new();
    for file in ["ca.key", "admin.crt", "admin.key"] {
        let mode = if file.ends_with(".key") { 0o600 } else { 0o644 };
        let path = format!("{}/{file}", crate::node::PKI_DIR);
        let text = super::kubeconfig::read_pki(docker, &name, file).await?;
        kept.push((path, text.into_bytes(), mode));
    }
    let mut files = kept.clone();
    files.extend(super::create::node_files(ca, &grown)?);
    let node_image = match &etcd {
        Some(etcd) => {
            let tag = super::create::with_etcd(docker, &template.image, etcd, progress).await?;
            let etcd_ca = CertificateAuthority::generate(&format!("kcluster-{cluster}-etcd-ca"))?;
            files.extend(crate::node::etcd_member::ca_files(&etcd_ca));
            tag
        }
        None => template.image.clone(),
    };
    let api_port = crate::node::API_PORT;
    let spec = |image: &str, with_api_port: bool| NodeSpec {
        name: name.clone(),
        cluster: cluster.to_string(),
        image: image.to_string(),
        cmd: template.cmd.clone(),
        labels: template.labels.clone(),
        env: template.env.clone(),
        ports: template
            .ports
            .iter()
            .filter(|p| with_api_port || !(p.container_port == api_port && p.protocol == "tcp"))
            .cloned()
            .collect(),
        binds: template.binds.clone(),
        cpu_millis: template.cpu_millis,
        memory_bytes: template.memory_bytes,
    };

    let step = progress.step(format!(
        "Making {name} anew {}(its pods restart)",
        if etcd.is_some() {
            "with an etcd member that takes its state "
        } else {
            ""
        }
    ));
    super::lifecycle::stop_container(docker, &name).await?;
    remove_container(docker, &name).await?;
    if let Err(e) = docker
        .run_node(&spec(&node_image, false), template.security, &files)
        .await
    {
        // Back as it was: the old image and settings, over the same volume.
        let _ = remove_container(docker, &name).await;
        let mut old_files = kept;
        old_files.extend(super::create::node_files(ca, &settings)?);
        let restored = docker
            .run_node(&spec(&template.image, true), template.security, &old_files)
            .await;
        return Err(match restored {
            Ok(()) => e.context(format!("cannot make {name} anew; it runs as before")),
            Err(again) => e.context(format!(
                "cannot make {name} anew, nor start it again as it was ({again:#}); its state is in the volume {}",
                docker::volume_name(&name)
            )),
        });
    }
    step.done();
    Ok(())
}

/// Whether a container of that name exists, running or not.
async fn exists(docker: &Docker, name: &str) -> Result<bool> {
    match docker
        .api()
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if docker::is_not_found(&e) => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {name}")),
    }
}

/// Removes a container, keeping its volume.
async fn remove_container(docker: &Docker, name: &str) -> Result<()> {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.api().remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if docker::is_not_found(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove the container {name}")),
    }
}

/// Rewrites a node's settings to reach the API at `api` and restarts it (an agent reads its
/// settings at start).
async fn dial_balancer(docker: &Docker, node: &str, api: &str) -> Result<()> {
    let settings = NodeSettings {
        server: api.to_string(),
        ..read_settings(docker, node).await?
    };
    let json = serde_json::to_vec_pretty(&settings)?;
    docker
        .upload(
            node,
            &[(crate::node::NODE_CONFIG_PATH.to_string(), json, 0o644)],
        )
        .await?;
    docker
        .api()
        .restart_container(
            node,
            Some(RestartContainerOptions {
                t: Some(10),
                ..Default::default()
            }),
        )
        .await
        .with_context(|| format!("cannot restart {node}"))
}

/// The port publisher dials the API given on its command line, which Docker cannot change:
/// it is made anew with `api` instead, keeping its files, mounts and labels. Returns whether
/// it had to be.
async fn repoint_publisher(
    docker: &Docker,
    cluster: &str,
    api: &str,
    progress: &Progress,
) -> Result<bool> {
    let name = crate::ports::controller_name(cluster);
    let inspect = match docker
        .api()
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
    {
        Ok(inspect) => inspect,
        // Never started, or removed by hand: nothing dials the old address.
        Err(e) if docker::is_not_found(&e) => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {name}")),
    };
    let config = inspect.config.unwrap_or_default();
    let mut cmd = config.cmd.unwrap_or_default();
    let Some(at) = cmd.iter().position(|a| a == "--server") else {
        bail!("{name} was started without --server: cannot point it at the balancer");
    };
    match cmd.get_mut(at + 1) {
        Some(value) if value == api => return Ok(false),
        Some(value) => *value = api.to_string(),
        None => bail!("{name} was started with an empty --server"),
    }
    let step = progress.step("Pointing the port publisher at the balancer");
    let mut files = Vec::new();
    for (file, mode) in [
        ("ca.crt", 0o644),
        ("ports.crt", 0o644),
        ("ports.key", 0o600),
    ] {
        let path = format!("{}/{file}", crate::ports::PKI_DIR);
        files.push((path.clone(), docker.read_file(&name, &path).await?, mode));
    }
    let old = inspect.host_config.unwrap_or_default();
    let body = ContainerCreateBody {
        hostname: config.hostname,
        image: config.image,
        cmd: Some(cmd),
        env: config.env,
        labels: Some(config.labels.unwrap_or_else(HashMap::new)),
        stop_timeout: config.stop_timeout,
        host_config: Some(HostConfig {
            network_mode: old.network_mode,
            binds: old.binds,
            restart_policy: old.restart_policy,
            tmpfs: old.tmpfs,
            ..Default::default()
        }),
        ..Default::default()
    };
    remove_container(docker, &name).await?;
    docker
        .create_and_start(&name, body, &files, "port publisher", "")
        .await?;
    step.done();
    Ok(true)
}
