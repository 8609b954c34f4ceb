//! `kcluster create`: check everything that can be checked before touching Docker, then create
//! the network and nodes, merge the kubeconfig and wait for every node to be Ready. A failure or
//! ctrl-C removes what was created unless --retain.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{CreateArgs, Progress};
use crate::cluster::config::{ClusterConfig, NodeConfig, Role, validate_cluster_name};
use crate::cluster::docker::{self, Docker, NodeSpec, PortSpec, Security};
use crate::cluster::{image, kubeconfig};
use crate::node::NodeSettings;
use crate::node::client::Credentials;
use crate::pki::CertificateAuthority;

pub const DEFAULT_NAME: &str = "kcluster";
pub const API_PORT_IN_NODE: u16 = 6443;

#[derive(Debug, thiserror::Error)]
#[error("interrupted: removed what was created (use --retain to keep it)")]
pub struct Interrupted;

pub fn context_name(cluster: &str) -> String {
    format!("kcluster-{cluster}")
}

pub fn node_names<'a>(cluster: &str, config: &'a ClusterConfig) -> Vec<(String, &'a NodeConfig)> {
    let (mut servers, mut workers) = (0, 0);
    config
        .nodes
        .iter()
        .map(|n| {
            let name = match n.role {
                Role::Server => {
                    servers += 1;
                    format!("{cluster}-server-{}", servers - 1)
                }
                Role::Worker => {
                    workers += 1;
                    format!("{cluster}-worker-{}", workers - 1)
                }
            };
            (name, n)
        })
        .collect()
}

/// An external etcd must answer now and hold nothing of a cluster of this name: a leftover
/// state would come back as this cluster's objects, signed by another CA.
async fn check_etcd(etcd: &crate::store::etcd::EtcdConfig, name: &str) -> Result<()> {
    use crate::store::{StoreError, etcd};
    let prefix = etcd::cluster_prefix(name);
    match etcd::check_empty(etcd, &prefix).await {
        Ok(()) => Ok(()),
        Err(StoreError::AlreadyExists { .. }) => bail!(
            "etcd already holds keys under {prefix} (a cluster named {name:?} used it before): remove them with `etcdctl del --prefix {prefix}` or choose another --name"
        ),
        Err(e) => Err(anyhow::anyhow!(e)).with_context(|| {
            format!(
                "cannot use etcd at {} (--store): it must answer from this machine before the cluster is made",
                etcd.endpoints.join(",")
            )
        }),
    }
}

/// The settled plan: everything decided and checked before anything is created.
struct Plan {
    name: String,
    config: ClusterConfig,
    api_address: IpAddr,
    api_port: u16,
    image: String,
    build_from: Option<std::path::PathBuf>,
    kubeconfig_path: std::path::PathBuf,
    /// The local registry the cluster uses (`--registry`, `--registry-use`).
    registry: Option<crate::registry::docker::RegistryInfo>,
    /// `--store etcd=…`: the server keeps the state there.
    etcd: Option<crate::store::etcd::EtcdConfig>,
    /// Several servers without `--store`: the etcd their nodes run.
    etcd_binary: Option<image::EtcdBinary>,
}

pub async fn run(args: CreateArgs, progress: &Progress) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => ClusterConfig::load(path)?,
        None => ClusterConfig::default_for(
            args.name.as_deref().unwrap_or(DEFAULT_NAME),
            args.workers.unwrap_or(0),
        ),
    };
    let name = args
        .name
        .clone()
        .or_else(|| config.name.clone())
        .unwrap_or_else(|| DEFAULT_NAME.to_string());
    validate_cluster_name(&name)?;
    config.name = Some(name.clone());
    if let Some(workers) = args.workers {
        config.nodes.retain(|n| n.role == Role::Server);
        let template = NodeConfig {
            role: Role::Worker,
            ..ClusterConfig::default_for(&name, 1).nodes.remove(1)
        };
        config.nodes.extend(std::iter::repeat_n(template, workers));
    }
    if let Some(servers) = args.servers {
        let template = config
            .nodes
            .iter()
            .find(|n| n.role == Role::Server)
            .cloned()
            .unwrap_or_else(|| ClusterConfig::default_for(&name, 0).nodes.remove(0));
        config.nodes.retain(|n| n.role == Role::Worker);
        let servers = std::iter::repeat_n(template, usize::from(servers));
        config.nodes.splice(0..0, servers);
    }
    apply_size_flags(&mut config, &args)?;
    if let Some(port) = args.api_port {
        config.networking.api_server_port = port;
    }
    if let Some(address) = args.host_address {
        config.networking.host_address = address;
    }
    if let Some(p) = args.ingress_http_port {
        config.ingress.http_port = p;
    }
    if let Some(p) = args.ingress_https_port {
        config.ingress.https_port = p;
    }
    if args.no_ingress {
        config.ingress.enabled = false;
    }
    config.validate()?;
    check_mounts(&config)?;
    let etcd = args.etcd_tls.config(&args.store)?;
    // Several servers share one store: the user's etcd, else a member on each server node.
    let etcd_binary = match (config.servers() > 1 && etcd.is_none(), &args.etcd_binary) {
        (true, explicit) => Some(image::find_etcd(explicit.as_deref())?),
        (false, Some(_)) => bail!(
            "--etcd-binary is for clusters with several servers and their own etcd (--servers 3 without --store etcd=…)"
        ),
        (false, None) => None,
    };

    let docker = Docker::connect().await?;
    check_sizes_against_host(&docker, &config, &args).await?;
    if !docker.node_containers(Some(&name)).await?.is_empty()
        || docker.network_exists(&name).await?
    {
        bail!(
            "a cluster named {name:?} already exists (see `kcluster list`): delete it with `kcluster delete --name {name}` or choose another --name"
        );
    }
    let api_address = config.networking.api_server_address;
    let api_port = match config.networking.api_server_port {
        0 => pick_free_port(api_address)?,
        port => {
            check_port_free(api_address, port, "tcp").with_context(|| {
                format!(
                    "the API server port {port} is not free (--api-port / networking.apiServerPort)"
                )
            })?;
            port
        }
    };
    for node in &config.nodes {
        for m in &node.extra_port_mappings {
            let proto = format!("{:?}", m.protocol).to_lowercase();
            check_port_free(m.listen_address, m.host_port, &proto).with_context(|| {
                format!(
                    "extraPortMappings: host port {}/{proto} on {} is not free",
                    m.host_port, m.listen_address
                )
            })?;
        }
    }
    let kubeconfig_path = match &args.kubeconfig {
        Some(p) => p.clone(),
        None => kubeconfig::default_path(
            std::env::var("KUBECONFIG").ok().as_deref(),
            home().as_deref(),
        )?,
    };
    let (image, build_from) = match &args.image {
        Some(image) => (image.clone(), None),
        None => {
            let binary = image::own_binary()?;
            (image::tag_for(&binary)?, Some(binary))
        }
    };
    if let Some(etcd) = &etcd {
        check_etcd(etcd, &name).await?;
    }
    // Last of the checks, first of the changes: the registry is shared and outlives the cluster.
    let wanted = match (&args.registry_use, args.registry) {
        (Some(use_name), _) => Some(super::registry::Wanted {
            name: use_name.clone(),
            create: false,
        }),
        (None, true) => Some(super::registry::Wanted {
            name: crate::registry::docker::DEFAULT_NAME.to_string(),
            create: true,
        }),
        (None, false) => None,
    };
    let registry = match &wanted {
        Some(wanted) => {
            Some(super::registry::prepare(&docker, wanted, &mut config, progress).await?)
        }
        None => None,
    };
    let plan = Plan {
        name: name.clone(),
        registry,
        etcd,
        etcd_binary,
        config,
        api_address,
        api_port,
        image,
        build_from,
        kubeconfig_path,
    };

    let started = Instant::now();
    let outcome = tokio::select! {
        r = build(&docker, &plan, &args, progress) => r,
        _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
    };
    if let Err(err) = outcome {
        if args.retain {
            eprintln!(
                "create failed; --retain keeps cluster {name:?} for debugging (remove it with `kcluster delete --name {name}`)"
            );
        } else {
            let step = progress.step(format!("Removing what was created for cluster {name:?}"));
            docker.remove_cluster(&name).await?;
            if err.downcast_ref::<Interrupted>().is_some() {
                // A create request that was in flight when ctrl-C dropped it still completes in
                // the engine; a second sweep catches what landed after the first.
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                docker.remove_cluster(&name).await?;
            }
            kubeconfig::remove(&plan.kubeconfig_path, &context_name(&name))?;
            step.done();
        }
        return Err(err);
    }
    let ingress = if plan.config.ingress.enabled && !args.wait.is_zero() {
        match ingress_ports(&docker, &name, &plan.config.ingress).await {
            Some((host, http, https)) => {
                format!("\nIngress (class nginx): http://{host}:{http}  https://{host}:{https}")
            }
            None => "\nIngress (class nginx): host ports not published yet; see `kcluster port ls`"
                .to_string(),
        }
    } else {
        String::new()
    };
    progress.say(&format!(
        "\nCluster {name:?} is ready ({:.1}s).{ingress} Try:\n  kubectl cluster-info --context {ctx}\n  kubectl get nodes -o wide\nDelete it with: kcluster delete --name {name}",
        started.elapsed().as_secs_f64(),
        ctx = context_name(&name)
    ));
    Ok(())
}

async fn build(docker: &Docker, plan: &Plan, args: &CreateArgs, progress: &Progress) -> Result<()> {
    if let Some(binary) = &plan.build_from {
        let step = progress.step(format!("Ensuring node image {}", plan.image));
        image::ensure(docker, binary, &plan.image).await?;
        step.done();
    } else if !image::exists(docker, &plan.image).await? {
        bail!(
            "the image {} is not in the Docker engine; kcluster builds its own node image when --image is not given",
            plan.image
        );
    }

    let node_image = match &plan.etcd_binary {
        Some(etcd) => with_etcd(docker, &plan.image, etcd, progress).await?,
        None => plan.image.clone(),
    };

    let step = progress.step("Creating certificates");
    let ca = CertificateAuthority::generate(&format!("kcluster-{}-ca", plan.name))?;
    // The store's own CA, on server nodes only: what it signs reaches etcd, and nothing else.
    let etcd_ca = match &plan.etcd_binary {
        Some(_) => Some(CertificateAuthority::generate(&format!(
            "kcluster-{}-etcd-ca",
            plan.name
        ))?),
        None => None,
    };
    let admin = ca.issue_client("kubernetes-admin", &["system:masters"])?;
    step.done();

    let step = progress.step(format!(
        "Creating network {}",
        docker::network_name(&plan.name)
    ));
    docker.create_network(&plan.name).await?;
    if let Some(registry) = &plan.registry {
        crate::registry::docker::connect(docker, &registry.name, &plan.name).await?;
    }
    step.done();

    let nodes = node_names(&plan.name, &plan.config);
    let server_name = nodes
        .iter()
        .find(|(_, n)| n.role == Role::Server)
        .map(|(n, _)| n.clone())
        .context("the config has no server node")?;
    let server_names: Vec<String> = nodes
        .iter()
        .filter(|(_, n)| n.role == Role::Server)
        .map(|(name, _)| name.clone())
        .collect();
    let several = server_names.len() > 1;
    // Where nodes and the port publisher reach the API: the one server, or the balancer.
    let api_in_cluster = if several {
        format!(
            "{}:{API_PORT_IN_NODE}",
            crate::lb::docker::container_name(&plan.name)
        )
    } else {
        format!("{server_name}:{API_PORT_IN_NODE}")
    };
    let config_json =
        serde_json::to_string(&plan.config).context("cannot encode the cluster config")?;
    let mut specs = Vec::new();
    for (node_name, node) in &nodes {
        // Validated with the config; a problem here cannot happen.
        let (sizes, reserved) =
            node.resources
                .check(node_name, node.role == Role::Server, &mut Vec::new());
        let role = if node.role == Role::Server {
            docker::ROLE_SERVER
        } else {
            docker::ROLE_WORKER
        };
        let settings = NodeSettings {
            cluster: plan.name.clone(),
            node_name: node_name.clone(),
            role: role.to_string(),
            server: api_in_cluster.clone(),
            labels: node.labels.clone(),
            pod_subnet: plan.config.networking.pod_subnet.to_string(),
            service_subnet: plan.config.networking.service_subnet.to_string(),
            pull_fallback: plan.config.images.pull_fallback,
            reserved,
            eviction_hard: node.resources.eviction_hard.clone(),
            ingress: plan.config.ingress.clone(),
            mirrors: plan
                .config
                .registries
                .mirrors
                .iter()
                .map(|(k, m)| (k.clone(), m.endpoints.clone()))
                .collect(),
            etcd: plan.etcd.clone().filter(|_| node.role == Role::Server),
            etcd_member: etcd_ca
                .as_ref()
                .filter(|_| node.role == Role::Server)
                .map(|_| crate::node::etcd_member::EtcdMember {
                    peers: server_names.clone(),
                    token: plan.name.clone(),
                    join: false,
                }),
            servers: server_names.len() as u32,
        };
        let mut files = node_files(&ca, &settings)?;
        let mut labels = HashMap::from([
            (docker::LABEL_CLUSTER.to_string(), plan.name.clone()),
            (docker::LABEL_ROLE.to_string(), role.to_string()),
            (
                docker::LABEL_VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ]);
        let mut ports: Vec<PortSpec> = node
            .extra_port_mappings
            .iter()
            .map(|m| PortSpec {
                container_port: m.container_port,
                protocol: format!("{:?}", m.protocol).to_lowercase(),
                host_ip: m.listen_address.to_string(),
                host_port: m.host_port,
            })
            .collect();
        if node.role == Role::Server {
            files.push((
                format!("{}/ca.key", crate::node::PKI_DIR),
                ca.key_pem().into_bytes(),
                0o600,
            ));
            files.push((
                format!("{}/admin.crt", crate::node::PKI_DIR),
                admin.cert_pem.clone().into_bytes(),
                0o644,
            ));
            files.push((
                format!("{}/admin.key", crate::node::PKI_DIR),
                admin.key_pem.clone().into_bytes(),
                0o600,
            ));
            labels.insert(docker::LABEL_API_PORT.into(), plan.api_port.to_string());
            labels.insert(
                docker::LABEL_API_ADDRESS.into(),
                plan.api_address.to_string(),
            );
            labels.insert(docker::LABEL_CONFIG.into(), config_json.clone());
            if let Some(etcd_ca) = &etcd_ca {
                files.extend(crate::node::etcd_member::ca_files(etcd_ca));
            }
            // With several servers the balancer holds the port (the labels still say where
            // the API is, for every reader that asks a server node).
            if !several {
                ports.push(PortSpec {
                    container_port: API_PORT_IN_NODE,
                    protocol: "tcp".into(),
                    host_ip: plan.api_address.to_string(),
                    host_port: plan.api_port,
                });
            }
        }
        let node_log = std::env::var("KCLUSTER_NODE_LOG").unwrap_or_else(|_| "info".into());
        let spec = NodeSpec {
            name: node_name.clone(),
            cluster: plan.name.clone(),
            image: node_image.clone(),
            cmd: vec![
                "node".into(),
                if node.role == Role::Server {
                    "server".into()
                } else {
                    "agent".into()
                },
            ],
            labels,
            env: node_env(&node_log),
            ports,
            cpu_millis: sizes.cpu_millis,
            memory_bytes: sizes.memory_bytes,
            binds: node
                .extra_mounts
                .iter()
                .map(|m| {
                    (
                        m.host_path.display().to_string(),
                        m.container_path.display().to_string(),
                        m.read_only,
                    )
                })
                .collect(),
        };
        specs.push((spec, files, node.role == Role::Server));
    }

    // All nodes start at once. The first node refused --privileged tells the others, which then
    // go straight to the capability fallback.
    let step = progress.step(format!("Starting {} node container(s)", specs.len()));
    let refused = AtomicBool::new(false);
    futures::future::try_join_all(
        specs
            .iter()
            .map(|(spec, files, _)| run_node(docker, spec, files, &refused)),
    )
    .await?;
    step.done();

    if several {
        let step = progress.step(format!(
            "Starting the API load balancer {}",
            crate::lb::docker::container_name(&plan.name)
        ));
        let log = std::env::var("KCLUSTER_NODE_LOG").unwrap_or_else(|_| "info".into());
        crate::lb::docker::run_balancer(
            docker,
            &crate::lb::docker::BalancerSpec {
                cluster: &plan.name,
                image: &plan.image,
                host_address: plan.api_address.to_string(),
                host_port: plan.api_port,
                backends: server_names
                    .iter()
                    .map(|s| format!("{s}:{API_PORT_IN_NODE}"))
                    .collect(),
                ca_pem: ca.cert_pem(),
                log: &log,
            },
        )
        .await?;
        step.done();
    }

    let step = progress.step("Starting the port publisher");
    start_ports(docker, plan, &ca, &api_in_cluster).await?;
    step.done();

    let server_url_host = if plan.api_address.is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        plan.api_address.to_string()
    };
    let entry = kubeconfig::KubeconfigEntry {
        context: context_name(&plan.name),
        server: format!(
            "https://{}",
            SocketAddr::new(server_url_host.parse()?, plan.api_port)
        ),
        ca_pem: ca.cert_pem(),
        client_cert_pem: admin.cert_pem.clone(),
        client_key_pem: admin.key_pem.clone(),
    };
    let step = progress.step(format!(
        "Writing context {} to {}",
        entry.context,
        plan.kubeconfig_path.display()
    ));
    kubeconfig::merge(&plan.kubeconfig_path, &entry, !args.no_switch_context)?;
    step.done();

    let creds = Credentials {
        ca_pem: ca.cert_pem(),
        cert_pem: admin.cert_pem,
        key_pem: admin.key_pem,
    };
    if let Some(registry) = &plan.registry {
        let step = progress.step(format!(
            "Writing {}/{} ({})",
            crate::registry::hosting::NAMESPACE,
            crate::registry::hosting::NAME,
            registry.host()
        ));
        write_hosting(&server_url_host, plan.api_port, &creds, registry).await?;
        step.done();
    }
    if args.wait.is_zero() {
        return Ok(());
    }
    let deadline = Instant::now() + args.wait;
    let mut step = progress.step(format!("Waiting for {} node(s) to be Ready", nodes.len()));
    if let Err(e) = wait_ready(
        &server_url_host,
        plan.api_port,
        &creds,
        nodes.len(),
        args.wait,
        None,
        &mut step,
    )
    .await
    {
        let logs = docker.logs_tail(&server_name, 15).await;
        return Err(e.context(format!("last lines of {server_name}'s log:\n{logs}")));
    }
    step.set_message("Waiting for cluster DNS to answer".to_string());
    if let Err(e) = wait_dns(docker, &server_name, deadline).await {
        let logs = docker.logs_tail(&server_name, 15).await;
        return Err(e.context(format!("last lines of {server_name}'s log:\n{logs}")));
    }
    step.done();
    Ok(())
}

/// The host address and ports the Ingress controller's Service got (the publisher's proxy
/// labels), waiting up to 30 s for the publisher to start both.
async fn ingress_ports(
    docker: &Docker,
    cluster: &str,
    cfg: &crate::ingress::IngressConfig,
) -> Option<(String, u16, u16)> {
    let service = format!(
        "{}/{}",
        crate::ingress::SERVICE_NAMESPACE,
        crate::ingress::SERVICE_NAME
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(proxies) = crate::ports::docker::proxies(docker, cluster).await {
            let mine: Vec<_> = proxies
                .iter()
                .filter_map(crate::ports::docker::published)
                .filter(|p| p.service == service && p.running && p.kind == "LoadBalancer")
                .collect();
            let port = |service_port: u16| {
                mine.iter()
                    .find(|p| p.service_port == service_port)
                    .map(|p| (p.host_address.clone(), p.host_port))
            };
            if let (Some((host, http)), Some((_, https))) =
                (port(cfg.http_port), port(cfg.https_port))
            {
                return Some((host, http, https));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// KEP-1755's ConfigMap, once the API server answers (even with --wait 0: tools read it
/// as soon as the cluster is there).
async fn write_hosting(
    host: &str,
    port: u16,
    creds: &Credentials,
    registry: &crate::registry::docker::RegistryInfo,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let client = crate::node::client::connect(host, port, creds).await?;
    loop {
        match crate::registry::hosting::write(client.clone(), registry).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(
                    error = format!("{e:#}"),
                    "the API server does not take the ConfigMap yet"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                return Err(e.context(
                    "the API server did not take the local-registry-hosting ConfigMap within 120s",
                ));
            }
        }
    }
}

/// `kcluster-<name>-ports`: publishes NodePort and LoadBalancer Services on the host while
/// the cluster runs. It gets a client certificate of its own and the engine's socket.
async fn start_ports(
    docker: &Docker,
    plan: &Plan,
    ca: &CertificateAuthority,
    api: &str,
) -> Result<()> {
    let cert = ca.issue_client("system:kcluster-ports", &[])?;
    let dir = crate::ports::PKI_DIR;
    let files = vec![
        (format!("{dir}/ca.crt"), ca.cert_pem().into_bytes(), 0o644),
        (
            format!("{dir}/ports.crt"),
            cert.cert_pem.into_bytes(),
            0o644,
        ),
        (format!("{dir}/ports.key"), cert.key_pem.into_bytes(), 0o600),
    ];
    let log = std::env::var("KCLUSTER_NODE_LOG").unwrap_or_else(|_| "info".into());
    crate::ports::docker::run_controller(
        docker,
        &crate::ports::docker::ControllerSpec {
            cluster: &plan.name,
            image: &plan.image,
            server: api,
            host_address: &plan.config.networking.host_address.to_string(),
            publish_node_ports: plan.config.networking.publish_node_ports,
            files,
            log: &log,
        },
    )
    .await
}

/// What a user's first pod needs besides Ready nodes: a name resolving through the cluster DNS
/// Service, which takes both the service proxy and the DNS server of the server node.
pub(super) async fn wait_dns(docker: &Docker, server: &str, deadline: Instant) -> Result<()> {
    let probe = [
        "/kcluster",
        "node",
        "dns-probe",
        "kubernetes.default.svc.cluster.local",
    ];
    let mut last = String::new();
    while Instant::now() < deadline {
        match docker.exec(server, &probe).await {
            Ok(out) if out.exit_code == 0 => return Ok(()),
            Ok(out) => last = String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "cluster DNS did not answer in time ({last}); raise --wait, or add --retain and look at `docker logs {server}`"
    )
}

/// Environment for node processes; controller settings (a shorter node-monitor grace period,
/// the autoscaler's sync period and downscale stabilization) can be passed through for tests,
/// and kubelet-style hard-eviction thresholds (`KCLUSTER_EVICTION_HARD`).
/// What every node gets before it starts: its settings, the cluster CA, its client certificate
/// (`system:node:<name>` in `system:nodes`) and its kubelet API serving certificate.
/// The node image `base` plus this machine's etcd, for servers with an etcd member each: built
/// once per pair, as a step the user sees.
pub(super) async fn with_etcd(
    docker: &Docker,
    base: &str,
    etcd: &image::EtcdBinary,
    progress: &Progress,
) -> Result<String> {
    let step = progress.step(format!(
        "Adding etcd {} from {} to the node image",
        etcd.version,
        etcd.path.display()
    ));
    let tag = image::ensure_with_etcd(docker, base, etcd).await?;
    step.done();
    Ok(tag)
}

pub(super) fn node_files(
    ca: &CertificateAuthority,
    settings: &NodeSettings,
) -> Result<Vec<(String, Vec<u8>, u32)>> {
    let node_name = &settings.node_name;
    let node_cert = ca.issue_client(&format!("system:node:{node_name}"), &["system:nodes"])?;
    // The kubelet API's serving certificate: the API server checks it names the node.
    let kubelet_cert =
        crate::kubeletapi::certs::issue(ca, node_name, &[std::net::IpAddr::from([127, 0, 0, 1])])?;
    let files = vec![
        (
            crate::node::NODE_CONFIG_PATH.to_string(),
            serde_json::to_vec_pretty(&settings)?,
            0o644,
        ),
        (
            format!("{}/ca.crt", crate::node::PKI_DIR),
            ca.cert_pem().into_bytes(),
            0o644,
        ),
        (
            format!("{}/node.crt", crate::node::PKI_DIR),
            node_cert.cert_pem.into_bytes(),
            0o644,
        ),
        (
            format!("{}/node.key", crate::node::PKI_DIR),
            node_cert.key_pem.into_bytes(),
            0o600,
        ),
        (
            format!(
                "{}/{}",
                crate::node::PKI_DIR,
                crate::kubeletapi::certs::CERT_FILE
            ),
            kubelet_cert.cert_pem.into_bytes(),
            0o644,
        ),
        (
            format!(
                "{}/{}",
                crate::node::PKI_DIR,
                crate::kubeletapi::certs::KEY_FILE
            ),
            kubelet_cert.key_pem.into_bytes(),
            0o600,
        ),
    ];
    Ok(files)
}

pub(super) fn node_env(log: &str) -> Vec<String> {
    let mut env = vec![format!("RUST_LOG={log}")];
    for name in [
        "KCLUSTER_NODE_MONITOR_GRACE_SECONDS",
        "KCLUSTER_HPA_SYNC_PERIOD_SECONDS",
        "KCLUSTER_HPA_DOWNSCALE_STABILIZATION_SECONDS",
        "KCLUSTER_EVICTION_HARD",
    ] {
        if let Ok(value) = std::env::var(name) {
            env.push(format!("{name}={value}"));
        }
    }
    env
}

/// `--node-cpus/--node-memory` size every node, over the config file's `nodes[].resources`.
fn apply_size_flags(config: &mut ClusterConfig, args: &CreateArgs) -> Result<()> {
    use crate::noderesources::{QuantityText, Size, Sizes, check_minimum, quantity};
    let sizes = Sizes {
        cpu_millis: args
            .node_cpus
            .as_deref()
            .map(quantity::parse_cpu_millis)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--node-cpus: {e}"))?,
        memory_bytes: args
            .node_memory
            .as_deref()
            .map(quantity::parse_bytes)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--node-memory: {e}"))?,
    };
    for node in &mut config.nodes {
        if let Err((size, message)) = check_minimum(&sizes, node.role == Role::Server) {
            let flag = match size {
                Size::Cpus => "--node-cpus",
                Size::Memory => "--node-memory",
            };
            bail!("{flag}: {message}");
        }
        if let Some(cpus) = &args.node_cpus {
            node.resources.cpus = Some(QuantityText::Text(cpus.clone()));
        }
        if let Some(memory) = &args.node_memory {
            node.resources.memory = Some(QuantityText::Text(memory.clone()));
        }
    }
    Ok(())
}

/// The checks that need the Docker host: no node gets more CPUs or memory than it has.
async fn check_sizes_against_host(
    docker: &Docker,
    config: &ClusterConfig,
    args: &CreateArgs,
) -> Result<()> {
    use crate::noderesources::{Size, check_against_host};
    if config
        .nodes
        .iter()
        .all(|n| n.resources.cpus.is_none() && n.resources.memory.is_none())
    {
        return Ok(());
    }
    let host = docker.host().await?;
    for (i, node) in config.nodes.iter().enumerate() {
        let (sizes, _) = node
            .resources
            .check("", node.role == Role::Server, &mut Vec::new());
        if let Err((size, message)) = check_against_host(&sizes, &host) {
            let field = match size {
                Size::Cpus if args.node_cpus.is_some() => "--node-cpus".to_string(),
                Size::Memory if args.node_memory.is_some() => "--node-memory".to_string(),
                Size::Cpus => format!("nodes[{i}].resources.cpus"),
                Size::Memory => format!("nodes[{i}].resources.memory"),
            };
            bail!("{field}: {message}");
        }
    }
    Ok(())
}

/// Starts a node privileged, falling back to the capability set when the engine cannot grant
/// every capability (and telling the other nodes through `refused`).
async fn run_node(
    docker: &Docker,
    spec: &NodeSpec,
    files: &[(String, Vec<u8>, u32)],
    refused: &AtomicBool,
) -> Result<()> {
    if !refused.load(Ordering::SeqCst) {
        match docker.run_node(spec, Security::Privileged, files).await {
            Ok(()) => return Ok(()),
            Err(e) if docker::is_capability_failure(&e) => {
                tracing::info!(node = %spec.name, "privileged containers are refused here; using the capability fallback");
                refused.store(true, Ordering::SeqCst);
                docker.remove_node(&spec.name).await?;
            }
            Err(e) => return Err(e),
        }
    }
    docker.run_node(spec, Security::Capabilities, files).await
}

/// Waits until `expected` nodes are Ready; with `since`, only a Ready condition whose heartbeat
/// is at or after it counts (after a restart the stored status still says Ready from before).
pub(super) async fn wait_ready(
    host: &str,
    port: u16,
    creds: &Credentials,
    expected: usize,
    wait: Duration,
    since: Option<jiff::Timestamp>,
    step: &mut crate::cli::progress::Step,
) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let deadline = Instant::now() + wait;
    let client = crate::node::client::connect(host, port, creds).await?;
    let nodes: kube::Api<Node> = kube::Api::all(client);
    let mut last = String::from("the API server is not answering yet");
    while Instant::now() < deadline {
        match nodes.list(&Default::default()).await {
            Ok(list) => {
                let ready = list
                    .items
                    .iter()
                    .filter(|n| node_ready(n) && since.is_none_or(|t| heartbeat_since(n, t)))
                    .count();
                last = format!("{ready} of {expected} node(s) Ready");
                step.set_message(format!("Waiting for nodes to be Ready: {last}"));
                if ready >= expected {
                    return Ok(());
                }
            }
            Err(e) => last = format!("the API server is not answering yet: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the cluster was not Ready within {}s ({last}); raise --wait, or add --retain and look at `docker logs`",
        wait.as_secs()
    )
}

fn heartbeat_since(node: &k8s_openapi::api::core::v1::Node, since: jiff::Timestamp) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .is_some_and(|t| t.0 >= since)
}

pub fn node_ready(node: &k8s_openapi::api::core::v1::Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn check_mounts(config: &ClusterConfig) -> Result<()> {
    for node in &config.nodes {
        for m in &node.extra_mounts {
            if !m.host_path.exists() {
                bail!(
                    "extraMounts: hostPath {} does not exist on this machine",
                    m.host_path.display()
                );
            }
        }
    }
    Ok(())
}

fn pick_free_port(address: IpAddr) -> Result<u16> {
    let listener = std::net::TcpListener::bind(SocketAddr::new(address, 0))
        .with_context(|| format!("cannot find a free port on {address}"))?;
    Ok(listener.local_addr()?.port())
}

fn check_port_free(address: IpAddr, port: u16, protocol: &str) -> Result<()> {
    let addr = SocketAddr::new(address, port);
    match protocol {
        "udp" => std::net::UdpSocket::bind(addr).map(drop),
        _ => std::net::TcpListener::bind(addr).map(drop),
    }
    .with_context(|| format!("{addr} is in use"))
}

pub fn home() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(std::path::PathBuf::from)
}
