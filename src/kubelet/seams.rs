//! The one place the pod worker calls the pod network (`crate::network`), the volume plugins
//! (`crate::volumes`) and exec in containers (`crate::runtime::exec`). Until those modules are merged, a pod gets no address of its own (its
//! loopback works; probes dial inside its network namespace) and a pod with volumes waits with
//! a FailedMount event.

use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::Context;
use crate::runtime::spec::BindMount;

/// The pod's address on the pod network, once attached.
pub async fn attach_network(
    _ctx: &Context,
    _pod_uid: &str,
    _netns: &Path,
) -> anyhow::Result<Option<std::net::Ipv4Addr>> {
    // Wiring: `PodNetwork::attach(pod_uid, netns).await.map(|a| Some(a.ip))`.
    Ok(None)
}

pub async fn detach_network(_ctx: &Context, _pod_uid: &str) -> anyhow::Result<()> {
    // Wiring: `PodNetwork::detach(pod_uid).await`.
    Ok(())
}

/// Prepared volumes of a pod.
pub struct PodVolumes;

/// Prepares every volume of the pod; Err is the FailedMount message.
pub async fn setup_volumes(_ctx: &Context, pod: &Pod) -> Result<PodVolumes, String> {
    // Wiring: `crate::volumes::setup(&VolumeContext{..}, pod).await.map_err(|e| e.to_string())`.
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|v| v.len())
        .unwrap_or(0);
    if volumes == 0 {
        Ok(PodVolumes)
    } else {
        Err("volumes are not supported on this node yet: the pod waits until they are".to_string())
    }
}

impl PodVolumes {
    /// Bind mounts for one container (volumeMounts, subPath).
    pub fn mounts_for(&self, _container: &Container) -> Result<Vec<BindMount>, String> {
        Ok(Vec::new())
    }
}

pub async fn teardown_volumes(_ctx: &Context, _pod_uid: &str) -> anyhow::Result<()> {
    // Wiring: `crate::volumes::teardown(&VolumeContext{..}, pod_uid).await`.
    Ok(())
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
