//! Publishes cluster DNS as kubeadm's CoreDNS addon does — Service `kube-system/kube-dns` at the
//! 10th address of the service range, labelled `k8s-app=kube-dns`, with ports `dns` 53/UDP,
//! `dns-tcp` 53/TCP and `metrics` 9153/TCP — except that the server is not a pod: every node's
//! agent answers DNS on its own address (`dns/`). So the Service has no selector and this
//! controller keeps its Endpoints and EndpointSlice listing each node's InternalIP, with the
//! node's name; `internalTrafficPolicy: Local` makes the proxy send a pod's queries to the
//! server of its own node.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::runtime::{Informer, api_code};

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "kube-dns";
const MANAGED_BY: &str = "clusterdns.kcluster.dev";

pub fn service(cluster_ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                "kubernetes.io/name": "CoreDNS"},
                     "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                 "internalTrafficPolicy": "Local",
                 "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                           {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                           {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]},
    })
}

/// Each node that has an InternalIP, sorted by name: (name, address).
fn servers(nodes: &[Arc<Node>]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = nodes
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter_map(|n| {
            let ip = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .clone();
            Some((n.metadata.name.clone()?, ip))
        })
        .collect();
    out.sort();
    out
}

fn ports() -> Value {
    json!([{"name": "dns", "port": 53, "protocol": "UDP"},
           {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
           {"name": "metrics", "port": 9153, "protocol": "TCP"}])
}

fn endpoints(servers: &[(String, String)]) -> Value {
    let addresses: Vec<Value> = servers
        .iter()
        .map(|(node, ip)| json!({"ip": ip, "nodeName": node}))
        .collect();
    let subsets = if addresses.is_empty() {
        json!([])
    } else {
        json!([{"addresses": addresses, "ports": ports()}])
    };
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"k8s-app": "kube-dns", "endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": subsets,
    })
}

fn slice(servers: &[(String, String)]) -> Value {
    let endpoints: Vec<Value> = servers
        .iter()
        .map(|(node, ip)| {
            json!({"addresses": [ip], "nodeName": node,
            "conditions": {"ready": true, "serving": true, "terminating": false}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/service-name": NAME,
                                "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports(),
    })
}

/// Runs forever: makes the Service if it is missing, then follows the Nodes.
pub async fn run(client: kube::Client, cluster_ip: String) -> Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        let svc: Service = serde_json::from_value(service(&cluster_ip))?;
        match services.create(&PostParams::default(), &svc).await {
            Ok(_) => {
                info!(cluster_ip, "published cluster DNS as kube-system/kube-dns");
                break;
            }
            Err(e) if api_code(&e) == Some(409) => break,
            Err(e) => {
                warn!(error = %e, "cannot create the kube-dns Service; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
    let nodes = Informer::<Node>::new(client.clone());
    let wake = Arc::new(Notify::new());
    let w = wake.clone();
    nodes.add_handler(move |_| w.notify_one());
    tokio::spawn(nodes.clone().run());
    nodes.wait_synced().await;
    let mut written: Option<Vec<(String, String)>> = None;
    loop {
        let now = servers(&nodes.list_all());
        if written.as_ref() != Some(&now) {
            match publish(&client, &now).await {
                Ok(()) => written = Some(now),
                Err(e) => warn!(
                    error = format!("{e:#}"),
                    "cannot publish the kube-dns endpoints"
                ),
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            // Also every few seconds: someone may have edited or deleted what we wrote.
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => written = None,
        }
    }
}

async fn publish(client: &kube::Client, servers: &[(String, String)]) -> Result<()> {
    put::<Endpoints>(client, endpoints(servers), |cur, want| {
        cur.get("subsets")
            .filter(|s| *s != &json!(null))
            .unwrap_or(&json!([]))
            == want.get("subsets").unwrap_or(&json!([]))
    })
    .await
    .context("Endpoints")?;
    put::<EndpointSlice>(client, slice(servers), |cur, want| {
        cur.get("endpoints") == want.get("endpoints") && cur.get("ports") == want.get("ports")
    })
    .await
    .context("EndpointSlice")
}

/// Creates the object, or replaces it when `same` says it differs.
async fn put<K>(
    client: &kube::Client,
    want: Value,
    same: impl Fn(&Value, &Value) -> bool,
) -> Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), NAMESPACE);
    match api.get_opt(NAME).await? {
        None => {
            let obj: K = serde_json::from_value(want)?;
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => Ok(()),
                Err(e) if api_code(&e) == Some(409) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
        Some(cur) => {
            let cur_value = serde_json::to_value(&cur)?;
            if same(&cur_value, &want) {
                return Ok(());
            }
            let mut merged = want;
            merged["metadata"]["resourceVersion"] =
                cur_value["metadata"]["resourceVersion"].clone();
            if let (Some(labels), Some(have)) = (
                merged["metadata"]["labels"].as_object().cloned(),
                cur_value["metadata"]["labels"].as_object(),
            ) {
                let mut all: BTreeMap<String, Value> = have.clone().into_iter().collect();
                all.extend(labels);
                merged["metadata"]["labels"] = json!(all);
            }
            let obj: K = serde_json::from_value(merged)?;
            api.replace(NAME, &PostParams::default(), &obj).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_with_an_address_serves_dns() {
        let node = |name: &str, ip: Option<&str>| -> Arc<Node> {
            let addresses: Vec<Value> = ip
                .map(|ip| json!({"type": "InternalIP", "address": ip}))
                .into_iter()
                .collect();
            Arc::new(
                serde_json::from_value(json!({"metadata": {"name": name},
                    "status": {"addresses": addresses}}))
                .unwrap(),
            )
        };
        let s = servers(&[
            node("w2", Some("172.18.0.4")),
            node("s0", Some("172.18.0.2")),
            node("new", None),
        ]);
        assert_eq!(
            s,
            [
                ("s0".to_string(), "172.18.0.2".to_string()),
                ("w2".to_string(), "172.18.0.4".to_string())
            ]
        );
        let sl = slice(&s);
        assert_eq!(sl["endpoints"][1]["nodeName"], "w2");
        assert_eq!(sl["ports"][0]["name"], "dns");
        let ep = endpoints(&s);
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "172.18.0.2");
        let _: Service = serde_json::from_value(service("10.96.0.10")).unwrap();
        let _: EndpointSlice = serde_json::from_value(sl).unwrap();
        let _: Endpoints = serde_json::from_value(ep).unwrap();
    }
}
