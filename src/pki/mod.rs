//! Cluster certificates: one CA per cluster signs the API server's serving certificate and the
//! client certificates of kubectl users and node agents. All keys are ECDSA P-256: small, fast
//! to generate at every node boot, and accepted by kubectl, client-go and rustls alike.

// The CLI and the API server call into this module; until they are merged only tests do.
#![allow(dead_code)]

mod der;
mod request;

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};
use base64::Engine as _;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use x509_parser::prelude::{X509Certificate, parse_x509_certificate};

pub use request::{CertificateRequest, parse_request};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Same lifetimes as kubeadm (and so kind): a cluster outlives no CA, and a year of leaf
/// validity is far beyond the life of a local cluster.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Certificates are made on the host and checked inside containers and VMs (Docker Desktop)
/// whose clocks can lag a little; starting validity a few minutes early avoids "not yet valid".
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The cluster CA: its certificate and the key that signs everything else.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Issued certificates never outlive the CA, or clients would get a confusing chain error.
    not_after: SystemTime,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("issuer", &self.issuer)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, both PEM: the form kubeconfig files and rustls take.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keep private keys out of logs and panic messages.
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA valid for 10 years.
    pub fn generate(common_name: &str) -> Result<Self> {
        ensure!(
            !common_name.is_empty(),
            "the CA needs a common name, e.g. \"kubernetes\""
        );
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_only(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_VALIDITY).into();
        let cert = params
            .self_signed(&key)
            .context("self-signing the cluster CA certificate failed")?;
        // Go through the same parsing and checks as a CA loaded from disk, so both behave alike.
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Loads a CA saved with [`cert_pem`](Self::cert_pem) and [`key_pem`](Self::key_pem).
    /// Refuses a key that does not match the certificate, a certificate that is not a CA, and a
    /// CA outside its validity period, because anything it signed would be rejected anyway.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let der = pem_to_der(cert_pem, "CERTIFICATE").context("reading the CA certificate")?;
        let cert = parse_cert(&der).context("reading the CA certificate")?;
        ensure!(
            cert.is_ca(),
            "the certificate for \"{}\" is not a CA certificate (no basicConstraints CA:TRUE); \
             pass the cluster's ca.crt, not a leaf certificate",
            cert.subject()
        );
        let validity = cert.validity();
        ensure!(
            validity.time_to_expiration().is_some(),
            "the cluster CA \"{}\" is only valid from {} to {}; recreate the cluster to get a new CA",
            cert.subject(),
            validity.not_before,
            validity.not_after
        );
        let not_after = u64::try_from(validity.not_after.timestamp())
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
            .map_err(|_| anyhow!("the CA certificate expires before 1970"))?;

        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            anyhow!("the CA private key is not a PEM PKCS#8 key (\"BEGIN PRIVATE KEY\"): {e}")
        })?;
        ensure!(
            key.public_key_raw() == cert.public_key().subject_public_key.data.as_ref(),
            "the CA private key does not belong to the CA certificate \"{}\"; \
             the ca.crt and ca.key files must come from the same cluster",
            cert.subject()
        );
        let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
            .map_err(|e| anyhow!("the CA certificate cannot be used for signing: {e}"))?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
            not_after,
        })
    }

    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Client cert: CN = user, O = each group (e.g. "kubernetes-admin", ["system:masters"];
    /// node agents: "system:node:<node>", ["system:nodes"]). 1 year, clientAuth EKU.
    pub fn issue_client(&self, common_name: &str, organizations: &[&str]) -> Result<IssuedCert> {
        ensure!(
            !common_name.is_empty(),
            "a client certificate needs a user name as its common name"
        );
        if let Some(index) = organizations.iter().position(|o| o.is_empty()) {
            bail!("group {index} for client \"{common_name}\" is empty; leave it out instead");
        }
        let mut params = self.leaf_params(common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = new_key()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the client certificate for \"{common_name}\""))?;
        let subject = der::subject_name(common_name, organizations);
        let der =
            der::replace_subject(cert.der(), &subject, self.issuer.key()).with_context(|| {
                format!("writing the groups into the certificate for \"{common_name}\"")
            })?;

        // The subject was spliced in by hand: prove it reads back as the identity we meant,
        // since the API server will authorize on exactly these values.
        let identity = identity_from_der(&der)?;
        ensure!(
            identity.user == common_name && identity.groups == organizations,
            "internal error: client certificate for \"{common_name}\" reads back as {identity:?}"
        );
        Ok(IssuedCert {
            cert_pem: der_to_pem(&der, "CERTIFICATE"),
            key_pem: key.serialize_pem(),
        })
    }

    /// Serving cert: SANs = dns names + IPs, serverAuth EKU, 1 year.
    pub fn issue_server(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<IssuedCert> {
        self.issue_named(
            common_name,
            dns_names,
            ips,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    /// Peer cert (etcd members talking to each other): a serving cert that is also a client
    /// cert, serverAuth and clientAuth EKUs.
    pub fn issue_peer(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
    ) -> Result<IssuedCert> {
        self.issue_named(
            common_name,
            dns_names,
            ips,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    fn issue_named(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Result<IssuedCert> {
        ensure!(
            !common_name.is_empty(),
            "a serving certificate needs a common name, e.g. \"kube-apiserver\""
        );
        // TLS clients match only SANs, never the CN: a certificate without any is useless.
        ensure!(
            !dns_names.is_empty() || !ips.is_empty(),
            "the serving certificate for \"{common_name}\" needs at least one DNS name or IP address"
        );
        let mut params = self.leaf_params(common_name);
        params.extended_key_usages = usages;
        for name in dns_names {
            let ia5 = Ia5String::try_from(name.as_str()).map_err(|e| {
                anyhow!("\"{name}\" cannot be a DNS name in a certificate (ASCII only): {e}")
            })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let key = new_key()?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the serving certificate for \"{common_name}\""))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Settings shared by every certificate this CA signs.
    fn leaf_params(&self, common_name: &str) -> CertificateParams {
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_only(common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        // ECDSA keys only sign; keyEncipherment would be meaningless for them.
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // Lets verifiers pick the right CA key by identifier once the CA is ever rotated.
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + LEAF_VALIDITY).min(self.not_after).into();
        // rcgen derives the serial number from a hash of the subject's public key. Every
        // certificate gets a fresh key, so serials are unique without keeping any state.
        params.serial_number = None;
        params
    }
}

/// Identity of a verified client certificate (DER), for the API server's authentication:
/// CN as user, O values as groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub user: String,
    pub groups: Vec<String>,
}

/// Reads the Kubernetes identity out of a client certificate. It does not verify anything:
/// call it only on a certificate the TLS layer has already checked against the cluster CA.
pub fn identity_from_der(der: &[u8]) -> Result<ClientIdentity> {
    let cert = parse_cert(der).context("reading the client certificate")?;
    let subject = cert.subject();
    let common_names = subject
        .iter_common_name()
        .map(|attr| attr.as_str())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the client certificate's CN is not a string: {e}"))?;
    // Two CNs would make the user name depend on which one a reader picks: refuse instead.
    let user = match common_names.as_slice() {
        [user] if !user.is_empty() => (*user).to_owned(),
        [] | [_] => bail!("client certificate \"{subject}\" has no CN, so it names no user"),
        _ => bail!("client certificate \"{subject}\" has several CNs; it must name one user"),
    };
    let groups = subject
        .iter_organization()
        .map(|attr| attr.as_str().map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!("an O value of client certificate \"{subject}\" is not a string: {e}")
        })?;
    Ok(ClientIdentity { user, groups })
}

fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow!("generating an ECDSA P-256 key failed: {e}"))
}

fn common_name_only(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>> {
    let (rest, cert) =
        parse_x509_certificate(der).map_err(|e| anyhow!("not a valid X.509 certificate: {e}"))?;
    ensure!(
        rest.is_empty(),
        "{} unexpected bytes after the certificate",
        rest.len()
    );
    Ok(cert)
}

/// Decodes the single PEM block in `text`, which must carry `label`.
fn pem_to_der(text: &str, label: &str) -> Result<Vec<u8>> {
    let (rest, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|e| anyhow!("not PEM (expected \"-----BEGIN {label}-----\"): {e}"))?;
    ensure!(
        pem.label == label,
        "the PEM block is a \"{}\", expected a \"{label}\"",
        pem.label
    );
    ensure!(
        std::str::from_utf8(rest).is_ok_and(|r| r.trim().is_empty()),
        "more than one PEM block; expected a single \"{label}\""
    );
    Ok(pem.contents)
}

fn der_to_pem(der: &[u8], label: &str) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    // 64-column lines, as RFC 7468 asks: some readers reject longer ones.
    for line in body.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

#[cfg(test)]
mod tests;
