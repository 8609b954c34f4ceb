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

/// Boolean query parameters decode as Kubernetes' parameter codec decodes them: Python's
/// `True`, Go's `t`/`1`, even an empty value mean true; only `0` and `false` in any case mean
/// false. A client that writes `watch=True` gets a stream of events, not a list.
#[test]
fn boolean_query_parameters_decode_as_kubernetes_does() {
    let server = ApiServer::start();
    server.kubectl_ok(&["create", "configmap", "flagged", "--from-literal=a=1"]);
    let path = "/api/v1/namespaces/default/configmaps";
    for truthy in ["True", "true", "TRUE", "t", "1", ""] {
        // timeoutSeconds ends the watch, so `get --raw` returns what the stream carried.
        let raw = format!("{path}?watch={truthy}&timeoutSeconds=1");
        let out = server.kubectl_ok(&["get", "--raw", &raw]);
        assert!(
            out.contains("\"type\":\"ADDED\"") && out.contains("\"name\":\"flagged\""),
            "watch={truthy:?} must stream events: {out}"
        );
        assert!(
            !out.contains("ConfigMapList"),
            "watch={truthy:?} gave a list: {out}"
        );
    }
    for falsy in ["False", "false", "FALSE", "0"] {
        let raw = format!("{path}?watch={falsy}");
        let out = server.kubectl_ok(&["get", "--raw", &raw]);
        assert!(
            out.contains("\"kind\":\"ConfigMapList\"") && out.contains("\"name\":\"flagged\""),
            "watch={falsy:?} must list: {out}"
        );
    }
    // The first of repeated values counts, as in Kubernetes.
    let out = server.kubectl_ok(&["get", "--raw", &format!("{path}?watch=False&watch=True")]);
    assert!(out.contains("ConfigMapList"), "{out}");
}
