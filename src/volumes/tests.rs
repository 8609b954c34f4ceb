//! Volumes that need no API server: emptyDir, hostPath, and how mounts are resolved.

use super::*;

fn context(state: &Path) -> VolumeContext {
    // Nothing here talks to it: emptyDir and hostPath volumes are local.
    let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
    VolumeContext {
        client: kube::Client::try_from(config).unwrap(),
        state_dir: state.to_path_buf(),
        node_name: "n1".into(),
    }
}

fn pod(host: &Path) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web-0", "namespace": "default", "uid": "uid-1"},
        "spec": {
            "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "host", "hostPath": {"path": host.join("data").to_str().unwrap(), "type": "DirectoryOrCreate"}},
            ],
            "containers": [{"name": "c", "image": "i",
                "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "PLAIN", "value": "p"}],
                "volumeMounts": [
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "scratch", "mountPath": "/logs", "subPathExpr": "logs/$(POD)"},
                    {"name": "host", "mountPath": "/host", "readOnly": true, "subPath": "x/$(PLAIN)",
                     "mountPropagation": "HostToContainer"},
                ]}],
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn local_volumes_mount_with_sub_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(&tmp.path().join("state"));
    let pod = pod(tmp.path());
    let volumes = setup(&ctx, &pod).await.unwrap();
    let container = &pod.spec.as_ref().unwrap().containers[0];
    let mounts = volumes.mounts_for(container).unwrap();

    let scratch = tmp
        .path()
        .join("state/pods/uid-1/volumes/kubernetes.io~empty-dir/scratch");
    assert_eq!(mounts[0].source, scratch);
    assert_eq!(mounts[0].destination, "/scratch");
    assert!(!mounts[0].read_only);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&scratch).unwrap().permissions().mode() & 0o7777,
        0o777
    );
    // subPathExpr takes the pod name through the downward API env; the directory is made.
    assert_eq!(
        mounts[1].source,
        scratch.canonicalize().unwrap().join("logs/web-0")
    );
    assert!(mounts[1].source.is_dir());
    // subPath is literal: no expansion.
    let host = tmp.path().join("data").canonicalize().unwrap();
    assert_eq!(mounts[2].source, host.join("x/$(PLAIN)"));
    assert!(mounts[2].read_only);

    teardown(&ctx, "uid-1").await.unwrap();
    assert!(!scratch.exists());
    assert!(host.exists(), "hostPath contents stay");
}

#[tokio::test]
async fn bad_volumes_fail_with_kubernetes_wording() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(&tmp.path().join("state"));
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-2"},
        "spec": {"volumes": [{"name": "v", "hostPath": {"path": file.to_str().unwrap(), "type": "Directory"}}],
                 "containers": [{"name": "c", "image": "i"}]}
    }))
    .unwrap();
    let err = setup(&ctx, &pod).await.unwrap_err();
    assert_eq!(
        err.event_message(),
        format!(
            "MountVolume.SetUp failed for volume \"v\" : hostPath type check failed: {} is not a directory",
            file.display()
        )
    );
}

#[tokio::test]
async fn sub_path_expr_needs_its_variables() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(&tmp.path().join("state"));
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "uid-3"},
        "spec": {"volumes": [{"name": "v", "emptyDir": {}}],
                 "containers": [{"name": "c", "image": "i",
                    "volumeMounts": [{"name": "v", "mountPath": "/v", "subPathExpr": "$(NOPE)"},]}]}
    }))
    .unwrap();
    let volumes = setup(&ctx, &pod).await.unwrap();
    let err = volumes
        .mounts_for(&pod.spec.as_ref().unwrap().containers[0])
        .unwrap_err();
    assert_eq!(err.to_string(), "missing value for NOPE");
    let escaping: Container = serde_json::from_value(serde_json::json!({"name": "c",
        "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "../../etc"}]}))
    .unwrap();
    assert!(volumes.mounts_for(&escaping).is_err());
    teardown(&ctx, "uid-3").await.unwrap();
}
