//! Whole autoscaler passes against a made-up metrics API and scale subresource: the events,
//! conditions and status Kubernetes' controller would leave.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{CrossVersionObjectReference, HorizontalPodAutoscaler};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::behavior::History;
use super::calculator::Settings;
use super::calculator::tests::{NOW, pod};
use super::metrics::{PodUsage, ResourceMetrics};
use super::reconcile::{Event, Inputs, Outcome, Scales, reconcile};

struct FakeMetrics(Mutex<Result<Vec<(String, i64)>, String>>);

impl FakeMetrics {
    fn cpu(values: &[(&str, i64)]) -> Self {
        FakeMetrics(Mutex::new(Ok(values
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect())))
    }

    fn failing(message: &str) -> Self {
        FakeMetrics(Mutex::new(Err(message.into())))
    }

    fn set(&self, values: &[(&str, i64)]) {
        *self.0.lock().expect("lock") =
            Ok(values.iter().map(|(n, v)| (n.to_string(), *v)).collect());
    }
}

impl ResourceMetrics for FakeMetrics {
    fn pod_usage<'a>(
        &'a self,
        _namespace: &'a str,
        _selector: &'a str,
    ) -> BoxFuture<'a, Result<Vec<PodUsage>, String>> {
        let result = self.0.lock().expect("lock").clone().map(|values| {
            values
                .into_iter()
                .map(|(name, v)| PodUsage {
                    name,
                    // Sampled well after the pods became ready.
                    timestamp: Timestamp::from_second(NOW).expect("a timestamp"),
                    window: SignedDuration::from_secs(15),
                    containers: vec![(
                        "app".into(),
                        BTreeMap::from([("cpu".to_string(), v), ("memory".to_string(), v)]),
                    )],
                })
                .collect()
        });
        Box::pin(async move { result })
    }
}

struct FakeScales {
    replicas: Mutex<i32>,
    get_error: Option<String>,
    updates: Mutex<Vec<i32>>,
}

impl FakeScales {
    fn new(replicas: i32) -> Self {
        FakeScales {
            replicas: Mutex::new(replicas),
            get_error: None,
            updates: Mutex::new(Vec::new()),
        }
    }

    fn updates(&self) -> Vec<i32> {
        self.updates.lock().expect("lock").clone()
    }
}

impl Scales for FakeScales {
    fn get<'a>(
        &'a self,
        _namespace: &'a str,
        target: &'a CrossVersionObjectReference,
    ) -> BoxFuture<'a, Result<Scale, String>> {
        let replicas = *self.replicas.lock().expect("lock");
        let result = match &self.get_error {
            Some(e) => Err(e.clone()),
            None => Ok(serde_json::from_value(json!({
                "metadata": {"name": target.name, "namespace": "default"},
                "spec": {"replicas": replicas},
                "status": {"replicas": replicas, "selector": "app=web"},
            }))
            .expect("a scale")),
        };
        Box::pin(async move { result })
    }

    fn update<'a>(
        &'a self,
        _namespace: &'a str,
        _target: &'a CrossVersionObjectReference,
        scale: Scale,
    ) -> BoxFuture<'a, Result<(), String>> {
        let replicas = scale.spec.and_then(|s| s.replicas).unwrap_or(0);
        *self.replicas.lock().expect("lock") = replicas;
        self.updates.lock().expect("lock").push(replicas);
        Box::pin(async { Ok(()) })
    }
}

fn hpa(spec_extra: Value) -> HorizontalPodAutoscaler {
    let mut spec = json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1,
        "maxReplicas": 10,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}],
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default", "generation": 3},
        "spec": spec,
    }))
    .expect("an autoscaler")
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(NOW + seconds).expect("a timestamp")
}

async fn pass(
    hpa: &mut HorizontalPodAutoscaler,
    history: &mut History,
    metrics: &FakeMetrics,
    scales: &FakeScales,
    pods: &[Arc<Pod>],
    now: Timestamp,
) -> Outcome {
    let settings = Settings::default();
    let inputs = Inputs {
        settings: &settings,
        downscale_window_seconds: 300,
        metrics,
        scales,
        pods,
    };
    let outcome = reconcile(&inputs, history, hpa, now).await;
    hpa.status = Some(outcome.status.clone());
    outcome
}

fn condition(outcome: &Outcome, type_: &str) -> (String, String, String) {
    let c = outcome
        .status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", outcome.status));
    (
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    )
}

fn triple(status: &str, reason: &str, message: &str) -> (String, String, String) {
    (status.into(), reason.into(), message.into())
}

fn reasons(outcome: &Outcome) -> Vec<&'static str> {
    outcome.events.iter().map(|e| e.reason).collect()
}

#[tokio::test]
async fn busy_pods_scale_the_target_up() {
    let mut h = hpa(json!({}));
    let mut history = History::default();
    let metrics = FakeMetrics::cpu(&[("web-0", 1000)]);
    let scales = FakeScales::new(1);
    let pods = [pod("web-0", "1")];
    let out = pass(&mut h, &mut history, &metrics, &scales, &pods, at(0)).await;

    assert_eq!(out.error, None);
    assert_eq!(scales.updates(), vec![2]);
    assert_eq!(
        out.events,
        vec![Event {
            type_: "Normal",
            reason: "SuccessfulRescale",
            message:
                "New size: 2; reason: cpu resource utilization (percentage of request) above target"
                    .into(),
        }]
    );
    assert_eq!(
        condition(&out, "AbleToScale"),
        triple(
            "True",
            "SucceededRescale",
            "the HPA controller was able to update the target scale to 2"
        )
    );
    assert_eq!(
        condition(&out, "ScalingActive"),
        triple(
            "True",
            "ValidMetricFound",
            "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"
        )
    );
    assert_eq!(
        condition(&out, "ScalingLimited"),
        triple(
            "False",
            "DesiredWithinRange",
            "the desired count is within the acceptable range"
        )
    );
    let status = serde_json::to_value(&out.status).expect("status as JSON");
    assert_eq!(status["currentReplicas"], 1);
    assert_eq!(status["desiredReplicas"], 2);
    assert_eq!(status["observedGeneration"], 3);
    assert_eq!(status["lastScaleTime"], json!(at(0).to_string()));
    assert_eq!(
        status["currentMetrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "current": {"averageUtilization": 100, "averageValue": "1"}}}])
    );
    let order: Vec<_> = out
        .status
        .conditions
        .iter()
        .flatten()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(order, ["AbleToScale", "ScalingActive", "ScalingLimited"]);
}

#[tokio::test]
async fn steady_usage_changes_nothing() {
    let mut h = hpa(json!({}));
    let mut history = History::default();
    let metrics = FakeMetrics::cpu(&[("web-0", 260), ("web-1", 240)]);
    let scales = FakeScales::new(2);
    let pods = [pod("web-0", "500m"), pod("web-1", "500m")];
    let out = pass(&mut h, &mut history, &metrics, &scales, &pods, at(0)).await;
    assert!(scales.updates().is_empty());
    assert!(out.events.is_empty());
    assert_eq!(
        condition(&out, "AbleToScale"),
        triple(
            "True",
            "ReadyForNewScale",
            "recommended size matches current size"
        )
    );
    assert_eq!(out.status.desired_replicas, 2);
    assert_eq!(out.status.last_scale_time, None);
}

#[tokio::test]
async fn growth_is_limited_and_said_so() {
    let mut h = hpa(json!({"maxReplicas": 3}));
    let mut history = History::default();
    let metrics = FakeMetrics::cpu(&[("web-0", 1000), ("web-1", 1000)]);
    let scales = FakeScales::new(2);
    let pods = [pod("web-0", "100m"), pod("web-1", "100m")];
    let out = pass(&mut h, &mut history, &metrics, &scales, &pods, at(0)).await;
    assert_eq!(scales.updates(), vec![3]);
    assert_eq!(
        condition(&out, "ScalingLimited"),
        triple(
            "True",
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count"
        )
    );
}

#[tokio::test]
async fn behavior_policies_limit_the_rate() {
    let mut h = hpa(json!({"behavior": {}, "maxReplicas": 20}));
    let mut history = History::default();
    let metrics = FakeMetrics::cpu(&[("web-0", 2000), ("web-1", 2000)]);
    let scales = FakeScales::new(2);
    let pods = [pod("web-0", "1"), pod("web-1", "1")];
    // 400% of a 50% target asks for 16; 4 pods or 100% per 15 s allows 6.
    let out = pass(&mut h, &mut history, &metrics, &scales, &pods, at(0)).await;
    assert_eq!(scales.updates(), vec![6]);
    assert_eq!(
        condition(&out, "ScalingLimited"),
        triple(
            "True",
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate"
        )
    );
    // Within the same period nothing more may be added.
    let out = pass(&mut h, &mut history, &metrics, &scales, &pods, at(5)).await;
    assert_eq!(scales.updates(), vec![6]);
    assert_eq!(out.status.desired_replicas, 6);
    let _ = pass(&mut h, &mut history, &metrics, &scales, &pods, at(16)).await;
    // The fake still has two pods at 400%: 8 is asked for, and now allowed.
    assert_eq!(scales.updates(), vec![6, 8]);
}

#[tokio::test]
async fn missing_metrics_api_is_reported_as_kubernetes_does() {
    let mut h = hpa(json!({}));
    let mut history = History::default();
    let metrics = FakeMetrics::failing(
        "unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)",
    );
    let scales = FakeScales::new(1);
    let pods = [pod("web-0", "1")];
    let out = pass(&mut h, &mut history, &metrics, &scales, &pods, at(0)).await;
    let cause = "failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server could not find the requested resource (get pods.metrics.k8s.io)";
    assert_eq!(
        out.events,
        vec![
            Event {
                type_: "Warning",
                reason: "FailedGetResourceMetric",
                message: cause.into()
            },
            Event {
                type_: "Warning",
                reason: "FailedComputeMetricsReplicas",
                message: format!(
                    "invalid metrics (1 invalid out of 1), first error is: failed to get cpu resource metric value: {cause}"
                ),
            },
        ]
    );
    assert_eq!(
        condition(&out, "ScalingActive"),
        triple(
            "False",
            "FailedGetResourceMetric",
            &format!("the HPA was unable to compute the replica count: {cause}")
        )
    );
    assert_eq!(
        condition(&out, "AbleToScale"),
        triple(
            "True",
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale"
        )
    );
    assert!(scales.updates().is_empty());
    assert_eq!(out.status.current_replicas, Some(1));
    assert_eq!(out.status.current_metrics, None);
}

#[tokio::test]
async fn a_container_without_a_cpu_request_cannot_be_autoscaled_by_utilization() {
    let mut h = hpa(json!({}));
    let mut history = History::default();
    let metrics = FakeMetrics::cpu(&[("web-0", 100)]);
    let scales = FakeScales::new(1);
    let bare =
        super::calculator::tests::pod_with("web-0", None, "Running", Some(("True", 600)), 600);
    let out = pass(&mut h, &mut history, &metrics, &scales, &[bare], at(0)).await;
    assert_eq!(
        reasons(&out),
        ["FailedGetResourceMetric", "FailedComputeMetricsReplicas"]
    );
    assert_eq!(
        out.events[0].message,
        "failed to get cpu utilization: missing request for cpu in container app of Pod web-0"
    );
}

#[tokio::test]
async fn a_target_at_zero_replicas_disables_scaling() {
    let mut h = hpa(json!({}));
    let mut history = History::default();
    let metrics = FakeMetrics::cpu(&[]);
    let scales = FakeScales::new(0);
    let out = pass(&mut h, &mut history, &metrics, &scales, &[], at(0)).await;
    assert!(scales.updates().is_empty());
    assert_eq!(
        condition(&out, "ScalingActive"),
        triple(
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero"
        )
    );
    assert_eq!(out.status.desired_replicas, 0);
}

#[tokio::test]
async fn an_unreadable_scale_is_reported() {
    let mut h = hpa(json!({}));
    let mut history = History::default();
    let metrics = FakeMetrics::cpu(&[]);
    let mut scales = FakeScales::new(1);
    scales.get_error = Some("deployments.apps \"web\" not found".into());
    let out = pass(&mut h, &mut history, &metrics, &scales, &[], at(0)).await;
    assert_eq!(reasons(&out), ["FailedGetScale"]);
    assert_eq!(
        condition(&out, "AbleToScale"),
        triple(
            "False",
            "FailedGetScale",
            "the HPA controller was unable to get the target's current scale: deployments.apps \"web\" not found"
        )
    );
}

#[tokio::test]
async fn counts_outside_min_and_max_are_corrected_first() {
    let mut h = hpa(json!({"minReplicas": 2, "maxReplicas": 4}));
    let mut history = History::default();
    let metrics = FakeMetrics::cpu(&[]);
    let scales = FakeScales::new(7);
    let out = pass(&mut h, &mut history, &metrics, &scales, &[], at(0)).await;
    assert_eq!(scales.updates(), vec![4]);
    assert_eq!(
        out.events[0].message,
        "New size: 4; reason: Current number of replicas above Spec.MaxReplicas"
    );
    let scales = FakeScales::new(1);
    let out = pass(&mut h, &mut history, &metrics, &scales, &[], at(1)).await;
    assert_eq!(scales.updates(), vec![2]);
    assert_eq!(
        out.events[0].message,
        "New size: 2; reason: Current number of replicas below Spec.MinReplicas"
    );
}

#[tokio::test]
async fn scale_down_waits_for_the_stabilization_window() {
    let mut h = hpa(json!({"behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}));
    let mut history = History::default();
    let metrics = FakeMetrics::cpu(&[("web-0", 1000), ("web-1", 1000)]);
    let scales = FakeScales::new(2);
    let pods = [pod("web-0", "1"), pod("web-1", "1")];
    // 100% of a 50% target: 2 → 4.
    let out = pass(&mut h, &mut history, &metrics, &scales, &pods, at(0)).await;
    assert_eq!(scales.updates(), vec![4]);
    assert_eq!(out.status.desired_replicas, 4);

    // The load is gone: the pods (still two, the fake does not start more) idle.
    metrics.set(&[("web-0", 0), ("web-1", 0)]);
    let out = pass(&mut h, &mut history, &metrics, &scales, &pods, at(15)).await;
    assert_eq!(scales.updates(), vec![4], "no scale-down inside the window");
    assert_eq!(
        condition(&out, "AbleToScale"),
        triple(
            "True",
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation"
        )
    );
    assert_eq!(out.status.desired_replicas, 4);

    let out = pass(&mut h, &mut history, &metrics, &scales, &pods, at(75)).await;
    assert_eq!(scales.updates(), vec![4, 1]);
    assert_eq!(
        out.events[0].message,
        "New size: 1; reason: All metrics below target"
    );
}

#[tokio::test]
async fn the_highest_metric_wins_and_a_failed_one_blocks_scale_down() {
    let memory = json!({"type": "Resource", "resource": {"name": "memory",
        "target": {"type": "AverageValue", "averageValue": "100m"}}});
    let cpu = json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 50}}});
    let mut h = hpa(json!({"metrics": [cpu, memory], "maxReplicas": 20}));
    let mut history = History::default();
    // cpu: 100% of 50% → 4; memory: 700m of 100m → 14, capped at max(2×2, 4) without a behavior.
    let metrics = FakeMetrics::cpu(&[("web-0", 1000), ("web-1", 400)]);
    let scales = FakeScales::new(2);
    let pods = [pod("web-0", "1"), pod("web-1", "400m")];
    let out = pass(&mut h, &mut history, &metrics, &scales, &pods, at(0)).await;
    assert_eq!(out.status.desired_replicas, 4);
    assert_eq!(
        out.events[0].message,
        "New size: 4; reason: memory resource above target"
    );
    let current = serde_json::to_value(&out.status.current_metrics).expect("JSON");
    assert_eq!(current[1]["resource"]["current"]["averageValue"], "700m");

    let pods_metric = json!({"type": "Pods", "pods": {"metric": {"name": "qps"},
        "target": {"type": "AverageValue", "averageValue": "1"}}});
    let mut h = hpa(json!({"metrics": [cpu, pods_metric]}));
    metrics.set(&[("web-0", 10), ("web-1", 10)]);
    let scales = FakeScales::new(2);
    let pods = [pod("web-0", "1"), pod("web-1", "1")];
    let out = pass(
        &mut h,
        &mut History::default(),
        &metrics,
        &scales,
        &pods,
        at(0),
    )
    .await;
    assert!(scales.updates().is_empty());
    assert_eq!(
        reasons(&out),
        ["FailedGetPodsMetric", "FailedComputeMetricsReplicas"]
    );
    assert!(out.events[1].message.starts_with(
        "invalid metrics (1 invalid out of 2), first error is: unable to get metric qps"
    ));
}
