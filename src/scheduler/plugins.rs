//! kube-scheduler's default filter and score plugins, in its order and with its words:
//! NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit filter;
//! TaintToleration, NodeAffinity, PodTopologySpread (its system defaults, which spread the pods
//! of one owner), NodeResourcesFit (least allocated) and BalancedAllocation score.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, Taint, Toleration,
};

use super::cache::{HostPort, NodeInfo};
use super::resources::Resources;

pub const MAX_NODE_SCORE: i64 = 100;

pub const REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const REASON_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const REASON_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

/// A filter's verdict on one node. Unresolvable failures are ones preemption cannot fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub unresolvable: bool,
    pub reasons: Vec<String>,
}

impl Rejection {
    fn unresolvable(reason: impl Into<String>) -> Self {
        Rejection {
            unresolvable: true,
            reasons: vec![reason.into()],
        }
    }
    fn resolvable(reasons: Vec<String>) -> Self {
        Rejection {
            unresolvable: false,
            reasons,
        }
    }
}

/// What PreFilter worked out once per attempt for the filters that look beyond one node.
#[derive(Default)]
pub struct Cycle {
    pub spread: Option<super::spread::SpreadState>,
    pub affinity: Option<super::affinity::AffinityState>,
}

/// What the filters need to know about the pod, worked out once per scheduling attempt.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub requests: Resources,
    pub non_zero: Resources,
    pub ports: Vec<HostPort>,
    pub owner: Option<String>,
    /// Node selector terms of the volumes behind the pod's bound claims.
    pub volume_terms: Vec<Vec<k8s_openapi::api::core::v1::NodeSelectorTerm>>,
}

fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Toleration.ToleratesTaint.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match t.operator.as_deref() {
        None | Some("") | Some("Equal") => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        Some("Exists") => true,
        Some(_) => false,
    }
}

fn tolerated(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The node's taints, plus the ones the node lifecycle controller puts on a node that is not
/// Ready (TaintNodesByCondition), so a NotReady node repels pods even before that happens.
pub fn effective_taints(node: &Node) -> Vec<Taint> {
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let condition_taint = match ready {
        Some("True") => None,
        Some("Unknown") => Some("node.kubernetes.io/unreachable"),
        _ => Some("node.kubernetes.io/not-ready"),
    };
    if let Some(key) = condition_taint
        && !taints
            .iter()
            .any(|t| t.key == key && t.effect == "NoSchedule")
    {
        taints.push(Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
    }
    taints
}

fn node_labels(node: &Node) -> BTreeMap<String, String> {
    node.metadata.labels.clone().unwrap_or_default()
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// A node selector term: all expressions (on labels) and fields (metadata.name) hold; a term
/// with neither matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node_labels(node);
    let name = node.metadata.name.clone();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key)))
        && fields
            .iter()
            .all(|r| r.key == "metadata.name" && requirement_matches(r, name.as_ref()))
}

/// nodeSelector and required node affinity (GetRequiredNodeAffinity(pod).Match(node)).
pub fn required_affinity_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let labels = node_labels(node);
    if let Some(sel) = &spec.node_selector
        && !sel.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, node)),
        None => true,
    }
}

/// Runs the filters in kube-scheduler's order; the first rejection is the node's verdict.
pub fn filter(facts: &PodFacts, info: &NodeInfo, cycle: &Cycle) -> Result<(), Rejection> {
    let Some(node) = info.node.as_deref() else {
        return Err(Rejection::unresolvable("node(s) not found"));
    };
    let pod = facts.pod;
    let tol = tolerations(pod);
    // NodeUnschedulable.
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        let cordon = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerated(tol, &cordon) {
            return Err(Rejection::unresolvable(REASON_UNSCHEDULABLE));
        }
    }
    // TaintToleration.
    if let Some(t) = effective_taints(node)
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerated(tol, t))
    {
        return Err(Rejection::unresolvable(format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or_default()
        )));
    }
    // NodeAffinity.
    if !required_affinity_matches(pod, node) {
        return Err(Rejection::unresolvable(REASON_AFFINITY));
    }
    // VolumeBinding: a volume pinned to a node takes its pods there.
    if !super::volumes::node_fits(&facts.volume_terms, node) {
        return Err(Rejection::unresolvable(super::volumes::REASON_CONFLICT));
    }
    // NodePorts.
    if info.port_conflict(&facts.ports) {
        return Err(Rejection::resolvable(vec![REASON_PORTS.into()]));
    }
    // NodeResourcesFit.
    fits(facts, info)?;
    // PodTopologySpread.
    if let Some(spread) = &cycle.spread {
        spread.filter(pod, node)?;
    }
    // InterPodAffinity.
    if let Some(affinity) = &cycle.affinity {
        affinity.filter(node)?;
    }
    Ok(())
}

/// NodeResourcesFit: pod count, then cpu, memory, ephemeral-storage and extended resources.
/// A request larger than the node's whole allocatable is beyond what preemption could free.
pub fn fits(facts: &PodFacts, info: &NodeInfo) -> Result<(), Rejection> {
    let alloc = &info.allocatable;
    let used = &info.requested;
    let want = &facts.requests;
    let mut reasons = Vec::new();
    let mut unresolvable = false;
    if info.pods.len() as i64 + 1 > alloc.pods {
        reasons.push("Too many pods".to_string());
    }
    if !want.is_zero() {
        let mut check = |name: &str, want: i64, alloc: i64, used: i64| {
            if want > 0 && want > alloc - used {
                reasons.push(format!("Insufficient {name}"));
                if want > alloc {
                    unresolvable = true;
                }
            }
        };
        check("cpu", want.milli_cpu, alloc.milli_cpu, used.milli_cpu);
        check("memory", want.memory, alloc.memory, used.memory);
        check(
            "ephemeral-storage",
            want.ephemeral_storage,
            alloc.ephemeral_storage,
            used.ephemeral_storage,
        );
        for (name, q) in &want.scalar {
            check(
                name,
                *q,
                alloc.scalar.get(name).copied().unwrap_or(0),
                used.scalar.get(name).copied().unwrap_or(0),
            );
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection {
            unresolvable,
            reasons,
        })
    }
}

/// DefaultNormalizeScore.
fn normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

fn least_allocated(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// Weighted scores for the feasible nodes, in their order; the best total wins. `all` is every
/// node (spreading counts pods everywhere); `ns_labels` is given when inter-pod affinity is in
/// play.
pub fn score(
    facts: &PodFacts,
    nodes: &[&NodeInfo],
    all: &[&NodeInfo],
    ns_labels: Option<&super::affinity::NamespaceLabels>,
) -> Vec<i64> {
    let n = nodes.len();
    let pod = facts.pod;
    let tol = tolerations(pod);

    // TaintToleration (weight 3): fewer untolerated PreferNoSchedule taints is better.
    let prefer_tol: Vec<&Toleration> = tol
        .iter()
        .filter(|t| {
            t.effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")
        })
        .collect();
    let mut taint_scores: Vec<i64> = nodes
        .iter()
        .map(|info| {
            info.node
                .as_deref()
                .map(effective_taints)
                .unwrap_or_default()
                .iter()
                .filter(|t| t.effect == "PreferNoSchedule")
                .filter(|t| !prefer_tol.iter().any(|tl| tolerates(tl, t)))
                .count() as i64
        })
        .collect();
    normalize(&mut taint_scores, true);

    // NodeAffinity (weight 2): the weights of the preferred terms the node matches.
    let preferred = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let mut affinity_scores: Vec<i64> = nodes
        .iter()
        .map(|info| {
            let Some(node) = info.node.as_deref() else {
                return 0;
            };
            preferred
                .into_iter()
                .flatten()
                .filter(|p| term_matches(&p.preference, node))
                .map(|p| p.weight as i64)
                .sum()
        })
        .collect();
    normalize(&mut affinity_scores, false);

    // PodTopologySpread (weight 2) and InterPodAffinity (weight 2).
    let spread_scores = super::spread::scores(pod, facts.owner.as_deref(), nodes, all);
    let pod_affinity_scores = match ns_labels {
        Some(ns) => super::affinity::scores(pod, nodes, all, ns),
        None => vec![0; n],
    };

    // NodeResourcesFit LeastAllocated and BalancedAllocation (weight 1 each), on cpu and memory.
    let mut totals = vec![0i64; n];
    for (i, info) in nodes.iter().enumerate() {
        let alloc = &info.allocatable;
        let cpu = info.non_zero_requested.milli_cpu + facts.non_zero.milli_cpu;
        let mem = info.non_zero_requested.memory + facts.non_zero.memory;
        let mut least = 0;
        let mut weights = 0;
        for (req, cap) in [(cpu, alloc.milli_cpu), (mem, alloc.memory)] {
            if cap == 0 {
                continue;
            }
            least += least_allocated(req, cap);
            weights += 1;
        }
        let least = if weights == 0 { 0 } else { least / weights };

        let cpu = info.requested.milli_cpu + facts.requests.milli_cpu;
        let mem = info.requested.memory + facts.requests.memory;
        let fractions: Vec<f64> = [(cpu, alloc.milli_cpu), (mem, alloc.memory)]
            .iter()
            .filter(|(_, cap)| *cap != 0)
            .map(|(req, cap)| (*req as f64 / *cap as f64).min(1.0))
            .collect();
        let std = if fractions.len() == 2 {
            ((fractions[0] - fractions[1]) / 2.0).abs()
        } else {
            0.0
        };
        let balanced = ((1.0 - std) * MAX_NODE_SCORE as f64) as i64;

        totals[i] = taint_scores[i] * 3
            + affinity_scores[i] * 2
            + spread_scores[i] * 2
            + pod_affinity_scores[i] * 2
            + least
            + balanced;
    }
    totals
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::sync::Arc;

    fn node(name: &str, labels: &[(&str, &str)], ready: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn info(node: Node, cpu: i64, pods: i64) -> NodeInfo {
        NodeInfo {
            node: Some(Arc::new(node)),
            allocatable: Resources {
                milli_cpu: cpu,
                memory: 1 << 30,
                pods,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn facts(pod: &Pod, cpu: i64) -> PodFacts<'_> {
        PodFacts {
            pod,
            requests: Resources {
                milli_cpu: cpu,
                ..Default::default()
            },
            non_zero: Resources {
                milli_cpu: cpu.max(100),
                memory: 200 << 20,
                ..Default::default()
            },
            ports: Vec::new(),
            owner: None,
            volume_terms: Vec::new(),
        }
    }

    #[test]
    fn filters_give_kube_schedulers_reasons() {
        let plain = Pod {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        let f = facts(&plain, 500);
        assert!(
            filter(
                &f,
                &info(node("a", &[], "True"), 1000, 110),
                &Cycle::default()
            )
            .is_ok()
        );
        let e = filter(
            &f,
            &info(node("a", &[], "True"), 200, 110),
            &Cycle::default(),
        )
        .unwrap_err();
        assert_eq!(e.reasons, ["Insufficient cpu"]);
        assert!(e.unresolvable, "more than the node has at all");
        let e = filter(
            &f,
            &info(node("a", &[], "True"), 1000, 0),
            &Cycle::default(),
        )
        .unwrap_err();
        assert_eq!(e.reasons, ["Too many pods"]);
        let e = filter(
            &f,
            &info(node("a", &[], "False"), 1000, 110),
            &Cycle::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.reasons,
            ["node(s) had untolerated taint {node.kubernetes.io/not-ready: }"]
        );
        let mut cordoned = node("a", &[], "True");
        cordoned.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        let e = filter(&f, &info(cordoned, 1000, 110), &Cycle::default()).unwrap_err();
        assert_eq!(e.reasons, [REASON_UNSCHEDULABLE]);

        let selective = Pod {
            spec: Some(PodSpec {
                node_selector: Some([("disk".to_string(), "ssd".to_string())].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f = facts(&selective, 0);
        let e = filter(
            &f,
            &info(node("a", &[], "True"), 1000, 110),
            &Cycle::default(),
        )
        .unwrap_err();
        assert_eq!(e.reasons, [REASON_AFFINITY]);
        assert!(
            filter(
                &f,
                &info(node("a", &[("disk", "ssd")], "True"), 1000, 110),
                &Cycle::default()
            )
            .is_ok()
        );
    }

    #[test]
    fn emptier_nodes_score_higher() {
        let pod = Pod {
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        let f = facts(&pod, 100);
        let empty = info(node("a", &[], "True"), 4000, 110);
        let mut busy = info(node("b", &[], "True"), 4000, 110);
        busy.requested.milli_cpu = 3000;
        busy.non_zero_requested.milli_cpu = 3000;
        let s = score(&f, &[&empty, &busy], &[&empty, &busy], None);
        assert!(s[0] > s[1], "{s:?}");
    }
}
