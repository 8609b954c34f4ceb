//! The node's MemoryPressure, DiskPressure and PIDPressure conditions, from the signals
//! kubelet's eviction manager watches: `memory.available`, `nodefs.available`,
//! `nodefs.inodesFree`, `imagefs.available`, `imagefs.inodesFree`, `pid.available`.
//!
//! Thresholds are kubelet's `--eviction-hard` syntax, read from `KCLUSTER_EVICTION_HARD` (which
//! `kcluster create` passes to its nodes). Unset, they are kind's: `memory.available<100Mi` and
//! no disk thresholds (a node's disk is the host's disk: kubelet defaults of 10%/15% would taint
//! every node of a laptop whose disk is 85% full), plus `pid.available<10%` so a fork bomb
//! shows before it stops the node. A condition that turned True stays so for kubelet's
//! eviction-pressure transition period (5 minutes) after the last observation.
//!
//! The nodelifecycle controller turns these conditions into the `node.kubernetes.io/*-pressure`
//! NoSchedule taints, as kube's does.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const TRANSITION_PERIOD: Duration = Duration::from_secs(5 * 60);
/// kind's thresholds (see the module comment).
pub const DEFAULT_EVICTION_HARD: &str = "memory.available<100Mi,pid.available<10%";
/// One threshold: below a share of the capacity, or below an absolute amount.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Percent(f64),
    Amount(u64),
}

impl Threshold {
    fn crossed(self, available: u64, capacity: u64) -> bool {
        match self {
            Threshold::Percent(p) => {
                capacity > 0 && (available as f64) < capacity as f64 * p / 100.0
            }
            Threshold::Amount(a) => available < a,
        }
    }
}

/// Hard-eviction thresholds by signal; None: the signal raises no condition.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Thresholds {
    pub memory_available: Option<Threshold>,
    pub nodefs_available: Option<Threshold>,
    pub nodefs_inodes_free: Option<Threshold>,
    pub imagefs_available: Option<Threshold>,
    pub imagefs_inodes_free: Option<Threshold>,
    pub pid_available: Option<Threshold>,
}

impl Thresholds {
    /// Parses kubelet's `--eviction-hard` form: `signal<value` joined by commas, values a
    /// percentage or a quantity (`100Mi`, `1G`, a plain number).
    pub fn parse(text: &str) -> Result<Thresholds, String> {
        let mut t = Thresholds::default();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (signal, value) = item
                .split_once('<')
                .ok_or_else(|| format!("eviction threshold {item:?} must be <signal><<value>"))?;
            let value = value.trim();
            let threshold = if let Some(p) = value.strip_suffix('%') {
                let p: f64 = p
                    .parse()
                    .map_err(|_| format!("eviction threshold {item:?}: bad percentage"))?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(format!(
                        "eviction threshold {item:?}: percentage out of range"
                    ));
                }
                // 0% is kind's way to switch a signal off.
                (p > 0.0).then_some(Threshold::Percent(p))
            } else {
                let amount = parse_quantity(value)
                    .ok_or_else(|| format!("eviction threshold {item:?}: bad quantity"))?;
                (amount > 0).then_some(Threshold::Amount(amount))
            };
            let slot = match signal.trim() {
                "memory.available" => &mut t.memory_available,
                "nodefs.available" => &mut t.nodefs_available,
                "nodefs.inodesFree" => &mut t.nodefs_inodes_free,
                "imagefs.available" => &mut t.imagefs_available,
                "imagefs.inodesFree" => &mut t.imagefs_inodes_free,
                "pid.available" => &mut t.pid_available,
                other => return Err(format!("unknown eviction signal {other:?}")),
            };
            *slot = threshold;
        }
        Ok(t)
    }

    /// From `KCLUSTER_EVICTION_HARD`, else [`DEFAULT_EVICTION_HARD`]; a bad value is logged
    /// and the default used.
    pub fn from_env() -> Thresholds {
        let text = std::env::var("KCLUSTER_EVICTION_HARD")
            .unwrap_or_else(|_| DEFAULT_EVICTION_HARD.to_string());
        Thresholds::parse(&text).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "KCLUSTER_EVICTION_HARD is not valid; using the defaults");
            Thresholds::parse(DEFAULT_EVICTION_HARD).unwrap_or_default()
        })
    }
}

/// A Kubernetes quantity as a whole number (`100Mi`, `1G`, `500`).
fn parse_quantity(text: &str) -> Option<u64> {
    const UNITS: [(&str, u64); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    for (suffix, factor) in UNITS {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<u64>().ok()?.checked_mul(factor);
        }
    }
    text.parse().ok()
}

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
    /// (available, capacity) bytes.
    pub memory_available: Option<(u64, u64)>,
    pub nodefs: Option<FsStats>,
    pub imagefs: Option<FsStats>,
    /// (processes in use, most the node may have).
    pub pids: Option<(u64, u64)>,
}

fn crossed(t: Option<Threshold>, available: u64, capacity: u64) -> bool {
    t.is_some_and(|t| t.crossed(available, capacity))
}

fn fs_pressure(fs: &FsStats, space: Option<Threshold>, inodes: Option<Threshold>) -> bool {
    crossed(space, fs.available_bytes, fs.capacity_bytes)
        || crossed(inodes, fs.inodes_free, fs.inodes)
}

impl Observations {
    pub fn memory_pressure(&self, t: &Thresholds) -> bool {
        self.memory_available
            .is_some_and(|(a, c)| crossed(t.memory_available, a, c))
    }

    pub fn disk_pressure(&self, t: &Thresholds) -> bool {
        self.nodefs
            .is_some_and(|fs| fs_pressure(&fs, t.nodefs_available, t.nodefs_inodes_free))
            || self
                .imagefs
                .is_some_and(|fs| fs_pressure(&fs, t.imagefs_available, t.imagefs_inodes_free))
    }

    pub fn pid_pressure(&self, t: &Thresholds) -> bool {
        self.pids
            .is_some_and(|(used, max)| crossed(t.pid_available, max.saturating_sub(used), max))
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
    pub thresholds: Thresholds,
    last_memory: Option<Instant>,
    last_disk: Option<Instant>,
    last_pid: Option<Instant>,
}

impl Tracker {
    pub fn new(thresholds: Thresholds) -> Tracker {
        Tracker {
            thresholds,
            ..Default::default()
        }
    }

    pub fn conditions(&mut self, seen: &Observations, now: Instant) -> [Condition; 3] {
        let t = self.thresholds;
        let hold = |observed: bool, last: &mut Option<Instant>| {
            if observed {
                *last = Some(now);
            }
            last.is_some_and(|t| now.saturating_duration_since(t) < TRANSITION_PERIOD)
        };
        [
            memory(hold(seen.memory_pressure(&t), &mut self.last_memory)),
            disk(hold(seen.disk_pressure(&t), &mut self.last_disk)),
            pid(hold(seen.pid_pressure(&t), &mut self.last_pid)),
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

fn memory_available() -> Option<(u64, u64)> {
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
            Some((available_from_cgroup(limit, usage, inactive), limit))
        }
        _ => {
            let meminfo = read("/proc/meminfo")?;
            Some((meminfo_kb(&meminfo, "MemAvailable:")?, host_total?))
        }
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

    /// kubelet's own defaults, for those who want disk pressure as on a real node.
    const KUBELET_EVICTION_HARD: &str = "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%,imagefs.inodesFree<5%";

    fn fs(capacity: u64, available: u64) -> FsStats {
        FsStats {
            capacity_bytes: capacity,
            available_bytes: available,
            inodes: 1000,
            inodes_free: 900,
        }
    }

    #[test]
    fn kubelet_thresholds_raise_each_condition_at_its_signal() {
        let t = Thresholds::parse(KUBELET_EVICTION_HARD).unwrap();
        let t = Thresholds {
            pid_available: Some(Threshold::Percent(10.0)),
            ..t
        };
        let mi = 1024 * 1024;
        let calm = Observations {
            memory_available: Some((100 * mi, 1000 * mi)),
            nodefs: Some(fs(100, 10)),
            imagefs: Some(fs(100, 15)),
            pids: Some((90, 100)),
        };
        assert!(!calm.memory_pressure(&t) && !calm.disk_pressure(&t) && !calm.pid_pressure(&t));
        let low_memory = Observations {
            memory_available: Some((100 * mi - 1, 1000 * mi)),
            ..calm
        };
        assert!(low_memory.memory_pressure(&t));
        let low_nodefs = Observations {
            nodefs: Some(fs(100, 9)),
            ..calm
        };
        assert!(low_nodefs.disk_pressure(&t));
        let low_imagefs = Observations {
            imagefs: Some(fs(100, 14)),
            ..calm
        };
        assert!(low_imagefs.disk_pressure(&t));
        let low_inodes = Observations {
            nodefs: Some(FsStats {
                inodes_free: 49,
                ..fs(100, 50)
            }),
            ..calm
        };
        assert!(low_inodes.disk_pressure(&t));
        let many_pids = Observations {
            pids: Some((91, 100)),
            ..calm
        };
        assert!(many_pids.pid_pressure(&t));
        // Unknown signals never raise a condition.
        let unknown = Observations::default();
        assert!(!unknown.memory_pressure(&t) && !unknown.disk_pressure(&t));
        assert!(!unknown.pid_pressure(&t));
        assert_eq!(available_from_cgroup(1000, 700, 200), 500);
        assert_eq!(available_from_cgroup(1000, 1200, 0), 0);
    }

    #[test]
    fn the_default_like_kind_watches_memory_and_pids_but_not_the_hosts_disk() {
        let t = Thresholds::parse(DEFAULT_EVICTION_HARD).unwrap();
        let full_disk = Observations {
            nodefs: Some(fs(100, 1)),
            imagefs: Some(fs(100, 1)),
            ..Default::default()
        };
        assert!(!full_disk.disk_pressure(&t));
        assert_eq!(t.memory_available, Some(Threshold::Amount(100 << 20)));
        assert_eq!(t.pid_available, Some(Threshold::Percent(10.0)));
        // kind's 0% switches a signal off; quantities and percentages both parse.
        let off = Thresholds::parse("nodefs.available<0%, memory.available<1Gi").unwrap();
        assert_eq!(off.nodefs_available, None);
        assert_eq!(off.memory_available, Some(Threshold::Amount(1 << 30)));
        assert_eq!(
            Thresholds::parse("memory.available<500M")
                .unwrap()
                .memory_available,
            Some(Threshold::Amount(500_000_000))
        );
        for bad in [
            "memory.available>1Gi",
            "disk.free<1%",
            "nodefs.available<150%",
            "memory.available<lots",
        ] {
            assert!(Thresholds::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pressure_holds_for_the_transition_period_with_kubelets_words() {
        let mut t = Tracker::new(Thresholds::parse(DEFAULT_EVICTION_HARD).unwrap());
        let start = Instant::now();
        let pressed = Observations {
            memory_available: Some((1, 1 << 30)),
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
