//! The resource metrics the autoscaler reads: `metrics.k8s.io/v1beta1` PodMetrics (what
//! metrics-server serves), behind a trait so the calculation can be tested with made-up usage.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::Value;

use crate::apiserver::kinds::quantity::Quantity;
use crate::controllers::runtime::error_message;

/// One pod's usage sample as the metrics API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    pub name: String,
    pub timestamp: Timestamp,
    /// How long the sample was averaged over.
    pub window: SignedDuration,
    /// container name → resource name → usage in thousandths.
    pub containers: Vec<(String, BTreeMap<String, i64>)>,
}

/// Where pod usage comes from. The error is the text Kubernetes' metrics client would give.
pub trait ResourceMetrics: Send + Sync {
    fn pod_usage<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodUsage>, String>>;
}

/// One pod's value for one resource (metricsclient.PodMetric).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodMetric {
    pub timestamp: Timestamp,
    pub window: SignedDuration,
    pub value: i64,
}

/// Pod name → its summed usage of `resource` (over all containers, or only `container`). A pod
/// with a container lacking the resource, or without the named container, has no value at all,
/// as in Kubernetes: it counts as a pod with missing metrics.
pub fn per_pod(
    usage: &[PodUsage],
    resource: &str,
    container: Option<&str>,
) -> BTreeMap<String, PodMetric> {
    let mut out = BTreeMap::new();
    for pod in usage {
        let mut sum = 0i64;
        let mut missing = pod.containers.is_empty();
        let mut seen = false;
        for (name, resources) in &pod.containers {
            if container.is_some_and(|c| c != name) {
                continue;
            }
            seen = true;
            match resources.get(resource) {
                Some(v) => sum = sum.saturating_add(*v),
                None => {
                    missing = true;
                    break;
                }
            }
        }
        if container.is_some() && !seen {
            missing = true;
        }
        if !missing {
            out.insert(
                pod.name.clone(),
                PodMetric {
                    timestamp: pod.timestamp,
                    window: pod.window,
                    value: sum,
                },
            );
        }
    }
    out
}

/// The resource metrics API of the cluster, through the API server.
pub struct MetricsApi {
    client: kube::Client,
}

impl MetricsApi {
    pub fn new(client: kube::Client) -> Self {
        MetricsApi { client }
    }
}

fn pod_metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

impl ResourceMetrics for MetricsApi {
    fn pod_usage<'a>(
        &'a self,
        namespace: &'a str,
        selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodUsage>, String>> {
        Box::pin(async move {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), namespace, &pod_metrics_resource());
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|e| {
                    format!(
                        "unable to fetch metrics from resource metrics API: {}",
                        error_message(&e)
                    )
                })?;
            if list.items.is_empty() {
                return Err("no metrics returned from resource metrics API".into());
            }
            Ok(list.items.iter().filter_map(parse_pod_metrics).collect())
        })
    }
}

fn parse_pod_metrics(obj: &DynamicObject) -> Option<PodUsage> {
    let name = obj.metadata.name.clone()?;
    let timestamp = obj.data.get("timestamp")?.as_str()?.parse().ok()?;
    let window = obj
        .data
        .get("window")
        .and_then(Value::as_str)
        .and_then(parse_go_duration)
        .unwrap_or(SignedDuration::ZERO);
    let containers = obj
        .data
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let usage = c
                .get("usage")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| {
                    let milli = Quantity::from_json(v)?.milli_value();
                    Some((k.clone(), i64::try_from(milli).unwrap_or(i64::MAX)))
                })
                .collect();
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
            (name.to_string(), usage)
        })
        .collect();
    Some(PodUsage {
        name,
        timestamp,
        window,
        containers,
    })
}

/// A Go `time.Duration` string as metav1.Duration serializes it (`30s`, `1m0.5s`, `250ms`).
pub fn parse_go_duration(text: &str) -> Option<SignedDuration> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(SignedDuration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        nanos += number * scale;
    }
    let d = SignedDuration::from_nanos(nanos.round() as i64);
    Some(if negative { -d } else { d })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(
            parse_go_duration("30s"),
            Some(SignedDuration::from_secs(30))
        );
        assert_eq!(
            parse_go_duration("1m0.5s"),
            Some(SignedDuration::from_millis(60_500))
        );
        assert_eq!(
            parse_go_duration("250ms"),
            Some(SignedDuration::from_millis(250))
        );
        assert_eq!(parse_go_duration("0"), Some(SignedDuration::ZERO));
        assert_eq!(parse_go_duration("3x"), None);
        assert_eq!(parse_go_duration(""), None);
    }

    fn usage(name: &str, containers: &[(&str, &[(&str, i64)])]) -> PodUsage {
        PodUsage {
            name: name.into(),
            timestamp: Timestamp::UNIX_EPOCH,
            window: SignedDuration::from_secs(15),
            containers: containers
                .iter()
                .map(|(c, r)| {
                    (
                        c.to_string(),
                        r.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn pods_lacking_a_resource_in_any_container_have_no_value() {
        let all = vec![
            usage("a", &[("app", &[("cpu", 100)]), ("side", &[("cpu", 20)])]),
            usage("b", &[("app", &[("cpu", 100)]), ("side", &[("memory", 5)])]),
            usage("c", &[]),
        ];
        let cpu = per_pod(&all, "cpu", None);
        assert_eq!(cpu.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(cpu["a"].value, 120);
        let app = per_pod(&all, "cpu", Some("app"));
        assert_eq!(app["b"].value, 100);
        assert!(per_pod(&all, "cpu", Some("nope")).is_empty());
    }
}
