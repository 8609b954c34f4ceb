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

/// apiregistration.k8s.io/v1: one Local, Available APIService per served group version, as
/// kube-apiserver registers them, and user-registered ones created, refused twice, updated and
/// deleted with Kubernetes' answers.
#[test]
fn api_services_list_the_served_group_versions() {
    let server = ApiServer::start();
    let listed = server.kubectl_ok(&["get", "apiservices"]);
    let header = listed.lines().next().unwrap_or_default();
    for column in ["NAME", "SERVICE", "AVAILABLE", "AGE"] {
        assert!(header.contains(column), "{listed}");
    }
    for name in ["v1.", "v1.apps", "v1.batch", "v1beta1.metrics.k8s.io"] {
        let row = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no APIService {name}:\n{listed}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1..3], ["Local", "True"], "{row}");
    }
    let apps = server.kubectl_ok(&["get", "apiservice", "v1.apps", "-o", "json"]);
    let apps: serde_json::Value = serde_json::from_str(&apps).unwrap();
    assert_eq!(apps["spec"]["group"], "apps", "{apps}");
    assert_eq!(apps["spec"]["version"], "v1", "{apps}");
    assert_eq!(
        apps["status"]["conditions"][0]["type"], "Available",
        "{apps}"
    );

    let manifest = r#"{"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1alpha1.wardle.example.com"},
        "spec": {"group": "wardle.example.com", "version": "v1alpha1", "groupPriorityMinimum": 1000,
                 "versionPriority": 15, "insecureSkipTLSVerify": true,
                 "service": {"name": "api", "namespace": "wardle"}}}"#;
    let created = server.kubectl_stdin(&["create", "-f", "-"], manifest);
    assert!(created.status.success(), "{}", text(&created));
    let again = server.kubectl_stdin(&["create", "-f", "-"], manifest);
    assert!(
        text(&again).contains(
            "apiservices.apiregistration.k8s.io \"v1alpha1.wardle.example.com\" already exists"
        ),
        "{}",
        text(&again)
    );
    let row = server.kubectl_ok(&["get", "apiservice", "v1alpha1.wardle.example.com"]);
    assert!(row.contains("wardle/api"), "{row}");
    server.kubectl_ok(&[
        "patch",
        "apiservice",
        "v1alpha1.wardle.example.com",
        "--type=merge",
        "-p",
        r#"{"spec":{"versionPriority":20}}"#,
    ]);
    let priority = server.kubectl_ok(&[
        "get",
        "apiservice",
        "v1alpha1.wardle.example.com",
        "-o",
        "jsonpath={.spec.versionPriority}",
    ]);
    assert_eq!(priority, "20");
    let misnamed = manifest.replace("v1alpha1.wardle.example.com\"}", "wrong\"}");
    let refused = server.kubectl_stdin(&["create", "-f", "-"], &misnamed);
    assert!(
        !refused.status.success()
            && text(&refused).contains("must be `spec.version+\".\"+spec.group`"),
        "{}",
        text(&refused)
    );
    server.kubectl_ok(&["delete", "apiservice", "v1alpha1.wardle.example.com"]);
    let gone = server.kubectl(&["get", "apiservice", "v1alpha1.wardle.example.com"]);
    assert!(
        text(&gone).contains("NotFound") || text(&gone).contains("not found"),
        "{}",
        text(&gone)
    );
}
