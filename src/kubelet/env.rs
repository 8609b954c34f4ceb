//! A container's environment as the kubelet makes it: service links, envFrom, env (value,
//! configMapKeyRef, secretKeyRef, fieldRef, resourceFieldRef) with `$(VAR)` expansion, and
//! the same expansion in command and args. Missing sources fail with kubelet's own messages
//! (shown as CreateContainerConfigError) unless marked optional.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::Api;

use super::qos;
use crate::runtime::spec::EnvVar;

/// What the environment may read besides the pod.
pub struct EnvContext<'a> {
    pub client: &'a kube::Client,
    pub pod: &'a Pod,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    /// The node's allocatable CPU (millicores) and memory (bytes): what limits.* are without limits.
    pub node_cpu_millis: i64,
    pub node_memory: i64,
}

/// Why a container cannot be configured (kubelet's CreateContainerConfigError messages).
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{0}")]
    Config(String),
    #[error("cannot read from the API server: {0}")]
    Api(String),
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>, EnvError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| EnvError::Api(e.to_string()))
}

/// Caches the ConfigMaps and Secrets one container reads.
struct Sources<'a> {
    ctx: &'a EnvContext<'a>,
    namespace: String,
    config_maps: BTreeMap<String, Option<ConfigMap>>,
    secrets: BTreeMap<String, Option<Secret>>,
}

impl Sources<'_> {
    async fn config_map(&mut self, name: &str) -> Result<Option<ConfigMap>, EnvError> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
            let got = get_opt(&api, name).await?;
            self.config_maps.insert(name.to_string(), got);
        }
        Ok(self.config_maps.get(name).cloned().flatten())
    }

    async fn secret(&mut self, name: &str) -> Result<Option<Secret>, EnvError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
            let got = get_opt(&api, name).await?;
            self.secrets.insert(name.to_string(), got);
        }
        Ok(self.secrets.get(name).cloned().flatten())
    }
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, String> {
    let mut data = cm.data.clone().unwrap_or_default();
    for (k, v) in cm.binary_data.clone().unwrap_or_default() {
        data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
    }
    data
}

fn secret_data(s: &Secret) -> BTreeMap<String, String> {
    let mut data: BTreeMap<String, String> = s
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in s.string_data.clone().unwrap_or_default() {
        data.insert(k, v);
    }
    data
}

/// Environment variable names a C shell can take (kubelet skips envFrom keys that are not).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Docker-link style variables of the namespace's services, plus the API server's.
async fn service_env(ctx: &EnvContext<'_>, namespace: &str, links: bool) -> Vec<(String, String)> {
    let mut services: Vec<Service> = Vec::new();
    if links {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
        if let Ok(list) = api.list(&Default::default()).await {
            services.extend(list.items);
        }
    }
    if namespace != "default" || !links {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), "default");
        if let Ok(Some(kubernetes)) = api.get_opt("kubernetes").await {
            services.push(kubernetes);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let name = svc.metadata.name.clone().unwrap_or_default();
        let prefix = name.to_ascii_uppercase().replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        let Some(first) = ports.first() else { continue };
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = &p.name {
                out.push((
                    format!(
                        "{prefix}_SERVICE_PORT_{}",
                        pn.to_ascii_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{prefix}_PORT"),
            format!(
                "{}://{ip}:{}",
                proto(first).to_ascii_lowercase(),
                first.port
            ),
        ));
        for p in &ports {
            let pr = proto(p);
            let base = format!("{prefix}_PORT_{}_{}", p.port, pr.to_ascii_uppercase());
            out.push((
                base.clone(),
                format!("{}://{ip}:{}", pr.to_ascii_lowercase(), p.port),
            ));
            out.push((format!("{base}_PROTO"), pr.to_ascii_lowercase()));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.clone()));
        }
    }
    out
}

fn field_value(ctx: &EnvContext<'_>, path: &str) -> Result<String, EnvError> {
    let pod = ctx.pod;
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let subscript = |prefix: &str| -> Option<String> {
        let rest = path.strip_prefix(prefix)?.strip_prefix("['")?;
        rest.strip_suffix("']").map(str::to_string)
    };
    if let Some(key) = subscript("metadata.labels") {
        return Ok(meta
            .labels
            .as_ref()
            .and_then(|l| l.get(&key))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(key) = subscript("metadata.annotations") {
        return Ok(meta
            .annotations
            .as_ref()
            .and_then(|l| l.get(&key))
            .cloned()
            .unwrap_or_default());
    }
    let join = |m: &Option<BTreeMap<String, String>>| {
        m.iter()
            .flatten()
            .map(|(k, v)| {
                format!(
                    "{k}=\"{}\"",
                    v.replace('\\', "\\\\")
                        .replace('"', "\\\"")
                        .replace('\n', "\\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => join(&meta.labels),
        "metadata.annotations" => join(&meta.annotations),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.clone().unwrap_or_default(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.clone().unwrap_or_default(),
        other => {
            return Err(EnvError::Config(format!(
                "unsupported fieldRef path {other:?}"
            )));
        }
    })
}

fn resource_value(
    ctx: &EnvContext<'_>,
    pod: &Pod,
    this: &Container,
    sel: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String, EnvError> {
    let container = match sel.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => this,
        Some(name) => pod
            .spec
            .as_ref()
            .and_then(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
                    .find(|c| c.name == name)
            })
            .ok_or_else(|| EnvError::Config(format!("container {name} not found")))?,
    };
    let (kind, res) = sel.resource.split_once('.').ok_or_else(|| {
        EnvError::Config(format!(
            "unsupported container resource : {:?}",
            sel.resource
        ))
    })?;
    let (req, lim) = qos::container_resources(container, res);
    let q = if kind == "limits" { lim } else { req };
    let divisor = sel.divisor.clone();
    match res {
        "cpu" => {
            let millis = q
                .as_ref()
                .and_then(qos::cpu_millis)
                .unwrap_or(if kind == "limits" {
                    ctx.node_cpu_millis
                } else {
                    0
                });
            let div = divisor
                .as_ref()
                .and_then(qos::cpu_millis)
                .filter(|d| *d > 0)
                .unwrap_or(1000);
            // Rounded up, at least 1 for a non-zero value, as the kubelet does.
            Ok(((millis + div - 1) / div).to_string())
        }
        "memory" | "ephemeral-storage" => {
            let b =
                q.as_ref()
                    .and_then(qos::bytes)
                    .unwrap_or(if kind == "limits" && res == "memory" {
                        ctx.node_memory
                    } else {
                        0
                    });
            let div = divisor
                .as_ref()
                .and_then(qos::bytes)
                .filter(|d| *d > 0)
                .unwrap_or(1);
            Ok(((b + div - 1) / div).to_string())
        }
        _ => Err(EnvError::Config(format!(
            "unsupported container resource : {:?}",
            sel.resource
        ))),
    }
}

/// The container's environment, in kubelet's order (service links, envFrom, env), and the
/// warnings kubelet reports as events (skipped invalid keys).
pub async fn container_env(
    ctx: &EnvContext<'_>,
    container: &Container,
) -> Result<(Vec<EnvVar>, Vec<String>), EnvError> {
    let pod = ctx.pod;
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut warnings = Vec::new();
    let mut sources = Sources {
        ctx,
        namespace: namespace.clone(),
        config_maps: BTreeMap::new(),
        secrets: BTreeMap::new(),
    };
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, name: String, value: String| match vars
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some(slot) => slot.1 = value,
        None => vars.push((name, value)),
    };
    for (n, v) in service_env(ctx, &namespace, links).await {
        set(&mut vars, n, v);
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, kind) = if let Some(r) = &from.config_map_ref {
            let name = r.name.clone();
            match sources.config_map(&name).await? {
                Some(cm) => (config_map_data(&cm), "ConfigMap"),
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::Config(format!("configmap \"{name}\" not found"))),
            }
        } else if let Some(r) = &from.secret_ref {
            let name = r.name.clone();
            match sources.secret(&name).await? {
                Some(s) => (secret_data(&s), "Secret"),
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::Config(format!("secret \"{name}\" not found"))),
            }
        } else {
            continue;
        };
        let mut invalid = Vec::new();
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            if !valid_env_name(&name) {
                invalid.push(name);
                continue;
            }
            set(&mut vars, name, v);
        }
        if !invalid.is_empty() {
            invalid.sort();
            warnings.push(format!(
                "Keys [{}] from the EnvFrom {kind} {namespace}/{} were skipped since they are considered invalid environment variable names.",
                invalid.join(", "),
                from.config_map_ref
                    .as_ref()
                    .map(|r| r.name.clone())
                    .or_else(|| from.secret_ref.as_ref().map(|r| r.name.clone()))
                    .unwrap_or_default()
            ));
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(src) = &e.value_from {
            if let Some(r) = &src.config_map_key_ref {
                let name = r.name.clone();
                let optional = r.optional == Some(true);
                match sources.config_map(&name).await? {
                    None if optional => continue,
                    None => {
                        return Err(EnvError::Config(format!("configmap \"{name}\" not found")));
                    }
                    Some(cm) => match config_map_data(&cm).get(&r.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::Config(format!(
                                "couldn't find key {} in ConfigMap {namespace}/{name}",
                                r.key
                            )));
                        }
                    },
                }
            } else if let Some(r) = &src.secret_key_ref {
                let name = r.name.clone();
                let optional = r.optional == Some(true);
                match sources.secret(&name).await? {
                    None if optional => continue,
                    None => return Err(EnvError::Config(format!("secret \"{name}\" not found"))),
                    Some(s) => match secret_data(&s).get(&r.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::Config(format!(
                                "couldn't find key {} in Secret {namespace}/{name}",
                                r.key
                            )));
                        }
                    },
                }
            } else if let Some(f) = &src.field_ref {
                field_value(ctx, &f.field_path)?
            } else if let Some(r) = &src.resource_field_ref {
                resource_value(ctx, pod, container, r)?
            } else {
                String::new()
            }
        } else {
            // Values may refer to variables defined before them.
            let defined: BTreeMap<String, String> = vars.iter().cloned().collect();
            expand(e.value.as_deref().unwrap_or(""), &defined)
        };
        set(&mut vars, e.name.clone(), value);
    }
    Ok((
        vars.into_iter()
            .map(|(name, value)| EnvVar { name, value })
            .collect(),
        warnings,
    ))
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`, and
/// anything else is left as written.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                    continue;
                }
                b'(' => {
                    if let Some(end) = input[i + 2..].find(')') {
                        let name = &input[i + 2..i + 2 + end];
                        match vars.get(name) {
                            Some(v) => out.push_str(v),
                            None => out.push_str(&input[i..i + 3 + end]),
                        }
                        i += 3 + end;
                        continue;
                    }
                }
                _ => {}
            }
        }
        let ch = input[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let vars = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
        assert_eq!(expand("é$(A", &vars), "é$(A");
        assert!(valid_env_name("a.b-c_D"));
        assert!(!valid_env_name("1x"));
        assert!(!valid_env_name("a b"));
    }
}
