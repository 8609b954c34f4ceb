//! The downward API in volumes: pod fields (`fieldRef`) and container resources
//! (`resourceFieldRef`) rendered as file contents, in kubelet's formats.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::scheduler::resources::{milli_value, value};

/// Labels and annotations as kubelet writes them: `key="value"` lines, sorted, values quoted as
/// Go's %q does, no newline after the last.
pub fn format_map(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `metadata.labels['key']` → `("labels", "key")`.
fn subscript(path: &str) -> Option<(&str, &str)> {
    let (field, rest) = path.strip_prefix("metadata.")?.split_once("['")?;
    let key = rest.strip_suffix("']")?;
    Some((field, key))
}

/// The text of a pod field a volume may show.
pub fn field_value(pod: &Pod, selector: &ObjectFieldSelector) -> Result<String, String> {
    let meta = &pod.metadata;
    let path = selector.field_path.as_str();
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let annotations = meta.annotations.as_ref().unwrap_or(&empty);
    match path {
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        "metadata.labels" => Ok(format_map(labels)),
        "metadata.annotations" => Ok(format_map(annotations)),
        _ => match subscript(path) {
            Some(("labels", key)) => Ok(labels.get(key).cloned().unwrap_or_default()),
            Some(("annotations", key)) => Ok(annotations.get(key).cloned().unwrap_or_default()),
            _ => Err(format!("unsupported fieldPath: {path}")),
        },
    }
}

/// A container resource divided by the divisor, rounded up, as kubelet renders it. Limits the
/// container does not set are the node's allocatable.
pub fn resource_value(
    pod: &Pod,
    selector: &ResourceFieldSelector,
    allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, String> {
    let container_name = selector.container_name.as_deref().unwrap_or_default();
    let containers = pod.spec.iter().flat_map(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
    });
    let Some(container) = containers
        .into_iter()
        .find(|c: &&Container| c.name == container_name)
    else {
        return Err(format!("container {container_name} not found"));
    };
    let resources = container.resources.as_ref();
    let (list, name) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| format!("unsupported container resource : {}", selector.resource))?;
    let given = match list {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => None,
    }
    .and_then(|l| l.get(name));
    let quantity = match (list, given) {
        (_, Some(q)) => q.clone(),
        ("limits", None) => allocatable
            .get(name)
            .cloned()
            .unwrap_or(Quantity("0".into())),
        _ => Quantity("0".into()),
    };
    let divisor = selector
        .divisor
        .clone()
        .unwrap_or_else(|| Quantity("1".into()));
    match name {
        "cpu" => Ok(ceil_div(milli_value(&quantity), milli_value(&divisor)).to_string()),
        "memory" | "ephemeral-storage" => {
            Ok(ceil_div(value(&quantity), value(&divisor)).to_string())
        }
        _ if name.starts_with("hugepages-") => {
            Ok(ceil_div(value(&quantity), value(&divisor)).to_string())
        }
        _ => Err(format!(
            "unsupported container resource : {}",
            selector.resource
        )),
    }
}

fn ceil_div(n: i64, d: i64) -> i64 {
    if d <= 0 {
        return n;
    }
    n.div_euclid(d) + i64::from(n.rem_euclid(d) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "prod", "uid": "u-1",
                "labels": {"b": "2", "a": "x\"y"}, "annotations": {"note": "line1\nline2"}},
            "spec": {"containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m", "memory": "32Mi"}}}]}
        }))
        .unwrap()
    }

    fn field(path: &str) -> String {
        field_value(
            &pod(),
            &ObjectFieldSelector {
                field_path: path.into(),
                api_version: None,
            },
        )
        .unwrap()
    }

    #[test]
    fn pod_fields_render_as_kubelet_writes_them() {
        assert_eq!(field("metadata.name"), "web");
        assert_eq!(field("metadata.namespace"), "prod");
        assert_eq!(field("metadata.uid"), "u-1");
        assert_eq!(field("metadata.labels"), "a=\"x\\\"y\"\nb=\"2\"");
        assert_eq!(field("metadata.annotations"), "note=\"line1\\nline2\"");
        assert_eq!(field("metadata.labels['b']"), "2");
        assert_eq!(field("metadata.labels['missing']"), "");
        assert!(
            field_value(
                &pod(),
                &ObjectFieldSelector {
                    field_path: "spec.nodeName".into(),
                    api_version: None
                }
            )
            .is_err()
        );
    }

    fn resource(resource: &str, divisor: Option<&str>) -> String {
        let allocatable = BTreeMap::from([
            ("cpu".to_string(), Quantity("4".into())),
            ("memory".to_string(), Quantity("8Gi".into())),
        ]);
        resource_value(
            &pod(),
            &ResourceFieldSelector {
                container_name: Some("c".into()),
                resource: resource.into(),
                divisor: divisor.map(|d| Quantity(d.into())),
            },
            &allocatable,
        )
        .unwrap()
    }

    #[test]
    fn resources_divide_and_round_up() {
        assert_eq!(resource("requests.cpu", None), "1");
        assert_eq!(resource("requests.cpu", Some("1m")), "250");
        assert_eq!(resource("limits.memory", Some("1Mi")), "64");
        assert_eq!(resource("limits.memory", None), "67108864");
        assert_eq!(resource("requests.memory", Some("1Gi")), "1");
        // No limit: the node's allocatable.
        assert_eq!(resource("limits.cpu", None), "4");
        assert_eq!(resource("limits.cpu", Some("1m")), "4000");
    }
}
