//! A Job's podFailurePolicy, as the Job controller applies it to each failed pod: the first rule
//! whose exit codes (onExitCodes, non-zero codes of terminated containers, then init containers)
//! or pod conditions (onPodConditions, e.g. DisruptionTarget) match decides whether the pod
//! fails the whole Job, is ignored (not counted toward backoffLimit), or counts as usual.

use k8s_openapi::api::batch::v1::{
    PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The Job fails; the message is the one its Failed condition carries.
    FailJob(String),
    Ignore,
    Count,
}

fn exit_code_match<'a>(
    statuses: &'a [ContainerStatus],
    req: &PodFailurePolicyOnExitCodesRequirement,
) -> Option<(&'a str, i32)> {
    statuses.iter().find_map(|c| {
        if req.container_name.as_ref().is_some_and(|n| *n != c.name) {
            return None;
        }
        let code = c.state.as_ref()?.terminated.as_ref()?.exit_code;
        if code == 0 {
            return None;
        }
        let listed = req.values.contains(&code);
        let hit = match req.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        hit.then_some((c.name.as_str(), code))
    })
}

/// What the rule says of this pod, if it applies: the message for FailJob.
fn rule_matches(rule: &PodFailurePolicyRule, index: usize, pod: &Pod) -> Option<String> {
    let status = pod.status.clone().unwrap_or_default();
    let at = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    if let Some(req) = &rule.on_exit_codes {
        let containers = status.container_statuses.unwrap_or_default();
        let inits = status.init_container_statuses.unwrap_or_default();
        let (name, code) =
            exit_code_match(&containers, req).or_else(|| exit_code_match(&inits, req))?;
        return Some(format!(
            "Container {name} for pod {at} failed with exit code {code} matching {} rule at index {index}",
            rule.action
        ));
    }
    let patterns = rule.on_pod_conditions.as_deref().unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    patterns.iter().find_map(|p| {
        let want = if p.status.is_empty() {
            "True"
        } else {
            p.status.as_str()
        };
        conditions
            .iter()
            .find(|c| c.type_ == p.type_ && c.status == want)
            .map(|c| {
                format!(
                    "Pod {at} has condition {} matching {} rule at index {index}",
                    c.type_, rule.action
                )
            })
    })
}

/// The verdict on a failed pod.
pub fn judge(policy: Option<&PodFailurePolicy>, pod: &Pod) -> Verdict {
    let Some(policy) = policy else {
        return Verdict::Count;
    };
    for (index, rule) in policy.rules.iter().enumerate() {
        if let Some(message) = rule_matches(rule, index, pod) {
            return match rule.action.as_str() {
                "FailJob" => Verdict::FailJob(message),
                "Ignore" => Verdict::Ignore,
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::PodFailurePolicyOnPodConditionsPattern;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, PodCondition, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn failed(code: i32, condition: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "main".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: code,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                conditions: condition.map(|t| {
                    vec![PodCondition {
                        type_: t.into(),
                        status: "True".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    fn policy() -> PodFailurePolicy {
        PodFailurePolicy {
            rules: vec![
                PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("main".into()),
                        operator: "In".into(),
                        values: vec![42],
                    }),
                    on_pod_conditions: None,
                },
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: None,
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                },
            ],
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = policy();
        assert_eq!(
            judge(Some(&p), &failed(42, None)),
            Verdict::FailJob(
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0"
                    .into()
            )
        );
        assert_eq!(
            judge(Some(&p), &failed(1, Some("DisruptionTarget"))),
            Verdict::Ignore
        );
        assert_eq!(judge(Some(&p), &failed(1, None)), Verdict::Count);
        assert_eq!(judge(None, &failed(42, None)), Verdict::Count);
    }
}
