//! Deployment status and conditions (kube's sync.go calculateStatus and progress.go): the counts
//! `kubectl get deployment` and `kubectl rollout status` read, Available, Progressing with its
//! reasons, ReplicaFailure copied up from the ReplicaSets, and the deadline check.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use kube::ResourceExt;

use super::DeploymentController;
use super::util::*;

/// Zero counts are left out of the stored status, as Go's omitempty does.
fn nz(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

/// calculateStatus.
pub fn calculate_status(
    all: &[ReplicaSet],
    new: Option<&ReplicaSet>,
    d: &Deployment,
) -> DeploymentStatus {
    let available: i32 = all.iter().map(available_replicas).sum();
    let total = sum_replicas(all.iter());
    let unavailable = (total - available).max(0);
    let current = d.status.clone().unwrap_or_default();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nz(all.iter().map(actual_replicas).sum()),
        updated_replicas: nz(new.map(actual_replicas).unwrap_or(0)),
        ready_replicas: nz(all.iter().map(ready_replicas).sum()),
        available_replicas: nz(available),
        unavailable_replicas: nz(unavailable),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: None,
    };
    let condition = if available >= d_replicas(d) - max_unavailable(d) {
        new_condition(
            "Available",
            "True",
            REASON_MIN_AVAILABLE,
            "Deployment has minimum availability.".into(),
        )
    } else {
        new_condition(
            "Available",
            "False",
            REASON_MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
        )
    };
    set_condition(&mut status, condition);
    status
}

/// The first ReplicaFailure among the ReplicaSets, the new one's first.
fn replica_failure(all: &[ReplicaSet], new: Option<&ReplicaSet>) -> Option<DeploymentCondition> {
    let convert = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "ReplicaFailure")
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.clone(),
                last_update_time: c.last_transition_time.clone(),
            })
    };
    new.and_then(convert)
        .or_else(|| all.iter().find_map(convert))
}

impl DeploymentController {
    /// syncDeploymentStatus: counts and Available only (scaling, paused, being deleted).
    pub(super) async fn sync_deployment_status(
        &self,
        d: &mut Deployment,
        all: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<()> {
        let status = calculate_status(all, new, d);
        if d.status.as_ref() == Some(&status) {
            return Ok(());
        }
        d.status = Some(status);
        self.update_status(d).await
    }

    /// syncRolloutStatus: counts plus the Progressing condition and the deadline.
    pub(super) async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        all: &[ReplicaSet],
        new: Option<&ReplicaSet>,
    ) -> Result<()> {
        let mut status = calculate_status(all, new, d);
        if !has_progress_deadline(d) {
            remove_condition(&mut status, "Progressing");
        }
        let current = d
            .status
            .as_ref()
            .and_then(|s| get_condition(s, "Progressing"))
            .cloned();
        let complete_before = status.replicas == status.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(REASON_NEW_RS_AVAILABLE));
        if has_progress_deadline(d) && !complete_before {
            let name = d.name_any();
            let subject = |what: &str| match new {
                Some(rs) => format!("ReplicaSet \"{}\" {what}", rs.name_any()),
                None => format!("Deployment \"{name}\" {what}"),
            };
            if deployment_complete(d, &status) {
                let c = new_condition(
                    "Progressing",
                    "True",
                    REASON_NEW_RS_AVAILABLE,
                    subject("has successfully progressed."),
                );
                set_condition(&mut status, c);
            } else if deployment_progressing(d, &status) {
                let mut c = new_condition(
                    "Progressing",
                    "True",
                    REASON_RS_UPDATED,
                    subject("is progressing."),
                );
                // Progress moves lastUpdateTime even when the reason stays the same.
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                }
                set_condition(&mut status, c);
            } else if deployment_timed_out(d, &status, jiff::Timestamp::now()) {
                let c = new_condition(
                    "Progressing",
                    "False",
                    REASON_TIMED_OUT,
                    subject("has timed out progressing."),
                );
                set_condition(&mut status, c);
            }
        }
        match replica_failure(all, new) {
            Some(c) => set_condition(&mut status, c),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        if d.status.as_ref() == Some(&status) {
            self.requeue_stuck(d, &status);
            return Ok(());
        }
        d.status = Some(status);
        self.update_status(d).await
    }

    /// Nothing else wakes a rollout that stopped making progress: check again when its
    /// deadline passes.
    fn requeue_stuck(&self, d: &Deployment, status: &DeploymentStatus) {
        let Some(current) = d
            .status
            .as_ref()
            .and_then(|s| get_condition(s, "Progressing"))
        else {
            return;
        };
        if !has_progress_deadline(d)
            || deployment_complete(d, status)
            || current.reason.as_deref() == Some(REASON_TIMED_OUT)
        {
            return;
        }
        let deadline = d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .unwrap_or(600) as i64;
        let Some(last) = current.last_update_time.as_ref() else {
            return;
        };
        let due = last.0 + jiff::SignedDuration::from_secs(deadline);
        let after = due.duration_since(jiff::Timestamp::now());
        let key = super::ObjKey::of(d);
        if after < jiff::SignedDuration::from_secs(1) {
            self.queue.add_rate_limited(key);
        } else {
            let after = Duration::from_secs(after.as_secs().max(1) as u64);
            self.queue.add_after(key, after);
        }
    }

    /// checkPausedConditions: Progressing=Unknown while paused, so time spent paused never
    /// counts against progressDeadlineSeconds.
    pub(super) async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<()> {
        if !has_progress_deadline(d) {
            return Ok(());
        }
        let status = d.status.clone().unwrap_or_default();
        let cond = get_condition(&status, "Progressing");
        if cond.is_some_and(|c| c.reason.as_deref() == Some(REASON_TIMED_OUT)) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(REASON_PAUSED));
        let paused = d.spec.as_ref().and_then(|s| s.paused) == Some(true);
        let condition = if paused && !paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                REASON_PAUSED,
                "Deployment is paused".into(),
            )
        } else if !paused && paused_cond {
            new_condition(
                "Progressing",
                "Unknown",
                REASON_RESUMED,
                "Deployment is resumed".into(),
            )
        } else {
            return Ok(());
        };
        set_condition(d.status.get_or_insert_with(Default::default), condition);
        self.update_status(d).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, ReplicaSetSpec, ReplicaSetStatus};

    fn rs(spec: i32, actual: i32, ready: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(spec),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: actual,
                ready_replicas: Some(ready),
                available_replicas: Some(available),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn status_counts_and_availability() {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.metadata.generation = Some(3);
        let old = rs(1, 1, 1, 1);
        let new = rs(2, 2, 1, 1);
        let s = calculate_status(&[old.clone(), new.clone()], Some(&new), &d);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.replicas, Some(3));
        assert_eq!(s.updated_replicas, Some(2));
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.available_replicas, Some(2));
        assert_eq!(s.unavailable_replicas, Some(1));
        let available = get_condition(&s, "Available").unwrap();
        assert_eq!(available.status, "True");
        assert_eq!(available.reason.as_deref(), Some(REASON_MIN_AVAILABLE));
        let s = calculate_status(&[rs(2, 2, 0, 0)], None, &d);
        assert_eq!(s.unavailable_replicas, Some(2));
        assert_eq!(s.available_replicas, None);
        assert_eq!(get_condition(&s, "Available").unwrap().status, "False");
    }
}
