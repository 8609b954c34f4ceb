//! The seed tutorial's Service chapter through the real kubectl: a Service's Endpoints and
//! EndpointSlices follow its pods as they come, scale, turn unready and go; a Service without a
//! selector gets its hand-written Endpoints mirrored into EndpointSlices.

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

const MIRRORED: &str =
    "endpointslice.kubernetes.io/managed-by=endpointslicemirroring-controller.k8s.io";

/// The mirrored slices of every namespace, once `check` accepts them (30 s at most).
fn wait_mirrored(server: &ApiServer, what: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let list: Value = serde_json::from_str(&server.kubectl_ok(&[
            "get",
            "endpointslices",
            "-A",
            "-l",
            MIRRORED,
            "-o",
            "json",
        ]))
        .expect("slices as JSON");
        last = list["items"].as_array().cloned().unwrap_or_default();
        if check(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}; mirrored slices: {last:#?}");
}

/// (address, ready) of a slice's endpoints, sorted.
fn slice_endpoints(slice: &Value) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["addresses"][0].as_str().unwrap_or_default().to_string(),
                e["conditions"]["ready"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    out
}

fn endpoints_yaml(extra_labels: &str, subsets: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: db\n  namespace: mirror\n  labels: {{app: db{extra_labels}}}\nsubsets:\n{subsets}"
    )
}

#[test]
fn endpoints_of_a_service_without_selector_are_mirrored_into_slices() {
    let server = ApiServer::start_with(&["--controllers"]);
    server.kubectl_ok(&["create", "namespace", "mirror"]);
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: mirror}
spec:
  ports: [{name: pg, port: 5432, protocol: TCP, targetPort: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-by-hand
  namespace: mirror
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
endpoints: [{addresses: [192.0.2.99]}]
ports: [{name: pg, port: 5432}]
"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    let by_hand_version = server.kubectl_ok(&[
        "get",
        "endpointslice",
        "db-by-hand",
        "-n",
        "mirror",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let two = "- addresses: [{ip: 192.0.2.10, nodeName: db-host}, {ip: 192.0.2.11}]\n  ports: [{name: pg, port: 5432, protocol: TCP, appProtocol: postgresql}]\n";
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &endpoints_yaml("", two));
    assert!(out.status.success(), "{}", text(&out));

    // One slice, in the Service's namespace only (the `kubernetes` Endpoints carry skip-mirror).
    let slices = wait_mirrored(&server, "the mirrored slice", |s| {
        s.len() == 1 && slice_endpoints(&s[0]).len() == 2
    });
    let slice = &slices[0];
    assert_eq!(slice["metadata"]["namespace"], "mirror", "{slice:#}");
    let name = slice["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(name.starts_with("db-") && name != "db-by-hand", "{name}");
    let labels = &slice["metadata"]["labels"];
    assert_eq!(labels["kubernetes.io/service-name"], "db");
    assert_eq!(labels["app"], "db");
    assert_eq!(
        slice["metadata"]["ownerReferences"][0]["kind"], "Endpoints",
        "{slice:#}"
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["ports"][0]["name"], "pg");
    assert_eq!(slice["ports"][0]["port"], 5432);
    assert_eq!(slice["ports"][0]["protocol"], "TCP");
    assert_eq!(slice["ports"][0]["appProtocol"], "postgresql");
    assert_eq!(
        slice_endpoints(slice),
        [
            ("192.0.2.10".to_string(), true),
            ("192.0.2.11".to_string(), true)
        ]
    );
    let host = slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["addresses"][0] == "192.0.2.10")
        .map(|e| e["nodeName"].clone());
    assert_eq!(host, Some(Value::from("db-host")), "{slice:#}");

    // The Endpoints change: the same slice follows, a not-ready address as not ready.
    let changed = "- addresses: [{ip: 192.0.2.10}]\n  notReadyAddresses: [{ip: 192.0.2.12}]\n  ports: [{name: pg, port: 5432, protocol: TCP}]\n";
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &endpoints_yaml("", changed));
    assert!(out.status.success(), "{}", text(&out));
    let want = [
        ("192.0.2.10".to_string(), true),
        ("192.0.2.12".to_string(), false),
    ];
    let slices = wait_mirrored(&server, "the updated slice", |s| {
        s.len() == 1 && slice_endpoints(&s[0]) == want
    });
    assert_eq!(slices[0]["metadata"]["name"], name.as_str());

    // skip-mirror: the slice goes; without it again, a slice comes back.
    server.kubectl_ok(&[
        "label",
        "endpoints",
        "db",
        "-n",
        "mirror",
        "endpointslice.kubernetes.io/skip-mirror=true",
    ]);
    wait_mirrored(&server, "no slice under skip-mirror", <[Value]>::is_empty);
    server.kubectl_ok(&[
        "label",
        "endpoints",
        "db",
        "-n",
        "mirror",
        "endpointslice.kubernetes.io/skip-mirror-",
    ]);
    let slices = wait_mirrored(&server, "the slice back", |s| {
        s.len() == 1 && slice_endpoints(&s[0]) == want
    });
    let name = slices[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // The Endpoints go: so does the slice (NotFound, not any other error).
    server.kubectl_ok(&["delete", "endpoints", "db", "-n", "mirror"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = server.kubectl(&["get", "endpointslice", &name, "-n", "mirror"]);
        if !out.status.success() {
            assert!(
                text(&out).contains("(NotFound)"),
                "getting the slice failed otherwise: {}",
                text(&out)
            );
            break;
        }
        assert!(Instant::now() < deadline, "slice {name} still there");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Mirrored again, then the Service gets a selector: the endpoints controller's business.
    let out = server.kubectl_stdin(&["apply", "-f", "-"], &endpoints_yaml("", two));
    assert!(out.status.success(), "{}", text(&out));
    wait_mirrored(&server, "the slice once more", |s| s.len() == 1);
    server.kubectl_ok(&[
        "patch",
        "service",
        "db",
        "-n",
        "mirror",
        "-p",
        r#"{"spec":{"selector":{"app":"db"}}}"#,
    ]);
    wait_mirrored(
        &server,
        "no slice for a Service with a selector",
        <[Value]>::is_empty,
    );

    // The slice someone else manages was never touched.
    let by_hand: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "endpointslice",
        "db-by-hand",
        "-n",
        "mirror",
        "-o",
        "json",
    ]))
    .expect("slice as JSON");
    assert_eq!(by_hand["endpoints"][0]["addresses"][0], "192.0.2.99");
    assert_eq!(
        by_hand["metadata"]["resourceVersion"],
        by_hand_version.as_str()
    );
}
