//! The seed tutorial's Deployment chapter through the real kubectl, against the API server with
//! its controllers and scheduler (`kcluster node apiserver --controllers`), three Node objects
//! and the test's fake kubelet (see controllers_support): creation, self-healing, scaling, a
//! rolling update with the documented ScalingReplicaSet sequence, rollout status and history
//! with change-cause, undo to a revision, Recreate, pause and resume.

mod common;
mod controllers_support;

use std::time::{Duration, Instant};

use common::*;
use controllers_support::*;
use serde_json::Value;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: myblog
  namespace: luffy
spec:
  replicas: 2
  selector:
    matchLabels:
      app: myblog
  template:
    metadata:
      labels:
        app: myblog
    spec:
      containers:
      - name: myblog
        image: 172.21.51.143:5000/myblog:v1
        imagePullPolicy: IfNotPresent
        ports:
        - containerPort: 8002
        resources:
          requests: {memory: 100Mi, cpu: 50m}
          limits: {memory: 500Mi, cpu: 100m}
"#;

fn wait_until(
    server: &ApiServer,
    args: &[&str],
    timeout: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        let out = server.kubectl(args);
        last = text(&out);
        if out.status.success() && check(&stdout(&out)) {
            return stdout(&out);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("timed out after {timeout:?} waiting on kubectl {args:?}; last output:\n{last}");
}

fn json(server: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).expect("kubectl printed JSON")
}

/// The deployment's pods that are not being deleted: (name, node, ready).
fn pods(server: &ApiServer) -> Vec<(String, String, bool)> {
    let list = json(server, &["pods", "-n", "luffy", "-l", "app=myblog"]);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                ready,
            )
        })
        .collect()
}

/// ScalingReplicaSet messages for the deployment, oldest first (event names carry the time).
fn scaling_events(server: &ApiServer) -> Vec<String> {
    let list = json(server, &["events", "-n", "luffy"]);
    let mut events: Vec<(String, String)> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["reason"] == "ScalingReplicaSet" && e["involvedObject"]["name"] == "myblog")
        .map(|e| {
            (
                e["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, m)| m).collect()
}

/// ReplicaSet name → (revision, spec replicas).
fn replica_sets(server: &ApiServer) -> Vec<(String, String, i64)> {
    let list = json(server, &["rs", "-n", "luffy"]);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|rs| {
            (
                rs["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                rs["spec"]["replicas"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn rollout_status(server: &ApiServer) -> String {
    server.kubectl_ok(&[
        "rollout",
        "status",
        "deployment/myblog",
        "-n",
        "luffy",
        "--timeout=90s",
    ])
}

#[test]
fn deployment_chapter_of_the_seed_tutorial() {
    let server = ApiServer::start_with(&["--controllers"]);
    for n in ["k8s-slave1", "k8s-slave2", "k8s-master"] {
        create_node(&server, n, &[], "4", "8Gi", 110);
    }
    let _kubelet = FakeKubelet::start(&server, &["k8s-slave1", "k8s-slave2", "k8s-master"]);
    server.kubectl_ok(&["create", "namespace", "luffy"]);

    // Create with --record: the change-cause annotation goes onto revision 1.
    let out = server.kubectl_stdin(&["create", "-f", "-", "--record"], DEPLOYMENT);
    assert!(out.status.success(), "create failed: {}", text(&out));
    let status = rollout_status(&server);
    assert!(status.contains("successfully rolled out"), "{status}");
    let get = server.kubectl_ok(&["get", "deploy", "-n", "luffy"]);
    let row: Vec<&str> = get
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["myblog", "2/2", "2", "2"], "{get}");
    let first = pods(&server);
    assert_eq!(first.len(), 2, "{first:?}");
    assert!(
        first
            .iter()
            .all(|(_, node, ready)| !node.is_empty() && *ready),
        "{first:?}"
    );
    assert_ne!(
        first[0].1, first[1].1,
        "replicas of one owner spread over nodes: {first:?}"
    );
    let rs = replica_sets(&server);
    assert_eq!(rs.len(), 1, "{rs:?}");
    let (rs1, rev, _) = rs[0].clone();
    assert_eq!(rev, "1");
    let hash = rs1
        .strip_prefix("myblog-")
        .expect("RS named after the deployment");
    let labels = server.kubectl_ok(&["get", "pods", "-n", "luffy", "--show-labels"]);
    assert!(
        labels.contains(&format!("pod-template-hash={hash}")),
        "{labels}"
    );
    wait_output(
        "the rollout's events",
        || server.kubectl_ok(&["get", "events", "-n", "luffy"]),
        &[
            "SuccessfulCreate",
            "Created pod: myblog-",
            "Successfully assigned luffy/myblog-",
            &format!("Scaled up replica set {rs1} from 0 to 2"),
        ],
    );

    // Self-healing: a deleted pod is replaced.
    let victim = first[0].0.clone();
    server.kubectl_ok(&["delete", "pod", "-n", "luffy", &victim, "--wait=false"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = pods(&server);
        if now.len() == 2
            && now
                .iter()
                .all(|(n, node, ready)| *n != victim && !node.is_empty() && *ready)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod {victim} was not replaced: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // kubectl scale, up and back down.
    server.kubectl_ok(&["scale", "deploy", "myblog", "-n", "luffy", "--replicas=3"]);
    wait_until(
        &server,
        &["get", "deploy", "myblog", "-n", "luffy"],
        Duration::from_secs(60),
        |o| o.contains(" 3/3 "),
    );
    server.kubectl_ok(&["scale", "deploy", "myblog", "-n", "luffy", "--replicas=2"]);
    wait_until(
        &server,
        &["get", "deploy", "myblog", "-n", "luffy"],
        Duration::from_secs(60),
        |o| o.contains(" 2/2 "),
    );
    assert!(
        scaling_events(&server).contains(&format!("Scaled down replica set {rs1} from 3 to 2"))
    );

    // Rolling update with the seed's default strategy: new to 1, old to 1, new to 2, old to 0.
    let before = scaling_events(&server).len();
    server.kubectl_ok(&[
        "set",
        "image",
        "deploy",
        "myblog",
        "-n",
        "luffy",
        "myblog=172.21.51.143:5000/myblog:v2",
        "--record",
    ]);
    let status = rollout_status(&server);
    assert!(status.contains("successfully rolled out"), "{status}");
    let rs_now = replica_sets(&server);
    let rs2 = rs_now
        .iter()
        .find(|(n, _, _)| *n != rs1)
        .map(|(n, _, _)| n.clone())
        .expect("a second replica set");
    wait_eq(
        "the rolling update's scaling events",
        || {
            scaling_events(&server)
                .get(before..)
                .map(<[String]>::to_vec)
        },
        Some(vec![
            format!("Scaled up replica set {rs2} from 0 to 1"),
            format!("Scaled down replica set {rs1} from 2 to 1"),
            format!("Scaled up replica set {rs2} from 1 to 2"),
            format!("Scaled down replica set {rs1} from 1 to 0"),
        ]),
    );
    let describe = server.kubectl_ok(&["describe", "deploy", "myblog", "-n", "luffy"]);
    for needle in [
        "StrategyType:           RollingUpdate",
        "RollingUpdateStrategy:  25% max unavailable, 25% max surge",
        &format!("NewReplicaSet:   {rs2} (2/2 replicas created)"),
        "Available      True    MinimumReplicasAvailable",
        "Progressing    True    NewReplicaSetAvailable",
        &format!("Scaled up replica set {rs2} from 0 to 1"),
    ] {
        assert!(describe.contains(needle), "no {needle:?} in:\n{describe}");
    }
    let get_rs = server.kubectl_ok(&["get", "rs", "-n", "luffy"]);
    assert!(get_rs.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()[..4] == [rs1.as_str(), "0", "0", "0"]), "{get_rs}");
    assert!(get_rs.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()[..4] == [rs2.as_str(), "2", "2", "2"]), "{get_rs}");

    // History with change-cause, then undo to revision 1.
    let history = server.kubectl_ok(&["rollout", "history", "deploy", "myblog", "-n", "luffy"]);
    let lines: Vec<String> = history
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        lines.contains(&"REVISION CHANGE-CAUSE".to_string()),
        "{history}"
    );
    // kubectl records its own command line (with the --context the test passes).
    assert!(
        lines.iter().any(
            |l| l.starts_with("1 kubectl create ") && l.ends_with("--filename=- --record=true")
        ),
        "{history}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("2 kubectl set image deploy myblog")
                && l.contains("--record=true")),
        "{history}"
    );
    let undo = server.kubectl_ok(&[
        "rollout",
        "undo",
        "deploy",
        "myblog",
        "-n",
        "luffy",
        "--to-revision=1",
    ]);
    assert!(undo.contains("rolled back"), "{undo}");
    rollout_status(&server);
    let after_undo = replica_sets(&server);
    let revision_of = |name: &str| {
        after_undo
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, r, _)| r.clone())
    };
    assert_eq!(revision_of(&rs1).as_deref(), Some("3"), "{after_undo:?}");
    assert_eq!(
        after_undo.iter().find(|(n, _, _)| *n == rs1).map(|r| r.2),
        Some(2)
    );
    let rs1_json = json(&server, &["rs", &rs1, "-n", "luffy"]);
    assert_eq!(
        rs1_json["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"],
        "1"
    );
    let history = server.kubectl_ok(&["rollout", "history", "deploy", "myblog", "-n", "luffy"]);
    assert!(history.lines().any(|l| l.starts_with("3 ")), "{history}");
    assert!(
        !history.lines().any(|l| l.starts_with("1 ")),
        "revision 1 became 3:\n{history}"
    );
    let deploy = json(&server, &["deploy", "myblog", "-n", "luffy"]);
    assert_eq!(
        deploy["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "172.21.51.143:5000/myblog:v1"
    );

    // Recreate: every old pod is gone before the new replica set scales up.
    server.kubectl_ok(&[
        "patch",
        "deploy",
        "myblog",
        "-n",
        "luffy",
        "--type=merge",
        "-p",
        r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}"#,
    ]);
    let before = scaling_events(&server).len();
    server.kubectl_ok(&[
        "set",
        "image",
        "deploy",
        "myblog",
        "-n",
        "luffy",
        "myblog=172.21.51.143:5000/myblog:v3",
    ]);
    rollout_status(&server);
    let rs3 = replica_sets(&server)
        .into_iter()
        .find(|(_, rev, _)| rev == "4")
        .map(|(n, _, _)| n)
        .expect("revision 4");
    wait_eq(
        "the recreate's scaling events",
        || {
            scaling_events(&server)
                .get(before..)
                .map(<[String]>::to_vec)
        },
        Some(vec![
            format!("Scaled down replica set {rs1} from 2 to 0"),
            format!("Scaled up replica set {rs3} from 0 to 2"),
        ]),
    );

    // Pause: a template change makes no new replica set until resumed.
    server.kubectl_ok(&["rollout", "pause", "deploy", "myblog", "-n", "luffy"]);
    server.kubectl_ok(&[
        "set",
        "image",
        "deploy",
        "myblog",
        "-n",
        "luffy",
        "myblog=172.21.51.143:5000/myblog:v4",
    ]);
    // Once the controller has seen the new template, it has decided what to do with it.
    wait_until(
        &server,
        &[
            "get",
            "deploy",
            "myblog",
            "-n",
            "luffy",
            "-o",
            "jsonpath={.metadata.generation} {.status.observedGeneration}",
        ],
        Duration::from_secs(30),
        |o| o.split_once(' ').is_some_and(|(g, seen)| g == seen),
    );
    assert!(
        !replica_sets(&server).iter().any(|(_, rev, _)| rev == "5"),
        "paused deployments do not roll out"
    );
    let paused = json(&server, &["deploy", "myblog", "-n", "luffy"]);
    let progressing = paused["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap_or_default();
    assert_eq!(progressing["reason"], "DeploymentPaused", "{paused}");
    assert_eq!(progressing["status"], "Unknown");
    server.kubectl_ok(&["rollout", "resume", "deploy", "myblog", "-n", "luffy"]);
    let status = rollout_status(&server);
    assert!(status.contains("successfully rolled out"), "{status}");
    assert!(
        replica_sets(&server)
            .iter()
            .any(|(_, rev, r)| rev == "5" && *r == 2)
    );
    let images: Vec<String> = json(&server, &["pods", "-n", "luffy", "-l", "app=myblog"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(images, ["172.21.51.143:5000/myblog:v4"; 2]);
}

#[test]
fn progress_deadline_restart_and_min_ready_seconds() {
    let server = ApiServer::start_with(&["--controllers"]);
    create_node(&server, "n1", &[], "4", "8Gi", 110);
    let _kubelet = FakeKubelet::start(&server, &["n1"]);

    // Pods that never become ready (the fake kubelet keeps "unready" images not ready).
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: slow}
spec:
  replicas: 1
  progressDeadlineSeconds: 3
  selector: {matchLabels: {app: slow}}
  template:
    metadata: {labels: {app: slow}}
    spec:
      containers: [{name: c, image: example/unready:1}]
"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = server.kubectl(&["rollout", "status", "deployment/slow", "--timeout=60s"]);
    assert!(
        !out.status.success(),
        "rollout status must fail: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("deployment \"slow\" exceeded its progress deadline"),
        "{}",
        text(&out)
    );
    let d = json(&server, &["deploy", "slow"]);
    let progressing = d["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing")
        .cloned()
        .unwrap_or_default();
    assert_eq!(progressing["status"], "False", "{d}");
    assert_eq!(progressing["reason"], "ProgressDeadlineExceeded");
    assert!(
        progressing["message"]
            .as_str()
            .unwrap_or_default()
            .ends_with("has timed out progressing."),
        "{progressing}"
    );

    // A fixed image rolls out and the deadline is forgotten.
    server.kubectl_ok(&["set", "image", "deployment/slow", "c=example/ready:2"]);
    let status = server.kubectl_ok(&["rollout", "status", "deployment/slow", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");

    // kubectl rollout restart: a new revision with the same image.
    server.kubectl_ok(&["rollout", "restart", "deployment/slow"]);
    let status = server.kubectl_ok(&["rollout", "status", "deployment/slow", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let history = server.kubectl_ok(&["rollout", "history", "deployment/slow"]);
    assert!(history.lines().any(|l| l.starts_with("3 ")), "{history}");

    // minReadySeconds: ready pods count as available only after that long. First the running
    // pod, once the controller has seen the setting (it may have to wait out the time itself).
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "slow",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5,"progressDeadlineSeconds":600}}"#,
    ]);
    wait_until(
        &server,
        &[
            "get",
            "deploy",
            "slow",
            "-o",
            "jsonpath={.metadata.generation} {.status.observedGeneration} {.status.availableReplicas}",
        ],
        Duration::from_secs(30),
        |o| {
            let f: Vec<&str> = o.split(' ').collect();
            f.len() == 3 && f[0] == f[1] && f[2] == "1"
        },
    );
    // Then a second pod: seen ready but not yet available, then available.
    server.kubectl_ok(&["scale", "deployment", "slow", "--replicas=2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let o = server.kubectl_ok(&[
            "get",
            "deploy",
            "slow",
            "-o",
            "jsonpath={.status.readyReplicas} {.status.availableReplicas}",
        ]);
        if seen.last() != Some(&o) {
            seen.push(o.clone());
        }
        if o == "2 2" {
            break;
        }
        assert!(Instant::now() < deadline, "never 2 available: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        seen.iter().any(|o| o == "2 1"),
        "the new pod must be ready before it is available: {seen:?}"
    );
}

#[test]
fn scaling_in_the_middle_of_a_rollout_is_proportional() {
    let server = ApiServer::start_with(&["--controllers"]);
    create_node(&server, "n1", &[], "16", "32Gi", 110);
    let _kubelet = FakeKubelet::start(&server, &["n1"]);
    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=example/ready:1",
        "--replicas=2",
    ]);
    server.kubectl_ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let old = json(&server, &["rs", "-l", "app=web"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // The new template never becomes ready: the rollout stalls with old 2, new 1.
    server.kubectl_ok(&["set", "image", "deployment/web", "ready=example/unready:2"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let sets = json(&server, &["rs", "-l", "app=web"]);
        let new = sets["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|rs| rs["metadata"]["name"] != old.as_str() && rs["status"]["replicas"] == 1)
            .and_then(|rs| rs["metadata"]["name"].as_str().map(str::to_string));
        if let Some(n) = new {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "the new replica set never got its pod"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // 2 → 10 with 25% surge: 13 allowed, 3 there; the 10 more are shared in proportion to the
    // sets' sizes (old 2 of 3 → 9, new 1 of 3 → 4). Then the rollout takes its next legal step:
    // maxUnavailable is now 2, so with the 9 old pods available one old may go for one new (8/5),
    // and there it stays, the new pods never being ready.
    server.kubectl_ok(&["scale", "deployment", "web", "--replicas=10"]);
    wait_until(
        &server,
        &[
            "get",
            "rs",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.replicas} {end}",
        ],
        Duration::from_secs(30),
        |o| o.contains(&format!("{old}=8")) && o.contains(&format!("{new}=5")),
    );
    wait_eq(
        "the proportional scaling events",
        || {
            let events = scaling_events_of(&server, "default", "web");
            events[events.len().saturating_sub(4)..].to_vec()
        },
        vec![
            format!("Scaled up replica set {old} from 2 to 9"),
            format!("Scaled up replica set {new} from 1 to 4"),
            format!("Scaled down replica set {old} from 9 to 8"),
            format!("Scaled up replica set {new} from 4 to 5"),
        ],
    );
}

fn scaling_events_of(server: &ApiServer, namespace: &str, deployment: &str) -> Vec<String> {
    let list = json(server, &["events", "-n", namespace]);
    let mut events: Vec<(String, String)> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["reason"] == "ScalingReplicaSet" && e["involvedObject"]["name"] == deployment)
        .map(|e| {
            (
                e["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, m)| m).collect()
}
