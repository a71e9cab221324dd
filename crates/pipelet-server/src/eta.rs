//! When will a queued job start? [`Eta`] keeps, in memory on each server, what the
//! estimate needs and answers each status poll without touching the queue:
//!
//! - the workers serving each pipeline: a worker counts while it claimed or heartbeated
//!   within the last [`WORKER_ACTIVE_WINDOW`] (as `pipelet_workers_active` counts them),
//!   with the pipelines its last claim named and the job it runs now;
//! - the running jobs: when each was claimed and its last progress;
//! - run times: a moving average (EWMA, weight [`ALPHA`] for the newest) per model and
//!   resolution class, and one per pipeline, fed by each completion this server sees
//!   (from the claim to the moment the worker was free again: its next claim, or the
//!   completion when that came first) and seeded on start from the store's recent
//!   completed jobs; without any, the contract's typical times (90 s at 480p, 180 s at
//!   720p).
//!
//! The estimate for a job with `k` jobs of its pipeline ahead (its `queue_position`):
//! each serving worker `w` is free after `r_w` seconds (the remaining time of the job it
//! runs: its expected run time less the time it has run, or from its progress once that
//! says more; 0 when idle), and then takes the next job every `m` seconds, `m` being the
//! pipeline's average run time. The job starts at the `(k+1)`-th of those free moments,
//! the smallest `t` with `Σ_w max(0, ⌊(t − r_w)/m⌋ + 1) ≥ k + 1`, found by bisection:
//! `O(workers)` per poll, whatever the queue's length. `null` when no worker serves the
//! pipeline.
//!
//! What it cannot see: requests of higher priority created later (they go ahead), jobs
//! of another pipeline taken by a worker that serves both, and, with several servers on
//! one database, the workers and completions that only the other servers see.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pipelet_api::catalog::ResolutionClass;
use pipelet_api::worker_protocol::expected_tasks;
use pipelet_api::{JobSpec, Pipeline};
use pipelet_store::{JobRecord, JobState, ProgressUpdate};
use uuid::Uuid;

/// A worker counts as serving while it claimed or heartbeated this recently.
pub const WORKER_ACTIVE_WINDOW: Duration = Duration::from_secs(60);
/// Weight of the newest run time in the moving averages.
pub const ALPHA: f64 = 0.2;
/// Workers remembered at most (worker keys only can add them; stale ones go first).
const MAX_WORKERS: usize = 4096;
/// Running jobs remembered at most.
const MAX_RUNNING: usize = 65_536;
/// A worker unseen this long is forgotten, with its jobs.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Run-time averages kept at most (models × classes; the catalog bounds it).
const MAX_AVERAGES: usize = 1024;

/// Typical run time before anything was measured: the contract's figures.
fn default_run_seconds(class: ResolutionClass) -> f64 {
    match class {
        ResolutionClass::P480 => 90.0,
        ResolutionClass::P720 => 180.0,
    }
}

/// The resolution class of a spec (its shorter output side).
fn class_of(spec: &JobSpec) -> ResolutionClass {
    ResolutionClass::of_side(spec.width.min(spec.height))
}

#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    value: f64,
    samples: u64,
}

impl Ewma {
    fn add(&mut self, sample: f64) {
        self.value = if self.samples == 0 {
            sample
        } else {
            ALPHA * sample + (1.0 - ALPHA) * self.value
        };
        self.samples += 1;
    }

    fn get(&self) -> Option<f64> {
        (self.samples > 0).then_some(self.value)
    }
}

#[derive(Debug)]
struct WorkerInfo {
    pipelines: Vec<Pipeline>,
    backend: Option<String>,
    last_seen: Instant,
    /// The job it renders now (`None`: idle, or delivering its last video).
    current: Option<Uuid>,
}

#[derive(Debug)]
struct RunningJob {
    worker: String,
    pipeline: Pipeline,
    model_id: String,
    class: ResolutionClass,
    claimed_at: Instant,
    progress: Option<ProgressUpdate>,
    /// Seconds from the claim until its worker asked for the next job.
    freed_after: Option<f64>,
}

#[derive(Debug, Default)]
struct Inner {
    workers: HashMap<String, WorkerInfo>,
    running: HashMap<Uuid, RunningJob>,
    by_model: HashMap<(String, &'static str), Ewma>,
    by_pipeline: HashMap<Pipeline, Ewma>,
}

/// The queue-time estimator; see the module doc.
#[derive(Debug, Default)]
pub struct Eta {
    inner: Mutex<Inner>,
}

impl Inner {
    fn worker(&mut self, id: &str, now: Instant) -> &mut WorkerInfo {
        if !self.workers.contains_key(id) && self.workers.len() >= MAX_WORKERS {
            self.forget_stale(now);
        }
        self.workers
            .entry(id.to_string())
            .or_insert_with(|| WorkerInfo {
                pipelines: Vec::new(),
                backend: None,
                last_seen: now,
                current: None,
            })
    }

    /// Drops workers unseen for [`FORGET_AFTER`] and the jobs nobody will report on.
    fn forget_stale(&mut self, now: Instant) {
        self.workers
            .retain(|_, w| now.saturating_duration_since(w.last_seen) < FORGET_AFTER);
        let workers = &self.workers;
        self.running.retain(|_, job| {
            workers.contains_key(&job.worker)
                && now.saturating_duration_since(job.claimed_at) < FORGET_AFTER * 144
        });
    }

    fn expected_run(&self, model_id: &str, class: ResolutionClass, pipeline: Pipeline) -> f64 {
        self.by_model
            .get(&(model_id.to_string(), class.label()))
            .and_then(Ewma::get)
            .or_else(|| self.by_pipeline.get(&pipeline).and_then(Ewma::get))
            .unwrap_or_else(|| default_run_seconds(class))
    }

    fn add_sample(&mut self, model_id: &str, class: ResolutionClass, pipeline: Pipeline, s: f64) {
        if !s.is_finite() || s < 0.0 {
            return;
        }
        let key = (model_id.to_string(), class.label());
        if self.by_model.contains_key(&key) || self.by_model.len() < MAX_AVERAGES {
            self.by_model.entry(key).or_default().add(s);
        }
        self.by_pipeline.entry(pipeline).or_default().add(s);
    }

    /// Seconds until `job` frees its worker.
    fn remaining(&self, job: &RunningJob, now: Instant) -> f64 {
        let ran = now.saturating_duration_since(job.claimed_at).as_secs_f64();
        let expected = match job.progress {
            // Once a tenth is done, the job's own pace says more than the average.
            Some(p) if p.total > 0 && f64::from(p.done) >= 0.1 * f64::from(p.total) => {
                ran * f64::from(p.total) / f64::from(p.done)
            }
            _ => self.expected_run(&job.model_id, job.class, job.pipeline),
        };
        (expected - ran).max(0.0)
    }
}

/// The `(k+1)`-th moment a worker frees up, when worker `w` is first free after
/// `free[w]` seconds and then takes a job every `m` seconds. `None` without workers.
pub fn kth_start(free: &[f64], m: f64, k: u64) -> Option<f64> {
    let first = free.iter().copied().fold(f64::INFINITY, f64::min);
    let last = free.iter().copied().fold(0.0, f64::max);
    if !first.is_finite() {
        return None;
    }
    let m = m.max(1e-3);
    let need = k as f64 + 1.0;
    let count = |t: f64| -> f64 {
        free.iter()
            .filter(|&&r| r <= t)
            .map(|&r| ((t - r) / m).floor() + 1.0)
            .sum()
    };
    if count(first) >= need {
        return Some(first);
    }
    // count(hi) ≥ k+1: by then every worker has freed up k+1 times.
    let (mut lo, mut hi) = (first, last + need * m);
    for _ in 0..64 {
        let mid = (lo + hi) / 2.0;
        if count(mid) >= need {
            hi = mid;
        } else {
            lo = mid;
        }
        if hi - lo < 1e-3 {
            break;
        }
    }
    Some(hi)
}

impl Eta {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the renderer a worker runs (`preview` or `wan`), for its task count.
    pub fn set_backend(&self, worker_id: &str, backend: &str) {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.worker(worker_id, now).backend = Some(backend.to_string());
    }

    /// A worker asks for a job: it serves `pipelines` and whatever it rendered is done.
    pub fn worker_claiming(&self, worker_id: &str, pipelines: &[Pipeline]) {
        let now = Instant::now();
        let mut inner = self.lock();
        let previous = {
            let worker = inner.worker(worker_id, now);
            worker.last_seen = now;
            worker.pipelines = pipelines.to_vec();
            worker.current.take()
        };
        if let Some(previous) = previous
            && let Some(job) = inner.running.get_mut(&previous)
            && job.freed_after.is_none()
        {
            job.freed_after = Some(now.saturating_duration_since(job.claimed_at).as_secs_f64());
        }
    }

    /// A worker got `job`.
    pub fn claimed(&self, worker_id: &str, job: &JobRecord) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.running.len() >= MAX_RUNNING {
            inner.forget_stale(now);
            if inner.running.len() >= MAX_RUNNING {
                return;
            }
        }
        let worker = inner.worker(worker_id, now);
        worker.last_seen = now;
        worker.current = Some(job.id);
        inner.running.insert(
            job.id,
            RunningJob {
                worker: worker_id.to_string(),
                pipeline: job.pipeline,
                model_id: job.model_id.clone(),
                class: class_of(&job.spec),
                claimed_at: now,
                progress: job.progress,
                freed_after: None,
            },
        );
    }

    /// Whether a heartbeat for `job_id` would find its job here.
    pub fn knows(&self, job_id: Uuid) -> bool {
        self.lock().running.contains_key(&job_id)
    }

    /// Takes in a running job this server did not see claimed (it started before this
    /// server did, or through another server): its worker serves at least its pipeline.
    pub fn adopt(&self, job: &JobRecord, now_ms: i64) {
        let (Some(owner), Some(started)) = (job.lease_owner.as_deref(), job.started_at_ms) else {
            return;
        };
        if job.state != JobState::Running {
            return;
        }
        let now = Instant::now();
        let ran = Duration::from_millis(u64::try_from(now_ms - started).unwrap_or(0));
        let mut inner = self.lock();
        if inner.running.contains_key(&job.id) || inner.running.len() >= MAX_RUNNING {
            return;
        }
        let worker = inner.worker(owner, now);
        worker.last_seen = now;
        if !worker.pipelines.contains(&job.pipeline) {
            worker.pipelines.push(job.pipeline);
        }
        worker.current = Some(job.id);
        inner.running.insert(
            job.id,
            RunningJob {
                worker: owner.to_string(),
                pipeline: job.pipeline,
                model_id: job.model_id.clone(),
                class: class_of(&job.spec),
                claimed_at: now.checked_sub(ran).unwrap_or(now),
                progress: job.progress,
                freed_after: None,
            },
        );
    }

    /// A heartbeat: its worker is alive, and maybe further along.
    pub fn heartbeat(&self, job_id: Uuid, progress: Option<ProgressUpdate>) {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(job) = inner.running.get_mut(&job_id) else {
            return;
        };
        if progress.is_some() {
            job.progress = progress;
        }
        let worker = job.worker.clone();
        if let Some(w) = inner.workers.get_mut(&worker) {
            w.last_seen = now;
        }
    }

    /// `job_id` completed: its run time feeds the averages.
    pub fn completed(&self, job_id: Uuid) {
        let now = Instant::now();
        let mut inner = self.lock();
        let Some(job) = inner.running.remove(&job_id) else {
            return;
        };
        let took = job
            .freed_after
            .unwrap_or_else(|| now.saturating_duration_since(job.claimed_at).as_secs_f64());
        inner.add_sample(&job.model_id, job.class, job.pipeline, took);
        if let Some(w) = inner.workers.get_mut(&job.worker)
            && w.current == Some(job_id)
        {
            w.current = None;
        }
    }

    /// `job_id` ended another way (failed, cancelled, re-queued): no run time to learn.
    pub fn ended(&self, job_id: Uuid) {
        let mut inner = self.lock();
        if let Some(job) = inner.running.remove(&job_id)
            && let Some(w) = inner.workers.get_mut(&job.worker)
            && w.current == Some(job_id)
        {
            w.current = None;
        }
    }

    /// Seeds the averages from finished jobs (any order; the newest should come last).
    pub fn seed<'a>(&self, jobs: impl IntoIterator<Item = &'a JobRecord>) {
        let mut inner = self.lock();
        for job in jobs {
            if job.state != JobState::Completed {
                continue;
            }
            if let (Some(started), Some(finished)) = (job.started_at_ms, job.finished_at_ms) {
                let took = (finished - started).max(0) as f64 / 1000.0;
                inner.add_sample(&job.model_id, class_of(&job.spec), job.pipeline, took);
            }
        }
    }

    /// A measured run time for jobs like `job` (none before the first completion).
    pub fn measured_run(&self, job: &JobRecord) -> Option<f64> {
        let inner = self.lock();
        inner
            .by_model
            .get(&(job.model_id.clone(), class_of(&job.spec).label()))
            .and_then(Ewma::get)
    }

    /// How many tasks `job` has on the worker that holds it (see [`expected_tasks`]).
    pub fn tasks(&self, job: &JobRecord) -> u32 {
        let backend = job.lease_owner.as_deref().and_then(|owner| {
            let inner = self.lock();
            inner.workers.get(owner).and_then(|w| w.backend.clone())
        });
        expected_tasks(backend.as_deref(), &job.spec).max(1)
    }

    /// How many workers serve `pipeline` now.
    pub fn serving(&self, pipeline: Pipeline) -> usize {
        let now = Instant::now();
        let inner = self.lock();
        inner
            .workers
            .values()
            .filter(|w| {
                now.saturating_duration_since(w.last_seen) < WORKER_ACTIVE_WINDOW
                    && w.pipelines.contains(&pipeline)
            })
            .count()
    }

    /// Seconds until a job of `pipeline` with `position` jobs ahead starts; `None` when
    /// no worker serves the pipeline.
    pub fn start_estimate(&self, pipeline: Pipeline, position: u64) -> Option<f64> {
        let now = Instant::now();
        let inner = self.lock();
        let free: Vec<f64> = inner
            .workers
            .values()
            .filter(|w| {
                now.saturating_duration_since(w.last_seen) < WORKER_ACTIVE_WINDOW
                    && w.pipelines.contains(&pipeline)
            })
            .map(|w| {
                w.current
                    .and_then(|id| inner.running.get(&id))
                    .map_or(0.0, |job| inner.remaining(job, now))
            })
            .collect();
        let m = inner
            .by_pipeline
            .get(&pipeline)
            .and_then(Ewma::get)
            .unwrap_or_else(|| default_run_seconds(ResolutionClass::P480));
        // Tenths of a second: finer is noise.
        kth_start(&free, m, position).map(|s| (s * 10.0).round() / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kth_start_follows_the_workers_free_moments() {
        assert_eq!(kth_start(&[], 10.0, 0), None);
        // Next in line with an idle worker: at once.
        assert_eq!(kth_start(&[0.0, 30.0], 10.0, 0), Some(0.0));
        // Two busy workers free at 5 and 30, 10 s per job: moments 5, 15, 25, 30, 35, ...
        let at = |k| kth_start(&[5.0, 30.0], 10.0, k).unwrap();
        assert!((at(0) - 5.0).abs() < 0.01);
        assert!((at(1) - 15.0).abs() < 0.01);
        assert!((at(2) - 25.0).abs() < 0.01);
        assert!((at(3) - 30.0).abs() < 0.01);
        assert!((at(4) - 35.0).abs() < 0.01);
        // Far down a long queue: about k·m / workers.
        let far = kth_start(&[0.0, 0.0], 10.0, 1999).unwrap();
        assert!((far - 9990.0).abs() < 0.01, "{far}");
    }

    #[test]
    fn averages_learn_from_completions_and_workers_come_and_go() {
        let eta = Eta::default();
        assert_eq!(eta.start_estimate(Pipeline::T2v, 0), None, "no worker");
        eta.worker_claiming("w1", &[Pipeline::T2v]);
        assert_eq!(eta.start_estimate(Pipeline::T2v, 0), Some(0.0));
        assert_eq!(eta.start_estimate(Pipeline::I2v, 0), None);
        // Nothing measured: the contract's 90 s per 480p job.
        assert_eq!(eta.start_estimate(Pipeline::T2v, 2), Some(180.0));
        let mut inner = eta.lock();
        inner.add_sample("m", ResolutionClass::P480, Pipeline::T2v, 10.0);
        inner.add_sample("m", ResolutionClass::P480, Pipeline::T2v, 20.0);
        let avg = inner.by_pipeline[&Pipeline::T2v].get().unwrap();
        assert!((avg - 12.0).abs() < 1e-9, "{avg}");
        drop(inner);
        assert_eq!(eta.start_estimate(Pipeline::T2v, 1), Some(12.0));
    }
}
