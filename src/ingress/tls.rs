//! Certificates by SNI, as ingress-nginx picks them: each TLS host of an Ingress gets its
//! secret's certificate when that certificate covers the host — its DNS SANs, or, when it has
//! none, its CN (the seed's `CN=*.luffy.com` certificate has no SAN) — and the default
//! certificate otherwise. Lookup: the exact name, then a one-label wildcard TLS host, then the
//! default. rustls' own SNI resolver is not used: it checks names against SANs only.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::translate::{Problem, TlsEntry};

pub const FAKE_CN: &str = "Kubernetes Ingress Controller Fake Certificate";

/// A parsed certificate and the names it covers.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub names: Vec<String>,
}

/// The names a certificate is valid for: DNS SANs, else the subject's CN.
pub fn names_of(der: &[u8]) -> Result<Vec<String>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow!("not an X.509 certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        for cn in cert.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                names.push(s.to_ascii_lowercase());
            }
        }
    }
    Ok(names)
}

pub fn load_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Loaded> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("tls.crt is not PEM: {e}"))?;
    let first = chain.first().context("tls.crt holds no certificate")?;
    let names = names_of(first)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| anyhow!("tls.key: {e}"))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow!("tls.key is not a supported private key: {e}"))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match()
        .map_err(|e| anyhow!("tls.key does not belong to tls.crt: {e}"))?;
    Ok(Loaded {
        key: Arc::new(ck),
        names,
    })
}

fn load_secret(secret: &Secret) -> Result<Loaded> {
    let data = secret.data.as_ref().context("the secret has no data")?;
    let crt = data.get("tls.crt").context("the secret has no tls.crt")?;
    let key = data.get("tls.key").context("the secret has no tls.key")?;
    load_pem(&crt.0, &key.0)
}

/// Whether a certificate name (possibly `*.x`) covers a host (possibly a wildcard TLS host).
pub fn covers(name: &str, host: &str) -> bool {
    if name == host {
        return true;
    }
    match (name.strip_prefix("*."), host.split_once('.')) {
        (Some(parent), Some((label, rest))) => label != "*" && rest == parent,
        _ => false,
    }
}

/// The self-signed certificate for hosts without a usable one (ingress-nginx's subject).
pub fn fake() -> Result<Arc<CertifiedKey>> {
    let key = rcgen::KeyPair::generate().context("cannot generate a key")?;
    let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])
        .context("certificate parameters")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, FAKE_CN);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Acme Co");
    let cert = params.self_signed(&key).context("cannot sign")?;
    let loaded = load_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?;
    Ok(loaded.key)
}

struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

/// The server's certificate resolver; `update` swaps its whole map.
pub struct Resolver {
    fake: Arc<CertifiedKey>,
    /// `ingress.defaultCertificate` of the cluster file: a `namespace/name` TLS secret used
    /// instead of the self-signed certificate once it exists.
    default_secret: Option<String>,
    certs: RwLock<Arc<Certs>>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    pub fn new(fake: Arc<CertifiedKey>, default_secret: Option<String>) -> Resolver {
        Resolver {
            certs: RwLock::new(Arc::new(Certs {
                exact: HashMap::new(),
                wildcard: HashMap::new(),
                default: fake.clone(),
            })),
            fake,
            default_secret,
        }
    }

    /// Rebuilds the map from the TLS sections and the secrets they name; problems (missing or
    /// unusable secrets, certificates that do not cover a host) for events.
    pub fn update(
        &self,
        entries: &[TlsEntry],
        secret: impl Fn(&str) -> Option<Arc<Secret>>,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        let default = match &self.default_secret {
            None => self.fake.clone(),
            Some(name) => match secret(name)
                .ok_or_else(|| anyhow!("not found"))
                .and_then(|s| load_secret(&s))
            {
                Ok(l) => l.key,
                Err(e) => {
                    tracing::warn!(secret = %name, error = format!("{e:#}"), "the default certificate (ingress.defaultCertificate) is not usable; the self-signed one is served");
                    self.fake.clone()
                }
            },
        };
        let mut certs = Certs {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
        };
        let mut cache: HashMap<String, Result<Arc<Loaded>, String>> = HashMap::new();
        for e in entries {
            let Some(name) = &e.secret else { continue };
            let loaded = cache
                .entry(name.clone())
                .or_insert_with(|| match secret(name) {
                    None => Err(format!("secret {name} not found")),
                    Some(s)
                        if s.type_.as_deref() != Some("kubernetes.io/tls")
                            && s.type_.is_some()
                            && s.type_.as_deref() != Some("Opaque") =>
                    {
                        Err(format!(
                            "secret {name} is of type {}, not kubernetes.io/tls",
                            s.type_.clone().unwrap_or_default()
                        ))
                    }
                    Some(s) => load_secret(&s)
                        .map(Arc::new)
                        .map_err(|err| format!("secret {name}: {err:#}")),
                })
                .clone();
            let loaded = match loaded {
                Ok(l) => l,
                Err(msg) => {
                    problems.push(Problem {
                        ingress: e.ingress.clone(),
                        reason: "DefaultCertificate",
                        message: format!(
                            "{msg}; hosts {} get the default certificate",
                            e.hosts.join(", ")
                        ),
                    });
                    continue;
                }
            };
            for h in &e.hosts {
                if !loaded.names.iter().any(|n| covers(n, h)) {
                    problems.push(Problem {
                        ingress: e.ingress.clone(),
                        reason: "DefaultCertificate",
                        message: format!(
                            "the certificate in secret {name} (names {}) does not cover host {h}; it gets the default certificate",
                            loaded.names.join(", ")
                        ),
                    });
                    continue;
                }
                let slot = match h.strip_prefix("*.") {
                    Some(parent) => certs.wildcard.entry(parent.to_string()),
                    None => certs.exact.entry(h.clone()),
                };
                // The first (oldest Ingress's) certificate for a host stays.
                slot.or_insert_with(|| loaded.key.clone());
            }
        }
        if let Ok(mut w) = self.certs.write() {
            *w = Arc::new(certs);
        }
        problems
    }

    pub fn lookup(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let certs = match self.certs.read() {
            Ok(c) => c.clone(),
            Err(_) => return self.fake.clone(),
        };
        let Some(host) = sni.map(str::to_ascii_lowercase) else {
            return certs.default.clone();
        };
        if let Some(k) = certs.exact.get(&host) {
            return k.clone();
        }
        if let Some((_, parent)) = host.split_once('.')
            && let Some(k) = certs.wildcard.get(parent)
        {
            return k.clone();
        }
        certs.default.clone()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(hello.server_name()))
    }
}

/// TLS 1.2 and 1.3, h2 and http/1.1 by ALPN.
pub fn server_config(resolver: Arc<Resolver>) -> Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cn_only_wildcard_covers_one_label() {
        assert!(covers("*.luffy.com", "myblog.luffy.com"));
        assert!(!covers("*.luffy.com", "a.b.luffy.com"));
        assert!(!covers("*.luffy.com", "luffy.com"));
        assert!(covers("*.luffy.com", "*.luffy.com"));
        assert!(covers("x.y", "x.y"));
    }

    #[test]
    fn fake_certificate_has_ingress_nginx_subject() {
        let k = fake().expect("fake cert");
        let (_, cert) = x509_parser::parse_x509_certificate(&k.cert[0]).expect("parse");
        let cn: Vec<_> = cert
            .subject()
            .iter_common_name()
            .filter_map(|c| c.as_str().ok())
            .collect();
        assert_eq!(cn, [FAKE_CN]);
    }
}
