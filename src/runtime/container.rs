//! Containers on a node: create, start (through a helper process), signal, stop, remove.
//!
//! ```text
//! <state>/containers/<id>/container.json   what to run (ContainerConfig) + the image's layers
//! <state>/containers/<id>/state.json       status, pid, exit code, times (written by the helper)
//! <state>/containers/<id>/bundle/          the OCI bundle: config.json and rootfs/ (overlay mount)
//! <state>/containers/<id>/upper, work      the overlay's writable layer (on the node volume:
//!                                          overlayfs refuses an upper dir on the node's own
//!                                          overlay rootfs)
//! <state>/containers/<id>/etc/             hosts, hostname, resolv.conf, bind-mounted in
//! <state>/containers/<id>/container.log    stdout/stderr in the CRI log format
//! <state>/containers/<id>/helper.log       the helper's own log (why a start failed)
//! /run/kcluster/containers/<id>/           libcontainer's state (tmpfs: gone with the node)
//! ```
//!
//! The helper, `kcluster node container-run <dir>` ([`super::shim`]), is a separate
//! single-threaded process per container because libcontainer clones its caller: a clone of a
//! multi-threaded tokio process could inherit locks held by other threads. The helper stays the
//! container's parent, so it reaps it, records the exit status, and cleans up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::cgroups;
use super::images::{LayerFiles, Store, write_atomic};
use super::spec::{self, ContainerConfig, EtcFiles, SpecInput};

pub const DEFAULT_RUN_ROOT: &str = "/run/kcluster/containers";

/// What the helper needs beside the config: resolved once, at create.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub config: ContainerConfig,
    pub image_id: String,
    /// Overlay lower directories relative to `layers_dir`, lowest first, duplicates removed.
    pub lower_dirs: Vec<PathBuf>,
    pub layers_dir: PathBuf,
    /// Where libcontainer keeps its state for this node.
    pub run_root: PathBuf,
    /// The container's cgroup, relative to the node's cgroup root.
    pub cgroup_path: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Made, not started (or the helper has not got to it yet).
    Created,
    Running,
    /// Ended, or never started (then `error` says why).
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The exit code, or 128 + signal for a process killed by a signal (as Kubernetes shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// Why the container could not be started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl State {
    fn created() -> State {
        State {
            status: Status::Created,
            pid: None,
            helper_pid: None,
            started_at: None,
            finished_at: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            error: None,
        }
    }
}

/// Exit code Kubernetes shows for a container that could not be started (like runc's 128).
pub const START_FAILURE_EXIT_CODE: i32 = 128;

pub struct Runtime {
    containers: PathBuf,
    run_root: PathBuf,
    helper: PathBuf,
}

impl Runtime {
    /// The runtime of the node whose state lives in `state_dir`.
    pub fn new(state_dir: &Path) -> Result<Runtime> {
        let containers = state_dir.join("containers");
        std::fs::create_dir_all(&containers)
            .with_context(|| format!("cannot create {}", containers.display()))?;
        let run_root = std::env::var_os("KCLUSTER_RUN_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RUN_ROOT));
        Ok(Runtime {
            containers,
            run_root,
            helper: std::env::current_exe().context("cannot find the kcluster binary")?,
        })
    }

    /// The kcluster binary, which runs the per-container and per-exec helpers.
    pub fn helper_path(&self) -> &Path {
        &self.helper
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.containers.join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("container.log")
    }

    pub fn helper_log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join("helper.log")
    }

    /// Prepares everything to run `config` (bundle, spec, /etc files), without starting it.
    pub fn create(&self, store: &Store, config: ContainerConfig) -> Result<()> {
        config.validate()?;
        let dir = self.dir(&config.id);
        if dir.exists() {
            bail!(
                "a container {} already exists on this node; remove it first",
                config.id
            );
        }
        let image = store.resolve(&config.image)?.with_context(|| {
            format!(
                "image {} is not in this node's store; load it with `kcluster image load {}`",
                config.image, config.image
            )
        })?;
        let image_config = store.config(&image)?;
        let files = LayerFiles {
            store,
            layers: &image.layers,
        };
        let user = spec::resolve_user(
            image_config.config.user.as_deref(),
            config.user.as_ref(),
            &files,
        )?;
        let result = (|| -> Result<()> {
            for sub in ["bundle/rootfs", "upper", "work", "etc"] {
                std::fs::create_dir_all(dir.join(sub))
                    .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
            }
            let etc = EtcFiles {
                hosts: dir.join("etc/hosts"),
                hostname: dir.join("etc/hostname"),
                resolv_conf: dir.join("etc/resolv.conf"),
            };
            std::fs::write(&etc.hostname, format!("{}\n", config.hostname))?;
            let hosts = config.hosts.clone().unwrap_or_else(|| {
                format!(
                    "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
                    config.hostname
                )
            });
            std::fs::write(&etc.hosts, hosts)?;
            let resolv = match &config.resolv_conf {
                Some(text) => text.clone(),
                None => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            };
            std::fs::write(&etc.resolv_conf, resolv)?;
            let spec = spec::build(&SpecInput {
                config: &config,
                image: &image_config,
                user: &user,
                rootfs: Path::new("rootfs"),
                etc: &etc,
                swap_accounting: cgroups::swap_accounting(),
            })?;
            spec::check(&spec)?;
            write_atomic(
                &dir.join("bundle/config.json"),
                &serde_json::to_vec_pretty(&spec).context("cannot encode the spec")?,
            )?;
            let mut lower_dirs: Vec<PathBuf> = Vec::new();
            // overlayfs lists lower dirs top first; a layer repeated lower down adds nothing
            // the upper copy does not already give, so only the top-most copy is kept.
            for diff_id in image.layers.iter().rev() {
                let rel = Store::layer_relative(diff_id)?;
                if !lower_dirs.contains(&rel) {
                    lower_dirs.push(rel);
                }
            }
            lower_dirs.reverse();
            let record = Record {
                cgroup_path: format!(
                    "{}/{}",
                    config.cgroup_parent.trim_end_matches('/'),
                    config.id
                ),
                config: config.clone(),
                image_id: image.id.clone(),
                lower_dirs,
                layers_dir: store.layers_dir().to_path_buf(),
                run_root: self.run_root.clone(),
                created_at: jiff::Timestamp::now().to_string(),
            };
            write_atomic(
                &dir.join("container.json"),
                &serde_json::to_vec_pretty(&record).context("cannot encode the record")?,
            )?;
            write_state(&dir, &State::created())
        })();
        if let Err(e) = result {
            super::images::remove_tree(&dir);
            return Err(e.context(format!("cannot create container {}", config.id)));
        }
        info!(id = %config.id, image = %image.id, "container created");
        Ok(())
    }

    /// Starts the helper that runs the container; returns it (the caller reaps it). The
    /// container is running once [`Runtime::state`] says so (or has exited, or failed).
    pub fn start(&self, id: &str) -> Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        let dir = self.dir(id);
        let state = self.state(id)?;
        if state.status != Status::Created || state.helper_pid.is_some() {
            bail!("container {id} was already started");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.helper_log_path(id))
            .context("cannot open the helper log")?;
        let child = std::process::Command::new(&self.helper)
            .args(["node", "container-run"])
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            // Its own process group: a signal to the caller's group does not reach it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start the helper for container {id}"))?;
        debug!(%id, helper = child.id(), "container helper started");
        Ok(child)
    }

    pub fn record(&self, id: &str) -> Result<Record> {
        let path = self.dir(id).join("container.json");
        let data =
            std::fs::read(&path).with_context(|| format!("no container {id} on this node"))?;
        serde_json::from_slice(&data).with_context(|| format!("{} is damaged", path.display()))
    }

    pub fn state(&self, id: &str) -> Result<State> {
        read_state(&self.dir(id))
    }

    /// Every container on the node, by id.
    pub fn list(&self) -> Result<Vec<(String, State)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.containers)
            .with_context(|| format!("cannot list {}", self.containers.display()))?
        {
            let id = entry?.file_name().to_string_lossy().into_owned();
            if let Ok(state) = self.state(&id) {
                out.push((id, state));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Sends a signal to the container's first process. Returns false when it is not running.
    pub fn signal(&self, id: &str, signal: i32) -> Result<bool> {
        let state = self.state(id)?;
        let (Status::Running, Some(pid)) = (state.status, state.pid) else {
            return Ok(false);
        };
        let Some(pidfd) = pidfd_open(pid) else {
            return Ok(false);
        };
        // The helper records the exit before it reaps the process: while the state still says
        // running, the pid has not been reused and the pidfd is the container's.
        if self.state(id)?.status != Status::Running {
            return Ok(false);
        }
        pidfd_send_signal(&pidfd, signal)
            .with_context(|| format!("cannot signal container {id}"))?;
        debug!(%id, signal, "signal sent");
        Ok(true)
    }

    /// Waits until the container is no longer created/running, or the time is up.
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<State> {
        let deadline = Instant::now() + timeout;
        loop {
            let state = self.state(id)?;
            if state.status == Status::Exited || Instant::now() >= deadline {
                return Ok(state);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (or the image's stop signal), then SIGKILL after `grace`.
    pub fn stop(&self, id: &str, grace: Duration) -> Result<State> {
        let stop_signal = libc::SIGTERM;
        if self.signal(id, stop_signal)? {
            let state = self.wait(id, grace)?;
            if state.status == Status::Exited {
                return Ok(state);
            }
            info!(%id, grace_s = grace.as_secs_f64(), "container ignored SIGTERM: killing it");
        }
        self.signal(id, libc::SIGKILL)?;
        let state = self.wait(id, Duration::from_secs(10))?;
        if state.status != Status::Exited && state.pid.is_some() {
            bail!("container {id} did not stop within 10 s of SIGKILL");
        }
        Ok(state)
    }

    /// Removes a container that is not running: what its helper left mounted, libcontainer's
    /// state and cgroup if the helper died, and its directory.
    pub fn remove(&self, id: &str) -> Result<()> {
        let dir = self.dir(id);
        if !dir.exists() {
            return Ok(());
        }
        if let Ok(state) = self.state(id)
            && state.status == Status::Running
        {
            bail!("container {id} is running; stop it first");
        }
        let rootfs = dir.join("bundle/rootfs");
        if is_mount_point(&rootfs) {
            unmount(&rootfs);
        }
        if let Ok(record) = self.record(id) {
            let lc = record.run_root.join(id);
            if lc.exists() {
                match libcontainer::container::Container::load(lc.clone()) {
                    Ok(mut container) => {
                        if let Err(e) = container.delete(true) {
                            warn!(%id, error = %e, "cannot delete libcontainer's state");
                        }
                    }
                    Err(e) => warn!(%id, error = %e, "cannot load libcontainer's state"),
                }
                super::images::remove_tree(&lc);
            }
        }
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
        info!(%id, "container removed");
        Ok(())
    }
}

pub fn read_state(dir: &Path) -> Result<State> {
    let path = dir.join("state.json");
    let data = std::fs::read(&path)
        .with_context(|| format!("no container at {} (no state.json)", dir.display()))?;
    serde_json::from_slice(&data).with_context(|| format!("{} is damaged", path.display()))
}

pub fn write_state(dir: &Path, state: &State) -> Result<()> {
    write_atomic(
        &dir.join("state.json"),
        &serde_json::to_vec_pretty(state).context("cannot encode the state")?,
    )
}

/// A pidfd: a handle on one process that a reused pid cannot alias.
pub struct PidFd(std::os::fd::OwnedFd);

impl std::os::fd::AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

pub fn pidfd_open(pid: i32) -> Option<PidFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Some(PidFd(unsafe {
        std::os::fd::OwnedFd::from_raw_fd(fd as i32)
    }))
}

pub fn pidfd_send_signal(pidfd: &PidFd, signal: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid pidfd, a signal number, no siginfo, no flags.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.0.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        // The process is gone already: nothing to signal.
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

pub fn is_mount_point(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|point| point == wanted)
}

/// Unmounts, lazily if something still holds the mount.
pub fn unmount(path: &Path) {
    use nix::mount::{MntFlags, umount2};
    if let Err(e) = umount2(path, MntFlags::empty()) {
        debug!(path = %path.display(), error = %e, "unmount failed; detaching");
        if let Err(e) = umount2(path, MntFlags::MNT_DETACH) {
            warn!(path = %path.display(), error = %e, "cannot unmount");
        }
    }
}
