//! Benchmarks of host ports (ignored by default; BENCHMARKS.md has the numbers and the machine):
//!
//!   cargo test --release --test host_ports_bench -- --ignored --nocapture --test-threads=1
//!
//! `expose_to_first_answer`: from `kubectl expose --type=LoadBalancer` to the first HTTP 200 on
//! 127.0.0.1:<port>, and in the same rounds to the first answer on a node's address at the
//! node port (the Service itself, without the host port), as the baseline; once with proxies on
//! addresses new to the network, once on addresses removed proxies had.
//! `throughput_host_port_vs_port_forward_vs_pod_ip`: one TCP stream for 4 s into a sink pod on
//! the worker, through the LoadBalancer's host port, through `kubectl port-forward`, and
//! straight to the pod IP from the server node's network namespace; medians of 3 alternating
//! rounds.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::images::build_net_image;
use common::*;

const IMAGE: &str = "kcluster-e2e/net:hostports-bench";

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {kubernetes.io/hostname: WORKER}
      containers:
      - name: web
        image: IMAGE
        imagePullPolicy: Never
        command: ["sh", "-c", "net-tool sink 9000 & exec net-tool serve 8080"]
"#;

fn http_ok(host: &str, port: u16) -> bool {
    let Ok(addr) = format!("{host}:{port}").parse() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("200 OK")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn setup<'a>(sandbox: &'a Sandbox, name: &str) -> Cluster<'a> {
    let cluster = Cluster::create(sandbox, name, &["--workers", "1"]);
    cluster.load_image(IMAGE);
    let worker = format!("{name}-worker-0");
    let out = cluster.kubectl_stdin(
        &["apply", "-f", "-"],
        &WEB.replace("IMAGE", IMAGE).replace("WORKER", &worker),
    );
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
    cluster.kubectl_ok(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    cluster
}

#[test]
#[ignore]
fn expose_to_first_answer() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let _image = build_net_image(&sandbox, IMAGE);
    let name = unique_name("hpbench");
    let cluster = setup(&sandbox, &name);
    let node_ip = cluster.node_ips()[0].1.clone();
    // Fresh: each proxy gets an address the network never handed out before. Reused: the
    // first Services are deleted (and their proxies gone) first, so each new proxy gets an
    // address a removed one had.
    let (fresh, fresh_node) = expose_rounds(&cluster, &node_ip, "fresh", 8);
    for round in 0..8 {
        cluster.kubectl_ok(&["delete", "svc", &format!("fresh-{round}")]);
    }
    wait_for(
        "the proxies of deleted Services to go",
        Duration::from_secs(60),
        || {
            docker_objects("container", &name)
                .iter()
                .all(|c| !c.contains("-port-"))
        },
    );
    let (reused, reused_node) = expose_rounds(&cluster, &node_ip, "reused", 8);
    let show = |v: &[f64]| v.iter().map(|v| v.round() as u64).collect::<Vec<_>>();
    println!(
        "expose -> first HTTP answer, 8 rounds each: fresh proxy addresses: host port median {:.0} ms {:?}, node address:nodePort median {:.0} ms {:?}; reused addresses: host port median {:.0} ms {:?}, node address:nodePort median {:.0} ms {:?}",
        median(fresh.clone()),
        show(&fresh),
        median(fresh_node.clone()),
        show(&fresh_node),
        median(reused.clone()),
        show(&reused),
        median(reused_node.clone()),
        show(&reused_node),
    );
}

/// `rounds` LoadBalancer Services `<prefix>-<i>`, one at a time, kept: for each, the time from
/// starting `kubectl expose` to the first HTTP 200 on the host port and, polled side by side,
/// on a node's address at the node port.
fn expose_rounds(
    cluster: &Cluster,
    node_ip: &str,
    prefix: &str,
    rounds: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut host, mut node) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let svc = format!("{prefix}-{round}");
        let port = free_port();
        let start = Instant::now();
        cluster.kubectl_ok(&[
            "expose",
            "deploy/web",
            &format!("--name={svc}"),
            &format!("--port={port}"),
            "--target-port=8080",
            "--type=LoadBalancer",
        ]);
        let node_port: u16 = cluster
            .kubectl_ok(&[
                "get",
                "svc",
                &svc,
                "-o",
                "jsonpath={.spec.ports[0].nodePort}",
            ])
            .parse()
            .expect("a node port");
        let (tx, rx) = mpsc::channel();
        let node_tx = tx.clone();
        let ip = node_ip.to_string();
        std::thread::spawn(move || {
            let deadline = start + Duration::from_secs(30);
            while !http_ok(&ip, node_port) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = node_tx.send(("node", start.elapsed()));
        });
        std::thread::spawn(move || {
            let deadline = start + Duration::from_secs(30);
            while !http_ok("127.0.0.1", port) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = tx.send(("host", start.elapsed()));
        });
        for _ in 0..2 {
            let (which, took) = rx.recv().expect("a measurement");
            let ms = took.as_secs_f64() * 1000.0;
            assert!(ms < 30_000.0, "{which} path never answered");
            if which == "host" {
                host.push(ms);
            } else {
                node.push(ms);
            }
        }
    }
    (host, node)
}

/// `net-tool blast` for 4 s from a throwaway container of the test image in the given network
/// mode; Mbit/s.
fn blast(network: &str, host: &str, port: u16) -> f64 {
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        network,
        IMAGE,
        "net-tool",
        "blast",
        host,
        &port.to_string(),
        "4",
    ]);
    assert!(out.status.success(), "blast failed: {}", text(&out));
    let line = stdout(&out);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    v["mbit_per_s"].as_f64().expect("mbit_per_s")
}

#[test]
#[ignore]
fn throughput_host_port_vs_port_forward_vs_pod_ip() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let _image = build_net_image(&sandbox, IMAGE);
    let name = unique_name("hpbench");
    let cluster = setup(&sandbox, &name);
    let port = free_port();
    cluster.kubectl_ok(&[
        "expose",
        "deploy/web",
        "--name=sink",
        &format!("--port={port}"),
        "--target-port=9000",
        "--type=LoadBalancer",
    ]);
    cluster.wait_for(
        &[
            "get",
            "svc",
            "sink",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ],
        Duration::from_secs(60),
        |s| s == "127.0.0.1",
    );
    let pod = cluster.kubectl_ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let pod_ip = cluster.kubectl_ok(&["get", "pod", &pod, "-o", "jsonpath={.status.podIP}"]);
    let forward_port = free_port();
    let mut forward = std::process::Command::new("kubectl")
        .args([
            "--context",
            &cluster.context(),
            "port-forward",
            &format!("pod/{pod}"),
            &format!("{forward_port}:9000"),
        ])
        .env("KUBECONFIG", sandbox.kubeconfig())
        .env("HOME", sandbox.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot run kubectl port-forward");
    wait_for("port-forward to listen", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", forward_port)).is_ok()
    });
    let server = format!("container:{name}-server-0");
    let (mut host, mut fwd, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        host.push(blast("host", "127.0.0.1", port));
        fwd.push(blast("host", "127.0.0.1", forward_port));
        direct.push(blast(&server, &pod_ip, 9000));
    }
    let _ = forward.kill();
    let _ = forward.wait();
    println!(
        "one TCP stream, 4 s, medians of 3: host port {:.0} Mbit/s {host:?}; kubectl port-forward {:.0} Mbit/s {fwd:?}; pod IP from the server node {:.0} Mbit/s {direct:?}",
        median(host.clone()),
        median(fwd.clone()),
        median(direct.clone())
    );
}
