//! PodTopologySpread, as kube-scheduler's plugin. DoNotSchedule constraints filter: placing the
//! pod in a domain must keep (matching pods there + the pod) − (fewest in any domain) within
//! maxSkew. ScheduleAnyway constraints score: fewer matching pods in the node's domain is better.
//! A pod with no constraints of its own gets the system defaults (hostname with maxSkew 3, zone
//! with maxSkew 5, ScheduleAnyway) over the pods of its owner, which is what spreads a
//! Deployment's replicas over nodes.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::cache::NodeInfo;
use super::plugins::{self, MAX_NODE_SCORE, Rejection};
use crate::controllers::runtime::selector_matches;

pub const REASON_SPREAD: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_SPREAD_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// Which pods a constraint counts.
enum Selects {
    Labels(LabelSelector),
    /// The system default: pods with the same controller.
    Owner(String),
}

struct Constraint {
    key: String,
    max_skew: i64,
    min_domains: i64,
    selects: Selects,
    honor_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn from_spec(c: &TopologySpreadConstraint, pod: &Pod) -> Self {
        let mut selector = c.label_selector.clone().unwrap_or_default();
        // matchLabelKeys: the pod's own values for those keys narrow the selector.
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        for key in c.match_label_keys.iter().flatten() {
            if let Some(v) = labels.get(key) {
                selector
                    .match_expressions
                    .get_or_insert_with(Vec::new)
                    .push(LabelSelectorRequirement {
                        key: key.clone(),
                        operator: "In".into(),
                        values: Some(vec![v.clone()]),
                    });
            }
        }
        Constraint {
            key: c.topology_key.clone(),
            max_skew: c.max_skew as i64,
            min_domains: c.min_domains.unwrap_or(1) as i64,
            selects: Selects::Labels(selector),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn matches(&self, pod: &Pod, namespace: &str) -> bool {
        if pod.metadata.namespace.as_deref().unwrap_or_default() != namespace
            || pod.metadata.deletion_timestamp.is_some()
        {
            return false;
        }
        match &self.selects {
            Selects::Labels(sel) => selector_matches(Some(sel), pod.metadata.labels.as_ref()),
            Selects::Owner(uid) => crate::controllers::runtime::controller_of(&pod.metadata)
                .is_some_and(|o| &o.uid == uid),
        }
    }

    fn count(&self, info: &NodeInfo, namespace: &str) -> i64 {
        if let Selects::Owner(uid) = &self.selects {
            return info.owners.get(uid).copied().unwrap_or(0) as i64;
        }
        info.pods
            .values()
            .filter(|p| self.matches(&p.pod, namespace))
            .count() as i64
    }

    /// Node inclusion policies: by default only nodes the pod could go to by its node
    /// affinity count as domains; taints are ignored unless asked.
    fn includes(&self, pod: &Pod, node: &Node) -> bool {
        if self.honor_affinity && !plugins::required_affinity_matches(pod, node) {
            return false;
        }
        if self.honor_taints {
            let tol = pod
                .spec
                .as_ref()
                .and_then(|s| s.tolerations.as_deref())
                .unwrap_or_default();
            let untolerated = plugins::effective_taints(node)
                .iter()
                .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                .any(|t| !tol.iter().any(|tl| plugins::tolerates(tl, t)));
            if untolerated {
                return false;
            }
        }
        true
    }
}

fn label<'n>(node: &'n Node, key: &str) -> Option<&'n String> {
    node.metadata.labels.as_ref()?.get(key)
}

fn constraints(pod: &Pod, when: &str) -> Vec<Constraint> {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::from_spec(c, pod))
        .collect()
}

fn has_own_constraints(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .is_some_and(|c| !c.is_empty())
}

/// PreFilter's counts for the DoNotSchedule constraints.
pub struct SpreadState {
    constraints: Vec<Constraint>,
    counts: Vec<HashMap<String, i64>>,
    namespace: String,
}

impl SpreadState {
    /// None when the pod has no DoNotSchedule constraint.
    pub fn new(pod: &Pod, nodes: &[&NodeInfo]) -> Option<Self> {
        let constraints = constraints(pod, "DoNotSchedule");
        if constraints.is_empty() {
            return None;
        }
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); constraints.len()];
        for info in nodes {
            let Some(node) = info.node.as_deref() else {
                continue;
            };
            // Only nodes with every constraint's key are domains at all.
            if !constraints.iter().all(|c| label(node, &c.key).is_some()) {
                continue;
            }
            for (i, c) in constraints.iter().enumerate() {
                if !c.includes(pod, node) {
                    continue;
                }
                if let Some(v) = label(node, &c.key) {
                    *counts[i].entry(v.clone()).or_default() += c.count(info, &namespace);
                }
            }
        }
        Some(SpreadState {
            constraints,
            counts,
            namespace,
        })
    }

    pub fn filter(&self, pod: &Pod, node: &Node) -> Result<(), Rejection> {
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(value) = label(node, &c.key) else {
                return Err(Rejection {
                    unresolvable: true,
                    reasons: vec![REASON_SPREAD_LABEL.into()],
                });
            };
            let domains = &self.counts[i];
            let mut min = domains.values().copied().min().unwrap_or(0);
            if (domains.len() as i64) < c.min_domains {
                min = 0;
            }
            let own = i64::from(c.matches(pod, &self.namespace));
            let here = domains.get(value).copied().unwrap_or(0);
            if here + own - min > c.max_skew {
                return Err(Rejection {
                    unresolvable: false,
                    reasons: vec![REASON_SPREAD.into()],
                });
            }
        }
        Ok(())
    }
}

/// The ScheduleAnyway score (the pod's own, or the system defaults over its owner's pods).
pub fn scores(
    pod: &Pod,
    owner: Option<&str>,
    candidates: &[&NodeInfo],
    all: &[&NodeInfo],
) -> Vec<i64> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let (constraints, require_all) = if has_own_constraints(pod) {
        (constraints(pod, "ScheduleAnyway"), true)
    } else {
        let Some(owner) = owner else {
            return vec![0; candidates.len()];
        };
        let system = |key: &str, skew| Constraint {
            key: key.into(),
            max_skew: skew,
            min_domains: 1,
            selects: Selects::Owner(owner.to_string()),
            honor_affinity: true,
            honor_taints: false,
        };
        (vec![system(HOSTNAME, 3), system(ZONE, 5)], false)
    };
    if constraints.is_empty() {
        return vec![0; candidates.len()];
    }
    let ignored: HashSet<usize> = (0..candidates.len())
        .filter(|i| {
            require_all
                && candidates[*i]
                    .node
                    .as_deref()
                    .is_none_or(|n| !constraints.iter().all(|c| label(n, &c.key).is_some()))
        })
        .collect();
    // Domain sizes among the candidates, and pod counts per domain over all nodes.
    let mut weights = Vec::with_capacity(constraints.len());
    let mut per_domain: Vec<BTreeMap<String, i64>> = Vec::with_capacity(constraints.len());
    for c in &constraints {
        let values: HashSet<&String> = candidates
            .iter()
            .enumerate()
            .filter(|(i, _)| !ignored.contains(i))
            .filter_map(|(_, n)| n.node.as_deref().and_then(|n| label(n, &c.key)))
            .collect();
        weights.push(((values.len() + 2) as f64).ln());
        let mut counts = BTreeMap::new();
        if c.key != HOSTNAME {
            for info in all {
                if let Some(node) = info.node.as_deref()
                    && let Some(v) = label(node, &c.key)
                    && c.includes(pod, node)
                {
                    *counts.entry(v.clone()).or_default() += c.count(info, &namespace);
                }
            }
        }
        per_domain.push(counts);
    }
    let raw: Vec<Option<i64>> = candidates
        .iter()
        .enumerate()
        .map(|(i, info)| {
            if ignored.contains(&i) {
                return None;
            }
            let node = info.node.as_deref()?;
            let mut score = 0.0;
            for (ci, c) in constraints.iter().enumerate() {
                let Some(v) = label(node, &c.key) else {
                    continue;
                };
                let count = if c.key == HOSTNAME {
                    c.count(info, &namespace)
                } else {
                    per_domain[ci].get(v).copied().unwrap_or(0)
                };
                score += count as f64 * weights[ci] + (c.max_skew - 1) as f64;
            }
            Some(score.round() as i64)
        })
        .collect();
    let present: Vec<i64> = raw.iter().flatten().copied().collect();
    let min = present.iter().copied().min().unwrap_or(0);
    let max = present.iter().copied().max().unwrap_or(0);
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => MAX_NODE_SCORE,
            Some(s) => MAX_NODE_SCORE * (max + min - s) / max,
        })
        .collect()
}
