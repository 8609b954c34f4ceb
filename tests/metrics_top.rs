//! The resource metrics pipeline end to end: agents sample their cgroups, the kubelet API
//! serves `/stats/summary` and `/metrics/resource`, the API server serves `metrics.k8s.io`, and
//! the real `kubectl top` reads it — on a cluster with a worker, with a pod burning CPU beside
//! an idle one. The standalone API server (no agents) answers with empty lists.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const IMAGE: &str = "kcluster-e2e/metrics-busybox:1";

fn manifests(image: &str) -> String {
    r#"
apiVersion: v1
kind: Namespace
metadata: {name: side}
---
apiVersion: v1
kind: Pod
metadata: {name: burner, labels: {app: burner}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: spin
    image: IMAGE
    command: ["sh", "-c", "while :; do :; done"]
    # A capped burner: clearly busy without taking a whole core of a loaded machine.
    resources: {limits: {cpu: 400m}}
---
apiVersion: v1
kind: Pod
metadata: {name: idle, labels: {app: idle}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sleep, image: IMAGE, command: ["sleep", "3600"]}
  - {name: helper, image: IMAGE, command: ["sleep", "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: quiet, namespace: side, labels: {app: quiet}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {name: sleep, image: IMAGE, command: ["sleep", "3600"]}
"#
    .replace("IMAGE", image)
}

/// `NNNm` as kubectl top prints CPU → millicores.
fn millicores(text: &str) -> u64 {
    text.strip_suffix('m')
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("not a millicore value: {text:?}"))
}

/// The row of `kubectl top` output whose first column is `name`.
fn row<'a>(table: &'a str, name: &str) -> Option<Vec<&'a str>> {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&name))
}

/// Polls `kubectl top …` until `check` accepts the table.
fn wait_top(cluster: &Cluster, args: &[&str], check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = cluster.kubectl(args);
        last = text(&out);
        if out.status.success() && check(&stdout(&out)) {
            return stdout(&out);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!("timed out waiting on kubectl {args:?}; last output:\n{last}");
}

fn raw(cluster: &Cluster, path: &str) -> Value {
    let body = cluster.kubectl_ok(&["get", "--raw", path]);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"))
}

#[test]
fn kubectl_top_shows_cgroup_usage_of_nodes_and_pods() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("mt");
    let tag = format!("{IMAGE}-{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    cluster.load_image(&tag);
    let nodes = [format!("{name}-server-0"), format!("{name}-worker-0")];

    // Discovery shows the group as a cluster with metrics-server does.
    let resources = cluster.kubectl_ok(&["api-resources", "--api-group=metrics.k8s.io"]);
    for kind in ["NodeMetrics", "PodMetrics"] {
        assert!(resources.contains(kind), "no {kind} in:\n{resources}");
    }

    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &manifests(&tag));
    assert!(out.status.success(), "apply failed: {}", text(&out));
    cluster.kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/burner",
        "pod/idle",
        "--timeout=90s",
    ]);
    cluster.kubectl_ok(&[
        "wait",
        "-n",
        "side",
        "--for=condition=Ready",
        "pod/quiet",
        "--timeout=90s",
    ]);

    // The burner is busy, the idle pod is not.
    let table = wait_top(&cluster, &["top", "pods"], |t| {
        let busy = row(t, "burner").is_some_and(|r| millicores(r[1]) > 100);
        busy && row(t, "idle").is_some()
    });
    let idle = row(&table, "idle").unwrap();
    assert!(
        millicores(idle[1]) < 50,
        "the idle pod looks busy:\n{table}"
    );
    assert!(
        table.starts_with("NAME")
            && table.contains("CPU(cores)")
            && table.contains("MEMORY(bytes)"),
        "{table}"
    );
    assert!(idle[2].ends_with("Mi"), "{table}");

    // Per container.
    let table = wait_top(&cluster, &["top", "pods", "--containers"], |t| {
        t.lines()
            .any(|l| l.starts_with("idle") && l.contains("helper"))
    });
    let spin = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.first() == Some(&"burner") && c.get(1) == Some(&"spin"))
        .unwrap_or_else(|| panic!("no burner/spin row:\n{table}"));
    assert!(millicores(spin[2]) > 100, "{table}");

    // All namespaces, and a label selector.
    let table = wait_top(&cluster, &["top", "pods", "-A"], |t| {
        t.lines()
            .any(|l| l.starts_with("side") && l.contains("quiet"))
    });
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("default") && l.contains("burner")),
        "{table}"
    );
    let table = cluster.kubectl_ok(&["top", "pods", "-l", "app=burner"]);
    assert!(row(&table, "burner").is_some(), "{table}");
    assert!(row(&table, "idle").is_none(), "{table}");
    let table = cluster.kubectl_ok(&["top", "pod", "burner"]);
    assert!(row(&table, "burner").is_some(), "{table}");

    // Every node, with percentages of its allocatable resources.
    let table = wait_top(&cluster, &["top", "nodes"], |t| {
        nodes
            .iter()
            .all(|n| row(t, n).is_some_and(|r| r[2].ends_with('%')))
    });
    assert!(
        table.contains("CPU(%)") && table.contains("MEMORY(%)"),
        "{table}"
    );
    for node in &nodes {
        let r = row(&table, node).unwrap();
        assert!(r[3].ends_with("Mi") && r[4].ends_with('%'), "{table}");
    }

    // The API's shape, as the HorizontalPodAutoscaler reads it.
    let list = raw(
        &cluster,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
    );
    assert_eq!(list["kind"], "PodMetricsList");
    assert_eq!(list["apiVersion"], "metrics.k8s.io/v1beta1");
    let burner = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "burner")
        .unwrap_or_else(|| panic!("no burner in {list}"));
    assert_eq!(burner["metadata"]["namespace"], "default");
    assert_eq!(burner["metadata"]["labels"]["app"], "burner");
    assert!(burner["metadata"]["creationTimestamp"].is_string());
    assert!(burner["timestamp"].is_string() && burner["window"].is_string());
    let usage = &burner["containers"][0]["usage"];
    assert_eq!(burner["containers"][0]["name"], "spin");
    assert!(usage["cpu"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(usage["memory"].is_string());
    let selected = raw(
        &cluster,
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Didle",
    );
    let names: Vec<&str> = selected["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["idle"]);
    let one = raw(
        &cluster,
        &format!("/apis/metrics.k8s.io/v1beta1/nodes/{}", nodes[1]),
    );
    assert_eq!(one["kind"], "NodeMetrics");
    assert!(one["usage"]["cpu"].is_string() && one["usage"]["memory"].is_string());
    let missing = cluster.kubectl(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nosuchpod",
    ]);
    assert!(!missing.status.success());
    assert!(
        text(&missing).contains(r#"pods "nosuchpod" not found"#),
        "{}",
        text(&missing)
    );
    let missing = cluster.kubectl(&["top", "node", "nosuchnode"]);
    assert!(
        text(&missing).contains(r#"nodes "nosuchnode" not found"#),
        "{}",
        text(&missing)
    );

    // kubectl get prints the metrics as metrics-server's Table.
    let table = cluster.kubectl_ok(&["get", "pods.metrics.k8s.io", "-l", "app=burner"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "CPU", "MEMORY", "WINDOW"], "{table}");
    assert!(
        row(&table, "burner").is_some_and(|r| r[3] == "10s"),
        "{table}"
    );

    // The kubelet API's own endpoints, through the node proxy.
    let summary = raw(
        &cluster,
        &format!("/api/v1/nodes/{}/proxy/stats/summary", nodes[0]),
    );
    assert_eq!(summary["node"]["nodeName"], nodes[0].as_str());
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .is_some()
    );
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .is_some()
    );
    assert!(summary["pods"].is_array());
    let all: Vec<String> = nodes
        .iter()
        .map(|n| {
            cluster.kubectl_ok(&[
                "get",
                "--raw",
                &format!("/api/v1/nodes/{n}/proxy/metrics/resource"),
            ])
        })
        .collect();
    assert!(
        all.iter().any(|t| t.contains(
            "container_cpu_usage_seconds_total{container=\"spin\",namespace=\"default\",pod=\"burner\"}"
        )),
        "{all:?}"
    );
    assert!(
        all.iter()
            .all(|t| t.contains("node_memory_working_set_bytes "))
    );
}

#[test]
fn standalone_api_server_answers_with_no_metrics() {
    let server = ApiServer::start();
    let resources = server.kubectl_ok(&["api-resources", "--api-group=metrics.k8s.io"]);
    assert!(resources.contains("PodMetrics"), "{resources}");
    let list = server.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]);
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list["kind"], "NodeMetricsList");
    assert_eq!(list["items"], serde_json::json!([]));
    let pods = server.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods"]);
    assert!(pods.contains("PodMetricsList"), "{pods}");

    // kubectl's own words when there is nothing to show.
    let out = server.kubectl(&["top", "nodes"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("metrics not available yet"),
        "{}",
        text(&out)
    );
    let out = server.kubectl(&["top", "pods"]);
    assert!(
        text(&out).contains("No resources found in default namespace"),
        "{}",
        text(&out)
    );
    let out = server.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/none"]);
    assert!(text(&out).contains("NotFound"), "{}", text(&out));
    // Writes are refused; the server is still there afterwards.
    let out = server.kubectl(&["delete", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/none"]);
    assert!(!out.status.success());
    server.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"]);
}
