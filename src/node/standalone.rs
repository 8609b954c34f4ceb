//! `kcluster node apiserver`: the API server alone, on this machine, with its own CA and a
//! kubeconfig for it. Tests drive the real kubectl against it without Docker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::info;

use crate::apiserver::ApiServer;
use crate::cluster::kubeconfig::{self, KubeconfigEntry};
use crate::pki::CertificateAuthority;

pub struct Options {
    pub data_dir: PathBuf,
    pub port: u16,
    pub kubeconfig: PathBuf,
    pub controllers: bool,
    /// Split into a pod CIDR per Node by the controllers; none: Nodes get no pod CIDR.
    pub pod_subnet: Option<crate::cluster::cidr::Ipv4Cidr>,
    /// Keep the state in etcd, under `etcd_prefix`, instead of `data_dir`.
    pub etcd: Option<crate::store::etcd::EtcdConfig>,
    pub etcd_prefix: String,
}

fn load_or_create_ca(dir: &Path) -> Result<CertificateAuthority> {
    let (cert, key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert.exists() && key.exists() {
        return CertificateAuthority::from_pem(
            &std::fs::read_to_string(&cert)?,
            &std::fs::read_to_string(&key)?,
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca = CertificateAuthority::generate("kcluster-standalone-ca")?;
    std::fs::write(&cert, ca.cert_pem())?;
    std::fs::write(&key, ca.key_pem())?;
    Ok(ca)
}

pub async fn run(options: Options) -> Result<()> {
    let ca = load_or_create_ca(&options.data_dir.join("pki"))?;
    let serving = ca.issue_server(
        "kube-apiserver",
        &["localhost".to_string()],
        &[std::net::IpAddr::from([127, 0, 0, 1])],
    )?;
    let tls =
        crate::apiserver::tls::server_config(&ca.cert_pem(), &serving.cert_pem, &serving.key_pem)?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], options.port)))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", options.port))?;
    let port = listener.local_addr()?.port();
    let store = match &options.etcd {
        Some(etcd) => crate::store::Store::etcd(etcd, &options.etcd_prefix).await?,
        None => crate::store::Store::open(&options.data_dir.join("store"))?,
    };
    let api = ApiServer::new(store, format!("127.0.0.1:{port}"));
    api.set_service_account_key(&crate::apiserver::serviceaccount::jwt::load_or_create_key(
        &options.data_dir.join("pki").join("service-account.key"),
    )?)?;
    api.bootstrap().await?;
    let kubelet_client = ca.issue_client("kube-apiserver-kubelet-client", &["system:masters"])?;
    api.set_kubelet_client(crate::apiserver::tls::kubelet_client_config(
        &ca.cert_pem(),
        &kubelet_client.cert_pem,
        &kubelet_client.key_pem,
    )?);
    let admin = ca.issue_client("kubernetes-admin", &["system:masters"])?;
    let entry = KubeconfigEntry {
        context: "kcluster-standalone".into(),
        server: format!("https://127.0.0.1:{port}"),
        ca_pem: ca.cert_pem(),
        client_cert_pem: admin.cert_pem.clone(),
        client_key_pem: admin.key_pem.clone(),
    };
    kubeconfig::merge(&options.kubeconfig, &entry, true)?;
    let serve = tokio::spawn(api.serve(listener, tls));
    info!(port, kubeconfig = %options.kubeconfig.display(), "standalone API server ready");
    // A line on stdout tells a waiting test (or person) the server is up and where.
    println!("ready https://127.0.0.1:{port}");
    if options.controllers {
        // The controllers and the scheduler authenticate as they do in a cluster, each held
        // to its own roles.
        let identity = |user: &str| -> Result<super::client::Credentials> {
            let cert = ca.issue_client(user, &[])?;
            Ok(super::client::Credentials {
                ca_pem: ca.cert_pem(),
                cert_pem: cert.cert_pem,
                key_pem: cert.key_pem,
            })
        };
        let controller_creds = identity("system:kube-controller-manager")?;
        let scheduler_creds = identity("system:kube-scheduler")?;
        let control_plane = super::elected::ControlPlane {
            host: "127.0.0.1".to_string(),
            port,
            controller_creds,
            scheduler_creds,
            ca_pem: ca.cert_pem(),
            ca_key_pem: ca.key_pem(),
            pod_subnet: options.pod_subnet,
            tokens: options.data_dir.join("controller-tokens"),
            ingress: None,
        };
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_string());
        let identity = crate::leaderelection::identity(&host, &options.data_dir)?;
        tokio::spawn(async move {
            if let Err(e) = control_plane.campaign(identity).await {
                tracing::error!(error = format!("{e:#}"), "the controllers stopped");
            }
        });
    }
    serve.await.context("the API server task failed")?
}
