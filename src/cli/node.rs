//! `kcluster node update NAME --cpus/--memory`: other limits for a running node. Docker
//! changes the container's cgroup in place; the node reads it at its next heartbeat (10 s)
//! and reports the new capacity and allocatable.

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Progress;
use crate::cluster::docker::{self, Docker};
use crate::noderesources::{Size, Sizes, check_against_host, check_minimum, quantity};

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The node, as `kcluster get nodes` names it (e.g. dev-worker-0).
    node: String,
    /// CPUs the node may use: 2, 1.5 or 1500m.
    #[arg(long)]
    cpus: Option<String>,
    /// Memory the node may use, swap included: 4Gi, 512Mi…
    #[arg(long)]
    memory: Option<String>,
}

pub async fn update(args: UpdateArgs, progress: &Progress) -> Result<()> {
    if args.cpus.is_none() && args.memory.is_none() {
        bail!("say what to change: --cpus and/or --memory");
    }
    let sizes = Sizes {
        cpu_millis: args
            .cpus
            .as_deref()
            .map(quantity::parse_cpu_millis)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--cpus: {e}"))?,
        memory_bytes: args
            .memory
            .as_deref()
            .map(quantity::parse_bytes)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--memory: {e}"))?,
    };
    let docker = Docker::connect().await?;
    let node = docker
        .node_containers(None)
        .await?
        .into_iter()
        .find(|c| docker::container_name(c) == args.node)
        .with_context(|| {
            format!(
                "no kcluster node named {:?} (see `kcluster get nodes --name <cluster>`)",
                args.node
            )
        })?;
    let server = docker::label(&node, docker::LABEL_ROLE) == Some(docker::ROLE_SERVER);
    let host = docker.host().await?;
    if let Err((size, message)) =
        check_minimum(&sizes, server).and_then(|()| check_against_host(&sizes, &host))
    {
        let flag = match size {
            Size::Cpus => "--cpus",
            Size::Memory => "--memory",
        };
        bail!("{flag}: {message}");
    }
    // Below what the node uses now the kernel would have to OOM-kill its pods (cgroup v2)
    // or refuse (v1): say so before touching anything.
    let mut tight = None;
    if let Some(new) = sizes.memory_bytes
        && let Some(used) = docker.working_set(&args.node).await?
    {
        if used >= new {
            bail!(
                "--memory: {} uses {} now, more than {}; stop some of its pods first or give it more",
                args.node,
                quantity::format_bytes(used.div_ceil(1 << 20) << 20),
                quantity::format_bytes(new)
            );
        }
        tight = Some(used);
    }
    // What is not given stays as it is (Docker would otherwise keep it too, but the swap
    // limit must move with the memory limit).
    let current = docker.limits(&args.node).await?;
    let cpu_millis = sizes.cpu_millis.or(current.cpu_millis);
    let memory_bytes = sizes.memory_bytes.or(current.memory_bytes);
    let step = progress.step(format!("Updating the limits of {}", args.node));
    docker
        .update_limits(&args.node, sizes.cpu_millis, sizes.memory_bytes)
        .await
        .map_err(|e| e.context("nothing was changed"))?;
    step.done();
    let show_cpus = cpu_millis.map_or("host".to_string(), quantity::format_cpus);
    let show_memory = memory_bytes.map_or("host".to_string(), quantity::format_bytes);
    progress.say(&format!(
        "{}: cpus {show_cpus}, memory {show_memory}; the Node's capacity follows at its next heartbeat (within 10s)",
        args.node
    ));
    if let (Some(used), Some(limit)) = (tight, memory_bytes)
        && used + crate::noderesources::DEFAULT_EVICTION_MEMORY > limit
    {
        eprintln!(
            "warning: {} uses {} of its {}: less than the default 100Mi eviction threshold is left, so it will report MemoryPressure and take no new pods",
            args.node,
            quantity::format_bytes(used.div_ceil(1 << 20) << 20),
            quantity::format_bytes(limit)
        );
    }
    Ok(())
}
