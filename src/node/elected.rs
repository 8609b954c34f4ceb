//! What runs only in the server process that holds the control plane's Leases
//! (`kube-system/kube-controller-manager`, then `kube-system/kube-scheduler`):
//! kube-controller-manager's controllers with the CSR signer, and the scheduler. Every server
//! campaigns; the others wait to take over (see `leaderelection`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;

use super::client::{Credentials, connect};
use crate::cluster::cidr::Ipv4Cidr;
use crate::leaderelection::{self, LeaseLock, Timing, Work};
use crate::pki::CertificateAuthority;

pub struct ControlPlane {
    /// Where this process' API server listens.
    pub host: String,
    pub port: u16,
    /// `system:kube-controller-manager` and `system:kube-scheduler`.
    pub controller_creds: Credentials,
    pub scheduler_creds: Credentials,
    /// The cluster CA and its key, for the CSR signer.
    pub ca_pem: String,
    pub ca_key_pem: String,
    pub pod_subnet: Option<Ipv4Cidr>,
    /// The controllers' service-account tokens.
    pub tokens: PathBuf,
    /// With several servers, the built-in Ingress controller runs on the leader only: it
    /// publishes its own node as the ingress Service's endpoints, and one writer keeps them
    /// still (a single server runs it beside the API server instead).
    pub ingress: Option<ElectedIngress>,
}

pub struct ElectedIngress {
    pub creds: Credentials,
    pub config: crate::ingress::IngressConfig,
    pub cluster: String,
    pub node: String,
}

impl ControlPlane {
    /// Campaigns as `identity` for as long as the process lives.
    pub async fn campaign(self, identity: String) -> Result<()> {
        let manager = connect(&self.host, self.port, &self.controller_creds).await?;
        let scheduler = connect(&self.host, self.port, &self.scheduler_creds).await?;
        let locks = vec![
            LeaseLock::new(manager, "kube-controller-manager"),
            LeaseLock::new(scheduler, "kube-scheduler"),
        ];
        let this = Arc::new(self);
        let work: Work = Arc::new(move || Box::pin(this.clone().lead()));
        leaderelection::run(locks, identity, Timing::default(), work).await;
        Ok(())
    }

    /// One term as leader. Its clients are made here, in the term's own runtime, so nothing
    /// of it outlives the term.
    async fn lead(self: Arc<Self>) -> Result<()> {
        let root = connect(&self.host, self.port, &self.controller_creds).await?;
        let clients = crate::controllers::credentials::ControllerClients::new(
            root,
            &self.host,
            self.port,
            &self.ca_pem,
            &self.tokens,
        )?;
        let scheduler_client = connect(&self.host, self.port, &self.scheduler_creds).await?;
        // The CSR signer is the one controller that needs the CA key.
        let signer_client = clients.client("certificate-controller").await?;
        let ca = CertificateAuthority::from_pem(&self.ca_pem, &self.ca_key_pem)?;
        tokio::spawn(async move {
            if let Err(e) = crate::controllers::csrsigning::run(signer_client, ca).await {
                tracing::error!(error = format!("{e:#}"), "the CSR signer stopped");
            }
        });
        if let Some(ingress) = &self.ingress {
            let client = connect(&self.host, self.port, &ingress.creds).await?;
            let (config, cluster, node) = (
                ingress.config.clone(),
                ingress.cluster.clone(),
                ingress.node.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) = crate::ingress::run(client, config, cluster, node).await {
                    tracing::error!(error = format!("{e:#}"), "the ingress controller stopped");
                }
            });
        }
        crate::controllers::run(
            clients,
            scheduler_client,
            Some(self.ca_pem.clone()),
            self.pod_subnet,
        )
        .await
    }
}
