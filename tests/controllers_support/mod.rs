//! Support for the controller and scheduler tests: Node objects registered through the API (no
//! agents), and a test-only fake kubelet for them.
//!
//! Pods do not run yet, so nothing would ever make them Running and Ready. The fake kubelet does
//! what a kubelet reports, and only that: it renews its nodes' Leases, marks pods bound to its
//! nodes Running with the conditions and containerStatuses a kubelet writes (Ready unless an
//! image name contains "unready"), and finishes the graceful deletion of its pods the way a
//! kubelet does once containers have stopped (a delete with grace period 0). The controllers
//! themselves never touch pod status.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::*;

/// Registers Nodes with a Ready condition and the given allocatable cpu/memory/pods.
pub fn create_node(
    server: &ApiServer,
    name: &str,
    labels: &[(&str, &str)],
    cpu: &str,
    memory: &str,
    pods: u32,
) {
    let mut all_labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all_labels.insert("kubernetes.io/hostname".into(), name.into());
    let resources = json!({"cpu": cpu, "memory": memory, "pods": pods.to_string(), "ephemeral-storage": "50Gi"});
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all_labels},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}],
        },
    });
    let out = server.kubectl_stdin(&["create", "-f", "-"], &node.to_string());
    assert!(
        out.status.success(),
        "cannot create node {name}: {}",
        text(&out)
    );
}

pub struct FakeKubelet {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKubelet {
    pub fn start(server: &ApiServer, nodes: &[&str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let kubeconfig = server.sandbox.kubeconfig();
        let context = server.context().to_string();
        let nodes: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime for the fake kubelet");
            rt.block_on(async move {
                let client = client(&kubeconfig, &context).await;
                let mut tick = 0u64;
                let mut next_ip = 2u32;
                while !flag.load(Ordering::Relaxed) {
                    if tick.is_multiple_of(5) {
                        renew_leases(&client, &nodes).await;
                    }
                    sync_pods(&client, &nodes, &mut next_ip).await;
                    tick += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        });
        FakeKubelet {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub async fn client(kubeconfig: &std::path::Path, context: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("readable kubeconfig");
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .expect("a client configuration from the kubeconfig");
    kube::Client::try_from(config).expect("an API client")
}

fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

async fn renew_leases(client: &kube::Client, nodes: &[String]) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew = jiff::Timestamp::now().to_string();
    for node in nodes {
        let patch = json!({"spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": renew}});
        let patched = leases
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        if patched.is_err() {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": 40, "renewTime": renew},
            }))
            .expect("a lease");
            let _ = leases.create(&PostParams::default(), &lease).await;
        }
    }
}

async fn sync_pods(client: &kube::Client, nodes: &[String], next_ip: &mut u32) {
    let all: Api<Pod> = Api::all(client.clone());
    let Ok(list) = all.list(&ListParams::default()).await else {
        return;
    };
    for pod in &list.items {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let Some(node_index) = nodes.iter().position(|n| *n == node) else {
            continue;
        };
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            // Containers stopped: the kubelet removes the pod for good.
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        let spec = pod.spec.clone().unwrap_or_default();
        let image_says = |word: &str| {
            spec.containers
                .iter()
                .any(|c| c.image.as_deref().unwrap_or_default().contains(word))
        };
        match phase.as_deref() {
            Some("Succeeded" | "Failed") => continue,
            Some("Running") => {
                // Images named "…complete…" exit 0 and "…fail…" exit 1 once they have run.
                let outcome = if image_says("complete") {
                    Some(("Succeeded", 0, "Completed"))
                } else if image_says("fail") {
                    Some(("Failed", 1, "Error"))
                } else {
                    None
                };
                if let Some((phase, code, reason)) = outcome {
                    finish(&api, &name, &spec, phase, code, reason).await;
                }
                continue;
            }
            _ => {}
        }
        let ready = !spec
            .containers
            .iter()
            .any(|c| c.image.as_deref().unwrap_or_default().contains("unready"));
        let now = now();
        let statuses: Vec<serde_json::Value> = spec
            .containers
            .iter()
            .map(|c| {
                json!({
                    "name": c.name, "image": c.image, "imageID": "", "ready": ready, "started": true,
                    "restartCount": 0, "state": {"running": {"startedAt": now}},
                })
            })
            .collect();
        let flag = if ready { "True" } else { "False" };
        let host_ip = format!("172.18.0.{}", node_index + 2);
        // Each pod its own address in the node's /24, as a pod network would give.
        let pod_ip = format!("10.244.{}.{}", node_index, *next_ip % 250 + 2);
        *next_ip += 1;
        let patch = json!({"status": {
            "phase": "Running",
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": now,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": flag, "lastProbeTime": null, "lastTransitionTime": now},
                {"type": "Ready", "status": flag, "lastProbeTime": null, "lastTransitionTime": now},
            ],
            "containerStatuses": statuses,
        }});
        let _ = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await;
    }
}

/// A pod whose containers all exited: the terminal phase and the statuses a kubelet writes.
async fn finish(
    api: &Api<Pod>,
    name: &str,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    phase: &str,
    code: i32,
    reason: &str,
) {
    let now = now();
    let statuses: Vec<serde_json::Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image, "imageID": "", "ready": false, "started": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": now, "finishedAt": now}},
            })
        })
        .collect();
    let patch = json!({"status": {
        "phase": phase,
        "conditions": [
            {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastProbeTime": null, "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastProbeTime": null, "lastTransitionTime": now},
        ],
        "containerStatuses": statuses,
    }});
    let _ = api
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await;
}
