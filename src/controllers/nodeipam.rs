//! Pod CIDR allocation, as kube-controller-manager's node IPAM controller does it with
//! `--allocate-node-cidrs`: every Node without `spec.podCIDR` gets a /24 of the cluster's pod
//! subnet (`spec.podCIDR` and `spec.podCIDRs`), and a deleted Node's block goes back to the pool.
//! The pool is rebuilt from the Nodes themselves when the controller starts, so a restart never
//! hands out a block twice. When the subnet is full the Node gets a CIDRNotAvailable event and
//! is retried later.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{info, warn};

use super::runtime::events::{NORMAL, Recorder};
use super::runtime::queue::WorkQueue;
use super::runtime::{Change, Informer, ObjKey, is_not_found};
use crate::cluster::cidr::Ipv4Cidr;
use crate::cluster::config::NODE_POD_PREFIX_LEN;

/// How soon a Node that found the subnet full is tried again (a Node may have gone meanwhile).
const FULL_RETRY: Duration = Duration::from_secs(15);

/// Which blocks of the pod subnet belong to which Node.
#[derive(Debug)]
pub struct CidrSet {
    subnet: Ipv4Cidr,
    prefix_len: u8,
    count: u32,
    /// block index → node name.
    used: BTreeMap<u32, String>,
}

impl CidrSet {
    pub fn new(subnet: Ipv4Cidr) -> Self {
        // A subnet smaller than a /24 is given whole to one node.
        let prefix_len = NODE_POD_PREFIX_LEN.max(subnet.prefix_len());
        let bits = u32::from(prefix_len - subnet.prefix_len());
        CidrSet {
            subnet,
            prefix_len,
            count: if bits >= 32 { u32::MAX } else { 1 << bits },
            used: BTreeMap::new(),
        }
    }

    /// The block index of `cidr` if it is one of this set's blocks.
    fn index_of(&self, cidr: &str) -> Option<u32> {
        let cidr: Ipv4Cidr = cidr.parse().ok()?;
        if cidr.prefix_len() != self.prefix_len || !self.subnet.contains(cidr.network()) {
            return None;
        }
        let offset = u32::from(cidr.network()) - u32::from(self.subnet.network());
        Some(offset >> (32 - u32::from(self.prefix_len)))
    }

    /// Records a block a Node already has; false when it is not in the subnet (set by hand).
    pub fn occupy(&mut self, cidr: &str, node: &str) -> bool {
        match self.index_of(cidr) {
            Some(i) => {
                self.used.insert(i, node.to_string());
                true
            }
            None => false,
        }
    }

    /// The block recorded for `node`, if any.
    pub fn of_node(&self, node: &str) -> Option<Ipv4Cidr> {
        let (&i, _) = self.used.iter().find(|(_, n)| n.as_str() == node)?;
        self.subnet.subnet(self.prefix_len, i)
    }

    /// The lowest free block, now recorded for `node`; None when the subnet is full.
    pub fn allocate(&mut self, node: &str) -> Option<Ipv4Cidr> {
        if let Some(cidr) = self.of_node(node) {
            return Some(cidr);
        }
        let mut index = 0u32;
        for &used in self.used.keys() {
            if used != index {
                break;
            }
            index += 1;
        }
        if index >= self.count {
            return None;
        }
        let cidr = self.subnet.subnet(self.prefix_len, index)?;
        self.used.insert(index, node.to_string());
        Some(cidr)
    }

    /// Frees `node`'s block (only if it is still recorded for that node).
    pub fn release(&mut self, cidr: &str, node: &str) {
        if let Some(i) = self.index_of(cidr)
            && self.used.get(&i).is_some_and(|n| n == node)
        {
            self.used.remove(&i);
        }
    }

    pub fn release_node(&mut self, node: &str) {
        self.used.retain(|_, n| n != node);
    }
}

fn pod_cidrs(node: &Node) -> Vec<String> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let mut all: Vec<String> = spec.pod_cidrs.clone().unwrap_or_default();
    if let Some(c) = spec.pod_cidr.as_ref().filter(|c| !c.is_empty())
        && !all.contains(c)
    {
        all.push(c.clone());
    }
    all
}

fn has_pod_cidr(node: &Node) -> bool {
    !pod_cidrs(node).is_empty()
}

pub struct NodeIpamController {
    client: kube::Client,
    nodes: Arc<Informer<Node>>,
    queue: Arc<WorkQueue<ObjKey>>,
    cidrs: Mutex<CidrSet>,
    recorder: Recorder,
}

impl NodeIpamController {
    pub fn new(
        client: kube::Client,
        nodes: Arc<Informer<Node>>,
        subnet: Ipv4Cidr,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(NodeIpamController {
            client,
            nodes,
            queue: WorkQueue::new(),
            cidrs: Mutex::new(CidrSet::new(subnet)),
            recorder,
        });
        let weak = Arc::downgrade(&this);
        this.nodes.add_handler(move |change| {
            let Some(c) = weak.upgrade() else {
                return;
            };
            match change {
                Change::Added(n) | Change::Updated { new: n, .. } => {
                    if !has_pod_cidr(n) {
                        c.queue.add(ObjKey::of(&**n));
                    }
                }
                Change::Deleted(n) => {
                    let name = n.name_any();
                    if let Ok(mut set) = c.cidrs.lock() {
                        for cidr in pod_cidrs(n) {
                            set.release(&cidr, &name);
                        }
                        // A block handed out but not yet seen on the Node goes back too.
                        set.release_node(&name);
                    }
                }
            }
        });
        this
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.nodes.wait_synced().await;
        let mut pending = Vec::new();
        if let Ok(mut set) = self.cidrs.lock() {
            for node in self.nodes.list_all() {
                let name = node.name_any();
                for cidr in pod_cidrs(&node) {
                    if !set.occupy(&cidr, &name) {
                        warn!(node = %name, cidr, subnet = %set.subnet, "node has a pod CIDR outside the cluster's pod subnet; leaving it alone");
                    }
                }
                if !has_pod_cidr(&node) {
                    pending.push(ObjKey::of(&*node));
                }
            }
            info!(subnet = %set.subnet, allocated = set.used.len(), "node IPAM controller started");
        }
        for key in pending {
            self.queue.add(key);
        }
        loop {
            let key = self.queue.get().await;
            match self.sync(&key).await {
                Ok(()) => self.queue.forget(&key),
                Err(e) => {
                    warn!(node = %key, error = format!("{e:#}"), "cannot assign a pod CIDR; retrying");
                    self.queue.add_rate_limited(key.clone());
                }
            }
            self.queue.done(&key);
        }
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let Some(node) = self.nodes.get(key) else {
            return Ok(());
        };
        if has_pod_cidr(&node) {
            return Ok(());
        }
        let allocated = match self.cidrs.lock() {
            Ok(mut set) => set.allocate(&key.name),
            Err(_) => return Ok(()),
        };
        let Some(cidr) = allocated else {
            let subnet = self.cidrs.lock().map(|s| s.subnet.to_string()).ok();
            warn!(node = %key.name, subnet, "no pod CIDR left for node: the cluster's pod subnet is exhausted; delete nodes or recreate the cluster with a larger networking.podSubnet");
            self.recorder.event(
                &*node,
                NORMAL,
                "CIDRNotAvailable",
                "CIDRAssignmentFailed",
                format!("Node {} status is now: CIDRNotAvailable", key.name),
            );
            self.queue.add_after(key.clone(), FULL_RETRY);
            return Ok(());
        };
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
        match api
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                info!(node = %key.name, cidr = %cidr, "assigned pod CIDR");
                Ok(())
            }
            Err(e) if is_not_found(&e) => {
                if let Ok(mut set) = self.cidrs.lock() {
                    set.release_node(&key.name);
                }
                Ok(())
            }
            // The block stays recorded for this node, so the retry patches the same one.
            Err(e) => Err(e).with_context(|| format!("cannot set the pod CIDR of node {key}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(subnet: &str) -> CidrSet {
        CidrSet::new(subnet.parse().unwrap())
    }

    #[test]
    fn blocks_are_distinct_24s_from_the_bottom_and_stable_per_node() {
        let mut s = set("10.244.0.0/16");
        assert_eq!(s.allocate("a").unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(s.allocate("b").unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(s.allocate("a").unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(s.of_node("b").unwrap().to_string(), "10.244.1.0/24");
    }

    #[test]
    fn a_rebuilt_set_skips_blocks_nodes_already_have() {
        let mut s = set("10.244.0.0/16");
        assert!(s.occupy("10.244.0.0/24", "server"));
        assert!(s.occupy("10.244.2.0/24", "w2"));
        assert!(!s.occupy("192.168.0.0/24", "odd"));
        assert!(!s.occupy("10.244.3.0/25", "odd"));
        assert_eq!(s.allocate("w1").unwrap().to_string(), "10.244.1.0/24");
        assert_eq!(s.allocate("w3").unwrap().to_string(), "10.244.3.0/24");
    }

    #[test]
    fn released_blocks_are_reused_and_a_full_subnet_says_so() {
        let mut s = set("10.244.0.0/23");
        assert_eq!(s.allocate("a").unwrap().to_string(), "10.244.0.0/24");
        assert_eq!(s.allocate("b").unwrap().to_string(), "10.244.1.0/24");
        assert!(s.allocate("c").is_none());
        // Only the owner's release counts.
        s.release("10.244.0.0/24", "someone-else");
        assert!(s.allocate("c").is_none());
        s.release("10.244.0.0/24", "a");
        assert_eq!(s.allocate("c").unwrap().to_string(), "10.244.0.0/24");
        s.release_node("b");
        assert_eq!(s.allocate("d").unwrap().to_string(), "10.244.1.0/24");
    }

    #[test]
    fn a_subnet_smaller_than_a_24_goes_whole_to_one_node() {
        let mut s = set("10.1.2.0/26");
        assert_eq!(s.allocate("a").unwrap().to_string(), "10.1.2.0/26");
        assert!(s.allocate("b").is_none());
    }
}
