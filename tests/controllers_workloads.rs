//! The workload controllers beyond Deployments and Jobs through the real kubectl, against the API
//! server with its controllers (`kcluster node apiserver --controllers`), Node objects and the
//! fake kubelet (see controllers_support): ReplicationControllers, DaemonSets and StatefulSets.

mod common;
mod controllers_support;

use std::time::Duration;

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
    pods.sort_by_key(name);
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

/// An object's events in the order they were first written (client-go names events
/// `<object>.<unix nanoseconds in hex>`).
fn events_in_order(server: &ApiServer, object: &str) -> Vec<String> {
    let list = json(server, &["events"]);
    let mut events: Vec<(String, String)> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == object)
        .map(|e| {
            (
                name(e),
                format!(
                    "{} {}",
                    e["reason"].as_str().unwrap_or_default(),
                    e["message"].as_str().unwrap_or_default()
                ),
            )
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, m)| m).collect()
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
    wait_for("3 ready replicas", WAIT, || {
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
    wait_for("the controller's SuccessfulCreate event", WAIT, || {
        event_messages(&server, "nginx")
            .iter()
            .any(|e| e.starts_with("SuccessfulCreate Created pod: nginx-"))
    });

    // A deleted pod is replaced.
    let victim = name(&pods[0]);
    server.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    wait_for("a replacement pod", WAIT, || {
        let now = live_pods(&server, "app=nginx");
        now.len() == 3 && !names(&now).contains(&victim) && now.iter().all(is_ready)
    });

    // kubectl scale goes through the scale subresource; the surplus goes.
    let out = server.kubectl_ok(&["scale", "rc", "nginx", "--replicas=1"]);
    assert!(out.contains("replicationcontroller/nginx scaled"), "{out}");
    wait_for("one replica", WAIT, || {
        live_pods(&server, "app=nginx").len() == 1
            && row(&server, &["rc", "nginx"])[1..4] == ["1", "1", "1"]
    });
    let describe = server.kubectl_ok(&["describe", "rc", "nginx"]);
    assert!(describe.contains("Deleted pod: nginx-"), "{describe}");
    assert!(describe.contains("1 current / 1 desired"), "{describe}");

    // An orphan with matching labels is adopted instead of a new pod being created.
    server.kubectl_ok(&["scale", "rc", "nginx", "--replicas=2"]);
    wait_for("two replicas", WAIT, || {
        live_pods(&server, "app=nginx").len() == 2
    });
    server.kubectl_ok(&["delete", "rc", "nginx", "--cascade=orphan"]);
    wait_for("the rc to go", WAIT, || {
        !server.kubectl(&["get", "rc", "nginx"]).status.success()
    });
    create(&server, &RC.replace("replicas: 3", "replicas: 2"));
    wait_for("the orphans to be adopted", WAIT, || {
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

const DS: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  annotations: {kubernetes.io/change-cause: first}
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: agent:1
"#;

/// (pod name, node it is pinned to, controller-revision-hash, image) for live agent pods.
fn agent_pods(server: &ApiServer, selector: &str) -> Vec<(String, String, String, String)> {
    live_pods(server, selector)
        .iter()
        .map(|p| {
            let node = p
                .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0/values/0")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            (
                name(p),
                node,
                p["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn nodes_of(pods: &[(String, String, String, String)]) -> Vec<String> {
    let mut nodes: Vec<String> = pods.iter().map(|p| p.1.clone()).collect();
    nodes.sort();
    nodes
}

#[test]
fn daemon_sets_run_one_pod_per_eligible_node_and_roll_out() {
    let server = ApiServer::start_with(&["--controllers"]);
    create_node(&server, "n1", &[("disk", "ssd")], "4", "8Gi", 110);
    create_node(&server, "n2", &[], "4", "8Gi", 110);
    create_node(&server, "n3", &[], "4", "8Gi", 110);
    server.kubectl_ok(&["taint", "node", "n3", "dedicated=infra:NoSchedule"]);
    server.kubectl_ok(&["cordon", "n2"]);
    let _kubelet = FakeKubelet::start(&server, &["n1", "n2", "n3", "n4"]);

    create(&server, DS);
    let status = server.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(
        status.contains("daemon set \"agent\" successfully rolled out"),
        "{status}"
    );
    // The tainted node gets none; the cordoned one does (daemon pods tolerate cordons).
    let pods = agent_pods(&server, "app=agent");
    assert_eq!(nodes_of(&pods), ["n1", "n2"], "{pods:?}");
    let row = row(&server, &["ds", "agent"]);
    assert_eq!(row[1..6], ["2", "2", "2", "2", "2"], "{row:?}");
    let ds = json(&server, &["ds", "agent"]);
    assert_eq!(ds["status"]["numberMisscheduled"], 0, "{ds}");
    assert_eq!(ds["status"]["observedGeneration"], 1, "{ds}");
    let pod = &live_pods(&server, "app=agent")[0];
    let tolerations = pod["spec"]["tolerations"].to_string();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/disk-pressure",
        "node.kubernetes.io/memory-pressure",
        "node.kubernetes.io/pid-pressure",
        "node.kubernetes.io/unschedulable",
    ] {
        assert!(tolerations.contains(key), "{key} missing: {tolerations}");
    }
    assert_eq!(pod["metadata"]["labels"]["pod-template-generation"], "1");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    let hash1 = pods[0].2.clone();
    let revisions = server.kubectl_ok(&["get", "controllerrevisions"]);
    assert!(revisions.contains(&format!("agent-{hash1}")), "{revisions}");

    // A node that arrives gets a pod; one that goes loses it.
    create_node(&server, "n4", &[], "4", "8Gi", 110);
    wait_for("a pod on n4", WAIT, || {
        nodes_of(&agent_pods(&server, "app=agent")) == ["n1", "n2", "n4"]
    });
    server.kubectl_ok(&["delete", "node", "n4"]);
    wait_for("the n4 pod to go", WAIT, || {
        nodes_of(&agent_pods(&server, "app=agent")) == ["n1", "n2"]
    });
    // Tolerating the taint brings n3 in.
    server.kubectl_ok(&["taint", "node", "n3", "dedicated-"]);
    wait_for("a pod on n3", WAIT, || {
        nodes_of(&agent_pods(&server, "app=agent")) == ["n1", "n2", "n3"]
    });

    // A rolling update replaces every pod; history and undo work through kubectl.
    server.kubectl_ok(&[
        "annotate",
        "ds",
        "agent",
        "--overwrite",
        "kubernetes.io/change-cause=second",
    ]);
    server.kubectl_ok(&["set", "image", "ds/agent", "agent=agent:2"]);
    let status = server.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let pods = agent_pods(&server, "app=agent");
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert!(
        pods.iter().all(|p| p.3 == "agent:2" && p.2 != hash1),
        "{pods:?}"
    );
    let history = server.kubectl_ok(&["rollout", "history", "ds/agent"]);
    let lines: Vec<Vec<&str>> = history
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines,
        [vec!["1", "first"], vec!["2", "second"]],
        "{history}"
    );
    let rev1 = server.kubectl_ok(&["rollout", "history", "ds/agent", "--revision=1"]);
    assert!(rev1.contains("agent:1"), "{rev1}");

    let undo = server.kubectl_ok(&["rollout", "undo", "ds/agent"]);
    assert!(undo.contains("daemonset.apps/agent rolled back"), "{undo}");
    let status = server.kubectl_ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let pods = agent_pods(&server, "app=agent");
    assert!(
        pods.iter().all(|p| p.3 == "agent:1" && p.2 == hash1),
        "{pods:?}"
    );
    let history = server.kubectl_ok(&["rollout", "history", "ds/agent"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    let undo = server.kubectl_ok(&["rollout", "undo", "ds/agent", "--to-revision=3"]);
    assert!(undo.contains("skipped rollback"), "{undo}");
    wait_for("the DaemonSet's SuccessfulDelete event", WAIT, || {
        event_messages(&server, "agent")
            .iter()
            .any(|e| e.starts_with("SuccessfulDelete Deleted pod: agent-"))
    });
}

#[test]
fn daemon_sets_surge_or_wait_for_deletion() {
    let server = ApiServer::start_with(&["--controllers"]);
    create_node(&server, "n1", &[("disk", "ssd")], "4", "8Gi", 110);
    create_node(&server, "n2", &[("disk", "ssd")], "4", "8Gi", 110);
    create_node(&server, "n3", &[], "4", "8Gi", 110);
    let _kubelet = FakeKubelet::start(&server, &["n1", "n2", "n3"]);

    // nodeSelector limits the nodes; maxSurge starts the new pod before the old one goes.
    let surge = DS
        .replacen("name: agent\n", "name: surge\n", 1)
        .replace("{app: agent}", "{app: surge}")
        .replace(
            "    spec:\n      containers:",
            "    spec:\n      nodeSelector: {disk: ssd}\n      containers:",
        )
        .replace(
            "spec:\n  selector:",
            "spec:\n  updateStrategy:\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n  selector:",
        );
    create(&server, &surge);
    server.kubectl_ok(&["rollout", "status", "ds/surge", "--timeout=60s"]);
    assert_eq!(nodes_of(&agent_pods(&server, "app=surge")), ["n1", "n2"]);
    server.kubectl_ok(&["set", "image", "ds/surge", "agent=agent:2"]);
    server.kubectl_ok(&["rollout", "status", "ds/surge", "--timeout=60s"]);
    let pods = agent_pods(&server, "app=surge");
    assert_eq!(nodes_of(&pods), ["n1", "n2"], "{pods:?}");
    assert!(pods.iter().all(|p| p.3 == "agent:2"), "{pods:?}");
    // Surge: the rollout began by creating a new pod, not by deleting an old one (one sync
    // may then create on the next node and delete on the first together).
    wait_for("the surge rollout's six events", WAIT, || {
        events_in_order(&server, "surge").len() >= 6
    });
    let events = events_in_order(&server, "surge");
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.split_whitespace().next().unwrap_or_default())
        .collect();
    assert_eq!(kinds.len(), 6, "{events:?}");
    assert_eq!(kinds[..3], ["SuccessfulCreate"; 3], "{events:?}");
    assert_eq!(kinds[5], "SuccessfulDelete", "{events:?}");
    // A label change moves the pod: n3 gains one, n2 loses its own.
    server.kubectl_ok(&["label", "node", "n3", "disk=ssd"]);
    server.kubectl_ok(&["label", "node", "n2", "disk-"]);
    wait_for("pods to follow the labels", WAIT, || {
        nodes_of(&agent_pods(&server, "app=surge")) == ["n1", "n3"]
    });

    // A pod that fails is deleted and replaced, with a Warning saying so.
    let crash = DS
        .replacen("name: agent\n", "name: crash\n", 1)
        .replace("{app: agent}", "{app: crash}")
        .replace("image: agent:1", "image: agent-fail:1")
        .replace(
            "    spec:\n      containers:",
            "    spec:\n      nodeSelector: {kubernetes.io/hostname: n1}\n      containers:",
        );
    create(&server, &crash);
    wait_for("a FailedDaemonPod warning", WAIT, || {
        event_messages(&server, "crash").iter().any(|e| {
            e.starts_with("FailedDaemonPod Found failed daemon pod default/crash-")
                && e.ends_with("on node n1, will try to kill it")
        })
    });
    wait_for("a replacement", WAIT, || {
        event_messages(&server, "crash")
            .iter()
            .filter(|e| e.starts_with("SuccessfulCreate"))
            .count()
            >= 2
    });
    server.kubectl_ok(&["delete", "ds", "crash"]);

    // OnDelete: a new template reaches only pods deleted by hand.
    let on_delete = DS
        .replacen("name: agent\n", "name: manual\n", 1)
        .replace("{app: agent}", "{app: manual}")
        .replace(
            "spec:\n  selector:",
            "spec:\n  updateStrategy: {type: OnDelete}\n  selector:",
        );
    create(&server, &on_delete);
    wait_for("three manual pods", WAIT, || {
        let pods = live_pods(&server, "app=manual");
        pods.len() == 3 && pods.iter().all(is_ready)
    });
    server.kubectl_ok(&["set", "image", "ds/manual", "agent=agent:2"]);
    wait_for("the new generation to be observed", WAIT, || {
        let ds = json(&server, &["ds", "manual"]);
        ds["status"]["observedGeneration"] == 2
    });
    let ds = json(&server, &["ds", "manual"]);
    assert_eq!(ds["status"]["updatedNumberScheduled"], 0, "{ds}");
    let out = server.kubectl(&["rollout", "status", "ds/manual", "--timeout=5s"]);
    assert!(
        text(&out).contains("rollout status is only available for RollingUpdate strategy type"),
        "{}",
        text(&out)
    );
    let first = agent_pods(&server, "app=manual")[0].clone();
    server.kubectl_ok(&["delete", "pod", &first.0, "--wait=false"]);
    wait_for("an updated replacement", WAIT, || {
        let pods = agent_pods(&server, "app=manual");
        pods.len() == 3 && pods.iter().filter(|p| p.3 == "agent:2").count() == 1
    });
    wait_for("updatedNumberScheduled", WAIT, || {
        json(&server, &["ds", "manual"])["status"]["updatedNumberScheduled"] == 1
    });
}

const STS: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: nginx
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
"#;

/// The set's SuccessfulCreate/SuccessfulDelete pod messages, oldest first.
fn set_pod_events(server: &ApiServer, set: &str) -> Vec<String> {
    let list = json(server, &["events"]);
    let mut events: Vec<(String, String, String)> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["involvedObject"]["name"] == set)
        .map(|e| {
            (
                e["firstTimestamp"].as_str().unwrap_or_default().to_string(),
                name(e),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .filter(|(_, _, m)| m.starts_with("create Pod") || m.starts_with("delete Pod"))
        .collect();
    events.sort();
    events.into_iter().map(|(_, _, m)| m).collect()
}

fn pvc_names(server: &ApiServer) -> Vec<String> {
    let list = json(server, &["pvc"]);
    let mut names: Vec<String> = list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .map(name)
        .collect();
    names.sort();
    names
}

#[test]
fn stateful_sets_keep_identities_order_and_revisions() {
    let server = ApiServer::start_with(&["--controllers"]);
    for n in ["n1", "n2"] {
        create_node(&server, n, &[], "4", "8Gi", 110);
    }
    let _kubelet = FakeKubelet::start(&server, &["n1", "n2"]);

    create(&server, STS);
    let status = server.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(
        status.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{status}"
    );
    assert_eq!(row(&server, &["sts", "web"])[1], "3/3");
    let pods = live_pods(&server, "app=web");
    assert_eq!(names(&pods), ["web-0", "web-1", "web-2"]);
    for (i, p) in pods.iter().enumerate() {
        assert_eq!(p["spec"]["hostname"], format!("web-{i}"), "{p}");
        assert_eq!(p["spec"]["subdomain"], "nginx", "{p}");
        assert_eq!(
            p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
            format!("web-{i}")
        );
        assert_eq!(
            p["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            i.to_string()
        );
        let volume = &p["spec"]["volumes"].as_array().cloned().unwrap_or_default();
        assert!(
            volume.iter().any(|v| v["name"] == "www"
                && v["persistentVolumeClaim"]["claimName"] == format!("www-web-{i}")),
            "{p}"
        );
    }
    assert_eq!(pvc_names(&server), ["www-web-0", "www-web-1", "www-web-2"]);
    // OrderedReady: each pod was created only after the one before it.
    wait_eq(
        "the set's pod creations in order",
        || set_pod_events(&server, "web"),
        vec![
            "create Pod web-0 in StatefulSet web successful".to_string(),
            "create Pod web-1 in StatefulSet web successful".to_string(),
            "create Pod web-2 in StatefulSet web successful".to_string(),
        ],
    );
    let sts = json(&server, &["sts", "web"]);
    let rev1 = sts["status"]["currentRevision"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(sts["status"]["updateRevision"], rev1.as_str(), "{sts}");
    assert_eq!(
        pods[0]["metadata"]["labels"]["controller-revision-hash"],
        rev1.as_str()
    );
    assert_eq!(sts["status"]["currentReplicas"], 3, "{sts}");
    assert_eq!(sts["status"]["availableReplicas"], 3, "{sts}");

    // A deleted pod comes back with the same name.
    server.kubectl_ok(&["delete", "pod", "web-1", "--wait=false"]);
    wait_for("web-1 to come back", WAIT, || {
        let pods = live_pods(&server, "app=web");
        names(&pods) == ["web-0", "web-1", "web-2"] && pods.iter().all(is_ready)
    });

    // A rolling update goes from the highest ordinal down; the partition holds the rest.
    server.kubectl_ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ]);
    server.kubectl_ok(&["set", "image", "sts/web", "nginx=nginx:2"]);
    let status = server.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(
        status.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{status}"
    );
    let images: Vec<String> = live_pods(&server, "app=web")
        .iter()
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(images, ["nginx:1", "nginx:1", "nginx:2"]);
    let sts = json(&server, &["sts", "web"]);
    assert_eq!(sts["status"]["currentRevision"], rev1.as_str(), "{sts}");
    assert_ne!(sts["status"]["updateRevision"], rev1.as_str(), "{sts}");
    assert_eq!(sts["status"]["updatedReplicas"], 1, "{sts}");
    server.kubectl_ok(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    server.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    wait_for("the update to become current", WAIT, || {
        let sts = json(&server, &["sts", "web"]);
        sts["status"]["currentRevision"] == sts["status"]["updateRevision"]
            && sts["status"]["currentReplicas"] == 3
    });
    wait_eq(
        "the rolling update's pod deletions in order",
        || {
            set_pod_events(&server, "web")
                .into_iter()
                .filter(|e| e.starts_with("delete Pod"))
                .collect::<Vec<String>>()
        },
        vec![
            "delete Pod web-2 in StatefulSet web successful".to_string(),
            "delete Pod web-1 in StatefulSet web successful".to_string(),
            "delete Pod web-0 in StatefulSet web successful".to_string(),
        ],
    );
    let history = server.kubectl_ok(&["rollout", "history", "sts/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let undo = server.kubectl_ok(&["rollout", "undo", "sts/web"]);
    assert!(undo.contains("statefulset.apps/web rolled back"), "{undo}");
    server.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    wait_for("the rollback to finish", WAIT, || {
        let pods = live_pods(&server, "app=web");
        pods.len() == 3
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1" && is_ready(p))
            && pods
                .iter()
                .all(|p| p["metadata"]["labels"]["controller-revision-hash"] == rev1.as_str())
    });

    // Scale down from the top; claims are retained by default.
    server.kubectl_ok(&["scale", "sts", "web", "--replicas=1"]);
    wait_for("one pod", WAIT, || {
        names(&live_pods(&server, "app=web")) == ["web-0"]
    });
    assert_eq!(pvc_names(&server), ["www-web-0", "www-web-1", "www-web-2"]);
}

#[test]
fn parallel_stateful_sets_and_claim_retention() {
    let server = ApiServer::start_with(&["--controllers"]);
    create_node(&server, "n1", &[], "4", "8Gi", 110);
    let _kubelet = FakeKubelet::start(&server, &["n1"]);

    // Parallel: every pod at once, even when the first never becomes ready.
    let parallel = STS
        .replace("name: web\n", "name: db\n")
        .replace("{app: web}", "{app: db}")
        .replace("image: nginx:1", "image: unready:1")
        .replace(
            "  serviceName: nginx\n",
            "  serviceName: nginx\n  podManagementPolicy: Parallel\n  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Delete}\n",
        )
        .replace("metadata: {name: www}", "metadata: {name: data}");
    create(&server, &parallel);
    wait_for("three unready pods", WAIT, || {
        live_pods(&server, "app=db").len() == 3
    });
    assert_eq!(pvc_names(&server), ["data-db-0", "data-db-1", "data-db-2"]);
    let sts = json(&server, &["sts", "db"]);
    assert_eq!(sts["status"]["readyReplicas"], 0, "{sts}");
    let claim = json(&server, &["pvc", "data-db-0"]);
    assert_eq!(
        claim["metadata"]["ownerReferences"][0]["kind"], "StatefulSet",
        "{claim}"
    );
    assert_eq!(claim["metadata"]["labels"]["app"], "db", "{claim}");

    // whenScaled=Delete: the claims of removed ordinals go with their pods.
    server.kubectl_ok(&["scale", "sts", "db", "--replicas=1"]);
    wait_for("claims of removed pods to go", WAIT, || {
        names(&live_pods(&server, "app=db")) == ["db-0"] && pvc_names(&server) == ["data-db-0"]
    });
    // whenDeleted=Delete: deleting the set deletes the remaining claims.
    server.kubectl_ok(&["delete", "sts", "db"]);
    wait_for("the remaining claim to go", WAIT, || {
        pvc_names(&server).is_empty()
    });

    // maxUnavailable 2 (the events fold repeats, so they show the order, not the overlap).
    let wide = STS
        .replace("name: web\n", "name: wide\n")
        .replace("{app: web}", "{app: wide}")
        .replace(
            "  serviceName: nginx\n",
            "  serviceName: nginx\n  podManagementPolicy: Parallel\n  updateStrategy:\n    rollingUpdate: {maxUnavailable: 2}\n",
        );
    create(&server, &wide);
    server.kubectl_ok(&["rollout", "status", "sts/wide", "--timeout=60s"]);
    server.kubectl_ok(&["set", "image", "sts/wide", "nginx=nginx:2"]);
    server.kubectl_ok(&["rollout", "status", "sts/wide", "--timeout=60s"]);
    wait_for("every wide pod on the new image", WAIT, || {
        let pods = live_pods(&server, "app=wide");
        pods.len() == 3
            && pods
                .iter()
                .all(|p| p["spec"]["containers"][0]["image"] == "nginx:2" && is_ready(p))
    });
    wait_eq(
        "the wide set's pod deletions in order",
        || {
            events_in_order(&server, "wide")
                .into_iter()
                .filter(|e| e.starts_with("SuccessfulDelete delete Pod"))
                .collect::<Vec<String>>()
        },
        vec![
            "SuccessfulDelete delete Pod wide-2 in StatefulSet wide successful".to_string(),
            "SuccessfulDelete delete Pod wide-1 in StatefulSet wide successful".to_string(),
            "SuccessfulDelete delete Pod wide-0 in StatefulSet wide successful".to_string(),
        ],
    );
    server.kubectl_ok(&["delete", "sts", "wide"]);

    // OrderedReady waits on an unready pod.
    let ordered = STS
        .replace("image: nginx:1", "image: unready:1")
        .replace("replicas: 3", "replicas: 2");
    create(&server, &ordered);
    wait_for("web-0", WAIT, || live_pods(&server, "app=web").len() == 1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(names(&live_pods(&server, "app=web")), ["web-0"]);
    let out = server.kubectl(&["rollout", "status", "sts/web", "--timeout=2s"]);
    assert!(
        text(&out).contains("Waiting for 2 pods to be ready"),
        "{}",
        text(&out)
    );
}
