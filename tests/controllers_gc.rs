//! Owners and dependents through the real kubectl: `kubectl delete deployment` with the
//! background, foreground and orphan cascades (the garbage collector), and a ReplicaSet adopting
//! a matching bare pod and releasing one whose labels stop matching.

mod common;
mod controllers_support;

use std::time::Duration;

use common::*;
use controllers_support::*;
use serde_json::Value;

fn json(server: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).expect("kubectl printed JSON")
}

fn items(server: &ApiServer, args: &[&str]) -> Vec<Value> {
    json(server, args)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn deploy(server: &ApiServer, name: &str, replicas: u32) {
    server.kubectl_ok(&[
        "create",
        "deployment",
        name,
        "--image=nginx",
        &format!("--replicas={replicas}"),
    ]);
    server.kubectl_ok(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=60s",
    ]);
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o["uid"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn cascading_deletion_and_adoption() {
    let server = ApiServer::start_with(&["--controllers"]);
    for n in ["n1", "n2"] {
        create_node(&server, n, &[], "4", "8Gi", 110);
    }
    let _kubelet = FakeKubelet::start(&server, &["n1", "n2"]);

    // Background (kubectl's default): the ReplicaSet and then its pods follow the Deployment.
    deploy(&server, "bg", 3);
    assert_eq!(items(&server, &["pods", "-l", "app=bg"]).len(), 3);
    server.kubectl_ok(&["delete", "deployment", "bg"]);
    wait_for(
        "bg's replica set and pods to be collected",
        Duration::from_secs(30),
        || {
            items(&server, &["rs", "-l", "app=bg"]).is_empty()
                && items(&server, &["pods", "-l", "app=bg"]).is_empty()
        },
    );

    // Foreground: kubectl waits until the Deployment is gone, which is after its dependents.
    deploy(&server, "fg", 2);
    server.kubectl_ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert!(
        items(&server, &["rs", "-l", "app=fg"]).is_empty(),
        "replica set outlived its foreground-deleted owner"
    );
    assert!(
        items(&server, &["pods", "-l", "app=fg"]).is_empty(),
        "pods outlived their foreground-deleted owner"
    );

    // Orphan: the Deployment goes, its ReplicaSet and pods stay, no longer owned.
    deploy(&server, "orph", 2);
    server.kubectl_ok(&[
        "delete",
        "deployment",
        "orph",
        "--cascade=orphan",
        "--timeout=60s",
    ]);
    wait_for(
        "orph's replica set to lose its owner",
        Duration::from_secs(30),
        || {
            let rs = items(&server, &["rs", "-l", "app=orph"]);
            rs.len() == 1 && owner_uids(&rs[0]).is_empty()
        },
    );
    let rs = items(&server, &["rs", "-l", "app=orph"]);
    let rs_uid = rs[0]["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let rs_name = rs[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pods = items(&server, &["pods", "-l", "app=orph"]);
    assert_eq!(pods.len(), 2);
    assert!(pods.iter().all(|p| owner_uids(p) == [rs_uid.clone()]));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        items(&server, &["pods", "-l", "app=orph"]).len(),
        2,
        "orphaned pods must stay"
    );
    server.kubectl_ok(&["delete", "rs", &rs_name]);
    wait_for(
        "orph's pods to be collected with their replica set",
        Duration::from_secs(30),
        || items(&server, &["pods", "-l", "app=orph"]).is_empty(),
    );

    // Adoption: a bare pod matching a new ReplicaSet's selector becomes one of its replicas.
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: stray, labels: {app: adopt}}\nspec:\n  containers: [{name: c, image: nginx}]\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: adopter}
spec:
  replicas: 2
  selector: {matchLabels: {app: adopt}}
  template:
    metadata: {labels: {app: adopt}}
    spec:
      containers: [{name: c, image: nginx}]
"#,
    );
    assert!(out.status.success(), "{}", text(&out));
    wait_for(
        "the replica set to adopt the stray pod and make one more",
        Duration::from_secs(30),
        || {
            let pods = items(&server, &["pods", "-l", "app=adopt"]);
            pods.len() == 2 && pods.iter().all(|p| !owner_uids(p).is_empty())
        },
    );
    let stray = json(&server, &["pod", "stray"]);
    assert_eq!(
        stray["metadata"]["ownerReferences"][0]["kind"],
        "ReplicaSet"
    );
    assert_eq!(stray["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        stray["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
        true
    );

    // Release: a pod relabelled out of the selector is let go and replaced.
    server.kubectl_ok(&["label", "pod", "stray", "app=gone", "--overwrite"]);
    wait_for(
        "the relabelled pod to be released and replaced",
        Duration::from_secs(30),
        || {
            owner_uids(&json(&server, &["pod", "stray"])).is_empty()
                && items(&server, &["pods", "-l", "app=adopt"]).len() == 2
        },
    );
    // The replacement becomes Ready through the fake kubelet a moment later, so the status is awaited.
    wait_for(
        "the replica set's status to count the replacement",
        Duration::from_secs(30),
        || {
            let rs = json(&server, &["rs", "adopter"]);
            rs["status"]["replicas"] == 2 && rs["status"]["readyReplicas"] == 2
        },
    );
    assert_eq!(
        json(&server, &["rs", "adopter"])["status"]["observedGeneration"],
        1
    );
}

#[test]
fn drain_honours_a_pod_disruption_budget() {
    let server = ApiServer::start_with(&["--controllers"]);
    for n in ["n1", "n2"] {
        create_node(&server, n, &[], "4", "8Gi", 110);
    }
    let _kubelet = FakeKubelet::start(&server, &["n1", "n2"]);
    deploy(&server, "web", 2);
    let out = server.kubectl_stdin(
        &["create", "-f", "-"],
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  minAvailable: 2\n  selector: {matchLabels: {app: web}}\n",
    );
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the budget's status", Duration::from_secs(30), || {
        let pdb = json(&server, &["pdb", "web"]);
        pdb["status"]["currentHealthy"] == 2 && pdb["status"]["expectedPods"] == 2
    });
    let pdb = json(&server, &["pdb", "web"]);
    assert_eq!(pdb["status"]["desiredHealthy"], 2);
    assert_eq!(pdb["status"]["disruptionsAllowed"], 0, "{pdb}");
    assert_eq!(pdb["status"]["conditions"][0]["reason"], "InsufficientPods");
    let get = server.kubectl_ok(&["get", "pdb", "web"]);
    let row: Vec<&str> = get
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["web", "2", "N/A", "0"], "{get}");

    // Every pod is needed: drain cannot evict and gives up.
    let out = server.kubectl(&["drain", "n1", "--timeout=6s"]);
    assert!(!out.status.success(), "drain must fail: {}", text(&out));
    assert!(text(&out).contains("disruption budget"), "{}", text(&out));
    assert_eq!(items(&server, &["pods", "-l", "app=web"]).len(), 2);

    // One may go: drain evicts it, the ReplicaSet replaces it on n2.
    server.kubectl_ok(&[
        "patch",
        "pdb",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"minAvailable":1}}"#,
    ]);
    wait_for("one disruption allowed", Duration::from_secs(30), || {
        json(&server, &["pdb", "web"])["status"]["disruptionsAllowed"] == 1
    });
    let out = server.kubectl(&["drain", "n1", "--timeout=60s"]);
    assert!(out.status.success(), "drain failed: {}", text(&out));
    assert!(text(&out).contains("node/n1 drained"), "{}", text(&out));
    wait_for("both replicas on n2", Duration::from_secs(30), || {
        let pods = items(&server, &["pods", "-l", "app=web"]);
        pods.len() == 2 && pods.iter().all(|p| p["spec"]["nodeName"] == "n2")
    });
}
