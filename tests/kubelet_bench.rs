//! Pod start latency and agent memory (ignored: a benchmark, not a check). On a cluster with
//! one worker, 50 pods are created one after another, each as soon as the previous one runs;
//! the time from the create call returning to the watch showing phase Running is one sample
//! (scheduling, the sandbox, the container start and the status write). Then the worker's
//! agent (its node container's PID 1) is measured with the 50 pods running.
//!
//!   cargo test --test kubelet_bench -- --ignored --nocapture

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{PostParams, WatchEvent, WatchParams};

const PODS: usize = 50;

async fn client(sandbox: &Sandbox, context: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(sandbox.kubeconfig()).expect("a kubeconfig");
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .expect("a client configuration");
    kube::Client::try_from(config).expect("an API client")
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
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

    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let samples = rt.block_on(async {
        let client = client(&sandbox, &cluster.context()).await;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let mut samples = Vec::new();
        for i in 0..PODS {
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
                        break;
                    }
                    Some(_) => {}
                    None => panic!("the watch ended"),
                }
            }
        }
        samples
    });
    // Let the agent settle (status writes, probes) before measuring it.
    std::thread::sleep(Duration::from_secs(5));
    let loaded_kib = rss_kib(&worker);
    for (i, s) in samples.iter().enumerate() {
        if *s > Duration::from_secs(1) {
            println!("slow: bench-{i} took {:.0} ms", s.as_secs_f64() * 1000.0);
        }
    }
    let mut sorted = samples.clone();
    sorted.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "pod start latency over {PODS} pods (create → Running, image present): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.99)),
        ms(sorted[sorted.len() - 1]),
    );
    println!(
        "worker agent RSS: {:.1} MiB idle, {:.1} MiB with {PODS} pods running",
        idle_kib as f64 / 1024.0,
        loaded_kib as f64 / 1024.0
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
