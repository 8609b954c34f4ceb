//! Resource arithmetic as kube-scheduler does it: what a pod requests (containers summed, init
//! containers as a maximum, sidecars counted alongside, plus overhead), what a node can give
//! (allocatable), in milli-CPU, bytes and counts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// kube-scheduler's defaults for containers that request nothing, used only for scoring so
/// that such pods still spread (DefaultMilliCPURequest, DefaultMemoryRequest).
pub const DEFAULT_MILLI_CPU: i64 = 100;
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Only meaningful for a node: how many pods it takes.
    pub pods: i64,
    /// Extended resources and hugepages, by name.
    pub scalar: BTreeMap<String, i64>,
}

/// An exact decimal value: mantissa × 10^exponent.
fn parse_exact(text: &str) -> Option<(i128, i32)> {
    let s = text.trim();
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let digits = format!("{int}{frac}");
    let mut mantissa: i128 = digits.parse().ok()?;
    let mut exponent = -(frac.len() as i32);
    let binary = |p: u32| -> Option<i128> { 1024i128.checked_pow(p) };
    match suffix {
        "" => {}
        "n" => exponent -= 9,
        "u" => exponent -= 6,
        "m" => exponent -= 3,
        "k" => exponent += 3,
        "M" => exponent += 6,
        "G" => exponent += 9,
        "T" => exponent += 12,
        "P" => exponent += 15,
        "E" => exponent += 18,
        "Ki" => mantissa = mantissa.checked_mul(binary(1)?)?,
        "Mi" => mantissa = mantissa.checked_mul(binary(2)?)?,
        "Gi" => mantissa = mantissa.checked_mul(binary(3)?)?,
        "Ti" => mantissa = mantissa.checked_mul(binary(4)?)?,
        "Pi" => mantissa = mantissa.checked_mul(binary(5)?)?,
        "Ei" => mantissa = mantissa.checked_mul(binary(6)?)?,
        e if e.starts_with(['e', 'E']) => exponent += e[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    Some((if negative { -mantissa } else { mantissa }, exponent))
}

/// The value scaled by 10^scale, rounded up (resource.Quantity's Value and MilliValue round up).
fn scaled_ceil(q: &Quantity, scale: i32) -> i64 {
    let Some((m, e)) = parse_exact(&q.0) else {
        return 0;
    };
    let e = e + scale;
    let v: i128 = if e >= 0 {
        10i128
            .checked_pow(e as u32)
            .and_then(|p| m.checked_mul(p))
            .unwrap_or(i128::MAX)
    } else {
        match 10i128.checked_pow((-e) as u32) {
            Some(p) => {
                let q = m.div_euclid(p);
                if m.rem_euclid(p) != 0 { q + 1 } else { q }
            }
            None => i128::from(m > 0),
        }
    };
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

pub fn value(q: &Quantity) -> i64 {
    scaled_ceil(q, 0)
}

pub fn milli_value(q: &Quantity) -> i64 {
    scaled_ceil(q, 3)
}

impl Resources {
    fn add_named(&mut self, name: &str, q: &Quantity) {
        match name {
            "cpu" => self.milli_cpu += milli_value(q),
            "memory" => self.memory += value(q),
            "ephemeral-storage" => self.ephemeral_storage += value(q),
            "pods" => self.pods += value(q),
            other => *self.scalar.entry(other.to_string()).or_default() += value(q),
        }
    }

    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        for (k, v) in list.into_iter().flatten() {
            r.add_named(k, v);
        }
        r
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() += v;
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_default() -= v;
        }
    }

    fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// A container's requests; limits stand in for missing requests, as API defaulting would do.
fn container_requests(c: &Container, non_zero: bool) -> Resources {
    let res = c.resources.as_ref();
    let requests = res.and_then(|r| r.requests.as_ref());
    let limits = res.and_then(|r| r.limits.as_ref());
    let mut merged: BTreeMap<String, Quantity> = limits.cloned().unwrap_or_default();
    for (k, v) in requests.into_iter().flatten() {
        merged.insert(k.clone(), v.clone());
    }
    let mut r = Resources::from_list(Some(&merged));
    if non_zero {
        if !merged.contains_key("cpu") {
            r.milli_cpu = DEFAULT_MILLI_CPU;
        }
        if !merged.contains_key("memory") {
            r.memory = DEFAULT_MEMORY;
        }
    }
    r
}

/// resource.PodRequests: regular containers summed; each init container must fit on its own
/// next to the sidecars started before it; sidecars (restartPolicy Always) also run beside the
/// regular containers; then the pod overhead. `non_zero` gives the scoring variant.
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container_requests(c, non_zero));
    }
    let mut sidecars = Resources::default();
    let mut init_max = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c, non_zero);
        if c.restart_policy.as_deref() == Some("Always") {
            total.add(&r);
            sidecars.add(&r);
            init_max.max_with(&sidecars);
        } else {
            let mut with_sidecars = r.clone();
            with_sidecars.add(&sidecars);
            init_max.max_with(&with_sidecars);
        }
    }
    total.max_with(&init_max);
    if let Some(overhead) = spec.overhead.as_ref() {
        total.add(&Resources::from_list(Some(overhead)));
    }
    total.pods = 0;
    total
}

/// What a node can give: status.allocatable, or capacity where allocatable is missing.
pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let list = status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    Resources::from_list(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};

    fn q(s: &str) -> Quantity {
        Quantity(s.into())
    }

    #[test]
    fn quantities_round_up_like_kubernetes() {
        assert_eq!(milli_value(&q("500m")), 500);
        assert_eq!(milli_value(&q("0.5")), 500);
        assert_eq!(milli_value(&q("2")), 2000);
        assert_eq!(milli_value(&q("1n")), 1);
        assert_eq!(value(&q("1Gi")), 1 << 30);
        assert_eq!(value(&q("1.5Ki")), 1536);
        assert_eq!(value(&q("1e3")), 1000);
        assert_eq!(value(&q("100M")), 100_000_000);
        assert_eq!(value(&q("0.1")), 1);
    }

    fn container(name: &str, cpu: &str, mem: &str, always: bool) -> Container {
        Container {
            name: name.into(),
            restart_policy: always.then(|| "Always".to_string()),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [("cpu".to_string(), q(cpu)), ("memory".to_string(), q(mem))].into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_take_init_containers_and_sidecars_into_account() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container("a", "100m", "100Mi", false)],
                init_containers: Some(vec![
                    container("sidecar", "50m", "10Mi", true),
                    container("init", "500m", "50Mi", false),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = pod_requests(&pod, false);
        // max(100+50, 500+50) cpu; max(100+10, 50+10) memory.
        assert_eq!(r.milli_cpu, 550);
        assert_eq!(r.memory, 110 * 1024 * 1024);
        let empty = Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "x".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(pod_requests(&empty, false).is_zero());
        let nz = pod_requests(&empty, true);
        assert_eq!(
            (nz.milli_cpu, nz.memory),
            (DEFAULT_MILLI_CPU, DEFAULT_MEMORY)
        );
    }
}
