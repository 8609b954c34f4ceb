//! The scheduler through the real kubectl: a nodeSelector that matches no node leaves the pod
//! Pending with kube-scheduler's FailedScheduling message until `kubectl label node`; cordoned
//! and tainted nodes are avoided; requests beyond what is free, and host port clashes, are
//! reported in kube-scheduler's words and resolved when capacity comes back.

mod common;
mod controllers_support;

use std::time::{Duration, Instant};

use common::*;
use controllers_support::*;
use serde_json::Value;

const NODES: [&str; 3] = ["k8s-master", "k8s-slave1", "k8s-slave2"];

fn pod_json(server: &ApiServer, name: &str) -> Value {
    serde_json::from_str(&server.kubectl_ok(&["get", "pod", name, "-o", "json"]))
        .expect("kubectl printed JSON")
}

fn node_of(server: &ApiServer, name: &str) -> String {
    pod_json(server, name)["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The pod's FailedScheduling messages, as `kubectl get events` has them.
fn failed_scheduling(server: &ApiServer, pod: &str) -> Vec<String> {
    let selector = format!("involvedObject.name={pod}");
    let list: Value = serde_json::from_str(&server.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &selector,
        "-o",
        "json",
    ]))
    .expect("events as JSON");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == "FailedScheduling")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_failed(server: &ApiServer, pod: &str, message: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = failed_scheduling(server, pod);
        if seen.iter().any(|m| m == message) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no FailedScheduling for {pod} saying\n  {message}\nonly:\n  {}",
            seen.join("\n  ")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn run_pod(server: &ApiServer, yaml: &str) {
    let out = server.kubectl_stdin(&["create", "-f", "-"], yaml);
    assert!(out.status.success(), "create failed: {}", text(&out));
}

fn cpu_pod(name: &str, cpu: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {{requests: {{cpu: \"{cpu}\"}}}}\n"
    )
}

#[test]
fn scheduling_follows_selectors_cordons_taints_and_capacity() {
    let server = ApiServer::start_with(&["--controllers"]);
    for n in NODES {
        create_node(&server, n, &[], "4", "8Gi", 110);
    }
    let _kubelet = FakeKubelet::start(&server, &NODES);

    // The seed's pod pinned by nodeSelector to a label no node has yet.
    run_pod(
        &server,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: myblog, labels: {component: myblog}}
spec:
  nodeSelector: {component: mysql}
  containers:
  - name: mysql
    image: mysql:5.7
    ports: [{containerPort: 3306}]
"#,
    );
    wait_failed(
        &server,
        "myblog",
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
    );
    let pod = pod_json(&server, "myblog");
    assert_eq!(pod["status"]["phase"], "Pending");
    let scheduled = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap_or_default();
    assert_eq!(scheduled["status"], "False", "{pod}");
    assert_eq!(scheduled["reason"], "Unschedulable");
    let describe = server.kubectl_ok(&["describe", "pod", "myblog"]);
    assert!(
        describe.contains("Warning  FailedScheduling")
            && describe.contains("default-scheduler  0/3 nodes are available"),
        "{describe}"
    );
    let get = server.kubectl_ok(&["get", "pod", "myblog"]);
    assert!(get.contains("Pending"), "{get}");

    server.kubectl_ok(&["label", "node", "k8s-slave1", "component=mysql"]);
    wait_for("myblog to be scheduled", Duration::from_secs(30), || {
        node_of(&server, "myblog") == "k8s-slave1"
    });
    wait_for("myblog to run", Duration::from_secs(30), || {
        server
            .kubectl_ok(&["get", "pod", "myblog"])
            .contains("Running")
    });
    wait_output(
        "the Scheduled event",
        || {
            server.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=myblog",
            ])
        },
        &["Successfully assigned default/myblog to k8s-slave1"],
    );

    // Cordoned: no new pod goes there.
    server.kubectl_ok(&["cordon", "k8s-slave2"]);
    let nodes = server.kubectl_ok(&["get", "nodes"]);
    assert!(nodes.contains("Ready,SchedulingDisabled"), "{nodes}");
    // The node lifecycle controller's TaintNodesByCondition, as `kubectl describe node` shows it.
    wait_for("the unschedulable taint", Duration::from_secs(15), || {
        server
            .kubectl_ok(&["describe", "node", "k8s-slave2"])
            .contains("Taints:             node.kubernetes.io/unschedulable:NoSchedule")
    });
    server.kubectl_ok(&[
        "create",
        "deployment",
        "spread",
        "--image=nginx",
        "--replicas=6",
    ]);
    wait_for("6 spread pods bound", Duration::from_secs(30), || {
        let out = server.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=spread",
            "-o",
            "wide",
            "--no-headers",
        ]);
        out.lines().count() == 6 && out.lines().all(|l| l.contains("k8s-"))
    });
    let wide = server.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=spread",
        "-o",
        "wide",
        "--no-headers",
    ]);
    assert!(
        !wide.contains("k8s-slave2"),
        "a cordoned node got pods:\n{wide}"
    );
    assert_eq!(
        wide.matches("k8s-master").count(),
        3,
        "spread evenly:\n{wide}"
    );
    server.kubectl_ok(&["delete", "deployment", "spread"]);
    server.kubectl_ok(&["delete", "pods", "-l", "app=spread", "--wait=false"]);

    // A taint repels pods without a toleration.
    server.kubectl_ok(&[
        "taint",
        "node",
        "k8s-master",
        "node-role.kubernetes.io/control-plane:NoSchedule",
    ]);
    run_pod(
        &server,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: pinned}\nspec:\n  nodeSelector: {kubernetes.io/hostname: k8s-master}\n  containers: [{name: c, image: busybox}]\n",
    );
    wait_failed(
        &server,
        "pinned",
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
         1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 1 node(s) were unschedulable. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
    );
    server.kubectl_ok(&[
        "taint",
        "node",
        "k8s-master",
        "node-role.kubernetes.io/control-plane:NoSchedule-",
    ]);
    wait_for(
        "pinned to be scheduled once the taint is gone",
        Duration::from_secs(30),
        || node_of(&server, "pinned") == "k8s-master",
    );
    server.kubectl_ok(&["uncordon", "k8s-slave2"]);

    // More cpu than any node has at all, and more than is left.
    run_pod(&server, &cpu_pod("huge", "10"));
    wait_failed(
        &server,
        "huge",
        "0/3 nodes are available: 3 Insufficient cpu. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
    );
    for (i, n) in NODES.iter().enumerate() {
        let name = format!("filler-{i}");
        run_pod(
            &server,
            &format!(
                "{}  nodeSelector: {{kubernetes.io/hostname: {n}}}\n",
                cpu_pod(&name, "3")
            ),
        );
        wait_for(&format!("{name} on {n}"), Duration::from_secs(30), || {
            node_of(&server, &name) == *n
        });
    }
    run_pod(&server, &cpu_pod("late", "3"));
    wait_failed(
        &server,
        "late",
        "0/3 nodes are available: 3 Insufficient cpu. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
    );
    server.kubectl_ok(&["delete", "pod", "filler-1", "--wait=false"]);
    wait_for(
        "late to take filler-1's place",
        Duration::from_secs(30),
        || node_of(&server, "late") == "k8s-slave1",
    );

    // Host ports: the second pod asking for 8080 on the same node cannot go there.
    let hostport = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: k8s-slave2}}\n  containers:\n  - name: c\n    image: nginx\n    ports: [{{containerPort: 80, hostPort: 8080}}]\n"
        )
    };
    run_pod(&server, &hostport("port-a"));
    wait_for("port-a bound", Duration::from_secs(30), || {
        node_of(&server, "port-a") == "k8s-slave2"
    });
    run_pod(&server, &hostport("port-b"));
    wait_failed(
        &server,
        "port-b",
        "0/3 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, \
         2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, \
         2 Preemption is not helpful for scheduling.",
    );
}

fn pods_on(server: &ApiServer, selector: &str) -> Vec<(String, String)> {
    let list: Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "pods", "-l", selector, "-o", "json"]))
            .expect("pods as JSON");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
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
            )
        })
        .collect()
}

#[test]
fn affinity_spread_and_preemption() {
    let server = ApiServer::start_with(&["--controllers"]);
    create_node(
        &server,
        "n1",
        &[("topology.kubernetes.io/zone", "a")],
        "4",
        "8Gi",
        110,
    );
    create_node(
        &server,
        "n2",
        &[("topology.kubernetes.io/zone", "b")],
        "4",
        "8Gi",
        110,
    );
    create_node(
        &server,
        "n3",
        &[("topology.kubernetes.io/zone", "b")],
        "4",
        "8Gi",
        110,
    );
    let _kubelet = FakeKubelet::start(&server, &["n1", "n2", "n3"]);

    // Required anti-affinity on hostname: one per node, the fourth waits.
    run_pod(
        &server,
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: solo}
spec:
  replicas: 4
  selector: {matchLabels: {app: solo}}
  template:
    metadata: {labels: {app: solo}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: solo}}
            topologyKey: kubernetes.io/hostname
      containers: [{name: c, image: nginx}]
"#,
    );
    wait_for(
        "three solo pods on three nodes",
        Duration::from_secs(30),
        || {
            let pods = pods_on(&server, "app=solo");
            let mut nodes: Vec<String> = pods
                .iter()
                .map(|p| p.1.clone())
                .filter(|n| !n.is_empty())
                .collect();
            nodes.sort();
            nodes.dedup();
            pods.len() == 4 && nodes.len() == 3
        },
    );
    let pending = pods_on(&server, "app=solo")
        .into_iter()
        .find(|p| p.1.is_empty())
        .map(|p| p.0)
        .expect("one solo pod pending");
    wait_failed(
        &server,
        &pending,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.",
    );
    server.kubectl_ok(&["delete", "deployment", "solo"]);

    // Required affinity: the follower goes where the leader is.
    run_pod(
        &server,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: leader, labels: {app: leader}}\nspec:\n  nodeSelector: {kubernetes.io/hostname: n2}\n  containers: [{name: c, image: nginx}]\n",
    );
    run_pod(
        &server,
        r#"
apiVersion: v1
kind: Pod
metadata: {name: follower}
spec:
  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector: {matchLabels: {app: leader}}
        topologyKey: kubernetes.io/hostname
  containers: [{name: c, image: nginx}]
"#,
    );
    wait_for(
        "the follower next to its leader",
        Duration::from_secs(30),
        || node_of(&server, "follower") == "n2",
    );

    // Topology spread over zones: a has one node, b two; maxSkew 1 keeps them level.
    run_pod(
        &server,
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: zoned}
spec:
  replicas: 4
  selector: {matchLabels: {app: zoned}}
  template:
    metadata: {labels: {app: zoned}}
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {matchLabels: {app: zoned}}
      containers: [{name: c, image: nginx}]
"#,
    );
    wait_for("four zoned pods bound", Duration::from_secs(30), || {
        let pods = pods_on(&server, "app=zoned");
        pods.len() == 4 && pods.iter().all(|p| !p.1.is_empty())
    });
    let in_a = pods_on(&server, "app=zoned")
        .iter()
        .filter(|p| p.1 == "n1")
        .count();
    assert_eq!(
        in_a,
        2,
        "zone a (n1) takes half: {:?}",
        pods_on(&server, "app=zoned")
    );
    server.kubectl_ok(&["delete", "deployment", "zoned"]);

    // Preemption: a high-priority pod evicts a low-priority one to make room.
    run_pod(
        &server,
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n",
    );
    for n in ["n1", "n2", "n3"] {
        let name = format!("low-{n}");
        run_pod(
            &server,
            &format!(
                "{}  nodeSelector: {{kubernetes.io/hostname: {n}}}\n",
                cpu_pod(&name, "3")
            ),
        );
        wait_for(&format!("{name} bound"), Duration::from_secs(30), || {
            node_of(&server, &name) == n
        });
    }
    run_pod(
        &server,
        &format!("{}  priorityClassName: high\n", cpu_pod("vip", "3")),
    );
    wait_for(
        "vip to be scheduled after preempting",
        Duration::from_secs(30),
        || !node_of(&server, "vip").is_empty(),
    );
    let node = node_of(&server, "vip");
    let victim = format!("low-{node}");
    wait_output(
        "the victim's Preempted event",
        || {
            server.kubectl_ok(&[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={victim}"),
            ])
        },
        &["Preempted", &format!("on node {node}")],
    );
    let out = server.kubectl(&["get", "pod", &victim]);
    assert!(gone(&out), "the victim is deleted: {}", text(&out));
    let vip = pod_json(&server, "vip");
    assert_eq!(vip["spec"]["priority"], 1000);
    let failed = failed_scheduling(&server, "vip");
    assert!(
        failed
            .iter()
            .any(|m| m == "0/3 nodes are available: 3 Insufficient cpu."),
        "{failed:?}"
    );
}
