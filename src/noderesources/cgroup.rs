//! The node's own CPU and memory limits, read from its cgroup.
//!
//! Nodes run with a private cgroup namespace, so the node container's cgroup is the root of
//! what it sees under /sys/fs/cgroup: on cgroup v2 `cpu.max` and `memory.max` there; on v1
//! `cpu/cpu.cfs_quota_us` with `cpu/cpu.cfs_period_us` and `memory/memory.limit_in_bytes`.
//! `docker update` rewrites those files in place, so reading them again sees a new limit.

use std::path::Path;

/// What the cgroup allows; None where it sets no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// v1 writes "no limit" as the largest page-aligned signed 64-bit value; anything this large
/// is no limit on any machine.
const V1_UNLIMITED_FROM: u64 = 1 << 62;

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The limits of the cgroup hierarchy mounted at `root` (normally /sys/fs/cgroup).
pub fn read_limits(root: &Path) -> CgroupLimits {
    if root.join("cgroup.controllers").exists() {
        CgroupLimits {
            cpu_millis: read(&root.join("cpu.max")).and_then(|t| parse_v2_cpu_max(&t)),
            memory_bytes: read(&root.join("memory.max")).and_then(|t| parse_v2_memory_max(&t)),
        }
    } else {
        CgroupLimits {
            cpu_millis: read(&root.join("cpu/cpu.cfs_quota_us"))
                .zip(read(&root.join("cpu/cpu.cfs_period_us")))
                .and_then(|(quota, period)| parse_v1_cpu(&quota, &period)),
            memory_bytes: read(&root.join("memory/memory.limit_in_bytes"))
                .and_then(|t| parse_v1_memory_limit(&t)),
        }
    }
}

/// v2 `cpu.max`: "<quota> <period>" in microseconds, or "max <period>".
pub fn parse_v2_cpu_max(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let quota: u64 = parts.next()?.parse().ok()?;
    let period: u64 = parts.next()?.parse().ok()?;
    (period > 0).then(|| (quota * 1000).div_ceil(period))
}

/// v2 `memory.max`: bytes, or "max".
pub fn parse_v2_memory_max(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// v1 `cpu.cfs_quota_us` (-1: none) and `cpu.cfs_period_us`.
pub fn parse_v1_cpu(quota: &str, period: &str) -> Option<u64> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: i64 = period.trim().parse().ok()?;
    (quota > 0 && period > 0).then(|| (quota as u64 * 1000).div_ceil(period as u64))
}

/// v1 `memory.limit_in_bytes`.
pub fn parse_v1_memory_limit(text: &str) -> Option<u64> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&b| b < V1_UNLIMITED_FROM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_files() {
        assert_eq!(parse_v2_cpu_max("max 100000"), None);
        assert_eq!(parse_v2_cpu_max("150000 100000"), Some(1500));
        assert_eq!(parse_v2_cpu_max("100000 100000\n"), Some(1000));
        assert_eq!(parse_v2_memory_max("max"), None);
        assert_eq!(parse_v2_memory_max("1073741824\n"), Some(1 << 30));
    }

    #[test]
    fn v1_files() {
        assert_eq!(parse_v1_cpu("-1", "100000"), None);
        assert_eq!(parse_v1_cpu("200000", "100000"), Some(2000));
        assert_eq!(parse_v1_cpu("50000\n", "100000\n"), Some(500));
        assert_eq!(parse_v1_memory_limit("9223372036854771712"), None);
        assert_eq!(parse_v1_memory_limit("1073741824\n"), Some(1 << 30));
    }

    fn write(root: &Path, file: &str, text: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn reads_a_v2_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cgroup.controllers", "cpu memory pids\n");
        write(dir.path(), "cpu.max", "100000 100000\n");
        write(dir.path(), "memory.max", "1073741824\n");
        assert_eq!(
            read_limits(dir.path()),
            CgroupLimits {
                cpu_millis: Some(1000),
                memory_bytes: Some(1 << 30)
            }
        );
        write(dir.path(), "cpu.max", "max 100000\n");
        write(dir.path(), "memory.max", "max\n");
        assert_eq!(read_limits(dir.path()), CgroupLimits::default());
    }

    #[test]
    fn reads_a_v1_hierarchy() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "cpu/cpu.cfs_quota_us", "150000\n");
        write(dir.path(), "cpu/cpu.cfs_period_us", "100000\n");
        write(dir.path(), "memory/memory.limit_in_bytes", "2147483648\n");
        assert_eq!(
            read_limits(dir.path()),
            CgroupLimits {
                cpu_millis: Some(1500),
                memory_bytes: Some(2 << 30)
            }
        );
        write(dir.path(), "cpu/cpu.cfs_quota_us", "-1\n");
        write(
            dir.path(),
            "memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        assert_eq!(read_limits(dir.path()), CgroupLimits::default());
    }
}
