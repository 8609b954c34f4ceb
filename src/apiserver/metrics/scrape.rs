//! Reading the Summary API of node agents, several at once, each with a deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tracing::debug;

use crate::apiserver::connect;
use crate::store::Store;

/// How long one node may take to answer: a dead or wedged node costs a request this much, not
/// more.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(5);
/// A summary of a full node (110 pods) is well under this.
const MAX_SUMMARY_BYTES: usize = 8 << 20;

/// The part of kubelet's Summary API (`stats/v1alpha1`) the metrics API needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub node: NodeStats,
    #[serde(default)]
    pub pods: Vec<PodStats>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    pub time: Option<String>,
    pub usage_nano_cores: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    pub working_set_bytes: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    pub pod_ref: PodRef,
    #[serde(default)]
    pub containers: Vec<ContainerStats>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PodRef {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ContainerStats {
    pub name: String,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
}

/// The summaries of `nodes`, fetched concurrently; a node that fails or is too slow is left
/// out (and logged), as metrics-server leaves out nodes it cannot scrape.
pub async fn summaries(
    store: &Store,
    kubelet_tls: Option<&Arc<rustls::ClientConfig>>,
    nodes: &[String],
) -> HashMap<String, Summary> {
    let Some(tls) = kubelet_tls else {
        return HashMap::new();
    };
    let fetches = nodes.iter().map(|node| async move {
        let fetched = tokio::time::timeout(
            NODE_TIMEOUT,
            connect::kubelet_get(store, tls, node, "/stats/summary", MAX_SUMMARY_BYTES),
        )
        .await;
        let summary = match fetched {
            Err(_) => Err(format!("no answer within {NODE_TIMEOUT:?}")),
            Ok(Err(e)) => Err(e.message),
            Ok(Ok(body)) => serde_json::from_slice::<Summary>(&body)
                .map_err(|e| format!("cannot decode the summary: {e}")),
        };
        match summary {
            Ok(s) => Some((node.clone(), s)),
            Err(error) => {
                debug!(%node, %error, "no resource metrics from node");
                None
            }
        }
    });
    futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_summaries_decode() {
        let text = r#"{"node": {"nodeName": "n1", "systemContainers": [], "startTime": "2026-01-01T00:00:00Z",
            "cpu": {"time": "2026-01-01T00:00:10Z", "usageNanoCores": 12345, "usageCoreNanoSeconds": 9},
            "memory": {"time": "2026-01-01T00:00:10Z", "workingSetBytes": 4096, "usageBytes": 8192},
            "network": {"interfaces": []}},
          "pods": [{"podRef": {"name": "p", "namespace": "d", "uid": "u"},
            "containers": [{"name": "c", "cpu": {"time": "2026-01-01T00:00:10Z", "usageCoreNanoSeconds": 1},
                            "memory": {"workingSetBytes": 1}}],
            "volume": []}]}"#;
        let s: Summary = serde_json::from_str(text).unwrap();
        assert_eq!(s.node.cpu.unwrap().usage_nano_cores, Some(12345));
        assert_eq!(s.pods[0].pod_ref.uid, "u");
        assert_eq!(
            s.pods[0].containers[0]
                .cpu
                .as_ref()
                .unwrap()
                .usage_nano_cores,
            None
        );
    }
}
