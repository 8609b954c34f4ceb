//! The etcd member inside each server node of a cluster with several servers (`create
//! --servers 3`): kubeadm's "stacked" etcd. The server process starts it as a child, serves
//! the API over it, and stops when it stops (Docker's restart policy brings both back).
//!
//! Peers are addressed by container name (`https://<node>:2380`), so a member whose container
//! comes back with a new address is still found: etcd keeps the URLs as written and resolves
//! them at each connection. Its client port listens on loopback only, for this node's API
//! server. Both ports take only certificates of the cluster's own etcd CA, which lives on the
//! server nodes alone, so a pod (even a host-network one) cannot read or join the store.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use super::files::read_pki;
use crate::pki::CertificateAuthority;
use crate::store::etcd::EtcdConfig;

/// Where the node image built for several servers keeps etcd (`cluster::image`).
pub const BINARY: &str = "/usr/local/bin/etcd";
/// The etcd CA's files, under the node's PKI directory.
pub const CA_CERT: &str = "etcd/ca.crt";
pub const CA_KEY: &str = "etcd/ca.key";
pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

/// The etcd CA's files for a server node, as uploaded before it starts.
pub fn ca_files(ca: &CertificateAuthority) -> Vec<(String, Vec<u8>, u32)> {
    let dir = super::PKI_DIR;
    vec![
        (
            format!("{dir}/{CA_CERT}"),
            ca.cert_pem().into_bytes(),
            0o644,
        ),
        (format!("{dir}/{CA_KEY}"), ca.key_pem().into_bytes(), 0o600),
    ]
}

/// The store's members, in the node settings of every server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdMember {
    /// Every server node's name: the initial cluster.
    pub peers: Vec<String>,
    /// etcd's initial-cluster-token: the cluster's name, so members of two clusters never join.
    pub token: String,
    /// A member added to a running store (`node add --role server`): it joins the existing
    /// cluster instead of forming a new one with its peers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join: bool,
}

pub fn peer_url(node: &str) -> String {
    format!("https://{node}:{PEER_PORT}")
}

/// The command line of this node's member.
pub fn arguments(node: &str, member: &EtcdMember, data: &Path, pki: &Path) -> Vec<String> {
    let file = |name: &str| pki.join(name).display().to_string();
    let client_url = format!("https://127.0.0.1:{CLIENT_PORT}");
    let initial_cluster = member
        .peers
        .iter()
        .map(|p| format!("{p}={}", peer_url(p)))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        format!("--name={node}"),
        format!("--data-dir={}", data.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls=https://0.0.0.0:{PEER_PORT}"),
        format!("--initial-advertise-peer-urls={}", peer_url(node)),
        format!("--initial-cluster={initial_cluster}"),
        // Ignored once the data directory holds a member: a restart rejoins.
        format!(
            "--initial-cluster-state={}",
            if member.join { "existing" } else { "new" }
        ),
        format!("--initial-cluster-token={}", member.token),
        format!("--cert-file={}", file("server.crt")),
        format!("--key-file={}", file("server.key")),
        format!("--trusted-ca-file={}", file("ca.crt")),
        "--client-cert-auth=true".to_string(),
        format!("--peer-cert-file={}", file("peer.crt")),
        format!("--peer-key-file={}", file("peer.key")),
        format!("--peer-trusted-ca-file={}", file("ca.crt")),
        "--peer-client-cert-auth=true".to_string(),
        // Twice etcd's defaults: a loaded laptop or CI machine must not make members flap,
        // and a lost leader is still replaced within about two seconds.
        "--heartbeat-interval=200".to_string(),
        "--election-timeout=2000".to_string(),
        "--snapshot-count=10000".to_string(),
        "--logger=zap".to_string(),
        "--log-outputs=stderr".to_string(),
        "--log-level=warn".to_string(),
    ]
}

/// Issues this member's certificates (at every start, as the API server's), starts etcd and
/// returns it with the configuration the API server's store uses to reach it.
pub fn start(node: &str, member: &EtcdMember, state: &Path) -> Result<(Child, EtcdConfig)> {
    let ca_pem = read_pki(CA_CERT)?;
    let ca = CertificateAuthority::from_pem(&ca_pem, &read_pki(CA_KEY)?)
        .context("cannot load the etcd CA from the node's PKI directory")?;
    let dir = state.join("etcd");
    let pki: PathBuf = dir.join("pki");
    let data = dir.join("data");
    std::fs::create_dir_all(&pki).with_context(|| format!("cannot create {}", pki.display()))?;
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let loopback = [std::net::IpAddr::from([127, 0, 0, 1])];
    // etcd's JSON gateway dials etcd's own gRPC port with the serving certificate, so it is
    // a client certificate too (as kubeadm's etcd server certificate is).
    let server = ca.issue_peer("etcd-server", &["localhost".to_string()], &loopback)?;
    let peer = ca.issue_peer(node, &[node.to_string()], &[])?;
    let config = client_config(&ca, &ca_pem)?;
    for (name, text, mode) in [
        ("ca.crt", ca_pem.as_str(), 0o644),
        ("server.crt", &server.cert_pem, 0o644),
        ("server.key", &server.key_pem, 0o600),
        ("peer.crt", &peer.cert_pem, 0o644),
        ("peer.key", &peer.key_pem, 0o600),
    ] {
        let path = pki.join(name);
        crate::runtime::images::write_atomic(&path, text.as_bytes())?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    let child = Command::new(BINARY)
        .args(arguments(node, member, &data, &pki))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("cannot start {BINARY}: this node's image was not built for several servers")
        })?;
    tracing::info!(pid = child.id(), peers = ?member.peers, "etcd member started");
    Ok((child, config))
}

/// How this node's API server (or a membership command) reaches its member.
fn client_config(ca: &CertificateAuthority, ca_pem: &str) -> Result<EtcdConfig> {
    let client = ca.issue_client("kube-apiserver-etcd-client", &[])?;
    Ok(EtcdConfig {
        endpoints: vec![format!("https://127.0.0.1:{CLIENT_PORT}")],
        ca_pem: Some(ca_pem.to_owned()),
        cert_pem: Some(client.cert_pem),
        key_pem: Some(client.key_pem),
    })
}

/// `kcluster node etcd-member …`, run in a server node by `kcluster node add --role server`.
#[derive(clap::Subcommand, Debug)]
pub enum MemberCommand {
    /// Adds NODE (peer https://NODE:2380) to the store and prints every member's node name,
    /// one a line, the new one included.
    Add { node: String },
    /// Takes NODE out of the store (a server being deleted, or one whose container could not
    /// be started).
    Remove { node: String },
}

pub async fn run_command(command: MemberCommand) -> Result<()> {
    use crate::store::etcd;
    let ca_pem = read_pki(CA_CERT)?;
    let ca = CertificateAuthority::from_pem(&ca_pem, &read_pki(CA_KEY)?)
        .context("cannot load the etcd CA: this node runs no etcd member")?;
    let config = client_config(&ca, &ca_pem)?;
    match command {
        MemberCommand::Add { node } => {
            // etcd refuses a new voting member ("unhealthy cluster") until enough members have
            // been connected for a few seconds, e.g. just after one came back, and ("not
            // enough started members") until the member added before it has started, e.g.
            // the second of two servers added to a store of one: wait for that.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            let members = loop {
                tick.tick().await;
                match etcd::add_member(&config, &peer_url(&node)).await {
                    Ok(members) => break members,
                    Err(e)
                        if (e.to_string().contains("unhealthy cluster")
                            || e.to_string().contains("not enough started members"))
                            && std::time::Instant::now() < deadline =>
                    {
                        tracing::info!(error = %e, "the store is not ready for a new member yet");
                    }
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot add {node} to the store"));
                    }
                }
            };
            for m in members {
                println!("{}", member_node(&m));
            }
        }
        MemberCommand::Remove { node } => {
            let url = peer_url(&node);
            let members = etcd::members(&config).await?;
            if let Some(m) = members.iter().find(|m| m.peer_urls.contains(&url)) {
                etcd::remove_member(&config, &m.id)
                    .await
                    .with_context(|| format!("cannot remove {node} from the store"))?;
            }
        }
    }
    Ok(())
}

/// A member's node: its name, or for a member that has not started yet, the host of its peer
/// URL (members are always named and addressed by their node).
fn member_node(m: &crate::store::etcd::Member) -> String {
    if !m.name.is_empty() {
        return m.name.clone();
    }
    m.peer_urls
        .first()
        .and_then(|u| u.parse::<http::Uri>().ok())
        .and_then(|u| u.host().map(str::to_owned))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_addressed_by_name_and_take_only_the_etcd_cas_certificates() {
        let member = EtcdMember {
            peers: vec![
                "ha-server-0".into(),
                "ha-server-1".into(),
                "ha-server-2".into(),
            ],
            token: "ha".into(),
            join: false,
        };
        let args = arguments("ha-server-1", &member, Path::new("/d"), Path::new("/p"));
        let has = |a: &str| args.iter().any(|x| x == a);
        assert!(has("--name=ha-server-1"));
        assert!(has(
            "--initial-advertise-peer-urls=https://ha-server-1:2380"
        ));
        assert!(has(
            "--initial-cluster=ha-server-0=https://ha-server-0:2380,ha-server-1=https://ha-server-1:2380,ha-server-2=https://ha-server-2:2380"
        ));
        assert!(has("--listen-client-urls=https://127.0.0.1:2379"));
        assert!(has("--client-cert-auth=true"));
        assert!(has("--peer-client-cert-auth=true"));
        assert!(has("--initial-cluster-token=ha"));
        assert!(has("--initial-cluster-state=new"));
        let joining = EtcdMember {
            join: true,
            ..member
        };
        let args = arguments("ha-server-1", &joining, Path::new("/d"), Path::new("/p"));
        assert!(args.iter().any(|a| a == "--initial-cluster-state=existing"));
    }
}
