//! What the node reports about itself: capacity from the container's cgroup limits (or the host),
//! addresses, and system info.

use std::path::Path;

/// Memory that kubelet's default hard-eviction threshold (memory.available<100Mi) keeps back.
const MEMORY_RESERVED_BYTES: u64 = 100 * 1024 * 1024;
pub const MAX_PODS: u32 = 110;

#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
}

impl Capacity {
    pub fn detect(state_dir: &Path) -> Capacity {
        let host_memory = host_memory_bytes().unwrap_or(0);
        let memory_bytes = cgroup_memory_limit()
            .filter(|limit| host_memory == 0 || *limit < host_memory)
            .unwrap_or(host_memory);
        let host_cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1)
            * 1000;
        let cpu_millis = cgroup_cpu_limit_millis()
            .map(|m| m.min(host_cpus))
            .unwrap_or(host_cpus);
        let ephemeral_storage_bytes = nix::sys::statvfs::statvfs(state_dir)
            .or_else(|_| nix::sys::statvfs::statvfs("/"))
            .map(|s| s.blocks() * s.fragment_size())
            .unwrap_or(0);
        Capacity {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes,
        }
    }

    pub fn allocatable(&self) -> Capacity {
        Capacity {
            cpu_millis: self.cpu_millis,
            memory_bytes: self.memory_bytes.saturating_sub(MEMORY_RESERVED_BYTES),
            // kubelet's default nodefs.available<10% eviction threshold.
            ephemeral_storage_bytes: self.ephemeral_storage_bytes / 10 * 9,
        }
    }
}

/// Kubernetes quantities as kubelet writes them: whole CPUs when possible, memory in Ki.
pub fn cpu_quantity(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

pub fn bytes_quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn host_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_total(&meminfo)
}

fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// With a private cgroup namespace the container's own cgroup is the root of what it sees.
fn cgroup_memory_limit() -> Option<u64> {
    if let Some(v2) = read_trimmed("/sys/fs/cgroup/memory.max") {
        return v2.parse().ok();
    }
    read_trimmed("/sys/fs/cgroup/memory/memory.limit_in_bytes")?
        .parse()
        .ok()
}

fn cgroup_cpu_limit_millis() -> Option<u64> {
    if let Some(v2) = read_trimmed("/sys/fs/cgroup/cpu.max") {
        return parse_cpu_max(&v2);
    }
    let quota: i64 = read_trimmed("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")?
        .parse()
        .ok()?;
    let period: i64 = read_trimmed("/sys/fs/cgroup/cpu/cpu.cfs_period_us")?
        .parse()
        .ok()?;
    (quota > 0 && period > 0).then(|| (quota as u64 * 1000).div_ceil(period as u64))
}

fn parse_cpu_max(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let quota: u64 = parts.next()?.parse().ok()?;
    let period: u64 = parts.next()?.parse().ok()?;
    (period > 0).then(|| (quota * 1000).div_ceil(period))
}

pub fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default()
}

/// A stable machine id kept in the node's volume (the scratch image has no /etc/machine-id).
pub fn machine_id(state_dir: &Path) -> String {
    let path = state_dir.join("machine-id");
    if let Some(id) = std::fs::read_to_string(&path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| s.len() == 32)
    {
        return id;
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let _ = std::fs::create_dir_all(state_dir);
    if let Err(e) = std::fs::write(&path, &id) {
        tracing::warn!(error = %e, path = %path.display(), "cannot persist the machine id");
    }
    id
}

/// The first IPv4 address that is not loopback: the node's address on the cluster network.
/// The node's address on the cluster network: eth0's, never the pods' gateway address (on `lo`).
pub fn internal_ip() -> Option<std::net::Ipv4Addr> {
    let candidates: Vec<(String, std::net::Ipv4Addr)> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|a| {
            let ip = a
                .address
                .and_then(|s| s.as_sockaddr_in().map(|sin| sin.ip()))?;
            Some((a.interface_name, ip))
        })
        .filter(|(name, ip)| !ip.is_loopback() && name != "lo")
        .collect();
    candidates
        .iter()
        .find(|(name, _)| name == "eth0")
        .or_else(|| candidates.first())
        .map(|(_, ip)| *ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        assert_eq!(parse_cpu_max("max 100000"), None);
        assert_eq!(parse_cpu_max("150000 100000"), Some(1500));
        assert_eq!(
            parse_meminfo_total("MemTotal:       24634040 kB\nMemFree: 1 kB\n"),
            Some(24634040 * 1024)
        );
        assert_eq!(cpu_quantity(2000), "2");
        assert_eq!(cpu_quantity(1500), "1500m");
        assert_eq!(bytes_quantity(2048), "2Ki");
    }

    #[test]
    fn allocatable_keeps_back_eviction_thresholds() {
        let c = Capacity {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            ephemeral_storage_bytes: 1000,
        };
        let a = c.allocatable();
        assert_eq!(a.memory_bytes, (1 << 30) - MEMORY_RESERVED_BYTES);
        assert_eq!(a.ephemeral_storage_bytes, 900);
        assert_eq!(a.cpu_millis, 2000);
    }
}
