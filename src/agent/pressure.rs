//! The node's MemoryPressure, DiskPressure and PIDPressure conditions, from the same signals
//! and default hard-eviction thresholds kubelet's eviction manager uses:
//! `memory.available<100Mi`, `nodefs.available<10%`, `nodefs.inodesFree<5%`,
//! `imagefs.available<15%`, `imagefs.inodesFree<5%`. Kubelet sets no PID threshold by
//! default; a node is given `pid.available<10%` here so a fork bomb shows before it stops the
//! node. A condition that turned True stays so for kubelet's eviction-pressure transition
//! period (5 minutes) after the last observation, so it does not flap.
//!
//! The nodelifecycle controller turns these conditions into the `node.kubernetes.io/*-pressure`
//! NoSchedule taints, as kube's does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const MEMORY_AVAILABLE_MIN: u64 = 100 * 1024 * 1024;
pub const NODEFS_AVAILABLE_MIN_PERCENT: u64 = 10;
pub const IMAGEFS_AVAILABLE_MIN_PERCENT: u64 = 15;
pub const INODES_FREE_MIN_PERCENT: u64 = 5;
pub const PID_AVAILABLE_MIN_PERCENT: u64 = 10;
pub const TRANSITION_PERIOD: Duration = Duration::from_secs(5 * 60);

/// Space and inodes of one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsStats {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// One round of observations; None where the node cannot tell (then no pressure from it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observations {
    pub memory_available: Option<u64>,
    pub nodefs: Option<FsStats>,
    pub imagefs: Option<FsStats>,
    /// (processes in use, most the node may have).
    pub pids: Option<(u64, u64)>,
}

fn below_percent(part: u64, whole: u64, percent: u64) -> bool {
    whole > 0 && (part as u128) * 100 < (whole as u128) * (percent as u128)
}

fn fs_pressure(fs: &FsStats, min_percent: u64) -> bool {
    below_percent(fs.available_bytes, fs.capacity_bytes, min_percent)
        || below_percent(fs.inodes_free, fs.inodes, INODES_FREE_MIN_PERCENT)
}

impl Observations {
    pub fn memory_pressure(&self) -> bool {
        self.memory_available
            .is_some_and(|a| a < MEMORY_AVAILABLE_MIN)
    }

    pub fn disk_pressure(&self) -> bool {
        self.nodefs
            .is_some_and(|fs| fs_pressure(&fs, NODEFS_AVAILABLE_MIN_PERCENT))
            || self
                .imagefs
                .is_some_and(|fs| fs_pressure(&fs, IMAGEFS_AVAILABLE_MIN_PERCENT))
    }

    pub fn pid_pressure(&self) -> bool {
        self.pids.is_some_and(|(used, max)| {
            below_percent(max.saturating_sub(used), max, PID_AVAILABLE_MIN_PERCENT)
        })
    }
}

/// What a condition says, in kubelet's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    pub kind: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: &'static str,
}

fn memory(pressure: bool) -> Condition {
    if pressure {
        Condition {
            kind: "MemoryPressure",
            status: "True",
            reason: "KubeletHasInsufficientMemory",
            message: "kubelet has insufficient memory available",
        }
    } else {
        Condition {
            kind: "MemoryPressure",
            status: "False",
            reason: "KubeletHasSufficientMemory",
            message: "kubelet has sufficient memory available",
        }
    }
}

fn disk(pressure: bool) -> Condition {
    if pressure {
        Condition {
            kind: "DiskPressure",
            status: "True",
            reason: "KubeletHasDiskPressure",
            message: "kubelet has disk pressure",
        }
    } else {
        Condition {
            kind: "DiskPressure",
            status: "False",
            reason: "KubeletHasNoDiskPressure",
            message: "kubelet has no disk pressure",
        }
    }
}

fn pid(pressure: bool) -> Condition {
    if pressure {
        Condition {
            kind: "PIDPressure",
            status: "True",
            reason: "KubeletHasInsufficientPID",
            message: "kubelet has insufficient PID available",
        }
    } else {
        Condition {
            kind: "PIDPressure",
            status: "False",
            reason: "KubeletHasSufficientPID",
            message: "kubelet has sufficient PID available",
        }
    }
}

/// The three conditions over time (the transition period needs memory of past rounds).
#[derive(Debug, Default)]
pub struct Tracker {
    last_memory: Option<Instant>,
    last_disk: Option<Instant>,
    last_pid: Option<Instant>,
}

impl Tracker {
    pub fn conditions(&mut self, seen: &Observations, now: Instant) -> [Condition; 3] {
        let hold = |observed: bool, last: &mut Option<Instant>| {
            if observed {
                *last = Some(now);
            }
            last.is_some_and(|t| now.saturating_duration_since(t) < TRANSITION_PERIOD)
        };
        [
            memory(hold(seen.memory_pressure(), &mut self.last_memory)),
            disk(hold(seen.disk_pressure(), &mut self.last_disk)),
            pid(hold(seen.pid_pressure(), &mut self.last_pid)),
        ]
    }
}

/// Reads the signals on this node: memory from the node's cgroup when it is limited (else
/// the host's MemAvailable), the state directory's filesystem as nodefs, the image store's as
/// imagefs, processes against the node's pids limit or the kernel's pid_max.
pub fn observe(state_dir: &Path) -> Observations {
    let images: PathBuf = state_dir.join("images");
    Observations {
        memory_available: memory_available(),
        nodefs: fs_stats(state_dir),
        imagefs: fs_stats(if images.exists() { &images } else { state_dir }),
        pids: pids(),
    }
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn stat_value(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn meminfo_kb(meminfo: &str, key: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// kubelet's memory.available: capacity minus the working set (usage less inactive file
/// pages, which the kernel can drop).
pub fn available_from_cgroup(limit: u64, usage: u64, inactive_file: u64) -> u64 {
    limit.saturating_sub(usage.saturating_sub(inactive_file))
}

fn memory_available() -> Option<u64> {
    let host_total = read("/proc/meminfo").and_then(|m| meminfo_kb(&m, "MemTotal:"));
    let cgroup = if let Some(max) = read("/sys/fs/cgroup/memory.max") {
        // cgroup v2 (the node's own cgroup, through its private namespace).
        let limit = max.parse::<u64>().ok();
        let usage = read("/sys/fs/cgroup/memory.current").and_then(|u| u.parse().ok());
        let inactive =
            read("/sys/fs/cgroup/memory.stat").and_then(|s| stat_value(&s, "inactive_file"));
        limit.zip(usage).map(|(l, u)| (l, u, inactive.unwrap_or(0)))
    } else {
        let limit =
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes").and_then(|l| l.parse().ok());
        let usage =
            read("/sys/fs/cgroup/memory/memory.usage_in_bytes").and_then(|u| u.parse().ok());
        let inactive = read("/sys/fs/cgroup/memory/memory.stat")
            .and_then(|s| stat_value(&s, "total_inactive_file"));
        limit.zip(usage).map(|(l, u)| (l, u, inactive.unwrap_or(0)))
    };
    match cgroup {
        // A limit below the host's memory is the node's real capacity.
        Some((limit, usage, inactive)) if host_total.is_none_or(|t| limit < t) => {
            Some(available_from_cgroup(limit, usage, inactive))
        }
        _ => read("/proc/meminfo").and_then(|m| meminfo_kb(&m, "MemAvailable:")),
    }
}

fn fs_stats(path: &Path) -> Option<FsStats> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    Some(FsStats {
        capacity_bytes: s.blocks() * s.fragment_size(),
        available_bytes: s.blocks_available() * s.fragment_size(),
        inodes: s.files(),
        inodes_free: s.files_available(),
    })
}

fn pids() -> Option<(u64, u64)> {
    // A pids limit on the node's cgroup (docker --pids-limit) is what runs out first.
    let limited = read("/sys/fs/cgroup/pids.max")
        .zip(read("/sys/fs/cgroup/pids.current"))
        .or_else(|| {
            read("/sys/fs/cgroup/pids/pids.max").zip(read("/sys/fs/cgroup/pids/pids.current"))
        })
        .and_then(|(max, cur)| Some((cur.parse::<u64>().ok()?, max.parse::<u64>().ok()?)));
    if let Some((used, max)) = limited {
        return Some((used, max));
    }
    // As kubelet: the kernel's limit (pid_max, threads-max) against every process it runs.
    let pid_max: u64 = read("/proc/sys/kernel/pid_max")?.parse().ok()?;
    let threads_max = read("/proc/sys/kernel/threads-max").and_then(|t| t.parse::<u64>().ok());
    let max = threads_max.map_or(pid_max, |t| t.min(pid_max));
    // SAFETY: sysinfo fills the struct it is given.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sysinfo struct.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return None;
    }
    Some((u64::from(info.procs), max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(capacity: u64, available: u64) -> FsStats {
        FsStats {
            capacity_bytes: capacity,
            available_bytes: available,
            inodes: 1000,
            inodes_free: 900,
        }
    }

    #[test]
    fn thresholds_are_kubelets_defaults() {
        let mi = 1024 * 1024;
        let calm = Observations {
            memory_available: Some(100 * mi),
            nodefs: Some(fs(100, 10)),
            imagefs: Some(fs(100, 15)),
            pids: Some((90, 100)),
        };
        assert!(!calm.memory_pressure() && !calm.disk_pressure() && !calm.pid_pressure());
        let low_memory = Observations {
            memory_available: Some(100 * mi - 1),
            ..calm
        };
        assert!(low_memory.memory_pressure());
        let low_nodefs = Observations {
            nodefs: Some(fs(100, 9)),
            ..calm
        };
        assert!(low_nodefs.disk_pressure());
        let low_imagefs = Observations {
            imagefs: Some(fs(100, 14)),
            ..calm
        };
        assert!(low_imagefs.disk_pressure());
        let low_inodes = Observations {
            nodefs: Some(FsStats {
                inodes_free: 49,
                ..fs(100, 50)
            }),
            ..calm
        };
        assert!(low_inodes.disk_pressure());
        let many_pids = Observations {
            pids: Some((91, 100)),
            ..calm
        };
        assert!(many_pids.pid_pressure());
        // Unknown signals never raise a condition.
        assert!(!Observations::default().memory_pressure());
        assert!(!Observations::default().disk_pressure());
        assert!(!Observations::default().pid_pressure());
        assert_eq!(available_from_cgroup(1000, 700, 200), 500);
        assert_eq!(available_from_cgroup(1000, 1200, 0), 0);
    }

    #[test]
    fn pressure_holds_for_the_transition_period_with_kubelets_words() {
        let mut t = Tracker::default();
        let start = Instant::now();
        let pressed = Observations {
            memory_available: Some(1),
            ..Default::default()
        };
        let [m, d, p] = t.conditions(&pressed, start);
        assert_eq!(
            (m.status, m.reason, m.message),
            (
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available"
            )
        );
        assert_eq!((d.status, d.reason), ("False", "KubeletHasNoDiskPressure"));
        assert_eq!((p.status, p.reason), ("False", "KubeletHasSufficientPID"));
        let calm = Observations::default();
        let [m, _, _] = t.conditions(&calm, start + Duration::from_secs(60));
        assert_eq!(m.status, "True", "held within the transition period");
        let [m, _, _] = t.conditions(&calm, start + TRANSITION_PERIOD + Duration::from_secs(1));
        assert_eq!(
            (m.status, m.reason),
            ("False", "KubeletHasSufficientMemory")
        );
    }
}
