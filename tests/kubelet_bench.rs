//! Pod start latency and agent memory (ignored: a benchmark, not a check). On a cluster with
//! one worker, 200 pods (`KCLUSTER_BENCH_PODS`) are created one after another, each as soon as
//! the previous one runs, and the oldest is deleted once 50 run, so the node holds 50 pods from
//! then on; the time from the create call returning to the watch showing phase Running is one
//! sample (scheduling, the sandbox, the container start and the status write). Then the
//! worker's agent (its node container's PID 1) and the agent with its per-container helper
//! processes are measured with 50 pods running. It also prints when each pod was bound (from
//! the same watch) and the medians of the steps the agent and the container helpers log for
//! each pod's first start.
//!
//!   cargo test --test kubelet_bench -- --ignored --nocapture

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{PostParams, WatchEvent, WatchParams};

/// Pods running on the worker at once: older ones are deleted as new ones start.
const WINDOW: usize = 50;

fn pods_to_start() -> usize {
    std::env::var("KCLUSTER_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// The agent and every per-container helper of the node (the processes running this
/// project's binary in the node container), summed: what the node's own machinery costs,
/// without the pods' workloads.
/// The node's kcluster processes (agent and every container's helper): their summed RSS,
/// which counts the binary's shared pages once per process, and their summed PSS
/// (`/proc/<pid>/smaps_rollup`), which shares them out, in KiB; and how many there are.
struct Footprint {
    rss_kib: u64,
    pss_kib: u64,
    processes: usize,
}

fn agent_and_helpers(container: &str) -> Footprint {
    // Docker refuses a ps format without the PID column.
    let out = docker(&["top", container, "-eo", "pid,rss,args"]);
    assert!(out.status.success(), "docker top: {}", text(&out));
    let mut f = Footprint {
        rss_kib: 0,
        pss_kib: 0,
        processes: 0,
    };
    for line in stdout(&out).lines().skip(1) {
        let mut fields = line.split_whitespace();
        let pid = fields.next().unwrap_or_default();
        let rss: u64 = fields
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no RSS in docker top's line {line:?}"));
        if !fields.next().is_some_and(|exe| exe.ends_with("kcluster")) {
            continue;
        }
        // A helper that exited since docker top listed it has no smaps left: skip it whole.
        let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        let pss: u64 = rollup
            .lines()
            .find_map(|l| l.strip_prefix("Pss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no Pss in /proc/{pid}/smaps_rollup:\n{rollup}"));
        f.rss_kib += rss;
        f.pss_kib += pss;
        f.processes += 1;
    }
    assert!(
        f.processes > 0,
        "no kcluster process in docker top:\n{}",
        stdout(&out)
    );
    f
}

fn rss_kib(container: &str) -> u64 {
    let pid = stdout(&docker(&["inspect", "-f", "{{.State.Pid}}", container]));
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
        .expect("the node's PID 1 is visible from here (Docker on this machine)");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Nearest-rank percentile: the smallest sample with at least `p` of the samples at or below
/// it (with 200 samples, p99 is the second largest, not the maximum).
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
#[ignore = "benchmark: cargo test --test kubelet_bench -- --ignored --nocapture"]
fn pod_start_latency_and_agent_memory() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let name = unique_name("kb");
    let tag = format!("kcluster-e2e/bench-busybox:{name}");
    let _image = common::images::build_busybox_image(&sandbox, &tag, "");
    let cluster = Cluster::create(&sandbox, &name, &["--workers", "1"]);
    let worker = format!("{name}-worker-0");
    cluster.load_image(&tag);
    let idle_kib = rss_kib(&worker);
    let idle_all = agent_and_helpers(&worker);
    let total = pods_to_start();

    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let samples = rt.block_on(async {
        let client = kube_client(&sandbox, &cluster.context()).await;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let mut samples = Vec::new();
        let mut bound = Vec::new();
        for i in 0..total {
            if i >= WINDOW {
                let old = format!("bench-{}", i - WINDOW);
                let dp = kube::api::DeleteParams::default().grace_period(0);
                pods.delete(&old, &dp).await.expect("old pod deleted");
            }
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": worker},
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": tag, "command": ["sleep", "3600"],
                                    "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}],
                },
            }))
            .expect("a pod");
            let wp = WatchParams::default().fields(&format!("metadata.name=bench-{i}"));
            let mut watch = pods.watch(&wp, "0").await.expect("a watch").boxed();
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("pod created");
            let created = Instant::now();
            let deadline = created + Duration::from_secs(60);
            let mut bound_at = None;
            loop {
                let ev = tokio::time::timeout_at(deadline.into(), watch.next())
                    .await
                    .expect("the pod runs within 60 s");
                match ev {
                    Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)))
                        if p.status.as_ref().and_then(|s| s.phase.as_deref())
                            == Some("Running") =>
                    {
                        samples.push(created.elapsed());
                        bound.push(bound_at.unwrap_or_else(|| created.elapsed()));
                        break;
                    }
                    Some(Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)))
                        if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() =>
                    {
                        bound_at.get_or_insert_with(|| created.elapsed());
                    }
                    Some(_) => {}
                    None => panic!("the watch ended"),
                }
            }
        }
        (samples, bound)
    });
    let (samples, bound) = samples;
    // Let the agent settle (status writes, probes) before measuring it.
    std::thread::sleep(Duration::from_secs(5));
    let loaded_kib = rss_kib(&worker);
    let loaded_all = agent_and_helpers(&worker);
    for (i, s) in samples.iter().enumerate() {
        if *s > Duration::from_secs(1) {
            println!("slow: bench-{i} took {:.0} ms", s.as_secs_f64() * 1000.0);
        }
    }
    let mut sorted = samples.clone();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "pod start latency over {total} pods (create → Running, image present, at most {WINDOW} on the node): p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.95)),
        ms(percentile(&sorted, 0.99)),
        ms(sorted[sorted.len() - 1]),
    );
    let mut bound_sorted = bound.clone();
    bound_sorted.sort();
    println!(
        "  of which create → bound (seen by the watch): p50 {:.0} ms, p99 {:.0} ms",
        ms(percentile(&bound_sorted, 0.5)),
        ms(percentile(&bound_sorted, 0.99)),
    );
    print_agent_steps(&text(&docker(&["logs", &worker])));
    print_helper_steps(&worker);
    println!(
        "worker agent RSS: {:.1} MiB idle, {:.1} MiB with {WINDOW} pods running",
        idle_kib as f64 / 1024.0,
        loaded_kib as f64 / 1024.0
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "worker agent + container helpers: PSS {:.1} MiB idle, {:.1} MiB with {WINDOW} pods running; RSS summed (the binary's shared pages counted per process) {:.1} / {:.1} MiB; {} / {} processes",
        mib(idle_all.pss_kib),
        mib(loaded_all.pss_kib),
        mib(idle_all.rss_kib),
        mib(loaded_all.rss_kib),
        idle_all.processes,
        loaded_all.processes,
    );
    if samples.iter().any(|s| *s > Duration::from_secs(1)) {
        let logs = text(&docker(&["logs", &worker]));
        for line in logs
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        {
            println!("agent: {line}");
        }
        // Where the slow ones spent their time: the scheduler's event and the agent's start.
        for (i, s) in samples.iter().enumerate() {
            if *s > Duration::from_secs(1) {
                let pod = format!("bench-{i}");
                for line in logs.lines().filter(|l| l.contains(&format!("pod={pod} "))) {
                    println!("agent: {line}");
                }
                let times = "jsonpath={.metadata.creationTimestamp} {.status.containerStatuses[0].state.running.startedAt}";
                let events = "jsonpath={range .items[*]}{.reason}@{.firstTimestamp} {end}";
                println!(
                    "{pod}: {} / {}",
                    cluster.kubectl_ok(&["get", "pod", &pod, "-o", times]),
                    cluster.kubectl_ok(&[
                        "get",
                        "events",
                        "--field-selector",
                        &format!("involvedObject.name={pod}"),
                        "-o",
                        events
                    ]),
                );
            }
        }
    }
    cluster.kubectl_ok(&["delete", "pods", "-l", "app=bench", "--wait=false"]);
    drop(cluster);
}

/// The agent logs one `pod running` line per pod with the duration of each step of its first
/// start (`steps_ms=sandbox=12.3,network=4.5,…`): medians per step over the bench's pods.
fn print_agent_steps(logs: &str) {
    let mut steps: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    let mut order: Vec<String> = Vec::new();
    for line in logs
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains("pod running") && l.contains("bench-"))
    {
        let field = |name: &str| {
            line.split(&format!(" {name}="))
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(|v| v.trim_matches('"').to_string())
        };
        if let Some(total) = field("total_ms").and_then(|t| t.parse::<f64>().ok()) {
            steps.entry("total".into()).or_default().push(total);
        }
        let Some(list) = field("steps_ms") else {
            continue;
        };
        for part in list.split(',') {
            if let Some((name, v)) = part.split_once('=')
                && let Ok(v) = v.parse::<f64>()
            {
                if !order.iter().any(|o| o == name) {
                    order.push(name.to_string());
                }
                steps.entry(name.to_string()).or_default().push(v);
            }
        }
    }
    order.push("total".into());
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let parts: Vec<String> = order
        .iter()
        .filter_map(|name| {
            let v = steps.get_mut(name)?;
            Some(format!("{name} {:.1}", median(v)))
        })
        .collect();
    println!(
        "  agent, median ms per step of a pod's first start: {}",
        parts.join(", ")
    );
}

/// The node's log has terminal colours in it (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Each container's helper logs how long its own steps took (`container started setup_ms=…
/// build_ms=… start_ms=…`) to the container's helper.log on the node volume, read here through
/// the node's /proc/<pid>/root.
fn print_helper_steps(container: &str) {
    let pid = stdout(&docker(&["inspect", "-f", "{{.State.Pid}}", container]));
    let dir = format!("/proc/{}/root/var/lib/kcluster/containers", pid.trim());
    let mut steps: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Ok(log) = std::fs::read_to_string(entry.path().join("helper.log")) else {
            continue;
        };
        for line in log
            .lines()
            .map(strip_ansi)
            .filter(|l| l.contains("container started"))
        {
            for name in ["setup_ms", "build_ms", "start_ms"] {
                if let Some(v) = line
                    .split(&format!(" {name}="))
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|v| v.parse::<f64>().ok())
                {
                    steps.entry(name).or_default().push(v);
                }
            }
        }
    }
    let parts: Vec<String> = ["setup_ms", "build_ms", "start_ms"]
        .iter()
        .filter_map(|name| {
            let v = steps.get_mut(name)?;
            v.sort_by(|a, b| a.total_cmp(b));
            Some(format!("{name} {:.1}", v[v.len() / 2]))
        })
        .collect();
    println!(
        "  container helper, median ms (setup: read, cgroups, rootfs mount; build: libcontainer's create; start: exec): {}",
        parts.join(", ")
    );
}
