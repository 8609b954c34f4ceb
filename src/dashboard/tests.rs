//! The state model driven by recorded watch streams (the API's watch wire format: one
//! `{"type": …, "object": …}` per line), and the hub's snapshot-then-deltas contract.

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Hub;
use super::model::{Access, Input, Kind, MAX_EVENTS, Model};
use super::summary;
use super::watch::{classify, classify_watch};

/// A watch stream as the API server writes it, turned into the inputs the watcher would give.
fn replay<K: DeserializeOwned>(
    kind: Kind,
    stream: &str,
    summarise: fn(&K) -> (String, Value),
) -> Vec<Input> {
    stream
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let event: Value = serde_json::from_str(line).expect("a watch event");
            let object: K =
                serde_json::from_value(event["object"].clone()).expect("an object of the kind");
            let (key, value) = summarise(&object);
            match event["type"].as_str() {
                Some("ADDED" | "MODIFIED") => Input::Applied(kind, key, value),
                Some("DELETED") => Input::Deleted(kind, key),
                other => panic!("unexpected watch event type {other:?}"),
            }
        })
        .collect()
}

fn feed(model: &mut Model, inputs: Vec<Input>) -> Vec<Vec<Value>> {
    inputs.into_iter().map(|i| model.apply(i)).collect()
}

// Recorded from a real cluster (1 server + 1 worker) with `kubectl get --raw` watches of
// `/api/v1/namespaces/default/pods?watch=true&labelSelector=app%3Drec` and
// `/api/v1/nodes?watch=true&fieldSelector=metadata.name%3D<worker>` while: a Deployment `rec` of
// one pod (250m/32Mi requested, 32Mi limit, a readiness probe, nodeSelector tier=extra) was
// applied; the worker was labelled tier=extra; the container allocated past its limit and was
// OOM-killed once; the worker was cordoned; the pod was deleted (its replacement stays Pending);
// the worker's container was stopped until its Ready condition went Unknown.
const POD_STREAM: &str = include_str!("testdata/pods.watch.jsonl");
const NODE_STREAM: &str = include_str!("testdata/nodes.watch.jsonl");
const FIRST: &str = "default/rec-5c4b76484f-mvpvt";
const REPLACEMENT: &str = "default/rec-5c4b76484f-x4kqz";
const WORKER: &str = "dashboard-rec-worker-0";

/// The summaries a page was sent for `key`, in order.
fn states_of<'a>(deltas: &'a [Vec<Value>], key: &str) -> Vec<&'a Value> {
    deltas
        .iter()
        .flatten()
        .filter(|d| d["t"] == "upsert" && d["key"] == key)
        .map(|d| &d["obj"])
        .collect()
}

/// The index of the first state from `from` on that `check` accepts.
fn find(states: &[&Value], from: usize, what: &str, check: impl Fn(&Value) -> bool) -> usize {
    states
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, s)| check(s))
        .map(|(i, _)| i)
        .unwrap_or_else(|| panic!("no state from #{from} on where {what}: {states:#?}"))
}

#[test]
fn a_recorded_pod_is_scheduled_runs_is_oomkilled_and_replaced() {
    let mut model = Model::new();
    let out = feed(
        &mut model,
        replay(Kind::Pods, POD_STREAM, summary::pod as fn(&Pod) -> _),
    );
    assert_eq!(out[0][0]["t"], "status");
    assert_eq!(out[0][0]["status"]["state"], "ok");
    let states = states_of(&out, FIRST);

    let first = states[0];
    assert_eq!(first["phase"], "Pending");
    assert_eq!(first["node"], Value::Null);
    assert_eq!(
        first["owner"],
        json!({"kind": "ReplicaSet", "name": "rec-5c4b76484f"})
    );
    assert_eq!(first["cpu"], 250);
    assert_eq!(first["memory"], 32 * 1024 * 1024);

    let waiting = find(&states, 0, "the scheduler says why", |s| {
        s["unschedulable"]["reason"] == "Unschedulable"
            && s["unschedulable"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("2 node(s) didn't match Pod's node affinity/selector"))
    });
    let bound = find(&states, waiting, "it is bound", |s| s["node"] == WORKER);
    assert_eq!(states[bound]["unschedulable"], Value::Null);
    let running = find(&states, bound, "it runs and is ready", |s| {
        s["phase"] == "Running" && s["ready"] == true && s["restarts"] == 0
    });
    let oom = find(&states, running, "it was OOM-killed", |s| {
        s["oomKilled"] == true && s["restarts"] == 1
    });
    // Restarted, its readiness probe has not passed yet.
    assert_eq!(states[oom]["ready"], false);
    assert_eq!(states[oom]["probeFailing"], true);
    find(&states, oom, "it is ready again", |s| s["ready"] == true);
    let deleting = find(&states, oom, "it is being deleted", |s| {
        s["deleting"] == true
    });
    assert_eq!(states[deleting]["oomKilled"], true, "the badge stays");
    assert_eq!(
        out.last().unwrap(),
        &vec![json!({"t": "delete", "kind": "pods", "key": FIRST})]
    );

    // The replacement waits: the only node with the label is cordoned.
    let snapshot = model.snapshot();
    let pods = snapshot["kinds"]["pods"]["objects"].as_object().unwrap();
    assert_eq!(pods.keys().collect::<Vec<_>>(), [REPLACEMENT]);
    let message = pods[REPLACEMENT]["unschedulable"]["message"]
        .as_str()
        .unwrap();
    assert!(
        message.contains("1 node(s) were unschedulable"),
        "{message}"
    );
}

#[test]
fn recorded_node_heartbeats_send_nothing_but_labels_cordons_and_not_ready_do() {
    let mut model = Model::new();
    let out = feed(
        &mut model,
        replay(Kind::Nodes, NODE_STREAM, summary::node as fn(&Node) -> _),
    );
    let node = &out[0][1]["obj"];
    assert_eq!(node["name"], WORKER);
    assert_eq!(node["ready"], "True");
    assert_eq!(node["cpu"], 2000);
    assert_eq!(node["memory"], 24_629_000u64 * 1024);
    assert_eq!(node["unschedulable"], false);
    // The second event is the label; the next two only renew the heartbeat.
    assert_eq!(out[1][0]["obj"]["labels"]["tier"], "extra");
    assert!(out[2].is_empty() && out[3].is_empty(), "{out:?}");
    let states = states_of(&out, WORKER);
    let cordoned = find(&states, 0, "it is cordoned", |s| s["unschedulable"] == true);
    let tainted = find(&states, cordoned, "the cordon's taint shows", |s| {
        s["taints"] == json!(["node.kubernetes.io/unschedulable:NoSchedule"])
    });
    find(&states, tainted, "its agent stopped reporting", |s| {
        s["ready"] == "Unknown"
    });
    assert_eq!(
        states.last().unwrap()["taints"],
        json!([
            "node.kubernetes.io/unschedulable:NoSchedule",
            "node.kubernetes.io/unreachable:NoSchedule",
            "node.kubernetes.io/unreachable:NoExecute"
        ])
    );
}

#[test]
fn a_relist_after_a_lost_watch_sends_only_what_changed() {
    let mut model = Model::new();
    let pod = |name: &str, phase: &str| json!({"name": name, "phase": phase});
    model.apply(Input::Relist(Kind::Pods));
    for name in ["a", "b", "c"] {
        model.apply(Input::Listed(
            Kind::Pods,
            format!("ns/{name}"),
            pod(name, "Running"),
        ));
    }
    let first = model.apply(Input::Synced(Kind::Pods));
    assert_eq!(first.iter().filter(|d| d["t"] == "upsert").count(), 3);

    // The connection drops.
    let failed = model.apply(Input::Failed(
        Kind::Pods,
        Access::Unreachable("connection refused".into()),
    ));
    assert_eq!(
        failed,
        vec![json!({"t": "status", "kind": "pods",
        "status": {"state": "unreachable", "message": "connection refused", "limited": null}})]
    );
    // While it was away, b was deleted, c changed and d was created.
    assert!(model.apply(Input::Relist(Kind::Pods)).is_empty());
    model.apply(Input::Listed(
        Kind::Pods,
        "ns/a".into(),
        pod("a", "Running"),
    ));
    model.apply(Input::Listed(Kind::Pods, "ns/c".into(), pod("c", "Failed")));
    model.apply(Input::Listed(
        Kind::Pods,
        "ns/d".into(),
        pod("d", "Pending"),
    ));
    // Objects of an unfinished list are not shown yet.
    assert_eq!(
        model.snapshot()["kinds"]["pods"]["objects"]
            .as_object()
            .unwrap()
            .len(),
        3
    );
    let deltas = model.apply(Input::Synced(Kind::Pods));
    assert_eq!(
        deltas,
        vec![
            json!({"t": "status", "kind": "pods", "status": {"state": "ok", "message": "", "limited": null}}),
            json!({"t": "delete", "kind": "pods", "key": "ns/b"}),
            json!({"t": "upsert", "kind": "pods", "key": "ns/c", "obj": pod("c", "Failed")}),
            json!({"t": "upsert", "kind": "pods", "key": "ns/d", "obj": pod("d", "Pending")}),
        ]
    );
    let snapshot = model.snapshot();
    let keys: Vec<&String> = snapshot["kinds"]["pods"]["objects"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["ns/a", "ns/c", "ns/d"]);
}

fn status(code: u16, reason: &str, message: &str) -> Box<kube::core::Status> {
    serde_json::from_value(json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }))
    .expect("a Status")
}

#[test]
fn a_forbidden_kind_gets_a_note_and_the_others_keep_working() {
    let forbidden = status(
        403,
        "Forbidden",
        "nodes is forbidden: User \"student\" cannot list resource \"nodes\" in API group \"\" at the cluster scope",
    );
    let error = kube::runtime::watcher::Error::InitialListFailed(kube::Error::Api(forbidden));
    let access = classify_watch(&error).expect("a 403 is worth a note");
    assert!(
        matches!(&access, Access::Forbidden(m) if m.contains("cannot list resource \"nodes\""))
    );

    let mut model = Model::new();
    model.apply(Input::Failed(Kind::Nodes, access));
    model.apply(Input::Relist(Kind::Pods));
    model.apply(Input::Listed(
        Kind::Pods,
        "s1/p".into(),
        json!({"name": "p"}),
    ));
    model.apply(Input::Synced(Kind::Pods));
    let snapshot = model.snapshot();
    assert_eq!(snapshot["kinds"]["nodes"]["status"]["state"], "forbidden");
    assert_eq!(snapshot["kinds"]["pods"]["status"]["state"], "ok");
    assert_eq!(snapshot["kinds"]["pods"]["objects"]["s1/p"]["name"], "p");
    assert_eq!(snapshot["kinds"]["events"]["status"]["state"], "loading");

    // Pods in every namespace are forbidden, those of the user's namespace are not: the note
    // stays while that namespace's pods show.
    let why = "pods is forbidden: User \"student\" cannot list resource \"pods\" in API group \"\" at the cluster scope";
    let narrowed = model.apply(Input::Narrowed(Kind::Pods, why.into()));
    assert_eq!(narrowed[0]["status"]["limited"], why);
    model.apply(Input::Relist(Kind::Pods));
    model.apply(Input::Listed(
        Kind::Pods,
        "s1/p".into(),
        json!({"name": "p"}),
    ));
    let synced = model.apply(Input::Synced(Kind::Pods));
    assert!(synced.is_empty(), "nothing changed: {synced:?}");
    let snapshot = model.snapshot();
    assert_eq!(snapshot["kinds"]["pods"]["status"]["state"], "ok");
    assert_eq!(snapshot["kinds"]["pods"]["status"]["limited"], why);
}

#[test]
fn failures_are_told_apart() {
    let gone = kube::runtime::watcher::Error::WatchError(status(
        410,
        "Expired",
        "too old resource version",
    ));
    assert_eq!(classify_watch(&gone), None, "an expired watch just relists");
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    let down = classify(&kube::Error::Service(Box::new(io)));
    assert!(matches!(&down, Access::Unreachable(m) if m.contains("connection refused")));
    let missing = classify(&kube::Error::Api(status(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )));
    assert!(matches!(missing, Access::Error(m) if m.contains("not served")));
}

#[test]
fn the_ticker_keeps_the_newest_events() {
    let mut model = Model::new();
    let mut deleted = Vec::new();
    for i in 0..MAX_EVENTS + 2 {
        let event: Event = serde_json::from_value(json!({
            "metadata": {"name": format!("e{i:05}"), "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Scheduled", "message": "assigned", "type": "Normal",
            "lastTimestamp": format!("2026-01-01T00:{:02}:{:02}Z", i / 60 % 60, i % 60),
        }))
        .expect("an Event");
        let (key, value) = summary::event(&event);
        for d in model.apply(Input::Applied(Kind::Events, key, value)) {
            if d["t"] == "delete" {
                deleted.push(d["key"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(deleted, ["default/e00000", "default/e00001"]);
    assert_eq!(model.objects(Kind::Events), MAX_EVENTS);
}

#[test]
fn metrics_are_summed_per_pod_in_millicores_and_bytes() {
    let pod = json!({
        "metadata": {"name": "p", "namespace": "ns"},
        "containers": [
            {"name": "a", "usage": {"cpu": "150000000n", "memory": "10Mi"}},
            {"name": "b", "usage": {"cpu": "2500u", "memory": "1024Ki"}},
        ],
    });
    assert_eq!(
        summary::metrics(&pod),
        Some((
            "ns/p".to_string(),
            json!({"cpu": 152, "memory": 11 * 1024 * 1024})
        ))
    );
    let node = json!({"metadata": {"name": "n"}, "usage": {"cpu": "1", "memory": "1Gi"}});
    assert_eq!(
        summary::metrics(&node),
        Some(("n".to_string(), json!({"cpu": 1000, "memory": 1u64 << 30})))
    );
}

#[tokio::test]
async fn a_page_gets_the_snapshot_then_every_change_in_order() {
    let hub = Hub::new("dev");
    hub.feed(Input::Applied(
        Kind::Nodes,
        "n1".into(),
        json!({"name": "n1"}),
    ));
    let (snapshot, mut changes) = hub.subscribe();
    let snapshot: Value = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(snapshot["cluster"], "dev");
    assert_eq!(snapshot["kinds"]["nodes"]["objects"]["n1"]["name"], "n1");
    hub.feed(Input::Applied(
        Kind::Pods,
        "ns/p".into(),
        json!({"name": "p"}),
    ));
    hub.feed(Input::Deleted(Kind::Pods, "ns/p".into()));
    // Deleting what is not there changes nothing and sends nothing.
    hub.feed(Input::Deleted(Kind::Pods, "ns/never".into()));
    let first: Value = serde_json::from_str(&changes.recv().await.unwrap()).unwrap();
    assert_eq!(first["t"], "deltas");
    assert_eq!(first["items"][1]["t"], "upsert");
    let second: Value = serde_json::from_str(&changes.recv().await.unwrap()).unwrap();
    assert_eq!(
        second["items"],
        json!([{"t": "delete", "kind": "pods", "key": "ns/p"}])
    );
    assert!(changes.try_recv().is_err());
}

#[test]
fn only_loopback_names_pass_the_host_check() {
    let check = |host: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, host.parse().unwrap());
        super::server::loopback_host(&headers)
    };
    for good in [
        "localhost:8088",
        "127.0.0.1:8088",
        "127.0.0.2",
        "[::1]:8088",
        "[::1]",
    ] {
        assert!(check(good), "{good}");
    }
    for bad in [
        "127.0.0.1.nip.io:8088",
        "evil.example",
        "10.0.0.1:8088",
        "localhost.evil.example",
    ] {
        assert!(!check(bad), "{bad}");
    }
    assert!(!super::server::loopback_host(&http::HeaderMap::new()));
}

/// The next data chunk of a page's event stream, as text.
async fn next_chunk(body: &mut super::server::Body) -> String {
    use http_body_util::BodyExt;
    loop {
        let frame = body
            .frame()
            .await
            .expect("the stream goes on")
            .expect("no error");
        if let Ok(data) = frame.into_data() {
            return String::from_utf8(data.to_vec()).unwrap();
        }
    }
}

#[tokio::test]
async fn a_page_too_far_behind_gets_a_fresh_snapshot() {
    let hub = std::sync::Arc::new(Hub::new("dev"));
    let mut body = super::server::events(&hub).into_body();
    let first = next_chunk(&mut body).await;
    assert!(first.starts_with("retry: 1000\ndata: {"), "{first}");
    assert!(first.contains("\"t\":\"snapshot\""), "{first}");
    // More changes than the channel keeps, while the page reads nothing.
    for i in 0..super::BACKLOG + 10 {
        hub.feed(Input::Applied(
            Kind::Pods,
            format!("ns/p{i}"),
            json!({"name": format!("p{i}")}),
        ));
    }
    let next = next_chunk(&mut body).await;
    let data: Value = serde_json::from_str(
        next.strip_prefix("data: ")
            .and_then(|d| d.strip_suffix("\n\n"))
            .unwrap_or_else(|| panic!("not one SSE message: {next}")),
    )
    .unwrap();
    assert_eq!(data["t"], "snapshot");
    assert_eq!(
        data["kinds"]["pods"]["objects"].as_object().unwrap().len(),
        super::BACKLOG + 10
    );
    // Then deltas again.
    hub.feed(Input::Deleted(Kind::Pods, "ns/p0".into()));
    let after = next_chunk(&mut body).await;
    assert!(after.contains("\"t\":\"deltas\""), "{after}");
    assert!(after.contains("ns/p0"), "{after}");
}
