//! Drives the worker loop one step at a time over the real store, blob store and
//! preview runner, and over a fake server that goes away (shutdown must stay bounded).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pipelet_api::Pipeline;
use pipelet_runner::preview::PreviewRunner;
use pipelet_runner::{ProgressFn, RenderJob, RenderOutput, Runner, RunnerError};
use pipelet_store::blob::Blobs;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::{
    ClaimRequest, Failure, HeartbeatReply, JobResult, JobState, LeaseRef, NewJob, ProgressUpdate,
    Store,
};
use pipelet_worker::{JobSource, LocalSource, SourceError, StepOutcome, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

struct Rig {
    store: Arc<dyn Store>,
    blobs: Blobs,
    worker: Worker,
    _dir: tempfile::TempDir,
}

async fn rig(pipelined: bool) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("db")).await.unwrap());
    let blobs = Blobs::local(&dir.path().join("blobs")).unwrap();
    let source = Arc::new(LocalSource::new(
        store.clone(),
        blobs.clone(),
        Duration::from_secs(30),
    ));
    let worker = Worker::new(
        source,
        Arc::new(PreviewRunner::new()),
        WorkerConfig {
            worker_id: "local:test/0".into(),
            pipelines: Pipeline::ALL.to_vec(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_millis(50),
            progress_interval: Duration::from_millis(10),
            max_wait_for_switch: Duration::from_secs(60),
            poll_wait: Duration::from_millis(50),
            scratch_dir: dir.path().to_path_buf(),
            delivery_timeout: Duration::from_secs(5),
            pipelined_delivery: pipelined,
        },
    );
    Rig {
        store,
        blobs,
        worker,
        _dir: dir,
    }
}

fn job(pipeline: Pipeline, input_blob: Option<String>, width: u32, height: u32) -> NewJob {
    let spec = serde_json::json!({
        "prompt": "a lighthouse", "width": width, "height": height, "duration_s": 1,
        "num_frames": 17, "fps": 16, "steps": 4, "higher_quality": false, "seed": 7,
        "use_best_resolution": false, "requested_priority": 0,
    });
    NewJob {
        id: Uuid::new_v4(),
        model_id: format!("wan22-fast-{pipeline}"),
        pipeline,
        owner_key_id: "k".into(),
        priority: 0,
        spec,
        input_blob,
        max_attempts: 2,
        webhook_url: None,
    }
}

#[tokio::test]
async fn idle_then_completes_a_job() {
    let mut r = rig(false).await;
    let never = CancellationToken::new();
    assert_eq!(
        r.worker.step(&never, &never).await.unwrap(),
        StepOutcome::Idle
    );
    let created = r
        .store
        .create_job(job(Pipeline::T2v, None, 256, 256))
        .await
        .unwrap();
    let outcome = r.worker.step(&never, &never).await.unwrap();
    assert_eq!(outcome, StepOutcome::Completed(created.id));
    let done = r.store.get_job(created.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    let result = done.result.unwrap();
    assert_eq!((result.width, result.height, result.frames), (256, 256, 17));
    assert_eq!(r.blobs.size(&result.blob).await.unwrap(), result.bytes);
    assert_eq!(
        done.progress.map(|p| p.done),
        done.progress.map(|p| p.total)
    );
}

#[tokio::test]
async fn pipelined_delivery_finishes_in_the_background() {
    let mut r = rig(true).await;
    let never = CancellationToken::new();
    let a = r
        .store
        .create_job(job(Pipeline::T2v, None, 256, 256))
        .await
        .unwrap();
    let b = r
        .store
        .create_job(job(Pipeline::T2v, None, 256, 256))
        .await
        .unwrap();
    assert_eq!(
        r.worker.step(&never, &never).await.unwrap(),
        StepOutcome::Delivering(a.id)
    );
    assert_eq!(
        r.worker.step(&never, &never).await.unwrap(),
        StepOutcome::Delivering(b.id)
    );
    r.worker.finish_deliveries().await;
    for id in [a.id, b.id] {
        assert_eq!(
            r.store.get_job(id).await.unwrap().unwrap().state,
            JobState::Completed
        );
    }
}

#[tokio::test]
async fn an_undecodable_image_fails_at_once() {
    let mut r = rig(false).await;
    let never = CancellationToken::new();
    r.blobs
        .put("inputs/bad", bytes::Bytes::from_static(b"not an image"))
        .await
        .unwrap();
    let created = r
        .store
        .create_job(job(Pipeline::I2v, Some("inputs/bad".into()), 256, 256))
        .await
        .unwrap();
    let outcome = r.worker.step(&never, &never).await.unwrap();
    assert!(
        matches!(outcome, StepOutcome::Failed(id, _) if id == created.id),
        "{outcome:?}"
    );
    let failed = r.store.get_job(created.id).await.unwrap().unwrap();
    assert_eq!(
        failed.state,
        JobState::Failed,
        "a permanent error is not retried"
    );
    assert_eq!(failed.attempt, 1);
}

#[tokio::test]
async fn a_cancel_request_stops_the_job() {
    let mut r = rig(false).await;
    let never = CancellationToken::new();
    let created = r
        .store
        .create_job(job(Pipeline::T2v, None, 1280, 720))
        .await
        .unwrap();
    let store = r.store.clone();
    let canceller = tokio::spawn(async move {
        loop {
            let job = store.get_job(created.id).await.unwrap().unwrap();
            if job.state == JobState::Running {
                store.cancel(created.id, true, "test").await.unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let outcome = r.worker.step(&never, &never).await.unwrap();
    canceller.await.unwrap();
    assert_eq!(outcome, StepOutcome::Cancelled(created.id));
    let job = r.store.get_job(created.id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.cancelled_by.as_deref(), Some("test"));
}

#[tokio::test]
async fn abort_hands_the_job_back() {
    let mut r = rig(false).await;
    let never = CancellationToken::new();
    let abort = CancellationToken::new();
    let created = r
        .store
        .create_job(job(Pipeline::T2v, None, 1280, 720))
        .await
        .unwrap();
    let fire = abort.clone();
    let store = r.store.clone();
    tokio::spawn(async move {
        while store.get_job(created.id).await.unwrap().unwrap().state != JobState::Running {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fire.cancel();
    });
    let outcome = r.worker.step(&never, &abort).await.unwrap();
    assert!(
        matches!(outcome, StepOutcome::Failed(id, _) if id == created.id),
        "{outcome:?}"
    );
    let (job, position) = r.store.job_status(created.id).await.unwrap().unwrap();
    assert_eq!((job.state, position), (JobState::Queued, Some(0)));
}

/// A server that hands out one job, then is unreachable for its next `down` calls
/// (`u32::MAX`: for good), as when it is killed or restarts while the worker holds a job.
struct FlakyServer {
    job: std::sync::Mutex<Option<pipelet_worker::Assignment>>,
    down: AtomicU32,
    uploads: AtomicU32,
    fails: AtomicU32,
    upload_tried: tokio::sync::Notify,
}

impl FlakyServer {
    fn new(down: u32) -> Arc<Self> {
        let spec = serde_json::from_value(serde_json::json!({
            "prompt": "a lighthouse", "width": 256, "height": 256, "duration_s": 1,
            "num_frames": 17, "fps": 16, "steps": 4,
        }))
        .unwrap();
        Arc::new(Self {
            job: std::sync::Mutex::new(Some(pipelet_worker::Assignment {
                lease: LeaseRef {
                    job_id: Uuid::new_v4(),
                    token: 1,
                },
                model_id: "wan22-fast-t2v".into(),
                pipeline: Pipeline::T2v,
                spec,
                input_blob: None,
                attempt: 1,
                heartbeat: Some(Duration::from_millis(50)),
            })),
            down: AtomicU32::new(down),
            uploads: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            upload_tried: tokio::sync::Notify::new(),
        })
    }

    fn reach(&self) -> Result<(), SourceError> {
        let down = self.down.load(Ordering::SeqCst);
        if down == 0 {
            return Ok(());
        }
        if down != u32::MAX {
            self.down.store(down - 1, Ordering::SeqCst);
        }
        Err(SourceError::Unavailable(
            "server unreachable: connection refused".into(),
        ))
    }
}

#[async_trait::async_trait]
impl JobSource for FlakyServer {
    async fn claim(
        &self,
        _req: &ClaimRequest,
        wait: Duration,
    ) -> Result<Option<pipelet_worker::Assignment>, SourceError> {
        let job = self.job.lock().unwrap().take();
        if job.is_none() {
            tokio::time::sleep(wait).await;
        }
        Ok(job)
    }
    async fn heartbeat(
        &self,
        _lease: &LeaseRef,
        _progress: Option<ProgressUpdate>,
    ) -> Result<HeartbeatReply, SourceError> {
        self.reach()?;
        Ok(HeartbeatReply {
            cancel_requested: false,
            expires_at_ms: i64::MAX / 2,
        })
    }
    async fn fetch_input(&self, _job: &pipelet_worker::Assignment) -> Result<Vec<u8>, SourceError> {
        Err(SourceError::InvalidJob("t2v has no input".into()))
    }
    async fn upload_result(
        &self,
        lease: &LeaseRef,
        _file: &std::path::Path,
    ) -> Result<String, SourceError> {
        self.uploads.fetch_add(1, Ordering::SeqCst);
        self.upload_tried.notify_one();
        self.reach()?;
        Ok(format!("remote:{}", lease.job_id))
    }
    async fn complete(&self, _lease: &LeaseRef, _result: &JobResult) -> Result<(), SourceError> {
        self.reach()
    }
    async fn fail(
        &self,
        _lease: &LeaseRef,
        _failure: &Failure,
        _retryable: bool,
    ) -> Result<(), SourceError> {
        self.fails.fetch_add(1, Ordering::SeqCst);
        self.reach()
    }
    async fn ack_cancelled(&self, _lease: &LeaseRef) -> Result<(), SourceError> {
        self.reach()
    }
}

/// Renders nothing: either "finishes" at once, or runs until cancelled.
struct FakeRunner {
    finishes: bool,
    started: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl Runner for FakeRunner {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn pipelines(&self) -> Vec<Pipeline> {
        Pipeline::ALL.to_vec()
    }
    async fn run(
        &self,
        _job: &RenderJob,
        out: &std::path::Path,
        _progress: ProgressFn,
        cancel: CancellationToken,
    ) -> Result<RenderOutput, RunnerError> {
        self.started.notify_one();
        if !self.finishes {
            cancel.cancelled().await;
            return Err(RunnerError::Cancelled);
        }
        Ok(RenderOutput {
            path: out.to_path_buf(),
            bytes: 1,
            width: 256,
            height: 256,
            frames: 17,
            fps: 16,
            backend: "fake",
        })
    }
}

/// How long the test lets a job in hand run after `stop` (the binary's `--drain-secs`).
const DRAIN: Duration = Duration::from_millis(200);
/// The worker's shutdown deadline after `abort`, and the slack allowed on top of it.
const SHUTDOWN: Duration = Duration::from_millis(300);
const SLACK: Duration = Duration::from_secs(2);

fn fake_worker(
    server: Arc<FlakyServer>,
    runner: Arc<FakeRunner>,
    pipelined: bool,
    dir: &tempfile::TempDir,
) -> Worker {
    Worker::new(
        server,
        runner,
        WorkerConfig {
            worker_id: "remote-test".into(),
            pipelines: Pipeline::ALL.to_vec(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_millis(50),
            progress_interval: Duration::from_millis(10),
            max_wait_for_switch: Duration::from_secs(60),
            poll_wait: Duration::from_millis(50),
            scratch_dir: dir.path().to_path_buf(),
            // As deployed: long enough to ride out a server restart.
            delivery_timeout: Duration::from_secs(600),
            pipelined_delivery: pipelined,
        },
    )
    .with_shutdown_timeout(SHUTDOWN)
}

/// Stops `run` like `pipelet worker` on SIGTERM: `stop`, the drain, then `abort`; the
/// worker must be gone within the shutdown deadline although the server is down.
async fn shut_down_within_bound(
    run: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    abort: CancellationToken,
) {
    let mut run = run;
    stop.cancel();
    assert!(
        tokio::time::timeout(DRAIN, &mut run).await.is_err(),
        "the job in hand keeps the worker busy through the drain"
    );
    abort.cancel();
    let exited = tokio::time::timeout(SHUTDOWN + SLACK, &mut run).await;
    assert!(
        exited.is_ok(),
        "the worker must exit within the shutdown deadline after abort, server or not"
    );
    exited.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_with_the_server_down_leaves_a_running_job_to_lease_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let server = FlakyServer::new(u32::MAX);
    let runner = Arc::new(FakeRunner {
        finishes: false,
        started: tokio::sync::Notify::new(),
    });
    let worker = fake_worker(server.clone(), runner.clone(), true, &dir);
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let run = tokio::spawn(worker.run(stop.clone(), abort.clone()));
    runner.started.notified().await;
    shut_down_within_bound(run, stop, abort).await;
    assert!(
        server.fails.load(Ordering::SeqCst) >= 1,
        "the worker tried to hand the job back"
    );
}

#[tokio::test]
async fn shutdown_with_the_server_down_leaves_an_undelivered_video_to_lease_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let server = FlakyServer::new(u32::MAX);
    let runner = Arc::new(FakeRunner {
        finishes: true,
        started: tokio::sync::Notify::new(),
    });
    let worker = fake_worker(server.clone(), runner, true, &dir);
    let (stop, abort) = (CancellationToken::new(), CancellationToken::new());
    let run = tokio::spawn(worker.run(stop.clone(), abort.clone()));
    // The video is rendered and its delivery is under way when SIGTERM comes.
    server.upload_tried.notified().await;
    shut_down_within_bound(run, stop, abort).await;
}

#[tokio::test]
async fn outside_shutdown_a_video_is_delivered_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Down for a few calls (longer than the shutdown deadline), then back.
    let server = FlakyServer::new(4);
    let runner = Arc::new(FakeRunner {
        finishes: true,
        started: tokio::sync::Notify::new(),
    });
    let job_id = server.job.lock().unwrap().as_ref().unwrap().lease.job_id;
    let mut worker = fake_worker(server.clone(), runner, false, &dir);
    let never = CancellationToken::new();
    let outcome = worker.step(&never, &never).await.unwrap();
    assert_eq!(outcome, StepOutcome::Completed(job_id));
    assert!(server.uploads.load(Ordering::SeqCst) > 1, "it had to retry");
}
