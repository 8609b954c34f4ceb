//! DefaultPreemption, run when no node fits. For each node: rejected for a reason eviction
//! cannot change → "not helpful"; nothing of lower priority on it → "No preemption victims";
//! otherwise the node is tried without its lower-priority pods, and if the pod then fits, the
//! fewest and least important of them that must go are the victims (the rest are reprieved,
//! most important first). The best node is the one whose most important victim matters least,
//! then the smallest sum of victim priorities, then the fewest victims. Without a candidate, the
//! verdicts make the "preemption: …" part of kube-scheduler's message.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::cache::{NodeInfo, PodInfo};
use super::plugins::{self, Cycle, PodFacts, Rejection};
use crate::controllers::runtime::ObjKey;

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

pub enum PostFilter {
    /// No node can be freed: the message that follows the filters' in the FitError.
    Message(String),
    /// Evict these pods, then the pod fits on this node.
    Nominate {
        node: String,
        victims: Vec<Arc<Pod>>,
    },
}

struct Candidate {
    node: String,
    victims: Vec<(i32, Arc<Pod>)>,
}

impl Candidate {
    /// pickOneNodeForPreemption's ordering, smaller is better.
    fn rank(&self) -> (i32, i64, usize) {
        let highest = self.victims.iter().map(|v| v.0).max().unwrap_or(i32::MIN);
        let sum: i64 = self.victims.iter().map(|v| v.0 as i64 + 1).sum();
        (highest, sum, self.victims.len())
    }
}

/// Victims on one node, or the node's verdict when preemption cannot help there.
fn select_victims(
    facts: &PodFacts,
    info: &NodeInfo,
    priority: i32,
    cycle: &Cycle,
) -> Result<Candidate, Rejection> {
    let mut lower: Vec<(&ObjKey, &PodInfo)> = info
        .pods
        .iter()
        .filter(|(_, p)| p.priority < priority)
        .collect();
    if lower.is_empty() {
        return Err(Rejection {
            unresolvable: true,
            reasons: vec![NO_VICTIMS.into()],
        });
    }
    let mut reduced = NodeInfo {
        node: info.node.clone(),
        allocatable: info.allocatable.clone(),
        ..Default::default()
    };
    for (key, p) in &info.pods {
        if p.priority >= priority {
            reduced.insert((*key).clone(), PodInfo::new(p.pod.clone()));
        }
    }
    // The attempt's spread and affinity counts still include the victims: like kube-scheduler
    // without its PreFilter extensions, we err on the side of evicting fewer.
    plugins::filter(facts, &reduced, cycle)?;
    // Most important first: they get the first chance to stay.
    lower.sort_by(|a, b| {
        b.1.priority
            .cmp(&a.1.priority)
            .then_with(|| start_time(&a.1.pod).cmp(&start_time(&b.1.pod)))
    });
    let mut victims = Vec::new();
    for (key, p) in lower {
        reduced.insert(key.clone(), PodInfo::new(p.pod.clone()));
        if plugins::filter(facts, &reduced, cycle).is_err() {
            reduced.remove(key);
            victims.push((p.priority, p.pod.clone()));
        }
    }
    Ok(Candidate {
        node: info.name().to_string(),
        victims,
    })
}

fn start_time(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
}

/// PodEligibleToPreemptOthers: never for preemptionPolicy Never, and not again while victims
/// of an earlier preemption are still terminating on the nominated node.
fn not_eligible(pod: &Pod, priority: i32, nodes: &[&NodeInfo]) -> Option<String> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.".into());
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())?;
    let info = nodes.iter().find(|n| n.name() == nominated)?;
    let terminating = info
        .pods
        .values()
        .any(|p| p.pod.metadata.deletion_timestamp.is_some() && p.priority < priority);
    terminating.then(|| "not eligible due to a terminating pod on the nominated node.".into())
}

pub fn post_filter(
    facts: &PodFacts,
    rejected: &[(&NodeInfo, Rejection)],
    all: &[&NodeInfo],
    cycle: &Cycle,
) -> PostFilter {
    let priority = facts
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.priority)
        .unwrap_or(0);
    if let Some(why) = not_eligible(facts.pod, priority, all) {
        // The FitError appends its own full stop.
        return PostFilter::Message(format!("preemption: {}", why.trim_end_matches('.')));
    }
    let mut verdicts: Vec<Rejection> = Vec::with_capacity(rejected.len());
    let mut candidates = Vec::new();
    for (info, rejection) in rejected {
        if rejection.unresolvable {
            verdicts.push(Rejection {
                unresolvable: true,
                reasons: vec![NOT_HELPFUL.into()],
            });
            continue;
        }
        match select_victims(facts, info, priority, cycle) {
            Ok(c) => candidates.push(c),
            Err(r) => verdicts.push(r),
        }
    }
    if let Some(best) = candidates.into_iter().min_by_key(Candidate::rank) {
        return PostFilter::Nominate {
            node: best.node,
            victims: best.victims.into_iter().map(|(_, p)| p).collect(),
        };
    }
    PostFilter::Message(format!(
        "preemption: 0/{} nodes are available: {}",
        all.len(),
        super::reasons_histogram(verdicts.iter())
    ))
}
