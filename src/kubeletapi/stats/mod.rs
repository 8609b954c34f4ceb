//! Resource usage of the node and its pods from their cgroups: what `/stats/summary` and
//! `/metrics/resource` serve, and what the API server's `metrics.k8s.io` reads.
//!
//! * `cgroup` — one cgroup's CPU counter and memory (working set = usage − inactive file), v1 and v2.
//! * `sampler` — background samples every 10 s and the CPU rate between the two newest.
//! * `containers` — the running pod containers and their cgroups.
//! * `summary` — the Summary API document and the Prometheus text.

pub mod cgroup;
mod containers;
pub mod sampler;
pub mod summary;

use std::sync::Arc;

use http::{Response, StatusCode, header};

use super::{Body, full, status};
use crate::runtime::container::Runtime;

pub struct Stats {
    runtime: Arc<Runtime>,
    sampler: Arc<sampler::Sampler>,
    node_name: String,
    start_time: String,
    memory_capacity: u64,
}

impl Stats {
    /// Starts the background sampler; `memory_capacity` is the node's memory (the base of
    /// `availableBytes` when its cgroup has no limit).
    pub fn start(runtime: Arc<Runtime>, node_name: &str, memory_capacity: u64) -> Arc<Stats> {
        let sampler = Arc::new(sampler::Sampler::default());
        sampler.spawn(runtime.clone());
        Arc::new(Stats {
            runtime,
            sampler,
            node_name: node_name.to_string(),
            start_time: jiff::Timestamp::now().to_string(),
            memory_capacity,
        })
    }

    async fn collect(self: &Arc<Self>) -> Option<summary::NodeUsage> {
        let stats = self.clone();
        tokio::task::spawn_blocking(move || {
            summary::collect(
                &stats.runtime,
                &stats.sampler,
                &stats.node_name,
                &stats.start_time,
                stats.memory_capacity,
            )
        })
        .await
        .ok()
    }

    /// `GET /stats/summary`.
    pub async fn summary(self: &Arc<Self>) -> Response<Body> {
        match self.collect().await {
            Some(usage) => reply(
                "application/json",
                summary::summary_json(&usage).to_string(),
            ),
            None => unavailable(),
        }
    }

    /// `GET /metrics/resource`.
    pub async fn resource_metrics(self: &Arc<Self>) -> Response<Body> {
        match self.collect().await {
            Some(usage) => reply(
                "text/plain; version=0.0.4; charset=utf-8",
                summary::resource_metrics_text(&usage),
            ),
            None => unavailable(),
        }
    }
}

fn reply(content_type: &'static str, body: String) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full("")))
}

fn unavailable() -> Response<Body> {
    status(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "reading the node's statistics failed",
    )
}
