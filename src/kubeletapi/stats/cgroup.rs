//! CPU and memory statistics of one cgroup, read from its files as cadvisor reads them.
//!
//! Paths are relative to the node's cgroup root (the node container's own cgroup, seen through
//! its private cgroup namespace): "" is the whole node, `/kubepods/.../pod<uid>` a pod,
//! `<pod cgroup>/<container id>` a container.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::runtime::cgroups::{self, Version};

/// Memory of a cgroup in bytes, with the working set as kubelet reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    pub usage: u64,
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    /// The cgroup's own limit; None when unlimited.
    pub limit: Option<u64>,
}

/// Cumulative CPU time the cgroup's processes used, in nanoseconds; None when the cgroup (or its
/// accounting) is not there.
pub fn cpu_usage_ns(rel: &str) -> Option<u64> {
    match cgroups::version() {
        Version::V1 => read_u64(&v1_dir("cpuacct", rel).join("cpuacct.usage")),
        Version::V2 => {
            let text = std::fs::read_to_string(v2_dir(rel).join("cpu.stat")).ok()?;
            cpu_stat_usage_ns(&text)
        }
    }
}

pub fn memory(rel: &str) -> Option<Memory> {
    match cgroups::version() {
        Version::V1 => {
            let dir = v1_dir("memory", rel);
            let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
            let stat = parse_flat_keyed(&std::fs::read_to_string(dir.join("memory.stat")).ok()?);
            let limit = read_u64(&dir.join("memory.limit_in_bytes"));
            Some(v1_memory(usage, &stat, limit))
        }
        Version::V2 => {
            let dir = v2_dir(rel);
            let usage = read_u64(&dir.join("memory.current"))?;
            let stat = parse_flat_keyed(&std::fs::read_to_string(dir.join("memory.stat")).ok()?);
            // "max" does not parse: unlimited.
            let limit = read_u64(&dir.join("memory.max"));
            Some(v2_memory(usage, &stat, limit))
        }
    }
}

/// The working set: usage less the inactive file cache (which the kernel reclaims first), as
/// cadvisor computes it and kubelet's eviction and metrics use it.
pub fn working_set(usage: u64, inactive_file: u64) -> u64 {
    usage.saturating_sub(inactive_file)
}

/// Kernels report "no limit" on v1 as the largest page-aligned i64.
const V1_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

fn v1_memory(usage: u64, stat: &HashMap<String, u64>, limit: Option<u64>) -> Memory {
    // The total_ counters include the cgroup's descendants (a pod's containers); the plain ones
    // do not.
    let get = |name: &str| {
        stat.get(&format!("total_{name}"))
            .or_else(|| stat.get(name))
            .copied()
            .unwrap_or(0)
    };
    Memory {
        usage,
        working_set: working_set(usage, get("inactive_file")),
        rss: get("rss"),
        page_faults: get("pgfault"),
        major_page_faults: get("pgmajfault"),
        limit: limit.filter(|l| *l < V1_UNLIMITED),
    }
}

fn v2_memory(usage: u64, stat: &HashMap<String, u64>, limit: Option<u64>) -> Memory {
    let get = |name: &str| stat.get(name).copied().unwrap_or(0);
    Memory {
        usage,
        working_set: working_set(usage, get("inactive_file")),
        rss: get("anon"),
        page_faults: get("pgfault"),
        major_page_faults: get("pgmajfault"),
        limit,
    }
}

/// `usage_usec` of a v2 `cpu.stat`, in nanoseconds.
fn cpu_stat_usage_ns(text: &str) -> Option<u64> {
    parse_flat_keyed(text)
        .get("usage_usec")
        .map(|us| us.saturating_mul(1000))
}

/// "key value" lines (memory.stat, cpu.stat).
fn parse_flat_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn v1_dir(controller: &str, rel: &str) -> PathBuf {
    Path::new(cgroups::ROOT)
        .join(controller)
        .join(rel.trim_start_matches('/'))
}

fn v2_dir(rel: &str) -> PathBuf {
    Path::new(cgroups::ROOT).join(rel.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_set_leaves_out_inactive_file_cache() {
        assert_eq!(working_set(100 << 20, 30 << 20), 70 << 20);
        // Counters are read one after the other: a racing reclaim must not wrap around.
        assert_eq!(working_set(10, 20), 0);
    }

    #[test]
    fn v1_memory_prefers_hierarchical_counters() {
        let stat = parse_flat_keyed(
            "cache 4096\nrss 8192\ninactive_file 1000\npgfault 7\npgmajfault 1\n\
             total_cache 40960\ntotal_rss 81920\ntotal_inactive_file 20480\n\
             total_pgfault 70\ntotal_pgmajfault 2\n",
        );
        let m = v1_memory(204800, &stat, Some(V1_UNLIMITED));
        assert_eq!(m.working_set, 204800 - 20480);
        assert_eq!(m.rss, 81920);
        assert_eq!((m.page_faults, m.major_page_faults), (70, 2));
        assert_eq!(m.limit, None);
        assert_eq!(v1_memory(1, &stat, Some(512 << 20)).limit, Some(512 << 20));
    }

    #[test]
    fn v2_counters_are_read() {
        let stat = parse_flat_keyed("anon 3000\nfile 9000\ninactive_file 5000\npgfault 9\n");
        let m = v2_memory(12000, &stat, None);
        assert_eq!(m.working_set, 7000);
        assert_eq!(m.rss, 3000);
        assert_eq!(m.page_faults, 9);
        assert_eq!(
            cpu_stat_usage_ns("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
            Some(1_500_000)
        );
        assert_eq!(cpu_stat_usage_ns("nr_periods 0\n"), None);
    }
}
