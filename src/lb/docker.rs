//! The `<cluster>-lb` container: the node image running `kcluster node lb`, holding the
//! cluster's published API port in front of its servers.

use std::collections::HashMap;

use anyhow::Result;
use bollard::models::{
    ContainerCreateBody, HostConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};

use crate::cluster::docker::{self, Docker, LABEL_CLUSTER, LABEL_ROLE};

/// The name nodes dial the API server by, resolved through Docker's DNS.
pub fn container_name(cluster: &str) -> String {
    format!("{cluster}-lb")
}

pub struct BalancerSpec<'a> {
    pub cluster: &'a str,
    pub image: &'a str,
    /// Where the host reaches the API (`networking.apiServerAddress`/`apiServerPort`).
    pub host_address: String,
    pub host_port: u16,
    /// host:port of every server's API.
    pub backends: Vec<String>,
    pub ca_pem: String,
    pub log: &'a str,
}

/// Creates and starts the balancer. Its labels carry the API port, as a single server's do.
pub async fn run_balancer(docker: &Docker, spec: &BalancerSpec<'_>) -> Result<()> {
    let name = container_name(spec.cluster);
    let labels = HashMap::from([
        (LABEL_CLUSTER.to_string(), spec.cluster.to_string()),
        (LABEL_ROLE.to_string(), docker::ROLE_LB.to_string()),
        (
            docker::LABEL_API_PORT.to_string(),
            spec.host_port.to_string(),
        ),
        (
            docker::LABEL_API_ADDRESS.to_string(),
            spec.host_address.clone(),
        ),
    ]);
    let port = crate::node::API_PORT;
    let mut cmd = vec![
        "node".to_string(),
        "lb".to_string(),
        format!("--port={port}"),
    ];
    cmd.extend(spec.backends.iter().map(|b| format!("--backend={b}")));
    let host_config = HostConfig {
        network_mode: Some(docker::network_name(spec.cluster)),
        port_bindings: Some(HashMap::from([(
            format!("{port}/tcp"),
            Some(vec![PortBinding {
                host_ip: Some(spec.host_address.clone()),
                host_port: Some(spec.host_port.to_string()),
            }]),
        )])),
        // A Docker restart brings it back with the nodes; `kcluster stop` keeps it down.
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        hostname: Some(name.clone()),
        image: Some(spec.image.to_string()),
        cmd: Some(cmd),
        env: Some(vec![format!("RUST_LOG={}", spec.log)]),
        labels: Some(labels),
        exposed_ports: Some(vec![format!("{port}/tcp")]),
        stop_timeout: Some(5),
        host_config: Some(host_config),
        ..Default::default()
    };
    let files = vec![(
        format!("{}/ca.crt", crate::node::PKI_DIR),
        spec.ca_pem.clone().into_bytes(),
        0o644,
    )];
    docker
        .create_and_start(&name, body, &files, "API load balancer", "")
        .await
}
