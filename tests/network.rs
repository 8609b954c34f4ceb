//! The pod network end to end. The node IPAM controller against the standalone API server
//! (no Docker), then a real two-node cluster: pod CIDRs per node, network namespaces attached
//! with `kcluster node net attach`, containers from a locally built busybox image running in
//! them with `kcluster node run-once --netns`, talking within a node, to the node, and across
//! nodes; addresses kept across a node restart; detach freeing the address.

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn node_yaml(name: &str) -> String {
    format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n")
}

fn pod_cidr(server: &ApiServer, node: &str) -> String {
    stdout(&server.kubectl(&["get", "node", node, "-o", "jsonpath={.spec.podCIDR}"]))
}

#[test]
fn node_ipam_gives_each_node_its_own_block_and_reuses_freed_ones() {
    // Room for two /24s only.
    let server = ApiServer::start_with(&["--controllers", "--pod-subnet", "10.9.0.0/23"]);
    for node in ["n1", "n2"] {
        let out = server.kubectl_stdin(&["create", "-f", "-"], &node_yaml(node));
        assert!(out.status.success(), "{}", text(&out));
    }
    wait_until(
        "both nodes to get a pod CIDR",
        Duration::from_secs(30),
        || {
            let (a, b) = (pod_cidr(&server, "n1"), pod_cidr(&server, "n2"));
            if a.is_empty() || b.is_empty() {
                return Err(format!("n1={a:?} n2={b:?}"));
            }
            Ok(())
        },
    );
    let mut blocks = vec![pod_cidr(&server, "n1"), pod_cidr(&server, "n2")];
    blocks.sort();
    assert_eq!(blocks, ["10.9.0.0/24", "10.9.1.0/24"]);
    let list = server.kubectl_ok(&["get", "node", "n1", "-o", "jsonpath={.spec.podCIDRs[*]}"]);
    assert_eq!(list, pod_cidr(&server, "n1"));

    // The subnet is full: the third node waits, with an event saying why.
    let out = server.kubectl_stdin(&["create", "-f", "-"], &node_yaml("n3"));
    assert!(out.status.success(), "{}", text(&out));
    wait_until("a CIDRNotAvailable event", Duration::from_secs(30), || {
        let events = stdout(&server.kubectl(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            "involvedObject.name=n3",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ]));
        if events.contains("CIDRNotAvailable: Node n3 status is now: CIDRNotAvailable") {
            Ok(())
        } else {
            Err(events)
        }
    });
    assert_eq!(pod_cidr(&server, "n3"), "");

    // Deleting a node frees its block for the waiting one.
    let freed = pod_cidr(&server, "n1");
    server.kubectl_ok(&["delete", "node", "n1"]);
    wait_until("n3 to get the freed block", Duration::from_secs(60), || {
        let got = pod_cidr(&server, "n3");
        if got == freed {
            Ok(())
        } else {
            Err(format!("n3 has {got:?}, want {freed:?}"))
        }
    });
}

/// A test image removed when the test ends.
struct TestImage {
    tag: String,
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

fn build_image(sandbox: &Sandbox, tag: &str) -> TestImage {
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "these tests need Debian's static busybox at /bin/busybox: apt-get install -y busybox-static"
    );
    let context = sandbox.path().join("image");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy(busybox, context.join("busybox")).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN mkdir /www && echo hello-from-pod > /www/index.html\n",
    )
    .unwrap();
    let image = TestImage {
        tag: tag.to_string(),
    };
    let out = docker(&["build", "-q", "-t", tag, context.to_str().unwrap()]);
    assert!(out.status.success(), "docker build failed: {}", text(&out));
    image
}

fn node_cmd(node: &str, args: &[&str]) -> Output {
    let mut all = vec!["exec", node, "/kcluster", "node"];
    all.extend_from_slice(args);
    docker(&all)
}

/// `kcluster node net attach`, retried while the agent is still setting the network up.
fn attach(node: &str, uid: &str) -> Value {
    let mut answer = Value::Null;
    wait_until(
        &format!("{uid} to attach on {node}"),
        Duration::from_secs(60),
        || {
            let out = node_cmd(node, &["net", "attach", uid]);
            if !out.status.success() {
                return Err(text(&out));
            }
            answer =
                serde_json::from_slice(&out.stdout).map_err(|e| format!("{e}: {}", text(&out)))?;
            Ok(())
        },
    );
    answer
}

fn ip_of(answer: &Value) -> String {
    answer["ip"]
        .as_str()
        .expect("attach printed no ip")
        .to_string()
}

/// Starts busybox httpd in the background inside `netns` (a pod's, or the node's own).
fn serve(node: &str, image: &str, netns: &str, id: &str, port: &str) {
    let out = docker(&[
        "exec",
        "-d",
        node,
        "/kcluster",
        "node",
        "run-once",
        "--image",
        image,
        "--netns",
        netns,
        "--id",
        id,
        "--timeout",
        "300",
        "--",
        "httpd",
        "-f",
        "-p",
        port,
        "-h",
        "/www",
    ]);
    assert!(out.status.success(), "{}", text(&out));
}

/// An HTTP GET from a container in `netns` (busybox nc: the static wget cannot run in scratch).
fn get_from(node: &str, image: &str, netns: &str, target: &str, port: &str) -> Output {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {target} {port}");
    node_cmd(
        node,
        &[
            "run-once", "--image", image, "--netns", netns, "--", "sh", "-c", &script,
        ],
    )
}

fn reaches(node: &str, image: &str, netns: &str, target: &str, port: &str) {
    wait_until(
        &format!("{netns} on {node} to reach {target}:{port}"),
        Duration::from_secs(30),
        || {
            let out = get_from(node, image, netns, target, port);
            if stdout(&out).contains("hello-from-pod") {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );
}

fn allocations(node: &str) -> Value {
    let out = node_cmd(node, &["net", "ls"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("net ls printed no JSON")
}

#[test]
fn pods_reach_each_other_within_and_across_nodes_and_keep_their_addresses() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("net");
    let tag = format!("kcluster-e2e/netbox:{name}");
    let _image = build_image(&sandbox, &tag);
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    let server = format!("{name}-server-0");
    let worker = format!("{name}-worker-0");

    // A node is Ready only once its pod network is set up, so this works at once.
    for node in [&server, &worker] {
        assert_eq!(allocations(node)["pods"], serde_json::json!({}));
    }

    // Each node gets its own block of the pod subnet.
    let cidrs = cluster.wait_for(
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.spec.podCIDR}{\" \"}{end}",
        ],
        Duration::from_secs(30),
        |out| out.split_whitespace().count() == 2,
    );
    let cidrs: Vec<&str> = cidrs.split_whitespace().collect();
    assert_ne!(cidrs[0], cidrs[1], "{cidrs:?}");
    for c in &cidrs {
        assert!(
            c.starts_with("10.244.") && c.ends_with(".0/24"),
            "{cidrs:?}"
        );
    }
    let worker_cidr =
        cluster.kubectl_ok(&["get", "node", &worker, "-o", "jsonpath={.spec.podCIDR}"]);
    let worker_prefix = worker_cidr.trim_end_matches("0/24");
    let node_ip = cluster.kubectl_ok(&[
        "get",
        "node",
        &worker,
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    assert!(
        !node_ip.starts_with("10.244."),
        "InternalIP is the bridge's: {node_ip}"
    );

    let out = sandbox.kcluster(&["image", "load", &tag, "--name", &name]);
    assert!(out.status.success(), "image load failed: {}", text(&out));

    // Two pods on the worker, one on the server.
    let a = attach(&worker, "pod-a");
    let b = attach(&worker, "pod-b");
    let c = attach(&server, "pod-c");
    let (ip_a, ip_b, ip_c) = (ip_of(&a), ip_of(&b), ip_of(&c));
    assert_ne!(ip_a, ip_b);
    assert!(ip_a.starts_with(worker_prefix), "{a} not in {worker_cidr}");
    assert_eq!(a["gateway"], format!("{worker_prefix}1"), "{a}");
    assert_eq!(a["prefixLen"], 24, "{a}");
    // Attaching again is a no-op that gives the same address.
    assert_eq!(ip_of(&attach(&worker, "pod-a")), ip_a);

    // The pod sees eth0 with its address and a default route through the gateway.
    let out = node_cmd(
        &worker,
        &[
            "run-once",
            "--image",
            &tag,
            "--netns",
            "/run/kcluster/netns/pod-b",
            "--",
            "sh",
            "-c",
            "ip -4 addr show eth0; ip route",
        ],
    );
    let shown = stdout(&out);
    assert!(shown.contains(&format!("inet {ip_b}/24")), "{}", text(&out));
    assert!(
        shown.contains(&format!("default via {worker_prefix}1 dev eth0")),
        "{}",
        text(&out)
    );

    let netns_a = "/run/kcluster/netns/pod-a";
    let netns_b = "/run/kcluster/netns/pod-b";
    serve(&worker, &tag, netns_a, "srv-a", "8080");
    serve(&server, &tag, "/run/kcluster/netns/pod-c", "srv-c", "8080");
    serve(&worker, &tag, "/proc/1/ns/net", "srv-node", "18080");

    // Same node, the node itself (its address and the gateway), and across nodes both ways.
    reaches(&worker, &tag, netns_b, &ip_a, "8080");
    reaches(&worker, &tag, netns_b, &node_ip, "18080");
    reaches(
        &worker,
        &tag,
        netns_b,
        &format!("{worker_prefix}1"),
        "18080",
    );
    reaches(&worker, &tag, netns_b, &ip_c, "8080");
    reaches(&server, &tag, "/run/kcluster/netns/pod-c", &ip_a, "8080");

    // A restart of the worker (agent and network namespace both) keeps the address table:
    // the same pod gets its address back and a new one gets none of the old ones.
    let out = docker(&["restart", "-t", "2", &worker]);
    assert!(out.status.success(), "{}", text(&out));
    let a2 = attach(&worker, "pod-a");
    assert_eq!(
        ip_of(&a2),
        ip_a,
        "pod-a's address changed across the restart"
    );
    let d = attach(&worker, "pod-d");
    let ip_d = ip_of(&d);
    assert!(
        ip_d != ip_a && ip_d != ip_b,
        "pod-d got a used address {ip_d}"
    );
    // Routes come back after the restart too.
    serve(&worker, &tag, netns_a, "srv-a2", "8080");
    reaches(&worker, &tag, "/run/kcluster/netns/pod-d", &ip_a, "8080");
    reaches(&worker, &tag, "/run/kcluster/netns/pod-d", &ip_c, "8080");

    // Detach frees the address.
    let before = allocations(&worker);
    assert_eq!(before["pods"]["pod-b"], ip_b, "{before}");
    let out = node_cmd(&worker, &["net", "detach", "pod-b"]);
    assert!(out.status.success(), "{}", text(&out));
    let after = allocations(&worker);
    assert!(after["pods"].get("pod-b").is_none(), "{after}");
    assert_eq!(after["pods"]["pod-a"], ip_a, "{after}");
    // Detaching twice is fine.
    let out = node_cmd(&worker, &["net", "detach", "pod-b"]);
    assert!(out.status.success(), "{}", text(&out));

    // Keeping only some pods detaches the rest.
    let out = node_cmd(&worker, &["net", "retain", "pod-a"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(stdout(&out), "pod-d\n", "{}", text(&out));
    let pods = allocations(&worker)["pods"].clone();
    assert_eq!(pods, serde_json::json!({"pod-a": ip_a}), "{pods}");
}
