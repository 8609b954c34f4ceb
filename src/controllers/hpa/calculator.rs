//! Replica counts from pod usage, as Kubernetes' ReplicaCalculator computes them for Resource
//! and ContainerResource metrics: utilization as a percentage of summed requests or a raw
//! average value, a tolerance band, pods still starting ignored for cpu scale-up, and missing
//! samples assumed to be whatever would damp the change (100% of request on the way down, 0% on
//! the way up).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Container, Pod};

use super::metrics::PodMetric;
use crate::apiserver::kinds::quantity::Quantity;

/// kube-controller-manager's `--horizontal-pod-autoscaler-*` knobs the calculation uses.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Usage ratios within 1 ± tolerance leave the replica count alone.
    pub tolerance: f64,
    /// While a pod is this young, cpu samples taken before it became ready are not trusted.
    pub cpu_initialization_period: SignedDuration,
    /// A pod that turned unready within this long of starting is taken as never ready yet.
    pub initial_readiness_delay: SignedDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tolerance: 0.1,
            cpu_initialization_period: SignedDuration::from_secs(300),
            initial_readiness_delay: SignedDuration::from_secs(30),
        }
    }
}

impl Settings {
    fn within_tolerance(&self, ratio: f64) -> bool {
        (1.0 - self.tolerance) <= ratio && ratio <= (1.0 + self.tolerance)
    }
}

/// The result for a utilization target: replicas, the utilization (percent of request) and
/// the average raw usage per pod in thousandths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtilizationProposal {
    pub replicas: i32,
    pub utilization: i32,
    pub raw_average: i64,
}

#[derive(Debug, Default)]
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

/// Sorts the pods as groupPods does: deleted and failed pods are ignored; pending pods are
/// unready; pods without a sample are missing; for cpu, pods whose sample cannot be trusted
/// yet (still initializing, or never ready) are unready.
fn group_pods(
    settings: &Settings,
    pods: &[Arc<Pod>],
    metrics: &BTreeMap<String, PodMetric>,
    resource: &str,
    now: Timestamp,
) -> Groups {
    let mut g = Groups::default();
    for pod in pods {
        let name = pod_name(pod).to_string();
        if pod.metadata.deletion_timestamp.is_some() || phase(pod) == "Failed" {
            g.ignored.insert(name);
            continue;
        }
        if phase(pod) == "Pending" {
            g.unready.insert(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            g.missing.insert(name);
            continue;
        };
        if resource == "cpu" && cpu_sample_untrusted(settings, pod, metric, now) {
            g.unready.insert(name);
            continue;
        }
        g.ready += 1;
    }
    g
}

fn cpu_sample_untrusted(
    settings: &Settings,
    pod: &Pod,
    metric: &PodMetric,
    now: Timestamp,
) -> bool {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let start = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    let (Some(ready), Some(start)) = (ready, start) else {
        return true;
    };
    let transition = ready
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(start);
    let is_false = ready.status == "False";
    let initializing = start
        .checked_add(settings.cpu_initialization_period)
        .is_ok_and(|end| end > now);
    if initializing {
        // A sample must cover one full window after the pod became ready.
        let covered_from = transition.checked_add(metric.window).unwrap_or(transition);
        is_false || metric.timestamp < covered_from
    } else {
        let settled = start
            .checked_add(settings.initial_readiness_delay)
            .unwrap_or(start);
        is_false && settled > transition
    }
}

fn containers_counted(pod: &Pod) -> Vec<&Container> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers.iter().chain(sidecars).collect()
}

/// Each pod's request for `resource` in thousandths: the sum over its containers (and
/// sidecars), or the one named container.
fn pod_requests(
    pods: &[Arc<Pod>],
    resource: &str,
    container: Option<&str>,
) -> Result<BTreeMap<String, i64>, String> {
    let mut out = BTreeMap::new();
    for pod in pods {
        let mut sum = 0i64;
        let mut found = false;
        for c in containers_counted(pod) {
            if container.is_some_and(|want| want != c.name) {
                continue;
            }
            found = true;
            let request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| Quantity::parse(&q.0));
            let Some(q) = request else {
                return Err(format!(
                    "missing request for {resource} in container {} of Pod {}",
                    c.name,
                    pod_name(pod)
                ));
            };
            sum = sum.saturating_add(i64::try_from(q.milli_value()).unwrap_or(i64::MAX));
        }
        if let Some(want) = container
            && !found
        {
            return Err(format!(
                "container {want} not found in Pod {}",
                pod_name(pod)
            ));
        }
        out.insert(pod_name(pod).to_string(), sum);
    }
    Ok(out)
}

/// metricsclient.GetResourceUtilizationRatio: (ratio to target, utilization %, raw average).
fn utilization_ratio(
    metrics: &BTreeMap<String, PodMetric>,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let (mut used, mut requested, mut entries) = (0i64, 0i64, 0i64);
    for (name, m) in metrics {
        // Samples of pods we do not know are extraneous.
        let Some(r) = requests.get(name) else {
            continue;
        };
        used = used.saturating_add(m.value);
        requested = requested.saturating_add(*r);
        entries += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = i32::try_from(used.saturating_mul(100) / requested).unwrap_or(i32::MAX);
    Ok((
        utilization as f64 / target as f64,
        utilization,
        used / entries,
    ))
}

fn usage_ratio(metrics: &BTreeMap<String, PodMetric>, target: i64) -> (f64, i64) {
    let total: i64 = metrics
        .values()
        .map(|m| m.value)
        .fold(0, i64::saturating_add);
    let average = total / (metrics.len().max(1) as i64);
    (average as f64 / target as f64, average)
}

fn ceil_replicas(x: f64) -> i32 {
    let c = x.ceil();
    if c >= i32::MAX as f64 {
        i32::MAX
    } else {
        c as i32
    }
}

/// GetResourceReplicas: replicas for an averageUtilization target.
#[allow(clippy::too_many_arguments)]
pub fn utilization_replicas(
    settings: &Settings,
    current: i32,
    target: i32,
    resource: &str,
    container: Option<&str>,
    pods: &[Arc<Pod>],
    mut metrics: BTreeMap<String, PodMetric>,
    now: Timestamp,
) -> Result<UtilizationProposal, String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups = group_pods(settings, pods, &metrics, resource, now);
    for name in groups.ignored.iter().chain(&groups.unready) {
        metrics.remove(name);
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let requests = pod_requests(pods, resource, container)?;
    let (ratio, utilization, raw_average) = utilization_ratio(&metrics, &requests, target)?;
    let proposal = |replicas| UtilizationProposal {
        replicas,
        utilization,
        raw_average,
    };

    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if settings.within_tolerance(ratio) {
            return Ok(proposal(current));
        }
        return Ok(proposal(ceil_replicas(ratio * groups.ready as f64)));
    }

    if !groups.missing.is_empty() {
        if ratio < 1.0 {
            // Scaling down: missing pods are taken to use their full request (or the target,
            // when that is above 100%).
            let fallback = i64::from(target.max(100));
            for name in &groups.missing {
                let request = requests.get(name).copied().unwrap_or(0);
                metrics.insert(
                    name.clone(),
                    assumed(request.saturating_mul(fallback) / 100),
                );
            }
        } else if ratio > 1.0 {
            for name in &groups.missing {
                metrics.insert(name.clone(), assumed(0));
            }
        }
    }
    if scale_up_with_unready {
        for name in &groups.unready {
            metrics.insert(name.clone(), assumed(0));
        }
    }

    let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target)?;
    if settings.within_tolerance(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        // Too small a change, or the assumptions flipped the direction.
        return Ok(proposal(current));
    }
    let replicas = ceil_replicas(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// GetRawResourceReplicas: replicas for an averageValue target (thousandths), and the current
/// average usage.
pub fn value_replicas(
    settings: &Settings,
    current: i32,
    target: i64,
    resource: &str,
    pods: &[Arc<Pod>],
    mut metrics: BTreeMap<String, PodMetric>,
    now: Timestamp,
) -> Result<(i32, i64), String> {
    if pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".into());
    }
    let groups = group_pods(settings, pods, &metrics, resource, now);
    for name in groups.ignored.iter().chain(&groups.unready) {
        metrics.remove(name);
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".into());
    }
    let (ratio, usage) = usage_ratio(&metrics, target);
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if settings.within_tolerance(ratio) {
            return Ok((current, usage));
        }
        return Ok((ceil_replicas(ratio * groups.ready as f64), usage));
    }
    if !groups.missing.is_empty() {
        let fill = if ratio < 1.0 {
            Some(target)
        } else if ratio > 1.0 {
            Some(0)
        } else {
            None
        };
        if let Some(v) = fill {
            for name in &groups.missing {
                metrics.insert(name.clone(), assumed(v));
            }
        }
    }
    if scale_up_with_unready {
        for name in &groups.unready {
            metrics.insert(name.clone(), assumed(0));
        }
    }
    let (new_ratio, _) = usage_ratio(&metrics, target);
    if settings.within_tolerance(new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok((current, usage));
    }
    let replicas = ceil_replicas(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok((current, usage));
    }
    Ok((replicas, usage))
}

fn assumed(value: i64) -> PodMetric {
    PodMetric {
        timestamp: Timestamp::UNIX_EPOCH,
        window: SignedDuration::ZERO,
        value,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;

    pub const NOW: i64 = 1_800_000_000;

    pub fn now() -> Timestamp {
        Timestamp::from_second(NOW).expect("a valid timestamp")
    }

    pub fn ago(seconds: i64) -> String {
        Timestamp::from_second(NOW - seconds)
            .expect("a valid timestamp")
            .to_string()
    }

    /// A running pod started 10 minutes ago, Ready for as long, requesting `request` of cpu
    /// and memory per container.
    pub fn pod(name: &str, request: &str) -> Arc<Pod> {
        pod_with(name, Some(request), "Running", Some(("True", 600)), 600)
    }

    pub fn pod_with(
        name: &str,
        request: Option<&str>,
        phase: &str,
        ready: Option<(&str, i64)>,
        started_seconds_ago: i64,
    ) -> Arc<Pod> {
        let resources = match request {
            Some(r) => json!({"requests": {"cpu": r, "memory": r}}),
            None => json!({}),
        };
        let conditions: Vec<_> = ready
            .map(|(status, since)| {
                json!({"type": "Ready", "status": status, "lastTransitionTime": ago(since)})
            })
            .into_iter()
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "busybox", "resources": resources}]},
                "status": {"phase": phase, "startTime": ago(started_seconds_ago), "conditions": conditions},
            }))
            .expect("a pod"),
        )
    }

    /// Samples taken just now over a 15 s window, in thousandths.
    pub fn samples(values: &[(&str, i64)]) -> BTreeMap<String, PodMetric> {
        values
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    PodMetric {
                        timestamp: now(),
                        window: SignedDuration::from_secs(15),
                        value: *v,
                    },
                )
            })
            .collect()
    }

    fn utilization(
        current: i32,
        target: i32,
        resource: &str,
        pods: &[Arc<Pod>],
        metrics: &[(&str, i64)],
    ) -> Result<UtilizationProposal, String> {
        utilization_replicas(
            &Settings::default(),
            current,
            target,
            resource,
            None,
            pods,
            samples(metrics),
            now(),
        )
    }

    fn proposal(replicas: i32, utilization: i32, raw_average: i64) -> UtilizationProposal {
        UtilizationProposal {
            replicas,
            utilization,
            raw_average,
        }
    }

    #[test]
    fn utilization_above_target_scales_up_by_the_ratio() {
        let pods = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        let got = utilization(3, 30, "cpu", &pods, &[("a", 300), ("b", 500), ("c", 700)]);
        assert_eq!(got, Ok(proposal(5, 50, 500)));
    }

    #[test]
    fn utilization_below_target_scales_down_by_the_ratio() {
        let pods: Vec<_> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|n| pod(n, "1"))
            .collect();
        let got = utilization(
            5,
            50,
            "cpu",
            &pods,
            &[("a", 100), ("b", 300), ("c", 500), ("d", 250), ("e", 250)],
        );
        assert_eq!(got, Ok(proposal(3, 28, 280)));
    }

    #[test]
    fn changes_within_the_tolerance_keep_the_count() {
        let pods = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        let got = utilization(
            3,
            100,
            "cpu",
            &pods,
            &[("a", 1010), ("b", 1030), ("c", 1020)],
        );
        assert_eq!(got, Ok(proposal(3, 102, 1020)));
    }

    #[test]
    fn unready_pods_count_as_idle_on_a_cpu_scale_up() {
        // a became unready a minute after starting, inside the initialization period.
        let pods = [
            pod_with("a", Some("1"), "Running", Some(("False", 60)), 120),
            pod("b", "1"),
            pod("c", "1"),
        ];
        let got = utilization(3, 30, "cpu", &pods, &[("a", 300), ("b", 500), ("c", 700)]);
        // Ready pods alone: 60%, ratio 2; with a at 0%: 40%, ratio 1.33 over 3 pods.
        assert_eq!(got, Ok(proposal(4, 60, 600)));
    }

    #[test]
    fn unready_pods_are_left_out_of_a_scale_down() {
        let pods = [
            pod_with("a", Some("1"), "Running", Some(("False", 60)), 120),
            pod_with("b", Some("1"), "Running", Some(("False", 60)), 120),
            pod("c", "1"),
            pod("d", "1"),
            pod("e", "1"),
        ];
        let got = utilization(
            5,
            50,
            "cpu",
            &pods,
            &[("a", 100), ("b", 300), ("c", 500), ("d", 250), ("e", 250)],
        );
        assert_eq!(got, Ok(proposal(2, 33, 333)));
    }

    #[test]
    fn samples_older_than_a_window_after_readiness_are_distrusted_while_initializing() {
        // Ready 5 s ago: a 15 s sample taken now still covers time before readiness.
        let pods = [
            pod_with("a", Some("1"), "Running", Some(("True", 5)), 60),
            pod("b", "1"),
        ];
        let got = utilization(2, 50, "cpu", &pods, &[("a", 1000), ("b", 1000)]);
        // b alone: 100% → ratio 2; a as 0%: 50% → within tolerance: no change.
        assert_eq!(got, Ok(proposal(2, 100, 1000)));
    }

    #[test]
    fn unreadiness_does_not_matter_for_memory() {
        let pods = [
            pod_with("a", Some("1"), "Running", Some(("False", 60)), 120),
            pod("b", "1"),
        ];
        let got = utilization(2, 50, "memory", &pods, &[("a", 1000), ("b", 1000)]);
        assert_eq!(got, Ok(proposal(4, 100, 1000)));
    }

    #[test]
    fn missing_samples_count_as_idle_on_a_scale_up() {
        let pods: Vec<_> = ["a", "b", "c", "d"].iter().map(|n| pod(n, "1")).collect();
        let got = utilization(4, 50, "cpu", &pods, &[("a", 900), ("b", 900), ("c", 900)]);
        // 90% → ratio 1.8; with d at 0%: 67% → ratio 1.34 over 4 pods.
        assert_eq!(got, Ok(proposal(6, 90, 900)));
    }

    #[test]
    fn missing_samples_count_as_fully_used_on_a_scale_down() {
        let pods: Vec<_> = ["a", "b", "c", "d"].iter().map(|n| pod(n, "1")).collect();
        let got = utilization(4, 50, "cpu", &pods, &[("a", 100), ("b", 100), ("c", 100)]);
        // 10% → ratio 0.2; with d at 100%: 32% → ratio 0.64 over 4 pods.
        assert_eq!(got, Ok(proposal(3, 10, 100)));
    }

    #[test]
    fn assumptions_that_flip_the_direction_keep_the_count() {
        let pods = [pod("a", "1"), pod("b", "1")];
        // a alone is at 40% of a 50% target; b missing counted as 100% would mean scale up.
        let got = utilization(2, 50, "cpu", &pods, &[("a", 400)]);
        assert_eq!(got, Ok(proposal(2, 40, 400)));
    }

    #[test]
    fn deleted_failed_and_pending_pods_are_left_out() {
        let mut deleted = (*pod("gone", "1")).clone();
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        let pods = [
            pod("a", "1"),
            Arc::new(deleted),
            pod_with("f", Some("1"), "Failed", None, 600),
            pod_with("p", Some("1"), "Pending", None, 600),
        ];
        let got = utilization(
            2,
            50,
            "memory",
            &pods,
            &[("a", 1000), ("gone", 1000), ("f", 1000)],
        );
        assert_eq!(got, Ok(proposal(2, 100, 1000)));
    }

    #[test]
    fn a_container_without_a_request_is_an_error() {
        let pods = [
            pod("a", "1"),
            pod_with("b", None, "Running", Some(("True", 600)), 600),
        ];
        let got = utilization(2, 50, "cpu", &pods, &[("a", 100), ("b", 100)]);
        assert_eq!(
            got,
            Err("missing request for cpu in container app of Pod b".into())
        );
    }

    #[test]
    fn no_pods_or_no_usable_samples_are_errors() {
        assert_eq!(
            utilization(1, 50, "cpu", &[], &[]),
            Err("no pods returned by selector while calculating replica count".into())
        );
        let pods = [pod_with("a", Some("1"), "Pending", None, 10)];
        assert_eq!(
            utilization(1, 50, "cpu", &pods, &[("a", 100)]),
            Err("did not receive metrics for targeted pods (pods might be unready)".into())
        );
    }

    #[test]
    fn average_values_scale_by_the_ratio_of_averages() {
        let pods = [pod("a", "1"), pod("b", "1"), pod("c", "1")];
        let run = |target, current, values: &[(&str, i64)]| {
            value_replicas(
                &Settings::default(),
                current,
                target,
                "memory",
                &pods,
                samples(values),
                now(),
            )
        };
        assert_eq!(
            run(3000, 3, &[("a", 4000), ("b", 9500), ("c", 3000)]),
            Ok((6, 5500))
        );
        assert_eq!(
            run(5000, 3, &[("a", 5000), ("b", 5200), ("c", 4900)]),
            Ok((3, 5033))
        );
        // c missing on a scale-down counts as using exactly the target.
        assert_eq!(run(10000, 3, &[("a", 1000), ("b", 1000)]), Ok((2, 1000)));
    }
}
