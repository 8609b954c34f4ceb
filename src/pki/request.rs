//! PKCS#10 certificate signing requests: parsed and their signatures checked as Go's
//! `x509.ParseCertificateRequest` + `CheckSignature` do for the API server's validation, and
//! signed by the cluster CA as kube-controller-manager's signers do.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use base64::Engine as _;
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
    SubjectPublicKeyInfo,
};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY;
use x509_parser::prelude::FromDer;

use super::{CertificateAuthority, der, der_to_pem};

/// What a signer needs of a request whose signature has been checked.
#[derive(Debug, Clone)]
pub struct CertificateRequest {
    /// The subject Name exactly as the requester encoded it, copied into the certificate.
    subject_der: Vec<u8>,
    spki_der: Vec<u8>,
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
}

/// The first PEM block of `data` (Go's `pem.Decode` skips text before it): label and DER.
fn first_pem_block(data: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = String::from_utf8_lossy(data);
    let begin = text.find("-----BEGIN ")?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body = &rest[label_end + 5..];
    let end = body.find(&format!("-----END {label}-----"))?;
    let b64: String = body[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .ok()?;
    Some((label, der))
}

/// Parses `spec.request` (PEM bytes) and checks its signature. The error is the text Kubernetes
/// puts in its 422 for `spec.request`.
pub fn parse_request(pem: &[u8]) -> Result<CertificateRequest, String> {
    const NOT_A_REQUEST: &str = "PEM block type must be CERTIFICATE REQUEST";
    let (label, der) = first_pem_block(pem).ok_or(NOT_A_REQUEST)?;
    if label != "CERTIFICATE REQUEST" {
        return Err(NOT_A_REQUEST.into());
    }
    let malformed = || "x509: malformed certificate request".to_string();
    let (rest, csr) = X509CertificationRequest::from_der(&der).map_err(|_| malformed())?;
    if !rest.is_empty() {
        return Err("x509: trailing data after certificate request".into());
    }
    let info = &csr.certification_request_info;
    if csr.verify_signature().is_err() {
        // Go's wording per key type.
        return Err(
            if info.subject_pki.algorithm.algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
                "x509: ECDSA verification failure".into()
            } else {
                "crypto/rsa: verification error".into()
            },
        );
    }
    let subject = &info.subject;
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    let mut request = CertificateRequest {
        subject_der: subject.as_raw().to_vec(),
        spki_der: info.subject_pki.raw.to_vec(),
        common_name,
        organizations,
        dns_names: Vec::new(),
        ips: Vec::new(),
        emails: Vec::new(),
        uris: Vec::new(),
    };
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => request.dns_names.push(d.to_string()),
                    GeneralName::RFC822Name(e) => request.emails.push(e.to_string()),
                    GeneralName::URI(u) => request.uris.push(u.to_string()),
                    GeneralName::IPAddress(bytes) => match bytes.len() {
                        4 => request.ips.push(IpAddr::from(
                            <[u8; 4]>::try_from(*bytes).unwrap_or_default(),
                        )),
                        16 => request.ips.push(IpAddr::from(
                            <[u8; 16]>::try_from(*bytes).unwrap_or_default(),
                        )),
                        _ => {}
                    },
                    _ => {}
                }
            }
        }
    }
    Ok(request)
}

/// Kubernetes' key usage names as the certificate's key usages and extended key usages
/// (`authority.keyUsagesFromStrings`); an unknown name is an error.
fn usages_of(usages: &[String]) -> Result<(Vec<KeyUsagePurpose>, Vec<ExtendedKeyUsagePurpose>)> {
    let mut key = Vec::new();
    let mut extended = Vec::new();
    let mut unknown = Vec::new();
    for usage in usages {
        let k = match usage.as_str() {
            "signing" | "digital signature" => Some(KeyUsagePurpose::DigitalSignature),
            "content commitment" => Some(KeyUsagePurpose::ContentCommitment),
            "key encipherment" => Some(KeyUsagePurpose::KeyEncipherment),
            "key agreement" => Some(KeyUsagePurpose::KeyAgreement),
            "data encipherment" => Some(KeyUsagePurpose::DataEncipherment),
            "cert sign" => Some(KeyUsagePurpose::KeyCertSign),
            "crl sign" => Some(KeyUsagePurpose::CrlSign),
            "encipher only" => Some(KeyUsagePurpose::EncipherOnly),
            "decipher only" => Some(KeyUsagePurpose::DecipherOnly),
            _ => None,
        };
        let e = match usage.as_str() {
            "any" => Some(ExtendedKeyUsagePurpose::Any),
            "server auth" => Some(ExtendedKeyUsagePurpose::ServerAuth),
            "client auth" => Some(ExtendedKeyUsagePurpose::ClientAuth),
            "code signing" => Some(ExtendedKeyUsagePurpose::CodeSigning),
            "email protection" | "s/mime" => Some(ExtendedKeyUsagePurpose::EmailProtection),
            "timestamping" => Some(ExtendedKeyUsagePurpose::TimeStamping),
            "ocsp signing" => Some(ExtendedKeyUsagePurpose::OcspSigning),
            _ => None,
        };
        match (k, e) {
            (Some(k), _) if !key.contains(&k) => key.push(k),
            (Some(_), _) => {}
            (None, Some(e)) if !extended.contains(&e) => extended.push(e),
            (None, Some(_)) => {}
            (None, None) => unknown.push(usage.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(anyhow!("unrecognized usage values: {unknown:?}"));
    }
    Ok((key, extended))
}

/// kube-controller-manager's signers backdate every certificate by 5 minutes; certificates
/// shorter than 8 hours keep their full lifetime after now, longer ones lose the backdate.
const SIGNER_BACKDATE: Duration = Duration::from_secs(5 * 60);
const SIGNER_SHORT: Duration = Duration::from_secs(8 * 60 * 60);

impl CertificateAuthority {
    /// Issues a certificate for a checked request: its subject and SANs, the given usages,
    /// valid for `lifetime` as Kubernetes' PermissiveSigningPolicy computes it. PEM.
    pub fn sign_request(
        &self,
        request: &CertificateRequest,
        usages: &[String],
        lifetime: Duration,
    ) -> Result<String> {
        let (key_usages, extended) = usages_of(usages)?;
        let now = SystemTime::now();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = key_usages;
        params.extended_key_usages = extended;
        params.use_authority_key_identifier_extension = true;
        params.not_before = (now - SIGNER_BACKDATE).into();
        let not_after = if lifetime < SIGNER_SHORT {
            now + lifetime
        } else {
            now + lifetime - SIGNER_BACKDATE
        };
        params.not_after = not_after.min(self.not_after).into();
        for name in &request.dns_names {
            if let Ok(n) = name.as_str().try_into() {
                params.subject_alt_names.push(SanType::DnsName(n));
            }
        }
        for email in &request.emails {
            if let Ok(e) = email.as_str().try_into() {
                params.subject_alt_names.push(SanType::Rfc822Name(e));
            }
        }
        for uri in &request.uris {
            if let Ok(u) = uri.as_str().try_into() {
                params.subject_alt_names.push(SanType::URI(u));
            }
        }
        params
            .subject_alt_names
            .extend(request.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let public_key = SubjectPublicKeyInfo::from_der(&request.spki_der)
            .map_err(|e| anyhow!("the request's public key cannot be used: {e}"))?;
        let cert = params
            .signed_by(&public_key, &self.issuer)
            .context("signing the requested certificate")?;
        // rcgen keeps one value per attribute type: the request's own subject (several O
        // values, any order) is put back as the requester encoded it.
        let der = der::replace_subject(cert.der(), &request.subject_der, self.issuer.key())
            .context("copying the request's subject into the certificate")?;
        Ok(der_to_pem(&der, "CERTIFICATE"))
    }
}
