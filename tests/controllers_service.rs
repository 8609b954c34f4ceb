//! The seed tutorial's Service chapter through the real kubectl: a Service's Endpoints and
//! EndpointSlices follow its pods as they come, scale, turn unready and go.

mod common;
mod controllers_support;

use std::time::{Duration, Instant};

use common::*;
use controllers_support::*;
use serde_json::Value;

fn wait_until(server: &ApiServer, args: &[&str], check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = server.kubectl(args);
        last = text(&out);
        if out.status.success() && check(&stdout(&out)) {
            return stdout(&out);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("timed out waiting on kubectl {args:?}; last output:\n{last}");
}

/// A `kubectl describe` field's value (the column it starts at depends on the longest label).
fn field(describe: &str, name: &str) -> String {
    describe
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

fn pod_ips(server: &ApiServer, selector: &str) -> Vec<String> {
    let list: Value = serde_json::from_str(
        &server.kubectl_ok(&["get", "pods", "-n", "luffy", "-l", selector, "-o", "json"]),
    )
    .expect("pods as JSON");
    let mut ips: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect();
    ips.sort();
    ips
}

#[test]
fn service_endpoints_follow_their_pods() {
    let server = ApiServer::start_with(&["--controllers"]);
    for n in ["k8s-slave1", "k8s-slave2"] {
        create_node(&server, n, &[], "4", "8Gi", 110);
    }
    let _kubelet = FakeKubelet::start(&server, &["k8s-slave1", "k8s-slave2"]);
    server.kubectl_ok(&["create", "namespace", "luffy"]);
    // Every namespace gets its default ServiceAccount and the cluster CA's ConfigMap.
    wait_until(&server, &["get", "serviceaccounts", "-n", "luffy"], |o| {
        o.lines().any(|l| l.starts_with("default "))
    });
    let ca = wait_until(
        &server,
        &[
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "luffy",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ],
        |o| o.starts_with("-----BEGIN CERTIFICATE-----"),
    );
    assert!(ca.trim_end().ends_with("-----END CERTIFICATE-----"), "{ca}");
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: myblog, namespace: luffy}
spec:
  replicas: 1
  selector: {matchLabels: {app: myblog}}
  template:
    metadata: {labels: {app: myblog}}
    spec:
      containers:
      - name: myblog
        image: 172.21.51.143:5000/myblog:v1
        ports: [{containerPort: 8002}]
---
apiVersion: v1
kind: Service
metadata: {name: myblog, namespace: luffy}
spec:
  ports:
  - port: 80
    protocol: TCP
    targetPort: 8002
  selector: {app: myblog}
  type: ClusterIP
"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    server.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/myblog",
        "-n",
        "luffy",
        "--timeout=60s",
    ]);
    let ip = pod_ips(&server, "app=myblog").pop().expect("a pod IP");
    let get = wait_until(
        &server,
        &["get", "endpoints", "myblog", "-n", "luffy"],
        |o| o.contains(&format!("{ip}:8002")),
    );
    assert!(
        get.lines()
            .nth(1)
            .unwrap_or_default()
            .starts_with(&format!("myblog   {ip}:8002")),
        "{get}"
    );
    let describe = server.kubectl_ok(&["describe", "svc", "myblog", "-n", "luffy"]);
    assert_eq!(
        field(&describe, "Endpoints"),
        format!("{ip}:8002"),
        "{describe}"
    );
    assert_eq!(field(&describe, "TargetPort"), "8002/TCP", "{describe}");

    // Scaled to two: both addresses, sorted, comma-separated.
    server.kubectl_ok(&["scale", "deploy", "myblog", "-n", "luffy", "--replicas=2"]);
    server.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/myblog",
        "-n",
        "luffy",
        "--timeout=60s",
    ]);
    let ips = pod_ips(&server, "app=myblog");
    assert_eq!(ips.len(), 2);
    let want = format!("{}:8002,{}:8002", ips[0], ips[1]);
    wait_until(
        &server,
        &["describe", "svc", "myblog", "-n", "luffy"],
        |o| field(o, "Endpoints") == want,
    );
    let slices: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "endpointslices",
        "-n",
        "luffy",
        "-l",
        "kubernetes.io/service-name=myblog",
        "-o",
        "json",
    ]))
    .expect("slices as JSON");
    let slice = &slices["items"][0];
    assert_eq!(
        slices["items"].as_array().map(Vec::len),
        Some(1),
        "{slices}"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["port"], 8002);
    assert_eq!(
        slice["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{slice}"
    );
    assert_eq!(slice["endpoints"][0]["conditions"]["ready"], true);
    assert_eq!(slice["endpoints"][0]["targetRef"]["kind"], "Pod");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );

    // A pod that is not ready is listed as not ready, not as an address to send traffic to.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: broken, namespace: luffy, labels: {app: myblog}}\nspec:\n  containers: [{name: c, image: example/unready:1, ports: [{containerPort: 8002}]}]\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let ep: Value = serde_json::from_str(&wait_until(
        &server,
        &["get", "endpoints", "myblog", "-n", "luffy", "-o", "json"],
        |o| o.contains("notReadyAddresses"),
    ))
    .expect("endpoints as JSON");
    assert_eq!(
        ep["subsets"][0]["addresses"].as_array().map(Vec::len),
        Some(2),
        "{ep}"
    );
    assert_eq!(
        ep["subsets"][0]["notReadyAddresses"][0]["targetRef"]["name"],
        "broken"
    );
    server.kubectl_ok(&["delete", "pod", "broken", "-n", "luffy"]);

    // The Service goes: its Endpoints and slices go too.
    server.kubectl_ok(&["delete", "svc", "myblog", "-n", "luffy"]);
    wait_until(
        &server,
        &[
            "get",
            "endpoints,endpointslices",
            "-n",
            "luffy",
            "-o",
            "name",
        ],
        |o| o.trim().is_empty(),
    );
}
