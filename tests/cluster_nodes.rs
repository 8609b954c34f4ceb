//! `kcluster node add` and `kcluster node delete` on a running cluster: a new worker with labels
//! from the flags registers, turns Ready and takes the pods that wait for it; a delete is held
//! back by a PodDisruptionBudget (the node stays cordoned), then drains and removes the Node,
//! the container and its volume once the budget allows it. Bad input changes nothing.

mod common;

use common::*;
use std::time::Duration;

fn deployment(name: &str, image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      nodeSelector: {{tier: extra}}
      terminationGracePeriodSeconds: 1
      containers:
      - {{name: c, image: {image}, command: ["sleep", "3600"]}}
"#
    )
}

fn pod_nodes(cluster: &Cluster, app: &str) -> Vec<String> {
    cluster
        .kubectl_ok(&[
            "get",
            "pods",
            "-l",
            &format!("app={app}"),
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
        ])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until both pods of `extra` are Pending (no node labelled tier=extra takes them).
fn wait_both_pending(cluster: &Cluster, what: &str) {
    wait_until(what, Duration::from_secs(60), || {
        let phases = cluster.kubectl_ok(&[
            "get",
            "pods",
            "-l",
            "app=extra",
            "-o",
            "jsonpath={.items[*].status.phase}",
        ]);
        if phases == "Pending Pending" {
            Ok(())
        } else {
            Err(phases)
        }
    });
}

#[test]
fn nodes_are_added_with_labels_and_deleted_after_a_drain_that_honours_budgets() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("nd");
    let tag = format!("kcluster-e2e/nd-busybox:{name}");
    let _image = images::build_busybox_image(&sandbox, &tag, "");
    let started = std::time::Instant::now();
    let at = |what: &str| eprintln!("cluster_nodes: {what} at {:.1?}", started.elapsed());
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    at("created");
    let new_node = format!("{name}-worker-1");

    // Pods that only a node labelled tier=extra can take wait for one.
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], &deployment("extra", &tag, 2));
    assert!(out.status.success(), "apply: {}", text(&out));
    wait_both_pending(&cluster, "the pods to wait for a tier=extra node");

    at("pending seen");
    // Bad input first: nothing may be created by any of these.
    for (args, message) in [
        (
            vec![
                "node",
                "add",
                "--name",
                &name,
                "--role",
                "server",
                "--etcd-binary",
                "/nonexistent/etcd",
            ],
            "cannot run /nonexistent/etcd --version",
        ),
        (
            vec![
                "node",
                "add",
                "--name",
                &name,
                "--etcd-binary",
                "/usr/bin/etcd",
            ],
            "--etcd-binary is for adding servers to a cluster that has one",
        ),
        (
            vec!["node", "add", "--name", &name, "--labels", "novalue"],
            "expected key=value",
        ),
        (
            vec!["node", "add", "--name", "no-such-cluster"],
            "no cluster named \"no-such-cluster\"",
        ),
    ] {
        let out = sandbox.kcluster(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(text(&out).contains(message), "{args:?}: {}", text(&out));
    }
    assert_eq!(
        docker_objects("container", &name)
            .iter()
            .filter(|c| c.contains("-worker-"))
            .count(),
        1,
        "a refused add left a container"
    );
    assert!(
        stdout(&docker(&["port", &format!("{name}-server-0"), "6443/tcp"])).contains("127.0.0.1:"),
        "a refused server add left the API port where it was"
    );
    assert!(
        !docker_objects("container", &name)
            .iter()
            .any(|c| c.ends_with("-lb")),
        "a refused server add started no balancer"
    );

    at("bad input done");
    let out = sandbox.kcluster(&["node", "add", "--name", &name, "--labels", "tier=extra"]);
    assert!(out.status.success(), "node add: {}", text(&out));
    let ready = cluster.kubectl_ok(&[
        "get",
        "node",
        &new_node,
        "-o",
        "jsonpath={.metadata.labels.tier} {.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready, "extra True", "the new node after `node add --wait`");
    at("node added");
    // Images are per node: the new one gets its own copy.
    let out = sandbox.kcluster(&["image", "load", &tag, "--name", &name, "--nodes", &new_node]);
    assert!(out.status.success(), "image load: {}", text(&out));
    let out = cluster.kubectl(&["rollout", "status", "deploy/extra", "--timeout=120s"]);
    assert!(out.status.success(), "extra: {}", text(&out));
    assert_eq!(
        pod_nodes(&cluster, "extra"),
        vec![new_node.clone(), new_node.clone()]
    );

    at("rolled out on the new node");
    // A budget that allows no disruption holds the delete back; the node stays, cordoned.
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: extra}\nspec:\n  minAvailable: 2\n  selector: {matchLabels: {app: extra}}\n";
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], pdb);
    assert!(out.status.success(), "pdb: {}", text(&out));
    wait_until(
        "the budget to count its pods",
        Duration::from_secs(60),
        || {
            let healthy = cluster.kubectl_ok(&[
                "get",
                "pdb",
                "extra",
                "-o",
                "jsonpath={.status.currentHealthy}/{.status.disruptionsAllowed}",
            ]);
            if healthy == "2/0" {
                Ok(())
            } else {
                Err(healthy)
            }
        },
    );
    let out = sandbox.kcluster(&[
        "node",
        "delete",
        &new_node,
        "--name",
        &name,
        "--timeout",
        "5s",
    ]);
    assert!(
        !out.status.success(),
        "a delete against the budget succeeded"
    );
    assert!(
        text(&out).contains("was not drained within 5s")
            && text(&out).contains("disruption budget"),
        "{}",
        text(&out)
    );
    assert_eq!(
        cluster.kubectl_ok(&[
            "get",
            "node",
            &new_node,
            "-o",
            "jsonpath={.spec.unschedulable}"
        ]),
        "true"
    );
    assert_eq!(
        pod_nodes(&cluster, "extra"),
        vec![new_node.clone(), new_node.clone()]
    );
    assert!(
        docker_objects("container", &name).contains(&new_node),
        "the container went although the drain failed"
    );

    at("held delete done");
    // Bad input: the only server, a node that does not exist.
    let server = format!("{name}-server-0");
    let out = sandbox.kcluster(&["node", "delete", &server, "--name", &name]);
    assert!(!out.status.success());
    assert!(text(&out).contains("only server"), "{}", text(&out));
    let out = sandbox.kcluster(&["node", "delete", "nope", "--name", &name]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("has no node \"nope\""),
        "{}",
        text(&out)
    );

    at("bad deletes done");
    // With the budget relaxed the drain completes and the node is gone everywhere.
    cluster.kubectl_ok(&["delete", "pdb", "extra"]);
    let out = sandbox.kcluster(&[
        "node",
        "delete",
        &new_node,
        "--name",
        &name,
        "--timeout",
        "60s",
    ]);
    assert!(out.status.success(), "node delete: {}", text(&out));
    assert!(gone(&cluster.kubectl(&["get", "node", &new_node])));
    assert!(!docker_objects("container", &name).contains(&new_node));
    assert!(
        !docker_objects("volume", &name)
            .iter()
            .any(|v| v.contains(&new_node)),
        "the node's volume is left: {:?}",
        docker_objects("volume", &name)
    );
    at("node deleted");
    // Its pods were evicted and wait again for a tier=extra node.
    wait_both_pending(&cluster, "the evicted pods to be replaced");
}
