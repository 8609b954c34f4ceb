//! The service proxy (kube-proxy's job) on every node: watches Services, EndpointSlices and this
//! node's pods, and programs the node's nf_tables (`nftables/`, over netlink: nodes have no `nft`
//! binary) so that cluster IPs, node ports, external and load-balancer IPs and hostPorts reach
//! their endpoints, and pod egress is masqueraded. `model` reads the objects, `ruleset` says
//! what the kernel should hold, `sync` turns that into one atomic transaction per change.
//!
//! A full sync (the table deleted and rebuilt in one transaction) runs at start, after any
//! failed sync, and when the table is found missing (drift); every other sync only rewrites
//! what changed. UDP conntrack entries that point at endpoints that are gone are deleted, so a
//! DNS server that moves does not black-hole its clients.

#[cfg(test)]
mod kernel_tests;
pub mod model;
pub mod ruleset;
pub mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::cluster::cidr::Ipv4Cidr;
use crate::controllers::runtime::Informer;
use crate::controllers::runtime::events::{EventSink, Recorder, WARNING};
use crate::nftables::Family;
use crate::nftables::resync::{self, AbortOnDrop, Table, TableWriter};
use model::{Protocol, ServicePort};
use ruleset::HostPort;
use sync::Applied;

const TABLE: Table = Table {
    what: "service rules",
    family: Family::Ip,
    name: ruleset::TABLE,
};

#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub node_name: String,
    pub pod_subnet: Ipv4Cidr,
    pub service_subnet: Ipv4Cidr,
}

/// Starts the proxy; the receiver turns true after the first successful sync.
pub fn start(
    settings: ProxySettings,
    clients: watch::Receiver<Option<kube::Client>>,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(run(settings, clients, tx));
    rx
}

async fn run(
    settings: ProxySettings,
    mut clients: watch::Receiver<Option<kube::Client>>,
    synced: watch::Sender<bool>,
) {
    let mut proxy = Proxy::new(settings);
    loop {
        let client = match clients.wait_for(Option::is_some).await {
            Ok(c) => c.clone(),
            Err(_) => return,
        };
        let Some(client) = client else { continue };
        clients.borrow_and_update();
        if let Err(e) = proxy.serve(client, &mut clients, &synced).await {
            warn!(
                error = format!("{e:#}"),
                "the service proxy restarts its watches"
            );
        }
    }
}

struct Proxy {
    settings: ProxySettings,
    static_part: ruleset::StaticPart,
    applied: Option<Applied>,
    /// The service ports of the last applied sync (for UDP conntrack cleanup).
    last_ports: Vec<ServicePort>,
    /// Services already reported as skipped, so each gets one Warning per cause.
    reported: BTreeMap<(String, String), String>,
}

impl Proxy {
    fn new(settings: ProxySettings) -> Proxy {
        let static_part = ruleset::static_part(settings.pod_subnet, settings.service_subnet);
        Proxy {
            settings,
            static_part,
            applied: None,
            last_ports: Vec::new(),
            reported: BTreeMap::new(),
        }
    }

    /// Watches with one client until it is replaced.
    async fn serve(
        &mut self,
        client: kube::Client,
        clients: &mut watch::Receiver<Option<kube::Client>>,
        synced: &watch::Sender<bool>,
    ) -> Result<()> {
        let services = Informer::<Service>::new(client.clone());
        let slices = Informer::<EndpointSlice>::new(client.clone());
        let pods = Informer::<Pod>::with_fields(
            client.clone(),
            Some(format!("spec.nodeName={}", self.settings.node_name)),
        );
        let events = EventSink::start_on_host(client.clone(), self.settings.node_name.clone());
        let recorder = events.recorder("kube-proxy");
        let wake = Arc::new(Notify::new());
        {
            let w = wake.clone();
            services.add_handler(move |_| w.notify_one());
            let w = wake.clone();
            slices.add_handler(move |_| w.notify_one());
            let w = wake.clone();
            pods.add_handler(move |c| {
                if has_host_ports(c.object()) {
                    w.notify_one()
                }
            });
        }
        let tasks = [
            tokio::spawn(services.clone().run()),
            tokio::spawn(slices.clone().run()),
            tokio::spawn(pods.clone().run()),
        ];
        let _abort = AbortOnDrop(tasks.iter().map(|t| t.abort_handle()).collect());
        tokio::select! {
            _ = async {
                services.wait_synced().await;
                slices.wait_synced().await;
                pods.wait_synced().await;
            } => {}
            _ = clients.changed() => return Ok(()),
        }
        let mut writer = ProxyWriter {
            proxy: self,
            services: &services,
            slices: &slices,
            pods: &pods,
            recorder: &recorder,
        };
        resync::run(&TABLE, &mut writer, &wake, clients, synced).await;
        Ok(())
    }

    async fn sync_once(
        &mut self,
        services: &Informer<Service>,
        slices: &Informer<EndpointSlice>,
        pods: &Informer<Pod>,
        recorder: &Recorder,
    ) -> Result<()> {
        let started = Instant::now();
        let all_services = services.list_all();
        let all_slices = slices.list_all();
        let svc_refs: Vec<&Service> = all_services.iter().map(|s| &**s).collect();
        let slice_refs: Vec<&EndpointSlice> = all_slices.iter().map(|s| &**s).collect();
        let (ports, skipped) =
            model::service_ports(&svc_refs, &slice_refs, &self.settings.node_name);
        self.report_skipped(&skipped, &all_services, recorder);
        let hostports: Vec<HostPort> = pods.list_all().iter().flat_map(|p| host_ports(p)).collect();
        let desired = ruleset::desired(&ports, self.settings.pod_subnet, &hostports);

        let (batch, full, next) = match self.applied.take() {
            Some(mut applied) => {
                if applied.state == desired && applied.stale.is_empty() {
                    self.applied = Some(applied);
                    return Ok(());
                }
                let batch = sync::incremental(&mut applied, &desired, Instant::now());
                applied.state = desired;
                (batch, false, applied)
            }
            None => (
                sync::full(&self.static_part, &desired),
                true,
                Applied {
                    state: desired,
                    stale: BTreeMap::new(),
                },
            ),
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
                service_ports = ports.len(),
                elapsed_ms, "service rules synced (full)"
            );
        } else {
            debug!(
                service_ports = ports.len(),
                elapsed_ms, "service rules synced"
            );
        }
        let old = std::mem::replace(&mut self.last_ports, ports);
        let stale = stale_udp(&old, &self.last_ports);
        if !stale.is_empty() {
            tokio::task::spawn_blocking(move || clear_conntrack(stale));
        }
        Ok(())
    }

    /// One Warning event per skipped Service and cause; the other Services keep routing.
    fn report_skipped(
        &mut self,
        skipped: &[model::Skipped],
        services: &[Arc<Service>],
        recorder: &Recorder,
    ) {
        let mut now: BTreeMap<(String, String), String> = BTreeMap::new();
        for s in skipped {
            let key = (s.namespace.clone(), s.name.clone());
            if self.reported.get(&key) != Some(&s.reason) {
                warn!(namespace = %s.namespace, service = %s.name, reason = %s.reason, "service skipped");
                if let Some(svc) = services.iter().find(|svc| {
                    svc.metadata.namespace.as_deref() == Some(&s.namespace)
                        && svc.metadata.name.as_deref() == Some(&s.name)
                }) {
                    recorder.event(
                        &**svc,
                        WARNING,
                        "FailedToProgramService",
                        "Sync",
                        format!(
                            "the service proxy on node {} skips this Service: {}",
                            self.settings.node_name, s.reason
                        ),
                    );
                }
            }
            now.insert(key, s.reason.clone());
        }
        self.reported = now;
    }
}

/// The proxy with the watches of one API client.
struct ProxyWriter<'a> {
    proxy: &'a mut Proxy,
    services: &'a Informer<Service>,
    slices: &'a Informer<EndpointSlice>,
    pods: &'a Informer<Pod>,
    recorder: &'a Recorder,
}

impl TableWriter for ProxyWriter<'_> {
    async fn sync(&mut self) -> Result<bool> {
        self.proxy
            .sync_once(self.services, self.slices, self.pods, self.recorder)
            .await?;
        Ok(self
            .proxy
            .applied
            .as_ref()
            .is_some_and(|a| !a.stale.is_empty()))
    }

    fn forget(&mut self) {
        self.proxy.applied = None;
    }
}

fn has_host_ports(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .any(|p| p.host_port.is_some_and(|h| h > 0))
    })
}

/// A running pod's hostPorts (portmap's view: only pods with an address).
fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(ip) = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
    else {
        return Vec::new();
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for port in pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
    {
        let (Some(host_port), Ok(container_port)) = (
            port.host_port
                .and_then(|h| u16::try_from(h).ok())
                .filter(|h| *h > 0),
            u16::try_from(port.container_port),
        ) else {
            continue;
        };
        let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            _ => Protocol::Tcp,
        };
        let host_ip = port
            .host_ip
            .as_deref()
            .and_then(|h| h.parse::<Ipv4Addr>().ok())
            .filter(|h| !h.is_unspecified());
        out.push(HostPort {
            host_ip,
            host_port,
            protocol,
            pod_ip: ip,
            container_port,
        });
    }
    out
}

/// What UDP conntrack entries must go after a sync: entries to endpoints that are gone, and
/// entries to service addresses that had no endpoint and now have one (those were rejected and
/// would keep being answered from the stale entry).
#[derive(Debug, Default, PartialEq, Eq)]
struct StaleUdp {
    endpoints: BTreeSet<Ipv4Addr>,
    services: BTreeSet<(Ipv4Addr, u16)>,
}

impl StaleUdp {
    fn is_empty(&self) -> bool {
        self.endpoints.is_empty() && self.services.is_empty()
    }
}

fn stale_udp(old: &[ServicePort], new: &[ServicePort]) -> StaleUdp {
    let by_id = |ports: &[ServicePort]| -> BTreeMap<String, ServicePort> {
        ports
            .iter()
            .filter(|p| p.protocol == Protocol::Udp)
            .map(|p| (p.id(), p.clone()))
            .collect()
    };
    let (old, new) = (by_id(old), by_id(new));
    let mut stale = StaleUdp::default();
    for (id, o) in &old {
        let now: BTreeSet<Ipv4Addr> = new
            .get(id)
            .map(|n| n.cluster_endpoints().iter().map(|e| e.ip).collect())
            .unwrap_or_default();
        for e in o.cluster_endpoints() {
            if !now.contains(&e.ip) {
                stale.endpoints.insert(e.ip);
            }
        }
    }
    for (id, n) in &new {
        let had = old
            .get(id)
            .is_some_and(|o| !o.cluster_endpoints().is_empty());
        if !had && !n.cluster_endpoints().is_empty() {
            stale.services.insert((n.cluster_ip, n.port));
        }
    }
    stale
}

fn clear_conntrack(stale: StaleUdp) {
    for ip in &stale.endpoints {
        match crate::conntrack::delete_udp_reply_from(*ip) {
            Ok(n) => debug!(endpoint = %ip, entries = n, "cleared UDP conntrack entries"),
            Err(e) => {
                warn!(endpoint = %ip, error = format!("{e:#}"), "cannot clear UDP conntrack entries")
            }
        }
    }
    for (ip, port) in &stale.services {
        match crate::conntrack::delete_udp_to(*ip, Some(*port)) {
            Ok(n) => debug!(service = %ip, port, entries = n, "cleared UDP conntrack entries"),
            Err(e) => {
                warn!(service = %ip, error = format!("{e:#}"), "cannot clear UDP conntrack entries")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(endpoints: &[(u8, bool)]) -> ServicePort {
        ServicePort {
            namespace: "kube-system".into(),
            name: "kube-dns".into(),
            port_name: "dns".into(),
            protocol: Protocol::Udp,
            cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
            port: 53,
            node_port: None,
            external_ips: Vec::new(),
            external_local: false,
            internal_local: false,
            affinity_seconds: None,
            endpoints: endpoints
                .iter()
                .map(|(last, ready)| model::Endpoint {
                    ip: Ipv4Addr::new(10, 244, 0, *last),
                    port: 53,
                    ready: *ready,
                    serving: *ready,
                    terminating: false,
                    local: true,
                })
                .collect(),
        }
    }

    #[test]
    fn udp_entries_of_removed_endpoints_and_revived_services_are_stale() {
        let s = stale_udp(
            &[udp(&[(5, true), (6, true)])],
            &[udp(&[(6, true), (7, true)])],
        );
        assert_eq!(s.endpoints, [Ipv4Addr::new(10, 244, 0, 5)].into());
        assert!(s.services.is_empty());
        let s = stale_udp(&[udp(&[(5, false)])], &[udp(&[(5, true)])]);
        assert!(s.endpoints.is_empty());
        assert_eq!(s.services, [(Ipv4Addr::new(10, 96, 0, 10), 53)].into());
        assert!(stale_udp(&[udp(&[(5, true)])], &[udp(&[(5, true)])]).is_empty());
    }
}
