//! The worker loop. [`Worker::step`] claims and finishes at most one job, so tests can
//! drive a worker one job at a time; [`Worker::run`] repeats it until shutdown.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipelet_api::Pipeline;
use pipelet_api::worker_protocol::{
    ClaimRequest, Failure, LeaseRef, ProgressUpdate, RenderedVideo,
};
use pipelet_runner::{Progress, ProgressFn, RenderJob, Runner, RunnerError};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::{Assignment, JobSource, SourceError};

/// How one worker claims, heartbeats and hands in jobs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Lease holder name, unique per worker (e.g. `local:<instance>/0`).
    pub worker_id: String,
    /// Pipelines to claim jobs for (those the runner serves).
    pub pipelines: Vec<Pipeline>,
    /// Lease asked for at each claim; a job not heartbeaten within it is re-queued.
    pub lease: Duration,
    /// Heartbeat interval when the source does not name one; well inside `lease`.
    pub heartbeat: Duration,
    /// Progress is pushed at most this often (besides the regular heartbeat).
    pub progress_interval: Duration,
    /// How long a job of an unloaded pipeline may wait before it beats the loaded one.
    pub max_wait_for_switch: Duration,
    /// How long one claim call waits for a job before looping.
    pub poll_wait: Duration,
    /// Where rendered MP4s are written before upload.
    pub scratch_dir: PathBuf,
    /// How long a finished video's delivery (or a failure report) is retried while the
    /// server is unreachable.
    pub delivery_timeout: Duration,
    /// Hand a finished video in while the next job already renders, so the runner
    /// (the GPU) never waits on uploads and database commits.
    pub pipelined_delivery: bool,
}

/// Finished videos being handed in at once, at most, before the worker waits.
const MAX_PENDING_DELIVERIES: usize = 2;

/// Default for [`Worker::with_shutdown_timeout`].
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one [`Worker::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// No job came within the poll wait (or `stop` fired while waiting).
    Idle,
    /// The job's video was handed in and the job completed.
    Completed(Uuid),
    /// Failed or handed back to the queue; the message says why (the client's reason).
    Failed(Uuid, String),
    /// A client cancelled the job; the worker stopped and acknowledged it.
    Cancelled(Uuid),
    /// The lease was lost mid-job; someone else owns the job now.
    LeaseLost(Uuid),
    /// Rendered; the video is being handed in in the background.
    Delivering(Uuid),
}

/// One worker: a job source, a runner and the loop that joins them (see [`Worker::step`]).
pub struct Worker {
    source: Arc<dyn JobSource>,
    runner: Arc<dyn Runner>,
    config: WorkerConfig,
    loaded: Option<Pipeline>,
    deliveries: tokio::task::JoinSet<()>,
    shutdown_timeout: Duration,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Why a running job stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    CancelRequested,
    LeaseLost,
    Shutdown,
}

impl Worker {
    /// A worker with nothing loaded yet and a 10 s shutdown timeout.
    pub fn new(source: Arc<dyn JobSource>, runner: Arc<dyn Runner>, config: WorkerConfig) -> Self {
        Self {
            source,
            runner,
            config,
            loaded: None,
            deliveries: tokio::task::JoinSet::new(),
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    }

    /// Once `abort` fires, how long handing a job back (or delivering a finished video)
    /// is tried before the worker gives up and leaves the job to lease expiry: the
    /// server's reaper re-queues it. Keeps shutdown bounded while the server is away.
    pub fn with_shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Claims, runs and reports one job. `stop` ends an idle wait for a job; `abort` also
    /// stops a job in hand (it goes back to the queue), so callers fire it only after
    /// the job has had its time to finish.
    pub async fn step(
        &mut self,
        stop: &CancellationToken,
        abort: &CancellationToken,
    ) -> Result<StepOutcome, SourceError> {
        let req = ClaimRequest {
            worker_id: self.config.worker_id.clone(),
            pipelines: self.config.pipelines.clone(),
            loaded: self.loaded,
            lease_ms: millis(self.config.lease),
            max_wait_for_switch_ms: millis(self.config.max_wait_for_switch),
        };
        let assignment = tokio::select! {
            claimed = self.source.claim(&req, self.config.poll_wait) => claimed?,
            () = stop.cancelled() => None,
            () = abort.cancelled() => None,
        };
        let Some(job) = assignment else {
            return Ok(StepOutcome::Idle);
        };
        self.loaded = Some(job.pipeline);
        let span = tracing::info_span!("job", id = %job.lease.job_id, model = %job.model_id, attempt = job.attempt);
        let ran = async {
            tracing::info!("job started");
            self.run_job(&job, abort).await
        }
        .instrument(span.clone())
        .await?;
        let outcome = match ran {
            Ran::Ended(outcome) => outcome,
            Ran::Rendered(delivery) if self.config.pipelined_delivery => {
                while self.deliveries.len() >= MAX_PENDING_DELIVERIES {
                    self.deliveries.join_next().await;
                }
                self.deliveries.spawn(
                    async move {
                        let outcome = delivery.deliver().await;
                        tracing::info!(outcome = ?outcome, "job ended");
                    }
                    .instrument(span.clone()),
                );
                StepOutcome::Delivering(id_of(&job))
            }
            Ran::Rendered(delivery) => delivery.deliver().instrument(span.clone()).await?,
        };
        if !matches!(outcome, StepOutcome::Delivering(_)) {
            tracing::info!(parent: &span, outcome = ?outcome, "job ended");
        }
        Ok(outcome)
    }

    /// Waits until every video handed to a background delivery is in.
    pub async fn finish_deliveries(&mut self) {
        while self.deliveries.join_next().await.is_some() {}
    }

    /// Runs until `stop` fires, then finishes the job in hand; `abort` cuts that short.
    /// Ends early with [`SourceError::Unauthorized`] when the source refuses this
    /// worker's key: retrying cannot fix that, so the caller must stop.
    pub async fn run(
        mut self,
        stop: CancellationToken,
        abort: CancellationToken,
    ) -> Result<(), SourceError> {
        let mut backoff = Duration::from_millis(100);
        let mut refused = None;
        while !stop.is_cancelled() {
            match self.step(&stop, &abort).await {
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e @ SourceError::Unauthorized(_)) => {
                    tracing::error!(worker = %self.config.worker_id, error = %e, "the worker stops");
                    refused = Some(e);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "worker step failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stop.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        // Videos already rendered are handed in before the worker stops.
        self.finish_deliveries().await;
        tracing::info!(worker = %self.config.worker_id, "worker stopped");
        refused.map_or(Ok(()), Err)
    }

    async fn run_job(
        &self,
        job: &Assignment,
        abort: &CancellationToken,
    ) -> Result<Ran, SourceError> {
        let id = job.lease.job_id;
        let image = match job.pipeline {
            Pipeline::I2v => match self.source.fetch_input(job).await {
                Ok(bytes) => Some(Arc::new(bytes)),
                Err(SourceError::LeaseLost) => return Ok(Ran::Ended(StepOutcome::LeaseLost(id))),
                Err(e @ SourceError::Unauthorized(_)) => return Err(e),
                Err(e) => {
                    let failure =
                        Failure::new("the input image could not be fetched", e.to_string());
                    return self
                        .reporter(abort)
                        .report_failure(&job.lease, &failure, true)
                        .await
                        .map(Ran::Ended);
                }
            },
            Pipeline::T2v => None,
        };
        let render = RenderJob {
            job_id: id.to_string(),
            pipeline: job.pipeline,
            // A job the client gave no seed renders the same on every attempt.
            seed: job.spec.seed.unwrap_or_else(|| id.as_u64_pair().0),
            spec: job.spec.clone(),
            image,
        };
        let out = self.config.scratch_dir.join(format!("{id}.mp4"));
        let latest = Arc::new(Mutex::new(None::<Progress>));
        let changed = Arc::new(Notify::new());
        let progress: ProgressFn = {
            let latest = latest.clone();
            let changed = changed.clone();
            Arc::new(move |p| {
                *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                changed.notify_one();
            })
        };
        let cancel = CancellationToken::new();
        let started = Instant::now();
        let run = self.runner.run(&render, &out, progress, cancel.clone());
        tokio::pin!(run);

        let mut stop = None;
        let heartbeat = job.heartbeat.unwrap_or(self.config.heartbeat);
        let mut next_beat = tokio::time::Instant::now() + heartbeat;
        let mut last_beat = tokio::time::Instant::now();
        let mut last_sent = None::<Progress>;
        let result = loop {
            tokio::select! {
                result = &mut run => break result,
                () = abort.cancelled(), if stop.is_none() => {
                    stop = Some(StopReason::Shutdown);
                    cancel.cancel();
                }
                () = changed.notified(), if stop.is_none() => {
                    // Throttle: progress reaches the store at most every progress_interval.
                    next_beat = next_beat.min(last_beat + self.config.progress_interval);
                }
                () = tokio::time::sleep_until(next_beat), if stop.is_none() => {
                    let current = *latest.lock().unwrap_or_else(|e| e.into_inner());
                    let update = current.filter(|p| Some(*p) != last_sent).map(|p| ProgressUpdate { done: p.done, total: p.total });
                    let beat = tokio::select! {
                        beat = self.source.heartbeat(&job.lease, update) => beat,
                        // Shutdown must not wait on a server that does not answer.
                        () = abort.cancelled() => Err(SourceError::Unavailable("the worker is shutting down".into())),
                    };
                    match beat {
                        Ok(reply) => {
                            last_sent = current;
                            if reply.cancel_requested {
                                stop = Some(StopReason::CancelRequested);
                                cancel.cancel();
                            }
                        }
                        Err(SourceError::LeaseLost) => {
                            stop = Some(StopReason::LeaseLost);
                            cancel.cancel();
                        }
                        // The lease outlives a few missed beats; keep working and retry.
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                    last_beat = tokio::time::Instant::now();
                    next_beat = last_beat + heartbeat;
                }
            }
        };

        let reporter = self.reporter(abort);
        let outcome = match (result, stop) {
            (Ok(output), None) => {
                return Ok(Ran::Rendered(Delivery {
                    reporter,
                    lease: job.lease,
                    output,
                    run_seconds: started.elapsed().as_secs_f64(),
                }));
            }
            (_, Some(StopReason::LeaseLost)) => Ok(StepOutcome::LeaseLost(id)),
            (_, Some(StopReason::CancelRequested)) => {
                let source = reporter.source.clone();
                match reporter
                    .retrying(id, "report the cancel", || source.ack_cancelled(&job.lease))
                    .await
                {
                    Ok(()) => Ok(StepOutcome::Cancelled(id)),
                    Err(SourceError::LeaseLost) => Ok(StepOutcome::LeaseLost(id)),
                    Err(e) => Err(e),
                }
            }
            (_, Some(StopReason::Shutdown)) => {
                let failure = Failure::plain("the worker shut down before the job finished");
                reporter.report_failure(&job.lease, &failure, true).await
            }
            (Err(RunnerError::Permanent(f)), None) => {
                let failure = Failure::new(f.reason, f.detail);
                reporter.report_failure(&job.lease, &failure, false).await
            }
            (Err(RunnerError::Transient(f)), None) => {
                let failure = Failure::new(f.reason, f.detail);
                reporter.report_failure(&job.lease, &failure, true).await
            }
            (Err(RunnerError::Cancelled), None) => {
                // The runner stopped though nobody asked it to: try again.
                let failure = Failure::new(
                    "the render stopped unexpectedly",
                    "the runner reported a cancel nobody asked for",
                );
                reporter.report_failure(&job.lease, &failure, true).await
            }
        };
        remove_scratch(&out).await;
        outcome.map(Ran::Ended)
    }

    fn reporter(&self, abort: &CancellationToken) -> Reporter {
        Reporter {
            source: self.source.clone(),
            delivery_timeout: self.config.delivery_timeout,
            abort: abort.clone(),
            shutdown_timeout: self.shutdown_timeout,
        }
    }
}

fn id_of(job: &Assignment) -> Uuid {
    job.lease.job_id
}

async fn remove_scratch(path: &std::path::Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove scratch file");
    }
}

/// How a rendered job continues.
enum Ran {
    Ended(StepOutcome),
    Rendered(Delivery),
}

/// Reports to the source, retrying while it is unreachable.
#[derive(Clone)]
struct Reporter {
    source: Arc<dyn JobSource>,
    delivery_timeout: Duration,
    /// Fired when the worker stops for good; retries then end `shutdown_timeout` later.
    abort: CancellationToken,
    shutdown_timeout: Duration,
}

/// A rendered video on its way to the server.
struct Delivery {
    reporter: Reporter,
    lease: LeaseRef,
    output: pipelet_runner::RenderOutput,
    run_seconds: f64,
}

impl Delivery {
    async fn deliver(self) -> Result<StepOutcome, SourceError> {
        let Delivery {
            reporter,
            lease,
            output,
            run_seconds,
        } = self;
        let id = lease.job_id;
        let source = reporter.source.clone();
        let video = RenderedVideo {
            width: output.width,
            height: output.height,
            frames: output.frames,
            fps: output.fps,
            backend: output.backend.to_string(),
            run_seconds,
        };
        // The video exists: keep trying to hand it in while the server is away.
        // The lease was renewed during the render, so the first try goes straight to the
        // upload (a heartbeat would only queue the next claim behind its commit); retries
        // heartbeat first to keep the lease alive while the server is away.
        let mut retry = false;
        let delivered = reporter
            .retrying(id, "deliver the result", || {
                let beat = std::mem::replace(&mut retry, true);
                let (source, output, video) = (&source, &output, &video);
                async move {
                    if beat {
                        source.heartbeat(&lease, None).await?;
                    }
                    source.upload_result(&lease, &output.path).await?;
                    source.complete(&lease, video).await
                }
            })
            .await;
        let outcome = match delivered {
            Ok(()) => Ok(StepOutcome::Completed(id)),
            Err(SourceError::LeaseLost) => Ok(StepOutcome::LeaseLost(id)),
            // A refused key cannot report a failure either; the worker stops.
            Err(e @ SourceError::Unauthorized(_)) => Err(e),
            // Shutting down: no time for a failure report; the lease expires instead.
            Err(e) if reporter.abort.is_cancelled() => Err(e),
            Err(e) => {
                let failure =
                    Failure::new("the finished video could not be delivered", e.to_string());
                reporter.report_failure(&lease, &failure, true).await
            }
        };
        remove_scratch(&output.path).await;
        outcome
    }
}

impl Reporter {
    async fn report_failure(
        &self,
        lease: &LeaseRef,
        failure: &Failure,
        retryable: bool,
    ) -> Result<StepOutcome, SourceError> {
        tracing::warn!(
            reason = %failure.reason,
            detail = failure.detail.as_deref().unwrap_or(""),
            retryable,
            "job attempt failed"
        );
        match self
            .retrying(lease.job_id, "report the failure", || {
                self.source.fail(lease, failure, retryable)
            })
            .await
        {
            Ok(()) => Ok(StepOutcome::Failed(lease.job_id, failure.reason.clone())),
            Err(SourceError::LeaseLost) => Ok(StepOutcome::LeaseLost(lease.job_id)),
            Err(e) => Err(e),
        }
    }

    /// Retries `call` while the source is unavailable (a server restart), with backoff,
    /// for up to `delivery_timeout`. Lease loss and invalid jobs are final. Once `abort`
    /// fires, gives up `shutdown_timeout` later, even mid-call, so shutdown is bounded.
    async fn retrying<T, F, Fut>(
        &self,
        job: Uuid,
        what: &str,
        mut call: F,
    ) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SourceError>>,
    {
        let deadline = Instant::now() + self.delivery_timeout;
        let shutdown_over = async {
            self.abort.cancelled().await;
            tokio::time::sleep(self.shutdown_timeout).await;
        };
        tokio::pin!(shutdown_over);
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = async {
                match call().await {
                    Err(SourceError::Unavailable(e)) if Instant::now() + backoff < deadline => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "cannot {what} yet");
                        tokio::time::sleep(backoff).await;
                        Err(e)
                    }
                    other => Ok(other),
                }
            };
            tokio::select! {
                done = attempt => match done {
                    Ok(result) => return result,
                    Err(_) => backoff = (backoff * 2).min(Duration::from_secs(5)),
                },
                () = &mut shutdown_over => {
                    tracing::warn!(
                        %job,
                        shutdown_timeout = ?self.shutdown_timeout,
                        "the worker is shutting down and cannot {what}: the job is left to lease expiry (the server re-queues it when its lease runs out)"
                    );
                    return Err(SourceError::Unavailable(format!(
                        "gave up trying to {what}: the worker shut down"
                    )));
                }
            }
        }
    }
}
