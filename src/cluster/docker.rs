//! The Docker provider: networks, volumes and node containers, all labelled so that the labels
//! alone say which clusters exist and what belongs to them.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig,
    HostConfigCgroupnsModeEnum, NetworkCreateRequest, PortBinding, RestartPolicy,
    RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    UploadToContainerOptionsBuilder,
};
use futures::StreamExt;
use tracing::debug;

pub const LABEL_CLUSTER: &str = "dev.kcluster.cluster";
pub const LABEL_ROLE: &str = "dev.kcluster.role";
pub const LABEL_API_PORT: &str = "dev.kcluster.api-port";
pub const LABEL_API_ADDRESS: &str = "dev.kcluster.api-address";
pub const LABEL_CONFIG: &str = "dev.kcluster.config";
pub const LABEL_VERSION: &str = "dev.kcluster.version";
pub const LABEL_SECURITY: &str = "dev.kcluster.security";

/// Values of LABEL_ROLE. Only servers and workers are nodes; the port publisher and its proxies
/// belong to the cluster (delete removes them) but are not listed as nodes.
pub const ROLE_SERVER: &str = "server";
pub const ROLE_WORKER: &str = "worker";
pub const ROLE_PORTS: &str = "ports";
pub const ROLE_PORT_PROXY: &str = "port-proxy";
/// The API load balancer of a cluster with several servers (`lb::docker`).
pub const ROLE_LB: &str = "lb";

pub fn is_node(c: &ContainerSummary) -> bool {
    matches!(label(c, LABEL_ROLE), Some(ROLE_SERVER | ROLE_WORKER))
}

pub fn network_name(cluster: &str) -> String {
    format!("kcluster-{cluster}")
}

pub fn volume_name(node: &str) -> String {
    format!("kcluster-{node}-var")
}

pub struct Docker {
    inner: bollard::Docker,
}

/// How node containers get the powers a node needs. `--privileged` is the plain way; where the
/// engine's own capability set lacks some capability (seen: CAP_SYS_RESOURCE) runc cannot apply
/// "all" of them and we grant every capability but the missing one instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Privileged,
    Capabilities,
}

impl Security {
    pub fn as_str(self) -> &'static str {
        match self {
            Security::Privileged => "privileged",
            Security::Capabilities => "capabilities",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PortSpec {
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: String,
    pub host_port: u16,
}

#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub cluster: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub labels: HashMap<String, String>,
    pub env: Vec<String>,
    pub ports: Vec<PortSpec>,
    /// host path, container path, read-only
    pub binds: Vec<(String, String, bool)>,
    /// Docker's --cpus, in millicores; None: the host's.
    pub cpu_millis: Option<u64>,
    /// Docker's --memory (and --memory-swap, so the node never swaps); None: the host's.
    pub memory_bytes: Option<u64>,
}

/// A node's limits as Docker holds them: (NanoCpus, Memory, MemorySwap).
pub fn limits_config(
    cpu_millis: Option<u64>,
    memory_bytes: Option<u64>,
) -> (Option<i64>, Option<i64>, Option<i64>) {
    let nano_cpus = cpu_millis.map(|m| (m as i64).saturating_mul(1_000_000));
    let memory = memory_bytes.map(|b| b as i64);
    // Swap equal to memory: Kubernetes nodes run without swap, and a node that swapped
    // would hide the limit.
    (nano_cpus, memory, memory)
}

/// A node container's limits as `kcluster get nodes` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeLimits {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// What a node container may do: a private cgroup namespace, no seccomp/AppArmor confinement, and
/// either --privileged or every capability but CAP_SYS_RESOURCE with /proc and /sys unmasked
/// (the same as --security-opt systempaths=unconfined).
fn node_powers(security: Security) -> HostConfig {
    let mut host_config = HostConfig {
        cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
        security_opt: Some(vec![
            "seccomp=unconfined".into(),
            "apparmor=unconfined".into(),
        ]),
        ..Default::default()
    };
    match security {
        Security::Privileged => host_config.privileged = Some(true),
        Security::Capabilities => {
            host_config.cap_add = Some(vec!["ALL".into()]);
            host_config.cap_drop = Some(vec!["SYS_RESOURCE".into()]);
            host_config.masked_paths = Some(Vec::new());
            host_config.readonly_paths = Some(Vec::new());
        }
    }
    host_config
}

/// One line naming the socket and what to do: the message for every "cannot reach Docker" case.
fn unreachable(host: &str, err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach the Docker engine at {host}: {err}\n  Is Docker running, and may this user use it? Start it (e.g. `sudo systemctl start docker`) or point DOCKER_HOST at a running engine."
    )
}

impl Docker {
    pub async fn connect() -> Result<Docker> {
        let host = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string());
        let inner = bollard::Docker::connect_with_defaults().map_err(|e| unreachable(&host, e))?;
        let ping = tokio::time::timeout(std::time::Duration::from_secs(10), inner.ping()).await;
        match ping {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unreachable(&host, e)),
            Err(_) => return Err(unreachable(&host, "no answer within 10 s")),
        }
        // Older engines (20.10) speak an older API than bollard's default.
        let inner = inner
            .negotiate_version()
            .await
            .map_err(|e| unreachable(&host, e))?;
        Ok(Docker { inner })
    }

    pub fn api(&self) -> &bollard::Docker {
        &self.inner
    }

    /// Node containers of one cluster (or all clusters), running or not.
    pub async fn node_containers(&self, cluster: Option<&str>) -> Result<Vec<ContainerSummary>> {
        let mut list = self.cluster_containers(cluster).await?;
        list.retain(is_node);
        Ok(list)
    }

    /// Every container of one cluster (or all clusters): nodes, the port publisher, its proxies.
    pub async fn cluster_containers(&self, cluster: Option<&str>) -> Result<Vec<ContainerSummary>> {
        let label = match cluster {
            Some(c) => format!("{LABEL_CLUSTER}={c}"),
            None => LABEL_CLUSTER.to_string(),
        };
        let filters = HashMap::from([("label".to_string(), vec![label])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let mut list = self
            .inner
            .list_containers(Some(options))
            .await
            .context("cannot list containers")?;
        list.sort_by_key(container_name);
        Ok(list)
    }

    pub async fn create_network(&self, cluster: &str) -> Result<()> {
        let request = NetworkCreateRequest {
            name: network_name(cluster),
            driver: Some("bridge".into()),
            labels: Some(HashMap::from([(
                LABEL_CLUSTER.to_string(),
                cluster.to_string(),
            )])),
            ..Default::default()
        };
        self.inner.create_network(request).await.with_context(|| {
            format!("cannot create the Docker network {}", network_name(cluster))
        })?;
        Ok(())
    }

    /// Creates the node's container (and its state volume) and starts it. Files are placed before
    /// the start so the node finds its certificates and settings on first boot.
    pub async fn run_node(
        &self,
        spec: &NodeSpec,
        security: Security,
        files: &[(String, Vec<u8>, u32)],
    ) -> Result<()> {
        let volume = volume_name(&spec.name);
        self.inner
            .create_volume(VolumeCreateRequest {
                name: Some(volume.clone()),
                labels: Some(HashMap::from([(
                    LABEL_CLUSTER.to_string(),
                    spec.cluster.clone(),
                )])),
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create the volume {volume}"))?;
        let mut labels = spec.labels.clone();
        labels.insert(LABEL_SECURITY.into(), security.as_str().into());
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in &spec.ports {
            port_bindings
                .entry(format!(
                    "{}/{}",
                    p.container_port,
                    p.protocol.to_lowercase()
                ))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(p.host_ip.clone()),
                    host_port: Some(p.host_port.to_string()),
                });
        }
        let mut binds = vec![format!("{volume}:/var")];
        binds.extend(
            spec.binds
                .iter()
                .map(|(h, c, ro)| format!("{h}:{c}{}", if *ro { ":ro" } else { "" })),
        );
        let (nano_cpus, memory, memory_swap) = limits_config(spec.cpu_millis, spec.memory_bytes);
        let host_config = HostConfig {
            nano_cpus,
            memory,
            memory_swap,
            network_mode: Some(network_name(&spec.cluster)),
            binds: Some(binds),
            port_bindings: Some(port_bindings),
            tmpfs: Some(HashMap::from([
                ("/run".to_string(), "rw,exec".to_string()),
                ("/tmp".to_string(), "rw,exec".to_string()),
            ])),
            // A Docker restart brings nodes back; `docker stop` (or `kcluster stop`) keeps them down.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..node_powers(security)
        };
        let body = ContainerCreateBody {
            hostname: Some(spec.name.clone()),
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd.clone()),
            env: Some(spec.env.clone()),
            labels: Some(labels),
            exposed_ports: Some(
                spec.ports
                    .iter()
                    .map(|p| format!("{}/{}", p.container_port, p.protocol.to_lowercase()))
                    .collect(),
            ),
            stop_timeout: Some(10),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        self.inner
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("cannot create the node container {}", spec.name))?;
        if !files.is_empty() {
            self.upload(&spec.name, files).await?;
        }
        self.inner
            .start_container(&spec.name, None)
            .await
            .with_context(|| format!("cannot start the node container {}", spec.name))?;
        debug!(node = %spec.name, security = security.as_str(), "node container started");
        Ok(())
    }

    /// Creates the container `name` (a cluster helper: `what` says which, for errors), puts
    /// `files` in and starts it; `start_hint` is added to a start failure.
    pub async fn create_and_start(
        &self,
        name: &str,
        body: ContainerCreateBody,
        files: &[(String, Vec<u8>, u32)],
        what: &str,
        start_hint: &str,
    ) -> Result<()> {
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        self.inner
            .create_container(Some(options), body)
            .await
            .with_context(|| format!("cannot create the {what} {name}"))?;
        if !files.is_empty() {
            self.upload(name, files).await?;
        }
        self.inner
            .start_container(name, None)
            .await
            .with_context(|| format!("cannot start the {what} {name}{start_hint}"))?;
        Ok(())
    }

    pub async fn upload(&self, container: &str, files: &[(String, Vec<u8>, u32)]) -> Result<()> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data, mode) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(*mode);
            header.set_mtime(0);
            header.set_cksum();
            builder
                .append_data(&mut header, path.trim_start_matches('/'), data.as_slice())
                .with_context(|| format!("cannot pack {path}"))?;
        }
        let archive = builder.into_inner().context("cannot finish the archive")?;
        let options = UploadToContainerOptionsBuilder::new().path("/").build();
        self.inner
            .upload_to_container(container, Some(options), bollard::body_full(archive.into()))
            .await
            .with_context(|| format!("cannot copy files into {container}"))
    }

    pub async fn read_file(&self, container: &str, path: &str) -> Result<Vec<u8>> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut stream = self.inner.download_from_container(container, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            archive.extend_from_slice(
                &chunk.with_context(|| format!("cannot read {path} from {container}"))?,
            );
        }
        let mut tar = tar::Archive::new(archive.as_slice());
        for entry in tar.entries().context("not a tar archive")? {
            let mut entry = entry.context("bad tar entry")?;
            if entry.header().entry_type().is_file() {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut entry, &mut data)?;
                return Ok(data);
            }
        }
        bail!("{path} is not a file in {container}")
    }

    pub async fn logs_tail(&self, container: &str, lines: usize) -> String {
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.inner.logs(container, Some(options));
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&chunk.to_string());
        }
        out
    }

    /// Removes every container, volume and network labelled with the cluster's name; returns how
    /// many containers went. Missing pieces are fine: delete is idempotent.
    pub async fn remove_cluster(&self, cluster: &str) -> Result<usize> {
        // The port publisher goes first, so it cannot start a proxy after the list below.
        self.remove_node(&crate::ports::controller_name(cluster))
            .await?;
        let containers = self.cluster_containers(Some(cluster)).await?;
        let nodes = containers.iter().filter(|c| is_node(c)).count();
        let removals = containers.iter().map(|c| {
            let name = container_name(c);
            async move {
                let options = RemoveContainerOptionsBuilder::new()
                    .force(true)
                    .v(true)
                    .build();
                match self.inner.remove_container(&name, Some(options)).await {
                    Ok(()) => Ok(()),
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => Ok(()),
                    Err(e) => Err(e).with_context(|| format!("cannot remove the container {name}")),
                }
            }
        });
        futures::future::try_join_all(removals).await?;
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_CLUSTER}={cluster}")],
        )]);
        let volumes = self
            .inner
            .list_volumes(Some(
                ListVolumesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .context("cannot list volumes")?;
        for volume in volumes.volumes.unwrap_or_default() {
            match self
                .inner
                .remove_volume(
                    &volume.name,
                    Some(RemoveVolumeOptionsBuilder::new().force(true).build()),
                )
                .await
            {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot remove the volume {}", volume.name));
                }
            }
        }
        // A shared registry stays; only its link to this cluster's network goes.
        crate::registry::docker::disconnect_cluster(self, cluster).await?;
        let networks = self
            .inner
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .context("cannot list networks")?;
        for network in networks {
            let Some(name) = network.name else { continue };
            match self.inner.remove_network(&name).await {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove the network {name}"));
                }
            }
        }
        Ok(nodes)
    }

    /// Removes one node's container and state volume (a failed start is retried from scratch).
    pub async fn remove_node(&self, name: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.inner.remove_container(name, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove the container {name}")),
        }
        match self
            .inner
            .remove_volume(
                &volume_name(name),
                Some(RemoveVolumeOptionsBuilder::new().force(true).build()),
            )
            .await
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot remove the volume {}", volume_name(name)))
            }
        }
    }

    /// Runs a throwaway container of `image` (`kcluster node probe`, which exits at once) with the
    /// given security mode; Ok means the engine allows it.
    pub async fn probe(&self, image: &str, security: Security) -> Result<()> {
        let name = format!("kcluster-probe-{}", std::process::id());
        let host_config = node_powers(security);
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["node".into(), "probe".into()]),
            host_config: Some(host_config),
            ..Default::default()
        };
        self.inner
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            )
            .await
            .context("cannot create a probe container")?;
        let started = self
            .inner
            .start_container(&name, None)
            .await
            .context("the engine refused to start it");
        let _ = self
            .inner
            .remove_container(
                &name,
                Some(RemoveContainerOptionsBuilder::new().force(true).build()),
            )
            .await;
        started
    }

    /// The machine the engine runs on: its CPUs and memory.
    pub async fn host(&self) -> Result<crate::noderesources::Host> {
        let info = self
            .inner
            .info()
            .await
            .context("cannot ask the Docker engine about its host (docker info)")?;
        Ok(crate::noderesources::Host {
            cpus: info.ncpu.unwrap_or(0).max(1) as u64,
            memory_bytes: info.mem_total.unwrap_or(0).max(0) as u64,
        })
    }

    /// A container's CPU and memory limits (None where it has none).
    pub async fn limits(&self, container: &str) -> Result<NodeLimits> {
        let inspect = self
            .inner
            .inspect_container(container, None)
            .await
            .with_context(|| format!("cannot inspect the container {container}"))?;
        let host = inspect.host_config.unwrap_or_default();
        let cpu_millis = match (host.nano_cpus, host.cpu_quota, host.cpu_period) {
            (Some(n), _, _) if n > 0 => Some((n as u64).div_ceil(1_000_000)),
            // `docker update --cpu-quota` (or another tool) sets the quota instead.
            (_, Some(q), p) if q > 0 => {
                Some((q as u64 * 1000).div_ceil(p.filter(|p| *p > 0).unwrap_or(100_000) as u64))
            }
            _ => None,
        };
        Ok(NodeLimits {
            cpu_millis,
            memory_bytes: host.memory.filter(|m| *m > 0).map(|m| m as u64),
        })
    }

    /// A running container's memory working set as kubelet counts it (usage less inactive
    /// file pages, which the kernel drops before it OOM-kills); None when it is not running.
    pub async fn working_set(&self, container: &str) -> Result<Option<u64>> {
        let options = bollard::query_parameters::StatsOptionsBuilder::new()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stream = self.inner.stats(container, Some(options));
        let Some(stats) = stream.next().await else {
            return Ok(None);
        };
        let memory = stats
            .with_context(|| format!("cannot read the memory use of {container}"))?
            .memory_stats
            .unwrap_or_default();
        let Some(usage) = memory.usage else {
            return Ok(None);
        };
        let inactive = memory
            .stats
            .as_ref()
            .and_then(|s| {
                s.get("total_inactive_file")
                    .or_else(|| s.get("inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        Ok(Some(usage.saturating_sub(inactive)))
    }

    /// Gives a running (or stopped) node container other limits: `docker update`.
    pub async fn update_limits(
        &self,
        container: &str,
        cpu_millis: Option<u64>,
        memory_bytes: Option<u64>,
    ) -> Result<()> {
        let (nano_cpus, memory, memory_swap) = limits_config(cpu_millis, memory_bytes);
        let body = bollard::models::ContainerUpdateBody {
            nano_cpus,
            memory,
            memory_swap,
            ..Default::default()
        };
        self.inner
            .update_container(container, body)
            .await
            .with_context(|| format!("Docker refused the new limits of {container}"))
    }

    pub async fn network_exists(&self, cluster: &str) -> Result<bool> {
        let filters = HashMap::from([("name".to_string(), vec![network_name(cluster)])]);
        let networks = self
            .inner
            .list_networks(Some(
                ListNetworksOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .context("cannot list networks")?;
        Ok(networks
            .iter()
            .any(|n| n.name.as_deref() == Some(network_name(cluster).as_str())))
    }
}

pub fn container_name(c: &ContainerSummary) -> String {
    c.names
        .as_ref()
        .and_then(|n| n.first())
        .map(|n| n.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

/// The engine answered 404: the container, image or volume does not exist (any more).
pub fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Docker is removing the container (409 "marked for removal" / "removal … already in
/// progress"): whoever asked for that has decided its fate.
pub fn is_being_removed(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError { status_code: 409, message }
            if message.contains("marked for removal") || message.contains("already in progress")
    )
}

pub fn label<'a>(c: &'a ContainerSummary, key: &str) -> Option<&'a str> {
    c.labels.as_ref()?.get(key).map(String::as_str)
}

pub fn is_running(c: &ContainerSummary) -> bool {
    c.state == Some(ContainerSummaryStateEnum::RUNNING)
}

pub fn state_str(c: &ContainerSummary) -> String {
    c.state
        .map(|s| format!("{s:?}").to_lowercase())
        .unwrap_or_else(|| "unknown".into())
}

pub fn container_ip(c: &ContainerSummary) -> Option<String> {
    c.network_settings
        .as_ref()?
        .networks
        .as_ref()?
        .values()
        .find_map(|n| n.ip_address.clone().filter(|ip| !ip.is_empty()))
}

/// runc's words when the engine cannot hand a privileged container every capability.
pub fn is_capability_failure(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    text.contains("apply caps")
        || (text.contains("capabilit") && text.contains("operation not permitted"))
}

/// What a command run with `docker exec` printed, and how it ended.
#[derive(Debug, Default)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// stderr as text, trimmed: the message a failed node command left.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

impl Docker {
    /// Runs `cmd` in a running container (like `docker exec -i`), feeding it what arrives on
    /// `input` (its stdin is closed when `input` ends) and collecting its output.
    pub async fn exec_with_input(
        &self,
        container: &str,
        cmd: &[&str],
        mut input: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
    ) -> Result<ExecOutput> {
        use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
        use tokio::io::AsyncWriteExt;
        let exec = self
            .inner
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: Some(input.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("cannot run {:?} in {container}", cmd.join(" ")))?;
        let started = self
            .inner
            .start_exec(&exec.id, Some(StartExecOptions::default()))
            .await
            .with_context(|| format!("cannot run {:?} in {container}", cmd.join(" ")))?;
        let StartExecResults::Attached {
            mut output,
            input: mut stdin,
        } = started
        else {
            bail!("the Docker engine ran {:?} detached", cmd.join(" "));
        };
        let writer = async {
            if let Some(rx) = input.as_mut() {
                while let Some(chunk) = rx.recv().await {
                    if let Err(e) = stdin.write_all(&chunk).await {
                        // The command ended (or failed) before reading everything: its exit
                        // code and stderr say why; drop the rest.
                        debug!(%container, error = %e, "stdin closed early");
                        while rx.recv().await.is_some() {}
                        return;
                    }
                }
            }
            let _ = stdin.shutdown().await;
        };
        let reader = async {
            let mut out = ExecOutput::default();
            while let Some(item) = output.next().await {
                match item {
                    Ok(bollard::container::LogOutput::StdOut { message }) => {
                        out.stdout.extend_from_slice(&message)
                    }
                    Ok(bollard::container::LogOutput::StdErr { message }) => {
                        out.stderr.extend_from_slice(&message)
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(anyhow::Error::from(e))
                            .with_context(|| format!("lost the output of {:?}", cmd.join(" ")));
                    }
                }
            }
            Ok(out)
        };
        let ((), out) = tokio::join!(writer, reader);
        let mut out = out?;
        let inspect = self
            .inner
            .inspect_exec(&exec.id)
            .await
            .context("cannot read the exit code of a docker exec")?;
        out.exit_code = inspect.exit_code.unwrap_or(-1);
        Ok(out)
    }

    /// Runs `cmd` in a running container and collects its output (`docker exec`).
    pub async fn exec(&self, container: &str, cmd: &[&str]) -> Result<ExecOutput> {
        self.exec_with_input(container, cmd, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker_error(status_code: u16, message: &str) -> bollard::errors::Error {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        }
    }

    #[test]
    fn a_container_being_removed_is_told_apart_from_other_conflicts() {
        assert!(is_being_removed(&docker_error(
            409,
            "container is marked for removal and cannot be started"
        )));
        assert!(is_being_removed(&docker_error(
            409,
            "removal of container abc is already in progress"
        )));
        assert!(!is_being_removed(&docker_error(
            409,
            "Conflict. The container name \"/x\" is already in use"
        )));
        assert!(!is_being_removed(&docker_error(
            404,
            "No such container: x"
        )));
        assert!(is_not_found(&docker_error(404, "No such container: x")));
    }
}
