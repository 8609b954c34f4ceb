//! The workload controllers beyond Deployments and Jobs through the real kubectl, against the API
//! server with its controllers (`kcluster node apiserver --controllers`), Node objects and the
//! fake kubelet (see controllers_support): ReplicationControllers, DaemonSets and StatefulSets.

mod common;
mod controllers_support;

use std::time::{Duration, Instant};

use common::*;
use controllers_support::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn create(server: &ApiServer, yaml: &str) {
    let out = server.kubectl_stdin(&["create", "-f", "-"], yaml);
    assert!(out.status.success(), "create failed: {}", text(&out));
}

fn json(server: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).expect("kubectl printed JSON")
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Pods matching a label selector that are not being deleted, sorted by name.
fn live_pods(server: &ApiServer, selector: &str) -> Vec<Value> {
    let list = json(server, &["pods", "-l", selector]);
    let mut pods: Vec<Value> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .collect();
    pods.sort_by_key(|p| name(p));
    pods
}

fn name(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn names(pods: &[Value]) -> Vec<String> {
    pods.iter().map(name).collect()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The first data row of `kubectl get`, split into columns.
fn row(server: &ApiServer, args: &[&str]) -> Vec<String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = server.kubectl_ok(&all);
    out.lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn event_messages(server: &ApiServer, object: &str) -> Vec<String> {
    let list = json(server, &["events"]);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == object)
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

const RC: &str = r#"
apiVersion: v1
kind: ReplicationController
metadata:
  name: nginx
spec:
  replicas: 3
  template:
    metadata:
      labels: {app: nginx}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
"#;

#[test]
fn replication_controllers_keep_their_replicas() {
    let server = ApiServer::start_with(&["--controllers"]);
    for n in ["n1", "n2"] {
        create_node(&server, n, &[], "4", "8Gi", 110);
    }
    let _kubelet = FakeKubelet::start(&server, &["n1", "n2"]);

    create(&server, RC);
    wait_for("3 ready replicas", || {
        row(&server, &["rc", "nginx"])[1..4] == ["3", "3", "3"]
    });
    let rc = json(&server, &["rc", "nginx"]);
    assert_eq!(rc["spec"]["selector"]["app"], "nginx", "{rc}");
    assert_eq!(rc["status"]["readyReplicas"], 3, "{rc}");
    assert_eq!(rc["status"]["availableReplicas"], 3, "{rc}");
    assert_eq!(rc["status"]["fullyLabeledReplicas"], 3, "{rc}");
    assert_eq!(rc["status"]["observedGeneration"], 1, "{rc}");
    let pods = live_pods(&server, "app=nginx");
    assert_eq!(pods.len(), 3);
    for p in &pods {
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicationController", "{p}");
        assert_eq!(owner["apiVersion"], "v1", "{p}");
        assert_eq!(owner["controller"], true, "{p}");
        assert!(name(p).starts_with("nginx-"), "{p}");
    }
    let events = event_messages(&server, "nginx");
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("SuccessfulCreate Created pod: nginx-")),
        "{events:?}"
    );

    // A deleted pod is replaced.
    let victim = name(&pods[0]);
    server.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    wait_for("a replacement pod", || {
        let now = live_pods(&server, "app=nginx");
        now.len() == 3 && !names(&now).contains(&victim) && now.iter().all(is_ready)
    });

    // kubectl scale goes through the scale subresource; the surplus goes.
    let out = server.kubectl_ok(&["scale", "rc", "nginx", "--replicas=1"]);
    assert!(out.contains("replicationcontroller/nginx scaled"), "{out}");
    wait_for("one replica", || {
        live_pods(&server, "app=nginx").len() == 1
            && row(&server, &["rc", "nginx"])[1..4] == ["1", "1", "1"]
    });
    let describe = server.kubectl_ok(&["describe", "rc", "nginx"]);
    assert!(describe.contains("Deleted pod: nginx-"), "{describe}");
    assert!(describe.contains("1 current / 1 desired"), "{describe}");

    // An orphan with matching labels is adopted instead of a new pod being created.
    server.kubectl_ok(&["scale", "rc", "nginx", "--replicas=2"]);
    wait_for("two replicas", || {
        live_pods(&server, "app=nginx").len() == 2
    });
    server.kubectl_ok(&["delete", "rc", "nginx", "--cascade=orphan"]);
    wait_for("the rc to go", || {
        !server.kubectl(&["get", "rc", "nginx"]).status.success()
    });
    create(&server, &RC.replace("replicas: 3", "replicas: 2"));
    wait_for("the orphans to be adopted", || {
        let pods = live_pods(&server, "app=nginx");
        pods.len() == 2
            && pods
                .iter()
                .all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController")
    });
    let rc = json(&server, &["rc", "nginx"]);
    let uid = rc["metadata"]["uid"].clone();
    assert!(
        live_pods(&server, "app=nginx")
            .iter()
            .all(|p| p["metadata"]["ownerReferences"][0]["uid"] == uid)
    );
}
