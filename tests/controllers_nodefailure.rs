//! A node that stops: its lease lapses, the node lifecycle controller marks it NotReady and taints
//! it unreachable, the taint-eviction controller deletes its pods once their tolerationSeconds
//! pass, and their ReplicaSet replaces them on the node that still works.

mod common;
mod controllers_support;

use std::time::Duration;

use common::*;
use controllers_support::*;
use serde_json::Value;

/// (name, node, terminating) for the deployment's pods.
fn pods(server: &ApiServer) -> Vec<(String, String, bool)> {
    let list: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "pods", "-l", "app=web", "-o", "json"]))
            .expect("pods as JSON");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p.pointer("/metadata/deletionTimestamp").is_some(),
            )
        })
        .collect()
}

#[test]
fn pods_leave_a_node_that_stopped() {
    // This binary runs one test, so the variable reaches only its own server.
    unsafe { std::env::set_var("KCLUSTER_NODE_MONITOR_GRACE_SECONDS", "3") };
    let server = ApiServer::start_with(&["--controllers"]);
    create_node(&server, "n1", &[], "4", "8Gi", 110);
    create_node(&server, "n2", &[], "4", "8Gi", 110);
    let kubelet1 = FakeKubelet::start(&server, &["n1"]);
    let _kubelet2 = FakeKubelet::start(&server, &["n2"]);
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
      containers: [{name: c, image: nginx}]
"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    server.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let before = pods(&server);
    let on_n1: Vec<String> = before
        .iter()
        .filter(|p| p.1 == "n1")
        .map(|p| p.0.clone())
        .collect();
    assert_eq!(on_n1.len(), 1, "one replica per node: {before:?}");

    // n1 stops: no more lease renewals, and nobody finishes its pods' deletion.
    drop(kubelet1);
    wait_for("n1 to be NotReady", Duration::from_secs(30), || {
        server
            .kubectl_ok(&["get", "node", "n1", "--no-headers"])
            .contains("NotReady")
    });
    let taints = server.kubectl_ok(&["get", "node", "n1", "-o", "jsonpath={.spec.taints}"]);
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
    wait_for(
        "the replica on n1 to be replaced on n2",
        Duration::from_secs(30),
        || {
            let now = pods(&server);
            let live: Vec<_> = now.iter().filter(|p| !p.2).collect();
            live.len() == 2 && live.iter().all(|p| p.1 == "n2")
        },
    );
    let evicted = &on_n1[0];
    assert!(
        pods(&server).iter().any(|p| &p.0 == evicted && p.2),
        "the pod on the stopped node stays Terminating, as on a real cluster"
    );
    wait_output(
        "the eviction event",
        || {
            server.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={evicted}"),
            ])
        },
        &[
            "TaintManagerEviction",
            &format!("Marking for deletion Pod default/{evicted}"),
        ],
    );
    server.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
}
