//! Cluster lifecycle end to end: create, inspect with kubectl, and delete, against real Docker.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn server_and_two_workers_register_ready_and_delete_cleanly() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    // Another tool's context is already there and must survive create and delete.
    std::fs::write(
        sandbox.kubeconfig(),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster:\n    server: https://10.0.0.1:6443\ncontexts:\n- name: other\n  context:\n    cluster: other\n    user: other\nusers:\n- name: other\n  user:\n    token: abc\ncurrent-context: other\npreferences: {}\n",
    )
    .unwrap();
    let name = unique_name("life");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "2"]);

    let wide = cluster.kubectl_ok(&["get", "nodes", "-o", "wide"]);
    let lines: Vec<&str> = wide.lines().collect();
    assert!(
        lines[0].contains("INTERNAL-IP")
            && lines[0].contains("OS-IMAGE")
            && lines[0].contains("CONTAINER-RUNTIME"),
        "{wide}"
    );
    assert_eq!(lines.len(), 4, "three nodes expected:\n{wide}");
    for line in &lines[1..] {
        assert!(line.contains(" Ready "), "node not Ready: {line}");
        assert!(
            line.contains("kcluster://"),
            "container runtime missing: {line}"
        );
        assert!(
            line.contains("172.") || line.contains("10.") || line.contains("192.168."),
            "internal IP missing: {line}"
        );
    }
    assert!(
        wide.contains(&format!("{name}-server-0")) && wide.contains("control-plane"),
        "{wide}"
    );
    assert!(wide.contains(&format!("{name}-worker-1")), "{wide}");

    let describe = cluster.kubectl_ok(&["describe", "node", &format!("{name}-worker-1")]);
    for part in [
        "Capacity:",
        "Allocatable:",
        "Conditions:",
        "KubeletReady",
        "Addresses:",
        "InternalIP:",
        "System Info:",
        "Kernel Version:",
        "Lease:",
        "HolderIdentity:",
        "RenewTime:",
    ] {
        assert!(
            describe.contains(part),
            "describe node lacks {part}:\n{describe}"
        );
    }

    let version = cluster.kubectl_ok(&["version", "-o", "json"]);
    assert!(version.contains("\"minor\": \"32\""), "{version}");
    let resources = cluster.kubectl_ok(&["api-resources"]);
    for r in ["namespaces", "nodes", "leases", "coordination.k8s.io"] {
        assert!(
            resources.contains(r),
            "api-resources lacks {r}:\n{resources}"
        );
    }
    let info = cluster.kubectl_ok(&["cluster-info"]);
    assert!(info.contains("is running at https://127.0.0.1:"), "{info}");
    let namespaces = cluster.kubectl_ok(&["get", "namespaces"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.contains(ns), "{namespaces}");
    }

    let list = stdout(&sandbox.kcluster(&["list"]));
    let row = list
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{list}"));
    assert!(
        row.contains("1/1") && row.contains("2/2") && row.contains("running"),
        "{row}"
    );
    let nodes = stdout(&sandbox.kcluster(&["get", "nodes", "--name", &name]));
    assert!(
        nodes.contains(&format!("{name}-worker-0"))
            && nodes.contains("worker")
            && nodes.contains("running"),
        "{nodes}"
    );

    let internal = stdout(&sandbox.kcluster(&["get", "kubeconfig", "--name", &name, "--internal"]));
    assert!(
        internal.contains(&format!("https://{name}-server-0:6443")),
        "{internal}"
    );
    let external = stdout(&sandbox.kcluster(&["get", "kubeconfig", "--name", &name]));
    assert!(
        external.contains("https://127.0.0.1:") && external.contains("client-key-data"),
        "{external}"
    );

    let config = std::fs::read_to_string(sandbox.kubeconfig()).unwrap();
    assert!(
        config.contains("name: other")
            && config.contains(&format!("current-context: kcluster-{name}")),
        "{config}"
    );

    drop(cluster);
    assert!(
        docker_objects("container", &name).is_empty(),
        "containers left behind"
    );
    assert!(
        docker_objects("network", &name).is_empty(),
        "network left behind"
    );
    assert!(
        docker_objects("volume", &name).is_empty(),
        "volumes left behind"
    );
    let config = std::fs::read_to_string(sandbox.kubeconfig()).unwrap();
    assert!(
        !config.contains(&name),
        "kubeconfig entry left behind:\n{config}"
    );
    assert!(
        config.contains("name: other") && config.contains("token: abc"),
        "other entries lost:\n{config}"
    );
    // Deleting again is fine.
    let again = sandbox.kcluster(&["delete", "--name", &name]);
    assert!(again.status.success(), "{}", text(&again));
}

#[test]
fn stopped_node_turns_not_ready_and_restart_brings_state_back() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("restart");
    let cluster = Cluster::create_quick_to_notice(&sandbox, &name, &["--workers", "1"]);
    cluster.kubectl_ok(&["label", "namespace", "default", "kept=across-restarts"]);

    let worker = format!("{name}-worker-0");
    let out = docker(&["stop", &worker]);
    assert!(out.status.success(), "{}", text(&out));
    cluster.wait_for(&["get", "node", &worker], Duration::from_secs(60), |o| {
        o.contains("NotReady")
    });
    let describe = cluster.kubectl_ok(&["describe", "node", &worker]);
    assert!(
        describe.contains("NodeStatusUnknown")
            && describe.contains("node.kubernetes.io/unreachable"),
        "{describe}"
    );

    let out = docker(&["start", &worker]);
    assert!(out.status.success(), "{}", text(&out));
    cluster.wait_for(&["get", "node", &worker], Duration::from_secs(60), |o| {
        o.contains(" Ready ")
    });

    // The server node keeps its store on its volume across a restart.
    let server = format!("{name}-server-0");
    let out = docker(&["restart", &server]);
    assert!(out.status.success(), "{}", text(&out));
    cluster.wait_for(
        &["get", "namespace", "default", "--show-labels"],
        Duration::from_secs(60),
        |o| o.contains("kept=across-restarts"),
    );
    cluster.wait_for(&["get", "nodes"], Duration::from_secs(60), |o| {
        o.lines().skip(1).filter(|l| l.contains(" Ready ")).count() == 2
    });
}

#[test]
fn config_file_example_gives_labels_and_port_mappings() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/three-nodes.yaml");
    let name = unique_name("cfg");
    // --name overrides the file's name; everything else comes from the example.
    let cluster = Cluster::create(&sandbox, &name, &["--config", example]);
    let labelled = cluster.kubectl_ok(&["get", "nodes", "-l", "tier=frontend", "-o", "name"]);
    assert_eq!(labelled.trim(), format!("node/{name}-worker-0"));
    let ssd = cluster.kubectl_ok(&["get", "nodes", "-l", "example.com/disk=ssd", "-o", "name"]);
    assert_eq!(ssd.trim(), format!("node/{name}-worker-1"));
    let ports = stdout(&docker(&["port", &format!("{name}-server-0"), "80/tcp"]));
    assert!(ports.contains("127.0.0.1:8080"), "{ports}");
    let ready = cluster.kubectl_ok(&["get", "nodes", "--no-headers"]);
    assert_eq!(
        ready.lines().filter(|l| l.contains(" Ready ")).count(),
        3,
        "{ready}"
    );
}
