//! The Endpoints and EndpointSlice controllers, as kube-controller-manager's: for every Service
//! with a selector, the pods it selects that have an IP become its endpoints — ready ones as
//! addresses, the others as notReadyAddresses (Endpoints), or with ready/serving/terminating
//! conditions (EndpointSlices, which also keep terminating pods) — on the ports the Service's
//! targetPorts name or number. `kubectl get endpoints`, `kubectl describe service` and the
//! service proxy read these.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, Pod, Service, ServicePort,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use tracing::info;

use super::runtime::queue::WorkQueue;
use super::runtime::{Change, Informer, ObjKey, controller_ref, is_not_found, pod_is_ready};

const WORKERS: usize = 4;
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Endpoints per slice (kube-controller-manager's --max-endpoints-per-slice).
const MAX_PER_SLICE: usize = 100;

pub struct EndpointsController {
    /// Kubernetes runs Endpoints and EndpointSlices as two controllers, each with its own
    /// account; this one writes each kind with its account's client.
    client: kube::Client,
    slice_client: kube::Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    slices: Arc<Informer<EndpointSlice>>,
    queue: Arc<WorkQueue<ObjKey>>,
}

fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = selector(svc) else {
        return false;
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_ip(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    status
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
        .or_else(|| status.pod_ips.as_ref()?.first().map(|p| p.ip.clone()))
}

/// ShouldPodBeInEndpoints: not finished, has an IP, and (unless terminating pods are wanted) not
/// being deleted.
fn include(pod: &Pod, terminating: bool) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) || pod_ip(pod).is_none() {
        return false;
    }
    terminating || pod.metadata.deletion_timestamp.is_none()
}

/// FindPort: a number is used as is; a name is looked up among the pod's container ports.
fn target_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse() {
                return Some(n);
            }
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// ShouldSetHostname: a pod whose hostname is set and whose subdomain names this Service (in
/// its own namespace) is published under that hostname, which cluster DNS turns into
/// `<hostname>.<service>.<namespace>.svc` (StatefulSet pods: `web-0.nginx.default.svc...`).
fn endpoint_hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    let same_namespace = pod.metadata.namespace == svc.metadata.namespace;
    (same_namespace && spec.subdomain.as_deref() == svc.metadata.name.as_deref())
        .then(|| hostname.to_string())
}

fn node_name(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
}

/// The ports one pod serves for the Service, as (name, number, protocol, appProtocol).
type PortSet = Vec<(Option<String>, i32, String, Option<String>)>;

fn pod_ports(pod: &Pod, svc: &Service) -> PortSet {
    svc.spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.name.clone().filter(|n| !n.is_empty()),
                target_port(pod, p)?,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            ))
        })
        .collect()
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The Service's own labels, plus the headless marker, as both controllers label what they make.
fn base_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// The v1 Endpoints subsets: one per distinct port set, addresses sorted by IP.
fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let publish_not_ready = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false);
    let has_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_some_and(|p| !p.is_empty());
    let mut by_ports: BTreeMap<String, (PortSet, Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for pod in pods {
        if !include(pod, false) {
            continue;
        }
        let ports = pod_ports(pod, svc);
        if has_ports && ports.is_empty() {
            continue;
        }
        if !has_ports && !is_headless(svc) {
            continue;
        }
        let address = EndpointAddress {
            ip: pod_ip(pod).unwrap_or_default(),
            node_name: node_name(pod),
            target_ref: Some(pod_ref(pod)),
            hostname: endpoint_hostname(pod, svc),
        };
        let key = format!("{ports:?}");
        let entry = by_ports
            .entry(key)
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if publish_not_ready || pod_is_ready(pod) {
            entry.1.push(address);
        } else {
            entry.2.push(address);
        }
    }
    by_ports
        .into_values()
        .map(|(ports, mut ready, mut not_ready)| {
            let by_ip = |a: &EndpointAddress, b: &EndpointAddress| {
                a.ip.cmp(&b.ip).then_with(|| {
                    let uid =
                        |x: &EndpointAddress| x.target_ref.as_ref().and_then(|r| r.uid.clone());
                    uid(a).cmp(&uid(b))
                })
            };
            ready.sort_by(by_ip);
            not_ready.sort_by(by_ip);
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|(name, port, protocol, app_protocol)| EndpointPort {
                            name,
                            port,
                            protocol: Some(protocol),
                            app_protocol,
                        })
                        .collect()
                }),
            }
        })
        .collect()
}

impl EndpointsController {
    pub fn new(
        client: kube::Client,
        slice_client: kube::Client,
        services: Arc<Informer<Service>>,
        pods: Arc<Informer<Pod>>,
        nodes: Arc<Informer<Node>>,
        slices: Arc<Informer<EndpointSlice>>,
    ) -> Arc<Self> {
        let this = Arc::new(EndpointsController {
            client,
            slice_client,
            services,
            pods,
            nodes,
            slices,
            queue: WorkQueue::new(),
        });
        let weak = Arc::downgrade(&this);
        this.services.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                let s = change.object();
                c.queue.add(ObjKey::of(&**s));
            }
        });
        let weak = Arc::downgrade(&this);
        this.pods.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                match change {
                    Change::Added(p) | Change::Deleted(p) => c.enqueue_services_of(p),
                    Change::Updated { old, new } => {
                        c.enqueue_services_of(new);
                        if old.metadata.labels != new.metadata.labels {
                            c.enqueue_services_of(old);
                        }
                    }
                }
            }
        });
        // A managed slice changed or deleted by someone else is put back.
        let weak = Arc::downgrade(&this);
        this.slices.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                let s = change.object();
                let labels = s.metadata.labels.clone().unwrap_or_default();
                if labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
                    && let Some(svc) = labels.get(SERVICE_NAME_LABEL)
                {
                    c.queue
                        .add(ObjKey::new(&s.namespace().unwrap_or_default(), svc));
                }
            }
        });
        this
    }

    fn enqueue_services_of(&self, pod: &Pod) {
        let ns = pod.namespace().unwrap_or_default();
        for svc in self.services.list_namespace(&ns) {
            if selects(&svc, pod) {
                self.queue.add(ObjKey::of(&*svc));
            }
        }
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.services.wait_synced().await;
        self.pods.wait_synced().await;
        self.slices.wait_synced().await;
        info!("endpoints and endpointslice controllers started");
        self.queue
            .run_workers(WORKERS, "endpoints", |key| {
                let this = &self;
                async move { this.sync(&key).await }
            })
            .await;
        Ok(())
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let endpoints: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        let Some(svc) = self.services.get(key) else {
            // The Service is gone: so are its Endpoints (slices go with their owner).
            match endpoints.delete(&key.name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => {
                    return Err(e).context("cannot delete the Endpoints of a deleted Service");
                }
            }
            return Ok(());
        };
        if selector(&svc).is_none() {
            // Without a selector the user manages Endpoints and slices.
            return Ok(());
        }
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|p| selects(&svc, p))
            .collect();
        self.sync_endpoints(&svc, &pods, &endpoints).await?;
        self.sync_slices(&svc, &pods).await
    }

    async fn sync_endpoints(
        &self,
        svc: &Service,
        pods: &[Arc<Pod>],
        api: &Api<Endpoints>,
    ) -> Result<()> {
        let subsets = subsets(svc, pods);
        let labels = base_labels(svc);
        let name = svc.name_any();
        let current = api.get_opt(&name).await?;
        let subsets = (!subsets.is_empty()).then_some(subsets);
        match current {
            Some(cur) => {
                let cur_labels = cur.metadata.labels.clone().unwrap_or_default();
                let cur_subsets = cur.subsets.clone().filter(|s| !s.is_empty());
                if cur_subsets == subsets && cur_labels == labels {
                    return Ok(());
                }
                let mut updated = cur.clone();
                updated.subsets = subsets;
                updated.metadata.labels = (!labels.is_empty()).then_some(labels);
                api.replace(&name, &PostParams::default(), &updated).await?;
            }
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: svc.namespace(),
                        labels: (!labels.is_empty()).then_some(labels),
                        ..Default::default()
                    },
                    subsets,
                };
                match api.create(&PostParams::default(), &ep).await {
                    Ok(_) => {}
                    // Made meanwhile: the next sync compares again.
                    Err(e) if e_code(&e) == Some(409) => {}
                    Err(e) => return Err(e).context("cannot create Endpoints"),
                }
            }
        }
        Ok(())
    }

    fn zone_of(&self, pod: &Pod) -> Option<String> {
        let node = self.nodes.get(&ObjKey::new("", &node_name(pod)?))?;
        node.metadata
            .labels
            .as_ref()?
            .get("topology.kubernetes.io/zone")
            .cloned()
    }

    /// Desired slices: endpoints grouped by their port set, at most 100 per slice.
    fn desired_slices(&self, svc: &Service, pods: &[Arc<Pod>]) -> Vec<(PortSet, Vec<Endpoint>)> {
        let publish_not_ready = svc
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
        let mut groups: BTreeMap<String, (PortSet, Vec<Endpoint>)> = BTreeMap::new();
        for pod in pods {
            if !include(pod, true) {
                continue;
            }
            let ports = pod_ports(pod, svc);
            let terminating = pod.metadata.deletion_timestamp.is_some();
            let serving = publish_not_ready || pod_is_ready(pod);
            let endpoint = Endpoint {
                addresses: vec![pod_ip(pod).unwrap_or_default()],
                conditions: Some(EndpointConditions {
                    ready: Some(serving && !terminating),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                hostname: endpoint_hostname(pod, svc),
                node_name: node_name(pod),
                target_ref: Some(pod_ref(pod)),
                zone: self.zone_of(pod),
                ..Default::default()
            };
            let key = format!("{ports:?}");
            groups
                .entry(key)
                .or_insert_with(|| (ports, Vec::new()))
                .1
                .push(endpoint);
        }
        let mut out = Vec::new();
        for (_, (ports, mut endpoints)) in groups {
            endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            for chunk in endpoints.chunks(MAX_PER_SLICE) {
                out.push((ports.clone(), chunk.to_vec()));
            }
        }
        if out.is_empty() {
            // A Service with no endpoints still has one (empty) slice, as in Kubernetes.
            let ports = svc
                .spec
                .as_ref()
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p.name.clone().filter(|n| !n.is_empty()),
                        0,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.app_protocol.clone(),
                    )
                })
                .collect::<PortSet>();
            out.push((ports, Vec::new()));
        }
        out
    }

    async fn sync_slices(&self, svc: &Service, pods: &[Arc<Pod>]) -> Result<()> {
        let ns = svc.namespace().unwrap_or_default();
        let api: Api<EndpointSlice> = Api::namespaced(self.slice_client.clone(), &ns);
        let name = svc.name_any();
        let mut existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .list_namespace(&ns)
            .into_iter()
            .filter(|s| {
                let labels = s.metadata.labels.clone().unwrap_or_default();
                labels.get(SERVICE_NAME_LABEL) == Some(&name)
                    && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
            })
            .collect();
        existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let mut labels = base_labels(svc);
        labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        let desired = self.desired_slices(svc, pods);
        let owner = controller_ref("v1", "Service", &svc.metadata);
        let mut reuse = existing.into_iter();
        for (ports, endpoints) in desired {
            let ports: Vec<SlicePort> = ports
                .into_iter()
                .map(|(name, port, protocol, app_protocol)| SlicePort {
                    name,
                    port: (port != 0).then_some(port),
                    protocol: Some(protocol),
                    app_protocol,
                })
                .collect();
            match reuse.next() {
                Some(cur) => {
                    let same = cur.endpoints == endpoints
                        && cur.ports.clone().unwrap_or_default() == ports
                        && cur.metadata.labels.as_ref() == Some(&labels);
                    if same {
                        continue;
                    }
                    let mut updated = (*cur).clone();
                    updated.endpoints = endpoints;
                    updated.ports = Some(ports);
                    updated.metadata.labels = Some(labels.clone());
                    api.replace(&cur.name_any(), &PostParams::default(), &updated)
                        .await?;
                }
                None => {
                    let slice = EndpointSlice {
                        metadata: ObjectMeta {
                            generate_name: Some(format!("{name}-")),
                            namespace: Some(ns.clone()),
                            labels: Some(labels.clone()),
                            owner_references: Some(vec![owner.clone()]),
                            ..Default::default()
                        },
                        address_type: "IPv4".into(),
                        endpoints,
                        ports: Some(ports),
                    };
                    api.create(&PostParams::default(), &slice)
                        .await
                        .context("cannot create an EndpointSlice")?;
                }
            }
        }
        for extra in reuse {
            match api
                .delete(&extra.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e).context("cannot delete a surplus EndpointSlice"),
            }
        }
        Ok(())
    }
}

fn e_code(e: &kube::Error) -> Option<u16> {
    super::runtime::api_code(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };

    fn pod(name: &str, ip: &str, ready: bool) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8002,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn endpoints_list_ready_and_not_ready_pods_on_resolved_ports() {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("myblog".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        let pods = vec![
            pod("b", "10.244.1.158", true),
            pod("a", "10.244.0.68", true),
            pod("c", "10.244.2.9", false),
        ];
        let s = subsets(&svc, &pods);
        assert_eq!(s.len(), 1);
        let ips: Vec<&str> = s[0]
            .addresses
            .as_ref()
            .unwrap()
            .iter()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(ips, ["10.244.0.68", "10.244.1.158"]);
        assert_eq!(
            s[0].not_ready_addresses.as_ref().unwrap()[0].ip,
            "10.244.2.9"
        );
        assert_eq!(s[0].ports.as_ref().unwrap()[0].port, 8002);
    }

    #[test]
    fn hostname_is_published_only_for_the_service_the_subdomain_names() {
        let svc = |name: &str, ns: &str| Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut p = (*pod("web-0", "10.244.1.5", true)).clone();
        p.metadata.namespace = Some("default".into());
        let spec = p.spec.as_mut().unwrap();
        spec.hostname = Some("web-0".into());
        spec.subdomain = Some("nginx".into());
        assert_eq!(
            endpoint_hostname(&p, &svc("nginx", "default")).as_deref(),
            Some("web-0")
        );
        assert_eq!(endpoint_hostname(&p, &svc("other", "default")), None);
        assert_eq!(endpoint_hostname(&p, &svc("nginx", "elsewhere")), None);
        p.spec.as_mut().unwrap().hostname = None;
        assert_eq!(endpoint_hostname(&p, &svc("nginx", "default")), None);
    }
}
