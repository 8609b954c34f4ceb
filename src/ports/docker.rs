//! The Docker side of host ports: the per-cluster controller container and one proxy container
//! per host port. Both run the node image (no other image, no registry) and carry the cluster's
//! labels, so `kcluster delete` removes them with the nodes.

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, HostConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};

use super::want::{Protocol, Wanted};
use crate::cluster::docker::{self, Docker, LABEL_CLUSTER, LABEL_ROLE};

/// Why a proxy did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The engine could not bind the host port: something else holds it, or it is privileged.
    #[error("{0}")]
    PortUnavailable(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A proxy container to create.
pub struct ProxySpec<'a> {
    pub cluster: &'a str,
    pub image: &'a str,
    pub host_address: &'a str,
    pub host_port: u16,
    pub want: &'a Wanted,
    /// Node names: the proxy forwards to `<node>:<node port>`.
    pub nodes: &'a [String],
}

fn unless_stopped() -> Option<RestartPolicy> {
    // A Docker restart brings the proxies back with their ports, like the nodes.
    Some(RestartPolicy {
        name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
        maximum_retry_count: None,
    })
}

/// Removes a container; one that is already gone is fine.
pub async fn remove(docker: &Docker, name: &str) -> Result<()> {
    let options = RemoveContainerOptionsBuilder::new().force(true).build();
    match docker.api().remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if crate::cluster::docker::is_not_found(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove the container {name}")),
    }
}

/// The cluster's proxy containers, running or not.
pub async fn proxies(docker: &Docker, cluster: &str) -> Result<Vec<ContainerSummary>> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{LABEL_CLUSTER}={cluster}"),
            format!("{LABEL_ROLE}={}", docker::ROLE_PORT_PROXY),
        ],
    )]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let mut list = docker
        .api()
        .list_containers(Some(options))
        .await
        .context("cannot list the port proxies")?;
    list.sort_by_key(docker::container_name);
    Ok(list)
}

/// Creates and starts one proxy. A host port the engine cannot bind is `PortUnavailable`, and
/// the container is removed again so that nothing is left behind.
pub async fn start_proxy(docker: &Docker, spec: &ProxySpec<'_>) -> Result<String, StartError> {
    let want = spec.want;
    let name = super::proxy_name(spec.cluster, spec.host_port, want.protocol);
    let proto = want.protocol.as_str().to_lowercase();
    let container_port = format!("{}/{proto}", spec.host_port);
    let labels = HashMap::from([
        (LABEL_CLUSTER.to_string(), spec.cluster.to_string()),
        (LABEL_ROLE.to_string(), docker::ROLE_PORT_PROXY.to_string()),
        (super::LABEL_KEY.to_string(), want.key.clone()),
        (
            super::LABEL_SERVICE.to_string(),
            format!("{}/{}", want.namespace, want.name),
        ),
        (
            super::LABEL_KIND.to_string(),
            want.kind.as_str().to_string(),
        ),
        (
            super::LABEL_PROTOCOL.to_string(),
            want.protocol.as_str().to_string(),
        ),
        (
            super::LABEL_HOST_ADDRESS.to_string(),
            spec.host_address.to_string(),
        ),
        (
            super::LABEL_HOST_PORT.to_string(),
            spec.host_port.to_string(),
        ),
        (
            super::LABEL_SERVICE_PORT.to_string(),
            want.service_port.to_string(),
        ),
        (
            super::LABEL_NODE_PORT.to_string(),
            want.node_port.to_string(),
        ),
        (
            super::LABEL_SOURCE_RANGES.to_string(),
            want.source_ranges_label(),
        ),
        (
            super::LABEL_PROXY_PROTOCOL.to_string(),
            want.proxy_protocol_label(),
        ),
    ]);
    let mut cmd = vec![
        "node".to_string(),
        "port-proxy".to_string(),
        "--protocol".to_string(),
        proto.clone(),
        "--port".to_string(),
        spec.host_port.to_string(),
    ];
    if let Some(target) = &want.proxy_protocol {
        cmd.push("--proxy-protocol".to_string());
        cmd.push("--target".to_string());
        cmd.push(target.clone());
    } else {
        let target_port = match want.cluster_ip {
            Some(ip) => {
                cmd.push("--cluster-ip".to_string());
                cmd.push(ip.to_string());
                want.service_port
            }
            None => want.node_port,
        };
        for node in spec.nodes {
            cmd.push("--target".to_string());
            cmd.push(format!("{node}:{target_port}"));
        }
    }
    for range in &want.source_ranges {
        cmd.push("--allow".to_string());
        cmd.push(range.to_string());
    }
    let host_config = HostConfig {
        network_mode: Some(docker::network_name(spec.cluster)),
        port_bindings: Some(HashMap::from([(
            container_port.clone(),
            Some(vec![PortBinding {
                host_ip: Some(spec.host_address.to_string()),
                host_port: Some(spec.host_port.to_string()),
            }]),
        )])),
        restart_policy: unless_stopped(),
        // Routing a cluster IP through a node is a route in the proxy's own namespace.
        cap_add: want
            .cluster_ip
            .filter(|_| want.proxy_protocol.is_none())
            .map(|_| vec!["NET_ADMIN".to_string()]),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(spec.image.to_string()),
        cmd: Some(cmd),
        // Proxies log at the publisher's level (KCLUSTER_NODE_LOG at create).
        env: Some(vec![format!(
            "RUST_LOG={}",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into())
        )]),
        labels: Some(labels),
        exposed_ports: Some(vec![container_port]),
        stop_timeout: Some(2),
        host_config: Some(host_config),
        ..Default::default()
    };
    let create = |body: ContainerCreateBody| {
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        docker.api().create_container(Some(options), body)
    };
    match create(body.clone()).await {
        Ok(_) => {}
        // A container of ours by that name that the caller no longer wants (a failed start
        // from an earlier pass): replace it.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => {
            remove(docker, &name).await?;
            create(body)
                .await
                .with_context(|| format!("cannot create the port proxy {name}"))?;
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot create the port proxy {name}"))
                .into());
        }
    }
    if let Err(e) = docker.api().start_container(&name, None).await {
        let text = e.to_string();
        let _ = remove(docker, &name).await;
        if is_bind_failure(&text) {
            return Err(StartError::PortUnavailable(bind_message(&text)));
        }
        return Err(anyhow::Error::new(e)
            .context(format!("cannot start the port proxy {name}"))
            .into());
    }
    Ok(name)
}

pub(crate) fn is_bind_failure(text: &str) -> bool {
    [
        "port is already allocated",
        "address already in use",
        "permission denied",
        "cannot assign requested address",
        "programming external connectivity",
    ]
    .iter()
    .any(|s| text.to_lowercase().contains(s))
}

/// The engine's words without its endpoint ids: "Bind for 127.0.0.1:8080 failed: port is
/// already allocated", "listen tcp4 127.0.0.1:80: bind: address already in use".
pub(crate) fn bind_message(text: &str) -> String {
    let tail = text
        .rsplit_once("external connectivity on endpoint")
        .and_then(|(_, rest)| rest.split_once(": "))
        .map(|(_, msg)| msg)
        .unwrap_or(text);
    tail.trim().trim_end_matches(')').trim().to_string()
}

/// What the controller container needs to know, as its command line.
pub struct ControllerSpec<'a> {
    pub cluster: &'a str,
    pub image: &'a str,
    /// host:port of the API server inside the cluster network.
    pub server: &'a str,
    pub host_address: &'a str,
    pub publish_node_ports: bool,
    /// Files to place before the start: the CA and the controller's client certificate.
    pub files: Vec<(String, Vec<u8>, u32)>,
    pub log: &'a str,
}

/// The engine's socket on this machine, which the controller gets mounted.
fn docker_socket() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => host.trim_start_matches("unix://").to_string(),
        _ => "/var/run/docker.sock".to_string(),
    }
}

/// Creates and starts `kcluster-<cluster>-ports`.
pub async fn run_controller(docker: &Docker, spec: &ControllerSpec<'_>) -> Result<()> {
    let name = super::controller_name(spec.cluster);
    let labels = HashMap::from([
        (LABEL_CLUSTER.to_string(), spec.cluster.to_string()),
        (LABEL_ROLE.to_string(), docker::ROLE_PORTS.to_string()),
    ]);
    let cmd = vec![
        "node".to_string(),
        "ports".to_string(),
        "--cluster".to_string(),
        spec.cluster.to_string(),
        "--server".to_string(),
        spec.server.to_string(),
        "--image".to_string(),
        spec.image.to_string(),
        "--host-address".to_string(),
        spec.host_address.to_string(),
        format!("--publish-node-ports={}", spec.publish_node_ports),
    ];
    let host_config = HostConfig {
        network_mode: Some(docker::network_name(spec.cluster)),
        binds: Some(vec![format!("{}:/var/run/docker.sock", docker_socket())]),
        restart_policy: unless_stopped(),
        tmpfs: Some(HashMap::from([("/tmp".to_string(), "rw".to_string())])),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        hostname: Some(name.clone()),
        image: Some(spec.image.to_string()),
        cmd: Some(cmd),
        env: Some(vec![format!("RUST_LOG={}", spec.log)]),
        labels: Some(labels),
        stop_timeout: Some(5),
        host_config: Some(host_config),
        ..Default::default()
    };
    docker
        .create_and_start(
            &name,
            body,
            &spec.files,
            "port publisher",
            &format!(" (it needs the Docker socket {} mounted)", docker_socket()),
        )
        .await
}

/// One proxy as its labels describe it.
#[derive(Debug, Clone)]
pub struct Published {
    pub container: String,
    pub running: bool,
    pub key: String,
    pub service: String,
    pub kind: String,
    pub protocol: Option<Protocol>,
    pub host_address: String,
    pub host_port: u16,
    pub service_port: u16,
    pub node_port: u16,
    /// As `Wanted::source_ranges_label`.
    pub source_ranges: String,
    /// As `Wanted::proxy_protocol_label`.
    pub proxy_protocol: String,
}

pub fn published(c: &ContainerSummary) -> Option<Published> {
    let label = |k: &str| docker::label(c, k).map(str::to_string);
    let number = |k: &str| label(k).and_then(|v| v.parse::<u16>().ok());
    Some(Published {
        container: docker::container_name(c),
        running: docker::is_running(c),
        key: label(super::LABEL_KEY)?,
        service: label(super::LABEL_SERVICE).unwrap_or_default(),
        kind: label(super::LABEL_KIND).unwrap_or_default(),
        protocol: label(super::LABEL_PROTOCOL).and_then(|p| Protocol::parse(&p)),
        host_address: label(super::LABEL_HOST_ADDRESS).unwrap_or_default(),
        host_port: number(super::LABEL_HOST_PORT)?,
        service_port: number(super::LABEL_SERVICE_PORT).unwrap_or(0),
        node_port: number(super::LABEL_NODE_PORT).unwrap_or(0),
        source_ranges: label(super::LABEL_SOURCE_RANGES).unwrap_or_default(),
        proxy_protocol: label(super::LABEL_PROXY_PROTOCOL).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_failures_read_as_such() {
        let taken = "Docker responded with status code 500: driver failed programming external connectivity on endpoint kcluster-a-port-8080-tcp (3f2a): Bind for 127.0.0.1:8080 failed: port is already allocated";
        assert!(is_bind_failure(taken));
        assert_eq!(
            bind_message(taken),
            "Bind for 127.0.0.1:8080 failed: port is already allocated"
        );
        let used = "Docker responded with status code 500: driver failed programming external connectivity on endpoint x (ab): Error starting userland proxy: listen tcp4 127.0.0.1:80: bind: address already in use";
        assert!(is_bind_failure(used));
        assert!(!is_bind_failure("No such image: kcluster/node:1"));
    }
}
