//! `kcluster node add|update|delete`: a running cluster's nodes.
//!
//! Add: a new worker copies its settings from an existing node (image, mounts, environment, the
//! privileged-or-capabilities choice the engine allowed, the cluster's subnets) and takes its
//! labels from the flags; it gets its certificates from the cluster CA kept on the server node
//! and registers like any other node. A new server copies a server, CA keys included; its etcd
//! member is added to the store through a running server before it starts, so it joins, and
//! the balancer's backends file gets its name. A cluster made with one server first gets a
//! store and a balancer several can share (`grow`).
//!
//! Update (`--cpus/--memory`): other limits for a running node. Docker changes the container's
//! cgroup in place; the node reads it at its next heartbeat (10 s) and reports the new capacity
//! and allocatable.
//!
//! Delete drains first — cordon, then every pod but DaemonSet and mirror pods through the
//! eviction API, so PodDisruptionBudgets hold it back — then removes the Node object, the
//! container and its volume.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bollard::models::ContainerSummary;
use bollard::query_parameters::InspectContainerOptions;
use clap::Args;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};

use super::Progress;
use crate::cluster::docker::{self, Docker, NodeSpec, Security};
use crate::node::NodeSettings;
use crate::noderesources::{Size, Sizes, check_against_host, check_minimum, quantity};
use crate::pki::CertificateAuthority;

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The node, as `kcluster get nodes` names it (e.g. dev-worker-0).
    node: String,
    /// CPUs the node may use: 2, 1.5 or 1500m.
    #[arg(long)]
    cpus: Option<String>,
    /// Memory the node may use, swap included: 4Gi, 512Mi…
    #[arg(long)]
    memory: Option<String>,
}

pub async fn update(args: UpdateArgs, progress: &Progress) -> Result<()> {
    if args.cpus.is_none() && args.memory.is_none() {
        bail!("say what to change: --cpus and/or --memory");
    }
    let sizes = Sizes {
        cpu_millis: args
            .cpus
            .as_deref()
            .map(quantity::parse_cpu_millis)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--cpus: {e}"))?,
        memory_bytes: args
            .memory
            .as_deref()
            .map(quantity::parse_bytes)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--memory: {e}"))?,
    };
    let docker = Docker::connect().await?;
    let node = docker
        .node_containers(None)
        .await?
        .into_iter()
        .find(|c| docker::container_name(c) == args.node)
        .with_context(|| {
            format!(
                "no kcluster node named {:?} (see `kcluster get nodes --name <cluster>`)",
                args.node
            )
        })?;
    let server = docker::label(&node, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER);
    let host = docker.host().await?;
    if let Err((size, message)) =
        check_minimum(&sizes, server).and_then(|()| check_against_host(&sizes, &host))
    {
        let flag = match size {
            Size::Cpus => "--cpus",
            Size::Memory => "--memory",
        };
        bail!("{flag}: {message}");
    }
    // Below what the node uses now the kernel would have to OOM-kill its pods (cgroup v2)
    // or refuse (v1): say so before touching anything.
    let mut tight = None;
    if let Some(new) = sizes.memory_bytes
        && let Some(used) = docker.working_set(&args.node).await?
    {
        if used >= new {
            bail!(
                "--memory: {} uses {} now, more than {}; stop some of its pods first or give it more",
                args.node,
                quantity::format_bytes(used.div_ceil(1 << 20) << 20),
                quantity::format_bytes(new)
            );
        }
        tight = Some(used);
    }
    // What is not given stays as it is (Docker would otherwise keep it too, but the swap
    // limit must move with the memory limit).
    let current = docker.limits(&args.node).await?;
    let cpu_millis = sizes.cpu_millis.or(current.cpu_millis);
    let memory_bytes = sizes.memory_bytes.or(current.memory_bytes);
    let step = progress.step(format!("Updating the limits of {}", args.node));
    docker
        .update_limits(&args.node, sizes.cpu_millis, sizes.memory_bytes)
        .await
        .map_err(|e| e.context("nothing was changed"))?;
    step.done();
    let show_cpus = cpu_millis.map_or("host".to_string(), quantity::format_cpus);
    let show_memory = memory_bytes.map_or("host".to_string(), quantity::format_bytes);
    progress.say(&format!(
        "{}: cpus {show_cpus}, memory {show_memory}; the Node's capacity follows at its next heartbeat (within 10s)",
        args.node
    ));
    if let (Some(used), Some(limit)) = (tight, memory_bytes)
        && used + crate::noderesources::DEFAULT_EVICTION_MEMORY > limit
    {
        eprintln!(
            "warning: {} uses {} of its {}: less than the default 100Mi eviction threshold is left, so it will report MemoryPressure and take no new pods",
            args.node,
            quantity::format_bytes(used.div_ceil(1 << 20) << 20),
            quantity::format_bytes(limit)
        );
    }
    Ok(())
}

pub struct AddOptions {
    pub cluster: String,
    pub role: String,
    pub count: usize,
    pub labels: Vec<String>,
    pub wait: Duration,
    /// For a server added to a cluster of one: the etcd put into the node image.
    pub etcd_binary: Option<std::path::PathBuf>,
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for l in labels {
        let Some((k, v)) = l.split_once('=') else {
            bail!("--labels {l:?}: expected key=value");
        };
        if k.is_empty() {
            bail!("--labels {l:?}: the key is empty");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// A node's settings (`/etc/kcluster/node.json`), as its container has them.
pub(super) async fn read_settings(docker: &Docker, node: &str) -> Result<NodeSettings> {
    let json = docker
        .read_file(node, crate::node::NODE_CONFIG_PATH)
        .await?;
    serde_json::from_slice(&json).with_context(|| format!("cannot read {node}'s node settings"))
}

/// A node container as Docker has it: a new node copies one, and a server that grows into
/// several is made anew from its own.
pub(super) struct NodeTemplate {
    pub image: String,
    pub cmd: Vec<String>,
    /// Without PATH, which the image sets.
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    /// The user's extraMounts only: the node's own state volume is made per node.
    pub binds: Vec<(String, String, bool)>,
    /// Its published ports (the user's extraPortMappings, and a single server's API port).
    pub ports: Vec<docker::PortSpec>,
    /// Its size (`--node-cpus/--node-memory` at create, or a later `node update`).
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub security: Security,
}

impl NodeTemplate {
    pub(super) async fn inspect(docker: &Docker, node: &ContainerSummary) -> Result<NodeTemplate> {
        let name = docker::container_name(node);
        let inspect = docker
            .api()
            .inspect_container(&name, None::<InspectContainerOptions>)
            .await
            .with_context(|| format!("cannot inspect {name}"))?;
        let config = inspect.config.unwrap_or_default();
        let image = config
            .image
            .with_context(|| format!("{name} has no image"))?;
        let env = config
            .env
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !e.starts_with("PATH="))
            .collect();
        let host_config = inspect.host_config.unwrap_or_default();
        let binds = host_config
            .binds
            .unwrap_or_default()
            .iter()
            .filter_map(|b| {
                let mut parts = b.split(':');
                let host = parts.next()?.to_string();
                let container = parts.next()?.to_string();
                if !host.starts_with('/') {
                    return None;
                }
                let read_only = parts
                    .next()
                    .is_some_and(|o| o.split(',').any(|o| o == "ro"));
                Some((host, container, read_only))
            })
            .collect();
        let mut ports = Vec::new();
        for (key, bindings) in host_config.port_bindings.unwrap_or_default() {
            let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let Ok(container_port) = port.parse::<u16>() else {
                continue;
            };
            for b in bindings.unwrap_or_default() {
                let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse().ok()) else {
                    continue;
                };
                ports.push(docker::PortSpec {
                    container_port,
                    protocol: protocol.to_string(),
                    host_ip: b.host_ip.unwrap_or_default(),
                    host_port,
                });
            }
        }
        let security = match docker::label(node, docker::LABEL_SECURITY) {
            Some("privileged") => Security::Privileged,
            _ => Security::Capabilities,
        };
        Ok(NodeTemplate {
            image,
            cmd: config.cmd.unwrap_or_default(),
            env,
            labels: config.labels.unwrap_or_default(),
            binds,
            ports,
            cpu_millis: host_config
                .nano_cpus
                .filter(|n| *n > 0)
                .map(|n| (n / 1_000_000) as u64),
            memory_bytes: host_config.memory.filter(|m| *m > 0).map(|m| m as u64),
            security,
        })
    }
}

/// What a new server takes from the cluster's servers: their PKI files and labels, and the
/// ways to its store's membership and its balancer.
struct ServerPlan {
    /// The server the membership commands run in.
    via: String,
    files: Vec<(String, Vec<u8>, u32)>,
    labels: HashMap<String, String>,
    /// Every server's name, the new ones appended as they are added.
    servers: Vec<String>,
}

impl ServerPlan {
    async fn read(
        docker: &Docker,
        cluster: &str,
        server: &str,
        settings: &NodeSettings,
        nodes: &[ContainerSummary],
    ) -> Result<ServerPlan> {
        if settings.servers <= 1 {
            bail!(
                "{server} still has a single server's settings: the move of cluster {cluster:?} to a store several servers share did not finish; run `kcluster node add --name {cluster} --role server` again to finish it"
            );
        }
        if settings.etcd_member.is_none() && settings.etcd.is_none() {
            bail!("{server} keeps no etcd settings: cannot tell where a new server's store is");
        }
        let mut names = vec!["ca.key", "admin.crt", "admin.key"];
        if settings.etcd_member.is_some() {
            names.extend([
                crate::node::etcd_member::CA_CERT,
                crate::node::etcd_member::CA_KEY,
            ]);
        }
        let mut files = Vec::new();
        for name in names {
            let text = super::kubeconfig::read_pki(docker, server, name).await?;
            let mode = if name.ends_with(".key") { 0o600 } else { 0o644 };
            files.push((
                format!("{}/{name}", crate::node::PKI_DIR),
                text.into_bytes(),
                mode,
            ));
        }
        let template = nodes
            .iter()
            .find(|c| docker::container_name(c) == server)
            .context("the template server vanished")?;
        let labels = [
            docker::LABEL_API_PORT,
            docker::LABEL_API_ADDRESS,
            docker::LABEL_CONFIG,
        ]
        .iter()
        .filter_map(|k| docker::label(template, k).map(|v| (k.to_string(), v.to_string())))
        .collect();
        let servers = nodes
            .iter()
            .filter(|c| docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER))
            .map(docker::container_name)
            .collect();
        Ok(ServerPlan {
            via: server.to_string(),
            files,
            labels,
            servers,
        })
    }

    /// Adds `node` as an etcd member; returns the members' node names for its initial cluster.
    async fn add_member(&self, docker: &Docker, node: &str) -> Result<Vec<String>> {
        let out = docker
            .exec(
                &self.via,
                &["/kcluster", "node", "etcd-member", "add", node],
            )
            .await?;
        if out.exit_code != 0 {
            bail!(
                "the store refused the new member {node} (asked through {}): {}",
                self.via,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let peers: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if !peers.iter().any(|p| p == node) {
            bail!("the store's members after adding {node} do not include it: {peers:?}");
        }
        Ok(peers)
    }

    async fn remove_member(&self, docker: &Docker, node: &str) {
        match docker
            .exec(
                &self.via,
                &["/kcluster", "node", "etcd-member", "remove", node],
            )
            .await
        {
            Ok(out) if out.exit_code == 0 => {}
            Ok(out) => eprintln!(
                "warning: {node} stays a member of the store: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("warning: {node} stays a member of the store: {e:#}"),
        }
    }

    /// Tells the balancer of the new server.
    async fn add_to_balancer(&mut self, docker: &Docker, cluster: &str, node: &str) -> Result<()> {
        self.servers.push(node.to_string());
        write_backends(docker, cluster, &self.servers)
            .await
            .with_context(|| format!("cannot tell the balancer of {node}"))
    }
}

/// Gives the balancer its whole list of servers (it reads its backends file every 2 s).
async fn write_backends(docker: &Docker, cluster: &str, servers: &[String]) -> Result<()> {
    let text: String = servers
        .iter()
        .map(|s| format!("{s}:{}\n", crate::node::API_PORT))
        .collect();
    let lb = crate::lb::docker::container_name(cluster);
    docker
        .upload(
            &lb,
            &[(
                crate::lb::BACKENDS_FILE.to_string(),
                text.into_bytes(),
                0o644,
            )],
        )
        .await
        .with_context(|| format!("cannot write the backends of the balancer {lb}"))
}

/// The index after the highest `<cluster>-<role>-<n>`, so names are never reused while a node
/// of that name might still be known to the API.
fn next_index(cluster: &str, role: &str, nodes: &[ContainerSummary]) -> usize {
    let prefix = format!("{cluster}-{role}-");
    nodes
        .iter()
        .filter_map(|c| {
            docker::container_name(c)
                .strip_prefix(&prefix)
                .and_then(|n| n.parse::<usize>().ok())
        })
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}

pub async fn add(options: AddOptions, progress: &Progress) -> Result<()> {
    let adding_server = match options.role.as_str() {
        docker::ROLE_WORKER => false,
        docker::ROLE_SERVER => true,
        other => bail!("--role {other:?}: expected worker or server"),
    };
    if options.count == 0 {
        bail!("--count must be at least 1");
    }
    let labels = parse_labels(&options.labels)?;
    let cluster = &options.cluster;
    let docker = Docker::connect().await?;
    let nodes = docker.node_containers(Some(cluster)).await?;
    if !nodes
        .iter()
        .any(|c| docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER))
    {
        bail!("no cluster named {cluster:?} (see `kcluster list`)");
    }
    if !nodes.iter().all(docker::is_running) {
        bail!(
            "cluster {cluster:?} is not running (see `kcluster list`); start it with `kcluster start --name {cluster}` first"
        );
    }
    let servers = nodes
        .iter()
        .filter(|c| docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER))
        .count();
    if adding_server && servers + options.count > crate::cluster::config::MAX_SERVERS {
        bail!(
            "cluster {cluster:?} has {servers} servers; {} more would pass the limit of {}",
            options.count,
            crate::cluster::config::MAX_SERVERS
        );
    }
    if options.etcd_binary.is_some() && !(adding_server && servers == 1) {
        bail!(
            "--etcd-binary is for adding servers to a cluster that has one (its nodes get an etcd member); this cluster's nodes already have what they need"
        );
    }
    // A cluster made with one server gets a store and an API balancer that several can share.
    let nodes = if adding_server
        && servers == 1
        && super::grow::into_several(
            &docker,
            cluster,
            &nodes,
            servers + options.count,
            options.etcd_binary.as_deref(),
            progress,
        )
        .await?
    {
        docker.node_containers(Some(cluster)).await?
    } else {
        nodes
    };
    let server = nodes
        .iter()
        .find(|c| docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER))
        .context("the cluster's server vanished")?;
    // A new server copies a server; a worker copies a worker if there is one (its mounts are
    // a worker's), else the server.
    let template = if adding_server {
        server
    } else {
        nodes
            .iter()
            .find(|c| docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_WORKER))
            .unwrap_or(server)
    };
    let template_name = docker::container_name(template);
    let server_name = docker::container_name(server);
    let NodeTemplate {
        image,
        env,
        binds,
        cpu_millis,
        memory_bytes,
        security,
        ..
    } = NodeTemplate::inspect(&docker, template).await?;
    let template_settings = read_settings(&docker, &template_name).await?;
    let read_pki = |file| super::kubeconfig::read_pki(&docker, &server_name, file);
    let ca = CertificateAuthority::from_pem(&read_pki("ca.crt").await?, &read_pki("ca.key").await?)
        .context("cannot load the cluster CA from the server node")?;

    let mut server_plan = if adding_server {
        Some(ServerPlan::read(&docker, cluster, &server_name, &template_settings, &nodes).await?)
    } else {
        None
    };
    let role = if adding_server {
        docker::ROLE_SERVER
    } else {
        docker::ROLE_WORKER
    };
    let first = next_index(cluster, role, &nodes);
    let mut added = Vec::new();
    for i in 0..options.count {
        let node_name = format!("{cluster}-{role}-{}", first + i);
        let step = progress.step(format!("Adding node {node_name}"));
        let mut settings = NodeSettings {
            node_name: node_name.clone(),
            role: role.to_string(),
            labels: labels.clone(),
            // A server's store settings are no worker's business.
            etcd: None,
            etcd_member: None,
            ..template_settings.clone()
        };
        let mut node_labels = HashMap::from([
            (docker::LABEL_CLUSTER.to_string(), cluster.clone()),
            (docker::LABEL_ROLE.to_string(), role.to_string()),
            (
                docker::LABEL_VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ]);
        let mut files = Vec::new();
        if let Some(plan) = &server_plan {
            settings.etcd = template_settings.etcd.clone();
            settings.servers = (servers + i + 1) as u32;
            if template_settings.etcd_member.is_some() {
                // The store learns of the member first; it then starts and joins.
                let peers = plan.add_member(&docker, &node_name).await?;
                settings.etcd_member = Some(crate::node::etcd_member::EtcdMember {
                    peers,
                    token: cluster.clone(),
                    join: true,
                });
            }
            node_labels.extend(plan.labels.clone());
            files.extend(plan.files.clone());
        }
        files.extend(super::create::node_files(&ca, &settings)?);
        let spec = NodeSpec {
            name: node_name.clone(),
            cluster: cluster.clone(),
            image: image.clone(),
            cmd: vec![
                "node".into(),
                if adding_server { "server" } else { "agent" }.into(),
            ],
            labels: node_labels,
            env: env.clone(),
            ports: Vec::new(),
            binds: binds.clone(),
            cpu_millis,
            memory_bytes,
        };
        if let Err(e) = docker.run_node(&spec, security, &files).await {
            let _ = docker.remove_node(&node_name).await;
            if let Some(plan) = &server_plan
                && template_settings.etcd_member.is_some()
            {
                plan.remove_member(&docker, &node_name).await;
            }
            return Err(e.context(format!("cannot add {node_name}; nothing of it is left")));
        }
        if let Some(plan) = server_plan.as_mut() {
            plan.add_to_balancer(&docker, cluster, &node_name).await?;
        }
        step.done();
        added.push(node_name);
    }
    if options.wait.is_zero() {
        return Ok(());
    }
    let (host, port, creds) = super::kubeconfig::api_access(cluster, server).await?;
    let mut step = progress.step(format!(
        "Waiting for {} new node(s) to be Ready",
        added.len()
    ));
    super::create::wait_ready(
        &host,
        port,
        &creds,
        nodes.len() + added.len(),
        options.wait,
        None,
        &mut step,
    )
    .await?;
    step.done();
    Ok(())
}

pub struct DeleteOptions {
    pub cluster: String,
    pub node: String,
    pub force: bool,
    pub timeout: Duration,
}

/// Pods a drain leaves alone, as `kubectl drain --ignore-daemonsets` does: DaemonSet pods
/// (their controller would put them back) and mirror pods.
fn drained(pod: &Pod) -> bool {
    let daemon = pod
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.kind == "DaemonSet"));
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    !daemon && !mirror
}

pub async fn delete(options: DeleteOptions, progress: &Progress) -> Result<()> {
    let cluster = &options.cluster;
    let node = &options.node;
    let docker = Docker::connect().await?;
    let nodes = docker.node_containers(Some(cluster)).await?;
    if !nodes
        .iter()
        .any(|c| docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER))
    {
        bail!("no cluster named {cluster:?} (see `kcluster list`)");
    }
    let Some(target) = nodes.iter().find(|c| docker::container_name(c) == *node) else {
        bail!(
            "cluster {cluster:?} has no node {node:?} (see `kcluster get nodes --name {cluster}`)"
        );
    };
    let removal = if docker::label(target, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER) {
        Some(ServerRemoval::plan(&docker, cluster, node, &nodes).await?)
    } else {
        None
    };
    let entry = super::kubeconfig::entry(cluster, false).await?;
    let client = super::kubeconfig::client(&entry).await?;
    let nodes_api: Api<Node> = Api::all(client.clone());
    let pods_api: Api<Pod> = Api::all(client.clone());

    let step = progress.step(format!("Cordoning {node}"));
    match nodes_api
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"unschedulable": true}})),
        )
        .await
    {
        Ok(_) => {}
        // A node that never registered has nothing to drain.
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e).with_context(|| format!("cannot cordon {node}")),
    }
    step.done();

    let mut step = progress.step(format!("Draining {node}"));
    let deadline = Instant::now() + options.timeout;
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    loop {
        let pods: Vec<Pod> = pods_api
            .list(&on_node)
            .await
            .with_context(|| format!("cannot list the pods on {node}"))?
            .items
            .into_iter()
            .filter(drained)
            .collect();
        if pods.is_empty() {
            break;
        }
        let mut blocked = Vec::new();
        for pod in &pods {
            let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let result = if options.force {
                api.delete(name, &DeleteParams::default().grace_period(0))
                    .await
                    .map(|_| ())
            } else {
                api.evict(name, &EvictParams::default()).await.map(|_| ())
            };
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                // A PodDisruptionBudget does not allow it now: try again, as kubectl drain does.
                Err(kube::Error::Api(e)) if e.code == 429 => {
                    blocked.push(format!("{ns}/{name}: {}", e.message));
                }
                Err(e) => return Err(e).with_context(|| format!("cannot evict {ns}/{name}")),
            }
        }
        step.set_message(format!(
            "Draining {node}: {} pod(s) left{}",
            pods.len(),
            if blocked.is_empty() {
                String::new()
            } else {
                format!(", {} held by a disruption budget", blocked.len())
            }
        ));
        if Instant::now() > deadline {
            bail!(
                "{node} was not drained within {}s ({} pod(s) left{}); the node stays cordoned. \
                 Retry, raise --timeout, or use --force to delete the pods without eviction",
                options.timeout.as_secs(),
                pods.len(),
                if blocked.is_empty() {
                    String::new()
                } else {
                    format!("; {}", blocked.join("; "))
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    step.done();

    if let Some(removal) = &removal {
        let step = progress.step(format!("Taking {node} out of the control plane"));
        removal.leave(&docker, cluster, node).await?;
        step.done();
    }
    let step = progress.step(format!("Removing {node}"));
    // A server out of the store is gone for good: its container goes first, so its agent
    // cannot register the Node again.
    if removal.is_some() {
        docker.remove_node(node).await?;
    }
    // The store may be electing a new leader just after a member left: a 5xx then is
    // retried for a while, as kubectl's clients retry.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match nodes_api.delete(node, &DeleteParams::default()).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 404 => break,
            Err(kube::Error::Api(e)) if e.code >= 500 && Instant::now() < deadline => {
                tracing::info!(error = %e.message, "the API server failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot delete the Node {node}")),
        }
    }
    if removal.is_none() {
        docker.remove_node(node).await?;
    }
    step.done();
    Ok(())
}

/// Deleting one of several servers: its etcd member leaves the store (through another
/// server, while every member runs, so the store keeps its quorum through the change) and
/// the balancer stops sending to it.
struct ServerRemoval {
    /// A server that stays, where the membership command runs.
    via: String,
    /// The servers that stay.
    staying: Vec<String>,
    /// Whether the servers run their own etcd members (not an external etcd).
    stacked: bool,
}

impl ServerRemoval {
    /// Checks, before anything changes, that `node` can leave.
    async fn plan(
        docker: &Docker,
        cluster: &str,
        node: &str,
        nodes: &[ContainerSummary],
    ) -> Result<ServerRemoval> {
        let servers: Vec<String> = nodes
            .iter()
            .filter(|c| docker::label(c, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER))
            .map(docker::container_name)
            .collect();
        if servers.len() == 1 {
            bail!(
                "{node} is the cluster's only server: it cannot be deleted (delete the cluster instead)"
            );
        }
        let stopped: Vec<String> = nodes
            .iter()
            .filter(|c| !docker::is_running(c))
            .map(docker::container_name)
            .collect();
        if !stopped.is_empty() {
            bail!(
                "cannot take {node} out of the store while {} not running: a store member leaves only with every member up (start the cluster with `kcluster start --name {cluster}` first)",
                stopped.join(", ") + if stopped.len() == 1 { " is" } else { " are" }
            );
        }
        let settings = read_settings(docker, node).await?;
        let staying: Vec<String> = servers.into_iter().filter(|s| s != node).collect();
        Ok(ServerRemoval {
            via: staying[0].clone(),
            staying,
            stacked: settings.etcd_member.is_some(),
        })
    }

    async fn leave(&self, docker: &Docker, cluster: &str, node: &str) -> Result<()> {
        if self.stacked {
            let out = docker
                .exec(
                    &self.via,
                    &["/kcluster", "node", "etcd-member", "remove", node],
                )
                .await?;
            if out.exit_code != 0 {
                bail!(
                    "the store kept {node} as a member (asked through {}): {}; {node} stays, cordoned",
                    self.via,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        write_backends(docker, cluster, &self.staying)
            .await
            .with_context(|| format!("cannot tell the balancer that {node} is gone"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_value_pairs() {
        let parsed = parse_labels(&["a=1".into(), "tier=".into()]).unwrap();
        assert_eq!(parsed.get("a").map(String::as_str), Some("1"));
        assert_eq!(parsed.get("tier").map(String::as_str), Some(""));
        assert!(parse_labels(&["novalue".into()]).is_err());
        assert!(parse_labels(&["=x".into()]).is_err());
    }
}
