//! API clients for the processes inside a node. Names are resolved here, in-process, because a
//! static glibc binary cannot use the C resolver in a FROM-scratch image.

use std::net::IpAddr;

use anyhow::{Context, Result};
use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Credentials that identify one API client to the cluster.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A kube client for `https://host:port`. `host` may be a Docker container name: it is resolved
/// through the node's resolv.conf (Docker's embedded DNS) and the TLS name stays the host name.
pub async fn connect(host: &str, port: u16, creds: &Credentials) -> Result<kube::Client> {
    let user = serde_json::json!({"client-certificate-data": b64(&creds.cert_pem),
                                  "client-key-data": b64(&creds.key_pem)});
    connect_as(host, port, &creds.ca_pem, user).await
}

/// A kube client that authenticates with the bearer token in `token_file`, re-read every
/// minute (so a renewed token is picked up without a new client).
pub async fn connect_with_token_file(
    host: &str,
    port: u16,
    ca_pem: &str,
    token_file: &std::path::Path,
) -> Result<kube::Client> {
    let user = serde_json::json!({"tokenFile": token_file});
    connect_as(host, port, ca_pem, user).await
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn connect_as(
    host: &str,
    port: u16,
    ca_pem: &str,
    user: serde_json::Value,
) -> Result<kube::Client> {
    let ip = resolve(host).await?;
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": format!("https://{}", std::net::SocketAddr::new(ip, port)),
                                              "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    });
    let kubeconfig: Kubeconfig = serde_json::from_value(kubeconfig)
        .context("cannot build a kubeconfig for the node client")?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("cannot configure the API client")?;
    if host.parse::<IpAddr>().is_err() {
        config.tls_server_name = Some(host.to_string());
    }
    config.connect_timeout = Some(std::time::Duration::from_secs(5));
    config.read_timeout = Some(std::time::Duration::from_secs(30));
    kube::Client::try_from(config).context("cannot create the API client")
}

pub async fn resolve(host: &str) -> Result<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    if host == "localhost" {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    let resolver = hickory_resolver::Resolver::builder_tokio()
        .context("cannot read /etc/resolv.conf to resolve the server's name")?
        .build()
        .context("cannot build a DNS resolver")?;
    let answer = resolver.lookup_ip(host).await.with_context(|| {
        format!("cannot resolve {host}: is the server node running on the same Docker network?")
    })?;
    answer
        .iter()
        .find(IpAddr::is_ipv4)
        .or_else(|| answer.iter().next())
        .with_context(|| format!("{host} has no address"))
}
