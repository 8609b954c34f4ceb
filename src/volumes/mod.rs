//! Pod volumes on a node: each volume of a pod prepared as a directory (or a node path) that
//! the runtime bind-mounts into the pod's containers. Directories live under
//! `<state>/pods/<uid>/volumes/<plugin>/<name>`; API-backed volumes are written by `atomic` and
//! kept current by `refresh`.

pub mod atomic;
mod downward;
mod hostpath;
pub mod localpath;
mod sources;
mod subpath;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolume, PersistentVolumeClaim, Pod, Volume, VolumeProjection,
};
use kube::api::Api;
use tracing::{debug, warn};

use crate::runtime::spec::BindMount;
use atomic::Payload;

pub struct VolumeContext {
    pub client: kube::Client,
    pub state_dir: PathBuf,
    pub node_name: String,
}

/// A volume that could not be set up. Display gives Kubernetes' wording of the cause
/// (`configmap "x" not found`); `event_message` the whole FailedMount event text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

impl VolumeError {
    fn new(volume: &str, message: impl Into<String>) -> Self {
        VolumeError {
            volume: volume.to_string(),
            message: message.into(),
        }
    }

    pub fn event_message(&self) -> String {
        format!(
            "MountVolume.SetUp failed for volume \"{}\" : {}",
            self.volume, self.message
        )
    }
}

/// Where a prepared volume is on the node, and whether containers may only read it.
#[derive(Debug, Clone)]
struct Prepared {
    path: PathBuf,
    always_read_only: bool,
}

/// The prepared volumes of one pod, by volume name.
#[derive(Debug, Clone)]
pub struct PodVolumes {
    pod: Pod,
    volumes: BTreeMap<String, Prepared>,
}

pub fn pod_dir(state_dir: &Path, pod_uid: &str) -> PathBuf {
    state_dir.join("pods").join(pod_uid)
}

fn plugin_dir(state_dir: &Path, pod_uid: &str, plugin: &str, name: &str) -> PathBuf {
    pod_dir(state_dir, pod_uid)
        .join("volumes")
        .join(plugin)
        .join(name)
}

fn plugin_of(volume: &Volume) -> Option<&'static str> {
    Some(if volume.empty_dir.is_some() {
        "kubernetes.io~empty-dir"
    } else if volume.config_map.is_some() {
        "kubernetes.io~configmap"
    } else if volume.secret.is_some() {
        "kubernetes.io~secret"
    } else if volume.downward_api.is_some() {
        "kubernetes.io~downward-api"
    } else if volume.projected.is_some() {
        "kubernetes.io~projected"
    } else {
        return None;
    })
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()?
        .security_context
        .as_ref()?
        .fs_group
        .and_then(|g| u32::try_from(g).ok())
}

/// Prepares every volume of the pod. Err names the first volume that failed and why.
pub async fn setup(ctx: &VolumeContext, pod: &Pod) -> Result<PodVolumes, VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if uid.is_empty() {
        return Err(VolumeError::new("", "the pod has no uid"));
    }
    let mut volumes = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let prepared = setup_one(ctx, pod, uid, volume)
            .await
            .map_err(|message| VolumeError::new(&volume.name, message))?;
        volumes.insert(volume.name.clone(), prepared);
    }
    Ok(PodVolumes {
        pod: pod.clone(),
        volumes,
    })
}

async fn setup_one(
    ctx: &VolumeContext,
    pod: &Pod,
    uid: &str,
    volume: &Volume,
) -> Result<Prepared, String> {
    if let Some(empty) = &volume.empty_dir {
        let dir = plugin_dir(&ctx.state_dir, uid, "kubernetes.io~empty-dir", &volume.name);
        emptydir(&dir, empty, fs_group(pod))?;
        return Ok(Prepared {
            path: dir,
            always_read_only: false,
        });
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        hostpath::check_type(&path, host.type_.as_deref().unwrap_or_default())?;
        return Ok(Prepared {
            path,
            always_read_only: false,
        });
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        let path = claim_path(ctx, pod, &claim.claim_name).await?;
        return Ok(Prepared {
            path,
            always_read_only: claim.read_only.unwrap_or(false),
        });
    }
    let Some(plugin) = plugin_of(volume) else {
        return Err(format!(
            "volume {:?} has a type this node does not support (emptyDir, hostPath, configMap, secret, downwardAPI, projected and persistentVolumeClaim are)",
            volume.name
        ));
    };
    let dir = plugin_dir(&ctx.state_dir, uid, plugin, &volume.name);
    write_api_volume(ctx, pod, volume, &dir).await?;
    Ok(Prepared {
        path: dir,
        always_read_only: true,
    })
}

fn emptydir(
    dir: &Path,
    source: &k8s_openapi::api::core::v1::EmptyDirVolumeSource,
    fs_group: Option<u32>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if source.medium.as_deref() == Some("Memory") && !is_mount_point(dir) {
        let size = source
            .size_limit
            .as_ref()
            .map(crate::scheduler::resources::value)
            .filter(|s| *s > 0);
        let options = size.map(|s| format!("size={s}"));
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            options.as_deref(),
        )
        .map_err(|e| format!("cannot mount a tmpfs on {}: {e}", dir.display()))?;
    }
    let mut mode = 0o777;
    if let Some(gid) = fs_group {
        std::os::unix::fs::chown(dir, None, Some(gid))
            .map_err(|e| format!("cannot give {} to group {gid}: {e}", dir.display()))?;
        mode |= 0o2000;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))
}

/// Mount points at or under `prefix`, deepest first, from this process's mount table.
fn mounts_under(prefix: &Path) -> Vec<PathBuf> {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec![];
    };
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        // mountinfo escapes spaces and such as octal.
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(prefix))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn is_mount_point(dir: &Path) -> bool {
    mounts_under(dir).iter().any(|m| m == dir)
}

/// The node path of the claim's bound PersistentVolume.
async fn claim_path(ctx: &VolumeContext, pod: &Pod, claim: &str) -> Result<PathBuf, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let pvc = claims.get(claim).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => {
            format!("persistentvolumeclaim \"{claim}\" not found")
        }
        other => format!("cannot read persistentvolumeclaim \"{claim}\": {other}"),
    })?;
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let volume_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if phase != "Bound" || volume_name.is_empty() {
        return Err(format!(
            "PVC {namespace}/{claim} has non-bound phase ({phase:?}) or empty pvc.Spec.VolumeName ({volume_name:?})"
        ));
    }
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let pv = pvs
        .get(&volume_name)
        .await
        .map_err(|e| format!("cannot read persistentvolume \"{volume_name}\": {e}"))?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| {
            format!("persistentvolume \"{volume_name}\" is neither a hostPath nor a local volume")
        })?;
    let path = PathBuf::from(path);
    if !path.is_dir() {
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    }
    Ok(path)
}

/// The payload of a configMap, secret, downwardAPI or projected volume, written atomically.
async fn write_api_volume(
    ctx: &VolumeContext,
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
) -> Result<bool, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut payload = Payload::new();
    if let Some(cm) = &volume.config_map {
        sources::config_map(
            ctx,
            namespace,
            &cm.name,
            cm.items.as_ref(),
            cm.default_mode.unwrap_or(sources::DEFAULT_MODE),
            cm.optional.unwrap_or(false),
            &mut payload,
        )
        .await?;
    } else if let Some(secret) = &volume.secret {
        sources::secret(
            ctx,
            namespace,
            secret.secret_name.as_deref().unwrap_or_default(),
            secret.items.as_ref(),
            secret.default_mode.unwrap_or(sources::DEFAULT_MODE),
            secret.optional.unwrap_or(false),
            &mut payload,
        )
        .await?;
    } else if let Some(downward) = &volume.downward_api {
        sources::downward_api(
            ctx,
            pod,
            downward.items.as_deref().unwrap_or_default(),
            downward.default_mode.unwrap_or(sources::DEFAULT_MODE),
            &mut payload,
        )
        .await?;
    } else if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(sources::DEFAULT_MODE);
        for source in projected.sources.iter().flatten() {
            project(ctx, pod, source, mode, dir, &mut payload).await?;
        }
    }
    atomic::write(dir, &payload, fs_group(pod)).map_err(|e| format!("{e:#}"))
}

async fn project(
    ctx: &VolumeContext,
    pod: &Pod,
    source: &VolumeProjection,
    mode: i32,
    dir: &Path,
    payload: &mut Payload,
) -> Result<(), String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(cm) = &source.config_map {
        sources::config_map(
            ctx,
            namespace,
            &cm.name,
            cm.items.as_ref(),
            mode,
            cm.optional.unwrap_or(false),
            payload,
        )
        .await
    } else if let Some(secret) = &source.secret {
        sources::secret(
            ctx,
            namespace,
            &secret.name,
            secret.items.as_ref(),
            mode,
            secret.optional.unwrap_or(false),
            payload,
        )
        .await
    } else if let Some(downward) = &source.downward_api {
        sources::downward_api(
            ctx,
            pod,
            downward.items.as_deref().unwrap_or_default(),
            mode,
            payload,
        )
        .await
    } else if let Some(token) = &source.service_account_token {
        sources::service_account_token(ctx, pod, token, dir, mode, payload).await
    } else {
        Err("a projected source this node does not support (configMap, secret, downwardAPI and serviceAccountToken are)".into())
    }
}

/// Brings the pod's configMap, secret, downwardAPI and projected volumes up to date (new data,
/// renewed tokens), as kubelet's periodic resync does. Files change only when their contents
/// do; containers that mount a whole volume see the new files, subPath mounts keep the old.
pub async fn refresh(ctx: &VolumeContext, pod: &Pod) -> Result<(), VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let mut first_error = None;
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(plugin) = plugin_of(volume).filter(|p| *p != "kubernetes.io~empty-dir") else {
            continue;
        };
        let dir = plugin_dir(&ctx.state_dir, uid, plugin, &volume.name);
        match write_api_volume(ctx, pod, volume, &dir).await {
            Ok(true) => debug!(pod_uid = uid, volume = %volume.name, "volume contents updated"),
            Ok(false) => {}
            Err(message) => {
                warn!(pod_uid = uid, volume = %volume.name, error = %message, "cannot refresh the volume");
                first_error.get_or_insert(VolumeError::new(&volume.name, message));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Unmounts what `setup` mounted (memory-backed emptyDirs) and removes the pod's volume
/// directories. hostPath and claim paths belong to the node and stay.
#[allow(dead_code)] // The contract's entry point; the kubelet, which may have no client then, calls `teardown_local`.
pub async fn teardown(ctx: &VolumeContext, pod_uid: &str) -> Result<()> {
    teardown_local(&ctx.state_dir, pod_uid)
}

/// `teardown` for callers without an API client: it needs none.
pub fn teardown_local(state_dir: &Path, pod_uid: &str) -> Result<()> {
    if pod_uid.is_empty() || pod_uid.contains('/') || pod_uid.starts_with('.') {
        anyhow::bail!("{pod_uid:?} is not a pod uid");
    }
    let dir = pod_dir(state_dir, pod_uid).join("volumes");
    for mount in mounts_under(&dir) {
        nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("cannot unmount {}", mount.display()))?;
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}

impl PodVolumes {
    /// The container's volumeMounts as bind mounts. `$(VAR)` in subPathExpr comes from the
    /// container's env (plain values, and pod fields through fieldRef).
    pub fn mounts_for(&self, container: &Container) -> Result<Vec<BindMount>, VolumeError> {
        let env = self.container_env(container);
        self.mounts_for_env(container, &env)
    }

    /// As `mounts_for`, with the container's environment as the caller resolved it.
    pub fn mounts_for_env(
        &self,
        container: &Container,
        env: &BTreeMap<String, String>,
    ) -> Result<Vec<BindMount>, VolumeError> {
        let mut mounts = vec![];
        for m in container.volume_mounts.iter().flatten() {
            let err = |message: String| VolumeError::new(&m.name, message);
            let prepared = self.volumes.get(&m.name).ok_or_else(|| {
                err(format!(
                    "volume {:?} of container {:?} is not among the pod's volumes",
                    m.name, container.name
                ))
            })?;
            if m.mount_propagation.as_deref().is_some_and(|p| p != "None") {
                // Mounts are private to the container here; propagation needs shared mounts.
                debug!(volume = %m.name, propagation = ?m.mount_propagation, "mountPropagation is not supported and is ignored");
            }
            let sub = match (m.sub_path.as_deref(), m.sub_path_expr.as_deref()) {
                (Some(s), _) if !s.is_empty() => s.to_string(),
                (_, Some(expr)) if !expr.is_empty() => {
                    let mut missing = vec![];
                    let expanded = subpath::expand(expr, env, &mut missing);
                    if !missing.is_empty() {
                        missing.sort();
                        return Err(err(format!("missing value for {}", missing.join(", "))));
                    }
                    expanded
                }
                _ => String::new(),
            };
            let source = if sub.is_empty() {
                prepared.path.clone()
            } else {
                let rel = subpath::check(&sub).map_err(err)?;
                subpath::resolve(&prepared.path, &rel).map_err(err)?
            };
            mounts.push(BindMount {
                source,
                destination: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false) || prepared.always_read_only,
            });
        }
        Ok(mounts)
    }

    /// The values subPathExpr may use when the caller has no resolved environment.
    fn container_env(&self, container: &Container) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for var in container.env.iter().flatten() {
            let value = if let Some(v) = &var.value {
                Some(v.clone())
            } else {
                var.value_from
                    .as_ref()
                    .and_then(|f| f.field_ref.as_ref())
                    .and_then(|f| match f.field_path.as_str() {
                        "spec.nodeName" => self.pod.spec.as_ref()?.node_name.clone(),
                        "spec.serviceAccountName" => {
                            self.pod.spec.as_ref()?.service_account_name.clone()
                        }
                        _ => downward::field_value(&self.pod, f).ok(),
                    })
            };
            if let Some(v) = value {
                env.insert(var.name.clone(), v);
            }
        }
        env
    }
}

#[cfg(test)]
mod tests;
