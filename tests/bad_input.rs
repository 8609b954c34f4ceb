//! Bad input gets a clear error and changes nothing.

mod common;

use common::*;

#[test]
fn docker_unreachable_names_the_socket() {
    let sandbox = Sandbox::new();
    let out = sandbox
        .kcluster_cmd(&["create", "--name", "nodocker"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains("unix:///nonexistent/docker.sock") && err.contains("DOCKER_HOST"),
        "{err}"
    );
    assert!(
        !sandbox.kubeconfig().exists(),
        "kubeconfig written despite the failure"
    );
}

#[test]
fn bad_config_and_names_fail_before_anything_is_created() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let config = sandbox.path().join("bad.yaml");
    std::fs::write(&config, "apiVersion: kcluster.dev/v1alpha1\nkind: Cluster\nname: badcfg\nnodes:\n  - role: server\n    extraPortMapings:\n      - containerPort: 80\n").unwrap();
    let out = sandbox.kcluster(&["create", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out);
    assert!(
        err.contains("extraPortMapings") && err.contains("line"),
        "{err}"
    );
    assert!(
        docker_objects("container", "badcfg").is_empty()
            && docker_objects("network", "badcfg").is_empty()
    );

    let out = sandbox.kcluster(&["create", "--name", "Bad_Name"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("Bad_Name"), "{}", text(&out));

    let out = sandbox.kcluster(&["create", "--wait", "soon"]);
    assert!(!out.status.success(), "a bad flag value must fail");

    // A port that is taken is refused before anything exists.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let name = unique_name("port");
    let out = sandbox.kcluster(&["create", "--name", &name, "--api-port", &port]);
    assert!(!out.status.success());
    assert!(text(&out).contains(&port), "{}", text(&out));
    assert!(
        docker_objects("container", &name).is_empty()
            && docker_objects("network", &name).is_empty()
    );

    // Server counts outside 1..=7, an etcd binary for a cluster that runs none, and an etcd
    // binary that is not etcd: refused before anything exists.
    let name = unique_name("srv");
    for (args, needle) in [
        (vec!["--servers", "9"], "9"),
        (vec!["--servers", "0"], "0"),
        (
            vec!["--etcd-binary", "/bin/sh"],
            "--etcd-binary is for clusters with several servers",
        ),
        (
            vec!["--servers", "3", "--etcd-binary", "/nonexistent/etcd"],
            "/nonexistent/etcd",
        ),
    ] {
        let mut all = vec!["create", "--name", name.as_str()];
        all.extend(args.iter().copied());
        let out = sandbox.kcluster(&all);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
        assert!(
            docker_objects("container", &name).is_empty()
                && docker_objects("network", &name).is_empty(),
            "{args:?} left something behind"
        );
    }
}

/// The cluster's nodes and its publisher; the publisher's port proxies (the Ingress
/// controller's among them) come and go with Services, asynchronously, so they are left out.
fn cluster_containers(cluster: &str) -> Vec<String> {
    let proxies = format!("kcluster-{cluster}-port-");
    let mut names = docker_objects("container", cluster);
    names.retain(|n| !n.starts_with(&proxies));
    names.sort();
    names
}

/// What a one-node cluster runs: its node and its host-port publisher.
fn node_and_publisher(cluster: &str) -> Vec<String> {
    let mut names = vec![
        format!("{cluster}-server-0"),
        format!("kcluster-{cluster}-ports"),
    ];
    names.sort();
    names
}

#[test]
fn a_taken_name_is_refused_and_two_clusters_live_side_by_side() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let first = unique_name("twin-a");
    let second = unique_name("twin-b");
    let a = Cluster::create(&sandbox, &first, &[]);
    let b = Cluster::create(&sandbox, &second, &["--no-switch-context"]);

    let out = sandbox.kcluster(&["create", "--name", &first]);
    assert!(!out.status.success());
    assert!(text(&out).contains("already exists"), "{}", text(&out));
    // The refused create removed nothing of the existing cluster: its node and port publisher.
    assert_eq!(cluster_containers(&first), node_and_publisher(&first));

    let nodes_a = a.kubectl_ok(&["get", "nodes", "-o", "name"]);
    let nodes_b = b.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert_eq!(nodes_a.trim(), format!("node/{first}-server-0"));
    assert_eq!(nodes_b.trim(), format!("node/{second}-server-0"));
    let config = std::fs::read_to_string(sandbox.kubeconfig()).unwrap();
    assert!(
        config.contains(&format!("current-context: kcluster-{first}")),
        "--no-switch-context switched:\n{config}"
    );
}

#[test]
fn a_failed_create_removes_what_it_made_unless_retained() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    // No cluster is Ready within a millisecond: create fails after making its containers.
    let name = unique_name("fail");
    let out = sandbox.kcluster(&["create", "--name", &name, "--wait", "1ms"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("was not Ready within"),
        "{}",
        text(&out)
    );
    assert!(
        docker_objects("container", &name).is_empty(),
        "containers left after a failed create"
    );
    assert!(
        docker_objects("network", &name).is_empty() && docker_objects("volume", &name).is_empty()
    );
    let config = std::fs::read_to_string(sandbox.kubeconfig()).unwrap_or_default();
    assert!(!config.contains(&name), "kubeconfig entry left:\n{config}");

    let kept = unique_name("kept");
    let out = sandbox.kcluster(&["create", "--name", &kept, "--wait", "1ms", "--retain"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--retain keeps"), "{}", text(&out));
    assert_eq!(cluster_containers(&kept), node_and_publisher(&kept));
    let out = sandbox.kcluster(&["delete", "--name", &kept]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(docker_objects("container", &kept).is_empty());
}
