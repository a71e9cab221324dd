//! The status as a client parses it: while `IN_PROGRESS`, `statusMessages.detail_message`
//! is `Progress: i/N Tasks done` at every moment, from `0/N` right after the claim (N
//! counted as the worker's renderer counts tasks), also once a cancel was requested;
//! `estimated_total_time_seconds` sits in `statusMessages` too; and an `IN_QUEUE` status
//! carries `estimated_start_seconds`, `null` while no worker serves the pipeline.
//!
//! Workers are played by the test (through the worker API or the store, as the in-process
//! workers do), so run times and progress are the test's; one test runs a real
//! in-process preview job and looks at every status on the way.

use crate::common::AppExt as _;
use crate::common::{JOB_TIMEOUT, T2V, TestApp, spawn_app, spawn_queue_only, str_field};
use pipelet_api::Pipeline;
use pipelet_store::{ClaimRequest, JobState, Lease, ProgressUpdate, Role};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// `create_t2v`'s job: 1 s at 16 fps is 17 frames, and the catalog's 4 steps.
const FRAMES: u32 = 17;
const STEPS: u32 = 4;

/// `(i, N)` of a `detail_message` of exactly the form `^Progress: \d+/\d+ Tasks done$`.
fn parse_progress(detail: &str) -> Option<(u32, u32)> {
    let rest = detail
        .strip_prefix("Progress: ")?
        .strip_suffix(" Tasks done")?;
    let (done, total) = rest.split_once('/')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(done) || !digits(total) {
        return None;
    }
    Some((done.parse().ok()?, total.parse().ok()?))
}

/// The `(i, N)` of an `IN_PROGRESS` status, failing on any other wording.
fn progress_of(status: &Value) -> (u32, u32) {
    assert_eq!(status["status"], "IN_PROGRESS", "{status}");
    assert_eq!(
        status["statusMessages"]["message"], "PROCESSING",
        "{status}"
    );
    let detail = status["statusMessages"]["detail_message"]
        .as_str()
        .unwrap_or_default();
    parse_progress(detail)
        .unwrap_or_else(|| panic!("detail_message is not `Progress: i/N Tasks done`: {status}"))
}

fn claim_request(worker: &str, pipeline: Pipeline) -> ClaimRequest {
    ClaimRequest {
        worker_id: worker.into(),
        pipelines: vec![pipeline],
        loaded: None,
        lease_ms: 600_000,
        max_wait_for_switch_ms: 60_000,
    }
}

/// Plays worker `worker` through the store: its next job of `pipeline`.
async fn claim_as(app: &TestApp, worker: &str, pipeline: Pipeline) -> Lease {
    app.state
        .store
        .claim(&claim_request(worker, pipeline))
        .await
        .expect("claim")
        .expect("a queued job to claim")
}

/// Claims through the worker API as `worker_id`, naming `backend` when given.
async fn claim_over_http(
    app: &TestApp,
    key: &str,
    worker_id: &str,
    backend: Option<&str>,
) -> Value {
    let mut body = json!({"worker_id": worker_id, "pipelines": ["t2v"], "wait_ms": 0});
    if let Some(backend) = backend {
        body["backend"] = json!(backend);
    }
    let response = app
        .client
        .post(app.url("/worker/v1/claim"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("send claim");
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("claim answer is JSON")
}

fn start_estimate(status: &Value) -> Option<f64> {
    assert_eq!(status["status"], "IN_QUEUE", "{status}");
    let field = status
        .get("estimated_start_seconds")
        .unwrap_or_else(|| panic!("IN_QUEUE always has estimated_start_seconds: {status}"));
    assert!(field.is_null() || field.is_number(), "{status}");
    field.as_f64()
}

#[test]
fn the_progress_form_is_strict() {
    assert_eq!(parse_progress("Progress: 0/18 Tasks done"), Some((0, 18)));
    assert_eq!(parse_progress("Starting"), None);
    assert_eq!(
        parse_progress("Progress: 1/4 Tasks done (stopping: cancel requested)"),
        None
    );
    assert_eq!(parse_progress("Progress: -1/4 Tasks done"), None);
    assert_eq!(parse_progress("Progress: 1/ Tasks done"), None);
}

#[tokio::test]
async fn a_claimed_job_says_0_of_n_before_any_heartbeat() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let wan_job = app.create_t2v(&key, T2V, 0).await;
    let preview_job = app.create_t2v(&key, T2V, 0).await;

    // A worker that does not name its renderer counts as Wan: steps + decode + encode.
    let worker_key = app.key(Role::Worker, 0).await;
    let claimed = claim_over_http(&app, &worker_key, "gpu-1", None).await;
    assert_eq!(claimed["job_id"], wan_job["request_id"]);
    let status = app.status(str_field(&wan_job, "status_url"), &key).await;
    assert_eq!(progress_of(&status), (0, STEPS + 2), "{status}");
    assert_eq!(status["progress"], 0.0, "{status}");

    // A preview worker: one task per frame plus the file.
    let claimed = claim_over_http(&app, &worker_key, "cpu-1", Some("preview")).await;
    assert_eq!(claimed["job_id"], preview_job["request_id"]);
    let status = app
        .status(str_field(&preview_job, "status_url"), &key)
        .await;
    assert_eq!(progress_of(&status), (0, FRAMES + 1), "{status}");

    // The result endpoint's 409 shows the same messages.
    let response = app.get(str_field(&preview_job, "response_url"), &key).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["statusMessages"]["detail_message"],
        format!("Progress: 0/{} Tasks done", FRAMES + 1),
        "{body}"
    );
}

#[tokio::test]
async fn a_cancel_request_keeps_the_progress_form_and_says_so_apart() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let url = str_field(&created, "status_url");
    let lease = claim_as(&app, "worker:cancel-test", Pipeline::T2v).await;

    let response = app
        .put(
            &format!("{}?force=true", str_field(&created, "cancel_url")),
            &key,
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let status = app.status(url, &key).await;
    assert_eq!(progress_of(&status), (0, STEPS + 2), "{status}");
    assert_eq!(
        status["statusMessages"]["cancel_requested"], true,
        "{status}"
    );

    app.report_progress(&lease, 3, 24).await;
    let status = app.status(url, &key).await;
    assert_eq!(progress_of(&status), (3, 24), "{status}");
    assert_eq!(
        status["statusMessages"]["cancel_requested"], true,
        "{status}"
    );
    let messages = status["statusMessages"].to_string();
    assert!(!messages.contains("stopping"), "{status}");
}

#[tokio::test]
async fn the_estimate_is_in_status_messages_too() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let url = str_field(&created, "status_url");
    let lease = app.claim(Pipeline::T2v).await;

    // Nothing measured and no progress yet: nothing to estimate from.
    let status = app.status(url, &key).await;
    assert!(
        status["statusMessages"]
            .get("estimated_total_time_seconds")
            .is_none(),
        "{status}"
    );

    app.report_progress(&lease, 4, 24).await;
    let status = app.status(url, &key).await;
    let top = status["estimated_total_time_seconds"].as_f64();
    let inside = status["statusMessages"]["estimated_total_time_seconds"].as_f64();
    assert!(top.is_some_and(|e| e.is_finite() && e >= 0.0), "{status}");
    assert_eq!(top, inside, "{status}");
}

#[tokio::test]
async fn a_measured_run_time_gives_an_estimate_before_any_progress() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    seed_run_time(&app, &created, 42.0).await;
    app.claim(Pipeline::T2v).await;
    let status = app.status(str_field(&created, "status_url"), &key).await;
    assert_eq!(progress_of(&status), (0, STEPS + 2));
    assert_eq!(
        status["statusMessages"]["estimated_total_time_seconds"], 42.0,
        "{status}"
    );
    assert_eq!(status["estimated_total_time_seconds"], 42.0, "{status}");
}

/// Teaches the estimator that jobs like `created` take `seconds` (as a completed job
/// read from the store on start would).
async fn seed_run_time(app: &TestApp, created: &Value, seconds: f64) {
    let id = Uuid::parse_str(str_field(created, "request_id")).unwrap();
    let mut done = app.job(id).await;
    done.state = JobState::Completed;
    done.started_at_ms = Some(1_000_000);
    done.finished_at_ms = Some(1_000_000 + (seconds * 1000.0) as i64);
    app.state.metrics.eta.seed([&done]);
}

fn assert_near(value: Option<f64>, want: f64, status: &Value) {
    let value = value.unwrap_or_else(|| panic!("an estimate near {want} s: {status}"));
    assert!(
        (value - want).abs() <= 2.0,
        "estimated_start_seconds {value}, want about {want}: {status}"
    );
}

#[tokio::test]
async fn estimated_start_is_null_without_workers_and_follows_them() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(app.create_t2v(&key, T2V, 0).await);
    }
    let status_of = |i: usize| str_field(&jobs[i], "status_url").to_string();

    // Nobody serves t2v: null, present.
    let status = app.status(&status_of(0), &key).await;
    assert_eq!(start_estimate(&status), None, "{status}");

    // Two workers, each job of this model measured at 100 s.
    seed_run_time(&app, &jobs[0], 100.0).await;
    let first = claim_as(&app, "worker:a", Pipeline::T2v).await;
    let _second = claim_as(&app, "worker:b", Pipeline::T2v).await;
    // Jobs 2, 3, 4 wait at positions 0, 1, 2: both workers free in ~100 s, then every
    // 100 s again.
    let status = app.status(&status_of(2), &key).await;
    assert_eq!(status["queue_position"], 0);
    assert_near(start_estimate(&status), 100.0, &status);
    let status = app.status(&status_of(3), &key).await;
    assert_near(start_estimate(&status), 100.0, &status);
    let status = app.status(&status_of(4), &key).await;
    assert_near(start_estimate(&status), 200.0, &status);

    // Worker a says its job is half done after no time at all: it is about to be free.
    app.state
        .store
        .heartbeat(
            &first.lease,
            Some(ProgressUpdate { done: 5, total: 10 }),
            600_000,
        )
        .await
        .unwrap();
    let status = app.status(&status_of(2), &key).await;
    assert_near(start_estimate(&status), 0.0, &status);
    let status = app.status(&status_of(3), &key).await;
    assert_near(start_estimate(&status), 100.0, &status);
    let status = app.status(&status_of(4), &key).await;
    assert_near(start_estimate(&status), 100.0, &status);

    // Statuses other than IN_QUEUE have no such field.
    let running = app.status(&status_of(0), &key).await;
    assert!(
        running.get("estimated_start_seconds").is_none(),
        "{running}"
    );
}

#[tokio::test]
async fn an_idle_worker_of_another_pipeline_does_not_count() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let nothing = app
        .state
        .store
        .claim(&claim_request("worker:i2v-only", Pipeline::I2v))
        .await
        .unwrap();
    assert!(nothing.is_none());
    let status = app.status(str_field(&created, "status_url"), &key).await;
    assert_eq!(start_estimate(&status), None, "{status}");
}

#[tokio::test]
async fn every_in_progress_status_of_a_real_run_has_the_progress_form() {
    let app = spawn_app().await;
    let key = app.client_key().await;
    // The in-process worker is serving once it first asked for a job.
    pipelet_testkit::wait_until_async(JOB_TIMEOUT, "the worker asks for a job", || async {
        app.state.metrics.eta.serving(Pipeline::T2v) > 0
    })
    .await;
    // Two jobs: the second waits while the one worker renders the first.
    let body = json!({"prompt": "a paper boat", "width": 832, "height": 480, "duration": 5});
    let first = app.create(&key, T2V, &body).await;
    let second = app.create(&key, T2V, &body).await;
    let frames = 16 * 5 + 1;
    let second_at_once = app.status(str_field(&second, "status_url"), &key).await;
    let mut in_progress = 0;
    for created in [&first, &second] {
        let seen = app
            .wait_for_status(
                str_field(created, "status_url"),
                &key,
                "COMPLETED",
                JOB_TIMEOUT,
            )
            .await;
        for status in &seen {
            match status["status"].as_str() {
                Some("IN_PROGRESS") => {
                    in_progress += 1;
                    let (done, total) = progress_of(status);
                    assert_eq!(total, frames + 1, "the preview renderer's count: {status}");
                    assert!(done <= total, "{status}");
                }
                Some("IN_QUEUE") => {
                    // The in-process worker serves t2v: always a number, never null.
                    let estimate = start_estimate(status);
                    assert!(estimate.is_some_and(|e| e >= 0.0), "{status}");
                }
                _ => {}
            }
        }
    }
    assert!(in_progress > 0, "no IN_PROGRESS status was seen");
    if second_at_once["status"] == "IN_QUEUE" {
        assert!(
            start_estimate(&second_at_once).is_some(),
            "{second_at_once}"
        );
    }
}
