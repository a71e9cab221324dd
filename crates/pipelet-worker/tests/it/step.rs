//! Drives the worker loop over fake sources: a server that goes away (shutdown must stay
//! bounded), and a tiny HTTP server whose error answers the HTTP source must read right.
//! The in-memory ones run with tokio's clock paused (it jumps to the next timer when all
//! tasks wait), so drains, backoffs and shutdown deadlines cost no real time; the HTTP
//! ones talk over real TCP and keep the real clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pipelet_api::Pipeline;
use pipelet_api::worker_protocol::{
    ClaimRequest, Failure, HeartbeatReply, LeaseRef, ProgressUpdate, RenderedVideo,
};
use pipelet_runner::{ProgressFn, RenderJob, RenderOutput, Runner, RunnerError};
use pipelet_worker::{JobSource, SourceError, StepOutcome, Worker, WorkerConfig};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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
        let spec = pipelet_api::JobSpec {
            width: 256,
            height: 256,
            ..pipelet_api::JobSpec::sample("a lighthouse")
        };
        Arc::new(Self {
            job: std::sync::Mutex::new(Some(pipelet_worker::Assignment {
                lease: LeaseRef {
                    job_id: Uuid::new_v4(),
                    token: 1,
                },
                model_id: "wan22-fast-t2v".into(),
                pipeline: Pipeline::T2v,
                spec,
                has_input: false,
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
        _lease: &LeaseRef,
        _file: &std::path::Path,
    ) -> Result<(), SourceError> {
        self.uploads.fetch_add(1, Ordering::SeqCst);
        self.upload_tried.notify_one();
        self.reach()
    }
    async fn complete(&self, _lease: &LeaseRef, _video: &RenderedVideo) -> Result<(), SourceError> {
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

/// A worker's settings for these tests: short beats and polls, every pipeline, and a
/// delivery timeout as deployed (long enough to ride out a server restart).
fn config(worker_id: &str, dir: &tempfile::TempDir) -> WorkerConfig {
    WorkerConfig {
        worker_id: worker_id.into(),
        pipelines: Pipeline::ALL.to_vec(),
        lease: Duration::from_secs(30),
        heartbeat: Duration::from_millis(50),
        progress_interval: Duration::from_millis(10),
        max_wait_for_switch: Duration::from_secs(60),
        poll_wait: Duration::from_millis(50),
        scratch_dir: dir.path().to_path_buf(),
        delivery_timeout: Duration::from_secs(600),
        pipelined_delivery: false,
    }
}

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
            pipelined_delivery: pipelined,
            ..config("remote-test", dir)
        },
    )
    .with_shutdown_timeout(SHUTDOWN)
}

/// Stops `run` like `pipelet worker` on SIGTERM: `stop`, the drain, then `abort`; the
/// worker must be gone within the shutdown deadline although the server is down.
async fn shut_down_within_bound(
    run: tokio::task::JoinHandle<Result<(), SourceError>>,
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
    exited.unwrap().unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
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

/// A worker API that answers every call with `status` and `body`, as a refusing or
/// conflicting server does; returns its base URL.
async fn answering(status: u16, body: serde_json::Value) -> String {
    use axum::http::StatusCode;
    let status = StatusCode::from_u16(status).unwrap();
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { (status, axum::Json(body)) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn a_lease() -> LeaseRef {
    LeaseRef {
        job_id: Uuid::new_v4(),
        token: 3,
    }
}

#[tokio::test]
async fn a_refused_key_stops_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let base = answering(
        401,
        serde_json::json!({"detail": "unknown API key", "code": "unauthorized"}),
    )
    .await;
    let source = Arc::new(pipelet_worker::HttpSource::new(&base, "plt_wrong").unwrap());
    let runner = Arc::new(FakeRunner {
        finishes: true,
        started: tokio::sync::Notify::new(),
    });
    let worker = Worker::new(source, runner, config("refused", &dir));
    let never = CancellationToken::new();
    let ran = tokio::time::timeout(Duration::from_secs(10), worker.run(never.clone(), never))
        .await
        .expect("a refused key must stop the worker, not retry forever");
    match ran {
        Err(SourceError::Unauthorized(detail)) => assert!(detail.contains("unknown API key")),
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn a_forbidden_key_is_refused_on_a_job_call_too() {
    let base = answering(
        403,
        serde_json::json!({"detail": "not a worker key", "code": "forbidden"}),
    )
    .await;
    let source = pipelet_worker::HttpSource::new(&base, "plt_client").unwrap();
    let beat = source.heartbeat(&a_lease(), None).await;
    assert!(
        matches!(beat, Err(SourceError::Unauthorized(_))),
        "{beat:?}"
    );
}

#[tokio::test]
async fn only_a_lease_lost_conflict_is_a_lost_lease() {
    let lost = [
        serde_json::json!({"detail": "lease lost", "code": "lease_lost", "lease_lost": true}),
        // The code alone, and the flag alone (an older server), both say it.
        serde_json::json!({"detail": "lease lost", "code": "lease_lost"}),
        serde_json::json!({"detail": "lease lost", "lease_lost": true}),
    ];
    for body in lost {
        let source =
            pipelet_worker::HttpSource::new(&answering(409, body.clone()).await, "k").unwrap();
        let beat = source.heartbeat(&a_lease(), None).await;
        assert!(
            matches!(beat, Err(SourceError::LeaseLost)),
            "{body}: {beat:?}"
        );
    }
    let kept = [
        serde_json::json!({"detail": "no cancel was requested", "code": "invalid_state", "lease_lost": false}),
        serde_json::json!({"detail": "no result was uploaded for this lease", "code": "not_completed"}),
    ];
    for body in kept {
        let source =
            pipelet_worker::HttpSource::new(&answering(409, body.clone()).await, "k").unwrap();
        let acked = source.ack_cancelled(&a_lease()).await;
        assert!(
            matches!(acked, Err(SourceError::Rejected(_))),
            "{body}: a 409 without lease_lost is not a lost lease: {acked:?}"
        );
    }
    // A job route's 404 is a job that is gone; a 503 is retried.
    let gone = answering(
        404,
        serde_json::json!({"detail": "no such job", "code": "request_not_found"}),
    )
    .await;
    let source = pipelet_worker::HttpSource::new(&gone, "k").unwrap();
    assert!(matches!(
        source.heartbeat(&a_lease(), None).await,
        Err(SourceError::LeaseLost)
    ));
    let busy = answering(
        503,
        serde_json::json!({"detail": "shutting down", "code": "unavailable"}),
    )
    .await;
    let source = pipelet_worker::HttpSource::new(&busy, "k").unwrap();
    assert!(matches!(
        source.heartbeat(&a_lease(), None).await,
        Err(SourceError::Unavailable(_))
    ));
}
