//! One reconcile pass: compare the host ports the Services want with the proxy containers that
//! exist (their labels are the record), remove what is no longer wanted, start what is missing,
//! then write the LoadBalancer Services' status. Only proxies that change are touched, so
//! connections through every other port carry on.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::Service;
use tracing::{info, warn};

use super::ControllerArgs;
use super::status;
use crate::cluster::docker::{self as cluster_docker, Docker};
use crate::controllers::runtime::events::{NORMAL, Recorder, WARNING, reference};
use crate::ports::docker::{self, ProxySpec, Published, StartError};
use crate::ports::want::{self, Protocol, Wanted};

/// A port that failed waits this long before the next try, doubling up to MAX_BACKOFF.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a new TCP proxy has to start listening before its Service's status says so anyway.
const ANSWER_WAIT: Duration = Duration::from_secs(3);

pub struct Reconciler {
    args: ControllerArgs,
    /// The address written into LoadBalancer status: the host address, or 127.0.0.1 when
    /// publishing on every address.
    ingress_ip: String,
    docker: Docker,
    client: kube::Client,
    recorder: Recorder,
    /// Per wanted key: failures so far and when to try again.
    backoff: HashMap<String, (u32, Instant)>,
    /// Problems already reported, so a resync does not repeat their events.
    reported: HashSet<(String, String)>,
}

impl Reconciler {
    pub fn new(
        args: ControllerArgs,
        docker: Docker,
        client: kube::Client,
        recorder: Recorder,
    ) -> Self {
        let ingress_ip = if args.host_address.is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            args.host_address.to_string()
        };
        Reconciler {
            args,
            ingress_ip,
            docker,
            client,
            recorder,
            backoff: HashMap::new(),
            reported: HashSet::new(),
        }
    }

    fn service<'a>(&self, services: &'a [Service], want: &Wanted) -> Option<&'a Service> {
        services.iter().find(|s| {
            s.metadata.namespace.as_deref() == Some(&want.namespace)
                && s.metadata.name.as_deref() == Some(&want.name)
        })
    }

    fn report(
        &mut self,
        svc: Option<&Service>,
        type_: &'static str,
        reason: &str,
        message: String,
    ) {
        let Some(svc) = svc else { return };
        let key = (
            svc.metadata.uid.clone().unwrap_or_default(),
            format!("{reason}: {message}"),
        );
        if type_ == WARNING && !self.reported.insert(key) {
            return;
        }
        self.recorder
            .event_ref(reference(svc), type_, reason, "Publish", message);
    }

    pub async fn run(&mut self, services: &[Service]) -> Result<()> {
        let (mut wanted, mut problems) = want::wanted(services, self.args.publish_node_ports);
        if wanted.iter().any(|w| w.proxy_protocol.is_some()) {
            let nodes = self.node_names().await?;
            problems.extend(want::only_to_nodes(&mut wanted, &nodes));
        }
        let uids: HashSet<&str> = services
            .iter()
            .filter_map(|s| s.metadata.uid.as_deref())
            .collect();
        self.reported.retain(|(uid, _)| uids.contains(uid.as_str()));
        for p in &problems {
            let svc = services.iter().find(|s| {
                s.metadata.namespace.as_deref() == Some(&p.namespace)
                    && s.metadata.name.as_deref() == Some(&p.name)
            });
            self.report(svc, WARNING, p.reason, p.message.clone());
        }
        let host_address = self.args.host_address.to_string();
        let wanted_by_key: HashMap<&str, &Wanted> =
            wanted.iter().map(|w| (w.key.as_str(), w)).collect();
        let existing: Vec<Published> = docker::proxies(&self.docker, &self.args.cluster)
            .await?
            .iter()
            .filter_map(docker::published)
            .collect();

        // Keep what still matches; remove the rest (a stale proxy's host port is tried first
        // again, so a Docker restart that killed one does not move its port for nothing).
        let mut kept: BTreeMap<String, Published> = BTreeMap::new();
        let mut previous: HashMap<String, u16> = HashMap::new();
        for p in existing {
            let keep = wanted_by_key.get(p.key.as_str()).is_some_and(|w| {
                p.running
                    && p.node_port == w.node_port
                    && p.host_address == host_address
                    && p.protocol == Some(w.protocol)
                    && p.source_ranges == w.source_ranges_label()
                    && p.proxy_protocol == w.proxy_protocol_label()
                    && !kept.contains_key(&p.key)
            });
            if keep {
                kept.insert(p.key.clone(), p);
                continue;
            }
            if wanted_by_key.contains_key(p.key.as_str()) {
                previous.insert(p.key.clone(), p.host_port);
            }
            info!(container = %p.container, service = %p.service, "removing port proxy");
            docker::remove(&self.docker, &p.container).await?;
        }
        self.backoff
            .retain(|k, _| wanted_by_key.contains_key(k.as_str()) && !kept.contains_key(k));

        let missing: Vec<&Wanted> = wanted
            .iter()
            .filter(|w| !kept.contains_key(&w.key))
            .collect();
        let mut started = Vec::new();
        if !missing.is_empty() {
            let nodes = self.node_names().await?;
            let mut held: HashSet<(Protocol, u16)> = kept
                .values()
                .filter_map(|p| Some((p.protocol?, p.host_port)))
                .collect();
            for want in missing {
                if let Some((_, at)) = self.backoff.get(&want.key)
                    && *at > Instant::now()
                {
                    continue;
                }
                if let Some(p) = self.publish(services, want, &nodes, &held, &previous).await {
                    held.insert((want.protocol, p.host_port));
                    started.push(p.clone());
                    kept.insert(want.key.clone(), p);
                }
            }
        }
        // A LoadBalancer's status says "reachable" only once its new proxies listen.
        futures::future::join_all(
            started
                .iter()
                .filter(|p| p.protocol == Some(Protocol::Tcp))
                .map(|p| wait_listening(&p.container, p.host_port)),
        )
        .await;
        status::write(&self.client, services, &wanted, &kept, &self.ingress_ip).await;
        Ok(())
    }

    /// Starts the proxy for one wanted port, trying host ports in order; reports the outcome
    /// as an event on the Service.
    async fn publish(
        &mut self,
        services: &[Service],
        want: &Wanted,
        nodes: &[String],
        held: &HashSet<(Protocol, u16)>,
        previous: &HashMap<String, u16>,
    ) -> Option<Published> {
        let svc = self.service(services, want);
        let host_address = self.args.host_address.to_string();
        let mut tries = want::candidates(want, &|p| held.contains(&(want.protocol, p)));
        if let Some(old) = previous.get(&want.key)
            && !held.contains(&(want.protocol, *old))
        {
            tries.retain(|p| p != old);
            tries.insert(0, *old);
        }
        let mut refused: Vec<String> = Vec::new();
        for host_port in tries {
            let spec = ProxySpec {
                cluster: &self.args.cluster,
                image: &self.args.image,
                host_address: &host_address,
                host_port,
                want,
                nodes,
            };
            match docker::start_proxy(&self.docker, &spec).await {
                Ok(container) => {
                    self.backoff.remove(&want.key);
                    let moved = if host_port != want.preferred {
                        format!(
                            " ({}:{} was not available: {})",
                            host_address,
                            want.preferred,
                            refused
                                .first()
                                .map(String::as_str)
                                .unwrap_or("held by another Service of this cluster")
                        )
                    } else {
                        String::new()
                    };
                    let target = match want.cluster_ip {
                        Some(ip) => format!("cluster IP {ip}:{}", want.service_port),
                        None => format!("node port {}", want.node_port),
                    };
                    let message = format!(
                        "{} port {}/{} published on {host_address}:{host_port}, forwarding to {target}{moved}",
                        want.kind.as_str(),
                        want.service_port,
                        want.protocol.as_str(),
                    );
                    info!(service = %format!("{}/{}", want.namespace, want.name), "{message}");
                    self.report(svc, NORMAL, "HostPortPublished", message);
                    return Some(Published {
                        container,
                        running: true,
                        key: want.key.clone(),
                        service: format!("{}/{}", want.namespace, want.name),
                        kind: want.kind.as_str().to_string(),
                        protocol: Some(want.protocol),
                        host_address: host_address.clone(),
                        host_port,
                        service_port: want.service_port,
                        node_port: want.node_port,
                        source_ranges: want.source_ranges_label(),
                        proxy_protocol: want.proxy_protocol_label(),
                    });
                }
                Err(StartError::PortUnavailable(why)) => refused.push(why),
                Err(StartError::Other(e)) => {
                    let message = format!(
                        "cannot publish port {}/{} on the host yet (retrying): {e:#}",
                        want.service_port,
                        want.protocol.as_str()
                    );
                    warn!("{message}");
                    self.fail(&want.key);
                    self.report(svc, WARNING, "HostPortFailed", message);
                    return None;
                }
            }
        }
        let message = match want.kind {
            want::Kind::NodePort => format!(
                "node port {}/{} is not published on the host: {host_address}:{} is not available ({}); the Service still works inside the cluster. Free the host port, or set networking.publishNodePorts: false",
                want.node_port,
                want.protocol.as_str(),
                want.node_port,
                refused.join("; ")
            ),
            want::Kind::LoadBalancer => format!(
                "port {}/{} is not published on the host: no free host port from {} up ({})",
                want.service_port,
                want.protocol.as_str(),
                want.preferred,
                refused
                    .first()
                    .map(String::as_str)
                    .unwrap_or("all held by this cluster")
            ),
        };
        warn!("{message}");
        self.fail(&want.key);
        self.report(svc, WARNING, "HostPortUnavailable", message);
        None
    }

    async fn node_names(&self) -> Result<Vec<String>> {
        Ok(self
            .docker
            .node_containers(Some(&self.args.cluster))
            .await?
            .iter()
            .map(cluster_docker::container_name)
            .collect())
    }

    fn fail(&mut self, key: &str) {
        let entry = self
            .backoff
            .entry(key.to_string())
            .or_insert((0, Instant::now()));
        entry.0 += 1;
        let delay = FIRST_BACKOFF
            .saturating_mul(1 << entry.0.min(6).saturating_sub(1))
            .min(MAX_BACKOFF);
        entry.1 = Instant::now() + delay;
    }
}

/// Waits until the proxy accepts connections on the cluster network (it binds at once; the
/// host side is Docker's, bound before the container started).
async fn wait_listening(container: &str, port: u16) {
    let deadline = Instant::now() + ANSWER_WAIT;
    while Instant::now() < deadline {
        if let Ok(ip) = crate::node::client::resolve(container).await
            && tokio::net::TcpStream::connect((ip, port)).await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    warn!(%container, port, "the proxy does not answer yet");
}
