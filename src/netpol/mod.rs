//! NetworkPolicy enforcement on every node, for the pods that node runs (what kindnet's network
//! policies or kube-network-policies do elsewhere). Informers of NetworkPolicies, Pods and
//! Namespaces wake one sync loop (changes within 20 ms are folded together); `ruleset` says
//! what table `ip kcluster-netpol` should hold, `sync` writes the difference as one atomic
//! nf_tables transaction. Pod, namespace and label changes only add or remove set elements.
//!
//! Semantics follow the Kubernetes documentation: a pod is isolated for a direction once any
//! policy of that type selects it, and then only what some policy allows passes; replies of
//! allowed connections pass (conntrack), so a policy applies to new connections; Services are
//! judged after DNAT; host-network pods are never selected and are seen as their node's
//! address; a node always reaches its own pods.

#[cfg(test)]
mod kernel_tests;
pub mod ruleset;
pub mod sync;

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::controllers::runtime::Informer;
use crate::nftables::Family;
use crate::nftables::resync::{self, AbortOnDrop, Table, TableWriter};
use ruleset::Desired;
use sync::Applied;

const TABLE: Table = Table {
    what: "network policy rules",
    family: Family::Ip,
    name: ruleset::TABLE,
};

/// Starts enforcement; the receiver turns true after the first successful sync.
pub fn start(
    node_name: String,
    clients: watch::Receiver<Option<kube::Client>>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(run(node_name, clients, tx));
    rx
}

async fn run(
    node_name: String,
    mut clients: watch::Receiver<Option<kube::Client>>,
    synced: watch::Sender<bool>,
) {
    let mut enforcer = Enforcer {
        node_name,
        applied: None,
    };
    loop {
        let client = match clients.wait_for(Option::is_some).await {
            Ok(c) => c.clone(),
            Err(_) => return,
        };
        let Some(client) = client else { continue };
        clients.borrow_and_update();
        if let Err(e) = enforcer.serve(client, &mut clients, &synced).await {
            warn!(
                error = format!("{e:#}"),
                "network policy enforcement restarts its watches"
            );
        }
    }
}

struct Enforcer {
    node_name: String,
    applied: Option<Applied>,
}

/// The enforcer with the watches of one API client.
struct EnforcerWriter<'a> {
    enforcer: &'a mut Enforcer,
    policies: &'a Informer<NetworkPolicy>,
    pods: &'a Informer<Pod>,
    namespaces: &'a Informer<Namespace>,
}

impl TableWriter for EnforcerWriter<'_> {
    async fn sync(&mut self) -> Result<bool> {
        let desired = self
            .enforcer
            .desired(self.policies, self.pods, self.namespaces);
        self.enforcer.sync_once(desired).await?;
        Ok(self
            .enforcer
            .applied
            .as_ref()
            .is_some_and(|a| !a.stale.is_empty()))
    }

    fn forget(&mut self) {
        self.enforcer.applied = None;
    }
}

impl Enforcer {
    async fn serve(
        &mut self,
        client: kube::Client,
        clients: &mut watch::Receiver<Option<kube::Client>>,
        synced: &watch::Sender<bool>,
    ) -> Result<()> {
        let policies = Informer::<NetworkPolicy>::new(client.clone());
        let pods = Informer::<Pod>::new(client.clone());
        let namespaces = Informer::<Namespace>::new(client.clone());
        let wake = Arc::new(Notify::new());
        {
            let w = wake.clone();
            policies.add_handler(move |_| w.notify_one());
            let w = wake.clone();
            pods.add_handler(move |_| w.notify_one());
            let w = wake.clone();
            namespaces.add_handler(move |_| w.notify_one());
        }
        let tasks = [
            tokio::spawn(policies.clone().run()),
            tokio::spawn(pods.clone().run()),
            tokio::spawn(namespaces.clone().run()),
        ];
        let _abort = AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
        tokio::select! {
            _ = async {
                policies.wait_synced().await;
                pods.wait_synced().await;
                namespaces.wait_synced().await;
            } => {}
            _ = clients.changed() => return Ok(()),
        }
        let mut writer = EnforcerWriter {
            enforcer: self,
            policies: &policies,
            pods: &pods,
            namespaces: &namespaces,
        };
        resync::run(&TABLE, &mut writer, &wake, clients, synced).await;
        Ok(())
    }

    fn desired(
        &self,
        policies: &Informer<NetworkPolicy>,
        pods: &Informer<Pod>,
        namespaces: &Informer<Namespace>,
    ) -> Desired {
        let policies = policies.list_all();
        let pods: Vec<ruleset::PodInfo> = pods
            .list_all()
            .iter()
            .filter_map(|p| ruleset::pod_info(p, &self.node_name))
            .collect();
        let namespaces = namespaces.list_all();
        let policy_refs: Vec<&NetworkPolicy> = policies.iter().map(|p| &**p).collect();
        let ns_refs: Vec<&Namespace> = namespaces.iter().map(|n| &**n).collect();
        ruleset::desired(&policy_refs, &pods, &ns_refs)
    }

    async fn sync_once(&mut self, desired: Desired) -> Result<()> {
        let started = Instant::now();
        let policies = desired.chains.len();
        let (batch, stats, full, next) = match self.applied.take() {
            Some(mut applied) => {
                if applied.state == desired && applied.stale.is_empty() {
                    self.applied = Some(applied);
                    return Ok(());
                }
                let (batch, stats) = sync::incremental(&mut applied, &desired, Instant::now());
                applied.state = desired;
                (batch, stats, false, applied)
            }
            None => {
                let (batch, stats) = sync::full(&desired);
                (
                    batch,
                    stats,
                    true,
                    Applied {
                        state: desired,
                        stale: Default::default(),
                    },
                )
            }
        };
        if !batch.is_empty() {
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut conn = crate::nftables::Conn::new()
                    .context("cannot open nf_tables (does the kernel have nf_tables?)")?;
                conn.apply(&batch)?;
                Ok(())
            })
            .await
            .context("the sync task failed")??;
        }
        self.applied = Some(next);
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        if full {
            info!(
                chains = policies,
                messages = stats.messages,
                elapsed_ms,
                "network policy rules synced (full)"
            );
        } else {
            debug!(
                messages = stats.messages,
                elements_added = stats.elements_added,
                elements_removed = stats.elements_removed,
                chains_written = stats.chains_written,
                elapsed_ms,
                "network policy rules synced"
            );
        }
        Ok(())
    }
}
