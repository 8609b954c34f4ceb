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

const POD_STREAM: &str = include_str!("testdata/pod-lifecycle.watch.jsonl");
const NODE_STREAM: &str = include_str!("testdata/node-heartbeats.watch.jsonl");

#[test]
fn a_pod_goes_from_unschedulable_to_running_to_oomkilled_to_gone() {
    let mut model = Model::new();
    let out = feed(
        &mut model,
        replay(Kind::Pods, POD_STREAM, summary::pod as fn(&Pod) -> _),
    );
    // First event: the kind becomes readable, and the pod appears, Pending with the
    // scheduler's reason.
    assert_eq!(out[0][0]["t"], "status");
    assert_eq!(out[0][0]["status"]["state"], "ok");
    let first = &out[0][1];
    assert_eq!(first["t"], "upsert");
    assert_eq!(first["key"], "default/web-7d9f-abcde");
    assert_eq!(first["obj"]["phase"], "Pending");
    assert_eq!(first["obj"]["node"], Value::Null);
    assert_eq!(first["obj"]["unschedulable"]["reason"], "Unschedulable");
    assert!(
        first["obj"]["unschedulable"]["message"]
            .as_str()
            .unwrap()
            .contains("didn't match Pod's node affinity/selector")
    );
    assert_eq!(
        first["obj"]["owner"],
        json!({"kind": "ReplicaSet", "name": "web-7d9f"})
    );
    assert_eq!(first["obj"]["cpu"], 250);
    assert_eq!(first["obj"]["memory"], 64 * 1024 * 1024);

    // Bound to a node.
    let bound = &out[1][0];
    assert_eq!(bound["obj"]["node"], "dev-worker-0");
    assert_eq!(bound["obj"]["unschedulable"], Value::Null);
    // Running and ready.
    assert_eq!(out[2][0]["obj"]["phase"], "Running");
    assert_eq!(out[2][0]["obj"]["ready"], true);
    // The same pod written again with only its resourceVersion changed: nothing to send.
    assert!(out[3].is_empty(), "{:?}", out[3]);
    // OOM-killed and restarted, readiness probe not passing yet.
    let oom = &out[4][0]["obj"];
    assert_eq!(oom["restarts"], 1);
    assert_eq!(oom["oomKilled"], true);
    assert_eq!(oom["probeFailing"], true);
    assert_eq!(oom["ready"], false);
    // Graceful deletion, then gone.
    assert_eq!(out[5][0]["obj"]["deleting"], true);
    assert_eq!(
        out[6],
        vec![json!({"t": "delete", "kind": "pods", "key": "default/web-7d9f-abcde"})]
    );
    assert_eq!(model.objects(Kind::Pods), 0);
}

#[test]
fn node_heartbeats_send_nothing_but_a_cordon_and_not_ready_do() {
    let mut model = Model::new();
    let out = feed(
        &mut model,
        replay(Kind::Nodes, NODE_STREAM, summary::node as fn(&Node) -> _),
    );
    let node = &out[0][1]["obj"];
    assert_eq!(node["name"], "dev-worker-0");
    assert_eq!(node["ready"], "True");
    assert_eq!(node["cpu"], 2000);
    assert_eq!(node["memory"], 3 * 1024 * 1024 * 1024u64);
    assert_eq!(node["roles"], json!([]));
    assert_eq!(node["labels"]["tier"], "extra");
    // A heartbeat (new lastHeartbeatTime, resourceVersion): no delta.
    assert!(out[1].is_empty(), "{:?}", out[1]);
    // Cordoned and tainted.
    assert_eq!(out[2][0]["obj"]["unschedulable"], true);
    assert_eq!(
        out[2][0]["obj"]["taints"],
        json!(["node.kubernetes.io/unschedulable:NoSchedule"])
    );
    // Its agent stopped reporting.
    assert_eq!(out[3][0]["obj"]["ready"], "Unknown");
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
