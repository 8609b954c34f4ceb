//! The pure parts of the Deployment controller (kube's deployment/util): the pod-template-hash,
//! maxSurge/maxUnavailable, revision and replica annotations, conditions, orderings and
//! proportions. No API calls here, so all of it is unit-tested.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";
/// The revision-history annotation is kept under this many characters.
pub const MAX_REV_HISTORY_CHARS: usize = 2000;

// Progressing condition reasons.
pub const REASON_RS_UPDATED: &str = "ReplicaSetUpdated";
pub const REASON_RS_CREATE_ERROR: &str = "ReplicaSetCreateError";
pub const REASON_NEW_RS: &str = "NewReplicaSetCreated";
pub const REASON_FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const REASON_NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const REASON_TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const REASON_PAUSED: &str = "DeploymentPaused";
pub const REASON_RESUMED: &str = "DeploymentResumed";
// Available condition reasons.
pub const REASON_MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const REASON_MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// Annotations a Deployment does not pass on to its ReplicaSets (and rollback does not copy back).
pub fn skip_annotation(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED | REVISION | REVISION_HISTORY | DESIRED_REPLICAS | MAX_REPLICAS | ROLLBACK_TO
    )
}

/// Drops nulls, empty objects and empty lists: the Go structs behind the API do not tell a
/// missing list from an empty one, and neither must template comparison or hashing.
fn normalized(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: serde_json::Map<String, Value> = m
                .into_iter()
                .filter_map(|(k, v)| normalized(v).map(|v| (k, v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) => {
            let a: Vec<Value> = a
                .into_iter()
                .map(|v| normalized(v).unwrap_or(Value::Null))
                .collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        other => Some(other),
    }
}

/// Keys in sorted order, so the text (and the hash) never depends on map ordering.
fn canonical_text(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_text(v, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_text(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn template_value(template: &PodTemplateSpec, drop_hash: bool) -> Value {
    let mut v = serde_json::to_value(template).unwrap_or(Value::Null);
    if drop_hash
        && let Some(labels) = v
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    normalized(v).unwrap_or(Value::Null)
}

/// FNV-1a, 32 bits (Go's hash/fnv New32a).
fn fnv32a(bytes: &[u8], mut h: u32) -> u32 {
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(16_777_619);
    }
    h
}
const FNV32_OFFSET: u32 = 2_166_136_261;

/// apimachinery's rand.SafeEncodeString: each byte becomes one of 27 characters without vowels
/// (no accidental words) and without the look-alikes 0, 1 and 3.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// controller.ComputeHash: FNV-32a over the template (here its canonical JSON, where Kubernetes
/// hashes a dump of the Go struct), then the collision count as 8 little-endian bytes, printed as
/// a decimal number and safe-encoded. A collision count bump gives a new name.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut text = String::new();
    canonical_text(&template_value(template, false), &mut text);
    let mut h = fnv32a(text.as_bytes(), FNV32_OFFSET);
    if let Some(c) = collision_count {
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(c as u32).to_le_bytes());
        h = fnv32a(&bytes, h);
    }
    safe_encode(&h.to_string())
}

/// EqualIgnoreHash: the same template once the pod-template-hash label is set aside.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    template_value(a, true) == template_value(b, true)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn d_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_template(rs: &ReplicaSet) -> PodTemplateSpec {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default()
}

pub fn d_template(d: &Deployment) -> PodTemplateSpec {
    d.spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default()
}

pub fn is_rolling_update(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// intstr.GetScaledValueFromIntOrPercent: a percentage of `total`, rounded up or down.
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let Some(pct) = s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<i64>().ok())
            else {
                // Validation rejects anything else; treat it as zero rather than guess.
                return s.trim().parse().unwrap_or(0);
            };
            let exact = pct * total as i64;
            let v = if round_up {
                (exact + 99).div_euclid(100)
            } else {
                exact.div_euclid(100)
            };
            v as i32
        }
    }
}

/// ResolveFenceposts: maxSurge rounds up, maxUnavailable down; both zero would deadlock, so
/// maxUnavailable becomes 1.
pub fn resolve_fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let desired = d_replicas(d);
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), desired, true);
    let mut unavailable = scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), desired, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling_update(d) {
        return 0;
    }
    resolve_fenceposts(d).0
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    let desired = d_replicas(d);
    if !is_rolling_update(d) || desired == 0 {
        return 0;
    }
    resolve_fenceposts(d).1.min(desired)
}

pub fn revision_of(rs: &ReplicaSet) -> Option<i64> {
    match rs
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
    {
        None => Some(0),
        Some(v) => v.parse().ok(),
    }
}

pub fn max_revision(sets: &[ReplicaSet]) -> i64 {
    sets.iter()
        .filter_map(revision_of)
        .max()
        .unwrap_or(0)
        .max(0)
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a String> {
    rs.metadata.annotations.as_ref()?.get(key)
}

pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, DESIRED_REPLICAS)?.parse().ok()
}

fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, MAX_REPLICAS)?.parse().ok()
}

/// Copies the Deployment's annotations (but the skipped ones) onto the ReplicaSet, moves its
/// revision up to `new_revision` (keeping the old one in revision-history when this is a
/// rollback to it) and, for a ReplicaSet about to be created, sets the replica annotations.
/// Returns whether anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if skip_annotation(k) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_revision = match old.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => n,
            // An unreadable revision is left alone, as Kubernetes does.
            Err(_) => return changed,
        },
    };
    if old_revision < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            // A rollback to this ReplicaSet: remember which revisions it served before.
            let history = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            if history.is_empty() {
                annotations.insert(REVISION_HISTORY.into(), old);
            } else {
                let mut parts: Vec<&str> = history.split(',').collect();
                let mut total = history.len() + old.len() + 1;
                let mut start = 0;
                while total > MAX_REV_HISTORY_CHARS && start < parts.len() {
                    total -= parts[start].len() + 1;
                    start += 1;
                }
                if total <= MAX_REV_HISTORY_CHARS {
                    parts = parts.split_off(start);
                    parts.push(&old);
                    let joined = parts.join(",");
                    annotations.insert(REVISION_HISTORY.into(), joined);
                }
            }
        }
    }
    if !exists && set_replicas_annotations(rs, d_replicas(d), d_replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if annotations.get(k) != Some(&v) {
            annotations.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

pub fn replicas_annotations_need_update(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(rs, DESIRED_REPLICAS) != Some(&desired.to_string())
        || annotation(rs, MAX_REPLICAS) != Some(&max.to_string())
}

/// The Deployment's revision annotation follows its newest ReplicaSet's; true when it changed.
pub fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let annotations = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if annotations.get(REVISION).map(String::as_str) == Some(revision) {
        return false;
    }
    annotations.insert(REVISION.into(), revision.to_string());
    true
}

pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .is_some_and(|s| s != i32::MAX)
}

pub fn revision_history_limit(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .filter(|l| *l != i32::MAX)
}

/// Time as the API keeps it (whole seconds), so a condition read back compares equal.
pub fn now_time() -> Time {
    let now = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let now = now_time();
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

pub fn get_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// SetDeploymentCondition: no change when status and reason are the same; the transition time
/// survives when only the reason changes.
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(status, &condition.type_);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(condition);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(c) = status.conditions.as_mut() {
        c.retain(|c| c.type_ != type_);
        if c.is_empty() {
            status.conditions = None;
        }
    }
}

fn created(rs: &ReplicaSet) -> Option<jiff::Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// ReplicaSetsByCreationTimestamp: older first, then by name.
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    created(a)
        .cmp(&created(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// ReplicaSetsBySizeOlder: bigger first; among equals the older first.
pub fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// ReplicaSetsBySizeNewer: bigger first; among equals the newer first.
pub fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// ReplicaSetsByRevision: lower revision first, then older.
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    let (ra, rb) = (revision_of(a).unwrap_or(0), revision_of(b).unwrap_or(0));
    ra.cmp(&rb).then_with(|| by_creation(a, b))
}

pub fn sum_replicas<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    sets.into_iter().map(rs_replicas).sum()
}

fn status_field(
    rs: &ReplicaSet,
    f: impl Fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> i32,
) -> i32 {
    rs.status.as_ref().map(f).unwrap_or(0)
}

pub fn actual_replicas(rs: &ReplicaSet) -> i32 {
    status_field(rs, |s| s.replicas)
}

pub fn ready_replicas(rs: &ReplicaSet) -> i32 {
    status_field(rs, |s| s.ready_replicas.unwrap_or(0))
}

pub fn available_replicas(rs: &ReplicaSet) -> i32 {
    status_field(rs, |s| s.available_replicas.unwrap_or(0))
}

/// NewRSNewReplicas: how big the new ReplicaSet may be now.
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if is_rolling_update(d) {
        let desired = d_replicas(d);
        let surge = scaled_value(
            d.spec
                .as_ref()
                .and_then(|s| s.strategy.as_ref())
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.max_surge.as_ref()),
            desired,
            true,
        );
        let current: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
        let max_total = desired + surge;
        if current >= max_total {
            return rs_replicas(new_rs);
        }
        let up = (max_total - current).min(desired - rs_replicas(new_rs));
        rs_replicas(new_rs) + up
    } else {
        d_replicas(d)
    }
}

/// IsSaturated: the new ReplicaSet holds every desired replica and all are available.
pub fn is_saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let desired = d_replicas(d);
    desired_replicas_annotation(rs) == Some(desired)
        && rs_replicas(rs) == desired
        && available_replicas(rs) == desired
}

/// DeploymentComplete: every desired replica updated and available, nothing old left.
pub fn deployment_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = d_replicas(d);
    status.updated_replicas.unwrap_or(0) == desired
        && status.replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) == desired
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// DeploymentProgressing: more updated, fewer old, more ready or more available than before.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// DeploymentTimedOut: no progress reported for progressDeadlineSeconds.
pub fn deployment_timed_out(d: &Deployment, new: &DeploymentStatus, now: jiff::Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(c) = get_condition(new, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(REASON_NEW_RS_AVAILABLE) => return false,
        Some(REASON_TIMED_OUT) => return true,
        _ => {}
    }
    let deadline = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(600) as i64;
    match c.last_update_time.as_ref() {
        Some(t) => {
            t.0.checked_add(jiff::SignedDuration::from_secs(deadline))
                .is_ok_and(|end| end < now)
        }
        None => false,
    }
}

/// GetProportion: the share of a scaling step that falls to one ReplicaSet.
pub fn get_proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if d_replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let deployment_replicas = d_replicas(d) + max_surge(d);
    let annotated = max_replicas_annotation(rs)
        .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
    if annotated == 0 {
        return 0;
    }
    let size = (rs_replicas(rs) as f64 * deployment_replicas as f64) / annotated as f64;
    // Go's math.Round: halves away from zero, as f64::round does.
    size.round() as i32 - rs_replicas(rs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn deployment(replicas: i32, surge: &str, unavailable: &str) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::String(surge.into())),
                        max_unavailable: Some(IntOrString::String(unavailable.into())),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rs(replicas: i32, annotations: &[(&str, &str)]) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn surge_rounds_up_and_unavailable_down() {
        // The seed tutorial's numbers: 2 replicas, 25%/25% → surge 1, unavailable 0.
        assert_eq!(resolve_fenceposts(&deployment(2, "25%", "25%")), (1, 0));
        assert_eq!(resolve_fenceposts(&deployment(10, "25%", "25%")), (3, 2));
        // Both resolving to zero would never progress: unavailable becomes 1.
        assert_eq!(resolve_fenceposts(&deployment(2, "0%", "0%")), (0, 1));
        assert_eq!(max_unavailable(&deployment(0, "25%", "100%")), 0);
    }

    #[test]
    fn hash_is_stable_safe_and_changes_with_template_and_collisions() {
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: None,
        };
        let h = compute_hash(&t, None);
        assert_eq!(h, compute_hash(&t.clone(), None));
        assert!(h.len() <= 10 && !h.is_empty());
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
        assert_ne!(h, compute_hash(&t, Some(1)));
        let mut t2 = t.clone();
        t2.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert("v".into(), "2".into());
        assert_ne!(h, compute_hash(&t2, None));
        // The hash label itself does not make templates different.
        let mut t3 = t.clone();
        t3.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), "x".into());
        assert!(equal_ignore_hash(&t, &t3));
        assert!(!equal_ignore_hash(&t, &t2));
    }

    #[test]
    fn safe_encoding_matches_apimachinery() {
        // rand.SafeEncodeString("123") in Go.
        assert_eq!(safe_encode("123"), "567");
        assert_eq!(safe_encode("4294967295").len(), 10);
    }

    #[test]
    fn fnv_matches_go() {
        // hash/fnv New32a of "" and "a".
        assert_eq!(fnv32a(b"", FNV32_OFFSET), 0x811c9dc5);
        assert_eq!(fnv32a(b"a", FNV32_OFFSET), 0xe40c292c);
    }

    #[test]
    fn new_replica_set_grows_within_the_surge() {
        let d = deployment(2, "25%", "25%");
        let old = rs(2, &[]);
        let new = rs(0, &[]);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 1);
        let new1 = rs(1, &[]);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new1], &new1), 1);
        let old1 = rs(1, &[]);
        assert_eq!(new_rs_new_replicas(&d, &[&old1, &new1], &new1), 2);
    }

    #[test]
    fn revision_moves_up_and_history_is_kept_on_rollback() {
        let mut d = deployment(2, "25%", "25%");
        d.metadata.annotations = Some(
            [
                (
                    "kubernetes.io/change-cause".to_string(),
                    "kubectl set image".to_string(),
                ),
                (REVISION.to_string(), "3".to_string()),
            ]
            .into(),
        );
        let mut r = rs(2, &[(REVISION, "1")]);
        assert!(set_new_rs_annotations(&d, &mut r, 4, true));
        let a = r.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[REVISION], "4");
        assert_eq!(a[REVISION_HISTORY], "1");
        assert_eq!(a["kubernetes.io/change-cause"], "kubectl set image");
        assert!(!a.contains_key(DESIRED_REPLICAS));
        let mut fresh = rs(0, &[]);
        set_new_rs_annotations(&d, &mut fresh, 1, false);
        let a = fresh.metadata.annotations.as_ref().unwrap();
        assert_eq!(a[DESIRED_REPLICAS], "2");
        assert_eq!(a[MAX_REPLICAS], "3");
        assert!(!a.contains_key(REVISION_HISTORY));
    }

    #[test]
    fn proportions_follow_the_max_replicas_annotation() {
        // Scaling 10 → 15 (surge 25% = 4) while two sets hold 7 and 6 of the old 13.
        let d = deployment(15, "25%", "25%");
        let a = rs(7, &[(MAX_REPLICAS, "13")]);
        // 7 × (15 + 4) / 13 = 10.2 → 10: three more.
        assert_eq!(get_proportion(&a, &d, 6, 0), 3);
        assert_eq!(get_proportion(&a, &d, 6, 5), 1);
    }
}
