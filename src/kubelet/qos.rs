//! Quality of service, resources and the pod's cgroup: `/kubepods/pod<uid>` (Guaranteed),
//! `/kubepods/burstable/pod<uid>`, `/kubepods/besteffort/pod<uid>`, with the pod's summed CPU
//! shares, CPU quota and memory limit, and the containers' cgroups under it.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tracing::{debug, warn};

use crate::runtime::cgroups::{self, Version};
use crate::runtime::spec::Resources;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// A quantity in millicores (CPU) — "250m", "1", "0.5".
pub fn cpu_millis(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<f64>().ok().map(|v| v.ceil() as i64);
    }
    s.parse::<f64>().ok().map(|v| (v * 1000.0).ceil() as i64)
}

/// A quantity in bytes — "64Mi", "1G", "128974848", "1e3".
pub fn bytes(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let n: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        _ => return None,
    };
    Some((n * factor).ceil() as i64)
}

fn get(map: Option<&std::collections::BTreeMap<String, Quantity>>, key: &str) -> Option<Quantity> {
    map.and_then(|m| m.get(key)).cloned()
}

/// (requests, limits) of a container, with requests defaulting to limits as the API does.
pub fn container_resources(c: &Container, name: &str) -> (Option<Quantity>, Option<Quantity>) {
    let r = c.resources.as_ref();
    let limit = get(r.and_then(|r| r.limits.as_ref()), name);
    let request = get(r.and_then(|r| r.requests.as_ref()), name).or_else(|| limit.clone());
    (request, limit)
}

pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = &pod.spec else {
        return QosClass::BestEffort;
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        for res in ["cpu", "memory"] {
            let (req, lim) = container_resources(c, res);
            if req.is_some() || lim.is_some() {
                any = true;
            }
            match (req, lim) {
                (Some(r), Some(l)) if r == l => {}
                (Some(r), Some(l)) => {
                    let same = if res == "cpu" {
                        cpu_millis(&r) == cpu_millis(&l)
                    } else {
                        bytes(&r) == bytes(&l)
                    };
                    guaranteed &= same;
                }
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// Kubernetes' CPU request → cgroup v1 shares (1 core = 1024, at least 2).
pub fn millis_to_shares(millis: i64) -> u64 {
    ((millis * 1024) / 1000).max(2) as u64
}

const CPU_PERIOD: u64 = 100_000;

pub fn millis_to_quota(millis: i64) -> i64 {
    // The kernel's minimum quota is 1 ms.
    ((millis * CPU_PERIOD as i64) / 1000).max(1000)
}

/// The cgroup limits of one container.
pub fn container_limits(c: &Container) -> Resources {
    let (cpu_req, cpu_lim) = container_resources(c, "cpu");
    let (_, mem_lim) = container_resources(c, "memory");
    let cpu_quota = cpu_lim.as_ref().and_then(cpu_millis).map(millis_to_quota);
    Resources {
        cpu_shares: Some(
            cpu_req
                .as_ref()
                .and_then(cpu_millis)
                .map_or(2, millis_to_shares),
        ),
        cpu_quota,
        cpu_period: cpu_quota.map(|_| CPU_PERIOD),
        memory_limit: mem_lim.as_ref().and_then(bytes),
        pids_limit: None,
    }
}

/// The pod's cgroup, relative to the node's cgroup root.
pub fn pod_cgroup(pod_uid: &str, qos: QosClass) -> String {
    match qos {
        QosClass::Guaranteed => format!("/kubepods/pod{pod_uid}"),
        QosClass::Burstable => format!("/kubepods/burstable/pod{pod_uid}"),
        QosClass::BestEffort => format!("/kubepods/besteffort/pod{pod_uid}"),
    }
}

/// The effective sum over a pod: max(largest init container, sum of app containers), for a
/// resource where every container must say (limits) or not (requests: missing counts 0).
fn pod_total(
    pod: &Pod,
    value: impl Fn(&Container) -> Option<i64>,
    all_needed: bool,
) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let mut sum = 0i64;
    for c in &spec.containers {
        match value(c) {
            Some(v) => sum += v,
            None if all_needed => return None,
            None => {}
        }
    }
    for c in spec.init_containers.iter().flatten() {
        match value(c) {
            Some(v) => sum = sum.max(v),
            None if all_needed => return None,
            None => {}
        }
    }
    Some(sum)
}

pub struct PodLimits {
    pub cpu_shares: u64,
    pub cpu_quota: Option<i64>,
    pub memory_limit: Option<i64>,
}

pub fn pod_limits(pod: &Pod, qos: QosClass) -> PodLimits {
    if qos == QosClass::BestEffort {
        return PodLimits {
            cpu_shares: 2,
            cpu_quota: None,
            memory_limit: None,
        };
    }
    let cpu_req = pod_total(
        pod,
        |c| {
            container_resources(c, "cpu")
                .0
                .as_ref()
                .and_then(cpu_millis)
        },
        false,
    )
    .unwrap_or(0);
    PodLimits {
        cpu_shares: millis_to_shares(cpu_req),
        cpu_quota: pod_total(
            pod,
            |c| {
                container_resources(c, "cpu")
                    .1
                    .as_ref()
                    .and_then(cpu_millis)
            },
            true,
        )
        .map(millis_to_quota),
        memory_limit: pod_total(
            pod,
            |c| container_resources(c, "memory").1.as_ref().and_then(bytes),
            true,
        ),
    }
}

/// Kubernetes' OOM score per QoS class, raised to what this node may set: lowering a score below
/// the process's own needs CAP_SYS_RESOURCE, which nodes run without, and a container whose
/// score cannot be set would not start.
pub fn oom_score_adj(pod: &Pod, container: &Container, qos: QosClass, node_memory: i64) -> i32 {
    let wanted = match qos {
        QosClass::Guaranteed => -997,
        QosClass::BestEffort => 1000,
        QosClass::Burstable => {
            let request = container_resources(container, "memory")
                .0
                .as_ref()
                .and_then(bytes)
                .unwrap_or(0);
            let score = if node_memory > 0 {
                1000 - (1000 * request) / node_memory
            } else {
                1000
            };
            // Node-critical pods never get here; keep burstable between 2 and 999.
            let _ = pod;
            score.clamp(2, 999) as i32
        }
    };
    wanted.max(own_oom_score_adj())
}

fn own_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// v1: one directory per controller; v2: the unified tree.
fn cgroup_dirs(rel: &str) -> Vec<(Option<&'static str>, PathBuf)> {
    let rel = rel.trim_start_matches('/');
    let root = Path::new(cgroups::ROOT);
    match cgroups::version() {
        Version::V2 => vec![(None, root.join(rel))],
        Version::V1 => [
            "cpu", "cpuacct", "memory", "pids", "cpuset", "blkio", "devices", "freezer",
        ]
        .into_iter()
        .filter(|c| root.join(c).is_dir())
        .map(|c| (Some(c), root.join(c).join(rel)))
        .collect(),
    }
}

/// Creates the pod's cgroup with its limits (best effort: the containers' own limits hold
/// regardless).
pub fn create_pod_cgroup(path: &str, limits: &PodLimits) {
    if let Err(e) = cgroups::prepare() {
        warn!(
            error = format!("{e:#}"),
            "cannot prepare the node's cgroups"
        );
        return;
    }
    for (controller, dir) in cgroup_dirs(path) {
        if controller == Some("cpuset") {
            // A v1 cpuset child starts empty; libcontainer fills each level it creates.
            continue;
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            debug!(dir = %dir.display(), error = %e, "cannot create the pod cgroup");
            continue;
        }
        let write = |file: &str, value: String| {
            if let Err(e) = std::fs::write(dir.join(file), &value) {
                debug!(file, value, error = %e, "cannot set a pod cgroup limit");
            }
        };
        match controller {
            Some("cpu") => {
                write("cpu.shares", limits.cpu_shares.to_string());
                if let Some(q) = limits.cpu_quota {
                    write("cpu.cfs_period_us", CPU_PERIOD.to_string());
                    write("cpu.cfs_quota_us", q.to_string());
                }
            }
            Some("memory") => {
                if let Some(m) = limits.memory_limit {
                    write("memory.limit_in_bytes", m.to_string());
                }
            }
            None => {
                enable_v2_parents(&dir);
                // cgroup v2 weight from v1 shares, as runc converts it.
                let weight = 1 + ((limits.cpu_shares.saturating_sub(2)) * 9999) / 262142;
                write("cpu.weight", weight.to_string());
                if let Some(q) = limits.cpu_quota {
                    write("cpu.max", format!("{q} {CPU_PERIOD}"));
                }
                if let Some(m) = limits.memory_limit {
                    write("memory.max", m.to_string());
                }
            }
            _ => {}
        }
    }
}

fn enable_v2_parents(dir: &Path) {
    let root = Path::new(cgroups::ROOT);
    let mut chain: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .take_while(|p| p.starts_with(root))
        .collect();
    chain.reverse();
    for parent in chain {
        let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory +pids");
    }
}

/// Removes the pod's cgroup once its containers are gone.
pub fn remove_pod_cgroup(path: &str) {
    for (_, dir) in cgroup_dirs(path) {
        if dir.exists()
            && let Err(e) = std::fs::remove_dir(&dir)
        {
            debug!(dir = %dir.display(), error = %e, "cannot remove the pod cgroup");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"spec": {"containers": containers}})).unwrap()
    }

    #[test]
    fn qos_classes_follow_requests_and_limits() {
        assert_eq!(
            qos_class(&pod(serde_json::json!([{"name": "a"}]))),
            QosClass::BestEffort
        );
        let g = pod(
            serde_json::json!([{"name": "a", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]),
        );
        assert_eq!(qos_class(&g), QosClass::Guaranteed);
        let b = pod(serde_json::json!([{"name": "a", "resources": {"requests": {"cpu": "100m"}}}]));
        assert_eq!(qos_class(&b), QosClass::Burstable);
        let l = pod_limits(&g, QosClass::Guaranteed);
        assert_eq!(
            (l.cpu_shares, l.cpu_quota, l.memory_limit),
            (512, Some(50_000), Some(64 << 20))
        );
    }

    #[test]
    fn quantities_convert() {
        assert_eq!(cpu_millis(&Quantity("250m".into())), Some(250));
        assert_eq!(cpu_millis(&Quantity("1.5".into())), Some(1500));
        assert_eq!(bytes(&Quantity("64Mi".into())), Some(64 << 20));
        assert_eq!(bytes(&Quantity("1G".into())), Some(1_000_000_000));
        assert_eq!(bytes(&Quantity("1e3".into())), Some(1000));
        assert_eq!(millis_to_shares(250), 256);
    }
}
