//! Benchmarks of NetworkPolicy enforcement on a real 1+1 cluster (ignored by default;
//! BENCHMARKS.md has the numbers and the machine):
//!
//!   cargo test --release --test netpol_bench -- --ignored --nocapture --test-threads=1
//!
//! `connections_with_100_policies`: new TCP connections per second from a pod to a pod on the
//! other node, with no policy, with 100 policies that all select the server (each allowing the
//! client on port 80), and with none again, in the same run. `create_to_enforced`: the time from
//! a policy's create call to the first connection it changes (an allow opening a pod behind a
//! default deny, and a deny closing it), seen by a client in a pod polling every 200 ms at most.
//! The sync time with 1,000 policies is `netpol_sync_bench` in src/netpol/kernel_tests.rs.

mod common;

use std::io::BufRead;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::images::build_net_image;
use common::*;

const IMAGE: &str = "kcluster-e2e/net:netpol-bench";

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

fn setup<'a>(sandbox: &'a Sandbox, prefix: &str) -> (Cluster<'a>, String) {
    let cluster = Cluster::create(sandbox, &unique_name(prefix), &["--workers", "1"]);
    cluster.load_image(IMAGE);
    let nodes = cluster.node_ips();
    apply(
        &cluster,
        &pod_on("target", &nodes[1].0, "exec net-tool serve 80"),
    );
    apply(&cluster, &pod_on("client", &nodes[0].0, "exec sleep 3600"));
    for p in ["target", "client"] {
        cluster.wait_ready_pod(p);
    }
    let ip = cluster.kubectl_ok(&["get", "pod", "target", "-o", "jsonpath={.status.podIP}"]);
    (cluster, ip)
}

fn allow_policy(name: &str) -> String {
    format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}}}
spec:
  podSelector: {{matchLabels: {{app: target}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]
    ports: [{{port: 80}}]
"#
    )
}

fn rate(cluster: &Cluster, ip: &str) -> f64 {
    let out = run_in(cluster, "client", &format!("net-tool rate {ip} 80 4"));
    assert_eq!(json_number(&out, "errors"), 0.0, "{out}");
    json_number(&out, "connections_per_s")
}

#[test]
#[ignore]
fn connections_with_100_policies() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let _image = build_net_image(&sandbox, IMAGE);
    let (cluster, ip) = setup(&sandbox, "bench-np-rate");
    let client_node =
        cluster.kubectl_ok(&["get", "pod", "client", "-o", "jsonpath={.spec.nodeName}"]);
    apply(&cluster, &pod_on("other", &client_node, "exec sleep 3600"));
    cluster.wait_ready_pod("other");
    let mut none = Vec::new();
    let mut with = Vec::new();
    let all: String = (0..100)
        .map(|i| allow_policy(&format!("p{i}")) + "---\n")
        .collect();
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec: {podSelector: {}}\n";
    let reachable = |pod: &str| {
        wait_until("the pod connects", Duration::from_secs(30), || {
            let out = run_in(&cluster, pod, &format!("net-tool probe 1000 tcp:{ip}:80"));
            if out.contains(" ok") {
                Ok(())
            } else {
                Err(out)
            }
        })
    };
    // Rounds alternate so that the machine's load drifts over both alike.
    for _ in 0..4 {
        none.push(rate(&cluster, &ip));
        apply(&cluster, &all);
        apply(&cluster, deny);
        // Enforced once a pod the policies do not allow is refused: the watch delivers the
        // 100 allowing policies before the deny-all, so all 101 are in the table by then.
        wait_until("the other pod refused", Duration::from_secs(30), || {
            let out = run_in(
                &cluster,
                "other",
                &format!("net-tool probe 1000 tcp:{ip}:80"),
            );
            if out.contains(" fail") {
                Ok(())
            } else {
                Err(out)
            }
        });
        reachable("client");
        with.push(rate(&cluster, &ip));
        cluster.kubectl_ok(&["delete", "networkpolicy", "--all"]);
        // Gone from the table once the other pod connects again.
        reachable("other");
    }
    let (n, w) = (median(none.clone()), median(with.clone()));
    let ratios: Vec<String> = none
        .iter()
        .zip(&with)
        .map(|(a, b)| format!("{:.3}", b / a))
        .collect();
    println!(
        "{{\"conn_per_s_no_policy\": {n:.0}, \"conn_per_s_101_policies\": {w:.0}, \"ratio\": {:.3}, \"round_ratios\": {ratios:?}, \"samples_none\": {none:?}, \"samples_with\": {with:?}}}",
        w / n
    );
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0)
}

/// Starts the client's `net-tool until`, then runs `change`; the time from just before the
/// change to the moment the client saw the connection open or close.
fn time_change(cluster: &Cluster, ip: &str, open: bool, change: impl FnOnce()) -> f64 {
    let want = if open { "open" } else { "closed" };
    let mut child = std::process::Command::new("kubectl")
        .args(["--context", &cluster.context(), "exec", "client", "--"])
        .args(["net-tool", "until", want, ip, "80"])
        .env("KUBECONFIG", cluster.sandbox.kubeconfig())
        .env("HOME", cluster.sandbox.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("cannot run kubectl");
    // The client must be polling before the change: it says so once it saw the old state.
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(
        first,
        "polling",
        "the client did not see the connection {}",
        if open { "closed" } else { "open" }
    );
    let start = now_ms();
    change();
    let last = lines.next().and_then(Result::ok).unwrap_or_default();
    let status = child.wait().expect("kubectl exec");
    assert!(status.success(), "net-tool until: {last}");
    json_number(&last, "epoch_ms") - start
}

#[test]
#[ignore]
fn create_to_enforced() {
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let _image = build_net_image(&sandbox, IMAGE);
    let (cluster, ip) = setup(&sandbox, "bench-np-latency");
    let deny = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny}\nspec: {podSelector: {}}\n";
    let (mut closing, mut opening) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        closing.push(time_change(&cluster, &ip, false, || apply(&cluster, deny)));
        opening.push(time_change(&cluster, &ip, true, || {
            apply(&cluster, &allow_policy("allow"))
        }));
        cluster.kubectl_ok(&["delete", "networkpolicy", "--all"]);
        wait_until("no policy", Duration::from_secs(30), || {
            let out = run_in(
                &cluster,
                "client",
                &format!("net-tool probe 1000 tcp:{ip}:80"),
            );
            if out.contains(" ok") {
                Ok(())
            } else {
                Err(out)
            }
        });
    }
    println!(
        "{{\"deny_create_to_enforced_ms_median\": {:.0}, \"allow_create_to_enforced_ms_median\": {:.0}, \"deny_ms\": {closing:?}, \"allow_ms\": {opening:?}}}",
        median(closing.clone()),
        median(opening.clone())
    );
}
