//! Claims of the default StorageClass through the real kubectl against the standalone server
//! with its controllers: a claim gets `standard` and waits for its first pod; once the
//! scheduler has placed the pod, a node-local volume pinned to that node is bound; a pod that
//! comes back for the claim goes to the same node; deleting the claim deletes the volume.

mod common;
mod controllers_support;

use std::time::Duration;

use common::*;
use controllers_support::*;
use serde_json::Value;

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

fn json_of(server: &ApiServer, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&server.kubectl_ok(&all)).expect("kubectl printed JSON")
}

fn create(server: &ApiServer, yaml: &str) {
    let out = server.kubectl_stdin(&["create", "-f", "-"], yaml);
    assert!(out.status.success(), "create failed: {}", text(&out));
}

const CLAIM: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 2Gi}}\n";

fn pod_using_claim(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: busybox, volumeMounts: [{{name: d, mountPath: /data}}]}}]\n  volumes: [{{name: d, persistentVolumeClaim: {{claimName: data}}}}]\n"
    )
}

#[test]
fn claims_bind_to_a_local_volume_on_their_pods_node() {
    let server = ApiServer::start_with(&["--controllers"]);
    for n in NODES {
        create_node(&server, n, &[], "4", "8Gi", 110);
    }
    let _kubelet = FakeKubelet::start(&server, &NODES);

    wait_for("the default StorageClass", Duration::from_secs(30), || {
        server
            .kubectl(&["get", "storageclass", "standard"])
            .status
            .success()
    });
    let class = json_of(&server, &["storageclass", "standard"]);
    assert_eq!(class["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(class["reclaimPolicy"], "Delete");
    assert_eq!(
        class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
        "true"
    );
    assert!(
        server
            .kubectl_ok(&["get", "storageclass"])
            .contains("standard (default)")
    );

    create(&server, CLAIM);
    let claim = json_of(&server, &["pvc", "data"]);
    assert_eq!(claim["spec"]["storageClassName"], "standard");
    assert_eq!(claim["status"]["phase"], "Pending");
    // Without a consumer it says why it waits, and stays Pending.
    wait_for(
        "the WaitForFirstConsumer event",
        Duration::from_secs(30),
        || {
            server
                .kubectl_ok(&[
                    "get",
                    "events",
                    "--field-selector",
                    "involvedObject.name=data",
                ])
                .contains("waiting for first consumer to be created before binding")
        },
    );
    let claim = json_of(&server, &["pvc", "data"]);
    assert_eq!(claim["status"]["phase"], "Pending");
    assert!(claim["spec"].get("volumeName").is_none());

    create(&server, &pod_using_claim("user"));
    // The scheduler binds the pod once the claim is bound, a moment later: wait for both.
    wait_for(
        "the claim and then its pod to be bound",
        Duration::from_secs(60),
        || {
            json_of(&server, &["pvc", "data"])["status"]["phase"] == "Bound"
                && json_of(&server, &["pod", "user"])["spec"]["nodeName"].is_string()
        },
    );
    let pod = json_of(&server, &["pod", "user"]);
    let node = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(NODES.contains(&node.as_str()), "scheduled: {pod}");
    let claim = json_of(&server, &["pvc", "data"]);
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        node
    );
    assert_eq!(claim["status"]["capacity"]["storage"], "2Gi");
    let pv_name = claim["spec"]["volumeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pv = json_of(&server, &["pv", &pv_name]);
    assert_eq!(pv["status"]["phase"], "Bound");
    assert_eq!(pv["spec"]["storageClassName"], "standard");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(
        pv["spec"]["hostPath"]["path"],
        format!("/var/local-path-provisioner/{pv_name}")
    );
    assert_eq!(pv["spec"]["claimRef"]["name"], "data");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
            [0],
        node
    );

    // The pod's successors follow the volume to its node.
    server.kubectl_ok(&["delete", "pod", "user", "--grace-period", "0", "--force"]);
    for i in 0..3 {
        let name = format!("again-{i}");
        create(&server, &pod_using_claim(&name));
        wait_for("the pod to be scheduled", Duration::from_secs(30), || {
            json_of(&server, &["pod", &name])["spec"]["nodeName"].is_string()
        });
        assert_eq!(json_of(&server, &["pod", &name])["spec"]["nodeName"], node);
    }

    // The claim goes: its volume goes too.
    for i in 0..3 {
        server.kubectl_ok(&[
            "delete",
            "pod",
            &format!("again-{i}"),
            "--grace-period",
            "0",
            "--force",
        ]);
    }
    server.kubectl_ok(&["delete", "pvc", "data"]);
    wait_for("the volume to be deleted", Duration::from_secs(60), || {
        gone(&server.kubectl(&["get", "pv", &pv_name]))
    });
}
