//! Benchmarks of the Services data plane and cluster DNS on a real two-node cluster (ignored by
//! default; BENCHMARKS.md has the numbers and the machine):
//!
//!   cargo test --release --test services_bench -- --ignored --nocapture --test-threads=1
//!
//! `clusterip_vs_pod_ip`: TCP throughput and new connections per second from a pod to a pod on
//! another node (and on the same node), through the Service's cluster IP and straight to the
//! pod IP, alternating in the same run. `dns_queries_per_second`: the DNS load generator
//! (tests/images/dns_load.rs) in a pod against 10.96.0.10 for cluster names, and straight to the
//! node's DNS address as the baseline without the Service DNAT.
//! `create_to_dns_answering`: `kcluster create --wait` of one node, against `docker run` of a
//! bare container in the same run.

mod common;

use std::time::{Duration, Instant};

use common::images::{build_dns_load_image, build_net_image};
use common::*;

const IMAGE: &str = "kcluster-e2e/net:bench";
const DNS_IMAGE: &str = "kcluster-e2e/dns-load:bench";

fn apply(cluster: &Cluster, yaml: &str) {
    let out = cluster.kubectl_stdin(&["apply", "-f", "-"], yaml);
    assert!(out.status.success(), "kubectl apply failed: {}", text(&out));
}

fn json_number(line: &str, key: &str) -> f64 {
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

fn run_in(cluster: &Cluster, pod: &str, cmd: &str) -> String {
    let out = cluster.kubectl(&["exec", pod, "--", "sh", "-c", cmd]);
    assert!(out.status.success(), "{cmd}: {}", text(&out));
    stdout(&out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pod_on(name: &str, node: &str, cmd: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: {IMAGE}, imagePullPolicy: Never, command: ["sh", "-c", "{cmd}"]}}
"#
    )
}

#[test]
#[ignore]
fn clusterip_vs_pod_ip() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let _image = build_net_image(&sandbox, IMAGE);
    let cluster = Cluster::create(&sandbox, &unique_name("bench-svc"), &["--workers", "1"]);
    cluster.load_image(IMAGE);
    let nodes = cluster.node_ips();
    let (server_node, worker_node) = (&nodes[0].0, &nodes[1].0);
    apply(
        &cluster,
        &pod_on(
            "target",
            worker_node,
            "net-tool sink 9001 & exec net-tool serve 8080",
        ),
    );
    apply(&cluster, &pod_on("far", server_node, "exec sleep 3600"));
    apply(&cluster, &pod_on("near", worker_node, "exec sleep 3600"));
    apply(
        &cluster,
        r#"
apiVersion: v1
kind: Service
metadata: {name: target}
spec:
  selector: {app: target}
  ports: [{name: sink, port: 9001}, {name: http, port: 80, targetPort: 8080}]
"#,
    );
    for p in ["target", "far", "near"] {
        cluster.wait_ready_pod(p);
    }
    let pod_ip = cluster.kubectl_ok(&["get", "pod", "target", "-o", "jsonpath={.status.podIP}"]);
    let svc_ip = cluster.kubectl_ok(&["get", "svc", "target", "-o", "jsonpath={.spec.clusterIP}"]);
    // Wait until the Service answers before measuring.
    wait_until("the Service to answer", Duration::from_secs(30), || {
        let out = cluster.kubectl(&[
            "exec",
            "far",
            "--",
            "wget",
            "-q",
            "-O-",
            &format!("http://{svc_ip}/"),
        ]);
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    });
    for client in ["far", "near"] {
        let (mut tp_pod, mut tp_svc, mut cr_pod, mut cr_svc) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            for (ip, port, tp) in [
                (&pod_ip, "9001", &mut tp_pod),
                (&svc_ip, "9001", &mut tp_svc),
            ] {
                let out = run_in(&cluster, client, &format!("net-tool blast {ip} {port} 4"));
                tp.push(json_number(&out, "mbit_per_s"));
            }
            for (ip, port, cr) in [(&pod_ip, "8080", &mut cr_pod), (&svc_ip, "80", &mut cr_svc)] {
                let out = run_in(&cluster, client, &format!("net-tool rate {ip} {port} 4"));
                assert_eq!(json_number(&out, "errors"), 0.0, "{out}");
                cr.push(json_number(&out, "connections_per_s"));
            }
        }
        let (tp, ts) = (median(tp_pod), median(tp_svc));
        let (cp, cs) = (median(cr_pod), median(cr_svc));
        let path = if client == "far" {
            "cross-node"
        } else {
            "same-node"
        };
        println!(
            "{{\"path\": \"{path}\", \"mbit_per_s_pod_ip\": {tp:.0}, \"mbit_per_s_cluster_ip\": {ts:.0}, \"throughput_ratio\": {:.3}, \"conn_per_s_pod_ip\": {cp:.0}, \"conn_per_s_cluster_ip\": {cs:.0}, \"conn_ratio\": {:.3}}}",
            ts / tp,
            cs / cp
        );
    }
}

#[test]
#[ignore]
fn dns_queries_per_second() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let _image = build_dns_load_image(&sandbox, DNS_IMAGE);
    let cluster = Cluster::create(&sandbox, &unique_name("bench-dns"), &[]);
    cluster.load_image(DNS_IMAGE);
    let node_ip = cluster.node_ips()[0].1.clone();
    for (label, server) in [
        ("service", "10.96.0.10:53".to_string()),
        ("node", format!("{node_ip}:53")),
    ] {
        for sockets in ["1", "4"] {
            let name = format!("load-{label}-{sockets}");
            let yaml = format!(
                r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: {DNS_IMAGE}
    imagePullPolicy: Never
    command: ["/dns-load", "{server}", "--sockets", "{sockets}", "--seconds", "8", "kubernetes.default.svc.cluster.local", "kube-dns.kube-system.svc.cluster.local"]
"#
            );
            apply(&cluster, &yaml);
            let phase = cluster.wait_for(
                &["get", "pod", &name, "-o", "jsonpath={.status.phase}"],
                Duration::from_secs(120),
                |s| s == "Succeeded" || s == "Failed",
            );
            let logs = cluster.kubectl_ok(&["logs", &name]);
            assert_eq!(phase, "Succeeded", "{logs}");
            println!(
                "{{\"target\": \"{label}\", \"sockets\": {sockets}, \"result\": {}}}",
                logs.trim()
            );
        }
    }
}

#[test]
#[ignore]
fn create_to_dns_answering() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let busybox = common::images::build_busybox_image(&sandbox, "kcluster-e2e/bare:bench", "");
    for round in 0..3 {
        // Baseline: a bare container started and running.
        let bare = unique_name("bench-bare");
        let t = Instant::now();
        let out = docker(&["run", "-d", "--name", &bare, &busybox.tag, "sleep", "60"]);
        assert!(out.status.success(), "{}", text(&out));
        let baseline = t.elapsed();
        let _ = docker(&["rm", "-f", &bare]);

        let name = unique_name("bench-create");
        let t = Instant::now();
        let cluster = Cluster::create(&sandbox, &name, &[]);
        let created = t.elapsed();
        // `create --wait` returns once nodes are Ready and cluster DNS answers through
        // 10.96.0.10; check that it really does.
        let server = format!("{name}-server-0");
        let out = docker(&[
            "exec",
            &server,
            "/kcluster",
            "node",
            "dns-probe",
            "kubernetes.default.svc.cluster.local",
        ]);
        assert!(
            out.status.success(),
            "DNS did not answer after create: {}",
            text(&out)
        );
        println!(
            "{{\"round\": {round}, \"create_wait_s\": {:.2}, \"docker_run_s\": {:.2}}}",
            created.as_secs_f64(),
            baseline.as_secs_f64()
        );
        drop(cluster);
    }
}
