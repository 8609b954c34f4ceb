use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use x509_parser::prelude::*;

use super::*;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The crate builds rustls without aws-lc, so the provider must be named explicitly.
fn ring() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn cert_der(pem: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).context("parsing certificate PEM")
}

fn key_der(pem: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).context("parsing key PEM")
}

fn roots(ca: &CertificateAuthority) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add(cert_der(&ca.cert_pem())?)?;
    Ok(Arc::new(roots))
}

fn server_config(ca: &CertificateAuthority, serving: &IssuedCert) -> Result<ServerConfig> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, ring()).build()?;
    Ok(ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert_der(&serving.cert_pem)?],
            key_der(&serving.key_pem)?,
        )?)
}

fn client_config(trusted: &CertificateAuthority, client: &IssuedCert) -> Result<ClientConfig> {
    Ok(ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(trusted)?)
        .with_client_auth_cert(vec![cert_der(&client.cert_pem)?], key_der(&client.key_pem)?)?)
}

/// Runs one TLS exchange over loopback. Returns what the server learned about the client
/// (or why it refused it) and whether the client got the server's reply.
async fn exchange(
    server: ServerConfig,
    client: ClientConfig,
    server_name: ServerName<'static>,
) -> Result<(Result<ClientIdentity>, Result<()>)> {
    let listener = TcpListener::bind((LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .context("the client presented no certificate")?
            .clone();
        let identity = identity_from_der(&peer)?;
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await?;
        tls.write_all(b"pong").await?;
        tls.shutdown().await?;
        Ok::<_, anyhow::Error>(identity)
    });

    let client_result = async {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(Arc::new(client))
            .connect(server_name, tcp)
            .await?;
        tls.write_all(b"ping").await?;
        let mut pong = [0u8; 4];
        tls.read_exact(&mut pong).await?;
        anyhow::ensure!(&pong == b"pong", "unexpected reply {pong:?}");
        Ok(())
    };
    let client_result = tokio::time::timeout(Duration::from_secs(10), client_result)
        .await
        .unwrap_or_else(|_| Err(anyhow!("client timed out")));
    let server_result = tokio::time::timeout(Duration::from_secs(10), server_task)
        .await
        .map_err(|_| anyhow!("server timed out"))??;
    Ok((server_result, client_result))
}

fn serving_cert(ca: &CertificateAuthority) -> Result<IssuedCert> {
    ca.issue_server(
        "kube-apiserver",
        &["localhost".to_owned(), "kubernetes.default.svc".to_owned()],
        &[LOCALHOST],
    )
}

#[tokio::test]
async fn server_and_client_certs_complete_a_mutual_tls_handshake() -> Result<()> {
    let ca = CertificateAuthority::generate("kubernetes")?;
    let serving = serving_cert(&ca)?;
    let admin = ca.issue_client("kubernetes-admin", &["system:masters"])?;

    // kubectl talks to https://127.0.0.1:PORT, in-cluster clients use a DNS name: both must work.
    for server_name in [
        ServerName::IpAddress(LOCALHOST.into()),
        ServerName::try_from("localhost")?,
    ] {
        let (server, client) = exchange(
            server_config(&ca, &serving)?,
            client_config(&ca, &admin)?,
            server_name.clone(),
        )
        .await?;
        client.with_context(|| format!("client side, server name {server_name:?}"))?;
        let identity = server.with_context(|| format!("server side, {server_name:?}"))?;
        assert_eq!(
            identity,
            ClientIdentity {
                user: "kubernetes-admin".into(),
                groups: vec!["system:masters".into()],
            }
        );
    }
    Ok(())
}

#[tokio::test]
async fn server_rejects_a_client_cert_from_another_ca() -> Result<()> {
    let ca = CertificateAuthority::generate("kubernetes")?;
    let other = CertificateAuthority::generate("kubernetes")?;
    let serving = serving_cert(&ca)?;
    let intruder = other.issue_client("kubernetes-admin", &["system:masters"])?;

    let (server, client) = exchange(
        server_config(&ca, &serving)?,
        client_config(&ca, &intruder)?,
        ServerName::IpAddress(LOCALHOST.into()),
    )
    .await?;
    let err = server
        .err()
        .context("server accepted a foreign client cert")?;
    // Both CAs are called "kubernetes", so the verifier finds a candidate issuer by name and
    // then fails its signature: exactly the case of two kcluster clusters on one machine.
    assert!(format!("{err:#}").contains("BadSignature"), "{err:#}");
    assert!(client.is_err());
    Ok(())
}

#[tokio::test]
async fn client_rejects_a_server_name_not_in_the_sans() -> Result<()> {
    let ca = CertificateAuthority::generate("kubernetes")?;
    let serving = serving_cert(&ca)?;
    let admin = ca.issue_client("kubernetes-admin", &["system:masters"])?;
    let (_, client) = exchange(
        server_config(&ca, &serving)?,
        client_config(&ca, &admin)?,
        ServerName::try_from("example.com")?,
    )
    .await?;
    let err = client
        .err()
        .context("client accepted a wrong server name")?;
    assert!(format!("{err:#}").contains("not valid for name"), "{err:#}");
    Ok(())
}

#[test]
fn node_identity_recovers_cn_and_every_group() -> Result<()> {
    let ca = CertificateAuthority::generate("kubernetes")?;
    let node = ca.issue_client("system:node:dev-worker", &["system:nodes"])?;
    let identity = identity_from_der(&cert_der(&node.cert_pem)?)?;
    assert_eq!(identity.user, "system:node:dev-worker");
    assert_eq!(identity.groups, ["system:nodes"]);

    let multi = ca.issue_client("alice", &["dev", "ops", "system:authenticated"])?;
    let identity = identity_from_der(&cert_der(&multi.cert_pem)?)?;
    assert_eq!(identity.user, "alice");
    assert_eq!(identity.groups, ["dev", "ops", "system:authenticated"]);

    let none = ca.issue_client("bob", &[])?;
    assert!(
        identity_from_der(&cert_der(&none.cert_pem)?)?
            .groups
            .is_empty()
    );
    Ok(())
}

#[test]
fn issued_certs_carry_the_promised_extensions() -> Result<()> {
    let ca = CertificateAuthority::generate("kubernetes")?;
    let ca_der = cert_der(&ca.cert_pem())?;
    let (_, ca_cert) = parse_x509_certificate(&ca_der)?;
    assert!(ca_cert.is_ca());
    let usage = ca_cert.key_usage()?.context("CA has no keyUsage")?.value;
    assert!(usage.key_cert_sign() && usage.crl_sign() && usage.digital_signature());
    let ca_years = (ca_cert.validity().not_after - ca_cert.validity().not_before)
        .context("CA validity is negative")?
        .whole_days()
        / 365;
    assert_eq!(ca_years, 10);

    let client = ca.issue_client("u", &["g"])?;
    let client_der = cert_der(&client.cert_pem)?;
    let (_, client_cert) = parse_x509_certificate(&client_der)?;
    assert!(!client_cert.is_ca());
    let eku = client_cert.extended_key_usage()?.context("no EKU")?.value;
    assert!(eku.client_auth && !eku.server_auth);
    assert_eq!(client_cert.issuer(), ca_cert.subject());
    let days = (client_cert.validity().not_after - client_cert.validity().not_before)
        .context("negative validity")?
        .whole_days();
    assert!((365..=366).contains(&days), "{days} days");
    // The hand-written subject must not have broken the signature.
    client_cert
        .verify_signature(Some(ca_cert.public_key()))
        .map_err(|e| anyhow!("client signature: {e}"))?;

    let server = ca.issue_server("s", &["localhost".into()], &[LOCALHOST])?;
    let server_der = cert_der(&server.cert_pem)?;
    let (_, server_cert) = parse_x509_certificate(&server_der)?;
    let eku = server_cert.extended_key_usage()?.context("no EKU")?.value;
    assert!(eku.server_auth && !eku.client_auth);
    let sans = &server_cert
        .subject_alternative_name()?
        .context("no SANs")?
        .value
        .general_names;
    assert!(sans.contains(&GeneralName::DNSName("localhost")));
    assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
    server_cert
        .verify_signature(Some(ca_cert.public_key()))
        .map_err(|e| anyhow!("server signature: {e}"))?;
    Ok(())
}

#[test]
fn from_pem_round_trips_and_keeps_signing() -> Result<()> {
    let ca = CertificateAuthority::generate("kubernetes")?;
    let reloaded = CertificateAuthority::from_pem(&ca.cert_pem(), &ca.key_pem())?;
    assert_eq!(reloaded.cert_pem(), ca.cert_pem());
    assert_eq!(reloaded.key_pem(), ca.key_pem());

    // A serving cert re-signed after a reload must chain to the original CA certificate.
    let serving = reloaded.issue_server("kube-apiserver", &[], &[LOCALHOST])?;
    let ca_der = cert_der(&ca.cert_pem())?;
    let (_, ca_cert) = parse_x509_certificate(&ca_der)?;
    let serving_der = cert_der(&serving.cert_pem)?;
    let (_, serving_cert) = parse_x509_certificate(&serving_der)?;
    serving_cert
        .verify_signature(Some(ca_cert.public_key()))
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[test]
fn from_pem_refuses_mismatched_or_wrong_inputs() -> Result<()> {
    let ca = CertificateAuthority::generate("kubernetes")?;
    let other = CertificateAuthority::generate("kubernetes")?;

    let err = CertificateAuthority::from_pem(&ca.cert_pem(), &other.key_pem())
        .err()
        .context("accepted another CA's key")?;
    assert!(format!("{err:#}").contains("does not belong"), "{err:#}");

    let leaf = ca.issue_client("u", &[])?;
    let err = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem)
        .err()
        .context("accepted a leaf certificate as CA")?;
    assert!(format!("{err:#}").contains("not a CA"), "{err:#}");

    let err = CertificateAuthority::from_pem(&ca.key_pem(), &ca.key_pem())
        .err()
        .context("accepted a key as certificate")?;
    assert!(
        format!("{err:#}").contains("expected a \"CERTIFICATE\""),
        "{err:#}"
    );

    assert!(CertificateAuthority::from_pem("garbage", &ca.key_pem()).is_err());
    assert!(CertificateAuthority::from_pem(&ca.cert_pem(), "garbage").is_err());
    Ok(())
}

#[test]
fn bad_names_are_refused() -> Result<()> {
    assert!(CertificateAuthority::generate("").is_err());
    let ca = CertificateAuthority::generate("kubernetes")?;
    assert!(ca.issue_client("", &["g"]).is_err());
    assert!(ca.issue_client("u", &["g", ""]).is_err());
    assert!(ca.issue_server("s", &[], &[]).is_err());
    assert!(
        ca.issue_server("s", &["bücher.example".into()], &[])
            .is_err()
    );
    Ok(())
}

#[test]
fn identity_from_der_refuses_garbage() {
    assert!(identity_from_der(b"not a certificate").is_err());
}

#[test]
fn debug_output_hides_private_keys() -> Result<()> {
    let ca = CertificateAuthority::generate("kubernetes")?;
    let issued = ca.issue_client("u", &[])?;
    assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
    Ok(())
}
