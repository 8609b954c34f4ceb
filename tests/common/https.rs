//! HTTPS servers of the tests' own (webhooks) on 127.0.0.1, with a serving certificate from a
//! CA made here and handed to the API server as caBundle.

use std::io::{BufRead, BufReader, Read, Write};
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

/// `serve` for webhooks: each HTTP/1.1 request of a kept-alive connection is a POST of JSON,
/// and `answer(path, body)` gives the JSON answered with 200.
pub fn serve_json<F>(ca_name: &str, answer: F) -> LoopbackHttps
where
    F: Fn(&str, serde_json::Value) -> String + Send + Sync + 'static,
{
    serve(ca_name, move |config, tcp| {
        answer_each(config, tcp, &answer)
    })
}

fn answer_each(
    config: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
    answer: &dyn Fn(&str, serde_json::Value) -> String,
) {
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    // Answers go out at once, as Go's servers send them (no Nagle delay on small writes).
    let _ = tcp.set_nodelay(true);
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    loop {
        let mut reader = BufReader::new(&mut tls);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or_default();
        let path = target.split('?').next().unwrap_or_default();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let answer = answer(path, json);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if tls.write_all(response.as_bytes()).is_err() {
            return;
        }
        let _ = tls.flush();
    }
}
