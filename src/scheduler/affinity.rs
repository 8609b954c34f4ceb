//! InterPodAffinity, as kube-scheduler's plugin: required pod affinity and anti-affinity of the
//! incoming pod, required anti-affinity of the pods already placed, all counted once per
//! scheduling attempt by topology domain (a node label's value); and the preferred terms (plus
//! existing pods' required affinity, at weight 1) as a score.

use std::collections::{BTreeMap, HashMap, HashSet};

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use super::cache::NodeInfo;
use super::plugins::{MAX_NODE_SCORE, Rejection};
use crate::controllers::runtime::selector_matches;

pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

/// Labels of each namespace, for terms with a namespaceSelector.
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

type Pair = (String, String);

/// A term as it applies: which pods it selects (namespaces resolved) and where it looks.
struct Term<'a> {
    term: &'a PodAffinityTerm,
    namespaces: HashSet<String>,
    all_namespaces: bool,
    weight: i64,
}

impl<'a> Term<'a> {
    /// Namespaces: the listed ones plus those the namespaceSelector picks; neither means the
    /// owning pod's own namespace.
    fn new(
        term: &'a PodAffinityTerm,
        owner_ns: &str,
        weight: i64,
        ns_labels: &NamespaceLabels,
    ) -> Self {
        let mut namespaces: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
        let mut all_namespaces = false;
        match &term.namespace_selector {
            None if namespaces.is_empty() => {
                namespaces.insert(owner_ns.to_string());
            }
            None => {}
            Some(sel) => {
                if crate::controllers::runtime::selector_is_empty(sel) {
                    all_namespaces = true;
                } else {
                    for (ns, labels) in ns_labels {
                        if selector_matches(Some(sel), Some(labels)) {
                            namespaces.insert(ns.clone());
                        }
                    }
                }
            }
        }
        Term {
            term,
            namespaces,
            all_namespaces,
            weight,
        }
    }

    fn matches(&self, pod: &Pod) -> bool {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        (self.all_namespaces || self.namespaces.contains(ns))
            && selector_matches(
                self.term.label_selector.as_ref(),
                pod.metadata.labels.as_ref(),
            )
    }
}

fn pod_affinity(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::Affinity> {
    pod.spec.as_ref()?.affinity.as_ref()
}

fn required_affinity(pod: &Pod) -> &[PodAffinityTerm] {
    pod_affinity(pod)
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

fn required_anti(pod: &Pod) -> &[PodAffinityTerm] {
    pod_affinity(pod)
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

fn preferred_affinity(pod: &Pod) -> &[WeightedPodAffinityTerm] {
    pod_affinity(pod)
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

fn preferred_anti(pod: &Pod) -> &[WeightedPodAffinityTerm] {
    pod_affinity(pod)
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default()
}

/// Whether a pod declares any inter-pod affinity at all (most do not: skip the work).
pub fn has_affinity(pod: &Pod) -> bool {
    pod_affinity(pod).is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
}

fn label<'n>(node: &'n Node, key: &str) -> Option<&'n String> {
    node.metadata.labels.as_ref()?.get(key)
}

fn bump(map: &mut HashMap<Pair, i64>, node: &Node, key: &str, by: i64) {
    if let Some(v) = label(node, key) {
        *map.entry((key.to_string(), v.clone())).or_default() += by;
    }
}

/// PreFilter's counts for one attempt.
#[derive(Default)]
pub struct AffinityState {
    affinity: HashMap<Pair, i64>,
    anti: HashMap<Pair, i64>,
    existing_anti: HashMap<Pair, i64>,
    affinity_keys: Vec<String>,
    anti_keys: Vec<String>,
    matches_own_terms: bool,
}

impl AffinityState {
    pub fn new(pod: &Pod, nodes: &[&NodeInfo], ns_labels: &NamespaceLabels) -> Self {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let affinity: Vec<Term> = required_affinity(pod)
            .iter()
            .map(|t| Term::new(t, ns, 1, ns_labels))
            .collect();
        let anti: Vec<Term> = required_anti(pod)
            .iter()
            .map(|t| Term::new(t, ns, 1, ns_labels))
            .collect();
        let mut state = AffinityState {
            affinity_keys: affinity
                .iter()
                .map(|t| t.term.topology_key.clone())
                .collect(),
            anti_keys: anti.iter().map(|t| t.term.topology_key.clone()).collect(),
            matches_own_terms: !affinity.is_empty() && affinity.iter().all(|t| t.matches(pod)),
            ..Default::default()
        };
        for info in nodes {
            let Some(node) = info.node.as_deref() else {
                continue;
            };
            for existing in info.pods.values() {
                let existing = &*existing.pod;
                if !affinity.is_empty() && affinity.iter().all(|t| t.matches(existing)) {
                    for t in &affinity {
                        bump(&mut state.affinity, node, &t.term.topology_key, 1);
                    }
                }
                for t in &anti {
                    if t.matches(existing) {
                        bump(&mut state.anti, node, &t.term.topology_key, 1);
                    }
                }
                let existing_ns = existing.metadata.namespace.as_deref().unwrap_or_default();
                for t in required_anti(existing) {
                    if Term::new(t, existing_ns, 1, ns_labels).matches(pod) {
                        bump(&mut state.existing_anti, node, &t.topology_key, 1);
                    }
                }
            }
        }
        state.affinity.retain(|_, v| *v > 0);
        state.anti.retain(|_, v| *v > 0);
        state.existing_anti.retain(|_, v| *v > 0);
        state
    }

    pub fn filter(&self, node: &Node) -> Result<(), Rejection> {
        // Required affinity: every term's domain on this node holds a matching pod, unless no
        // pod matches anywhere and the pod matches its own terms (the first of a group).
        let mut pods_exist = true;
        for key in &self.affinity_keys {
            match label(node, key) {
                Some(v) => {
                    if self
                        .affinity
                        .get(&(key.clone(), v.clone()))
                        .copied()
                        .unwrap_or(0)
                        <= 0
                    {
                        pods_exist = false;
                    }
                }
                None => {
                    return Err(Rejection {
                        unresolvable: true,
                        reasons: vec![REASON_AFFINITY.into()],
                    });
                }
            }
        }
        let first_of_group = self.affinity.is_empty() && self.matches_own_terms;
        if !pods_exist && !first_of_group {
            return Err(Rejection {
                unresolvable: true,
                reasons: vec![REASON_AFFINITY.into()],
            });
        }
        for key in &self.anti_keys {
            if let Some(v) = label(node, key)
                && self
                    .anti
                    .get(&(key.clone(), v.clone()))
                    .copied()
                    .unwrap_or(0)
                    > 0
            {
                return Err(Rejection {
                    unresolvable: false,
                    reasons: vec![REASON_ANTI_AFFINITY.into()],
                });
            }
        }
        if !self.existing_anti.is_empty() {
            for (k, v) in node.metadata.labels.iter().flatten() {
                if self
                    .existing_anti
                    .get(&(k.clone(), v.clone()))
                    .copied()
                    .unwrap_or(0)
                    > 0
                {
                    return Err(Rejection {
                        unresolvable: false,
                        reasons: vec![REASON_EXISTING_ANTI_AFFINITY.into()],
                    });
                }
            }
        }
        Ok(())
    }
}

/// InterPodAffinity's score for each candidate node, normalized to 0..100.
pub fn scores(
    pod: &Pod,
    candidates: &[&NodeInfo],
    all: &[&NodeInfo],
    ns_labels: &NamespaceLabels,
) -> Vec<i64> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let preferred: Vec<Term> = preferred_affinity(pod)
        .iter()
        .map(|w| Term::new(&w.pod_affinity_term, ns, w.weight as i64, ns_labels))
        .collect();
    let preferred_not: Vec<Term> = preferred_anti(pod)
        .iter()
        .map(|w| Term::new(&w.pod_affinity_term, ns, w.weight as i64, ns_labels))
        .collect();
    let mut by_domain: HashMap<Pair, i64> = HashMap::new();
    for info in all {
        let Some(node) = info.node.as_deref() else {
            continue;
        };
        for existing in info.pods.values() {
            let existing = &*existing.pod;
            for t in &preferred {
                if t.matches(existing) {
                    bump(&mut by_domain, node, &t.term.topology_key, t.weight);
                }
            }
            for t in &preferred_not {
                if t.matches(existing) {
                    bump(&mut by_domain, node, &t.term.topology_key, -t.weight);
                }
            }
            if !has_affinity(existing) {
                continue;
            }
            let existing_ns = existing.metadata.namespace.as_deref().unwrap_or_default();
            // Existing pods that require this kind of pod near them (hardPodAffinityWeight 1).
            for t in required_affinity(existing) {
                if Term::new(t, existing_ns, 1, ns_labels).matches(pod) {
                    bump(&mut by_domain, node, &t.topology_key, 1);
                }
            }
            for w in preferred_affinity(existing) {
                let t = Term::new(
                    &w.pod_affinity_term,
                    existing_ns,
                    w.weight as i64,
                    ns_labels,
                );
                if t.matches(pod) {
                    bump(&mut by_domain, node, &t.term.topology_key, t.weight);
                }
            }
            for w in preferred_anti(existing) {
                let t = Term::new(
                    &w.pod_affinity_term,
                    existing_ns,
                    w.weight as i64,
                    ns_labels,
                );
                if t.matches(pod) {
                    bump(&mut by_domain, node, &t.term.topology_key, -t.weight);
                }
            }
        }
    }
    let raw: Vec<i64> = candidates
        .iter()
        .map(|info| {
            let Some(node) = info.node.as_deref() else {
                return 0;
            };
            node.metadata
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| by_domain.get(&(k.clone(), v.clone())).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let (min, max) = (
        raw.iter().copied().min().unwrap_or(0),
        raw.iter().copied().max().unwrap_or(0),
    );
    raw.iter()
        .map(|s| {
            if max > min {
                (MAX_NODE_SCORE as f64 * ((s - min) as f64 / (max - min) as f64)) as i64
            } else {
                0
            }
        })
        .collect()
}
