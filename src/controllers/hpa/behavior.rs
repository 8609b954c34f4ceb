//! What turns a metric's proposal into the replica count the autoscaler sets: the
//! stabilization window over recent recommendations, and the scaleUp/scaleDown rate policies
//! over recent scale events (spec.behavior), or, for autoscalers without a behavior, the older
//! fixed rules (scale up at most ×2 or to 4, scale down after the downscale stabilization
//! window). The history both need is kept per autoscaler by the controller.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    Max,
    Min,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period_seconds: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub window_seconds: i32,
    pub select: Select,
    pub policies: Vec<Policy>,
}

/// spec.behavior with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behavior {
    pub up: Rules,
    pub down: Rules,
}

fn policies_of(rules: Option<&HPAScalingRules>) -> Option<Vec<Policy>> {
    let list = rules?.policies.as_ref()?;
    let out: Vec<Policy> = list
        .iter()
        .filter_map(|p| {
            let kind = match p.type_.as_str() {
                "Pods" => PolicyKind::Pods,
                "Percent" => PolicyKind::Percent,
                _ => return None,
            };
            Some(Policy {
                kind,
                value: p.value,
                period_seconds: p.period_seconds,
            })
        })
        .collect();
    (!out.is_empty()).then_some(out)
}

fn select_of(rules: Option<&HPAScalingRules>) -> Select {
    match rules.and_then(|r| r.select_policy.as_deref()) {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        _ => Select::Max,
    }
}

impl Behavior {
    /// GenerateHPAScaleUpRules/GenerateHPAScaleDownRules: each missing field gets its default;
    /// a scaleDown without a window gets the controller's downscale stabilization window.
    pub fn from_spec(spec: &HorizontalPodAutoscalerBehavior, default_down_window: i32) -> Self {
        let up = spec.scale_up.as_ref();
        let down = spec.scale_down.as_ref();
        Behavior {
            up: Rules {
                window_seconds: up.and_then(|r| r.stabilization_window_seconds).unwrap_or(0),
                select: select_of(up),
                policies: policies_of(up).unwrap_or_else(|| {
                    vec![
                        Policy {
                            kind: PolicyKind::Pods,
                            value: 4,
                            period_seconds: 15,
                        },
                        Policy {
                            kind: PolicyKind::Percent,
                            value: 100,
                            period_seconds: 15,
                        },
                    ]
                }),
            },
            down: Rules {
                window_seconds: down
                    .and_then(|r| r.stabilization_window_seconds)
                    .unwrap_or(default_down_window),
                select: select_of(down),
                policies: policies_of(down).unwrap_or_else(|| {
                    vec![Policy {
                        kind: PolicyKind::Percent,
                        value: 100,
                        period_seconds: 15,
                    }]
                }),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recommendation {
    replicas: i32,
    at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScaleEvent {
    /// Always positive: pods added (in the up list) or removed (in the down list).
    change: i32,
    at: Timestamp,
    outdated: bool,
}

/// One autoscaler's recent recommendations and scale events.
#[derive(Debug, Clone, Default)]
pub struct History {
    recommendations: Vec<Recommendation>,
    up: Vec<ScaleEvent>,
    down: Vec<ScaleEvent>,
}

/// The verdict of a normalization step, as a condition's reason and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub replicas: i32,
    pub reason: &'static str,
    pub message: &'static str,
}

fn secs(n: i32) -> SignedDuration {
    SignedDuration::from_secs(i64::from(n))
}

fn before(now: Timestamp, seconds: i32) -> Timestamp {
    now.checked_sub(secs(seconds)).unwrap_or(now)
}

impl History {
    /// The first sight of an autoscaler counts as a recommendation of the current size, so a
    /// fresh controller does not scale down before a full window has passed.
    pub fn record_initial(&mut self, current: i32, now: Timestamp) {
        if self.recommendations.is_empty() {
            self.recommendations.push(Recommendation {
                replicas: current,
                at: now,
            });
        }
    }

    /// Adds this recommendation, reusing the slot of one that no window can see any more.
    fn remember(&mut self, replicas: i32, now: Timestamp, obsolete: Option<usize>) {
        let rec = Recommendation { replicas, at: now };
        match obsolete {
            Some(i) => self.recommendations[i] = rec,
            None => self.recommendations.push(rec),
        }
    }

    /// stabilizeRecommendation: without a behavior, the highest recommendation within the
    /// downscale stabilization window wins.
    pub fn stabilize_legacy(&mut self, desired: i32, window_seconds: i32, now: Timestamp) -> i32 {
        let cutoff = before(now, window_seconds);
        let mut best = desired;
        let mut obsolete = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at < cutoff {
                obsolete = Some(i);
            } else {
                best = best.max(r.replicas);
            }
        }
        self.remember(desired, now, obsolete);
        best
    }

    /// stabilizeRecommendationWithBehaviors: scaling up takes the lowest recommendation within
    /// the scaleUp window, scaling down the highest within the scaleDown window.
    pub fn stabilize(
        &mut self,
        behavior: &Behavior,
        current: i32,
        desired: i32,
        now: Timestamp,
    ) -> Verdict {
        let up = desired >= current;
        let (window, reason, message) = if up {
            (
                behavior.up.window_seconds,
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                behavior.down.window_seconds,
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        };
        let longest = behavior.up.window_seconds.max(behavior.down.window_seconds);
        let obsolete_cutoff = before(now, longest);
        let cutoff = before(now, window);
        let mut best = desired;
        let mut obsolete = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if r.at > cutoff {
                best = if up {
                    best.min(r.replicas)
                } else {
                    best.max(r.replicas)
                };
            }
            if r.at < obsolete_cutoff {
                obsolete = Some(i);
            }
        }
        self.remember(desired, now, obsolete);
        Verdict {
            replicas: best,
            reason,
            message,
        }
    }

    /// convertDesiredReplicasWithBehaviorRate: caps the change by the policies, counting what
    /// was already changed within each policy's period.
    pub fn limit_rate(
        &self,
        behavior: &Behavior,
        min: i32,
        max: i32,
        current: i32,
        desired: i32,
        now: Timestamp,
    ) -> Verdict {
        if desired > current {
            let limit = scale_up_limit(current, self, &behavior.up, now).max(current);
            let (allowed, reason, message) = if max > limit {
                (
                    limit,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            } else {
                (
                    max,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            };
            if desired > allowed {
                return Verdict {
                    replicas: allowed,
                    reason,
                    message,
                };
            }
        } else if desired < current {
            let limit = scale_down_limit(current, self, &behavior.down, now).min(current);
            let (allowed, reason, message) = if min < limit {
                (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            } else {
                (
                    min,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            };
            if desired < allowed {
                return Verdict {
                    replicas: allowed,
                    reason,
                    message,
                };
            }
        }
        within_range(desired)
    }

    /// storeScaleEvent: remembered only for autoscalers with a behavior, the only ones whose
    /// policies read them.
    pub fn record_scale(
        &mut self,
        behavior: Option<&Behavior>,
        previous: i32,
        new: i32,
        now: Timestamp,
    ) {
        let Some(behavior) = behavior else {
            return;
        };
        let (events, rules, change) = if new > previous {
            (&mut self.up, &behavior.up, new - previous)
        } else {
            (&mut self.down, &behavior.down, previous - new)
        };
        let longest = rules
            .policies
            .iter()
            .map(|p| p.period_seconds)
            .max()
            .unwrap_or(0);
        let cutoff = before(now, longest);
        let mut reuse = None;
        for (i, e) in events.iter_mut().enumerate() {
            if e.at < cutoff {
                e.outdated = true;
            }
            if e.outdated {
                reuse = Some(i);
            }
        }
        let event = ScaleEvent {
            change,
            at: now,
            outdated: false,
        };
        match reuse {
            Some(i) => events[i] = event,
            None => events.push(event),
        }
    }
}

fn within_range(desired: i32) -> Verdict {
    Verdict {
        replicas: desired,
        reason: "DesiredWithinRange",
        message: "the desired count is within the acceptable range",
    }
}

/// convertDesiredReplicasWithRules: without a behavior, growth is capped at max(2×current, 4).
pub fn limit_legacy(current: i32, desired: i32, min: i32, max: i32) -> Verdict {
    let scale_up_limit = current.saturating_mul(2).max(4);
    let (allowed, reason, message) = if max > scale_up_limit {
        (
            scale_up_limit,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        )
    } else {
        (
            max,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    };
    if desired < min {
        return Verdict {
            replicas: min,
            reason: "TooFewReplicas",
            message: "the desired replica count is less than the minimum replica count",
        };
    }
    if desired > allowed {
        return Verdict {
            replicas: allowed,
            reason,
            message,
        };
    }
    within_range(desired)
}

fn changed_within(events: &[ScaleEvent], period_seconds: i32, now: Timestamp) -> i32 {
    let cutoff = before(now, period_seconds);
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .fold(0, i32::saturating_add)
}

/// The replica count at the start of a policy's period: both directions' changes within it
/// are undone.
fn period_start(current: i32, history: &History, period_seconds: i32, now: Timestamp) -> i32 {
    current - changed_within(&history.up, period_seconds, now)
        + changed_within(&history.down, period_seconds, now)
}

/// calculateScaleUpLimitWithScalingRules: the most replicas the policies allow now.
fn scale_up_limit(current: i32, history: &History, rules: &Rules, now: Timestamp) -> i32 {
    let pick: fn(i32, i32) -> i32 = match rules.select {
        Select::Disabled => return current,
        Select::Min => i32::min,
        Select::Max => i32::max,
    };
    let mut result: Option<i32> = None;
    for p in &rules.policies {
        let start = period_start(current, history, p.period_seconds, now);
        let proposed = match p.kind {
            PolicyKind::Pods => start.saturating_add(p.value),
            // Rounded up, or a small deployment could never grow by a percentage.
            PolicyKind::Percent => {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            }
        };
        result = Some(result.map_or(proposed, |r| pick(r, proposed)));
    }
    result.unwrap_or(current)
}

/// calculateScaleDownLimitWithBehaviors: the fewest replicas the policies allow now.
fn scale_down_limit(current: i32, history: &History, rules: &Rules, now: Timestamp) -> i32 {
    let pick: fn(i32, i32) -> i32 = match rules.select {
        Select::Disabled => return current,
        Select::Min => i32::max,
        Select::Max => i32::min,
    };
    let mut result: Option<i32> = None;
    for p in &rules.policies {
        let start = period_start(current, history, p.period_seconds, now);
        let proposed = match p.kind {
            PolicyKind::Pods => start - p.value,
            PolicyKind::Percent => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
        };
        result = Some(result.map_or(proposed, |r| pick(r, proposed)));
    }
    result.unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("a valid timestamp")
    }

    fn behavior(spec: serde_json::Value) -> Behavior {
        let spec: HorizontalPodAutoscalerBehavior =
            serde_json::from_value(spec).expect("a behavior");
        Behavior::from_spec(&spec, 300)
    }

    fn verdict(replicas: i32, reason: &'static str) -> (i32, &'static str) {
        (replicas, reason)
    }

    fn short(v: Verdict) -> (i32, &'static str) {
        (v.replicas, v.reason)
    }

    #[test]
    fn missing_rules_get_kubernetes_defaults() {
        let b = behavior(json!({}));
        assert_eq!(b.up.window_seconds, 0);
        assert_eq!(b.up.select, Select::Max);
        assert_eq!(b.up.policies.len(), 2);
        assert_eq!(b.down.window_seconds, 300);
        assert_eq!(
            b.down.policies,
            vec![Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period_seconds: 15
            }]
        );
        let b = behavior(
            json!({"scaleDown": {"stabilizationWindowSeconds": 10, "selectPolicy": "Disabled"}}),
        );
        assert_eq!(b.down.window_seconds, 10);
        assert_eq!(b.down.select, Select::Disabled);
        assert_eq!(b.down.policies.len(), 1);
    }

    #[test]
    fn default_scale_up_allows_the_larger_of_four_pods_and_double() {
        let b = behavior(json!({}));
        let h = History::default();
        // 1 → 10: +4 pods beats +100%.
        assert_eq!(
            short(h.limit_rate(&b, 1, 100, 1, 10, at(0))),
            verdict(5, "ScaleUpLimit")
        );
        // 10 → 50: +100% beats +4.
        assert_eq!(
            short(h.limit_rate(&b, 1, 100, 10, 50, at(0))),
            verdict(20, "ScaleUpLimit")
        );
        // maxReplicas is the tighter bound.
        assert_eq!(
            short(h.limit_rate(&b, 1, 12, 10, 50, at(0))),
            verdict(12, "TooManyReplicas")
        );
        assert_eq!(
            short(h.limit_rate(&b, 1, 100, 10, 15, at(0))),
            verdict(15, "DesiredWithinRange")
        );
    }

    #[test]
    fn select_policy_min_and_disabled() {
        let min = behavior(json!({"scaleUp": {"selectPolicy": "Min"}}));
        let h = History::default();
        assert_eq!(
            short(h.limit_rate(&min, 1, 100, 10, 50, at(0))),
            verdict(14, "ScaleUpLimit")
        );
        let disabled = behavior(json!({"scaleUp": {"selectPolicy": "Disabled"}}));
        assert_eq!(
            short(h.limit_rate(&disabled, 1, 100, 10, 50, at(0))),
            verdict(10, "ScaleUpLimit")
        );
        let no_down = behavior(json!({"scaleDown": {"selectPolicy": "Disabled"}}));
        assert_eq!(
            short(h.limit_rate(&no_down, 1, 100, 10, 2, at(0))),
            verdict(10, "ScaleDownLimit")
        );
    }

    #[test]
    fn scale_down_policies_count_changes_within_their_period() {
        // The documented example: at most 10% a minute, or 4 pods a minute, whichever is more.
        let b = behavior(json!({"scaleDown": {"policies": [
            {"type": "Percent", "value": 10, "periodSeconds": 60},
            {"type": "Pods", "value": 4, "periodSeconds": 60},
        ]}}));
        let mut h = History::default();
        assert_eq!(
            short(h.limit_rate(&b, 1, 200, 100, 50, at(0))),
            verdict(90, "ScaleDownLimit")
        );
        assert_eq!(
            short(h.limit_rate(&b, 1, 200, 20, 1, at(0))),
            verdict(16, "ScaleDownLimit")
        );
        // 10 pods removed 30 s ago still count: the period started at 100.
        h.record_scale(Some(&b), 100, 90, at(0));
        assert_eq!(
            short(h.limit_rate(&b, 1, 200, 90, 50, at(30))),
            verdict(90, "ScaleDownLimit")
        );
        // A minute later they no longer do.
        assert_eq!(
            short(h.limit_rate(&b, 1, 200, 90, 50, at(61))),
            verdict(81, "ScaleDownLimit")
        );
        // minReplicas above the policy limit wins.
        assert_eq!(
            short(h.limit_rate(&b, 85, 200, 90, 50, at(61))),
            verdict(85, "TooFewReplicas")
        );
    }

    #[test]
    fn scale_up_policies_count_changes_within_their_period() {
        let b = behavior(
            json!({"scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}}),
        );
        let mut h = History::default();
        h.record_scale(Some(&b), 2, 4, at(0));
        // 2 pods were already added this minute.
        assert_eq!(
            short(h.limit_rate(&b, 1, 100, 4, 10, at(20))),
            verdict(4, "ScaleUpLimit")
        );
        assert_eq!(
            short(h.limit_rate(&b, 1, 100, 4, 10, at(61))),
            verdict(6, "ScaleUpLimit")
        );
    }

    #[test]
    fn outdated_scale_events_are_reused() {
        let b = behavior(json!({}));
        let mut h = History::default();
        h.record_scale(Some(&b), 1, 2, at(0));
        h.record_scale(Some(&b), 2, 3, at(100));
        assert_eq!(h.up.len(), 1);
        h.record_scale(None, 3, 4, at(200));
        assert_eq!(h.up.len(), 1);
    }

    #[test]
    fn scale_down_is_stabilized_over_the_window() {
        let b = behavior(json!({"scaleDown": {"stabilizationWindowSeconds": 60}}));
        let mut h = History::default();
        h.record_initial(8, at(0));
        // Lower recommendations within the window: the highest recent one wins.
        let v = h.stabilize(&b, 8, 4, at(10));
        assert_eq!(short(v), verdict(8, "ScaleDownStabilized"));
        let v = h.stabilize(&b, 8, 3, at(30));
        assert_eq!(v.replicas, 8);
        // Once 8 has left the window, the highest of 4 and 3 remains.
        let v = h.stabilize(&b, 8, 2, at(65));
        assert_eq!(v.replicas, 4);
        let v = h.stabilize(&b, 8, 2, at(200));
        assert_eq!(v.replicas, 2);
    }

    #[test]
    fn scale_up_window_takes_the_lowest_recent_recommendation() {
        let b = behavior(json!({"scaleUp": {"stabilizationWindowSeconds": 30}}));
        let mut h = History::default();
        h.record_initial(2, at(0));
        assert_eq!(h.stabilize(&b, 2, 6, at(10)).replicas, 2);
        assert_eq!(h.stabilize(&b, 2, 8, at(35)).replicas, 6);
        // With a zero window (the default) scaling up is immediate.
        let immediate = behavior(json!({}));
        let mut h = History::default();
        h.record_initial(2, at(0));
        assert_eq!(
            short(h.stabilize(&immediate, 2, 6, at(10))),
            verdict(6, "ScaleUpStabilized")
        );
    }

    #[test]
    fn without_behavior_the_highest_recommendation_in_the_window_wins() {
        let mut h = History::default();
        h.record_initial(5, at(0));
        assert_eq!(h.stabilize_legacy(2, 300, at(10)), 5);
        assert_eq!(h.stabilize_legacy(3, 300, at(200)), 5);
        assert_eq!(h.stabilize_legacy(1, 300, at(301)), 3);
        // Recommendations above the current count go through at once.
        assert_eq!(h.stabilize_legacy(9, 300, at(302)), 9);
    }

    #[test]
    fn without_behavior_growth_is_capped_at_double_or_four() {
        assert_eq!(
            short(limit_legacy(1, 10, 1, 20)),
            verdict(4, "ScaleUpLimit")
        );
        assert_eq!(
            short(limit_legacy(3, 10, 1, 20)),
            verdict(6, "ScaleUpLimit")
        );
        assert_eq!(
            short(limit_legacy(3, 10, 1, 5)),
            verdict(5, "TooManyReplicas")
        );
        assert_eq!(
            short(limit_legacy(3, 0, 2, 5)),
            verdict(2, "TooFewReplicas")
        );
        assert_eq!(
            short(limit_legacy(3, 4, 1, 5)),
            verdict(4, "DesiredWithinRange")
        );
    }
}
