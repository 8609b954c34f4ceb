//! The real kubectl against the API server alone (no Docker).

mod common;

use common::*;

#[test]
fn kubectl_reads_discovery_namespaces_and_versions() {
    let server = ApiServer::start();
    let version = server.kubectl_ok(&["version", "-o", "json"]);
    assert!(version.contains("\"minor\": \"32\""), "{version}");
    let namespaces = server.kubectl_ok(&["get", "ns"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.contains(ns), "{namespaces}");
    }
    let resources = server.kubectl_ok(&["api-resources", "-o", "wide"]);
    assert!(
        resources.contains("namespaces") && resources.contains("VERBS"),
        "{resources}"
    );
    // Anonymous requests are refused with 401, except /version and health.
    let out = std::process::Command::new("kubectl")
        .args([
            "--server",
            &server.url,
            "--insecure-skip-tls-verify",
            "--token",
            "not-a-token",
            "get",
            "ns",
        ])
        .env("KUBECONFIG", "/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Unauthorized") || text(&out).contains("provide credentials"),
        "{}",
        text(&out)
    );
}
