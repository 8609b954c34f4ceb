//! Benchmarks on a real 3-node cluster (1 server + 2 workers, every node runs pods), ignored:
//! they measure, they do not check.
//!
//! * `pods_100_across_3_nodes` — 100 bare pods of the busybox test image created at once (16
//!   creates in flight); time from the first create to all 100 Running, seen through a watch.
//! * `deployment_100_replicas_ready_and_rolling_update` — a 100-replica Deployment: time from
//!   its create to `availableReplicas` = 100, then from an env change of its template to the
//!   rollout being complete (what `kubectl rollout status` waits for: observedGeneration caught
//!   up, 100 updated, no old replicas left, 100 available).
//!
//!   cargo test --test cluster_bench -- --ignored --nocapture --test-threads=1
//!   cargo test --release --test cluster_bench -- --ignored --nocapture --test-threads=1

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use serde_json::json;

const PODS: usize = 100;

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// On a failure, the server node's last log lines (the cluster is gone after the test).
struct ServerLogsOnPanic(String);

impl Drop for ServerLogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let out = docker(&["logs", "--tail", "150", &format!("{}-server-0", self.0)]);
            eprintln!("server node log:\n{}", text(&out));
        }
    }
}

/// A cluster of 1 server + 2 workers with the busybox test image loaded into every node.
fn three_nodes<'a>(sandbox: &'a Sandbox, prefix: &str) -> (Cluster<'a>, images::TestImage) {
    let name = unique_name(prefix);
    let tag = format!("kcluster-e2e/bench-busybox:{name}");
    let image = images::build_busybox_image(sandbox, &tag, "");
    let cluster = Cluster::create(sandbox, &name, &["--workers", "2"]);
    let loaded = Instant::now();
    cluster.load_image(&tag);
    println!(
        "busybox image loaded into 3 nodes in {}",
        secs(loaded.elapsed())
    );
    (cluster, image)
}

#[test]
#[ignore = "benchmark: cargo test --test cluster_bench -- --ignored --nocapture --test-threads=1"]
fn pods_100_across_3_nodes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let (cluster, image) = three_nodes(&sandbox, "cb-pods");
    let _logs = ServerLogsOnPanic(cluster.name.clone());
    let tag = image.tag.clone();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let client = kube_client(&sandbox, &cluster.context()).await;
        let pods: Api<Pod> = Api::namespaced(client, "default");
        // Running pods are counted from a watch opened before the first create.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        let watched = pods.clone();
        let watch = tokio::spawn(async move {
            let config = kube::runtime::watcher::Config::default().labels("app=bench100");
            let mut stream = kube::runtime::watcher(watched, config)
                .default_backoff()
                .boxed();
            while let Some(Ok(event)) = stream.next().await {
                if let kube::runtime::watcher::Event::Apply(p)
                | kube::runtime::watcher::Event::InitApply(p) = event
                    && running(&p)
                {
                    let _ = tx.send((p.metadata.name.clone().unwrap_or_default(), node_of(&p)));
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;

        let started = Instant::now();
        futures::stream::iter(0..PODS)
            .for_each_concurrent(16, |i| {
                let pods = pods.clone();
                let tag = tag.clone();
                async move {
                    let pod: Pod = serde_json::from_value(json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": format!("bench-{i:03}"), "labels": {"app": "bench100"}},
                        "spec": {
                            "terminationGracePeriodSeconds": 1,
                            "containers": [{"name": "c", "image": tag, "command": ["sleep", "3600"],
                                            "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}],
                        },
                    }))
                    .expect("a pod");
                    pods.create(&PostParams::default(), &pod).await.expect("pod created");
                }
            })
            .await;
        let created = started.elapsed();

        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let mut halfway = None;
        while seen.len() < PODS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((name, node))) => {
                    seen.insert(name, node);
                    if seen.len() == PODS / 2 && halfway.is_none() {
                        halfway = Some(started.elapsed());
                    }
                }
                _ => panic!("only {} of {PODS} pods running after 300 s", seen.len()),
            }
        }
        let all = started.elapsed();
        watch.abort();
        let mut per_node = BTreeMap::<String, usize>::new();
        for node in seen.values() {
            *per_node.entry(node.clone()).or_default() += 1;
        }
        println!(
            "{PODS} pods across 3 nodes: created in {} (16 in flight); half Running after {}; all Running after {} from the first create",
            secs(created),
            secs(halfway.unwrap_or_default()),
            secs(all),
        );
        println!("pods per node: {per_node:?}");
    });
    cluster.kubectl_ok(&["delete", "pods", "-l", "app=bench100", "--wait=false"]);
    drop(cluster);
}

/// Whether the Deployment's rollout is complete, as `kubectl rollout status` judges it.
fn rolled_out(d: &Deployment, replicas: i32) -> bool {
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(s) = d.status.as_ref() else {
        return false;
    };
    s.observed_generation.unwrap_or(0) >= generation
        && s.updated_replicas.unwrap_or(0) == replicas
        && s.replicas.unwrap_or(0) == replicas
        && s.available_replicas.unwrap_or(0) == replicas
}

/// Polls the Deployment (one small GET every 100 ms) until `done`; returns the time it took
/// and samples of (elapsed, ready pods) every second.
async fn wait_deployment(
    api: &Api<Deployment>,
    name: &str,
    started: Instant,
    done: impl Fn(&Deployment) -> bool,
) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut next_report = Instant::now() + Duration::from_secs(5);
    loop {
        let d = match api.get(name).await {
            Ok(d) => d,
            Err(e) => {
                // Reported, not fatal: the run says how long the API server was away.
                println!(
                    "  {:>6.1} s: cannot read the deployment: {e}",
                    started.elapsed().as_secs_f64()
                );
                assert!(
                    Instant::now() < deadline,
                    "deployment {name} unreadable for too long"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if done(&d) {
            return started.elapsed();
        }
        let s = d.status.clone().unwrap_or_default();
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(5);
            println!(
                "  {:>6.1} s: replicas {} updated {} ready {} available {}",
                started.elapsed().as_secs_f64(),
                s.replicas.unwrap_or(0),
                s.updated_replicas.unwrap_or(0),
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
            );
        }
        assert!(
            Instant::now() < deadline,
            "deployment {name} not done after 600 s: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
#[ignore = "benchmark: cargo test --test cluster_bench -- --ignored --nocapture --test-threads=1"]
fn deployment_100_replicas_ready_and_rolling_update() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    require_docker_and_kubectl();
    let sandbox = Sandbox::new();
    let (cluster, image) = three_nodes(&sandbox, "cb-deploy");
    let _logs = ServerLogsOnPanic(cluster.name.clone());
    let tag = image.tag.clone();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let client = kube_client(&sandbox, &cluster.context()).await;
        let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
        let deploy: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "bench"},
            "spec": {
                "replicas": PODS,
                "selector": {"matchLabels": {"app": "bench-deploy"}},
                "template": {
                    "metadata": {"labels": {"app": "bench-deploy"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "c", "image": tag, "command": ["sleep", "3600"],
                                        "env": [{"name": "ROUND", "value": "1"}],
                                        "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}}}],
                    },
                },
            },
        }))
        .expect("a deployment");
        let started = Instant::now();
        api.create(&PostParams::default(), &deploy)
            .await
            .expect("deployment created");
        let replicas = PODS as i32;
        let ready = wait_deployment(&api, "bench", started, |d| rolled_out(d, replicas)).await;
        println!("{PODS}-replica Deployment on 3 nodes: all available {} after its create", secs(ready));

        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let before: HashSet<String> = pods
            .list(&kube::api::ListParams::default().labels("app=bench-deploy"))
            .await
            .expect("pods listed")
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "c", "env": [{"name": "ROUND", "value": "2"}]}
        ]}}}});
        let started = Instant::now();
        api.patch("bench", &PatchParams::default(), &Patch::Strategic(&patch))
            .await
            .expect("template changed");
        let rolled = wait_deployment(&api, "bench", started, |d| rolled_out(d, replicas)).await;
        let after = pods
            .list(&kube::api::ListParams::default().labels("app=bench-deploy"))
            .await
            .expect("pods listed")
            .items;
        let replaced = after
            .iter()
            .filter(|p| {
                p.metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| !before.contains(n))
                    && p.metadata.deletion_timestamp.is_none()
            })
            .count();
        println!(
            "rolling update (default 25% surge / 25% unavailable): complete {} after the template change; {replaced} new pods",
            secs(rolled)
        );
    });
    cluster.kubectl_ok(&["delete", "deployment", "bench", "--wait=false"]);
    drop(cluster);
}
