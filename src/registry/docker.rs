//! The registry as a Docker container: one per name (default `kcluster-registry`), the node
//! image running `kcluster node registry`, its data on the named volume `<name>-data` (or the
//! volume the user names, e.g. a size-limited one), published
//! on 127.0.0.1 (Docker pushes plain HTTP to loopback without any daemon setting), restarted by
//! Docker unless stopped. It belongs to no cluster: clusters join it to their network, where
//! Docker's DNS resolves it by its container name, and a cluster's delete only disconnects it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context, Result, bail};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, EndpointSettings, HostConfig, NetworkConnectRequest,
    NetworkDisconnectRequest, PortBinding, RestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use tracing::debug;

use crate::cluster::docker::{
    Docker, LABEL_ROLE, LABEL_VERSION, container_name, label, network_name,
};

pub const DEFAULT_NAME: &str = "kcluster-registry";
pub const DEFAULT_PORT: u16 = 5001;
pub const ROLE_REGISTRY: &str = "registry";
/// The host port the registry is published on (the container's record of it).
pub const LABEL_HOST_PORT: &str = "dev.kcluster.registry-port";
/// The volume its data is on (the container's record of it).
pub const LABEL_VOLUME: &str = "dev.kcluster.registry-volume";
/// How many ports after the asked one are tried when it is taken.
const PORT_TRIES: u16 = 100;

/// A registry container as its labels describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryInfo {
    pub name: String,
    pub host_port: u16,
    pub state: String,
    /// The cluster networks it is joined to.
    pub networks: Vec<String>,
    /// The Docker volume its blobs and manifests are on.
    pub volume: String,
}

impl RegistryInfo {
    /// What the host (docker push, kubectl run) calls it.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.host_port)
    }

    /// What containers on a cluster network call it.
    pub fn cluster_host(&self) -> String {
        format!("{}:{}", self.name, super::PORT_IN_CONTAINER)
    }
}

pub fn volume_name(name: &str) -> String {
    format!("{name}-data")
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_volume(volume: &str) -> Result<()> {
    let bytes = volume.as_bytes();
    let ok = bytes.len() >= 2
        && bytes.len() <= 255
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        bail!(
            "invalid volume name {volume:?}: Docker volume names are letters, digits, '_', '.' and '-', starting with a letter or digit"
        );
    }
    Ok(())
}

/// Registry names are container names that also resolve as DNS names on cluster networks.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "invalid registry name {name:?}: use lowercase letters, digits and '-' (at most 63 characters, not starting or ending with '-'), e.g. {DEFAULT_NAME}"
        );
    }
    Ok(())
}

fn info(c: &ContainerSummary) -> Option<RegistryInfo> {
    let host_port = label(c, LABEL_HOST_PORT)?.parse().ok()?;
    let mut networks: Vec<String> = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| {
            n.keys()
                .filter(|k| k.starts_with("kcluster-"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    networks.sort();
    let name = container_name(c);
    Some(RegistryInfo {
        name: name.clone(),
        host_port,
        state: crate::cluster::docker::state_str(c),
        networks,
        // Registries made before the label existed used the default volume.
        volume: label(c, LABEL_VOLUME)
            .map(str::to_string)
            .unwrap_or_else(|| volume_name(&name)),
    })
}

/// Every registry container, running or not.
pub async fn list(docker: &Docker) -> Result<Vec<RegistryInfo>> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_ROLE}={ROLE_REGISTRY}")],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .api()
        .list_containers(Some(options))
        .await
        .context("cannot list containers")?;
    let mut out: Vec<RegistryInfo> = list.iter().filter_map(info).collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub async fn find(docker: &Docker, name: &str) -> Result<Option<RegistryInfo>> {
    Ok(list(docker).await?.into_iter().find(|r| r.name == name))
}

/// How a registry is made when it does not exist yet.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Host port on 127.0.0.1; None: [`DEFAULT_PORT`], or the next free one.
    pub port: Option<u16>,
    /// The Docker volume for its data; None: `<name>-data`.
    pub volume: Option<String>,
    /// Serve DELETE of manifests and blobs.
    pub enable_delete: bool,
}

/// What `ensure` did.
pub struct Ensured {
    pub registry: RegistryInfo,
    /// The port asked for, when it was taken and another was used.
    pub moved_from: Option<u16>,
}

/// Returns the registry `name`, creating it (on `port` or the next free one) when missing and
/// starting it when stopped.
pub async fn ensure(
    docker: &Docker,
    name: &str,
    options: &Options,
    image: &str,
) -> Result<Ensured> {
    validate_name(name)?;
    if let Some(volume) = &options.volume {
        validate_volume(volume)?;
    }
    let port = options.port;
    if let Some(existing) = find(docker, name).await? {
        if let Some(p) = port
            && p != existing.host_port
        {
            bail!(
                "the registry {name} already exists on port {}, not {p}: leave out --port, or delete it first with `kcluster registry delete --name {name}`",
                existing.host_port
            );
        }
        if let Some(v) = &options.volume
            && *v != existing.volume
        {
            bail!(
                "the registry {name} already exists on the volume {}, not {v}: leave out --volume, or delete it first with `kcluster registry delete --name {name}`",
                existing.volume
            );
        }
        if existing.state != "running" {
            docker
                .api()
                .start_container(name, None)
                .await
                .with_context(|| format!("cannot start the registry {name}"))?;
        }
        return Ok(Ensured {
            registry: find(docker, name).await?.unwrap_or(existing),
            moved_from: None,
        });
    }
    if docker
        .api()
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .is_ok()
    {
        bail!(
            "a container named {name} exists and is not a kcluster registry: choose another --name"
        );
    }
    let wanted = port.unwrap_or(DEFAULT_PORT);
    let volume = options.volume.clone().unwrap_or_else(|| volume_name(name));
    ensure_volume(docker, &volume).await?;
    let mut last_error = None;
    for candidate in wanted..wanted.saturating_add(PORT_TRIES) {
        if !port_free(candidate) {
            continue;
        }
        match run(
            docker,
            name,
            candidate,
            &volume,
            image,
            options.enable_delete,
        )
        .await
        {
            Ok(()) => {
                let registry = find(docker, name)
                    .await?
                    .with_context(|| format!("the registry {name} vanished after its start"))?;
                return Ok(Ensured {
                    registry,
                    moved_from: (candidate != wanted).then_some(wanted),
                });
            }
            Err(e) => {
                // Another process took the port between the check and Docker's bind.
                let text = format!("{e:#}");
                let _ = remove_container(docker, name).await;
                if text.contains("port is already allocated")
                    || text.contains("address already in use")
                {
                    debug!(port = candidate, "taken at start; trying the next");
                    last_error = Some(e);
                    continue;
                }
                return Err(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| {
        anyhow::anyhow!(
            "no free port on 127.0.0.1 from {wanted} to {}: choose one with --port",
            wanted.saturating_add(PORT_TRIES - 1)
        )
    }))
}

/// Creates the volume when it does not exist; one that exists (the user's own, perhaps made
/// with size options) is used as it is. Only volumes made here carry the registry label, and
/// only those go with the registry.
async fn ensure_volume(docker: &Docker, volume: &str) -> Result<()> {
    match docker.api().inspect_volume(volume).await {
        Ok(_) => return Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot inspect the volume {volume}")),
    }
    docker
        .api()
        .create_volume(VolumeCreateRequest {
            name: Some(volume.to_string()),
            labels: Some(HashMap::from([(
                LABEL_ROLE.to_string(),
                ROLE_REGISTRY.to_string(),
            )])),
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create the volume {volume}"))?;
    Ok(())
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)).is_ok()
}

async fn run(
    docker: &Docker,
    name: &str,
    port: u16,
    volume: &str,
    image: &str,
    enable_delete: bool,
) -> Result<()> {
    let container_port = format!("{}/tcp", super::PORT_IN_CONTAINER);
    let port_bindings = HashMap::from([(
        container_port.clone(),
        Some(vec![PortBinding {
            host_ip: Some("127.0.0.1".into()),
            host_port: Some(port.to_string()),
        }]),
    )]);
    let mut cmd = vec!["node".to_string(), "registry".to_string()];
    if enable_delete {
        cmd.push("--enable-delete".into());
    }
    let host_config = HostConfig {
        binds: Some(vec![format!("{volume}:{}", super::DATA_DIR)]),
        port_bindings: Some(port_bindings),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        hostname: Some(name.to_string()),
        image: Some(image.to_string()),
        cmd: Some(cmd),
        env: Some(vec!["RUST_LOG=info".into()]),
        labels: Some(HashMap::from([
            (LABEL_ROLE.to_string(), ROLE_REGISTRY.to_string()),
            (LABEL_HOST_PORT.to_string(), port.to_string()),
            (LABEL_VOLUME.to_string(), volume.to_string()),
            (
                LABEL_VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
        ])),
        exposed_ports: Some(vec![container_port]),
        stop_timeout: Some(5),
        host_config: Some(host_config),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::new().name(name).build();
    docker
        .api()
        .create_container(Some(options), body)
        .await
        .with_context(|| format!("cannot create the registry container {name}"))?;
    docker
        .api()
        .start_container(name, None)
        .await
        .with_context(|| {
            format!("cannot start the registry container {name} on 127.0.0.1:{port}")
        })?;
    Ok(())
}

/// Joins the registry to a cluster's network (idempotent).
pub async fn connect(docker: &Docker, name: &str, cluster: &str) -> Result<()> {
    let network = network_name(cluster);
    let current = docker
        .api()
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .with_context(|| format!("cannot inspect the registry {name}"))?;
    let joined = current
        .network_settings
        .and_then(|n| n.networks)
        .is_some_and(|n| n.contains_key(&network));
    if joined {
        return Ok(());
    }
    docker
        .api()
        .connect_network(
            &network,
            NetworkConnectRequest {
                container: name.to_string(),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(vec![name.to_string()]),
                    ..Default::default()
                }),
            },
        )
        .await
        .with_context(|| format!("cannot join the registry {name} to the network {network}"))
}

/// Takes every registry off a cluster's network, so the network can be removed.
pub async fn disconnect_cluster(docker: &Docker, cluster: &str) -> Result<()> {
    let network = network_name(cluster);
    for registry in list(docker).await? {
        if !registry.networks.contains(&network) {
            continue;
        }
        let result = docker
            .api()
            .disconnect_network(
                &network,
                NetworkDisconnectRequest {
                    container: registry.name.clone(),
                    force: Some(true),
                },
            )
            .await;
        match result {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot take the registry {} off {network}", registry.name)
                });
            }
        }
    }
    Ok(())
}

async fn remove_container(docker: &Docker, name: &str) -> Result<()> {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.api().remove_container(name, Some(options)).await {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove the container {name}")),
    }
}

/// Removes the registry container and the volume made for it (the images in it go too); a
/// volume the user brought (`--volume` naming an existing one) is kept.
pub async fn remove(docker: &Docker, name: &str) -> Result<bool> {
    let Some(registry) = find(docker, name).await? else {
        return Ok(false);
    };
    remove_container(docker, name).await?;
    let volume = registry.volume;
    let made_here = match docker.api().inspect_volume(&volume).await {
        Ok(v) => v
            .labels
            .get(LABEL_ROLE)
            .is_some_and(|role| role == ROLE_REGISTRY),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(true),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect the volume {volume}")),
    };
    if !made_here {
        debug!(%volume, "the user's volume is kept");
        return Ok(true);
    }
    match docker
        .api()
        .remove_volume(
            &volume,
            Some(RemoveVolumeOptionsBuilder::new().force(true).build()),
        )
        .await
    {
        Ok(())
        | Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(true),
        Err(e) => Err(e).with_context(|| format!("cannot remove the volume {volume}")),
    }
}
