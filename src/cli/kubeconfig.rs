//! `kcluster get kubeconfig` and `kcluster export kubeconfig`: the admin credentials are read
//! back from the server node, where create left them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::Progress;
use super::create::{API_PORT_IN_NODE, context_name, home};
use bollard::models::ContainerSummary;

use crate::cluster::docker::{self, Docker};
use crate::cluster::kubeconfig::{self, KubeconfigEntry};
use crate::node::client::Credentials;

/// A file of the cluster's PKI directory on its server node (certificates and keys create left
/// there), as text.
pub(super) async fn read_pki(docker: &Docker, server: &str, file: &str) -> Result<String> {
    let bytes = docker
        .read_file(server, &format!("{}/{file}", crate::node::PKI_DIR))
        .await?;
    String::from_utf8(bytes).with_context(|| format!("{file} on {server} is not text"))
}

/// Where the host reaches a cluster's API server (address and port from the server node's
/// labels) and the admin credentials.
pub(super) async fn api_access(
    cluster: &str,
    server: &ContainerSummary,
) -> Result<(String, u16, Credentials)> {
    let port: u16 = docker::label(server, docker::LABEL_API_PORT)
        .and_then(|p| p.parse().ok())
        .context("the server node has no API port label")?;
    let host = match docker::label(server, docker::LABEL_API_ADDRESS) {
        None | Some("0.0.0.0") => "127.0.0.1".to_string(),
        Some(a) => a.to_string(),
    };
    let entry = entry(cluster, false).await?;
    Ok((
        host,
        port,
        Credentials {
            ca_pem: entry.ca_pem,
            cert_pem: entry.client_cert_pem,
            key_pem: entry.client_key_pem,
        },
    ))
}

pub(super) async fn entry(name: &str, internal: bool) -> Result<KubeconfigEntry> {
    let docker = Docker::connect().await?;
    let nodes = docker.node_containers(Some(name)).await?;
    let Some(server) = nodes
        .iter()
        .find(|c| docker::label(c, docker::LABEL_ROLE) == Some("server"))
    else {
        bail!("no cluster named {name:?} (see `kcluster list`)");
    };
    let server_name = docker::container_name(server);
    let read = |file| read_pki(&docker, &server_name, file);
    let url = if internal {
        format!("https://{server_name}:{API_PORT_IN_NODE}")
    } else {
        let port = docker::label(server, docker::LABEL_API_PORT)
            .context("the server node has no API port label")?;
        let addr = match docker::label(server, docker::LABEL_API_ADDRESS) {
            None | Some("0.0.0.0") => "127.0.0.1",
            Some(a) => a,
        };
        format!("https://{addr}:{port}")
    };
    Ok(KubeconfigEntry {
        context: context_name(name),
        server: url,
        ca_pem: read("ca.crt").await?,
        client_cert_pem: read("admin.crt").await?,
        client_key_pem: read("admin.key").await?,
    })
}

pub async fn print(name: &str, internal: bool) -> Result<()> {
    print!("{}", kubeconfig::render(&entry(name, internal).await?)?);
    Ok(())
}

pub async fn export(
    name: &str,
    internal: bool,
    path: Option<PathBuf>,
    progress: &Progress,
) -> Result<()> {
    let entry = entry(name, internal).await?;
    let path = match path {
        Some(p) => p,
        None => kubeconfig::default_path(
            std::env::var("KUBECONFIG").ok().as_deref(),
            home().as_deref(),
        )?,
    };
    kubeconfig::merge(&path, &entry, true)?;
    progress.say(&format!(
        "Set context {} in {}",
        entry.context,
        path.display()
    ));
    Ok(())
}

/// A client with the admin credentials of a cluster's kubeconfig entry.
pub(super) async fn client(entry: &KubeconfigEntry) -> Result<kube::Client> {
    let rendered = kubeconfig::render(entry)?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&rendered)
        .context("cannot read the cluster's kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .context("cannot build a client for the cluster")?;
    // kube's default retries a 429 for up to 15 tries with backoff: a drain must see the
    // disruption budget's 429 at once and decide for itself.
    let mut config = config;
    config.default_retry = false;
    kube::Client::try_from(config).context("cannot build a client for the cluster")
}
