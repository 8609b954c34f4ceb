//! The node's cgroups, as containers need them.
//!
//! Nodes run with a private cgroup namespace, so the node's own cgroup is the root of what it
//! sees, on cgroup v1 (one hierarchy per controller under /sys/fs/cgroup) and v2 (one unified
//! hierarchy). Container cgroups are made under it, which keeps pods inside the node container's
//! limits and lets `docker stop` of the node take them down.
//!
//! Docker mounts the hierarchies read-only in a container that is not `--privileged` (our
//! capability fallback); a bind remount makes them writable (CAP_SYS_ADMIN suffices). On v2 a
//! cgroup that holds processes cannot hand controllers to its children ("no internal
//! processes"), so the node's own processes move into a leaf, `/init`, before the controllers
//! are enabled for children — as kind's and Docker-in-Docker's entrypoints do.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tracing::{debug, info, warn};

pub const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

pub fn version() -> Version {
    match nix::sys::statfs::statfs(ROOT) {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => Version::V2,
        _ => Version::V1,
    }
}

/// cgroup mounts under /sys/fs/cgroup from mountinfo: (mount point, mounted read-only).
fn cgroup_mounts() -> Result<Vec<(PathBuf, bool)>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let fstype = right.split(' ').next()?;
            let point = *fields.get(4)?;
            let options = *fields.get(5)?;
            (fstype.starts_with("cgroup") && point.starts_with(ROOT))
                .then(|| (PathBuf::from(point), options.split(',').any(|o| o == "ro")))
        })
        .collect())
}

/// Makes the cgroup hierarchies writable and, on v2, ready for child cgroups with controllers.
/// Idempotent and safe to run concurrently (each container's helper runs it).
pub fn prepare() -> Result<()> {
    use nix::mount::{MsFlags, mount};
    for (point, read_only) in cgroup_mounts()? {
        if !read_only {
            continue;
        }
        let flags = MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(None::<&str>, &point, None::<&str>, flags, None::<&str>).with_context(|| {
            format!(
                "cannot make {} writable (the node needs CAP_SYS_ADMIN to run containers)",
                point.display()
            )
        })?;
        debug!(mount = %point.display(), "cgroup hierarchy remounted read-write");
    }
    if version() == Version::V2 {
        enable_v2_controllers(Path::new(ROOT))?;
    }
    Ok(())
}

fn read_words(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn enable_v2_controllers(root: &Path) -> Result<()> {
    let available = read_words(&root.join("cgroup.controllers"));
    let enabled = read_words(&root.join("cgroup.subtree_control"));
    let wanted: Vec<&str> = ["cpu", "cpuset", "io", "memory", "pids", "hugetlb"]
        .into_iter()
        .filter(|c| available.iter().any(|a| a == c) && !enabled.iter().any(|e| e == c))
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let init = root.join("init");
    std::fs::create_dir_all(&init).with_context(|| format!("cannot create {}", init.display()))?;
    let control = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    // Processes may appear while we move them (the node forks helpers): retry a few times.
    let mut last = None;
    for _ in 0..20 {
        for pid in read_words(&root.join("cgroup.procs")) {
            // A process that exited meanwhile is fine to miss.
            let _ = std::fs::write(init.join("cgroup.procs"), &pid);
        }
        match std::fs::write(root.join("cgroup.subtree_control"), &control) {
            Ok(()) => {
                info!(controllers = %control, "cgroup v2 controllers enabled for containers");
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(last
        .map(anyhow::Error::from)
        .unwrap_or_else(|| anyhow::anyhow!("unknown error")))
    .with_context(|| format!("cannot enable the cgroup controllers {control} for containers"))
}

/// Whether the kernel accounts swap per cgroup; then a memory limit also caps swap (Kubernetes
/// runs containers without swap).
pub fn swap_accounting() -> bool {
    match version() {
        Version::V1 => Path::new(ROOT)
            .join("memory/memory.memsw.limit_in_bytes")
            .exists(),
        Version::V2 => Path::new(ROOT).join("init/memory.swap.max").exists(),
    }
}

/// Whether the kernel's OOM killer killed a process of the cgroup at `path` (relative to the
/// node's cgroup root). Read before the cgroup is removed.
pub fn oom_killed(path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    let file = match version() {
        Version::V1 => Path::new(ROOT)
            .join("memory")
            .join(rel)
            .join("memory.oom_control"),
        Version::V2 => Path::new(ROOT).join(rel).join("memory.events"),
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            warn!(file = %file.display(), error = %e, "cannot read OOM events");
            return false;
        }
    };
    text.lines().any(|line| {
        line.strip_prefix("oom_kill ")
            .and_then(|n| n.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
}
