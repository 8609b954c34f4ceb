//! The resource metrics API, `metrics.k8s.io/v1beta1` (what metrics-server serves in other
//! clusters): NodeMetrics and PodMetrics, read on each request from the Ready nodes' kubelet
//! Summary API (`/stats/summary`, CPU rates sampled by the agents), with names and labels from
//! the store. `kubectl top` and the HorizontalPodAutoscaler read it.
//!
//! As metrics-server: a node or pod with no metrics yet is a 404 on get
//! (`podmetrics.metrics.k8s.io "ns/name" not found`) and left out of lists; only get and list
//! are served; selectors apply to the node or pod objects. The `window` is the agents' sampling
//! period, over which their CPU rates are taken (shorter only for a container's first seconds).
//!
//! * `scrape` — concurrent Summary API reads with a per-node deadline.
//! * `quantity` — quantities and durations spelled as Go spells them.

mod quantity;
mod scrape;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};

use super::handlers::{Query, Selectors};
use super::object;
use super::resources;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use crate::kubeletapi::stats::sampler;
use crate::store::Store;
use scrape::{ContainerStats, Summary};

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const PREFIX: &str = "/apis/metrics.k8s.io/v1beta1/";

/// A resource of the group as discovery lists it.
pub struct MetricsResource {
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

pub const RESOURCES: &[MetricsResource] = &[
    MetricsResource {
        plural: "nodes",
        singular: "node",
        kind: "NodeMetrics",
        namespaced: false,
    },
    MetricsResource {
        plural: "pods",
        singular: "pod",
        kind: "PodMetrics",
        namespaced: true,
    },
];

pub const VERBS: &[&str] = &["get", "list"];

/// Whether `path` names a metrics resource (discovery documents of the group are not).
pub fn owns(path: &str) -> bool {
    path.strip_prefix(PREFIX)
        .is_some_and(|rest| !rest.trim_matches('/').is_empty())
}

/// The rate the agents report is over their sampling period.
fn window() -> String {
    quantity::go_duration(sampler::PERIOD)
}

pub async fn serve(
    store: &Store,
    kubelet_tls: Option<&Arc<rustls::ClientConfig>>,
    method: &Method,
    path: &str,
    query: &Query,
    accept: &str,
) -> Result<Value, ApiError> {
    let table = accept.contains("as=Table");
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    if method != Method::GET || query.flag("watch") {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not supported on {GROUP} resources: only get and list are",
            if query.flag("watch") {
                "watch"
            } else {
                method.as_str()
            }
        )));
    }
    let ctx = Context { store, kubelet_tls };
    match segments.as_slice() {
        ["nodes"] => Ok(list(
            "NodeMetricsList",
            ctx.nodes(None, query).await?,
            table,
        )),
        ["nodes", name] => {
            let item = ctx.nodes(Some(name), query).await?.into_iter().next();
            single("NodeMetrics", item, table, || {
                ApiError::not_found(GROUP, "nodemetrics", name)
            })
        }
        ["pods"] => Ok(list(
            "PodMetricsList",
            ctx.pods(None, None, query).await?,
            table,
        )),
        ["namespaces", ns, "pods"] => Ok(list(
            "PodMetricsList",
            ctx.pods(Some(ns), None, query).await?,
            table,
        )),
        ["namespaces", ns, "pods", name] => {
            let item = ctx
                .pods(Some(ns), Some(name), query)
                .await?
                .into_iter()
                .next();
            single("PodMetrics", item, table, || {
                ApiError::not_found(GROUP, "podmetrics", &format!("{ns}/{name}"))
            })
        }
        _ => Err(ApiError::path_not_found(path)),
    }
}

/// A metrics object with its totals, for the Table rows kubectl get prints.
struct Item {
    doc: Value,
    cpu_nano_cores: u64,
    memory_bytes: u64,
}

fn list(kind: &str, items: Vec<Item>, table: bool) -> Value {
    if table {
        return as_table(&items);
    }
    let items: Vec<Value> = items.into_iter().map(|i| i.doc).collect();
    json!({"kind": kind, "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

/// metrics-server's Table: name, total CPU and memory, window.
fn as_table(items: &[Item]) -> Value {
    let column = |name: &str, format: &str, description: &str| json!({"name": name, "type": "string", "format": format, "description": description, "priority": 0});
    let rows: Vec<Value> = items
        .iter()
        .map(|i| {
            json!({
                "cells": [
                    i.doc.pointer("/metadata/name").cloned().unwrap_or(Value::Null),
                    quantity::nano_cores(i.cpu_nano_cores),
                    quantity::bytes(i.memory_bytes),
                    i.doc.get("window").cloned().unwrap_or(Value::Null),
                ],
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": i.doc.get("metadata").cloned().unwrap_or(Value::Null),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [
            column("Name", "name", "Name of the resource"),
            column("CPU", "", "CPU usage"),
            column("Memory", "", "Memory usage"),
            column("Window", "", "Time window the usage was measured over"),
        ],
        "rows": rows,
    })
}

fn single(
    kind: &str,
    item: Option<Item>,
    table: bool,
    missing: impl FnOnce() -> ApiError,
) -> Result<Value, ApiError> {
    let item = item.ok_or_else(missing)?;
    if table {
        return Ok(as_table(&[item]));
    }
    let mut item = item.doc;
    if let Some(obj) = item.as_object_mut() {
        // Type first, as Go writes it.
        let mut typed = serde_json::Map::new();
        typed.insert("kind".into(), json!(kind));
        typed.insert("apiVersion".into(), json!(format!("{GROUP}/{VERSION}")));
        typed.append(obj);
        return Ok(Value::Object(typed));
    }
    Ok(item)
}

struct Context<'a> {
    store: &'a Store,
    kubelet_tls: Option<&'a Arc<rustls::ClientConfig>>,
}

impl Context<'_> {
    fn stored(
        &self,
        plural: &str,
        namespace: Option<&str>,
        selectors: &Selectors,
    ) -> Result<Vec<Value>, ApiError> {
        let def = resources::find("", "v1", plural)
            .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
        let (kvs, _) = self
            .store
            .list(&def.list_prefix(namespace))
            .map_err(|e| ApiError::from_store(e, "", plural, ""))?;
        let mut out = Vec::new();
        for kv in &kvs {
            let obj = object::from_stored(kv)?;
            if selectors.matches(&obj) {
                out.push(obj);
            }
        }
        Ok(out)
    }

    fn selectors(plural: &str, name: Option<&str>, query: &Query) -> Result<Selectors, ApiError> {
        let def = resources::find("", "v1", plural)
            .ok_or_else(|| ApiError::internal(format!("{plural} are not served")))?;
        match name {
            // A get is a list narrowed to one name.
            Some(name) => Ok(Selectors {
                labels: LabelSelector::parse("")?,
                fields: FieldSelector::parse(&format!("metadata.name={name}"), def)?,
            }),
            None => Selectors::from_query(query, def),
        }
    }

    /// Names of the nodes whose Ready condition is True: only they are asked.
    fn ready_nodes(&self) -> Result<BTreeSet<String>, ApiError> {
        let all = Selectors::from_query(&Query::parse(None), nodes_def()?)?;
        Ok(self
            .stored("nodes", None, &all)?
            .iter()
            .filter(|n| is_ready(n))
            .filter_map(|n| object::meta_str(n, "name").map(str::to_string))
            .collect())
    }

    async fn nodes(&self, name: Option<&str>, query: &Query) -> Result<Vec<Item>, ApiError> {
        let selectors = Self::selectors("nodes", name, query)?;
        let nodes = self.stored("nodes", None, &selectors)?;
        if let (Some(name), true) = (name, nodes.is_empty()) {
            // The node itself is missing: the core group's NotFound, as metrics-server answers.
            return Err(ApiError::not_found("", "nodes", name));
        }
        let nodes: Vec<Value> = nodes.into_iter().filter(is_ready).collect();
        let names: Vec<String> = nodes
            .iter()
            .filter_map(|n| object::meta_str(n, "name").map(str::to_string))
            .collect();
        let summaries = scrape::summaries(self.store, self.kubelet_tls, &names).await;
        let now = object::now_rfc3339();
        Ok(nodes
            .iter()
            .filter_map(|node| {
                let name = object::meta_str(node, "name")?;
                let stats = &summaries.get(name)?.node;
                let cpu = stats.cpu.as_ref()?;
                let memory = stats.memory.as_ref()?.working_set_bytes?;
                let rate = cpu.usage_nano_cores?;
                let doc = json!({
                    "metadata": {
                        "name": name,
                        "creationTimestamp": now,
                        "labels": labels(node),
                    },
                    "timestamp": cpu.time.clone().unwrap_or_else(|| now.clone()),
                    "window": window(),
                    "usage": {
                        "cpu": quantity::nano_cores(rate),
                        "memory": quantity::bytes(memory),
                    },
                });
                Some(Item {
                    doc,
                    cpu_nano_cores: rate,
                    memory_bytes: memory,
                })
            })
            .collect())
    }

    async fn pods(
        &self,
        namespace: Option<&str>,
        name: Option<&str>,
        query: &Query,
    ) -> Result<Vec<Item>, ApiError> {
        let selectors = Self::selectors("pods", name, query)?;
        let pods = self.stored("pods", namespace, &selectors)?;
        if let (Some(name), true) = (name, pods.is_empty()) {
            // The pod itself is missing: the core group's NotFound, as metrics-server answers.
            return Err(ApiError::not_found("", "pods", name));
        }
        let ready = self.ready_nodes()?;
        let nodes: Vec<String> = pods
            .iter()
            .filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str))
            .filter(|n| ready.contains(*n))
            .collect::<BTreeSet<&str>>()
            .into_iter()
            .map(str::to_string)
            .collect();
        let summaries = scrape::summaries(self.store, self.kubelet_tls, &nodes).await;
        let by_pod = index_pods(&summaries);
        let now = object::now_rfc3339();
        Ok(pods
            .iter()
            .filter_map(|pod| {
                let ns = object::meta_str(pod, "namespace")?;
                let name = object::meta_str(pod, "name")?;
                let stats = by_pod.get(&(ns, name))?;
                let uid = object::meta_str(pod, "uid").unwrap_or_default();
                if !stats.uid.is_empty() && !uid.is_empty() && stats.uid != uid {
                    // A pod of the same name that was replaced.
                    return None;
                }
                pod_item(pod, ns, name, stats.containers, &now)
            })
            .collect())
    }
}

struct PodEntry<'a> {
    uid: &'a str,
    containers: &'a [ContainerStats],
}

fn index_pods(summaries: &HashMap<String, Summary>) -> HashMap<(&str, &str), PodEntry<'_>> {
    summaries
        .values()
        .flat_map(|s| s.pods.iter())
        .map(|p| {
            (
                (p.pod_ref.namespace.as_str(), p.pod_ref.name.as_str()),
                PodEntry {
                    uid: p.pod_ref.uid.as_str(),
                    containers: &p.containers,
                },
            )
        })
        .collect()
}

/// A PodMetrics item; None unless every container has both a CPU rate and a working set (a
/// partial pod would understate its usage, so metrics-server leaves such pods out too).
fn pod_item(
    pod: &Value,
    ns: &str,
    name: &str,
    containers: &[ContainerStats],
    now: &str,
) -> Option<Item> {
    if containers.is_empty() {
        return None;
    }
    let mut newest: Option<&str> = None;
    let mut usage = Vec::new();
    let (mut cpu_total, mut memory_total) = (0u64, 0u64);
    for c in containers {
        let cpu = c.cpu.as_ref()?;
        let rate = cpu.usage_nano_cores?;
        let memory = c.memory.as_ref()?.working_set_bytes?;
        cpu_total = cpu_total.saturating_add(rate);
        memory_total = memory_total.saturating_add(memory);
        if let Some(t) = cpu.time.as_deref()
            && newest.is_none_or(|n| t > n)
        {
            newest = Some(t);
        }
        usage.push(json!({
            "name": c.name,
            "usage": {"cpu": quantity::nano_cores(rate), "memory": quantity::bytes(memory)},
        }));
    }
    let doc = json!({
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": now,
            "labels": labels(pod),
        },
        "timestamp": newest.unwrap_or(now),
        "window": window(),
        "containers": usage,
    });
    Some(Item {
        doc,
        cpu_nano_cores: cpu_total,
        memory_bytes: memory_total,
    })
}

fn labels(obj: &Value) -> Value {
    obj.pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}))
}

fn nodes_def() -> Result<&'static resources::ResourceDef, ApiError> {
    resources::find("", "v1", "nodes").ok_or_else(|| ApiError::internal("nodes are not served"))
}

fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type").and_then(Value::as_str) == Some("Ready")
                && c.get("status").and_then(Value::as_str) == Some("True")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use scrape::{CpuStats, MemoryStats};

    fn container(name: &str, rate: Option<u64>) -> ContainerStats {
        ContainerStats {
            name: name.into(),
            cpu: Some(CpuStats {
                time: Some("2026-01-01T00:00:10Z".into()),
                usage_nano_cores: rate,
            }),
            memory: Some(MemoryStats {
                working_set_bytes: Some(5 << 20),
            }),
        }
    }

    #[test]
    fn pod_metrics_have_metrics_servers_shape() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d", "labels": {"app": "x"}}});
        let item = pod_item(
            &pod,
            "d",
            "p",
            &[container("a", Some(1_234_567)), container("b", Some(0))],
            "2026-01-01T00:00:11Z",
        )
        .unwrap();
        assert_eq!(
            (item.cpu_nano_cores, item.memory_bytes),
            (1_234_567, 10 << 20)
        );
        let table = as_table(std::slice::from_ref(&item));
        assert_eq!(
            table["rows"][0]["cells"],
            json!(["p", "1234567n", "10Mi", "10s"])
        );
        let item = item.doc;
        assert_eq!(item["metadata"]["labels"], json!({"app": "x"}));
        assert_eq!(item["timestamp"], "2026-01-01T00:00:10Z");
        assert_eq!(item["window"], "10s");
        assert_eq!(
            item["containers"][0],
            json!({"name": "a", "usage": {"cpu": "1234567n", "memory": "5Mi"}})
        );
        assert_eq!(item["containers"][1]["usage"]["cpu"], "0");
        let item = Item {
            doc: item,
            cpu_nano_cores: 0,
            memory_bytes: 0,
        };
        let typed = single("PodMetrics", Some(item), false, || ApiError::internal("x")).unwrap();
        assert_eq!(typed["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(typed["kind"], "PodMetrics");
    }

    #[test]
    fn pods_without_a_rate_in_every_container_are_left_out() {
        let pod = json!({"metadata": {"name": "p", "namespace": "d"}});
        assert!(
            pod_item(
                &pod,
                "d",
                "p",
                &[container("a", Some(1)), container("b", None)],
                "now"
            )
            .is_none()
        );
        assert!(pod_item(&pod, "d", "p", &[], "now").is_none());
    }

    #[test]
    fn paths_of_the_group() {
        assert!(owns("/apis/metrics.k8s.io/v1beta1/nodes"));
        assert!(owns("/apis/metrics.k8s.io/v1beta1/namespaces/d/pods/x"));
        assert!(!owns("/apis/metrics.k8s.io/v1beta1"));
        assert!(!owns("/apis/metrics.k8s.io/v1beta1/"));
        assert!(!owns("/apis/apps/v1/deployments"));
    }
}
