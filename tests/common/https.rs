//! HTTPS servers of the tests' own (webhooks) on 127.0.0.1, with a serving certificate from a
//! CA made here and handed to the API server as caBundle.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::{PrivateKeyDer, pem::PemObject};

pub struct LoopbackHttps {
    pub port: u16,
    /// The CA's certificate, base64 as a caBundle takes it.
    pub ca_bundle: String,
}

/// Listens on a free port of 127.0.0.1 and gives each connection, on its own thread, to
/// `handle` with the TLS configuration to accept it with.
pub fn serve<F>(ca_name: &str, handle: F) -> LoopbackHttps
where
    F: Fn(Arc<rustls::ServerConfig>, TcpStream) + Send + Sync + 'static,
{
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, ca_name);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let (config, handle) = (config.clone(), handle.clone());
            std::thread::spawn(move || handle(config, tcp));
        }
    });
    LoopbackHttps {
        port,
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca_cert.pem()),
    }
}
