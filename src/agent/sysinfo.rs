//! What the node reports about itself: capacity from the container's cgroup limits (or the host),
//! addresses, and system info.

use std::path::Path;

use std::sync::atomic::{AtomicI64, Ordering};

use crate::agent::pressure::Thresholds;
use crate::noderesources::{Reserved, allocatable, cgroup};

pub const MAX_PODS: u32 = 110;

#[derive(Debug, Clone, PartialEq)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
}

impl Capacity {
    /// The node's own cgroup limits where it has them (`kcluster create --node-cpus/--node-memory`,
    /// `kcluster node update`), else the host's. Cheap enough to call at every heartbeat, which
    /// is how a new limit reaches the Node.
    pub fn detect(state_dir: &Path) -> Capacity {
        let host_memory = host_memory_bytes().unwrap_or(0);
        let limits = cgroup::read_limits(Path::new(crate::runtime::cgroups::ROOT));
        let memory_bytes = limits
            .memory_bytes
            .filter(|limit| host_memory == 0 || *limit < host_memory)
            .unwrap_or(host_memory);
        let host_cpus = host_cpus() * 1000;
        let cpu_millis = limits
            .cpu_millis
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

    /// Capacity less system-reserved, kube-reserved and the hard-eviction thresholds.
    pub fn allocatable(&self, reserved: &Reserved, thresholds: &Thresholds) -> Capacity {
        let (cpu_millis, memory_bytes) =
            allocatable::allocatable(self.cpu_millis, self.memory_bytes, reserved, thresholds);
        Capacity {
            cpu_millis,
            memory_bytes,
            // kubelet's default nodefs.available<10% eviction threshold.
            ephemeral_storage_bytes: self.ephemeral_storage_bytes / 10 * 9,
        }
    }
}

/// The node's allocatable CPU and memory as pods see them (downward API defaults, OOM
/// scores); the agent refreshes it at every heartbeat.
#[derive(Debug, Default)]
pub struct LiveAllocatable {
    cpu_millis: AtomicI64,
    memory_bytes: AtomicI64,
}

impl LiveAllocatable {
    pub fn new(c: &Capacity) -> LiveAllocatable {
        let live = LiveAllocatable::default();
        live.set(c);
        live
    }

    pub fn set(&self, c: &Capacity) {
        self.cpu_millis
            .store(c.cpu_millis as i64, Ordering::Relaxed);
        self.memory_bytes
            .store(c.memory_bytes as i64, Ordering::Relaxed);
    }

    pub fn cpu_millis(&self) -> i64 {
        self.cpu_millis.load(Ordering::Relaxed)
    }

    pub fn memory_bytes(&self) -> i64 {
        self.memory_bytes.load(Ordering::Relaxed)
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

/// The host's online CPUs. Not `available_parallelism`, which already applies the cgroup's
/// quota rounded down to whole CPUs (1.5 CPUs would read as 1).
fn host_cpus() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if online > 0 { online as u64 } else { 1 }
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
    fn parses_quantities() {
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
        let t = Thresholds::parse(crate::agent::pressure::DEFAULT_EVICTION_HARD).unwrap();
        let a = c.allocatable(&Reserved::default(), &t);
        assert_eq!(a.memory_bytes, (1 << 30) - (100 << 20));
        assert_eq!(a.ephemeral_storage_bytes, 900);
        assert_eq!(a.cpu_millis, 2000);
    }
}
