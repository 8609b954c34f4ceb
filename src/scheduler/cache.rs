//! The scheduler's view of the cluster, as kube-scheduler's cache keeps it: per node, its
//! allocatable resources, what the pods placed there request, their host ports, and how many
//! pods of each owner it runs. Pods the scheduler has decided on but whose binding has not come
//! back through the watch yet are "assumed" here, so the next pod already sees them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::resources::{Resources, node_allocatable, pod_requests};
use crate::controllers::runtime::{ObjKey, controller_of};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub protocol: String,
    pub ip: String,
    pub port: i32,
}

pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub requests: Resources,
    pub non_zero: Resources,
    pub ports: Vec<HostPort>,
    pub owner: Option<String>,
    pub priority: i32,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Self {
        PodInfo {
            requests: pod_requests(&pod, false),
            non_zero: pod_requests(&pod, true),
            ports: host_ports(&pod),
            owner: controller_of(&pod.metadata).map(|o| o.uid.clone()),
            priority: priority(&pod),
            pod,
        }
    }
}

pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The host ports a pod asks for; an empty hostIP means every address.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|h| *h > 0)?;
            Some(HostPort {
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                port,
            })
        })
        .collect()
}

#[derive(Default)]
pub struct NodeInfo {
    pub node: Option<Arc<Node>>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: HashMap<ObjKey, PodInfo>,
    pub ports: HashMap<HostPort, usize>,
    pub owners: HashMap<String, usize>,
    /// Pods here with inter-pod (anti-)affinity: when none anywhere, that plugin has no work.
    pub affinity_pods: usize,
}

impl NodeInfo {
    pub fn insert(&mut self, key: ObjKey, info: PodInfo) {
        self.requested.add(&info.requests);
        self.non_zero_requested.add(&info.non_zero);
        for p in &info.ports {
            *self.ports.entry(p.clone()).or_default() += 1;
        }
        if let Some(o) = &info.owner
            && info.pod.metadata.deletion_timestamp.is_none()
        {
            *self.owners.entry(o.clone()).or_default() += 1;
        }
        if super::affinity::has_affinity(&info.pod) {
            self.affinity_pods += 1;
        }
        self.pods.insert(key, info);
    }

    pub fn remove(&mut self, key: &ObjKey) -> bool {
        let Some(info) = self.pods.remove(key) else {
            return false;
        };
        if super::affinity::has_affinity(&info.pod) {
            self.affinity_pods -= 1;
        }
        self.requested.sub(&info.requests);
        self.non_zero_requested.sub(&info.non_zero);
        for p in &info.ports {
            if let Some(n) = self.ports.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    self.ports.remove(p);
                }
            }
        }
        if let Some(o) = &info.owner
            && info.pod.metadata.deletion_timestamp.is_none()
            && let Some(n) = self.owners.get_mut(o)
        {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(o);
            }
        }
        true
    }

    /// Whether any port the pod wants is taken (same protocol and port, and the same address or
    /// either one being the wildcard).
    pub fn port_conflict(&self, wanted: &[HostPort]) -> bool {
        wanted.iter().any(|w| {
            self.ports.keys().any(|u| {
                u.protocol == w.protocol
                    && u.port == w.port
                    && (u.ip == w.ip || u.ip == "0.0.0.0" || w.ip == "0.0.0.0")
            })
        })
    }

    pub fn name(&self) -> &str {
        self.node
            .as_ref()
            .and_then(|n| n.metadata.name.as_deref())
            .unwrap_or_default()
    }
}

#[derive(Default)]
pub struct Cache {
    /// Every node, and pods bound to nodes we have not seen (yet).
    pub nodes: BTreeMap<String, NodeInfo>,
    pod_node: HashMap<ObjKey, String>,
    assumed: HashSet<ObjKey>,
}

fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// Finished pods hold no resources.
fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Cache {
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let info = self.nodes.entry(name).or_default();
        info.allocatable = node_allocatable(&node);
        info.node = Some(node);
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(info) = self.nodes.get_mut(name) {
            info.node = None;
            if info.pods.is_empty() {
                self.nodes.remove(name);
            }
        }
    }

    /// A bound pod as the watch reports it: added, changed, or confirming an assumed one.
    pub fn set_pod(&mut self, pod: Arc<Pod>) {
        let key = ObjKey::of(&*pod);
        if terminal(&pod) {
            self.remove_pod(&key);
            return;
        }
        let Some(node) = node_name(&pod).map(str::to_string) else {
            return;
        };
        self.remove_pod(&key);
        self.pod_node.insert(key.clone(), node.clone());
        self.nodes
            .entry(node)
            .or_default()
            .insert(key, PodInfo::new(pod));
    }

    pub fn remove_pod(&mut self, key: &ObjKey) -> bool {
        self.assumed.remove(key);
        let Some(node) = self.pod_node.remove(key) else {
            return false;
        };
        let mut removed = false;
        if let Some(info) = self.nodes.get_mut(&node) {
            removed = info.remove(key);
            if info.node.is_none() && info.pods.is_empty() {
                self.nodes.remove(&node);
            }
        }
        removed
    }

    /// The scheduler's decision, counted before the binding is confirmed.
    pub fn assume(&mut self, pod: Arc<Pod>) {
        let key = ObjKey::of(&*pod);
        self.set_pod(pod);
        self.assumed.insert(key);
    }

    pub fn is_assumed(&self, key: &ObjKey) -> bool {
        self.assumed.contains(key)
    }

    /// The binding failed: the pod is not on that node after all.
    pub fn forget(&mut self, key: &ObjKey) {
        if self.assumed.contains(key) {
            self.remove_pod(key);
        }
    }
}
