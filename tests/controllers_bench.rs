//! Scheduler throughput, as the workload issue asks for it: 100 nodes registered through the API
//! (no agents) and 3,000 pending pods; target at least 1,000 pods bound per second.
//!
//! The pods are created while every node carries a `bench=hold:NoSchedule` taint, so they are
//! all attempted once and parked as unschedulable; the clock starts when the taints are removed
//! and stops when the last pod has a node. That measures the scheduler (and the bindings through
//! the API server), not how fast a client can create pods.
//!
//! Also the controllers' memory with those 3,000 pods: the same server process measured with and
//! without `--controllers` (`controller_manager_memory_with_3000_pods`).
//!
//! Run: `cargo test --release --test controllers_bench -- --ignored --nocapture --test-threads=1`

mod common;
mod controllers_support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use serde_json::json;

use common::*;

const NODES: usize = 100;
const PODS: usize = 3000;

fn count_where(pods: &[Pod], f: impl Fn(&Pod) -> bool) -> usize {
    pods.iter().filter(|p| f(p)).count()
}

fn parked(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "PodScheduled" && c.status == "False")
        })
}

fn bound(p: &Pod) -> bool {
    p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn scheduler_binds_3000_pods_on_100_nodes() {
    let server = ApiServer::start_with(&["--controllers"]);
    let kubeconfig = server.sandbox.kubeconfig();
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(async {
        let client = controllers_support::client(&kubeconfig, server.context()).await;
        let nodes: Api<Node> = Api::all(client.clone());
        let started = Instant::now();
        futures::stream::iter(0..NODES)
            .for_each_concurrent(16, |i| {
                let nodes = nodes.clone();
                async move {
                    let resources = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
                    let node: Node = serde_json::from_value(json!({
                        "apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": format!("node-{i:03}"), "labels": {"kubernetes.io/hostname": format!("node-{i:03}")}},
                        "spec": {"taints": [{"key": "bench", "value": "hold", "effect": "NoSchedule"}]},
                        "status": {"capacity": resources, "allocatable": resources,
                                   "conditions": [{"type": "Ready", "status": "True"}]},
                    }))
                    .expect("a node");
                    nodes.create(&PostParams::default(), &node).await.expect("node created");
                }
            })
            .await;
        println!("{NODES} nodes registered in {:?}", started.elapsed());

        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "bench"}})).expect("ns");
        namespaces.create(&PostParams::default(), &ns).await.expect("namespace");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
        let started = Instant::now();
        futures::stream::iter(0..PODS)
            .for_each_concurrent(32, |i| {
                let pods = pods.clone();
                async move {
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": format!("pod-{i:04}"), "labels": {"app": format!("app-{}", i % 30)}},
                        "spec": {"containers": [{"name": "c", "image": "busybox",
                                 "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}]},
                    }))
                    .expect("a pod");
                    pods.create(&PostParams::default(), &pod).await.expect("pod created");
                }
            })
            .await;
        let created = started.elapsed();
        println!("{PODS} pods created in {created:?} ({:.0}/s)", PODS as f64 / created.as_secs_f64());

        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let list = pods.list(&ListParams::default()).await.expect("pods listed").items;
            if count_where(&list, parked) == PODS {
                break;
            }
            assert!(Instant::now() < deadline, "pods were not all attempted: {} parked", count_where(&list, parked));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("all pods attempted and parked after {:?}", started.elapsed());
        // Past the first retry backoff, so the measurement has no backoff in it.
        tokio::time::sleep(Duration::from_secs(2)).await;

        // Bindings are counted from a watch, so measuring costs the server almost nothing.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let watched = pods.clone();
        tokio::spawn(async move {
            let mut stream = kube::runtime::watcher(watched, kube::runtime::watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(Ok(event)) = stream.next().await {
                let objs = match event {
                    kube::runtime::watcher::Event::Apply(p) | kube::runtime::watcher::Event::InitApply(p) => vec![p],
                    _ => vec![],
                };
                for p in objs {
                    if bound(&p) {
                        let _ = tx.send(p.metadata.name.clone().unwrap_or_default());
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut seen = std::collections::HashSet::new();
        while let Ok(name) = rx.try_recv() {
            seen.insert(name);
        }
        assert!(seen.is_empty(), "pods were bound before the taints went");

        let t0 = Instant::now();
        futures::stream::iter(0..NODES)
            .for_each_concurrent(16, |i| {
                let nodes = nodes.clone();
                async move {
                    let patch = json!({"spec": {"taints": null}});
                    nodes
                        .patch(&format!("node-{i:03}"), &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .expect("taint removed");
                }
            })
            .await;
        let untainted = t0.elapsed();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        while seen.len() < PODS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(name)) => {
                    seen.insert(name);
                }
                _ => panic!("only {} of {PODS} pods bound", seen.len()),
            }
        }
        let took = t0.elapsed();
        println!(
            "taints removed in {untainted:?}; all {PODS} pods bound {took:?} after the first removal: {:.0} pods/s",
            PODS as f64 / took.as_secs_f64()
        );
        let list = pods.list(&ListParams::default()).await.expect("pods listed").items;
        let mut per_node = std::collections::BTreeMap::<String, usize>::new();
        for p in &list {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                *per_node.entry(n).or_default() += 1;
            }
        }
        let (min, max) = (
            per_node.values().min().copied().unwrap_or(0),
            per_node.values().max().copied().unwrap_or(0),
        );
        println!("pods per node: min {min}, max {max} over {} nodes", per_node.len());
    });
}

fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the server's /proc/<pid>/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// One run: a fresh server (with or without `--controllers`), 100 Nodes, 3,000 pods already
/// bound to them (spec.nodeName), so both runs store exactly the same objects; memory is read
/// idle, right after the creates, and after the process has settled.
fn memory_run(controllers: bool) -> [(u64, u64); 3] {
    let extra: &[&str] = if controllers { &["--controllers"] } else { &[] };
    let server = ApiServer::start_with(extra);
    let pid = server.pid();
    let kubeconfig = server.sandbox.kubeconfig();
    std::thread::sleep(Duration::from_secs(3));
    let idle = memory_kib(pid);
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let loaded = rt.block_on(async {
        let client = controllers_support::client(&kubeconfig, server.context()).await;
        let nodes: Api<Node> = Api::all(client.clone());
        futures::stream::iter(0..NODES)
            .for_each_concurrent(16, |i| {
                let nodes = nodes.clone();
                async move {
                    let resources = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
                    let node: Node = serde_json::from_value(json!({
                        "apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": format!("node-{i:03}"), "labels": {"kubernetes.io/hostname": format!("node-{i:03}")}},
                        "status": {"capacity": resources, "allocatable": resources,
                                   "conditions": [{"type": "Ready", "status": "True"}]},
                    }))
                    .expect("a node");
                    nodes.create(&PostParams::default(), &node).await.expect("node created");
                }
            })
            .await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "bench"}})).expect("ns");
        namespaces.create(&PostParams::default(), &ns).await.expect("namespace");
        let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
        let started = Instant::now();
        futures::stream::iter(0..PODS)
            .for_each_concurrent(32, |i| {
                let pods = pods.clone();
                async move {
                    let pod: Pod = serde_json::from_value(json!({
                        "metadata": {"name": format!("pod-{i:04}"), "labels": {"app": format!("app-{}", i % 30)}},
                        "spec": {"nodeName": format!("node-{:03}", i % NODES),
                                 "containers": [{"name": "c", "image": "busybox",
                                 "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}]},
                    }))
                    .expect("a pod");
                    pods.create(&PostParams::default(), &pod).await.expect("pod created");
                }
            })
            .await;
        println!(
            "  {PODS} pods created in {:?}",
            started.elapsed()
        );
        let count = pods.list(&ListParams::default()).await.expect("pods listed").items.len();
        assert_eq!(count, PODS);
        memory_kib(pid)
    });
    // Informers, caches and queues have caught up well before this. Nodes have no Leases: when
    // the creates take longer than the node-monitor grace (40 s; debug builds on a loaded
    // machine do), the nodes get unreachable taints, but nothing is evicted for 300 s.
    std::thread::sleep(Duration::from_secs(10));
    let settled = memory_kib(pid);
    [idle, loaded, settled]
}

#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn controller_manager_memory_with_3000_pods() {
    let mut rows = Vec::new();
    for controllers in [false, true] {
        let label = if controllers {
            "with --controllers"
        } else {
            "API server alone"
        };
        println!("{label}:");
        let [idle, loaded, settled] = memory_run(controllers);
        println!(
            "  VmRSS idle {}, after the creates {}, settled {}; VmHWM {}",
            mib(idle.0),
            mib(loaded.0),
            mib(settled.0),
            mib(settled.1)
        );
        rows.push((idle, settled));
    }
    let (alone, with) = (rows[0], rows[1]);
    println!(
        "controllers' share with {NODES} nodes and {PODS} pods: VmRSS {} (settled {} vs {}), peak {} (VmHWM {} vs {}); idle {}",
        mib(with.1.0.saturating_sub(alone.1.0)),
        mib(with.1.0),
        mib(alone.1.0),
        mib(with.1.1.saturating_sub(alone.1.1)),
        mib(with.1.1),
        mib(alone.1.1),
        mib(with.0.0.saturating_sub(alone.0.0)),
    );
}
