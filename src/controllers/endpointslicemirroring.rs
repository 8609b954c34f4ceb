//! The EndpointSliceMirroring controller, as kube-controller-manager's: a Service without a
//! selector gets its endpoints from a hand-written v1 Endpoints object of the same name, and
//! the service proxy and cluster DNS read only EndpointSlices, so such Endpoints are mirrored
//! into slices. Endpoints labelled `endpointslice.kubernetes.io/skip-mirror: "true"` (the
//! `kubernetes` and `kube-dns` ones, which have their own slices) or carrying a leader-election
//! annotation are left alone, and so is every slice another manager owns.
//!
//! Mapping, as upstream: the subsets are first repacked (one subset per distinct port set,
//! addresses deduplicated, ready winning over not ready); each (address type, port set) becomes
//! one slice named from `generateName: <service>-`, owned by the Endpoints, with the Endpoints'
//! labels (plus `kubernetes.io/service-name` and `managed-by`) and annotations (less
//! last-change-trigger-time and last-applied-configuration); at most 1000 addresses of a subset
//! are mirrored. `addresses` become endpoints with `ready: true`, `notReadyAddresses` ones with
//! `ready: false`; hostname, nodeName and targetRef are carried over. IPv6 addresses go to their
//! own IPv6 slice; addresses that are no IP are skipped with a Warning event.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use tracing::info;

use super::runtime::events::{Recorder, WARNING};
use super::runtime::queue::WorkQueue;
use super::runtime::{Change, Informer, ObjKey, controller_ref, is_not_found};

const WORKERS: usize = 2;
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
/// Annotations of the Endpoints that are not copied to its slices.
const UNMIRRORED_ANNOTATIONS: [&str; 2] = [
    "endpoints.kubernetes.io/last-change-trigger-time",
    "kubectl.kubernetes.io/last-applied-configuration",
];
/// Addresses mirrored per subset (kube-controller-manager's
/// --mirroring-max-endpoints-per-subset).
const MAX_PER_SUBSET: usize = 1000;
/// How long a slice this controller created may stay unseen by the informer before a sync goes
/// ahead without it.
const CREATED_GRACE: Duration = Duration::from_secs(10);

/// Upstream's shouldMirror: not labelled skip-mirror=true, not a leader-election record.
fn should_mirror(ep: &Endpoints) -> bool {
    let skip = ep
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .is_some_and(|v| v == "true");
    let leader = ep
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(LEADER_ANNOTATION));
    !skip && !leader
}

/// A Service without a selector (absent or empty) is the one whose Endpoints are mirrored; the
/// endpoints controller handles the others.
fn has_selector(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
}

fn managed_by_us(slice: &EndpointSlice) -> bool {
    slice
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL))
        .is_some_and(|v| v == MANAGED_BY)
}

fn service_label(slice: &EndpointSlice) -> Option<&String> {
    slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)
}

/// A port as a slice carries it once the API server has defaulted it (name "" and TCP).
type PortTuple = (String, i32, String, Option<String>);

fn port_tuple(p: &EndpointPort) -> PortTuple {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone(),
    )
}

fn slice_port_tuple(p: &SlicePort) -> PortTuple {
    (
        p.name.clone().unwrap_or_default(),
        p.port.unwrap_or(0),
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone(),
    )
}

/// An address is one address per IP and target (RepackSubsets' key).
type AddrKey = (String, Option<String>);

fn addr_key(a: &EndpointAddress) -> AddrKey {
    (
        a.ip.clone(),
        a.target_ref.as_ref().and_then(|r| r.uid.clone()),
    )
}

/// One repacked subset: its ports and its addresses with readiness.
#[derive(Debug)]
struct Subset {
    ports: Vec<PortTuple>,
    addresses: Vec<(EndpointAddress, bool)>,
}

/// RepackSubsets: the cross product of addresses and ports, regrouped so that each distinct set
/// of ports is one subset; an address listed as ready and as not ready for a port is ready.
fn repack(subsets: &[k8s_openapi::api::core::v1::EndpointSubset]) -> Vec<Subset> {
    let mut all: BTreeMap<AddrKey, EndpointAddress> = BTreeMap::new();
    // None stands for "no ports", which is a port set of its own.
    let mut by_port: BTreeMap<Option<PortTuple>, BTreeMap<AddrKey, bool>> = BTreeMap::new();
    for subset in subsets {
        let ports: Vec<Option<PortTuple>> = match subset.ports.as_deref() {
            None | Some([]) => vec![None],
            Some(ps) => ps.iter().map(|p| Some(port_tuple(p))).collect(),
        };
        for port in ports {
            for a in subset.addresses.iter().flatten() {
                let key = addr_key(a);
                all.entry(key.clone()).or_insert_with(|| a.clone());
                by_port.entry(port.clone()).or_default().insert(key, true);
            }
            for a in subset.not_ready_addresses.iter().flatten() {
                let key = addr_key(a);
                all.entry(key.clone()).or_insert_with(|| a.clone());
                by_port
                    .entry(port.clone())
                    .or_default()
                    .entry(key)
                    .or_insert(false);
            }
        }
    }
    let mut groups: BTreeMap<Vec<(AddrKey, bool)>, Vec<PortTuple>> = BTreeMap::new();
    for (port, addrs) in by_port {
        let ports = groups.entry(addrs.into_iter().collect()).or_default();
        ports.extend(port);
    }
    groups
        .into_iter()
        .map(|(addrs, ports)| Subset {
            ports,
            addresses: addrs
                .into_iter()
                .filter_map(|(key, ready)| Some((all.get(&key)?.clone(), ready)))
                .collect(),
        })
        .collect()
}

/// ParseIPSloppy: also IPv4 with leading zeros; an IPv4-mapped IPv6 address is IPv4.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let ip = match s.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            let octets: Vec<u8> = s
                .split('.')
                .map(|o| {
                    (!o.is_empty() && o.len() <= 3 && o.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| o.parse().ok())
                        .flatten()
                })
                .collect::<Option<_>>()?;
            let [a, b, c, d] = octets[..] else {
                return None;
            };
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
    };
    Some(match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    })
}

fn to_endpoint(a: &EndpointAddress, ready: bool) -> Option<(&'static str, Endpoint)> {
    let ip = parse_ip(&a.ip)?;
    let address_type = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    Some((
        address_type,
        Endpoint {
            addresses: vec![ip.to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..Default::default()
            }),
            hostname: a.hostname.clone().filter(|h| !h.is_empty()),
            node_name: a.node_name.clone().filter(|n| !n.is_empty()),
            target_ref: a.target_ref.clone(),
            ..Default::default()
        },
    ))
}

/// What one mirrored slice should hold.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSlice {
    pub address_type: &'static str,
    pub ports: Vec<PortTuple>,
    pub endpoints: Vec<Endpoint>,
}

impl DesiredSlice {
    fn key(&self) -> (String, Vec<PortTuple>) {
        (self.address_type.to_string(), self.ports.clone())
    }
}

/// The slices an Endpoints object mirrors into, with how many addresses were not IPs and how
/// many were left out over the per-subset limit.
#[derive(Debug, Default)]
pub struct Desired {
    pub slices: Vec<DesiredSlice>,
    pub invalid: usize,
    pub over_limit: usize,
}

pub fn desired_slices(ep: &Endpoints) -> Desired {
    let mut out = Desired::default();
    let mut by_key: BTreeMap<(String, Vec<PortTuple>), DesiredSlice> = BTreeMap::new();
    for subset in repack(ep.subsets.as_deref().unwrap_or_default()) {
        // Ready addresses first, as upstream counts them against the limit.
        let (ready, not_ready): (Vec<_>, Vec<_>) =
            subset.addresses.iter().partition(|(_, ready)| *ready);
        let mut added = 0;
        for (a, is_ready) in ready.into_iter().chain(not_ready) {
            if added >= MAX_PER_SUBSET {
                out.over_limit += 1;
                continue;
            }
            let Some((address_type, endpoint)) = to_endpoint(a, *is_ready) else {
                out.invalid += 1;
                continue;
            };
            added += 1;
            by_key
                .entry((address_type.to_string(), subset.ports.clone()))
                .or_insert_with(|| DesiredSlice {
                    address_type,
                    ports: subset.ports.clone(),
                    endpoints: Vec::new(),
                })
                .endpoints
                .push(endpoint);
        }
    }
    out.slices = by_key
        .into_values()
        .map(|mut s| {
            s.endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            s
        })
        .collect();
    out
}

/// The labels and annotations every slice of this Endpoints carries (upstream clones all the
/// Endpoints' labels, then sets the two of its own).
fn slice_meta(ep: &Endpoints) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = ep.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), ep.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let mut annotations = ep.metadata.annotations.clone().unwrap_or_default();
    for a in UNMIRRORED_ANNOTATIONS {
        annotations.remove(a);
    }
    (labels, annotations)
}

fn slice_ports(ports: &[PortTuple]) -> Vec<SlicePort> {
    ports
        .iter()
        .map(|(name, port, protocol, app_protocol)| SlicePort {
            name: Some(name.clone()),
            port: Some(*port),
            protocol: Some(protocol.clone()),
            app_protocol: app_protocol.clone(),
        })
        .collect()
}

/// What of an existing slice this controller sets, to compare with what it wants.
fn existing_key(slice: &EndpointSlice) -> (String, Vec<PortTuple>) {
    let mut ports: Vec<PortTuple> = slice.ports.iter().flatten().map(slice_port_tuple).collect();
    ports.sort();
    (slice.address_type.clone(), ports)
}

fn endpoints_equal(have: &[Endpoint], want: &[Endpoint]) -> bool {
    let mut have: Vec<&Endpoint> = have.iter().collect();
    have.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    have.len() == want.len()
        && have.iter().zip(want).all(|(h, w)| {
            h.addresses == w.addresses
                && h.conditions.as_ref().and_then(|c| c.ready)
                    == w.conditions.as_ref().and_then(|c| c.ready)
                && h.hostname == w.hostname
                && h.node_name == w.node_name
                && h.target_ref == w.target_ref
        })
}

pub struct EndpointSliceMirroringController {
    client: kube::Client,
    endpoints: Arc<Informer<Endpoints>>,
    services: Arc<Informer<Service>>,
    slices: Arc<Informer<EndpointSlice>>,
    recorder: Recorder,
    queue: Arc<WorkQueue<ObjKey>>,
    /// Slices created but not yet seen by the informer, per Endpoints: a sync that ran before
    /// they show up would create them again.
    created: Mutex<HashMap<ObjKey, Vec<(String, Instant)>>>,
}

impl EndpointSliceMirroringController {
    pub fn new(
        client: kube::Client,
        endpoints: Arc<Informer<Endpoints>>,
        services: Arc<Informer<Service>>,
        slices: Arc<Informer<EndpointSlice>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(EndpointSliceMirroringController {
            client,
            endpoints,
            services,
            slices,
            recorder,
            queue: WorkQueue::new(),
            created: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&this);
        this.endpoints.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let wanted = match change {
                Change::Added(e) | Change::Deleted(e) => should_mirror(e),
                // Also when it stops being mirrored: its slices go.
                Change::Updated { old, new } => should_mirror(old) || should_mirror(new),
            };
            if wanted {
                c.queue.add(ObjKey::of(&**change.object()));
            }
        });
        let weak = Arc::downgrade(&this);
        this.services.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let wanted = match change {
                Change::Added(s) | Change::Deleted(s) => !has_selector(s),
                Change::Updated { old, new } => has_selector(old) != has_selector(new),
            };
            if wanted {
                c.queue.add(ObjKey::of(&**change.object()));
            }
        });
        // A mirrored slice changed or deleted by someone else is put back; one whose
        // service-name label moved resyncs both names.
        let weak = Arc::downgrade(&this);
        this.slices.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let ns = change.object().namespace().unwrap_or_default();
            let enqueue = |s: &EndpointSlice| {
                if let Some(name) = service_label(s) {
                    c.queue.add(ObjKey::new(&ns, name));
                }
            };
            match change {
                Change::Added(s) => {
                    c.seen(s);
                    if managed_by_us(s) {
                        enqueue(s);
                    }
                }
                Change::Deleted(s) => {
                    c.seen(s);
                    if managed_by_us(s) {
                        enqueue(s);
                    }
                }
                Change::Updated { old, new } => {
                    if managed_by_us(old) || managed_by_us(new) {
                        enqueue(new);
                        if service_label(old) != service_label(new) {
                            enqueue(old);
                        }
                    }
                }
            }
        });
        this
    }

    /// The informer has seen a slice come or go: it no longer needs waiting for.
    fn seen(&self, slice: &EndpointSlice) {
        let Some(name) = slice.metadata.name.as_deref() else {
            return;
        };
        let Some(svc) = service_label(slice) else {
            return;
        };
        let key = ObjKey::new(&slice.namespace().unwrap_or_default(), svc);
        if let Ok(mut created) = self.created.lock()
            && let Some(names) = created.get_mut(&key)
        {
            names.retain(|(n, _)| n != name);
            if names.is_empty() {
                created.remove(&key);
            }
        }
    }

    /// Whether a slice this controller created for the key is still missing from the cache.
    fn awaiting_created(&self, key: &ObjKey) -> bool {
        let Ok(mut created) = self.created.lock() else {
            return false;
        };
        let Some(names) = created.get_mut(key) else {
            return false;
        };
        names.retain(|(_, at)| at.elapsed() < CREATED_GRACE);
        let cached = |n: &str| self.slices.get(&ObjKey::new(&key.namespace, n)).is_some();
        names.retain(|(n, _)| !cached(n));
        let waiting = !names.is_empty();
        if !waiting {
            created.remove(key);
        }
        waiting
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.endpoints.wait_synced().await;
        self.services.wait_synced().await;
        self.slices.wait_synced().await;
        info!("endpointslice mirroring controller started");
        self.queue
            .run_workers(WORKERS, "endpointslicemirroring", |key| {
                let this = &self;
                async move { this.sync(&key).await }
            })
            .await;
        Ok(())
    }

    /// The slices this controller mirrored for the Endpoints of this name.
    fn mirrored(&self, key: &ObjKey) -> Vec<Arc<EndpointSlice>> {
        let mut slices: Vec<Arc<EndpointSlice>> = self
            .slices
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|s| managed_by_us(s) && service_label(s) == Some(&key.name))
            .collect();
        slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        slices
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let ep = self.endpoints.get(key).filter(|ep| should_mirror(ep));
        let svc = self.services.get(key).filter(|svc| !has_selector(svc));
        let (Some(ep), Some(_)) = (ep, svc) else {
            // No Endpoints, not to be mirrored, no Service, or one with a selector.
            return self.delete_all(key, self.mirrored(key)).await;
        };
        if self.awaiting_created(key) {
            self.queue
                .add_after(key.clone(), Duration::from_millis(200));
            return Ok(());
        }
        let desired = desired_slices(&ep);
        if desired.invalid > 0 {
            self.recorder.event(
                &*ep,
                WARNING,
                "InvalidIPAddress",
                "Mirror",
                format!(
                    "Skipped {} invalid IP addresses when mirroring to EndpointSlices",
                    desired.invalid
                ),
            );
        }
        if desired.over_limit > 0 {
            self.recorder.event(
                &*ep,
                WARNING,
                "TooManyAddressesToMirror",
                "Mirror",
                format!(
                    "A max of {MAX_PER_SUBSET} addresses can be mirrored to EndpointSlices per \
                     Endpoints subset. {} addresses were skipped",
                    desired.over_limit
                ),
            );
        }
        self.reconcile(key, &ep, desired.slices).await
    }

    async fn reconcile(
        &self,
        key: &ObjKey,
        ep: &Endpoints,
        desired: Vec<DesiredSlice>,
    ) -> Result<()> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        let (labels, annotations) = slice_meta(ep);
        let owner = controller_ref("v1", "Endpoints", &ep.metadata);
        let mut existing: BTreeMap<(String, Vec<PortTuple>), Vec<Arc<EndpointSlice>>> =
            BTreeMap::new();
        for s in self.mirrored(key) {
            existing.entry(existing_key(&s)).or_default().push(s);
        }
        // The first existing slice of each wanted key is kept; all others are surplus.
        let mut keep: Vec<(Arc<EndpointSlice>, DesiredSlice)> = Vec::new();
        let mut create: Vec<DesiredSlice> = Vec::new();
        for d in desired {
            match existing.get_mut(&d.key()) {
                Some(slices) if !slices.is_empty() => keep.push((slices.remove(0), d)),
                _ => create.push(d),
            }
        }
        let mut surplus: Vec<Arc<EndpointSlice>> = existing.into_values().flatten().collect();
        // Recycle a surplus slice of the same address type rather than create and delete.
        for d in std::mem::take(&mut create) {
            match surplus
                .iter()
                .position(|s| s.address_type == d.address_type)
            {
                Some(i) => keep.push((surplus.remove(i), d)),
                None => create.push(d),
            }
        }
        for (cur, d) in keep {
            let ports = slice_ports(&d.ports);
            let unchanged = existing_key(&cur) == d.key()
                && endpoints_equal(&cur.endpoints, &d.endpoints)
                && cur.metadata.labels.as_ref() == Some(&labels)
                && cur.metadata.annotations.clone().unwrap_or_default() == annotations
                && cur.metadata.owner_references.as_deref() == Some(std::slice::from_ref(&owner));
            if unchanged {
                continue;
            }
            let mut updated = (*cur).clone();
            updated.endpoints = d.endpoints;
            updated.ports = Some(ports);
            updated.metadata.labels = Some(labels.clone());
            updated.metadata.annotations = (!annotations.is_empty()).then(|| annotations.clone());
            updated.metadata.owner_references = Some(vec![owner.clone()]);
            api.replace(&cur.name_any(), &PostParams::default(), &updated)
                .await
                .with_context(|| format!("cannot update EndpointSlice {}", cur.name_any()))?;
        }
        // No new slices for Endpoints on their way out.
        if ep.metadata.deletion_timestamp.is_none() {
            for d in create {
                let slice = EndpointSlice {
                    metadata: ObjectMeta {
                        generate_name: Some(format!("{}-", key.name)),
                        namespace: Some(key.namespace.clone()),
                        labels: Some(labels.clone()),
                        annotations: (!annotations.is_empty()).then(|| annotations.clone()),
                        owner_references: Some(vec![owner.clone()]),
                        ..Default::default()
                    },
                    address_type: d.address_type.into(),
                    endpoints: d.endpoints,
                    ports: Some(slice_ports(&d.ports)),
                };
                let made = api
                    .create(&PostParams::default(), &slice)
                    .await
                    .context("cannot create a mirrored EndpointSlice")?;
                if let Some(name) = made.metadata.name
                    && let Ok(mut created) = self.created.lock()
                {
                    created
                        .entry(key.clone())
                        .or_default()
                        .push((name, Instant::now()));
                }
            }
        }
        self.delete_all(key, surplus).await
    }

    async fn delete_all(&self, key: &ObjKey, slices: Vec<Arc<EndpointSlice>>) -> Result<()> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        for s in slices {
            match api.delete(&s.name_any(), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot delete mirrored EndpointSlice {}", s.name_any())
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EndpointSubset, ObjectReference};

    fn addr(ip: &str) -> EndpointAddress {
        EndpointAddress {
            ip: ip.into(),
            ..Default::default()
        }
    }

    fn port(name: &str, port: i32) -> EndpointPort {
        EndpointPort {
            name: Some(name.into()),
            port,
            protocol: Some("TCP".into()),
            app_protocol: None,
        }
    }

    fn endpoints(subsets: Vec<EndpointSubset>) -> Endpoints {
        Endpoints {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("default".into()),
                uid: Some("uid-db".into()),
                labels: Some([("app".to_string(), "db".to_string())].into()),
                ..Default::default()
            },
            subsets: Some(subsets),
        }
    }

    type Readiness<'a> = Vec<(&'a str, Option<bool>)>;

    fn ips(s: &DesiredSlice) -> Readiness<'_> {
        s.endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].as_str(),
                    e.conditions.as_ref().and_then(|c| c.ready),
                )
            })
            .collect()
    }

    #[test]
    fn addresses_become_ready_and_not_ready_endpoints_with_their_details() {
        let mut ready = addr("10.0.0.2");
        ready.hostname = Some("db-0".into());
        ready.node_name = Some("n1".into());
        ready.target_ref = Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some("db-0".into()),
            ..Default::default()
        });
        let mut app = port("pg", 5432);
        app.app_protocol = Some("postgresql".into());
        let ep = endpoints(vec![EndpointSubset {
            addresses: Some(vec![ready, addr("10.0.0.1")]),
            not_ready_addresses: Some(vec![addr("10.0.0.3")]),
            ports: Some(vec![app]),
        }]);
        let d = desired_slices(&ep);
        assert_eq!((d.invalid, d.over_limit), (0, 0));
        assert_eq!(d.slices.len(), 1);
        let s = &d.slices[0];
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(
            s.ports,
            [(
                "pg".to_string(),
                5432,
                "TCP".to_string(),
                Some("postgresql".to_string())
            )]
        );
        assert_eq!(
            ips(s),
            [
                ("10.0.0.1", Some(true)),
                ("10.0.0.2", Some(true)),
                ("10.0.0.3", Some(false))
            ]
        );
        let e = &s.endpoints[1];
        assert_eq!(e.hostname.as_deref(), Some("db-0"));
        assert_eq!(e.node_name.as_deref(), Some("n1"));
        assert_eq!(
            e.target_ref.as_ref().and_then(|r| r.name.as_deref()),
            Some("db-0")
        );
        let ports = slice_ports(&s.ports);
        assert_eq!(ports[0].app_protocol.as_deref(), Some("postgresql"));
        assert_eq!(ports[0].port, Some(5432));
    }

    #[test]
    fn one_slice_per_port_set_and_address_type_with_invalid_addresses_skipped() {
        let ep = endpoints(vec![
            EndpointSubset {
                addresses: Some(vec![
                    addr("10.0.0.1"),
                    addr("fd00::1"),
                    addr("not-an-ip"),
                    addr("::ffff:10.0.0.9"),
                ]),
                ports: Some(vec![port("http", 80)]),
                ..Default::default()
            },
            EndpointSubset {
                addresses: Some(vec![addr("10.0.1.1")]),
                ports: Some(vec![port("metrics", 9090)]),
                ..Default::default()
            },
        ]);
        let d = desired_slices(&ep);
        assert_eq!(d.invalid, 1);
        let got: Vec<(&str, i32, Readiness)> = d
            .slices
            .iter()
            .map(|s| (s.address_type, s.ports[0].1, ips(s)))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "IPv4",
                    80,
                    vec![("10.0.0.1", Some(true)), ("10.0.0.9", Some(true))]
                ),
                ("IPv4", 9090, vec![("10.0.1.1", Some(true))]),
                ("IPv6", 80, vec![("fd00::1", Some(true))]),
            ]
        );
    }

    #[test]
    fn subsets_are_repacked_and_ready_wins() {
        // The same port set twice, an address in both lists, and one listed twice.
        let ep = endpoints(vec![
            EndpointSubset {
                addresses: Some(vec![addr("10.0.0.1"), addr("10.0.0.2")]),
                ports: Some(vec![port("b", 2), port("a", 1)]),
                ..Default::default()
            },
            EndpointSubset {
                addresses: Some(vec![addr("10.0.0.2")]),
                not_ready_addresses: Some(vec![addr("10.0.0.1"), addr("10.0.0.3")]),
                ports: Some(vec![port("a", 1), port("b", 2)]),
            },
        ]);
        let d = desired_slices(&ep);
        assert_eq!(d.slices.len(), 1, "{:?}", d.slices);
        let s = &d.slices[0];
        let names: Vec<&str> = s.ports.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(
            ips(s),
            [
                ("10.0.0.1", Some(true)),
                ("10.0.0.2", Some(true)),
                ("10.0.0.3", Some(false))
            ]
        );
    }

    #[test]
    fn at_most_1000_addresses_of_a_subset_are_mirrored() {
        let many: Vec<EndpointAddress> = (0..1200)
            .map(|i| addr(&format!("10.1.{}.{}", i / 256, i % 256)))
            .collect();
        let ep = endpoints(vec![EndpointSubset {
            addresses: Some(many),
            ports: Some(vec![port("http", 80)]),
            ..Default::default()
        }]);
        let d = desired_slices(&ep);
        assert_eq!(d.slices.len(), 1);
        assert_eq!(d.slices[0].endpoints.len(), MAX_PER_SUBSET);
        assert_eq!(d.over_limit, 200);
    }

    #[test]
    fn sloppy_ipv4_and_empty_endpoints() {
        assert_eq!(parse_ip("010.001.0.7"), Some("10.1.0.7".parse().unwrap()));
        assert_eq!(parse_ip("10.0.0"), None);
        assert_eq!(parse_ip("1.2.3.256"), None);
        assert!(desired_slices(&endpoints(vec![])).slices.is_empty());
        // Ports but no addresses: nothing to mirror.
        let ep = endpoints(vec![EndpointSubset {
            ports: Some(vec![port("http", 80)]),
            ..Default::default()
        }]);
        assert!(desired_slices(&ep).slices.is_empty());
    }

    #[test]
    fn skip_mirror_and_leader_election_are_not_mirrored() {
        let mut ep = endpoints(vec![]);
        assert!(should_mirror(&ep));
        ep.metadata
            .labels
            .get_or_insert_default()
            .insert(SKIP_MIRROR_LABEL.into(), "false".into());
        assert!(should_mirror(&ep));
        ep.metadata
            .labels
            .get_or_insert_default()
            .insert(SKIP_MIRROR_LABEL.into(), "true".into());
        assert!(!should_mirror(&ep));
        let mut ep = endpoints(vec![]);
        ep.metadata.annotations = Some([(LEADER_ANNOTATION.to_string(), "{}".to_string())].into());
        assert!(!should_mirror(&ep));
    }

    #[test]
    fn slices_carry_the_endpoints_labels_and_annotations_and_ours() {
        let mut ep = endpoints(vec![]);
        ep.metadata.annotations = Some(
            [
                ("note".to_string(), "x".to_string()),
                (UNMIRRORED_ANNOTATIONS[1].to_string(), "{}".to_string()),
            ]
            .into(),
        );
        let (labels, annotations) = slice_meta(&ep);
        assert_eq!(labels.get("app").map(String::as_str), Some("db"));
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("db")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(
            annotations,
            BTreeMap::from([("note".to_string(), "x".to_string())])
        );
    }
}
