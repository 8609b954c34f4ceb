//! The kubelet API's serving certificate (SAN = the node's name, which the API server checks)
//! and its client verification (certificates signed by the cluster CA, nothing anonymous).
//!
//! `kcluster create` issues `kubelet.crt` for every node next to its client certificate
//! (workers have no CA key); a node that has the CA key issues a fresh one at every start,
//! naming its current addresses too.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::pki::{CertificateAuthority, IssuedCert};

pub const CERT_FILE: &str = "kubelet.crt";
pub const KEY_FILE: &str = "kubelet.key";

fn read(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("{}/{name}", crate::node::PKI_DIR)).ok()
}

/// The serving certificate for `node_name` (DNS names: the node name and localhost).
pub fn issue(ca: &CertificateAuthority, node_name: &str, ips: &[IpAddr]) -> Result<IssuedCert> {
    ca.issue_server(
        &format!("{node_name}@kubelet"),
        &[node_name.to_string(), "localhost".to_string()],
        ips,
    )
}

/// The node's TLS settings for the kubelet API.
pub fn server_config(node_name: &str, ips: &[IpAddr]) -> Result<rustls::ServerConfig> {
    let ca_pem = read("ca.crt").context("the node has no cluster CA certificate")?;
    let (cert_pem, key_pem) = match (read("ca.key"), read(CERT_FILE), read(KEY_FILE)) {
        (Some(ca_key), _, _) => {
            let ca = CertificateAuthority::from_pem(&ca_pem, &ca_key)?;
            let issued = issue(&ca, node_name, ips)?;
            (issued.cert_pem, issued.key_pem)
        }
        (None, Some(cert), Some(key)) => (cert, key),
        _ => bail!(
            "the node has no kubelet serving certificate ({}/{CERT_FILE}); recreate the cluster with this kcluster version",
            crate::node::PKI_DIR
        ),
    };
    build(&ca_pem, &cert_pem, &key_pem)
}

pub fn build(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("the cluster CA certificate is not valid PEM")?)?;
    }
    let provider = crate::apiserver::tls::provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .context("cannot build the client-certificate verifier")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("the kubelet serving certificate is not valid PEM")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .context("the kubelet serving key is not valid PEM")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the kubelet serving certificate does not match its key")?;
    // Upgrades (exec, attach, port-forward) need HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
