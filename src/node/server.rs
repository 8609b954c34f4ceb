//! The server node's process: store, API server, controllers, and this node's agent.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result};
use tracing::info;

use super::NodeSettings;
use super::client::Credentials;
use super::files;
use crate::apiserver::ApiServer;
use crate::pki::CertificateAuthority;

pub const API_PORT: u16 = 6443;

pub async fn run(settings: NodeSettings) -> Result<()> {
    let ca_pem = files::read_pki("ca.crt")?;
    let ca = CertificateAuthority::from_pem(&ca_pem, &files::read_pki("ca.key")?)?;

    // The serving certificate is issued at every start, so it always names the node's current addresses.
    let mut ips = local_ips();
    // In-cluster clients dial the `kubernetes` Service's address (KUBERNETES_SERVICE_HOST) and
    // verify it against this certificate, as they do with kube-apiserver's.
    let service_ip = settings
        .service_subnet
        .parse::<crate::cluster::cidr::Ipv4Cidr>()
        .ok()
        .and_then(|c| c.nth(1));
    if let Some(ip) = service_ip {
        ips.push(IpAddr::V4(ip));
    }
    let mut dns: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    dns.push(settings.node_name.clone());
    // With several servers the nodes dial the load balancer, which passes TLS through.
    if let Ok((host, _)) = super::split_host_port(&settings.server)
        && !dns.contains(&host)
        && host.parse::<IpAddr>().is_err()
    {
        dns.push(host);
    }
    let serving = ca.issue_server("kube-apiserver", &dns, &ips)?;
    let tls = crate::apiserver::tls::server_config(&ca_pem, &serving.cert_pem, &serving.key_pem)?;

    let mut member = None;
    let etcd = match &settings.etcd_member {
        Some(m) => {
            let (child, config) =
                super::etcd_member::start(&settings.node_name, m, &super::state_dir())?;
            member = Some(child);
            Some(config)
        }
        None => settings.etcd.clone(),
    };
    let store = match (&etcd, member.as_mut()) {
        (Some(etcd), Some(child)) => {
            let store = wait_for_member(etcd, &settings.cluster, child).await?;
            move_embedded_store(etcd, &settings.cluster, store).await?
        }
        (Some(etcd), None) => {
            let prefix = crate::store::etcd::cluster_prefix(&settings.cluster);
            crate::store::Store::etcd(etcd, &prefix)
                .await
                .with_context(|| format!("cannot use the cluster's store in etcd ({prefix})"))?
        }
        (None, _) => {
            let store_dir = super::state_dir().join("store");
            crate::store::Store::open(&store_dir)
                .with_context(|| format!("cannot open the store in {}", store_dir.display()))?
        }
    };
    // eth0's address: never the pods' gateway (on lo) or the service address added above.
    let advertise = crate::agent::sysinfo::internal_ip()
        .map(|ip| format!("{ip}:{API_PORT}"))
        .unwrap_or_default();
    let api = ApiServer::with_service_subnet(store, advertise, &settings.service_subnet);
    api.set_service_account_key(&crate::apiserver::serviceaccount::jwt::load_or_create_key(
        &super::state_dir()
            .join("apiserver")
            .join("service-account.key"),
    )?)?;
    api.bootstrap().await?;
    let kubelet_client = ca.issue_client("kube-apiserver-kubelet-client", &["system:masters"])?;
    api.set_kubelet_client(crate::apiserver::tls::kubelet_client_config(
        &ca_pem,
        &kubelet_client.cert_pem,
        &kubelet_client.key_pem,
    )?);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], API_PORT)))
        .await
        .with_context(|| format!("cannot listen on port {API_PORT}"))?;
    let serve = tokio::spawn(api.serve(listener, tls));
    info!(node = %settings.node_name, "control plane started");

    // Each component authenticates as itself and holds only its own roles (see
    // apiserver::authz::bootstrap).
    let identity = |user: &str| -> Result<Credentials> {
        let cert = ca.issue_client(user, &[])?;
        Ok(Credentials {
            ca_pem: ca_pem.clone(),
            cert_pem: cert.cert_pem,
            key_pem: cert.key_pem,
        })
    };
    let controller_creds = identity("system:kube-controller-manager")?;
    let scheduler_creds = identity("system:kube-scheduler")?;
    let ingress_creds = identity("system:kcluster-ingress")?;
    let dns_creds = identity("system:kcluster-dns")?;
    let cluster_ca = ca_pem.clone();
    let pod_subnet: crate::cluster::cidr::Ipv4Cidr =
        settings.pod_subnet.parse().with_context(|| {
            format!(
                "bad pod subnet {:?} in the node settings",
                settings.pod_subnet
            )
        })?;
    let dns_ip = crate::kubelet::etc::cluster_dns(&settings.service_subnet)
        .with_context(|| format!("bad service subnet {:?}", settings.service_subnet))?;
    let ingress = settings.ingress.clone();
    let several = settings.servers > 1;
    let node_name = settings.node_name.clone();
    let cluster_name = settings.cluster.clone();
    let control_plane = super::elected::ControlPlane {
        host: "127.0.0.1".to_string(),
        port: API_PORT,
        controller_creds,
        scheduler_creds,
        ca_pem: cluster_ca,
        ca_key_pem: ca.key_pem(),
        pod_subnet: Some(pod_subnet),
        tokens: super::state_dir().join("controller-tokens"),
        ingress: (several && settings.ingress.enabled).then(|| super::elected::ElectedIngress {
            creds: ingress_creds.clone(),
            config: settings.ingress.clone(),
            cluster: settings.cluster.clone(),
            node: settings.node_name.clone(),
        }),
    };
    let identity = crate::leaderelection::identity(&settings.node_name, &super::state_dir())?;
    let controllers = tokio::spawn(async move {
        let dns_client = super::client::connect("127.0.0.1", API_PORT, &dns_creds).await?;
        tokio::spawn(crate::controllers::clusterdns::run(
            dns_client,
            dns_ip.to_string(),
        ));
        if ingress.enabled && !several {
            let client = super::client::connect("127.0.0.1", API_PORT, &ingress_creds).await?;
            tokio::spawn(async move {
                if let Err(e) = crate::ingress::run(client, ingress, cluster_name, node_name).await
                {
                    tracing::error!(error = format!("{e:#}"), "the ingress controller stopped");
                }
            });
        }
        control_plane.campaign(identity).await
    });
    tokio::spawn(crate::volumes::localpath::run_cleaner(
        "127.0.0.1".to_string(),
        API_PORT,
        files::node_credentials()?,
    ));
    let agent = tokio::spawn(crate::agent::run(
        settings.clone(),
        "127.0.0.1".to_string(),
        API_PORT,
        files::node_credentials()?,
    ));

    let member_exit = async move {
        match member.as_mut() {
            Some(child) => child.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = member_exit => anyhow::bail!("this node's etcd member exited ({}); the node stops so that Docker restarts it whole", r.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())),
        r = serve => r.context("the API server task failed")?,
        r = controllers => r.context("the controllers task failed")?,
        r = agent => r.context("the agent task failed")?,
    }
}

/// The store over this node's etcd member, once the member answers: at the first start it
/// waits for a quorum of its peers, which start at the same time.
async fn wait_for_member(
    etcd: &crate::store::etcd::EtcdConfig,
    cluster: &str,
    child: &mut tokio::process::Child,
) -> Result<crate::store::Store> {
    let prefix = crate::store::etcd::cluster_prefix(cluster);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        if let Some(status) = child.try_wait().context("cannot watch the etcd member")? {
            anyhow::bail!("this node's etcd member exited ({status}) before it answered");
        }
        match crate::store::Store::etcd(etcd, &prefix).await {
            Ok(store) => return Ok(store),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "waiting for the etcd member and a quorum of its peers");
            }
            Err(e) => {
                return Err(e).context(
                    "this node's etcd member found no quorum of its peers within 5 minutes",
                );
            }
        }
    }
}

/// A cluster made with one server kept its state in that server's own store; when it grew a
/// second server, that server came back with an etcd member, and its first start moves the
/// state there. The old store is then renamed (kept, not deleted), so the move happens once;
/// a move cut short is done again at the next start.
async fn move_embedded_store(
    etcd: &crate::store::etcd::EtcdConfig,
    cluster: &str,
    store: crate::store::Store,
) -> Result<crate::store::Store> {
    let dir = super::state_dir().join("store");
    if !dir.join(crate::store::DB_FILE).exists() {
        return Ok(store);
    }
    // The mirror seeded before the move would only replay it.
    drop(store);
    let prefix = crate::store::etcd::cluster_prefix(cluster);
    let embedded = crate::store::Store::open(&dir).with_context(|| {
        format!(
            "cannot open the store to move into etcd in {}",
            dir.display()
        )
    })?;
    let moved = crate::store::etcd::import_embedded(etcd, &prefix, &embedded)
        .await
        .with_context(|| format!("cannot move the store in {} into etcd", dir.display()))?;
    drop(embedded);
    let kept = super::state_dir().join(MOVED_STORE);
    std::fs::rename(&dir, &kept).with_context(|| {
        format!(
            "the store was moved into etcd, but {} cannot be renamed to {}",
            dir.display(),
            kept.display()
        )
    })?;
    info!(
        keys = moved.keys,
        from_revision = moved.from,
        to_revision = moved.to,
        kept = %kept.display(),
        "store moved into etcd"
    );
    crate::store::Store::etcd(etcd, &prefix)
        .await
        .with_context(|| format!("cannot use the cluster's store in etcd ({prefix})"))
}

/// Where the embedded store of a server that grew into several is kept after its move.
pub const MOVED_STORE: &str = "store.moved-to-etcd";

/// Addresses of this node's interfaces, loopback included (the serving certificate covers them all).
pub fn local_ips() -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::from([127, 0, 0, 1])];
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for addr in addrs {
            if let Some(sin) = addr.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
                let ip = IpAddr::V4(sin.ip());
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
    }
    ips
}
