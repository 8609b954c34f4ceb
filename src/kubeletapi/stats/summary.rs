//! The node's and its pods' resource usage in the two shapes kubelet serves it:
//! `/stats/summary` (the Summary API, `k8s.io/kubelet/pkg/apis/stats/v1alpha1`) and
//! `/metrics/resource` (Prometheus text, what metrics-server scrapes).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::cgroup::{self, Memory};
use super::containers;
use super::sampler::{CpuReading, Sampler};
use crate::runtime::container::Runtime;

#[derive(Debug, Clone)]
pub struct Usage {
    pub cpu: Option<CpuReading>,
    pub memory: Option<Memory>,
    pub memory_time: jiff::Timestamp,
}

#[derive(Debug, Clone)]
pub struct ContainerUsage {
    pub name: String,
    pub start_time: Option<String>,
    pub usage: Usage,
}

#[derive(Debug, Clone)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub start_time: Option<String>,
    pub containers: Vec<ContainerUsage>,
    pub usage: Usage,
}

#[derive(Debug, Clone)]
pub struct NodeUsage {
    pub node_name: String,
    pub start_time: String,
    /// What the node may use in all (its cgroup limit, else the host's memory): the base of
    /// `availableBytes`.
    pub memory_capacity: u64,
    pub usage: Usage,
    pub pods: Vec<PodUsage>,
}

fn usage_of(sampler: &Sampler, rel: &str) -> Usage {
    Usage {
        cpu: sampler.cpu(rel),
        memory: cgroup::memory(rel),
        memory_time: jiff::Timestamp::now(),
    }
}

/// Reads the node's and every running pod container's cgroups (blocking file reads).
pub fn collect(
    runtime: &Runtime,
    sampler: &Sampler,
    node_name: &str,
    start_time: &str,
    memory_capacity: u64,
) -> NodeUsage {
    let mut pods: BTreeMap<String, PodUsage> = BTreeMap::new();
    for c in containers::running(runtime) {
        let pod = pods.entry(c.pod_uid.clone()).or_insert_with(|| PodUsage {
            namespace: c.namespace.clone(),
            name: c.pod.clone(),
            uid: c.pod_uid.clone(),
            start_time: None,
            containers: Vec::new(),
            usage: usage_of(sampler, &c.pod_cgroup),
        });
        // RFC 3339 in UTC sorts by time as text.
        if let Some(started) = &c.started_at
            && pod.start_time.as_ref().is_none_or(|s| started < s)
        {
            pod.start_time = Some(started.clone());
        }
        pod.containers.push(ContainerUsage {
            name: c.name.clone(),
            start_time: c.started_at.clone(),
            usage: usage_of(sampler, &c.cgroup),
        });
    }
    NodeUsage {
        node_name: node_name.to_string(),
        start_time: start_time.to_string(),
        memory_capacity,
        usage: usage_of(sampler, ""),
        pods: pods.into_values().collect(),
    }
}

/// Go's metav1.Time: RFC 3339 to the second.
fn go_time(t: jiff::Timestamp) -> String {
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn go_time_text(text: &str) -> String {
    text.parse::<jiff::Timestamp>()
        .map(go_time)
        .unwrap_or_else(|_| text.to_string())
}

fn cpu_json(cpu: &CpuReading) -> Value {
    let mut out = json!({
        "time": go_time(cpu.time),
        "usageCoreNanoSeconds": cpu.usage_core_nano_seconds,
    });
    if let Some(rate) = cpu.usage_nano_cores {
        out["usageNanoCores"] = json!(rate);
    }
    out
}

fn memory_json(m: &Memory, time: jiff::Timestamp, capacity: Option<u64>) -> Value {
    let mut out = json!({
        "time": go_time(time),
        "usageBytes": m.usage,
        "workingSetBytes": m.working_set,
        "rssBytes": m.rss,
        "pageFaults": m.page_faults,
        "majorPageFaults": m.major_page_faults,
    });
    if let Some(limit) = m.limit.or(capacity) {
        out["availableBytes"] = json!(limit.saturating_sub(m.working_set));
    }
    out
}

/// `cpu` and `memory` fields of a node, pod or container entry; absent when not readable.
fn usage_fields(out: &mut Map<String, Value>, usage: &Usage, capacity: Option<u64>) {
    if let Some(cpu) = &usage.cpu {
        out.insert("cpu".into(), cpu_json(cpu));
    }
    if let Some(m) = &usage.memory {
        out.insert("memory".into(), memory_json(m, usage.memory_time, capacity));
    }
}

/// The Summary API document.
pub fn summary_json(node: &NodeUsage) -> Value {
    let mut node_entry = Map::new();
    node_entry.insert("nodeName".into(), json!(node.node_name));
    node_entry.insert("systemContainers".into(), json!([]));
    node_entry.insert("startTime".into(), json!(go_time_text(&node.start_time)));
    usage_fields(&mut node_entry, &node.usage, Some(node.memory_capacity));
    let pods: Vec<Value> = node
        .pods
        .iter()
        .map(|pod| {
            let containers: Vec<Value> = pod
                .containers
                .iter()
                .map(|c| {
                    let mut entry = Map::new();
                    entry.insert("name".into(), json!(c.name));
                    if let Some(t) = &c.start_time {
                        entry.insert("startTime".into(), json!(go_time_text(t)));
                    }
                    usage_fields(&mut entry, &c.usage, None);
                    Value::Object(entry)
                })
                .collect();
            let mut entry = Map::new();
            entry.insert(
                "podRef".into(),
                json!({"name": pod.name, "namespace": pod.namespace, "uid": pod.uid}),
            );
            if let Some(t) = &pod.start_time {
                entry.insert("startTime".into(), json!(go_time_text(t)));
            }
            entry.insert("containers".into(), Value::Array(containers));
            usage_fields(&mut entry, &pod.usage, None);
            Value::Object(entry)
        })
        .collect();
    json!({"node": Value::Object(node_entry), "pods": pods})
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn millis(t: jiff::Timestamp) -> i64 {
    t.as_millisecond()
}

/// `/metrics/resource`: cumulative CPU seconds and working sets of the node, pods and
/// containers, each with the time it was read, as kubelet's resource metrics endpoint.
pub fn resource_metrics_text(node: &NodeUsage) -> String {
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} [STABLE] {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    let seconds = |ns: u64| ns as f64 / 1e9;

    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
    );
    for pod in &node.pods {
        for c in &pod.containers {
            if let Some(cpu) = &c.usage.cpu {
                let _ = writeln!(
                    out,
                    "container_cpu_usage_seconds_total{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                    label(&c.name),
                    label(&pod.namespace),
                    label(&pod.name),
                    seconds(cpu.usage_core_nano_seconds),
                    millis(cpu.time)
                );
            }
        }
    }
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
    );
    for pod in &node.pods {
        for c in &pod.containers {
            if let Some(m) = &c.usage.memory {
                let _ = writeln!(
                    out,
                    "container_memory_working_set_bytes{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                    label(&c.name),
                    label(&pod.namespace),
                    label(&pod.name),
                    m.working_set,
                    millis(c.usage.memory_time)
                );
            }
        }
    }
    family(
        &mut out,
        "container_start_time_seconds",
        "gauge",
        "Start time of the container since unix epoch in seconds",
    );
    for pod in &node.pods {
        for c in &pod.containers {
            let Some(started) = c
                .start_time
                .as_deref()
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            else {
                continue;
            };
            let _ = writeln!(
                out,
                "container_start_time_seconds{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}} {} {}",
                label(&c.name),
                label(&pod.namespace),
                label(&pod.name),
                started.as_millisecond() as f64 / 1e3,
                millis(started)
            );
        }
    }
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
    );
    if let Some(cpu) = &node.usage.cpu {
        let _ = writeln!(
            out,
            "node_cpu_usage_seconds_total {} {}",
            seconds(cpu.usage_core_nano_seconds),
            millis(cpu.time)
        );
    }
    family(
        &mut out,
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
    );
    if let Some(m) = &node.usage.memory {
        let _ = writeln!(
            out,
            "node_memory_working_set_bytes {} {}",
            m.working_set,
            millis(node.usage.memory_time)
        );
    }
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
    );
    for pod in &node.pods {
        if let Some(cpu) = &pod.usage.cpu {
            let _ = writeln!(
                out,
                "pod_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\"}} {} {}",
                label(&pod.namespace),
                label(&pod.name),
                seconds(cpu.usage_core_nano_seconds),
                millis(cpu.time)
            );
        }
    }
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
    );
    for pod in &node.pods {
        if let Some(m) = &pod.usage.memory {
            let _ = writeln!(
                out,
                "pod_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\"}} {} {}",
                label(&pod.namespace),
                label(&pod.name),
                m.working_set,
                millis(pod.usage.memory_time)
            );
        }
    }
    family(
        &mut out,
        "resource_scrape_error",
        "gauge",
        "1 if there was an error while getting container metrics, 0 otherwise",
    );
    let failed = node.usage.cpu.is_none() || node.usage.memory.is_none();
    let _ = writeln!(out, "resource_scrape_error {}", u8::from(failed));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(rate: Option<u64>) -> Usage {
        let time: jiff::Timestamp = "2026-01-02T03:04:05.678Z".parse().unwrap();
        Usage {
            cpu: Some(CpuReading {
                time,
                usage_core_nano_seconds: 2_500_000_000,
                usage_nano_cores: rate,
            }),
            memory: Some(Memory {
                usage: 8 << 20,
                working_set: 6 << 20,
                rss: 4 << 20,
                page_faults: 10,
                major_page_faults: 1,
                limit: None,
            }),
            memory_time: time,
        }
    }

    fn node() -> NodeUsage {
        NodeUsage {
            node_name: "n1".into(),
            start_time: "2026-01-02T03:00:00.5Z".into(),
            memory_capacity: 16 << 20,
            usage: usage(Some(1_000_000)),
            pods: vec![PodUsage {
                namespace: "default".into(),
                name: "web".into(),
                uid: "u1".into(),
                start_time: Some("2026-01-02T03:01:00Z".into()),
                containers: vec![ContainerUsage {
                    name: "c\"1".into(),
                    start_time: Some("2026-01-02T03:01:00Z".into()),
                    usage: usage(None),
                }],
                usage: usage(Some(250_000_000)),
            }],
        }
    }

    #[test]
    fn summary_has_kubelets_shape() {
        let doc = summary_json(&node());
        assert_eq!(doc["node"]["nodeName"], "n1");
        assert_eq!(doc["node"]["startTime"], "2026-01-02T03:00:00Z");
        assert_eq!(doc["node"]["cpu"]["usageNanoCores"], 1_000_000);
        assert_eq!(doc["node"]["cpu"]["time"], "2026-01-02T03:04:05Z");
        assert_eq!(doc["node"]["memory"]["workingSetBytes"], 6 << 20);
        assert_eq!(doc["node"]["memory"]["availableBytes"], 10 << 20);
        let pod = &doc["pods"][0];
        assert_eq!(
            pod["podRef"],
            json!({"name": "web", "namespace": "default", "uid": "u1"})
        );
        assert_eq!(pod["cpu"]["usageNanoCores"], 250_000_000);
        let c = &pod["containers"][0];
        assert_eq!(c["name"], "c\"1");
        assert!(
            c["cpu"].get("usageNanoCores").is_none(),
            "no rate yet: left out"
        );
        assert_eq!(c["cpu"]["usageCoreNanoSeconds"], 2_500_000_000u64);
        assert!(c["memory"].get("availableBytes").is_none());
    }

    #[test]
    fn resource_metrics_are_prometheus_text() {
        let text = resource_metrics_text(&node());
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"c\\\"1\",namespace=\"default\",pod=\"web\"} 2.5 1767323045678\n"
        ));
        assert!(text.contains("node_memory_working_set_bytes 6291456 1767323045678\n"));
        assert!(
            text.contains("pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 2.5 ")
        );
        assert!(text.contains("# TYPE node_cpu_usage_seconds_total counter\n"));
        assert!(text.ends_with("resource_scrape_error 0\n"));
    }
}
