//! Connect subresources through the API server: pods/proxy and services/proxy to a pod's
//! address (also via `kubectl proxy`), and `kubectl logs` through a node agent's kubelet API
//! over TLS, where the agent demands the API server's client certificate.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// A plain HTTP backend answering every request with its own request line.
fn http_backend() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let body = format!("backend saw: {}", request_line.trim());
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn pod_and_service_proxy_reach_the_backend() {
    let server = ApiServer::start();
    let port = http_backend();
    let pod = format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"web","labels":{{"app":"web"}}}},"spec":{{"containers":[{{"name":"c","image":"x","ports":[{{"name":"http","containerPort":{port}}}]}}]}}}}"#
    );
    assert!(
        server
            .kubectl_stdin(&["create", "-f", "-"], &pod)
            .status
            .success()
    );
    server.kubectl_ok(&[
        "patch",
        "pod",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"podIP":"127.0.0.1"}}"#,
    ]);
    let out = server.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/pods/web:{port}/proxy/hello?x=1"),
    ]);
    assert_eq!(out, "backend saw: GET /hello?x=1 HTTP/1.1");
    let out = server.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/web:http/proxy/",
    ]);
    assert_eq!(out, "backend saw: GET / HTTP/1.1");

    let svc = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"svc"},"spec":{"selector":{"app":"web"},"ports":[{"name":"http","port":80}]}}"#;
    assert!(
        server
            .kubectl_stdin(&["create", "-f", "-"], svc)
            .status
            .success()
    );
    let slice = format!(
        r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"svc-abc","labels":{{"kubernetes.io/service-name":"svc"}}}},"addressType":"IPv4","endpoints":[{{"addresses":["127.0.0.1"],"conditions":{{"ready":true}}}}],"ports":[{{"name":"http","port":{port},"protocol":"TCP"}}]}}"#
    );
    assert!(
        server
            .kubectl_stdin(&["create", "-f", "-"], &slice)
            .status
            .success()
    );
    let out = server.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/services/svc:http/proxy/api",
    ]);
    assert_eq!(out, "backend saw: GET /api HTTP/1.1");

    // The tutorials' `kubectl proxy`, then plain HTTP through it.
    let proxy_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut proxy = server.kubectl_spawn(&["proxy", &format!("--port={proxy_port}")]);
    let mut banner = String::new();
    BufReader::new(proxy.stdout.take().unwrap())
        .read_line(&mut banner)
        .unwrap();
    assert!(banner.contains("Starting to serve"), "{banner}");
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", proxy_port)).unwrap();
    write!(conn, "GET /api/v1/namespaces/default/services/svc:http/proxy/through HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert!(
        response.starts_with("HTTP/1.1 200")
            && response.ends_with("backend saw: GET /through HTTP/1.1"),
        "{response}"
    );

    let out = server.kubectl(&["logs", "web"]);
    assert!(
        text(&out).contains("pod web does not have a host assigned"),
        "{}",
        text(&out)
    );
}

/// A node agent stand-in: TLS with a certificate from the cluster CA for the node's name, client
/// certificates required, answering kubelet's containerLogs path.
fn fake_agent(ca_pem: &str, ca_key_pem: &str, node: &str) -> u16 {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let ca_key = rcgen::KeyPair::from_pem(ca_key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![node.to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut reader = BufReader::new(&mut tls);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    return;
                }
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let user = tls.conn.peer_certificates().map(|c| c.len()).unwrap_or(0);
                let body = format!(
                    "agent saw: {} (client certs: {user})\n",
                    request_line.trim()
                );
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

#[test]
fn logs_go_through_the_node_agent_with_the_api_servers_certificate() {
    let server = ApiServer::start();
    let pki = server.sandbox.path().join("data/pki");
    let ca = std::fs::read_to_string(pki.join("ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(pki.join("ca.key")).unwrap();
    let agent_port = fake_agent(&ca, &ca_key, "n1");
    let node = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"n1"}},"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{agent_port}}}}}}}}}"#
    );
    assert!(
        server
            .kubectl_stdin(&["create", "-f", "-"], &node)
            .status
            .success()
    );
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"x"},{"name":"d","image":"y"}]}}"#;
    assert!(
        server
            .kubectl_stdin(&["create", "-f", "-"], pod)
            .status
            .success()
    );

    let out = server.kubectl_ok(&["logs", "p", "-c", "d", "--tail=5"]);
    assert!(
        out.starts_with("agent saw: GET /containerLogs/default/p/d?"),
        "{out}"
    );
    assert!(
        out.contains("tailLines=5") && out.contains("(client certs: 1)"),
        "{out}"
    );
    // kubectl picks the first container itself; the server's own answer needs a raw request.
    let out = server.kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/p/log"]);
    assert!(
        text(&out).contains("a container name must be specified for pod p, choose one of: [c d]"),
        "{}",
        text(&out)
    );
    std::thread::sleep(Duration::from_millis(10));
}
