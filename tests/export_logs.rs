//! `kcluster export logs`: everything a bug report needs, from a real cluster with a real pod —
//! each container's inspect and log, the pod's container log kept on its node, the cluster's
//! objects, kubectl's views, the config — as a folder and as a .tar.gz; bad input refused.

mod common;

use common::*;
use std::path::Path;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every file under `dir`, relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(
                    path.strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[test]
fn export_logs_collects_nodes_pods_objects_and_config() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("xl");
    let tag = format!("kcluster-e2e/xl-busybox:{name}");
    let _image = images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    cluster.load_image(&tag);
    let worker = format!("{name}-worker-0");
    cluster.kubectl_ok(&[
        "run",
        "talker",
        &format!("--image={tag}"),
        "--overrides",
        &format!(r#"{{"spec":{{"nodeName":"{worker}"}}}}"#),
        "--",
        "sh",
        "-c",
        "echo export-logs-marker; sleep 3600",
    ]);
    cluster.wait_pod_ready("talker");
    let uid = cluster.kubectl_ok(&["get", "pod", "talker", "-o", "jsonpath={.metadata.uid}"]);
    // The container writes its line right after it starts: wait for kubectl to see it.
    wait_output(
        "the pod's log line",
        || stdout(&cluster.kubectl(&["logs", "talker"])),
        &["export-logs-marker"],
    );

    let dir = sandbox.path().join("bundle");
    let out = sandbox.kcluster(&["export", "logs", dir.to_str().unwrap(), "--name", &name]);
    assert!(out.status.success(), "export logs failed: {}", text(&out));
    let all = files(&dir);
    assert!(
        !all.iter().any(|f| f == "errors.txt"),
        "parts could not be read: {}",
        read(&dir.join("errors.txt"))
    );
    for node in [format!("{name}-server-0"), worker.clone()] {
        let inspect = read(&dir.join(&node).join("inspect.json"));
        assert!(
            inspect.contains(&format!("\"/{node}\"")),
            "{node} inspect: {inspect:.200}"
        );
        // A node's log is its agent's: it registered the node under its own name.
        let log = read(&dir.join(&node).join("logs.txt"));
        assert!(
            log.contains(&node),
            "{node}'s log does not mention it: {log:.500}"
        );
    }
    assert!(
        all.contains(&format!("kcluster-{name}-ports/logs.txt")),
        "no port publisher log in {all:?}"
    );
    let pod_log = format!("{worker}/pods/default_talker_{uid}/talker-0/container.log");
    assert!(all.contains(&pod_log), "no {pod_log} in {all:?}");
    assert!(read(&dir.join(&pod_log)).contains("export-logs-marker"));
    let pods = read(&dir.join("kubernetes/pods.json"));
    assert!(pods.contains(&uid), "pods.json lacks the pod");
    let nodes = read(&dir.join("kubernetes/nodes.json"));
    assert!(nodes.contains(&worker), "nodes.json lacks {worker}");
    let events = read(&dir.join("kubernetes/events.json"));
    assert!(
        events.contains("talker"),
        "events.json lacks the pod's events"
    );
    let describe = read(&dir.join("kubernetes/describe-pods.txt"));
    assert!(
        describe.contains("Name:") && describe.contains("talker"),
        "describe-pods.txt: {describe:.300}"
    );
    let config = read(&dir.join("cluster-config.json"));
    assert!(
        config.contains(&format!("\"name\": \"{name}\"")),
        "config: {config}"
    );
    assert!(read(&dir.join("versions.txt")).contains("docker"));
    // Nothing secret: no environment, no keys.
    for f in &all {
        let body = read(&dir.join(f));
        assert!(!body.contains("PRIVATE KEY"), "{f} holds a private key");
        assert!(
            !body.contains("KUBERNETES_SERVICE_HOST"),
            "{f} holds a container environment"
        );
    }

    // The same as a .tar.gz.
    let archive = sandbox.path().join("bundle.tar.gz");
    let out = sandbox.kcluster(&["export", "logs", archive.to_str().unwrap(), "--name", &name]);
    assert!(
        out.status.success(),
        "export logs to .tar.gz failed: {}",
        text(&out)
    );
    let listing = std::process::Command::new("tar")
        .args(["tzf", archive.to_str().unwrap()])
        .output()
        .expect("tar");
    assert!(listing.status.success(), "not a tar.gz: {}", text(&listing));
    let listing = stdout(&listing);
    assert!(
        listing.contains(&format!("bundle/{pod_log}")),
        "the archive lacks the pod log: {listing}"
    );

    // Bad input changes nothing: a non-empty folder, an existing archive, no such cluster.
    let before = files(&dir);
    let out = sandbox.kcluster(&["export", "logs", dir.to_str().unwrap(), "--name", &name]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("already exists and is not empty"),
        "{}",
        text(&out)
    );
    assert_eq!(files(&dir), before);
    let out = sandbox.kcluster(&["export", "logs", archive.to_str().unwrap(), "--name", &name]);
    assert!(!out.status.success());
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    let missing = sandbox.path().join("never");
    let out = sandbox.kcluster(&[
        "export",
        "logs",
        missing.to_str().unwrap(),
        "--name",
        "no-such-cluster",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no cluster named \"no-such-cluster\""),
        "{}",
        text(&out)
    );
    assert!(
        !missing.exists(),
        "a failed export left {}",
        missing.display()
    );
}
