//! The cluster's state in an external etcd (`--store etcd=…`): Debian's etcd on this machine,
//! the real API server, the real kubectl, and a real cluster on Docker.

mod common;

use std::process::Command;
use std::time::Duration;

use common::etcd::Etcd;
use common::{ApiServer, Sandbox, stdout, text, unique_name, wait_for, wait_until};

fn on_etcd(etcd: &Etcd, prefix: &str) -> ApiServer {
    ApiServer::start_with(&[
        "--store",
        &format!("etcd={}", etcd.url),
        "--etcd-prefix",
        prefix,
    ])
}

fn configmap_value(server: &ApiServer, name: &str) -> Option<String> {
    let out = server.kubectl(&["get", "configmap", name, "-o", "jsonpath={.data.v}"]);
    if common::gone(&out) {
        return None;
    }
    Some(common::stdout(&out))
}

#[test]
fn objects_live_in_etcd_and_outlive_the_api_server() {
    let etcd = Etcd::start();
    let first = on_etcd(&etcd, "/kcluster/one/");
    first.kubectl_ok(&["create", "namespace", "shop"]);
    first.kubectl_ok(&[
        "-n",
        "shop",
        "create",
        "configmap",
        "cfg",
        "--from-literal=v=1",
    ]);

    // The object is etcd's key, under the prefix, as JSON.
    let keys = etcd.etcdctl(&["get", "--prefix", "/kcluster/one/", "--keys-only"]);
    let key = keys
        .lines()
        .find(|k| k.contains("configmaps") && k.contains("shop") && k.ends_with("/cfg"))
        .unwrap_or_else(|| panic!("no key of configmap shop/cfg in etcd: {keys}"))
        .to_owned();
    let stored = etcd.etcdctl(&["get", &key, "--print-value-only"]);
    assert!(stored.contains("\"cfg\""), "etcd holds {stored}");
    // resourceVersion is etcd's revision of the key.
    let rv = first.kubectl_ok(&[
        "-n",
        "shop",
        "get",
        "cm",
        "cfg",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    let revision = etcd.etcdctl(&["get", &key, "-w", "json"]);
    assert!(
        revision.contains(&format!("\"mod_revision\":{rv}")),
        "resourceVersion {rv} is not etcd's mod_revision: {revision}"
    );
    drop(first);

    // A new API server with nothing on its disk finds everything in etcd.
    let second = on_etcd(&etcd, "/kcluster/one/");
    let value = second.kubectl_ok(&["-n", "shop", "get", "cm", "cfg", "-o", "jsonpath={.data.v}"]);
    assert_eq!(value, "1");
    // Another prefix is another cluster: it does not see this one's objects.
    let other = on_etcd(&etcd, "/kcluster/two/");
    let out = other.kubectl(&["get", "namespace", "shop"]);
    assert!(
        common::gone(&out),
        "a cluster under another prefix sees namespace shop"
    );
}

#[test]
fn two_api_servers_share_one_state_and_its_conflicts() {
    let etcd = Etcd::start();
    let a = on_etcd(&etcd, "/kcluster/shared/");
    let b = on_etcd(&etcd, "/kcluster/shared/");
    // B's watch of every ConfigMap, its rows (EVENT NAME …) collected as they come; it is in
    // place once it has listed the marker.
    b.kubectl_ok(&["create", "configmap", "marker"]);
    let mut watch = b.kubectl_spawn(&[
        "get",
        "configmap",
        "-w",
        "--output-watch-events",
        "--no-headers",
    ]);
    let rows = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let rows = rows.clone();
        let stdout = watch.stdout.take().expect("the watch's stdout");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                rows.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        })
    };
    let events_of = |name: &str| -> Vec<String> {
        rows.lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.split_whitespace().nth(1) == Some(name))
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
            .collect()
    };
    wait_for(
        "B's watch to list the marker",
        Duration::from_secs(20),
        || !events_of("marker").is_empty(),
    );

    a.kubectl_ok(&["create", "configmap", "cm", "--from-literal=v=a"]);
    wait_for("B to see A's configmap", Duration::from_secs(20), || {
        configmap_value(&b, "cm").as_deref() == Some("a")
    });
    let stale = a.kubectl_ok(&["get", "cm", "cm", "-o", "json"]);
    b.kubectl_ok(&[
        "patch",
        "cm",
        "cm",
        "--type=merge",
        "-p",
        r#"{"data":{"v":"b"}}"#,
    ]);
    // A's update from the old resourceVersion loses, as against one API server.
    let out = a.kubectl_stdin(
        &["replace", "-f", "-"],
        &stale.replace("\"v\": \"a\"", "\"v\": \"from-a\""),
    );
    assert!(!out.status.success(), "a stale replace through A succeeded");
    assert!(
        text(&out).contains("the object has been modified; please apply your changes to the latest version and try again"),
        "not Kubernetes' conflict: {}",
        text(&out)
    );
    wait_for("A to see B's patch", Duration::from_secs(20), || {
        configmap_value(&a, "cm").as_deref() == Some("b")
    });
    a.kubectl_ok(&["delete", "cm", "cm"]);
    wait_for("B to see the delete", Duration::from_secs(20), || {
        configmap_value(&b, "cm").is_none()
    });

    // B's watch heard A's create and delete and B's own patch, in order.
    wait_for(
        "B's watch to hear the delete",
        Duration::from_secs(20),
        || events_of("cm").last().is_some_and(|e| e == "DELETED"),
    );
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();
    let events = events_of("cm");
    assert_eq!(
        events,
        ["ADDED", "MODIFIED", "DELETED"],
        "watch through B saw {events:?}"
    );
}

/// Leader election on kube-controller-manager's and kube-scheduler's Leases: two API servers
/// over one etcd, both with the controllers. One holds both Leases and runs the controllers
/// while the other waits; when the leader dies, the other takes the Leases over and the
/// controllers work again, now in that server.
#[test]
fn controllers_run_on_the_lease_holder_and_move_when_it_dies() {
    let etcd = Etcd::start();
    let store = format!("etcd={}", etcd.url);
    let args = [
        "--store",
        store.as_str(),
        "--etcd-prefix",
        "/kcluster/elected/",
        "--controllers",
    ];
    let mut servers = [ApiServer::start_with(&args), ApiServer::start_with(&args)];
    let id_of = |server: &ApiServer| {
        let file = server
            .sandbox
            .path()
            .join("data")
            .join("leader-election-id");
        // Written once the server's controllers start campaigning, after it says it is ready.
        let mut id = String::new();
        wait_until("the server's candidate id", Duration::from_secs(20), || {
            id = std::fs::read_to_string(&file)
                .map_err(|e| format!("{}: {e}", file.display()))?
                .trim()
                .to_string();
            if id.is_empty() {
                Err("empty".into())
            } else {
                Ok(())
            }
        });
        id
    };
    let ids = [id_of(&servers[0]), id_of(&servers[1])];
    let lease = |server: &ApiServer, name: &str, path: &str| {
        let out = server.kubectl(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            name,
            "-o",
            &format!("jsonpath={path}"),
        ]);
        common::stdout(&out).trim().to_string()
    };
    let mut leader = None;
    wait_until(
        "one server to hold both leases",
        Duration::from_secs(30),
        || {
            let manager = lease(
                &servers[0],
                "kube-controller-manager",
                "{.spec.holderIdentity}",
            );
            let scheduler = lease(&servers[0], "kube-scheduler", "{.spec.holderIdentity}");
            leader = ids
                .iter()
                .position(|id| manager.ends_with(&format!("_{id}")));
            match leader {
                Some(_) if scheduler == manager => Ok(()),
                _ => Err(format!(
                    "controller manager {manager:?}, scheduler {scheduler:?}"
                )),
            }
        },
    );
    let leader = leader.expect("a leader");
    let follower = 1 - leader;
    let holder = lease(
        &servers[follower],
        "kube-controller-manager",
        "{.spec.holderIdentity}",
    );
    // The leader keeps renewing and the follower keeps out.
    let renewed = lease(
        &servers[follower],
        "kube-controller-manager",
        "{.spec.renewTime}",
    );
    wait_until("the leader to renew", Duration::from_secs(20), || {
        let now = lease(
            &servers[follower],
            "kube-controller-manager",
            "{.spec.renewTime}",
        );
        let who = lease(
            &servers[follower],
            "kube-controller-manager",
            "{.spec.holderIdentity}",
        );
        if who != holder {
            panic!("the lease changed hands from {holder} to {who} while its holder ran");
        }
        if now != renewed { Ok(()) } else { Err(now) }
    });
    let replicas = |server: &ApiServer, name: &str| {
        let rs = format!(
            r#"{{"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {{"name": "{name}"}},
                "spec": {{"replicas": 2, "selector": {{"matchLabels": {{"app": "{name}"}}}},
                         "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
                                      "spec": {{"containers": [{{"name": "c", "image": "example/x:1"}}]}}}}}}}}"#
        );
        let out = server.kubectl_stdin(&["apply", "-f", "-"], &rs);
        assert!(out.status.success(), "apply failed: {}", text(&out));
        wait_until(
            &format!("{name}'s two pods"),
            Duration::from_secs(60),
            || {
                let pods =
                    server.kubectl_ok(&["get", "pods", "-l", &format!("app={name}"), "-o", "name"]);
                if pods.lines().count() == 2 {
                    Ok(())
                } else {
                    Err(pods)
                }
            },
        );
    };
    replicas(&servers[follower], "before");
    let transitions = lease(
        &servers[follower],
        "kube-controller-manager",
        "{.spec.leaseTransitions}",
    );
    servers[leader].stop();
    let killed = std::time::Instant::now();
    let successor = format!("_{}", ids[follower]);
    wait_until(
        "the follower to take both leases",
        Duration::from_secs(40),
        || {
            let manager = lease(
                &servers[follower],
                "kube-controller-manager",
                "{.spec.holderIdentity}",
            );
            let scheduler = lease(
                &servers[follower],
                "kube-scheduler",
                "{.spec.holderIdentity}",
            );
            if manager.ends_with(&successor) && scheduler.ends_with(&successor) {
                Ok(())
            } else {
                Err(format!(
                    "controller manager {manager:?}, scheduler {scheduler:?}"
                ))
            }
        },
    );
    // Printed, not asserted: the lease is 15 s, timed from the follower's last look at it.
    eprintln!(
        "the follower held both leases {:?} after the leader died",
        killed.elapsed()
    );
    let after = lease(
        &servers[follower],
        "kube-controller-manager",
        "{.spec.leaseTransitions}",
    );
    assert!(
        after.parse::<i64>().ok() > transitions.parse::<i64>().ok(),
        "leaseTransitions went from {transitions:?} to {after:?}"
    );
    replicas(&servers[follower], "after");
}

#[test]
fn the_api_server_rides_out_an_etcd_restart() {
    let mut etcd = Etcd::start();
    let server = on_etcd(&etcd, "/kcluster/restart/");
    server.kubectl_ok(&["create", "configmap", "before", "--from-literal=v=1"]);
    etcd.stop();
    // A write with etcd down fails with the reason; nothing is claimed as stored.
    let out = server.kubectl(&[
        "create",
        "configmap",
        "during",
        "--from-literal=v=1",
        "--request-timeout=40s",
    ]);
    assert!(!out.status.success(), "a create succeeded with etcd down");
    assert!(
        text(&out).contains("etcd"),
        "the error does not name etcd: {}",
        text(&out)
    );
    // A read without a resourceVersion is a quorum read: it fails rather than answer from a
    // mirror that may be stale. resourceVersion=0 asks for whatever the server has, as
    // informers do, and is answered.
    let out = server.kubectl(&["get", "configmap", "before", "--request-timeout=40s"]);
    assert!(
        !out.status.success(),
        "a quorum read succeeded with etcd down"
    );
    assert!(
        text(&out).contains("InternalError") || text(&out).contains("etcd"),
        "the error does not say it is the store: {}",
        text(&out)
    );
    let cached = server.kubectl_ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?resourceVersion=0",
    ]);
    assert!(cached.contains("\"before\""), "{cached}");
    etcd.restart();
    wait_until(
        "a create after etcd is back",
        Duration::from_secs(60),
        || {
            let out = server.kubectl(&["create", "configmap", "after", "--from-literal=v=1"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );
    let names = server.kubectl_ok(&["get", "cm", "-o", "name"]);
    assert!(
        names.contains("configmap/before") && names.contains("configmap/after"),
        "{names}"
    );
    assert!(
        !names.contains("configmap/during"),
        "the failed create was stored: {names}"
    );
    // The watch of etcd came back too, and reads are quorum reads: a change made behind the
    // API server's back shows in the very next read, also after another tenant of the same
    // etcd has written (etcd's revision then runs ahead of anything this server mirrors).
    let key = etcd
        .etcdctl(&["get", "--prefix", "/kcluster/restart/", "--keys-only"])
        .lines()
        .find(|k| k.ends_with("/after"))
        .map(str::to_owned)
        .expect("the key of configmap after");
    etcd.etcdctl(&["put", "/kcluster/another-tenant/x", "1"]);
    assert_eq!(configmap_value(&server, "before").as_deref(), Some("1"));
    etcd.etcdctl(&["del", &key]);
    assert_eq!(configmap_value(&server, "after"), None);
}

#[test]
fn bad_store_flags_and_an_unreachable_etcd_are_clear_errors() {
    let sandbox = Sandbox::new();
    let data = sandbox.path().join("data");
    let data = data.to_string_lossy();
    let run = |store: &str| {
        Command::new(common::kcluster_bin())
            .args(["node", "apiserver", "--data-dir", &data, "--kubeconfig"])
            .arg(sandbox.kubeconfig())
            .args(["--store", store])
            .output()
            .expect("kcluster runs")
    };
    let out = run("etcd=ftp://127.0.0.1:1");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("must look like https://host:2379"),
        "{}",
        text(&out)
    );
    let out = run("redis");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("expected `embedded` or `etcd="),
        "{}",
        text(&out)
    );
    // Nobody listens on port 1 of loopback.
    let out = run("etcd=http://127.0.0.1:1");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("etcd is unreachable") && text(&out).contains("127.0.0.1:1"),
        "{}",
        text(&out)
    );

    // `kcluster create` checks etcd before it makes anything.
    common::require_docker_and_kubectl();
    let name = unique_name("etcd-bad");
    let out = sandbox.kcluster(&[
        "create",
        "--name",
        &name,
        "--store",
        "etcd=http://127.0.0.1:1",
        "--wait",
        "0",
    ]);
    assert!(
        !out.status.success(),
        "create with an unreachable etcd succeeded"
    );
    assert!(
        text(&out).contains("cannot use etcd at http://127.0.0.1:1"),
        "{}",
        text(&out)
    );
    assert!(
        common::docker_objects("container", &name).is_empty(),
        "create made containers"
    );
    assert!(
        common::docker_objects("network", &name).is_empty(),
        "create made a network"
    );
}

/// Docker's default bridge gateway: an address of this machine that node containers reach.
/// The engine does not always record it; it is then the subnet's first address.
fn bridge_gateway() -> String {
    let out = common::docker(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{json .IPAM.Config}}",
    ]);
    assert!(
        out.status.success(),
        "docker network inspect bridge: {}",
        text(&out)
    );
    let config: serde_json::Value = serde_json::from_str(common::stdout(&out).trim())
        .expect("the bridge's IPAM config is JSON");
    let first = &config[0];
    if let Some(gateway) = first["Gateway"].as_str().filter(|g| !g.is_empty()) {
        return gateway.to_owned();
    }
    let subnet = first["Subnet"]
        .as_str()
        .unwrap_or_else(|| panic!("the bridge network has neither gateway nor subnet: {config}"));
    let network: std::net::Ipv4Addr = subnet
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the bridge's subnet {subnet} is not IPv4"));
    std::net::Ipv4Addr::from(u32::from(network) + 1).to_string()
}

#[test]
fn a_cluster_on_etcd_runs_pods_and_its_delete_removes_its_keys() {
    common::require_docker_and_kubectl();
    let etcd = Etcd::start_on(&bridge_gateway());
    let sandbox = Sandbox::new();
    let name = unique_name("etcd");
    let store = format!("etcd={}", etcd.url);
    let cluster = common::Cluster::create(&sandbox, &name, &["--store", &store]);
    let prefix = format!("/kcluster/{name}/");
    let nodes = cluster.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert!(nodes.contains(&format!("node/{name}-server-0")), "{nodes}");
    let keys = etcd.etcdctl(&["get", "--prefix", &prefix, "--keys-only"]);
    assert!(
        keys.lines()
            .any(|k| k.contains("/nodes/") || k.contains("minions")),
        "the Node is not in etcd under {prefix}: {keys}"
    );
    let tag = format!("kcluster-test/busybox:{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    cluster.load_image(&tag);
    cluster.kubectl_ok(&[
        "run",
        "sleeper",
        "--image",
        &tag,
        "--image-pull-policy=Never",
        "--",
        "sleep",
        "3600",
    ]);
    cluster.wait_pod_ready("sleeper");
    // A second server of a cluster on an external etcd shares that store: it needs no etcd of
    // its own, only the balancer in front of both.
    let out = sandbox.kcluster(&["node", "add", "--name", &name, "--role", "server"]);
    assert!(
        out.status.success(),
        "node add --role server: {}",
        text(&out)
    );
    assert!(
        !text(&out).contains("etcd member"),
        "no etcd member for a cluster on an external etcd: {}",
        text(&out)
    );
    let lb = stdout(&common::docker(&[
        "port",
        &format!("{name}-lb"),
        "6443/tcp",
    ]));
    assert!(
        lb.contains("127.0.0.1:"),
        "the balancer holds the API port: {lb:?}"
    );
    let nodes = cluster.kubectl_ok(&["get", "nodes", "-o", "name"]);
    assert!(nodes.contains(&format!("node/{name}-server-1")), "{nodes}");
    cluster.kubectl_ok(&["create", "configmap", "after-growing"]);
    let keys = etcd.etcdctl(&["get", "--prefix", &prefix, "--keys-only"]);
    assert!(
        keys.lines()
            .any(|k| k.ends_with("/configmaps/default/after-growing")),
        "written through the balancer into the same etcd: {keys}"
    );
    cluster.wait_pod_ready("sleeper");
    drop(cluster);
    wait_for(
        "the cluster's keys to leave etcd",
        Duration::from_secs(30),
        || {
            etcd.etcdctl(&["get", "--prefix", &prefix, "--keys-only"])
                .trim()
                .is_empty()
        },
    );
}

/// Creates per second through the API server on each store, same run, same client:
/// `cargo test --test store_etcd -- --ignored --nocapture store_write_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: see BENCHMARKS.md"]
async fn store_write_throughput() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};

    let objects: usize = std::env::var("BENCH_OBJECTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let clients = 16;
    let etcd = Etcd::start();
    let mut rows = Vec::new();
    for round in 0..2 {
        for store in ["embedded", "etcd"] {
            let server = match store {
                "etcd" => on_etcd(&etcd, &format!("/kcluster/bench-{round}/")),
                _ => ApiServer::start(),
            };
            let client = common::kube_client(&server.sandbox, server.context()).await;
            let api: Api<ConfigMap> = Api::namespaced(client, "default");
            let started = std::time::Instant::now();
            let mut tasks = Vec::new();
            for c in 0..clients {
                let api = api.clone();
                tasks.push(tokio::spawn(async move {
                    for i in (c..objects).step_by(clients) {
                        let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                            "metadata": {"name": format!("cm-{i}")},
                            "data": {"payload": "x".repeat(512)},
                        }))
                        .expect("a ConfigMap");
                        api.create(&PostParams::default(), &cm)
                            .await
                            .unwrap_or_else(|e| panic!("create cm-{i} on {store}: {e}"));
                    }
                }));
            }
            for task in tasks {
                task.await.expect("client task");
            }
            let elapsed = started.elapsed();
            let listed = api
                .list(&Default::default())
                .await
                .expect("list")
                .items
                .len();
            assert_eq!(
                listed, objects,
                "{store}: created {objects}, listed {listed}"
            );
            let rate = objects as f64 / elapsed.as_secs_f64();
            println!(
                "round {round} {store}: {objects} creates by {clients} clients in {elapsed:.2?}: {rate:.0}/s"
            );
            // GETs without a resourceVersion: quorum reads (on etcd, a linearizable
            // transaction before the mirror answers).
            let started = std::time::Instant::now();
            let mut tasks = Vec::new();
            for c in 0..clients {
                let api = api.clone();
                tasks.push(tokio::spawn(async move {
                    for i in (c..objects).step_by(clients) {
                        api.get(&format!("cm-{i}"))
                            .await
                            .unwrap_or_else(|e| panic!("get cm-{i} on {store}: {e}"));
                    }
                }));
            }
            for task in tasks {
                task.await.expect("client task");
            }
            let read_rate = objects as f64 / started.elapsed().as_secs_f64();
            println!("round {round} {store}: {objects} gets: {read_rate:.0}/s");
            rows.push((store, rate, read_rate));
        }
    }
    for store in ["embedded", "etcd"] {
        let rates: Vec<String> = rows
            .iter()
            .filter(|r| r.0 == store)
            .map(|r| format!("{:.0} creates/s, {:.0} gets/s", r.1, r.2))
            .collect();
        println!("{store}: per round {}", rates.join("; "));
    }
}

/// The test binaries cargo built for `tests/apiserver_*.rs`, beside this one (the newest of
/// each, should older builds linger): `cargo test` builds every test target before it runs any.
fn api_suite_binaries() -> Vec<std::path::PathBuf> {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let wanted: Vec<String> = std::fs::read_dir(&tests)
        .expect("the tests directory")
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| n.starts_with("apiserver_") && n.ends_with(".rs"))
        .map(|n| n.trim_end_matches(".rs").to_owned())
        .collect();
    assert!(!wanted.is_empty(), "no tests/apiserver_*.rs files");
    let exe = std::env::current_exe().expect("this test's path");
    let dir = exe.parent().expect("the test binaries' directory");
    let mut newest: BTreeMap<String, (std::time::SystemTime, std::path::PathBuf)> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("the test binaries' directory") {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((stem, hash)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !wanted.iter().any(|w| w == stem)
            || hash.contains('.')
            || !meta.is_file()
            || meta.permissions().mode() & 0o111 == 0
        {
            continue;
        }
        let modified = meta.modified().expect("a modification time");
        if newest.get(stem).is_none_or(|(t, _)| modified > *t) {
            newest.insert(stem.to_owned(), (modified, entry.path()));
        }
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| !newest.contains_key(*w)).collect();
    assert!(
        missing.is_empty(),
        "no test binary for {missing:?} in {}: run the whole suite (`cargo test`), which builds them first",
        dir.display()
    );
    newest.into_values().map(|(_, path)| path).collect()
}

/// The API server's whole test suite (every `tests/apiserver_*.rs`) again, with the state in
/// etcd instead of the embedded store: each test's API server keeps its objects under its
/// own prefix of one etcd (`KCLUSTER_TEST_ETCD`, read by `common::ApiServer`).
#[test]
fn the_api_suite_passes_with_the_state_in_etcd() {
    let etcd = Etcd::start();
    let mut passed = 0;
    for binary in api_suite_binaries() {
        let out = Command::new(&binary)
            .env("KCLUSTER_TEST_ETCD", &etcd.url)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} failed on etcd:\n{stdout}\n{}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = stdout
            .lines()
            .find(|l| l.starts_with("test result: ok."))
            .unwrap_or_else(|| panic!("no summary from {}:\n{stdout}", binary.display()));
        passed += summary
            .split_whitespace()
            .nth(3)
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("cannot read {summary:?}"));
    }
    assert!(passed >= 50, "only {passed} API tests ran on etcd");
}
