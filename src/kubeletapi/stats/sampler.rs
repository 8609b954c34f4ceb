//! CPU usage rates from cumulative counters, as cadvisor's housekeeping gives kubelet its
//! `usageNanoCores`: a background task samples every cgroup of interest every [`PERIOD`]; the
//! rate is the usage between the two newest samples over the time between them.
//!
//! So that a new pod (or a just-started node) has a rate before two periods have passed, a
//! request for a cgroup with a single sample at least [`MIN_WINDOW`] old reads the counter
//! again and uses that pair; the fresh reading becomes the cgroup's newest sample.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use super::cgroup;
use super::containers;
use crate::runtime::container::Runtime;

/// How often the background task samples (cadvisor's housekeeping interval).
pub const PERIOD: Duration = Duration::from_secs(10);
/// The shortest interval a rate is computed over: shorter ones are mostly scheduling noise.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at: Instant,
    pub time: jiff::Timestamp,
    pub cpu_ns: u64,
}

/// What the Summary API reports of a cgroup's CPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuReading {
    /// When the counter was read.
    pub time: jiff::Timestamp,
    pub usage_core_nano_seconds: u64,
    /// None until two samples far enough apart exist.
    pub usage_nano_cores: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct History {
    older: Option<Sample>,
    newest: Option<Sample>,
}

impl History {
    /// Keeps the two newest samples at least [`MIN_WINDOW`] apart: a sample right after the
    /// newest (a request's reading just before a background tick, or the other way round)
    /// would otherwise leave a pair with no rate until the next tick.
    fn push(&mut self, sample: Sample) {
        let close = self
            .newest
            .is_some_and(|n| sample.at.saturating_duration_since(n.at) < MIN_WINDOW);
        match (close, self.older.is_some()) {
            (false, _) => self.older = self.newest.replace(sample),
            // The older sample is far enough from this one too: the pair just gets fresher.
            (true, true) => self.newest = Some(sample),
            // The first sample stays the base the next rate is taken from.
            (true, false) => {}
        }
    }
}

/// Nanocores used between two samples: CPU-nanoseconds per second of wall time. None when the
/// samples are too close, or the counter went backwards (the cgroup was made anew).
pub fn rate_nano_cores(older: &Sample, newer: &Sample) -> Option<u64> {
    let elapsed = newer.at.checked_duration_since(older.at)?;
    if elapsed < MIN_WINDOW {
        return None;
    }
    let used = newer.cpu_ns.checked_sub(older.cpu_ns)?;
    let rate = u128::from(used) * 1_000_000_000 / elapsed.as_nanos();
    u64::try_from(rate).ok()
}

#[derive(Default)]
pub struct Sampler {
    history: Mutex<HashMap<String, History>>,
}

impl Sampler {
    /// Samples the node and its running containers and pods every [`PERIOD`] for as long as
    /// the runtime exists.
    pub fn spawn(self: &Arc<Self>, runtime: Arc<Runtime>) {
        let sampler = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(PERIOD);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(sampler) = sampler.upgrade() else {
                    return;
                };
                let runtime = runtime.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || sampler.tick(&runtime)).await {
                    debug!(error = %e, "a statistics sample did not complete");
                }
            }
        });
    }

    /// One round: every cgroup of interest sampled; cgroups that are gone forgotten.
    fn tick(&self, runtime: &Runtime) {
        let mut wanted: HashSet<String> = HashSet::from([String::new()]);
        for c in containers::running(runtime) {
            wanted.insert(c.pod_cgroup);
            wanted.insert(c.cgroup);
        }
        let samples: Vec<(String, Sample)> = wanted
            .iter()
            .filter_map(|rel| Some((rel.clone(), read(rel)?)))
            .collect();
        let mut history = self.lock();
        history.retain(|rel, _| wanted.contains(rel));
        for (rel, sample) in samples {
            history.entry(rel).or_default().push(sample);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, History>> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cgroup's CPU usage and, when known, its rate. None when the cgroup has no CPU
    /// accounting (or is gone).
    pub fn cpu(&self, rel: &str) -> Option<CpuReading> {
        let now = Instant::now();
        let mut history = self.lock();
        let entry = history.entry(rel.to_string()).or_default();
        let fresh_pair = match (entry.older, entry.newest) {
            (Some(older), Some(newest)) if now.duration_since(newest.at) < PERIOD * 2 => {
                Some((older, newest))
            }
            _ => None,
        };
        if let Some((older, newest)) = fresh_pair {
            return Some(reading(&newest, rate_nano_cores(&older, &newest)));
        }
        match entry.newest {
            Some(newest) if now.duration_since(newest.at) < MIN_WINDOW => {
                Some(reading(&newest, None))
            }
            _ => {
                let sample = read(rel)?;
                let rate = entry
                    .newest
                    .and_then(|newest| rate_nano_cores(&newest, &sample));
                entry.push(sample);
                Some(reading(&sample, rate))
            }
        }
    }
}

fn reading(sample: &Sample, rate: Option<u64>) -> CpuReading {
    CpuReading {
        time: sample.time,
        usage_core_nano_seconds: sample.cpu_ns,
        usage_nano_cores: rate,
    }
}

fn read(rel: &str) -> Option<Sample> {
    Some(Sample {
        cpu_ns: cgroup::cpu_usage_ns(rel)?,
        at: Instant::now(),
        time: jiff::Timestamp::now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, cpu_ns: u64) -> Sample {
        Sample {
            at,
            time: jiff::Timestamp::UNIX_EPOCH,
            cpu_ns,
        }
    }

    #[test]
    fn rate_is_cpu_nanoseconds_per_wall_second() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(10);
        // Two full cores for ten seconds.
        assert_eq!(
            rate_nano_cores(&sample(t0, 5_000), &sample(t1, 5_000 + 20_000_000_000)),
            Some(2_000_000_000)
        );
        // A quarter core over 2.5 s.
        let t2 = t0 + Duration::from_millis(2500);
        assert_eq!(
            rate_nano_cores(&sample(t0, 0), &sample(t2, 625_000_000)),
            Some(250_000_000)
        );
        assert_eq!(
            rate_nano_cores(&sample(t0, 0), &sample(t1, 0)),
            Some(0),
            "idle"
        );
    }

    #[test]
    fn no_rate_from_close_or_reset_samples() {
        let t0 = Instant::now();
        let close = t0 + Duration::from_millis(200);
        assert_eq!(rate_nano_cores(&sample(t0, 0), &sample(close, 10)), None);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(rate_nano_cores(&sample(t0, 100), &sample(later, 5)), None);
        assert_eq!(rate_nano_cores(&sample(later, 0), &sample(t0, 5)), None);
    }

    #[test]
    fn history_keeps_the_two_newest() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = History::default();
        h.push(sample(at(0), 1));
        assert_eq!((h.older, h.newest.map(|s| s.cpu_ns)), (None, Some(1)));
        h.push(sample(at(10), 2));
        h.push(sample(at(20), 3));
        assert_eq!(h.older.map(|s| s.cpu_ns), Some(2));
        assert_eq!(h.newest.map(|s| s.cpu_ns), Some(3));
    }

    #[test]
    fn samples_close_together_never_leave_a_pair_without_a_rate() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut h = History::default();
        h.push(sample(at(0), 0));
        // A second reading 300 ms later is dropped: the first stays the base.
        h.push(sample(at(300), 30));
        assert_eq!(h.older, None);
        assert_eq!(h.newest.map(|s| s.cpu_ns), Some(0));
        h.push(sample(at(2000), 200_000_000));
        // A tick 200 ms after a request's reading refreshes the pair instead of breaking it.
        h.push(sample(at(2200), 220_000_000));
        let (older, newest) = (h.older.unwrap(), h.newest.unwrap());
        assert_eq!((older.cpu_ns, newest.cpu_ns), (0, 220_000_000));
        assert_eq!(rate_nano_cores(&older, &newest), Some(100_000_000));
    }
}
