//! The Job controller, as kube-controller-manager's: runs up to `parallelism` pods until
//! `completions` have succeeded (or, without completions, until one has and the rest are done),
//! NonIndexed or Indexed (each index 0..completions once, its pods named `<job>-<index>-…` with
//! the completion-index annotation and label and hostname `<job>-<index>`); replaces failed pods
//! after an exponential backoff (10 s doubling, at most 6 minutes) until `backoffLimit`
//! failures, honours activeDeadlineSeconds and suspend, and reports status (active, ready,
//! succeeded, failed, terminating, start and completion time, completedIndexes, conditions
//! SuccessCriteriaMet/Complete or FailureTarget/Failed, Suspended) with kube's events.
//! The TTL-after-finished controller lives here too: a finished Job with
//! ttlSecondsAfterFinished is deleted (with its pods) that long after it finished.
//!
//! A podFailurePolicy (`podfailurepolicy`) can fail the Job on a pod's exit code or condition,
//! or leave a failure uncounted.
//!
//! Pods are counted as they stand (legacy tracking), not through the job-tracking finalizer.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use tracing::info;

use super::podcontrol;
use super::podfailurepolicy::{self, Verdict};
use super::runtime::events::{NORMAL, Recorder, WARNING};
use super::runtime::expectations::Expectations;
use super::runtime::queue::WorkQueue;
use super::runtime::{
    Change, Informer, ObjKey, controller_of, controller_ref, is_conflict, is_not_found,
    pod_is_ready, selector_matches,
};

const WORKERS: usize = 5;
const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(6 * 60);

pub struct JobController {
    client: kube::Client,
    /// The ttl-after-finished controller's account deletes finished Jobs.
    ttl_client: kube::Client,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue<ObjKey>>,
    expectations: Expectations,
    recorder: Recorder,
}

fn now_time() -> Time {
    let now = jiff::Timestamp::now();
    Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_KEY))
        .or_else(|| pod.metadata.labels.as_ref().and_then(|l| l.get(INDEX_KEY)))
        .and_then(|v| v.parse().ok())
}

fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn condition(type_: &str, reason: &str, message: &str) -> JobCondition {
    let now = now_time();
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// "0-2,4": completed indexes in kube's interval notation.
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = indexes.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else if end == start + 1 {
            format!("{start},{end}")
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The backoff before the next pod after `failures` consecutive failures.
fn backoff(failures: i32) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    BACKOFF_BASE
        .saturating_mul(1u32 << (failures - 1).min(10))
        .min(BACKOFF_MAX)
}

/// When the pod's containers last finished (for the backoff clock).
fn finish_time(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max()
}

impl JobController {
    pub fn new(
        client: kube::Client,
        ttl_client: kube::Client,
        jobs: Arc<Informer<Job>>,
        pods: Arc<Informer<Pod>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(JobController {
            client,
            ttl_client,
            jobs,
            pods,
            queue: WorkQueue::new(),
            expectations: Expectations::default(),
            recorder,
        });
        let weak = Arc::downgrade(&this);
        this.jobs.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                let j = change.object();
                if let Change::Deleted(_) = change {
                    c.expectations.forget(&ObjKey::of(&**j));
                }
                c.queue.add(ObjKey::of(&**j));
            }
        });
        let weak = Arc::downgrade(&this);
        this.pods.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                match change {
                    Change::Added(p) => c.pod_changed(p, true, false),
                    Change::Updated { new, .. } => c.pod_changed(new, false, false),
                    Change::Deleted(p) => c.pod_changed(p, false, true),
                }
            }
        });
        this
    }

    fn owner_of(&self, pod: &Pod) -> Option<Arc<Job>> {
        let owner = controller_of(&pod.metadata).filter(|o| o.kind == "Job")?;
        let job = self.jobs.get(&ObjKey::new(
            &pod.namespace().unwrap_or_default(),
            &owner.name,
        ))?;
        (job.metadata.uid.as_deref() == Some(owner.uid.as_str())).then_some(job)
    }

    fn pod_changed(&self, pod: &Pod, added: bool, deleted: bool) {
        let Some(job) = self.owner_of(pod) else {
            // An orphan: jobs whose selector matches may adopt it.
            if controller_of(&pod.metadata).is_none() && !deleted {
                for job in self
                    .jobs
                    .list_namespace(&pod.namespace().unwrap_or_default())
                {
                    let sel = job.spec.as_ref().and_then(|s| s.selector.as_ref());
                    if selector_matches(sel, pod.metadata.labels.as_ref()) {
                        self.queue.add(ObjKey::of(&*job));
                    }
                }
            }
            return;
        };
        let key = ObjKey::of(&*job);
        if added && pod.metadata.deletion_timestamp.is_none() {
            self.expectations.creation_observed(&key);
        }
        if deleted || pod.metadata.deletion_timestamp.is_some() {
            self.expectations.deletion_observed(&key, &ObjKey::of(pod));
        }
        self.queue.add(key);
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.jobs.wait_synced().await;
        self.pods.wait_synced().await;
        info!("job and ttl-after-finished controllers started");
        self.queue
            .run_workers(WORKERS, "job", |key| {
                let this = &self;
                async move { this.sync(&key).await }
            })
            .await;
        Ok(())
    }

    /// The job's pods: its own that still match, plus matching orphans it adopts.
    async fn claim_pods(&self, job: &Job) -> Result<Vec<Arc<Pod>>> {
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let selector = job.spec.as_ref().and_then(|s| s.selector.as_ref());
        let mut claimed = Vec::new();
        for pod in self
            .pods
            .list_namespace(&job.namespace().unwrap_or_default())
        {
            let matches = selector_matches(selector, pod.metadata.labels.as_ref());
            match controller_of(&pod.metadata) {
                Some(o) if o.uid != uid => {}
                Some(_) => {
                    if matches {
                        claimed.push(pod);
                    } else if job.metadata.deletion_timestamp.is_none() {
                        podcontrol::release(&self.client, &uid, &pod).await?;
                    }
                }
                None => {
                    if matches
                        && job.metadata.deletion_timestamp.is_none()
                        && pod.metadata.deletion_timestamp.is_none()
                    {
                        let owner = controller_ref("batch/v1", "Job", &job.metadata);
                        if podcontrol::adopt(&self.client, owner, &pod).await? {
                            claimed.push(pod);
                        }
                    }
                }
            }
        }
        Ok(claimed)
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let Some(cached) = self.jobs.get(key) else {
            self.expectations.forget(key);
            return Ok(());
        };
        let mut job = (*cached).clone();
        if finished(&job) {
            return self.ttl_after_finished(&job).await;
        }
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let spec = job.spec.clone().unwrap_or_default();
        let pods = self.claim_pods(&job).await?;
        let active: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && !matches!(phase(p), "Succeeded" | "Failed")
            })
            .cloned()
            .collect();
        let terminating = pods
            .iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && !matches!(phase(p), "Succeeded" | "Failed")
            })
            .count() as i32;
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let succeeded_pods: Vec<&Arc<Pod>> =
            pods.iter().filter(|p| phase(p) == "Succeeded").collect();
        let completed_indexes: BTreeSet<i32> = if indexed {
            succeeded_pods
                .iter()
                .filter_map(|p| index_of(p))
                .filter(|i| *i >= 0 && *i < spec.completions.unwrap_or(0))
                .collect()
        } else {
            BTreeSet::new()
        };
        let succeeded = if indexed {
            completed_indexes.len() as i32
        } else {
            succeeded_pods.len() as i32
        };
        // podFailurePolicy: ignored failures do not count; the first FailJob verdict ends it.
        let policy = spec.pod_failure_policy.as_ref();
        let mut failed = 0;
        let mut fail_job: Option<String> = None;
        for pod in pods.iter().filter(|p| phase(p) == "Failed") {
            match podfailurepolicy::judge(policy, pod) {
                Verdict::Ignore => {}
                Verdict::Count => failed += 1,
                Verdict::FailJob(message) => {
                    failed += 1;
                    fail_job.get_or_insert(message);
                }
            }
        }
        let previous = job.status.clone().unwrap_or_default();
        let suspended = spec.suspend == Some(true);
        let mut status = JobStatus {
            conditions: previous.conditions.clone(),
            start_time: previous.start_time.clone(),
            ..Default::default()
        };
        if status.start_time.is_none() && !suspended {
            status.start_time = Some(now_time());
            if let Some(deadline) = spec.active_deadline_seconds {
                self.queue
                    .add_after(key.clone(), Duration::from_secs(deadline.max(0) as u64));
            }
        }

        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let restart_on_failure = spec
            .template
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.as_deref())
            == Some("OnFailure");
        let restarts: i32 = active
            .iter()
            .flat_map(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.clone())
                    .unwrap_or_default()
            })
            .map(|c| c.restart_count)
            .sum();
        let past_deadline = spec.active_deadline_seconds.is_some_and(|d| {
            status
                .start_time
                .as_ref()
                .is_some_and(|t| jiff::Timestamp::now().duration_since(t.0).as_secs() >= d)
        }) && !suspended;

        let mut finished_with: Option<(&str, &str, String)> = None;
        if let Some(message) = fail_job {
            finished_with = Some(("Failed", "PodFailurePolicy", message));
        } else if failed > backoff_limit
            || (restart_on_failure && backoff_limit > 0 && restarts >= backoff_limit)
            || (restart_on_failure && backoff_limit == 0 && restarts > 0)
        {
            finished_with = Some((
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit".into(),
            ));
        } else if past_deadline {
            finished_with = Some((
                "Failed",
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
            ));
        }

        let mut active_count = active.len() as i32;
        if let Some((_, reason, message)) = &finished_with {
            // Finished by failure: nothing of it keeps running.
            join_all(
                active
                    .iter()
                    .map(|p| podcontrol::delete(&self.client, &self.recorder, &job, p)),
            )
            .await;
            active_count = 0;
            self.recorder
                .event(&job, WARNING, reason, "Fail", message.to_string());
        } else if self.expectations.satisfied(key) {
            active_count = self
                .manage(
                    key,
                    &job,
                    &active,
                    succeeded,
                    &completed_indexes,
                    &pods,
                    suspended,
                )
                .await?;
        }

        let complete = finished_with.is_none()
            && match spec.completions {
                Some(c) => succeeded >= c,
                None => succeeded > 0 && active_count == 0,
            };
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        let set = |conditions: &mut Vec<JobCondition>, c: JobCondition| {
            if !conditions
                .iter()
                .any(|x| x.type_ == c.type_ && x.status == c.status)
            {
                conditions.retain(|x| x.type_ != c.type_);
                conditions.push(c);
            }
        };
        if let Some((_, reason, message)) = &finished_with {
            set(conditions, condition("FailureTarget", reason, message));
            set(conditions, condition("Failed", reason, message));
        } else if complete {
            let message = "Reached expected number of succeeded pods";
            set(
                conditions,
                condition("SuccessCriteriaMet", "CompletionsReached", message),
            );
            set(
                conditions,
                condition("Complete", "CompletionsReached", message),
            );
            status.completion_time = Some(now_time());
            self.recorder.event(
                &job,
                NORMAL,
                "Completed",
                "Complete",
                "Job completed".into(),
            );
        }
        let was_suspended = conditions
            .iter()
            .any(|c| c.type_ == "Suspended" && c.status == "True");
        if suspended && !was_suspended {
            set(
                conditions,
                condition("Suspended", "JobSuspended", "Job suspended"),
            );
            self.recorder
                .event(&job, NORMAL, "Suspended", "Suspend", "Job suspended".into());
        } else if !suspended && was_suspended {
            let mut resumed = condition("Suspended", "JobResumed", "Job resumed");
            resumed.status = "False".into();
            conditions.retain(|c| c.type_ != "Suspended");
            conditions.push(resumed);
            self.recorder
                .event(&job, NORMAL, "Resumed", "Resume", "Job resumed".into());
            // The deadline counts from the resumption.
            status.start_time = Some(now_time());
        }
        if conditions.is_empty() {
            status.conditions = None;
        }
        let nz = |v: i32| (v != 0).then_some(v);
        status.active = nz(if complete { 0 } else { active_count });
        status.ready = Some(active.iter().filter(|p| pod_is_ready(p)).count() as i32);
        status.succeeded = nz(succeeded);
        status.failed = nz(failed);
        status.terminating = Some(terminating);
        if indexed && !completed_indexes.is_empty() {
            status.completed_indexes = Some(format_indexes(&completed_indexes));
        }
        status.uncounted_terminated_pods = previous.uncounted_terminated_pods.clone();
        if Some(&status) != job.status.as_ref() {
            job.status = Some(status);
            let api: Api<Job> = Api::namespaced(self.client.clone(), &key.namespace);
            match api
                .replace_status(&key.name, &PostParams::default(), &job)
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e).context("cannot update the job's status"),
            }
        }
        if finished(&job) {
            self.ttl_after_finished(&job).await?;
        }
        Ok(())
    }

    /// Creates or deletes pods toward the wanted number of active ones; returns the active count
    /// as it will be.
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        key: &ObjKey,
        job: &Job,
        active: &[Arc<Pod>],
        succeeded: i32,
        completed_indexes: &BTreeSet<i32>,
        all: &[Arc<Pod>],
        suspended: bool,
    ) -> Result<i32> {
        let spec = job.spec.clone().unwrap_or_default();
        let parallelism = spec.parallelism.unwrap_or(1);
        let indexed = spec.completion_mode.as_deref() == Some("Indexed");
        let mut active_count = active.len() as i32;
        let want = if suspended {
            0
        } else {
            match spec.completions {
                None if succeeded > 0 => active_count,
                None => parallelism,
                Some(c) => (c - succeeded).clamp(0, parallelism),
            }
        };
        if active_count > want {
            // Not-ready and younger pods go first.
            let mut doomed: Vec<Arc<Pod>> = active.to_vec();
            doomed.sort_by_key(|p| {
                (
                    pod_is_ready(p),
                    std::cmp::Reverse(p.metadata.creation_timestamp.clone().map(|t| t.0)),
                )
            });
            doomed.truncate((active_count - want) as usize);
            self.expectations
                .expect_deletions(key, doomed.iter().map(|p| ObjKey::of(&**p)));
            let results = join_all(
                doomed
                    .iter()
                    .map(|p| podcontrol::delete(&self.client, &self.recorder, job, p)),
            )
            .await;
            for (p, r) in doomed.iter().zip(&results) {
                if r.is_err() {
                    self.expectations.deletion_observed(key, &ObjKey::of(&**p));
                }
            }
            active_count = want;
            return Ok(active_count);
        }
        if active_count >= want {
            return Ok(active_count);
        }
        // Replacements for failed pods wait out the backoff.
        let failures: Vec<&Arc<Pod>> = all.iter().filter(|p| phase(p) == "Failed").collect();
        if !failures.is_empty() {
            let last = failures.iter().filter_map(|p| finish_time(p)).max();
            let wait = backoff(failures.len() as i32);
            if let Some(last) = last {
                let since = jiff::Timestamp::now().duration_since(last);
                let since = Duration::from_secs(since.as_secs().max(0) as u64);
                if since < wait {
                    self.queue.add_after(key.clone(), wait - since);
                    return Ok(active_count);
                }
            }
        }
        let mut indexes: Vec<Option<i32>> = Vec::new();
        let diff = (want - active_count) as usize;
        if indexed {
            let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
            let completions = spec.completions.unwrap_or(0);
            indexes = (0..completions)
                .filter(|i| !completed_indexes.contains(i) && !running.contains(i))
                .take(diff)
                .map(Some)
                .collect();
        } else {
            indexes.resize(diff, None);
        }
        if indexes.is_empty() {
            return Ok(active_count);
        }
        self.expectations.expect_creations(key, indexes.len());
        let owner = controller_ref("batch/v1", "Job", &job.metadata);
        let name = job.name_any();
        let results = join_all(indexes.iter().map(|index| {
            let generate_name = match index {
                Some(i) => format!("{name}-{i}-"),
                None => format!("{name}-"),
            };
            let index = *index;
            let job_name = name.clone();
            podcontrol::create(
                &self.client,
                &self.recorder,
                job,
                owner.clone(),
                &spec.template,
                generate_name,
                move |pod| {
                    if let Some(i) = index {
                        let value = i.to_string();
                        pod.metadata
                            .annotations
                            .get_or_insert_with(Default::default)
                            .insert(INDEX_KEY.into(), value.clone());
                        pod.metadata
                            .labels
                            .get_or_insert_with(Default::default)
                            .insert(INDEX_KEY.into(), value);
                        if let Some(spec) = pod.spec.as_mut()
                            && spec.hostname.is_none()
                        {
                            spec.hostname = Some(format!("{job_name}-{i}"));
                        }
                    }
                },
            )
        }))
        .await;
        let mut first_error = None;
        for r in results {
            match r {
                Ok(_) => active_count += 1,
                Err(e) => {
                    self.expectations.creation_observed(key);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(active_count),
        }
    }

    /// ttlafterfinished: delete the finished Job (and, in the background, its pods) once its
    /// ttlSecondsAfterFinished has passed since it finished.
    async fn ttl_after_finished(&self, job: &Job) -> Result<()> {
        let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
            return Ok(());
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let finished_at = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
            .max()
            .unwrap_or_else(jiff::Timestamp::now);
        let due = finished_at + jiff::SignedDuration::from_secs(ttl as i64);
        let left = due.duration_since(jiff::Timestamp::now());
        if left.as_millis() > 0 {
            self.queue.add_after(
                ObjKey::of(job),
                Duration::from_millis(left.as_millis().max(0) as u64),
            );
            return Ok(());
        }
        let api: Api<Job> = Api::namespaced(
            self.ttl_client.clone(),
            &job.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(kube::api::Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&job.name_any(), &params).await {
            Ok(_) => {
                info!(job = %job.name_any(), "finished job deleted after its TTL");
                Ok(())
            }
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(e) => Err(e).context("cannot delete a finished job"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_use_kubes_interval_notation() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&set), "0-2,4,6,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(format_indexes(&[3].into()), "3");
    }

    #[test]
    fn pod_failure_backoff_doubles_from_ten_seconds() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(12), Duration::from_secs(360));
    }
}
