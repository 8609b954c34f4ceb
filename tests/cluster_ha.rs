//! A control plane of three servers (`create --servers 3`): an etcd member on each server node,
//! the API load balancer `<name>-lb` holding the published port, controllers and scheduler on
//! the holder of their Leases. The server holding the Leases is killed while a writer keeps
//! creating ConfigMaps through the balancer: kubectl keeps working, the Leases and the
//! `kubernetes` Service's endpoints move, the controllers run on the new leader, and every
//! write kubectl was told succeeded is there afterwards — after the killed server comes back
//! and catches up, after a fourth server joins the running cluster (`node add --role server`),
//! and after a full stop and start of the cluster onto new addresses. A cluster made with one
//! server grows into three: its state moves into etcd, the balancer takes its API port, and it
//! survives losing the server that held the state.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn holder(cluster: &Cluster, lease: &str) -> String {
    let out = cluster.kubectl(&[
        "-n",
        "kube-system",
        "get",
        "lease",
        lease,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    // The identity is `<node>_<id>`.
    stdout(&out)
        .split('_')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn kubernetes_endpoints(cluster: &Cluster) -> Result<Vec<String>, String> {
    let out = cluster.kubectl(&[
        "get",
        "endpoints",
        "kubernetes",
        "-o",
        "jsonpath={.subsets[*].addresses[*].ip}",
    ]);
    if !out.status.success() {
        return Err(text(&out));
    }
    Ok(stdout(&out)
        .split_whitespace()
        .map(str::to_string)
        .collect())
}

/// Waits until the `kubernetes` Service lists `count` API servers.
fn wait_servers_behind_the_service(cluster: &Cluster, count: usize) {
    wait_until(
        &format!("the kubernetes Service lists {count} servers"),
        Duration::from_secs(60),
        || {
            let eps = kubernetes_endpoints(cluster)?;
            if eps.len() == count {
                Ok(())
            } else {
                Err(format!("endpoints {eps:?}"))
            }
        },
    );
}

/// Waits until a ConfigMap `name` is created (or found made by an earlier attempt that kubectl
/// did not see answered): the store takes writes.
fn wait_write(cluster: &Cluster, what: &str, name: &str) {
    wait_until(what, Duration::from_secs(60), || {
        let out = cluster.kubectl(&["--request-timeout=10s", "create", "configmap", name]);
        if out.status.success() || text(&out).contains("AlreadyExists") {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
}

/// The API address the cluster's kubeconfig context names.
fn kubeconfig_server(cluster: &Cluster) -> String {
    cluster.kubectl_ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])
}

fn container_ip(container: &str, network: &str) -> String {
    stdout(&docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        container,
    ]))
    .trim()
    .to_string()
}

/// A ConfigMap read through `server`'s own API (not the balancer), by its current address.
fn get_through_own_api(
    cluster: &Cluster,
    server: &str,
    network: &str,
    configmap: &str,
) -> Result<(), String> {
    let ip = container_ip(server, network);
    let out = cluster.kubectl(&[
        "--server",
        &format!("https://{ip}:6443"),
        "--tls-server-name",
        server,
        "--request-timeout=5s",
        "get",
        "configmap",
        configmap,
        "-o",
        "name",
    ]);
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out))
    }
}

fn config_maps(cluster: &Cluster) -> BTreeSet<String> {
    cluster
        .kubectl_ok(&["get", "configmaps", "-o", "name"])
        .lines()
        .filter_map(|l| l.strip_prefix("configmap/"))
        .map(str::to_string)
        .collect()
}

/// Creates ConfigMaps `w-<n>` one after another until stopped, keeping the names kubectl
/// reported as created.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl Writer {
    fn start(sandbox: &Sandbox, context: String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let kubeconfig = sandbox.kubeconfig();
        let home = sandbox.path().to_path_buf();
        let (s, a) = (stop.clone(), acked.clone());
        let thread = std::thread::spawn(move || {
            let mut failed = 0;
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                let name = format!("w-{n}");
                n += 1;
                let out = std::process::Command::new("kubectl")
                    .args(["--context", &context, "--request-timeout=5s"])
                    .args(["create", "configmap", &name, "--from-literal=n=1"])
                    .env("KUBECONFIG", &kubeconfig)
                    .env("HOME", &home)
                    .output()
                    .expect("cannot run kubectl");
                if out.status.success() {
                    a.lock().expect("lock").push(name);
                } else {
                    failed += 1;
                }
            }
            failed
        });
        Writer {
            stop,
            acked,
            thread: Some(thread),
        }
    }

    fn acked(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    /// Stops; returns the acknowledged names and how many attempts failed.
    fn finish(mut self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let failed = self
            .thread
            .take()
            .map(|t| t.join().expect("the writer panicked"))
            .unwrap_or(0);
        let acked = self.acked.lock().expect("lock").clone();
        (acked, failed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn three_servers_lose_their_leader_and_no_acknowledged_write() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("ha");
    let cluster =
        Cluster::create_quick_to_notice(&sandbox, &name, &["--servers", "3", "--workers", "1"]);
    let network = format!("kcluster-{name}");
    let servers: Vec<String> = (0..3).map(|i| format!("{name}-server-{i}")).collect();

    // The shape: the balancer holds the API port; no server publishes one.
    let lb = format!("{name}-lb");
    let lb_port = stdout(&docker(&["port", &lb, "6443/tcp"]));
    assert!(
        lb_port.contains("127.0.0.1:"),
        "the balancer publishes the API port: {lb_port:?}"
    );
    let server_url = kubeconfig_server(&cluster);
    let published = lb_port.trim().rsplit(':').next().unwrap_or_default();
    assert!(
        server_url.ends_with(&format!(":{published}")),
        "kubeconfig {server_url} goes through the balancer's port {published}"
    );
    for server in &servers {
        assert_eq!(
            stdout(&docker(&["port", server])).trim(),
            "",
            "{server} publishes nothing itself"
        );
    }
    let list = stdout(&sandbox.kcluster(&["list"]));
    let row = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("{name} in `kcluster list`: {list}"));
    assert!(row.contains("3/3") && row.contains("running"), "{row}");
    let nodes = cluster.kubectl_ok(&["get", "nodes", "-o", "name"]);
    for server in &servers {
        assert!(
            nodes.contains(server.as_str()),
            "{server} is a node: {nodes}"
        );
    }
    // Every server behind the kubernetes Service.
    wait_servers_behind_the_service(&cluster, 3);

    let writer = Writer::start(&sandbox, cluster.context());
    wait_for("the first writes", Duration::from_secs(60), || {
        writer.acked() >= 5
    });
    let leader = holder(&cluster, "kube-controller-manager");
    assert!(servers.contains(&leader), "a server leads: {leader:?}");
    let out = docker(&["kill", &leader]);
    assert!(out.status.success(), "docker kill: {}", text(&out));
    let at_kill = writer.acked();

    // kubectl keeps working through the balancer.
    wait_for(
        "ten more acknowledged writes after the leader died",
        Duration::from_secs(60),
        || writer.acked() >= at_kill + 10,
    );
    // The Leases move, and the controllers work on their new holder.
    wait_until(
        "both Leases on another server",
        Duration::from_secs(90),
        || {
            let (m, s) = (
                holder(&cluster, "kube-controller-manager"),
                holder(&cluster, "kube-scheduler"),
            );
            if m != leader && s != leader && servers.contains(&m) && servers.contains(&s) {
                Ok(())
            } else {
                Err(format!("holders {m:?} / {s:?}"))
            }
        },
    );
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: after-failover}
spec:
  replicas: 2
  selector: {matchLabels: {app: after-failover}}
  template:
    metadata: {labels: {app: after-failover}}
    spec:
      containers:
      - {name: c, image: "kcluster-e2e/not-pulled:1", imagePullPolicy: Never}
"#,
    );
    assert!(out.status.success(), "apply: {}", text(&out));
    wait_until(
        "the new leader's ReplicaSet controller makes 2 pods",
        Duration::from_secs(60),
        || {
            let out = cluster.kubectl(&["get", "pods", "-l", "app=after-failover", "-o", "name"]);
            let n = stdout(&out).lines().count();
            if n == 2 {
                Ok(())
            } else {
                Err(format!("{n} pods: {}", text(&out)))
            }
        },
    );
    // The dead server leaves the kubernetes Service.
    wait_servers_behind_the_service(&cluster, 2);
    // A store member leaves only with every member up: refused, nothing changed.
    let out = sandbox.kcluster(&["node", "delete", &leader, "--name", &name]);
    assert!(
        !out.status.success(),
        "node delete of a server with a server down must fail"
    );
    assert!(
        text(&out).contains("not running"),
        "node delete says why: {}",
        text(&out)
    );
    let state = stdout(&docker(&["inspect", "-f", "{{.State.Status}}", &leader]));
    assert_eq!(state.trim(), "exited", "{leader} is left as it was");

    // The killed server comes back and catches up with what was written without it.
    let written_while_down = {
        let acked = writer.acked.lock().expect("lock");
        acked.last().cloned().expect("writes were acknowledged")
    };
    let out = docker(&["start", &leader]);
    assert!(out.status.success(), "docker start: {}", text(&out));
    wait_until(
        "the restarted server serves what was written while it was down",
        Duration::from_secs(120),
        || get_through_own_api(&cluster, &leader, &network, &written_while_down),
    );
    wait_until(
        "the restarted server is back behind the kubernetes Service",
        Duration::from_secs(60),
        || {
            let eps = kubernetes_endpoints(&cluster)?;
            let ip = container_ip(&leader, &network);
            if eps.contains(&ip) {
                Ok(())
            } else {
                Err(format!("endpoints {eps:?}, {leader} at {ip}"))
            }
        },
    );

    // The control plane grows: a fourth server's etcd member joins the store, the balancer
    // takes it in, and it serves what was written before it existed.
    let out = sandbox.kcluster(&["node", "add", "--name", &name, "--role", "server"]);
    assert!(
        out.status.success(),
        "node add --role server: {}",
        text(&out)
    );
    let fourth = format!("{name}-server-3");
    wait_until(
        "the new server serves the cluster's state through its own API",
        Duration::from_secs(60),
        || get_through_own_api(&cluster, &fourth, &network, &written_while_down),
    );
    wait_until(
        "the balancer takes the new server into rotation",
        Duration::from_secs(30),
        || {
            let log = text(&docker(&["logs", &lb]));
            if log.contains(&format!("in rotation backend={fourth}:6443"))
                || log
                    .lines()
                    .any(|l| l.contains("in rotation") && l.contains(&fourth))
            {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    );
    let mut servers = servers;
    servers.push(fourth);

    let (acked, failed) = writer.finish();
    eprintln!(
        "writer: {} acknowledged, {failed} failed (the leader was killed after {at_kill})",
        acked.len()
    );
    let stored = config_maps(&cluster);
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    // The control plane shrinks: a server is deleted, its etcd member leaves the store, the
    // balancer drops it and the kubernetes Service follows.
    let leaving = servers.remove(1);
    let out = sandbox.kcluster(&["node", "delete", &leaving, "--name", &name]);
    assert!(
        out.status.success(),
        "node delete {leaving}: {}",
        text(&out)
    );
    let out = docker(&["inspect", &leaving]);
    assert!(
        !out.status.success(),
        "{leaving}'s container is still there"
    );
    assert!(gone(&cluster.kubectl(&["get", "node", &leaving])));
    wait_until(
        "the balancer to drop the deleted server",
        Duration::from_secs(30),
        || {
            let log = text(&docker(&["logs", &lb]));
            if log
                .lines()
                .any(|l| l.contains("removed from the backends") && l.contains(&leaving))
            {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    );
    wait_until(
        "the kubernetes Service to list the three servers left",
        Duration::from_secs(60),
        || {
            let eps = kubernetes_endpoints(&cluster)?;
            let want: Vec<String> = servers.iter().map(|s| container_ip(s, &network)).collect();
            if eps.len() == 3 && want.iter().all(|ip| eps.contains(ip)) {
                Ok(())
            } else {
                Err(format!("endpoints {eps:?}, servers at {want:?}"))
            }
        },
    );
    // The store has three members now: with one of them down, two still make a quorum (with
    // the deleted member still counted, two of four would not).
    let out = docker(&["kill", &servers[0]]);
    assert!(out.status.success(), "docker kill: {}", text(&out));
    wait_write(
        &cluster,
        "a write with one of three servers down",
        "one-of-three-down",
    );
    let out = docker(&["start", &servers[0]]);
    assert!(out.status.success(), "docker start: {}", text(&out));
    wait_until(
        "the restarted server serves the write made without it",
        Duration::from_secs(120),
        || get_through_own_api(&cluster, &servers[0], &network, "one-of-three-down"),
    );

    // A full stop and start, with every server on a new address (spacers take the old ones
    // while the cluster is down): the etcd members find each other by name again, nothing
    // acknowledged is lost, every node comes back Ready and writes work.
    let before: Vec<String> = servers.iter().map(|s| container_ip(s, &network)).collect();
    let out = sandbox.kcluster(&["stop", "--name", &name]);
    assert!(out.status.success(), "stop: {}", text(&out));
    let state = stdout(&docker(&["inspect", "-f", "{{.State.Status}}", &lb]));
    assert_eq!(
        state.trim(),
        "exited",
        "the balancer stops with the cluster"
    );
    let tag = format!("kcluster-e2e/ha-spacer:{name}");
    let _image = images::build_busybox_image(&sandbox, &tag, "");
    let _spacers = Spacers::start(&name, &network, &tag, 10);
    let out = sandbox.kcluster(&["start", "--name", &name, "--wait", "180s"]);
    assert!(out.status.success(), "start: {}", text(&out));
    let after: Vec<String> = servers.iter().map(|s| container_ip(s, &network)).collect();
    for ((server, old), new) in servers.iter().zip(&before).zip(&after) {
        assert_ne!(
            old, new,
            "{server} kept its address: the test did not force a new one"
        );
    }
    let stored = config_maps(&cluster);
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
    assert!(lost.is_empty(), "lost across stop/start: {lost:?}");
    cluster.kubectl_ok(&["create", "configmap", "after-restart"]);
    wait_until(
        "the kubernetes Service lists the servers' new addresses",
        Duration::from_secs(90),
        || {
            let eps = kubernetes_endpoints(&cluster)?;
            if after.iter().all(|ip| eps.contains(ip)) && eps.len() == after.len() {
                Ok(())
            } else {
                Err(format!("endpoints {eps:?}, servers at {after:?}"))
            }
        },
    );

    // Beyond quorum: with two of the three servers gone, the store cannot commit. A write is
    // answered with a 5xx that names etcd (never a success), /readyz says why, and once the
    // servers are back writes work again.
    for server in &servers[1..] {
        let out = docker(&["kill", server]);
        assert!(out.status.success(), "docker kill {server}: {}", text(&out));
    }
    let out = cluster.kubectl(&[
        "--request-timeout=60s",
        "create",
        "configmap",
        "without-quorum",
    ]);
    assert!(!out.status.success(), "a write without quorum must fail");
    assert!(
        text(&out).contains("Internal error") && text(&out).contains("etcd"),
        "the failure says it is the store: {}",
        text(&out)
    );
    let out = cluster.kubectl(&["get", "--raw", "/readyz"]);
    assert!(!out.status.success(), "readyz fails without quorum");
    // Reads without a resourceVersion are quorum reads and fail too, rather than answer from
    // a mirror that may be stale; resourceVersion=0 (informers' first list) is answered.
    let out = cluster.kubectl(&["--request-timeout=60s", "get", "configmaps"]);
    assert!(
        !out.status.success(),
        "a quorum read without quorum must fail"
    );
    assert!(
        text(&out).contains("etcd"),
        "the failure says it is the store: {}",
        text(&out)
    );
    let cached = cluster.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?resourceVersion=0",
    ]);
    assert!(cached.contains("\"ConfigMapList\""), "{cached}");
    for server in &servers[1..] {
        let out = docker(&["start", server]);
        assert!(
            out.status.success(),
            "docker start {server}: {}",
            text(&out)
        );
    }
    wait_until(
        "writes work again once the quorum is back",
        Duration::from_secs(120),
        || {
            let out = cluster.kubectl(&[
                "--request-timeout=10s",
                "create",
                "configmap",
                "quorum-back",
            ]);
            if out.status.success() || text(&out).contains("AlreadyExists") {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );
}

/// The `resourceVersion` the API answers `path` with (a list's is the store's newest).
fn resource_version(cluster: &Cluster, path: &str) -> u64 {
    let body = cluster.kubectl_ok(&["get", "--raw", path]);
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    json["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_else(|| panic!("no numeric resourceVersion in {path}: {body}"))
}

#[test]
fn a_cluster_made_with_one_server_grows_into_three_with_its_state() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("grow");
    let tag = format!("kcluster-e2e/grow-busybox:{name}");
    let _image = images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create_quick_to_notice(&sandbox, &name, &["--workers", "1"]);
    cluster.load_image(&tag);
    let network = format!("kcluster-{name}");
    let servers: Vec<String> = (0..3).map(|i| format!("{name}-server-{i}")).collect();
    let worker = format!("{name}-worker-0");

    cluster.kubectl_ok(&["create", "configmap", "before", "--from-literal=kept=yes"]);
    cluster.kubectl_ok(&[
        "create",
        "deployment",
        "sleeper",
        "--image",
        &tag,
        "--replicas=2",
        "--",
        "sleep",
        "100000",
    ]);
    let out = cluster.kubectl(&["rollout", "status", "deploy/sleeper", "--timeout=120s"]);
    assert!(out.status.success(), "rollout: {}", text(&out));
    let server_url = kubeconfig_server(&cluster);
    let port_before = stdout(&docker(&["port", &servers[0], "6443/tcp"]));
    assert!(
        port_before.contains("127.0.0.1:"),
        "the one server publishes the API port: {port_before:?}"
    );
    let newest_before = resource_version(&cluster, "/api/v1/configmaps");

    let out = sandbox.kcluster(&[
        "node", "add", "--name", &name, "--role", "server", "--count", "2",
    ]);
    assert!(
        out.status.success(),
        "node add --role server: {}",
        text(&out)
    );

    // The balancer took the API port; kubeconfig, unchanged, reaches the API through it.
    let lb = format!("{name}-lb");
    assert_eq!(
        stdout(&docker(&["port", &lb, "6443/tcp"])).trim(),
        port_before.trim(),
        "the balancer publishes the port the server did"
    );
    assert_eq!(
        stdout(&docker(&["port", &servers[0]])).trim(),
        "",
        "{} publishes nothing now",
        servers[0]
    );
    assert_eq!(kubeconfig_server(&cluster), server_url);
    // The state moved, and no resourceVersion went backwards for a client that saw one.
    assert_eq!(
        cluster.kubectl_ok(&["get", "configmap", "before", "-o", "jsonpath={.data.kept}"]),
        "yes"
    );
    let moved = resource_version(&cluster, "/api/v1/namespaces/default/configmaps/before");
    assert!(
        moved > newest_before,
        "the moved object's resourceVersion {moved} is newer than the newest before the move ({newest_before})"
    );
    // Every node Ready, the worker dialing the balancer, the pods running again.
    wait_until("4 Ready nodes", Duration::from_secs(120), || {
        let out = cluster.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
        ]);
        let got = stdout(&out);
        let ready = got
            .split_whitespace()
            .filter(|n| n.ends_with("=True"))
            .count();
        if ready == 4 { Ok(()) } else { Err(got) }
    });
    let settings = node_file(&worker, "/etc/kcluster/node.json");
    assert!(
        settings.contains(&format!("\"{lb}:6443\"")),
        "{worker} dials the balancer: {settings}"
    );
    let out = cluster.kubectl(&["rollout", "status", "deploy/sleeper", "--timeout=120s"]);
    assert!(
        out.status.success(),
        "rollout after the move: {}",
        text(&out)
    );
    wait_servers_behind_the_service(&cluster, 3);

    // The store has three members: with the server that held the state gone, writes go on.
    let out = docker(&["kill", &servers[0]]);
    assert!(out.status.success(), "docker kill: {}", text(&out));
    wait_write(&cluster, "a write with the first server gone", "after");
    assert_eq!(
        cluster.kubectl_ok(&["get", "configmap", "before", "-o", "jsonpath={.data.kept}"]),
        "yes"
    );
    // It comes back on etcd (the old store was moved aside, not read again) and catches up.
    let out = docker(&["start", &servers[0]]);
    assert!(out.status.success(), "docker start: {}", text(&out));
    wait_until(
        "the first server serves what was written while it was down",
        Duration::from_secs(120),
        || get_through_own_api(&cluster, &servers[0], &network, "after"),
    );
    let out = docker(&[
        "cp",
        &format!(
            "{}:/var/lib/kcluster/store.moved-to-etcd/store.redb",
            servers[0]
        ),
        "-",
    ]);
    assert!(
        out.status.success(),
        "the embedded store is kept aside in store.moved-to-etcd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = docker(&[
        "cp",
        &format!("{}:/var/lib/kcluster/store/store.redb", servers[0]),
        "-",
    ]);
    assert!(
        !out.status.success(),
        "no embedded store is in use: docker cp found /var/lib/kcluster/store/store.redb"
    );
}
