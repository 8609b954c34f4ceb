//! KEP-1755 ("communicating a local registry"): the ConfigMap `kube-public/local-registry-hosting`
//! whose key `localRegistryHosting.v1` tells tools where to push (`host`) and what the nodes'
//! runtime and in-cluster clients call the same registry.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};

use super::docker::RegistryInfo;

pub const NAMESPACE: &str = "kube-public";
pub const NAME: &str = "local-registry-hosting";
pub const KEY: &str = "localRegistryHosting.v1";
const HELP: &str = "https://github.com/kubernetes/enhancements/tree/master/keps/sig-cluster-lifecycle/generic/1755-communicating-a-local-registry";

/// The value of `localRegistryHosting.v1`. The nodes map `host` to the registry themselves
/// (`registries.mirrors`), so `hostFromContainerRuntime` may be either; the cluster-network
/// name is what works without that mapping, as kind and k3d advertise it.
pub fn value(registry: &RegistryInfo) -> String {
    format!(
        "host: \"{}\"\nhostFromContainerRuntime: \"{}\"\nhostFromClusterNetwork: \"{}\"\nhelp: \"{HELP}\"\n",
        registry.host(),
        registry.cluster_host(),
        registry.cluster_host(),
    )
}

pub fn config_map(registry: &RegistryInfo) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some([(KEY.to_string(), value(registry))].into()),
        ..Default::default()
    }
}

/// Creates the ConfigMap, or replaces the one there.
pub async fn write(client: kube::Client, registry: &RegistryInfo) -> Result<()> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, NAMESPACE);
    let wanted = config_map(registry);
    match api.create(&PostParams::default(), &wanted).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let mut current = api
                .get(NAME)
                .await
                .with_context(|| format!("cannot read {NAMESPACE}/{NAME}"))?;
            current.data = wanted.data;
            api.replace(NAME, &PostParams::default(), &current)
                .await
                .with_context(|| format!("cannot update {NAMESPACE}/{NAME}"))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot create {NAMESPACE}/{NAME}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_names_the_host_and_the_network_name() {
        let info = RegistryInfo {
            name: "kcluster-registry".into(),
            host_port: 5002,
            state: "running".into(),
            networks: vec![],
            volume: "kcluster-registry-data".into(),
        };
        let v: serde_yaml::Value = serde_yaml::from_str(&value(&info)).unwrap();
        assert_eq!(v["host"], "localhost:5002");
        assert_eq!(v["hostFromContainerRuntime"], "kcluster-registry:5000");
        assert_eq!(v["hostFromClusterNetwork"], "kcluster-registry:5000");
    }
}
