//! The CronJob controller, as kube-controller-manager's (cronjob v2): at each scheduled time
//! (in spec.timeZone, else UTC) a Job `<cronjob>-<minutes since the epoch>` is made from the
//! jobTemplate, subject to startingDeadlineSeconds, concurrencyPolicy (Allow, Forbid, Replace)
//! and suspend; status.active and lastScheduleTime/lastSuccessfulTime follow its Jobs; finished
//! Jobs beyond successfulJobsHistoryLimit and failedJobsHistoryLimit are deleted.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use tracing::info;

use super::cron::Schedule;
use super::runtime::events::{NORMAL, Recorder, WARNING};
use super::runtime::queue::WorkQueue;
use super::runtime::{Informer, ObjKey, controller_of, controller_ref, is_not_found};

const WORKERS: usize = 2;
const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

pub struct CronJobController {
    client: kube::Client,
    cronjobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
    queue: Arc<WorkQueue<ObjKey>>,
    recorder: Recorder,
}

/// Complete or Failed, and which.
fn finished(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for c in conditions {
        if c.status == "True" {
            if c.type_ == "Complete" {
                return Some("Complete");
            }
            if c.type_ == "Failed" {
                return Some("Failed");
            }
        }
    }
    None
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// The time a job of a CronJob was scheduled for, from the annotation the controller writes.
fn scheduled_at(job: &Job) -> Option<Time> {
    let at: jiff::Timestamp = job
        .metadata
        .annotations
        .as_ref()?
        .get(SCHEDULED_AT)?
        .parse()
        .ok()?;
    Some(whole_seconds(at))
}

fn whole_seconds(t: jiff::Timestamp) -> Time {
    Time(jiff::Timestamp::from_second(t.as_second()).unwrap_or(t))
}

impl CronJobController {
    pub fn new(
        client: kube::Client,
        cronjobs: Arc<Informer<CronJob>>,
        jobs: Arc<Informer<Job>>,
        recorder: Recorder,
    ) -> Arc<Self> {
        let this = Arc::new(CronJobController {
            client,
            cronjobs,
            jobs,
            queue: WorkQueue::new(),
            recorder,
        });
        let weak = Arc::downgrade(&this);
        this.cronjobs.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                let j = change.object();
                c.queue.add(ObjKey::of(&**j));
            }
        });
        let weak = Arc::downgrade(&this);
        this.jobs.add_handler(move |change| {
            if let Some(c) = weak.upgrade() {
                let j = change.object();
                if let Some(owner) = controller_of(&j.metadata).filter(|o| o.kind == "CronJob") {
                    c.queue
                        .add(ObjKey::new(&j.namespace().unwrap_or_default(), &owner.name));
                }
            }
        });
        this
    }

    pub async fn run(self: Arc<Self>) -> Result<()> {
        self.cronjobs.wait_synced().await;
        self.jobs.wait_synced().await;
        info!("cronjob controller started");
        self.queue
            .run_workers(WORKERS, "cronjob", |key| {
                let this = &self;
                async move { this.sync(&key).await }
            })
            .await;
        Ok(())
    }

    async fn delete_job(&self, cj: &CronJob, job: &Job) -> Result<()> {
        let api: Api<Job> =
            Api::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&job.name_any(), &params).await {
            Ok(_) => {
                self.recorder.event(
                    cj,
                    NORMAL,
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted job {}", job.name_any()),
                );
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e).context("cannot delete a job"),
        }
    }

    async fn sync(&self, key: &ObjKey) -> Result<()> {
        let Some(cached) = self.cronjobs.get(key) else {
            return Ok(());
        };
        if cached.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let mut cj = (*cached).clone();
        let spec = cj.spec.clone().unwrap_or_default();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let mut jobs: Vec<Arc<Job>> = self
            .jobs
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|j| controller_of(&j.metadata).is_some_and(|o| o.uid == uid))
            .collect();
        jobs.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
        let mut status = cj.status.clone().unwrap_or_default();
        let was_active: Vec<String> = status
            .active
            .iter()
            .flatten()
            .filter_map(|r| r.uid.clone())
            .collect();
        for job in &jobs {
            if let Some(how) = finished(job)
                && job
                    .metadata
                    .uid
                    .as_ref()
                    .is_some_and(|u| was_active.contains(u))
            {
                self.recorder.event(
                    &cj,
                    NORMAL,
                    "SawCompletedJob",
                    "Sync",
                    format!("Saw completed job: {}, condition: {how}", job.name_any()),
                );
            }
            if finished(job) == Some("Complete")
                && let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.clone())
                && status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|t| t.0 < done.0)
            {
                status.last_successful_time = Some(done);
            }
        }
        // A job of ours exists for its scheduled time even when the status write that recorded
        // it lost a race (a 409 after someone else changed the CronJob): lastScheduleTime never
        // lags behind the jobs, and an existing job is never counted as not yet started.
        if let Some(latest) = jobs.iter().filter_map(|j| scheduled_at(j)).max()
            && status
                .last_schedule_time
                .as_ref()
                .is_none_or(|t| t.0 < latest.0)
        {
            status.last_schedule_time = Some(latest);
        }
        let active: Vec<ObjectReference> = jobs
            .iter()
            .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
            .map(|j| reference(j))
            .collect();
        status.active = (!active.is_empty()).then_some(active);

        // History limits: the oldest finished jobs beyond them go.
        for (how, limit) in [
            ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
            ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let done: Vec<&Arc<Job>> = jobs
                .iter()
                .filter(|j| finished(j) == Some(how) && j.metadata.deletion_timestamp.is_none())
                .collect();
            let surplus = done.len().saturating_sub(limit.max(0) as usize);
            for job in done.into_iter().take(surplus) {
                self.delete_job(&cj, job).await?;
            }
        }

        let outcome = self.maybe_start(&cj, &spec, &jobs, &mut status).await;
        if Some(&status) != cj.status.as_ref() {
            cj.status = Some(status);
            let api: Api<CronJob> = Api::namespaced(self.client.clone(), &key.namespace);
            match api
                .replace_status(&key.name, &PostParams::default(), &cj)
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e).context("cannot update the cronjob's status"),
            }
        }
        outcome
    }

    /// Starts the job for the most recent missed time, if one is due; requeues for the next.
    async fn maybe_start(
        &self,
        cj: &CronJob,
        spec: &k8s_openapi::api::batch::v1::CronJobSpec,
        jobs: &[Arc<Job>],
        status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
    ) -> Result<()> {
        if spec.suspend == Some(true) {
            return Ok(());
        }
        let tz = match spec.time_zone.as_deref() {
            None => jiff::tz::TimeZone::UTC,
            Some(name) => match crate::apiserver::kinds::batch::load_time_zone(name) {
                Ok(tz) => tz,
                Err(e) => {
                    self.recorder.event(
                        cj,
                        WARNING,
                        "UnknownTimeZone",
                        "Sync",
                        format!("invalid timeZone: {name:?}: {e}"),
                    );
                    return Ok(());
                }
            },
        };
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.recorder.event(
                    cj,
                    WARNING,
                    "InvalidSchedule",
                    "Sync",
                    format!("invalid schedule: {} : {e}", spec.schedule),
                );
                return Ok(());
            }
        };
        let now = jiff::Timestamp::now().to_zoned(tz.clone());
        let mut earliest = status
            .last_schedule_time
            .as_ref()
            .or(cj.metadata.creation_timestamp.as_ref())
            .map(|t| t.0)
            .unwrap_or_else(jiff::Timestamp::now);
        if let Some(deadline) = spec.starting_deadline_seconds {
            let window = now.timestamp() - jiff::SignedDuration::from_secs(deadline);
            earliest = earliest.max(window);
        }
        // The most recent time due, and how many were missed.
        let mut missed = 0u32;
        let mut due = None;
        let mut t = earliest.to_zoned(tz.clone());
        while let Some(next) = schedule.next(&t) {
            if next.timestamp() > now.timestamp() {
                break;
            }
            missed += 1;
            due = Some(next.clone());
            t = next;
            if missed > 100_000 {
                break;
            }
        }
        let key = ObjKey::of(cj);
        if let Some(next) = schedule.next(&now) {
            let wait = next.timestamp().duration_since(now.timestamp());
            // A little after the minute turns, so the time is surely due.
            let wait = Duration::from_millis(wait.as_millis().max(0) as u64 + 100);
            self.queue.add_after(key.clone(), wait);
        }
        let Some(due) = due else {
            return Ok(());
        };
        if missed > 100 {
            self.recorder.event(
                cj,
                WARNING,
                "TooManyMissedTimes",
                "Sync",
                format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
            );
        }
        let name = format!("{}-{}", cj.name_any(), due.timestamp().as_second() / 60);
        if jobs.iter().any(|j| j.name_any() == name) {
            return Ok(());
        }
        let active: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
            .collect();
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if !active.is_empty() => {
                self.recorder.event(
                    cj,
                    NORMAL,
                    "JobAlreadyActive",
                    "Sync",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                );
                return Ok(());
            }
            Some("Replace") => {
                for job in &active {
                    self.delete_job(cj, job).await?;
                }
                status.active = None;
            }
            _ => {}
        }
        let template = spec.job_template.clone();
        let meta = template.metadata.clone().unwrap_or_default();
        let mut annotations = meta.annotations.unwrap_or_default();
        annotations.insert(
            SCHEDULED_AT.into(),
            whole_seconds(due.timestamp()).0.to_string(),
        );
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: cj.namespace(),
                labels: meta.labels,
                annotations: Some(annotations),
                owner_references: Some(vec![controller_ref("batch/v1", "CronJob", &cj.metadata)]),
                ..Default::default()
            },
            spec: template.spec,
            status: None,
        };
        let api: Api<Job> =
            Api::namespaced(self.client.clone(), &cj.namespace().unwrap_or_default());
        match api.create(&PostParams::default(), &job).await {
            Ok(created) => {
                self.recorder.event(
                    cj,
                    NORMAL,
                    "SuccessfulCreate",
                    "Create",
                    format!("Created job {name}"),
                );
                status
                    .active
                    .get_or_insert_with(Vec::new)
                    .push(reference(&created));
                status.last_schedule_time = Some(whole_seconds(due.timestamp()));
                Ok(())
            }
            Err(e) if super::runtime::api_code(&e) == Some(409) => {
                status.last_schedule_time = Some(whole_seconds(due.timestamp()));
                Ok(())
            }
            Err(e) => {
                self.recorder.event(
                    cj,
                    WARNING,
                    "FailedCreate",
                    "Create",
                    format!("Error creating job: {}", super::runtime::error_message(&e)),
                );
                Err(e).context("cannot create the scheduled job")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_time_comes_from_the_jobs_annotation() {
        let mut job = Job::default();
        assert_eq!(scheduled_at(&job), None);
        job.metadata.annotations =
            Some([(SCHEDULED_AT.to_string(), "2026-12-06T21:00:00Z".to_string())].into());
        let at = scheduled_at(&job).map(|t| t.0.as_second());
        assert_eq!(at, Some(1_796_590_800));
        job.metadata.annotations = Some([(SCHEDULED_AT.to_string(), "soon".to_string())].into());
        assert_eq!(scheduled_at(&job), None);
    }
}
