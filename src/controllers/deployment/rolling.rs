//! RollingUpdate: scale the new ReplicaSet up as far as maxSurge allows, then the old ones down
//! as far as maxUnavailable allows, one step per sync; each step's ReplicaSet update brings the
//! next sync. With 2 replicas and 25%/25% that is the documented sequence: new to 1, old to 1,
//! new to 2, old to 0.

use anyhow::Result;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};

use super::DeploymentController;
use super::util::*;

impl DeploymentController {
    pub(super) async fn rollout_rolling(
        &self,
        d: &mut Deployment,
        rs_list: Vec<ReplicaSet>,
    ) -> Result<()> {
        let (new, mut old) = self.new_and_old(d, &rs_list, true).await?;
        let Some(mut new) = new else {
            return Ok(());
        };

        if self.reconcile_new(d, &old, &mut new).await? {
            let all: Vec<ReplicaSet> = old.into_iter().chain([new.clone()]).collect();
            return self.sync_rollout_status(d, &all, Some(&new)).await;
        }
        // Only the old sets that still have replicas take part in scaling down (and in counting
        // availability), as FilterActiveReplicaSets makes it in Kubernetes.
        let (mut active, inactive): (Vec<ReplicaSet>, Vec<ReplicaSet>) =
            old.into_iter().partition(|rs| rs_replicas(rs) > 0);
        let scaled_down = self.reconcile_old(d, &mut active, &new).await?;
        old = active.into_iter().chain(inactive).collect();
        if scaled_down {
            let all: Vec<ReplicaSet> = old.into_iter().chain([new.clone()]).collect();
            return self.sync_rollout_status(d, &all, Some(&new)).await;
        }
        if deployment_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, &old).await?;
        }
        let all: Vec<ReplicaSet> = old.into_iter().chain([new.clone()]).collect();
        self.sync_rollout_status(d, &all, Some(&new)).await
    }

    async fn reconcile_new(
        &self,
        d: &Deployment,
        old: &[ReplicaSet],
        new: &mut ReplicaSet,
    ) -> Result<bool> {
        let desired = d_replicas(d);
        let current = rs_replicas(new);
        if current == desired {
            return Ok(false);
        }
        let target = if current > desired {
            desired
        } else {
            let mut all: Vec<&ReplicaSet> = old.iter().collect();
            all.push(new);
            new_rs_new_replicas(d, &all, new)
        };
        let (scaled, updated) = self.scale_rs(new, target, d).await?;
        *new = updated;
        Ok(scaled)
    }

    async fn reconcile_old(
        &self,
        d: &Deployment,
        old: &mut [ReplicaSet],
        new: &ReplicaSet,
    ) -> Result<bool> {
        let old_count = sum_replicas(old.iter());
        if old_count == 0 {
            return Ok(false);
        }
        let all_count = old_count + rs_replicas(new);
        let min_available = d_replicas(d) - max_unavailable(d);
        let new_unavailable = rs_replicas(new) - available_replicas(new);
        // Pods beyond the minimum that are not the new set's still-unavailable ones: removing
        // them cannot lower availability further.
        let max_scaled_down = all_count - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let cleaned = self.cleanup_unhealthy(d, old, max_scaled_down).await?;
        let scaled = self.scale_down_old(d, old, new).await?;
        Ok(cleaned + scaled > 0)
    }

    /// Old ReplicaSets' unavailable pods go first: removing them costs no availability and
    /// stops a broken old revision from blocking the rollout.
    async fn cleanup_unhealthy(
        &self,
        d: &Deployment,
        old: &mut [ReplicaSet],
        max_cleanup: i32,
    ) -> Result<i32> {
        old.sort_by(by_creation);
        let mut total = 0;
        for rs in old.iter_mut() {
            if total >= max_cleanup {
                break;
            }
            let replicas = rs_replicas(rs);
            if replicas == 0 || replicas == available_replicas(rs) {
                continue;
            }
            let down = (max_cleanup - total).min(replicas - available_replicas(rs));
            let (_, updated) = self.scale_rs(rs, replicas - down, d).await?;
            *rs = updated;
            total += down;
        }
        Ok(total)
    }

    async fn scale_down_old(
        &self,
        d: &Deployment,
        old: &mut [ReplicaSet],
        new: &ReplicaSet,
    ) -> Result<i32> {
        let min_available = d_replicas(d) - max_unavailable(d);
        let available: i32 =
            old.iter().map(available_replicas).sum::<i32>() + available_replicas(new);
        if available <= min_available {
            return Ok(0);
        }
        old.sort_by(by_creation);
        let to_scale = available - min_available;
        let mut total = 0;
        for rs in old.iter_mut() {
            if total >= to_scale {
                break;
            }
            let replicas = rs_replicas(rs);
            if replicas == 0 {
                continue;
            }
            let down = replicas.min(to_scale - total);
            let (_, updated) = self.scale_rs(rs, replicas - down, d).await?;
            *rs = updated;
            total += down;
        }
        Ok(total)
    }
}
