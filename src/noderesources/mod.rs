//! Per-node CPU and memory: the sizes a user gives nodes (`--node-cpus/--node-memory`,
//! `nodes[].resources` in the config), checked before anything is created and applied as the
//! node container's Docker limits; the node's own cgroup limits read back inside the node
//! (`cgroup`, v1 and v2); and kubelet's allocatable arithmetic (`allocatable`:
//! capacity − system-reserved − kube-reserved − the hard-eviction threshold).

pub mod allocatable;
pub mod cgroup;
pub mod quantity;

use serde::{Deserialize, Serialize};

/// The smallest node that runs without MemoryPressure under the default
/// `memory.available<100Mi` threshold, with room for a first pod. Measured (BENCHMARKS.md):
/// the server node's working set at rest with one image loaded is about 68Mi (store, API
/// server, controllers, scheduler, agent, DNS, service proxy), so 68 + 100 + room → 256Mi.
pub const MIN_SERVER_MEMORY: u64 = 256 << 20;
/// A worker's working set with one image loaded and a pod running is about 60Mi: 60 + 100 +
/// room → 192Mi.
pub const MIN_WORKER_MEMORY: u64 = 192 << 20;
/// The memory kept free by the default `memory.available<100Mi` hard-eviction threshold.
pub const DEFAULT_EVICTION_MEMORY: u64 = 100 << 20;
/// Below a tenth of a CPU a node's control plane does not come up within create's --wait.
pub const MIN_CPU_MILLIS: u64 = 100;

/// A quantity as the config file may spell it: `2`, `1.5` (YAML numbers) or `"1500m"`, `4Gi`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum QuantityText {
    Text(String),
    Int(u64),
    Float(f64),
}

impl QuantityText {
    pub fn text(&self) -> String {
        match self {
            QuantityText::Text(t) => t.clone(),
            QuantityText::Int(n) => n.to_string(),
            QuantityText::Float(f) => f.to_string(),
        }
    }
}

// A YAML float never compares equal to itself only when NaN, which no quantity parses as.
impl Eq for QuantityText {}

/// `systemReserved` / `kubeReserved`, as kubelet's flags of those names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Reservation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<QuantityText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<QuantityText>,
}

/// `nodes[].resources` in the cluster config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeResources {
    /// CPUs the node may use (Docker's --cpus); unset: the host's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<QuantityText>,
    /// Memory the node may use, swap included (Docker's --memory and --memory-swap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<QuantityText>,
    #[serde(skip_serializing_if = "is_default")]
    pub system_reserved: Reservation,
    #[serde(skip_serializing_if = "is_default")]
    pub kube_reserved: Reservation,
    /// kubelet's --eviction-hard (`memory.available<100Mi,pid.available<10%`); unset: kind's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_hard: Option<String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// The numbers behind a node's `resources`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Sizes {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// What the node keeps back from pods besides the eviction threshold: system-reserved plus
/// kube-reserved, as the node's settings carry it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Reserved {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// The machine Docker runs on, as `docker info` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub cpus: u64,
    pub memory_bytes: u64,
}

impl NodeResources {
    /// Parses every quantity; each problem names its field under `field` (e.g.
    /// `nodes[1].resources`).
    pub fn check(
        &self,
        field: &str,
        server: bool,
        problems: &mut Vec<String>,
    ) -> (Sizes, Reserved) {
        let mut sizes = Sizes::default();
        let mut reserved = Reserved::default();
        let mut cpu = |name: &str, q: &Option<QuantityText>| -> Option<u64> {
            let q = q.as_ref()?;
            quantity::parse_cpu_millis(&q.text())
                .map_err(|e| problems.push(format!("{field}.{name}: {e}")))
                .ok()
        };
        sizes.cpu_millis = cpu("cpus", &self.cpus);
        let system_cpu = cpu("systemReserved.cpu", &self.system_reserved.cpu);
        let kube_cpu = cpu("kubeReserved.cpu", &self.kube_reserved.cpu);
        let mut memory = |name: &str, q: &Option<QuantityText>| -> Option<u64> {
            let q = q.as_ref()?;
            quantity::parse_bytes(&q.text())
                .map_err(|e| problems.push(format!("{field}.{name}: {e}")))
                .ok()
        };
        sizes.memory_bytes = memory("memory", &self.memory);
        let system_memory = memory("systemReserved.memory", &self.system_reserved.memory);
        let kube_memory = memory("kubeReserved.memory", &self.kube_reserved.memory);
        reserved.cpu_millis = system_cpu.unwrap_or(0) + kube_cpu.unwrap_or(0);
        reserved.memory_bytes = system_memory.unwrap_or(0) + kube_memory.unwrap_or(0);
        let eviction = match &self.eviction_hard {
            Some(text) => match crate::agent::pressure::Thresholds::parse(text) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{field}.evictionHard: {e}"));
                    crate::agent::pressure::Thresholds::default()
                }
            },
            None => crate::agent::pressure::Thresholds::parse(
                crate::agent::pressure::DEFAULT_EVICTION_HARD,
            )
            .unwrap_or_default(),
        };
        if let Err((size, message)) = check_minimum(&sizes, server) {
            let name = match size {
                Size::Cpus => "cpus",
                Size::Memory => "memory",
            };
            problems.push(format!("{field}.{name}: {message}"));
            return (sizes, reserved);
        }
        if let Some(millis) = sizes.cpu_millis
            && reserved.cpu_millis >= millis
        {
            problems.push(format!(
                "{field}: systemReserved.cpu + kubeReserved.cpu ({}) leave nothing of the node's {} CPU for pods",
                quantity::format_cpus(reserved.cpu_millis),
                quantity::format_cpus(millis)
            ));
        }
        if let Some(bytes) = sizes.memory_bytes {
            let kept = reserved.memory_bytes + allocatable::eviction_memory(&eviction, bytes);
            if kept >= bytes {
                problems.push(format!(
                    "{field}: systemReserved.memory + kubeReserved.memory + the memory eviction threshold ({}) leave nothing of the node's {} for pods",
                    quantity::format_bytes(kept),
                    quantity::format_bytes(bytes)
                ));
            }
        }
        (sizes, reserved)
    }
}

/// Which size a refusal is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Cpus,
    Memory,
}

/// Less CPU or memory than a node (of this role) needs to run.
pub fn check_minimum(sizes: &Sizes, server: bool) -> Result<(), (Size, String)> {
    if let Some(millis) = sizes.cpu_millis
        && millis < MIN_CPU_MILLIS
    {
        return Err((
            Size::Cpus,
            format!(
                "{} CPU is too little for a node; give it at least {}",
                quantity::format_cpus(millis),
                quantity::format_cpus(MIN_CPU_MILLIS)
            ),
        ));
    }
    if let Some(bytes) = sizes.memory_bytes {
        let (minimum, role) = if server {
            (MIN_SERVER_MEMORY, "the server node")
        } else {
            (MIN_WORKER_MEMORY, "a worker node")
        };
        if bytes < minimum {
            return Err((
                Size::Memory,
                format!(
                    "{} is less than {role} needs to run; give it at least {}",
                    quantity::format_bytes(bytes),
                    quantity::format_bytes(minimum)
                ),
            ));
        }
    }
    Ok(())
}

/// The refusals that need the host: more CPUs or memory than it has.
pub fn check_against_host(sizes: &Sizes, host: &Host) -> Result<(), (Size, String)> {
    if let Some(millis) = sizes.cpu_millis
        && millis > host.cpus * 1000
    {
        return Err((
            Size::Cpus,
            format!(
                "{} CPUs is more than the {} this Docker host has; give each node at most {}",
                quantity::format_cpus(millis),
                host.cpus,
                host.cpus
            ),
        ));
    }
    if let Some(bytes) = sizes.memory_bytes
        && host.memory_bytes > 0
        && bytes > host.memory_bytes
    {
        return Err((
            Size::Memory,
            format!(
                "{} is more than the {} of memory this Docker host has",
                quantity::format_bytes(bytes),
                quantity::format_bytes(host.memory_bytes)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Option<QuantityText> {
        Some(QuantityText::Text(text.into()))
    }

    #[test]
    fn config_numbers_and_strings_parse() {
        let r: NodeResources = serde_yaml::from_str(
            "cpus: 1.5\nmemory: 2Gi\nsystemReserved: {cpu: 100m, memory: 100Mi}\nkubeReserved: {memory: 50Mi}\n",
        )
        .unwrap();
        let mut problems = Vec::new();
        let (sizes, reserved) = r.check("nodes[0].resources", false, &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(sizes.cpu_millis, Some(1500));
        assert_eq!(sizes.memory_bytes, Some(2 << 30));
        assert_eq!(reserved.cpu_millis, 100);
        assert_eq!(reserved.memory_bytes, 150 << 20);
        let r: NodeResources = serde_yaml::from_str("cpus: 2\n").unwrap();
        assert_eq!(r.check("x", true, &mut problems).0.cpu_millis, Some(2000));
        assert!(serde_yaml::from_str::<NodeResources>("cpu: 2\n").is_err());
    }

    #[test]
    fn bad_quantities_and_reservations_are_named() {
        let r = NodeResources {
            cpus: q("lots"),
            memory: q("1GB"),
            eviction_hard: Some("memory.free<1".into()),
            ..Default::default()
        };
        let mut problems = Vec::new();
        r.check("nodes[2].resources", false, &mut problems);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("nodes[2].resources.cpus: \"lots\""));
        assert!(problems[1].starts_with("nodes[2].resources.memory: \"1GB\""));
        assert!(problems[2].starts_with("nodes[2].resources.evictionHard"));
        let r = NodeResources {
            cpus: q("1"),
            memory: q("512Mi"),
            system_reserved: Reservation {
                cpu: q("1"),
                memory: q("500Mi"),
            },
            ..Default::default()
        };
        let mut problems = Vec::new();
        r.check("n", false, &mut problems);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let small = NodeResources {
            memory: q("64Mi"),
            ..Default::default()
        };
        let mut problems = Vec::new();
        small.check("n", false, &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("n.memory: 64Mi is less than a worker node needs"));
    }

    #[test]
    fn host_and_minimums_bound_the_sizes() {
        let host = Host {
            cpus: 2,
            memory_bytes: 8 << 30,
        };
        let ok = Sizes {
            cpu_millis: Some(2000),
            memory_bytes: Some(1 << 30),
        };
        assert!(check_against_host(&ok, &host).is_ok());
        assert!(check_minimum(&ok, true).is_ok());
        let too_many = Sizes {
            cpu_millis: Some(3000),
            ..ok
        };
        let (size, e) = check_against_host(&too_many, &host).unwrap_err();
        assert_eq!(size, Size::Cpus);
        assert!(e.contains("3 CPUs is more than the 2"), "{e}");
        let small = Sizes {
            memory_bytes: Some(200 << 20),
            ..ok
        };
        assert!(check_minimum(&small, false).is_ok());
        let (size, e) = check_minimum(&small, true).unwrap_err();
        assert_eq!(size, Size::Memory);
        assert!(
            e.contains("200Mi is less than the server node needs"),
            "{e}"
        );
        let slow = Sizes {
            cpu_millis: Some(50),
            ..ok
        };
        assert_eq!(check_minimum(&slow, false).unwrap_err().0, Size::Cpus);
        let huge = Sizes {
            memory_bytes: Some(16 << 30),
            ..ok
        };
        assert!(check_against_host(&huge, &host).is_err());
    }
}
