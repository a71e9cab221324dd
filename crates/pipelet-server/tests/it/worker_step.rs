//! Drives the worker loop one step at a time over the real store, blob store and
//! preview runner, through the server's queue service (as `serve`'s in-process workers).

use std::sync::Arc;
use std::time::Duration;

use pipelet_api::Pipeline;
use pipelet_runner::preview::PreviewRunner;
use pipelet_server::queue_service::QueueService;
use pipelet_store::blob::Blobs;
use pipelet_store::prelude::*;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::{JobRecord, JobState, NewJob};
use pipelet_worker::{StepOutcome, Worker, WorkerConfig};
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
    let source = Arc::new(QueueService::new(
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

impl Rig {
    /// Creates `job` in the store.
    async fn create(&self, job: NewJob) -> JobRecord {
        self.store.create_job(job).await.unwrap().job
    }
}

/// Returns once the worker has picked up job `id` (it is RUNNING).
async fn until_running(store: &Arc<dyn Store>, id: Uuid) {
    pipelet_testkit::wait_until_async(Duration::from_secs(60), "the job runs", || {
        let store = store.clone();
        async move { store.get_job(id).await.unwrap().unwrap().state == JobState::Running }
    })
    .await;
}

fn job(pipeline: Pipeline, input_blob: Option<String>, width: u32, height: u32) -> NewJob {
    let spec = pipelet_api::JobSpec {
        width,
        height,
        seed: Some(7),
        ..pipelet_api::JobSpec::sample("a lighthouse")
    };
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
    let created = r.create(job(Pipeline::T2v, None, 256, 256)).await;
    let outcome = r.worker.step(&never, &never).await.unwrap();
    assert_eq!(outcome, StepOutcome::Completed(created.id));
    let done = r.store.get_job(created.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Completed);
    let result = done.result.unwrap();
    assert_eq!(
        (result.video.width, result.video.height, result.video.frames),
        (256, 256, 17)
    );
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
    let a = r.create(job(Pipeline::T2v, None, 256, 256)).await;
    let b = r.create(job(Pipeline::T2v, None, 256, 256)).await;
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
        .create(job(Pipeline::I2v, Some("inputs/bad".into()), 256, 256))
        .await;
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
    let created = r.create(job(Pipeline::T2v, None, 1280, 720)).await;
    let store = r.store.clone();
    let canceller = tokio::spawn(async move {
        until_running(&store, created.id).await;
        store.cancel(created.id, true, "test").await.unwrap();
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
    let created = r.create(job(Pipeline::T2v, None, 1280, 720)).await;
    let fire = abort.clone();
    let store = r.store.clone();
    tokio::spawn(async move {
        until_running(&store, created.id).await;
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
