//! One pass over one HorizontalPodAutoscaler, as reconcileAutoscaler does it: read the target's
//! scale, compute a proposal per metric (the highest wins), stabilize and rate-limit it, write
//! the scale, and rebuild the status with Kubernetes' conditions. Reads and writes go through
//! the `ResourceMetrics` and `Scales` traits, so the whole pass runs in unit tests.

use std::sync::Arc;

use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, CrossVersionObjectReference, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus,
    MetricTarget, MetricValueStatus, ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as QuantityText;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::behavior::{Behavior, History, Verdict, limit_legacy};
use super::calculator::{Settings, utilization_replicas, value_replicas};
use super::metrics::{ResourceMetrics, per_pod};
use crate::apiserver::kinds::quantity::Quantity;
use crate::apiserver::selector::LabelSelector;
use crate::controllers::runtime::events::{NORMAL, WARNING};

/// Reading and writing a target's scale subresource.
pub trait Scales: Send + Sync {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        target: &'a CrossVersionObjectReference,
    ) -> BoxFuture<'a, Result<Scale, String>>;

    fn update<'a>(
        &'a self,
        namespace: &'a str,
        target: &'a CrossVersionObjectReference,
        scale: Scale,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// Everything a pass reads besides the autoscaler itself.
pub struct Inputs<'a> {
    pub settings: &'a Settings,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`, for autoscalers without a
    /// scaleDown window of their own.
    pub downscale_window_seconds: i32,
    pub metrics: &'a dyn ResourceMetrics,
    pub scales: &'a dyn Scales,
    /// The pods of the autoscaler's namespace.
    pub pods: &'a [Arc<Pod>],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// What a pass produced: the status to store, the events to record, and, when the pass could
/// not finish, why (for the log; the next period tries again).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: HorizontalPodAutoscalerStatus,
    pub events: Vec<Event>,
    pub error: Option<String>,
}

const ABLE_TO_SCALE: &str = "AbleToScale";
const SCALING_ACTIVE: &str = "ScalingActive";
const SCALING_LIMITED: &str = "ScalingLimited";

struct Pass<'a> {
    hpa: &'a HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
    events: Vec<Event>,
    now: Timestamp,
}

fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

impl Pass<'_> {
    fn event(&mut self, type_: &'static str, reason: &'static str, message: String) {
        self.events.push(Event {
            type_,
            reason,
            message,
        });
    }

    /// setCondition: the transition time moves only when the status does.
    fn condition(&mut self, type_: &str, ok: bool, reason: &str, message: String) {
        let status = if ok { "True" } else { "False" };
        let list = self.status.conditions.get_or_insert_with(Vec::new);
        let index = match list.iter().position(|c| c.type_ == type_) {
            Some(i) => i,
            None => {
                list.push(HorizontalPodAutoscalerCondition {
                    type_: type_.to_string(),
                    ..Default::default()
                });
                list.len() - 1
            }
        };
        let c = &mut list[index];
        if c.status != status {
            c.last_transition_time = Some(Time(whole_seconds(self.now)));
        }
        c.status = status.to_string();
        c.reason = Some(reason.to_string());
        c.message = Some(message);
    }

    /// setStatus.
    fn set_status(
        &mut self,
        current: i32,
        desired: i32,
        metrics: Option<Vec<MetricStatus>>,
        rescaled: bool,
    ) {
        self.status.observed_generation = self.hpa.metadata.generation;
        self.status.current_replicas = Some(current);
        self.status.desired_replicas = desired;
        self.status.current_metrics = metrics.filter(|m| !m.is_empty());
        if rescaled {
            self.status.last_scale_time = Some(Time(whole_seconds(self.now)));
        }
    }

    /// setCurrentReplicasInStatus: a failed pass keeps the last desired count and metrics.
    fn set_current_replicas(&mut self, current: i32) {
        let desired = self.status.desired_replicas;
        let metrics = self.status.current_metrics.clone();
        self.set_status(current, desired, metrics, false);
    }

    fn finish(self, error: Option<String>) -> Outcome {
        Outcome {
            status: self.status,
            events: self.events,
            error,
        }
    }
}

/// The scale target as `Kind/namespace/name`, as Kubernetes' messages name it.
fn reference(hpa: &HorizontalPodAutoscaler) -> String {
    let target = hpa
        .spec
        .as_ref()
        .map(|s| s.scale_target_ref.clone())
        .unwrap_or_default();
    format!(
        "{}/{}/{}",
        target.kind,
        hpa.metadata.namespace.as_deref().unwrap_or_default(),
        target.name
    )
}

pub async fn reconcile(
    inputs: &Inputs<'_>,
    history: &mut History,
    hpa: &HorizontalPodAutoscaler,
    now: Timestamp,
) -> Outcome {
    let mut pass = Pass {
        hpa,
        status: hpa.status.clone().unwrap_or_default(),
        events: Vec::new(),
        now,
    };
    let spec = hpa.spec.clone().unwrap_or_default();
    let namespace = hpa.metadata.namespace.clone().unwrap_or_default();
    let reference = reference(hpa);

    let mut scale = match inputs.scales.get(&namespace, &spec.scale_target_ref).await {
        Ok(s) => s,
        Err(e) => {
            pass.event(WARNING, "FailedGetScale", e.clone());
            pass.condition(
                ABLE_TO_SCALE,
                false,
                "FailedGetScale",
                format!("the HPA controller was unable to get the target's current scale: {e}"),
            );
            return pass.finish(Some(format!(
                "failed to query scale subresource for {reference}: {e}"
            )));
        }
    };
    pass.condition(
        ABLE_TO_SCALE,
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale".into(),
    );
    let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    history.record_initial(current, now);

    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut desired = 0;
    let mut reason = String::new();
    let mut rescale = true;
    let mut metric_statuses = None;

    if current == 0 && min != 0 {
        rescale = false;
        pass.condition(
            SCALING_ACTIVE,
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero".into(),
        );
    } else if current > max {
        reason = "Current number of replicas above Spec.MaxReplicas".into();
        desired = max;
    } else if current < min {
        reason = "Current number of replicas below Spec.MinReplicas".into();
        desired = min;
    } else {
        let computed =
            compute_for_metrics(inputs, &mut pass, &namespace, &spec.metrics, &scale, now).await;
        let (proposal, metric, statuses) = match computed {
            Ok(c) => c,
            Err(e) => {
                pass.set_current_replicas(current);
                pass.event(WARNING, "FailedComputeMetricsReplicas", e.clone());
                return pass.finish(Some(format!(
                    "failed to compute desired number of replicas based on listed metrics for {reference}: {e}"
                )));
            }
        };
        metric_statuses = Some(statuses);
        let mut rescale_metric = String::new();
        if proposal > desired {
            desired = proposal;
            rescale_metric = metric;
        }
        if desired > current {
            reason = format!("{rescale_metric} above target");
        }
        if desired < current {
            reason = "All metrics below target".into();
        }
        desired = match spec.behavior.as_ref() {
            None => normalize_legacy(
                &mut pass,
                history,
                inputs.downscale_window_seconds,
                current,
                desired,
                min,
                max,
            ),
            Some(b) => {
                let behavior = Behavior::from_spec(b, inputs.downscale_window_seconds);
                normalize_with_behavior(&mut pass, history, &behavior, current, desired, min, max)
            }
        };
        rescale = desired != current;
    }

    if rescale {
        scale.spec.get_or_insert_with(Default::default).replicas = Some(desired);
        if let Err(e) = inputs
            .scales
            .update(&namespace, &spec.scale_target_ref, scale)
            .await
        {
            pass.event(
                WARNING,
                "FailedRescale",
                format!("New size: {desired}; reason: {reason}; error: {e}"),
            );
            pass.condition(
                ABLE_TO_SCALE,
                false,
                "FailedUpdateScale",
                format!("the HPA controller was unable to update the target scale: {e}"),
            );
            pass.set_current_replicas(current);
            return pass.finish(Some(format!("failed to rescale {reference}: {e}")));
        }
        pass.condition(
            ABLE_TO_SCALE,
            true,
            "SucceededRescale",
            format!("the HPA controller was able to update the target scale to {desired}"),
        );
        pass.event(
            NORMAL,
            "SuccessfulRescale",
            format!("New size: {desired}; reason: {reason}"),
        );
        let behavior = spec
            .behavior
            .as_ref()
            .map(|b| Behavior::from_spec(b, inputs.downscale_window_seconds));
        history.record_scale(behavior.as_ref(), current, desired, now);
    } else {
        desired = current;
    }
    pass.set_status(current, desired, metric_statuses, rescale);
    pass.finish(None)
}

fn apply_stabilized(pass: &mut Pass<'_>, proposed: i32, stabilized: Verdict) {
    if stabilized.replicas != proposed {
        pass.condition(
            ABLE_TO_SCALE,
            true,
            stabilized.reason,
            stabilized.message.into(),
        );
    } else {
        pass.condition(
            ABLE_TO_SCALE,
            true,
            "ReadyForNewScale",
            "recommended size matches current size".into(),
        );
    }
}

fn apply_limited(pass: &mut Pass<'_>, stabilized: i32, limited: Verdict) {
    pass.condition(
        SCALING_LIMITED,
        limited.replicas != stabilized,
        limited.reason,
        limited.message.into(),
    );
}

/// normalizeDesiredReplicas, for autoscalers without spec.behavior.
fn normalize_legacy(
    pass: &mut Pass<'_>,
    history: &mut History,
    window_seconds: i32,
    current: i32,
    proposed: i32,
    min: i32,
    max: i32,
) -> i32 {
    let stabilized = history.stabilize_legacy(proposed, window_seconds, pass.now);
    apply_stabilized(
        pass,
        proposed,
        Verdict {
            replicas: stabilized,
            reason: "ScaleDownStabilized",
            message: "recent recommendations were higher than current one, applying the highest recent recommendation",
        },
    );
    let limited = limit_legacy(current, stabilized, min, max);
    apply_limited(pass, stabilized, limited);
    limited.replicas
}

/// normalizeDesiredReplicasWithBehaviors.
fn normalize_with_behavior(
    pass: &mut Pass<'_>,
    history: &mut History,
    behavior: &Behavior,
    current: i32,
    proposed: i32,
    min: i32,
    max: i32,
) -> i32 {
    let stabilized = history.stabilize(behavior, current, proposed, pass.now);
    apply_stabilized(pass, proposed, stabilized);
    let limited = history.limit_rate(behavior, min, max, current, stabilized.replicas, pass.now);
    apply_limited(pass, stabilized.replicas, limited);
    limited.replicas
}

/// A metric that could not be computed: the ScalingActive condition it would set and the error.
struct Failure {
    reason: &'static str,
    message: String,
    error: String,
}

type Computed = (i32, String, Vec<MetricStatus>);

/// computeReplicasForMetrics: the highest proposal over the metrics. It fails when every
/// metric failed, or when some failed and the rest would scale down (a missing metric must
/// not let the target shrink).
async fn compute_for_metrics(
    inputs: &Inputs<'_>,
    pass: &mut Pass<'_>,
    namespace: &str,
    specs: &Option<Vec<MetricSpec>>,
    scale: &Scale,
    now: Timestamp,
) -> Result<Computed, String> {
    let status = scale.status.clone().unwrap_or_default();
    let selector_text = status.selector.unwrap_or_default();
    if selector_text.is_empty() {
        pass.event(WARNING, "SelectorRequired", "selector is required".into());
        pass.condition(
            SCALING_ACTIVE,
            false,
            "InvalidSelector",
            "the HPA target's scale is missing a selector".into(),
        );
        return Err("selector is required".into());
    }
    let selector = match LabelSelector::parse(&selector_text) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!(
                "couldn't convert selector into a corresponding internal selector object: {}",
                e.message
            );
            pass.event(WARNING, "InvalidSelector", msg.clone());
            pass.condition(SCALING_ACTIVE, false, "InvalidSelector", msg.clone());
            return Err(msg);
        }
    };
    let empty = Default::default();
    let pods: Vec<Arc<Pod>> = inputs
        .pods
        .iter()
        .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap_or(&empty)))
        .cloned()
        .collect();
    let spec_replicas = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);

    let specs = specs.as_deref().unwrap_or_default();
    let mut statuses = vec![MetricStatus::default(); specs.len()];
    let mut replicas = 0;
    let mut metric = String::new();
    let mut invalid = 0usize;
    let mut first_failure: Option<Failure> = None;
    for (i, spec) in specs.iter().enumerate() {
        let ctx = MetricContext {
            inputs,
            namespace,
            selector: &selector_text,
            pods: &pods,
            current: spec_replicas,
            now,
        };
        match compute_for_metric(&ctx, spec).await {
            Ok((proposal, name, status)) => {
                statuses[i] = status;
                if replicas == 0 || proposal > replicas {
                    replicas = proposal;
                    metric = name;
                }
            }
            Err(f) => {
                // getUnableComputeReplicaCountCondition records the event as it builds the
                // condition.
                pass.event(WARNING, f.reason, f.message.clone());
                invalid += 1;
                if first_failure.is_none() {
                    first_failure = Some(f);
                }
            }
        }
    }
    if invalid >= specs.len() || (invalid > 0 && replicas < spec_replicas) {
        let first_error = match first_failure {
            Some(f) => {
                pass.condition(
                    SCALING_ACTIVE,
                    false,
                    f.reason,
                    format!(
                        "the HPA was unable to compute the replica count: {}",
                        f.message
                    ),
                );
                f.error
            }
            None => "<nil>".into(),
        };
        return Err(format!(
            "invalid metrics ({invalid} invalid out of {}), first error is: {first_error}",
            specs.len()
        ));
    }
    pass.condition(
        SCALING_ACTIVE,
        true,
        "ValidMetricFound",
        format!("the HPA was able to successfully calculate a replica count from {metric}"),
    );
    Ok((replicas, metric, statuses))
}

struct MetricContext<'a> {
    inputs: &'a Inputs<'a>,
    namespace: &'a str,
    selector: &'a str,
    pods: &'a [Arc<Pod>],
    current: i32,
    now: Timestamp,
}

fn milli_quantity(milli: i64) -> QuantityText {
    QuantityText(Quantity::from_milli(milli).canonical())
}

async fn compute_for_metric(
    ctx: &MetricContext<'_>,
    spec: &MetricSpec,
) -> Result<(i32, String, MetricStatus), Failure> {
    match spec.type_.as_str() {
        "Resource" => {
            let Some(source) = spec.resource.as_ref() else {
                return Err(unsupported(
                    "FailedGetResourceMetric",
                    "invalid resource metric source: the resource field is missing",
                ));
            };
            let (replicas, name, current) =
                resource_proposal(ctx, &source.name, None, &source.target)
                    .await
                    .map_err(|message| Failure {
                        reason: "FailedGetResourceMetric",
                        error: format!(
                            "failed to get {} resource metric value: {message}",
                            source.name
                        ),
                        message,
                    })?;
            Ok((
                replicas,
                name,
                MetricStatus {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricStatus {
                        name: source.name.clone(),
                        current,
                    }),
                    ..Default::default()
                },
            ))
        }
        "ContainerResource" => {
            let Some(source) = spec.container_resource.as_ref() else {
                return Err(unsupported(
                    "FailedGetContainerResourceMetric",
                    "invalid container resource metric source: the containerResource field is missing",
                ));
            };
            let (replicas, name, current) =
                resource_proposal(ctx, &source.name, Some(&source.container), &source.target)
                    .await
                    .map_err(|message| Failure {
                        reason: "FailedGetContainerResourceMetric",
                        error: format!(
                            "failed to get {} container metric value: {message}",
                            source.container
                        ),
                        message,
                    })?;
            Ok((
                replicas,
                name,
                MetricStatus {
                    type_: "ContainerResource".into(),
                    container_resource: Some(ContainerResourceMetricStatus {
                        name: source.name.clone(),
                        container: source.container.clone(),
                        current,
                    }),
                    ..Default::default()
                },
            ))
        }
        "Pods" => Err(unsupported(
            "FailedGetPodsMetric",
            &format!(
                "unable to get metric {}: the custom metrics API (custom.metrics.k8s.io) is not served by this cluster",
                spec.pods
                    .as_ref()
                    .map(|p| p.metric.name.as_str())
                    .unwrap_or_default()
            ),
        )),
        "Object" => Err(unsupported(
            "FailedGetObjectMetric",
            &format!(
                "unable to get metric {}: the custom metrics API (custom.metrics.k8s.io) is not served by this cluster",
                spec.object
                    .as_ref()
                    .map(|o| o.metric.name.as_str())
                    .unwrap_or_default()
            ),
        )),
        "External" => Err(unsupported(
            "FailedGetExternalMetric",
            &format!(
                "unable to get external metric {}: the external metrics API (external.metrics.k8s.io) is not served by this cluster",
                spec.external
                    .as_ref()
                    .map(|e| e.metric.name.as_str())
                    .unwrap_or_default()
            ),
        )),
        other => Err(unsupported(
            "InvalidMetricSourceType",
            &format!("unknown metric source type {other:?}"),
        )),
    }
}

fn unsupported(reason: &'static str, message: &str) -> Failure {
    Failure {
        reason,
        message: message.to_string(),
        error: message.to_string(),
    }
}

/// computeStatusForResourceMetricGeneric: (replicas, metric description, current value).
async fn resource_proposal(
    ctx: &MetricContext<'_>,
    resource: &str,
    container: Option<&str>,
    target: &MetricTarget,
) -> Result<(i32, String, MetricValueStatus), String> {
    let kind = if container.is_some() {
        "container resource"
    } else {
        "resource"
    };
    let usage = || async {
        ctx.inputs
            .metrics
            .pod_usage(ctx.namespace, ctx.selector)
            .await
            .map(|u| per_pod(&u, resource, container))
            .map_err(|e| format!("unable to get metrics for resource {resource}: {e}"))
    };
    if let Some(value) = target.average_value.as_ref() {
        let target_milli = Quantity::parse(&value.0)
            .map(|q| i64::try_from(q.milli_value()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let (replicas, average) = async {
            let metrics = usage().await?;
            value_replicas(
                ctx.inputs.settings,
                ctx.current,
                target_milli,
                resource,
                ctx.pods,
                metrics,
                ctx.now,
            )
        }
        .await
        .map_err(|e| format!("failed to get {resource} usage: {e}"))?;
        return Ok((
            replicas,
            format!("{resource} {kind}"),
            MetricValueStatus {
                average_value: Some(milli_quantity(average)),
                ..Default::default()
            },
        ));
    }
    let Some(utilization) = target.average_utilization else {
        return Err("invalid resource metric source: neither an average utilization target nor an average value (usage) target was set".into());
    };
    let proposal = async {
        let metrics = usage().await?;
        utilization_replicas(
            ctx.inputs.settings,
            ctx.current,
            utilization,
            resource,
            container,
            ctx.pods,
            metrics,
            ctx.now,
        )
    }
    .await
    .map_err(|e| format!("failed to get {resource} utilization: {e}"))?;
    Ok((
        proposal.replicas,
        format!("{resource} {kind} utilization (percentage of request)"),
        MetricValueStatus {
            average_utilization: Some(proposal.utilization),
            average_value: Some(milli_quantity(proposal.raw_average)),
            ..Default::default()
        },
    ))
}
