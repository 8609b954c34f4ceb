//! The one place the pod worker calls the pod network (`crate::network`), the volume plugins
//! (`crate::volumes`) and exec in containers (`crate::runtime::exec`).

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::Context;
use crate::runtime::spec::BindMount;

/// How long a pod waits for the node's pod network (the Node needs a podCIDR first) before its
/// sandbox creation fails and is retried.
const NETWORK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The pod's address on the pod network, once attached.
pub async fn attach_network(
    ctx: &Context,
    pod_uid: &str,
    netns: &Path,
) -> anyhow::Result<Option<std::net::Ipv4Addr>> {
    use anyhow::Context as _;
    let mut rx = ctx.node.network.clone();
    let network = tokio::time::timeout(NETWORK_WAIT, rx.wait_for(Option::is_some))
        .await
        .context("the node's pod network is not set up yet: the Node has no spec.podCIDR")?
        .context("the pod network task stopped")?
        .clone()
        .context("the node's pod network is not set up yet")?;
    let address = network.attach(pod_uid, netns).await?;
    Ok(Some(address.ip))
}

pub async fn detach_network(ctx: &Context, pod_uid: &str) -> anyhow::Result<()> {
    let network = ctx.node.network.borrow().clone();
    match network {
        Some(network) => network.detach(pod_uid).await,
        // Nothing was attached before the network existed.
        None => Ok(()),
    }
}

/// Prepared volumes of a pod, and when their API-backed contents were last brought up to date.
pub struct PodVolumes {
    inner: crate::volumes::PodVolumes,
    refreshed: std::time::Instant,
}

/// How often configMap, secret, downwardAPI and projected volumes are re-read (kubelet's sync
/// period is a minute), which also renews their tokens.
pub const VOLUME_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

fn volume_context(ctx: &Context) -> Result<crate::volumes::VolumeContext, String> {
    Ok(crate::volumes::VolumeContext {
        client: ctx
            .client()
            .ok_or("the node is not connected to the API server yet")?,
        state_dir: ctx.node.state_dir.clone(),
        node_name: ctx.node.node_name.clone(),
    })
}

/// Prepares every volume of the pod; Err is the FailedMount message.
pub async fn setup_volumes(ctx: &Context, pod: &Pod) -> Result<PodVolumes, String> {
    let vctx = volume_context(ctx)?;
    let inner = crate::volumes::setup(&vctx, pod)
        .await
        .map_err(|e| e.event_message())?;
    Ok(PodVolumes {
        inner,
        refreshed: std::time::Instant::now(),
    })
}

/// Brings the pod's API-backed volumes up to date when `VOLUME_REFRESH` has passed; returns
/// when to call again.
pub async fn refresh_volumes(
    ctx: &Context,
    pod: &Pod,
    volumes: &mut PodVolumes,
) -> std::time::Instant {
    if volumes.refreshed.elapsed() >= VOLUME_REFRESH {
        if let Ok(vctx) = volume_context(ctx) {
            // Failures are logged there; the old contents stay until the next round.
            let _ = crate::volumes::refresh(&vctx, pod).await;
        }
        volumes.refreshed = std::time::Instant::now();
    }
    volumes.refreshed + VOLUME_REFRESH
}

impl PodVolumes {
    /// Bind mounts for one container (volumeMounts, subPath).
    pub fn mounts_for(&self, container: &Container) -> Result<Vec<BindMount>, String> {
        self.inner
            .mounts_for(container)
            .map_err(|e| e.event_message())
    }
}

pub async fn teardown_volumes(ctx: &Context, pod_uid: &str) -> anyhow::Result<()> {
    crate::volumes::teardown_local(&ctx.node.state_dir, pod_uid)
}

/// Runs argv in a running container and waits: (exit code, output). Exec probes and exec hooks.
pub async fn exec(
    ctx: &Context,
    container_id: &str,
    argv: &[String],
    timeout: std::time::Duration,
) -> anyhow::Result<(i32, Vec<u8>)> {
    let out = crate::runtime::exec::capture(&ctx.runtime, container_id, argv, timeout).await?;
    Ok((out.exit_code, out.output))
}
