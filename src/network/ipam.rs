//! Pod addresses out of the node's pod CIDR, kept in a file on the node volume so an agent
//! restart (or the node container's) hands every pod its old address back and never gives out
//! one that is still in use. The agent and `kcluster node net` may both allocate: a lock file
//! serializes them, and each change is written to a temporary file and renamed into place.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::cluster::cidr::Ipv4Cidr;

/// What is on disk: which pod holds which address, and the last one handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocations {
    /// The block the addresses come from; a different block on load discards them (they could
    /// not be routed any more).
    pub cidr: String,
    /// Allocation goes round-robin from here, so a freed address is not reused at once (a
    /// peer's ARP cache or a connection may still point at it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Ipv4Addr>,
    /// pod uid → address.
    #[serde(default)]
    pub pods: BTreeMap<String, Ipv4Addr>,
}

impl Allocations {
    pub fn new(cidr: Ipv4Cidr) -> Self {
        Allocations {
            cidr: cidr.to_string(),
            ..Default::default()
        }
    }

    /// The address of `uid`, allocating one if it has none. The network address, the gateway
    /// (the first address) and the broadcast address are never handed out.
    pub fn allocate(&mut self, cidr: Ipv4Cidr, uid: &str) -> Result<Ipv4Addr> {
        if let Some(ip) = self.pods.get(uid) {
            return Ok(*ip);
        }
        let size = u32::try_from(cidr.size()).unwrap_or(u32::MAX);
        if size < 4 {
            bail!("pod CIDR {cidr} is too small to hold pod addresses");
        }
        // Usable offsets are 2 ..= size-2.
        let (first, last) = (2u32, size - 2);
        let span = last - first + 1;
        let used: std::collections::BTreeSet<Ipv4Addr> = self.pods.values().copied().collect();
        let start = self
            .last
            .filter(|ip| cidr.contains(*ip))
            .map(|ip| u32::from(ip) - u32::from(cidr.network()))
            .filter(|off| (first..=last).contains(off))
            .map(|off| off + 1)
            .unwrap_or(first);
        for step in 0..span {
            let off = first + (start - first + step) % span;
            let Some(ip) = cidr.nth(off) else { continue };
            if !used.contains(&ip) {
                self.pods.insert(uid.to_string(), ip);
                self.last = Some(ip);
                return Ok(ip);
            }
        }
        bail!(
            "no pod address left in {cidr}: all {span} are in use; delete pods on this node to free some"
        )
    }

    pub fn release(&mut self, uid: &str) -> Option<Ipv4Addr> {
        self.pods.remove(uid)
    }
}

/// The allocation file of one node.
pub struct Ipam {
    cidr: Ipv4Cidr,
    path: PathBuf,
    lock_path: PathBuf,
}

impl Ipam {
    pub fn new(dir: &Path, cidr: Ipv4Cidr) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Ipam {
            cidr,
            path: dir.join("ipam.json"),
            lock_path: dir.join("ipam.lock"),
        })
    }

    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// Runs `change` on the allocations under the lock and saves them if it succeeds.
    pub fn update<T>(&self, change: impl FnOnce(&mut Allocations) -> Result<T>) -> Result<T> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .with_context(|| format!("cannot open {}", self.lock_path.display()))?;
        let mut lock = fd_lock::RwLock::new(file);
        let _guard = lock
            .write()
            .with_context(|| format!("cannot lock {}", self.lock_path.display()))?;
        let mut allocations = self.load()?;
        let before = allocations.clone();
        let result = change(&mut allocations)?;
        if allocations != before {
            self.save(&allocations)?;
        }
        Ok(result)
    }

    /// The allocations as they are now (no lock: a reader sees the old or the new file whole).
    pub fn load(&self) -> Result<Allocations> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Allocations::new(self.cidr));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()));
            }
        };
        let allocations: Allocations = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a pod address table; remove it to start afresh",
                self.path.display()
            )
        })?;
        if allocations.cidr != self.cidr.to_string() {
            tracing::warn!(
                old = %allocations.cidr,
                new = %self.cidr,
                "the node's pod CIDR changed: forgetting the addresses of the old one"
            );
            return Ok(Allocations::new(self.cidr));
        }
        Ok(allocations)
    }

    fn save(&self, allocations: &Allocations) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec_pretty(allocations)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("cannot replace {}", self.path.display()))
    }

    #[cfg(test)]
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr> {
        let cidr = self.cidr;
        self.update(|a| a.allocate(cidr, uid))
    }

    pub fn release(&self, uid: &str) -> Result<Option<Ipv4Addr>> {
        self.update(|a| Ok(a.release(uid)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn the_same_pod_gets_the_same_address_and_the_gateway_is_never_given() {
        let c = cidr("10.244.1.0/24");
        let mut a = Allocations::new(c);
        let first = a.allocate(c, "a").unwrap();
        assert_eq!(first, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(a.allocate(c, "a").unwrap(), first);
        assert_eq!(a.allocate(c, "b").unwrap(), Ipv4Addr::new(10, 244, 1, 3));
    }

    #[test]
    fn freed_addresses_come_back_only_after_a_full_round() {
        let c = cidr("10.0.0.0/29"); // usable .2 ..= .6
        let mut a = Allocations::new(c);
        for uid in ["a", "b", "c"] {
            a.allocate(c, uid).unwrap();
        }
        assert_eq!(a.release("a"), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(a.allocate(c, "d").unwrap(), Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(a.allocate(c, "e").unwrap(), Ipv4Addr::new(10, 0, 0, 6));
        // Wraps around to the freed one.
        assert_eq!(a.allocate(c, "f").unwrap(), Ipv4Addr::new(10, 0, 0, 2));
        let err = a.allocate(c, "g").unwrap_err().to_string();
        assert!(err.contains("no pod address left in 10.0.0.0/29"), "{err}");
        // A failed allocation changes nothing.
        assert_eq!(a.pods.len(), 5);
    }

    #[test]
    fn allocations_survive_a_restart_and_a_new_cidr_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let c = cidr("10.244.3.0/24");
        let ipam = Ipam::new(dir.path(), c).unwrap();
        let a = ipam.allocate("a").unwrap();
        let b = ipam.allocate("b").unwrap();
        assert_ne!(a, b);

        let again = Ipam::new(dir.path(), c).unwrap();
        assert_eq!(again.allocate("a").unwrap(), a);
        let c3 = again.allocate("c").unwrap();
        assert!(c3 != a && c3 != b);
        assert_eq!(again.release("b").unwrap(), Some(b));
        assert_eq!(again.release("b").unwrap(), None);
        assert!(!again.load().unwrap().pods.contains_key("b"));

        let moved = Ipam::new(dir.path(), cidr("10.244.9.0/24")).unwrap();
        assert!(moved.load().unwrap().pods.is_empty());
        assert_eq!(moved.allocate("a").unwrap(), Ipv4Addr::new(10, 244, 9, 2));
    }

    #[test]
    fn a_corrupt_table_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ipam.json"), "{not json").unwrap();
        let ipam = Ipam::new(dir.path(), cidr("10.244.3.0/24")).unwrap();
        let err = format!("{:#}", ipam.allocate("a").unwrap_err());
        assert!(err.contains("remove it to start afresh"), "{err}");
    }
}
