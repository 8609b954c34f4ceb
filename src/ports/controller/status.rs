//! What a LoadBalancer Service shows of its host ports: `status.loadBalancer.ingress` with the
//! host address (ipMode Proxy: traffic arrives through a proxy, not at the node itself) and the
//! ports that really are published, and the `kcluster.dev/host-ports` annotation naming each
//! port's host address, which differs from the Service port when that one was taken.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tracing::warn;

use crate::ports::HOST_PORTS_ANNOTATION;
use crate::ports::docker::Published;
use crate::ports::want::{Kind, Wanted};

/// The ingress list and annotation one Service should carry.
fn desired(
    svc: &Service,
    wanted: &[Wanted],
    published: &BTreeMap<String, Published>,
    ingress_ip: &str,
) -> (Value, Option<String>) {
    let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let mine: Vec<(&Wanted, &Published)> = wanted
        .iter()
        .filter(|w| w.kind == Kind::LoadBalancer && w.namespace == ns && w.name == name)
        .filter_map(|w| Some((w, published.get(&w.key)?)))
        .collect();
    if mine.is_empty() {
        return (json!([]), None);
    }
    let ports: Vec<Value> = mine
        .iter()
        .map(|(w, _)| json!({"port": w.service_port, "protocol": w.protocol.as_str()}))
        .collect();
    let annotation = mine
        .iter()
        .map(|(w, p)| {
            format!(
                "{}/{}={}:{}",
                w.service_port,
                w.protocol.as_str(),
                p.host_address,
                p.host_port
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    (
        json!([{"ip": ingress_ip, "ipMode": "Proxy", "ports": ports}]),
        Some(annotation),
    )
}

/// Patches every LoadBalancer Service whose status or annotation differs from what is
/// published. Failures are logged; the next pass tries again.
pub async fn write(
    client: &kube::Client,
    services: &[Service],
    wanted: &[Wanted],
    published: &BTreeMap<String, Published>,
    ingress_ip: &str,
) {
    for svc in services {
        let is_lb = svc
            .spec
            .as_ref()
            .and_then(|s| s.type_.as_deref())
            .is_some_and(|t| t == "LoadBalancer");
        let has_annotation = svc
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(HOST_PORTS_ANNOTATION));
        // A Service that stopped being a LoadBalancer loses what this controller wrote.
        if !is_lb && !has_annotation {
            continue;
        }
        let (Some(ns), Some(name)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let (ingress, annotation) = if is_lb {
            desired(svc, wanted, published, ingress_ip)
        } else {
            (json!([]), None)
        };
        let api: Api<Service> = Api::namespaced(client.clone(), ns);
        let current_ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|i| serde_json::to_value(i).unwrap_or(Value::Null))
            .unwrap_or_else(|| json!([]));
        if current_ingress != ingress {
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            if let Err(e) = api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                warn!(service = %format!("{ns}/{name}"), error = %e, "cannot write the load balancer status");
            }
        }
        let current_annotation = svc
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(HOST_PORTS_ANNOTATION))
            .cloned();
        if current_annotation != annotation {
            let patch = json!({"metadata": {"annotations": {HOST_PORTS_ANNOTATION: annotation}}});
            if let Err(e) = api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                warn!(service = %format!("{ns}/{name}"), error = %e, "cannot write the host-ports annotation");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::want::{Protocol, wanted};

    #[test]
    fn ingress_and_annotation_name_the_published_ports() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 8080, "nodePort": 31000}, {"port": 9090, "nodePort": 31001}]},
        }))
        .expect("a valid Service");
        let (wanted, _) = wanted(std::slice::from_ref(&svc), true);
        let mut published = BTreeMap::new();
        let (ingress, annotation) = desired(&svc, &wanted, &published, "127.0.0.1");
        assert_eq!(ingress, json!([]));
        assert_eq!(annotation, None);
        published.insert(
            wanted[0].key.clone(),
            Published {
                container: "kcluster-a-port-8081-tcp".into(),
                running: true,
                key: wanted[0].key.clone(),
                service: "default/web".into(),
                kind: "LoadBalancer".into(),
                protocol: Some(Protocol::Tcp),
                host_address: "127.0.0.1".into(),
                host_port: 8081,
                service_port: 8080,
                node_port: 31000,
                source_ranges: String::new(),
                proxy_protocol: String::new(),
            },
        );
        let (ingress, annotation) = desired(&svc, &wanted, &published, "127.0.0.1");
        assert_eq!(
            ingress,
            json!([{"ip": "127.0.0.1", "ipMode": "Proxy", "ports": [{"port": 8080, "protocol": "TCP"}]}])
        );
        assert_eq!(annotation.as_deref(), Some("8080/TCP=127.0.0.1:8081"));
    }
}
