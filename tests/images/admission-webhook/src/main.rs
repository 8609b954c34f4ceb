//! An admission webhook server for test images, built by the tests (static, by the checkout's
//! .cargo/config.toml) and run FROM scratch in a pod behind a Service, so the API server
//! reaches it as kube-apiserver reaches real webhooks.
//!
//! Usage: admission-webhook ADDRESS:PORT CERT.pem KEY.pem
//!
//! HTTPS (HTTP/1.1, keep-alive) with the given serving certificate. `GET /healthz` answers
//! `ok` (the readiness probe). Every POST is an AdmissionReview; the server prints one JSON
//! line per review to stdout — `{"path": …, "request": …}` without the objects — so a test can
//! read from `kubectl logs` what the API server sent, and answers by path:
//! - `/add-label`: allows, adds the label `webhook-added: pod` (JSONPatch) and a warning;
//! - `/deny-reserved`: refuses names starting with `reserved-`, warns about the others;
//! - `/slow`: allows after 5 seconds;
//! - `/allow`: allows, with a warning naming the operation and subresource.
//!
//! `/convert` takes a ConversionReview instead: Notes of `conversion.example.com` keep their
//! words in `spec.text` at v1 and in `spec.message` at v2; it logs
//! `{"path": "/convert", "desired": …, "names": […]}`.
//!
//! It ignores SIGTERM (PID 1 without a handler), so a pod's deletion ends it with SIGKILL.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::{Value, json};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, address, cert, key] = args.as_slice() else {
        eprintln!("usage: admission-webhook ADDRESS:PORT CERT.pem KEY.pem");
        std::process::exit(2);
    };
    let config = match server_config(cert, key) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("admission-webhook: {e}");
            std::process::exit(1);
        }
    };
    let listener = match TcpListener::bind(address.as_str()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("admission-webhook: cannot listen on {address}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("admission-webhook: serving on {address}");
    for tcp in listener.incoming().flatten() {
        let config = config.clone();
        std::thread::spawn(move || serve(config, tcp));
    }
}

fn server_config(cert: &str, key: &str) -> Result<rustls::ServerConfig, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {cert}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert} is not PEM: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("cannot read {key}: {e}"))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("unusable certificate or key: {e}"))
}

fn serve(config: Arc<rustls::ServerConfig>, tcp: TcpStream) {
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
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
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default();
        let path = parts
            .next()
            .unwrap_or_default()
            .split('?')
            .next()
            .unwrap_or_default();
        let (status, answer) = if method == "GET" && path == "/healthz" {
            ("200 OK", "ok".to_string())
        } else if method == "POST" {
            match serde_json::from_slice::<Value>(&body) {
                Ok(review) if path == "/convert" => ("200 OK", convert(&review["request"])),
                Ok(review) => ("200 OK", admit(path, &review["request"])),
                Err(e) => ("400 Bad Request", format!("not an AdmissionReview: {e}")),
            }
        } else {
            ("404 Not Found", "not found".to_string())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if tls.write_all(response.as_bytes()).is_err() || tls.flush().is_err() {
            return;
        }
    }
}

/// Records the review and answers it as `path` says.
fn admit(path: &str, request: &Value) -> String {
    let mut seen = request.clone();
    if let Some(fields) = seen.as_object_mut() {
        fields.remove("object");
        fields.remove("oldObject");
        fields.remove("options");
    }
    println!("{}", json!({"path": path, "request": seen}));
    let _ = std::io::stdout().flush();
    let uid = request["uid"].clone();
    let name = request["name"].as_str().unwrap_or_default();
    let response = match path {
        "/add-label" => {
            let ops = if request["object"]["metadata"]["labels"].is_object() {
                json!([{"op": "add", "path": "/metadata/labels/webhook-added", "value": "pod"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"webhook-added": "pod"}}])
            };
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                   "patch": base64::engine::general_purpose::STANDARD.encode(ops.to_string()),
                   "warnings": ["labelled by the webhook pod"]})
        }
        "/deny-reserved" if name.starts_with("reserved-") => json!({
            "uid": uid, "allowed": false,
            "status": {"code": 403, "reason": "Forbidden", "message": format!("the name {name} is reserved")},
        }),
        "/deny-reserved" => {
            json!({"uid": uid, "allowed": true, "warnings": [format!("{name} checked by the webhook pod")]})
        }
        "/slow" => {
            std::thread::sleep(Duration::from_secs(5));
            json!({"uid": uid, "allowed": true})
        }
        "/allow" => {
            let warning = format!(
                "{} {} seen by the webhook pod",
                request["operation"].as_str().unwrap_or_default(),
                request["subResource"].as_str().unwrap_or("-"),
            );
            json!({"uid": uid, "allowed": true, "warnings": [warning]})
        }
        _ => {
            json!({"uid": uid, "allowed": false, "status": {"message": format!("no webhook at {path}")}})
        }
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        .to_string()
}

/// Converts Notes between v1 (`spec.text`) and v2 (`spec.message`).
fn convert(request: &Value) -> String {
    let desired = request["desiredAPIVersion"].as_str().unwrap_or_default();
    let objects = request["objects"].as_array().cloned().unwrap_or_default();
    let names: Vec<&Value> = objects.iter().map(|o| &o["metadata"]["name"]).collect();
    println!(
        "{}",
        json!({"path": "/convert", "desired": desired, "names": names})
    );
    let _ = std::io::stdout().flush();
    let (from, to) = if desired.ends_with("/v1") {
        ("message", "text")
    } else {
        ("text", "message")
    };
    let converted: Vec<Value> = objects
        .into_iter()
        .map(|mut obj| {
            if let Some(spec) = obj["spec"].as_object_mut()
                && let Some(words) = spec.remove(from)
            {
                spec.insert(to.to_string(), words);
            }
            obj["apiVersion"] = json!(desired);
            obj
        })
        .collect();
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
           "response": {"uid": request["uid"], "result": {"status": "Success"},
                        "convertedObjects": converted}})
    .to_string()
}
