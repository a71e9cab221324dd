//! Retention over HTTP: every finished status carries `expires_at`; after `--result-ttl`
//! the result answers 410 Gone while the status stays COMPLETED with `expired_at`; after
//! `--job-ttl` the request is 404; input images go as soon as a job ends unless
//! `--keep-inputs`; orphan blobs go after the grace period. The cleanup is driven with
//! `retention::run_once(now)` at future times instead of waiting days.

use std::time::{Duration, UNIX_EPOCH};

use crate::common::AppExt as _;
use crate::common::{
    I2V, JOB_TIMEOUT, T2V, TestApp, expect_error, spawn_app, spawn_app_with, str_field,
};
use bytes::Bytes;
use pipelet_server::config::{DEFAULT_JOB_TTL, DEFAULT_RESULT_TTL};
use pipelet_server::retention::{self, ORPHAN_GRACE, Removed};
use pipelet_store::blob::Blobs;
use pipelet_store::now_ms;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap()
}

/// An RFC 3339 timestamp of a status as Unix milliseconds.
fn unix_ms(body: &Value, field: &str) -> i64 {
    let text = body["statusMessages"][field]
        .as_str()
        .unwrap_or_else(|| panic!("no statusMessages.{field} in {body}"));
    let at = humantime::parse_rfc3339(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    i64::try_from(at.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn id_of(created: &Value) -> Uuid {
    Uuid::parse_str(str_field(created, "request_id")).unwrap()
}

async fn metrics(app: &TestApp) -> String {
    let response = app.get_open("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// Asserts `/metrics` counts `n` cleanups of `kind`.
async fn assert_removed(app: &TestApp, kind: &str, n: u64) {
    let text = metrics(app).await;
    let line = format!("pipelet_cleanup_removed_total{{kind=\"{kind}\"}} {n}");
    assert!(text.contains(&line), "no {line:?} in {text}");
}

#[tokio::test]
async fn an_expired_result_is_410_while_the_status_stays_completed_then_the_job_goes() {
    let app = spawn_app().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let status_url = str_field(&created, "status_url");
    let seen = app
        .wait_for_status(status_url, &key, "COMPLETED", JOB_TIMEOUT)
        .await;
    let done = seen.last().unwrap();
    let finished = unix_ms(done, "finished_at");
    assert_eq!(
        unix_ms(done, "expires_at"),
        finished + ms(DEFAULT_RESULT_TTL),
        "{done}"
    );
    assert!(done["statusMessages"].get("expired_at").is_none(), "{done}");
    let job = app.job(id_of(&created)).await;
    let result_blob = job.result.unwrap().blob;
    assert!(app.state.blobs.get(&result_blob).await.is_ok());

    // Nothing is due a minute before the result expires.
    let before = finished + ms(DEFAULT_RESULT_TTL) - 60_000;
    assert_eq!(
        retention::run_once(&app.state, before).await.unwrap(),
        Removed::default()
    );
    let response_url = str_field(&created, "response_url");
    let (_, mp4) = app.fetch_video(response_url, &key).await;
    assert!(!mp4.is_empty());

    // A week later: the result is gone; the status says so and stays COMPLETED.
    let week = finished + ms(DEFAULT_RESULT_TTL) + 1;
    let removed = retention::run_once(&app.state, week).await.unwrap();
    assert_eq!(removed.results, 1, "{removed:?}");
    assert_eq!(removed.jobs, 0, "{removed:?}");
    assert!(
        app.state.blobs.get(&result_blob).await.is_err(),
        "the video is deleted"
    );
    let status = app.status(status_url, &key).await;
    assert_eq!(status["status"], "COMPLETED", "{status}");
    assert_eq!(unix_ms(&status, "expired_at"), week, "{status}");
    assert!(
        status["statusMessages"]["expires_at"].is_string(),
        "{status}"
    );
    let gone = expect_error(app.get(response_url, &key).await, StatusCode::GONE).await;
    let detail = str_field(&gone, "detail");
    assert!(detail.contains("expired"), "{detail}");
    let text = metrics(&app).await;
    assert!(
        text.contains("pipelet_cleanup_removed_total{kind=\"result\"} 1"),
        "{text}"
    );

    // After --job-ttl the request itself is gone.
    let month = finished + ms(DEFAULT_JOB_TTL) + 1;
    let removed = retention::run_once(&app.state, month).await.unwrap();
    assert_eq!(removed.jobs, 1, "{removed:?}");
    expect_error(app.get(status_url, &key).await, StatusCode::NOT_FOUND).await;
    expect_error(app.get(response_url, &key).await, StatusCode::NOT_FOUND).await;
    assert_removed(&app, "job", 1).await;
}

#[tokio::test]
async fn inputs_go_when_the_job_ends_unless_kept_and_zero_keeps_forever() {
    let app = spawn_app_with(|c| c.workers = 0).await;
    let key = app.client_key().await;
    let cancelled = app.create_i2v(&key, I2V, 0).await;
    let queued = app.create_i2v(&key, I2V, 0).await;
    app.put(str_field(&cancelled, "cancel_url"), &key).await;
    let input = Blobs::input_key(id_of(&cancelled));
    assert!(app.state.blobs.get(&input).await.is_ok());

    let removed = retention::run_once(&app.state, now_ms()).await.unwrap();
    assert_eq!(removed.inputs, 1, "{removed:?}");
    assert!(
        app.state.blobs.get(&input).await.is_err(),
        "the image is deleted"
    );
    let queued_input = Blobs::input_key(id_of(&queued));
    assert!(
        app.state.blobs.get(&queued_input).await.is_ok(),
        "a queued job keeps its image"
    );
    let status = app.status(str_field(&cancelled, "status_url"), &key).await;
    assert_eq!(status["status"], "CANCELLED", "{status}");
    assert!(
        status["statusMessages"]["expires_at"].is_string(),
        "{status}"
    );
    let queued_status = app.status(str_field(&queued, "status_url"), &key).await;
    assert!(
        queued_status["statusMessages"].get("expires_at").is_none(),
        "{queued_status}"
    );

    // --keep-inputs: the image stays until the result would expire.
    let kept = spawn_app_with(|c| {
        c.workers = 0;
        c.keep_inputs = true;
    })
    .await;
    let key = kept.client_key().await;
    let created = kept.create_i2v(&key, I2V, 0).await;
    kept.put(str_field(&created, "cancel_url"), &key).await;
    let input = Blobs::input_key(id_of(&created));
    let removed = retention::run_once(&kept.state, now_ms() + 60_000)
        .await
        .unwrap();
    assert_eq!(removed, Removed::default());
    assert!(kept.state.blobs.get(&input).await.is_ok(), "kept");
    let later = now_ms() + ms(DEFAULT_RESULT_TTL) + 60_000;
    let removed = retention::run_once(&kept.state, later).await.unwrap();
    assert_eq!(removed.inputs, 1, "{removed:?}");
    assert!(kept.state.blobs.get(&input).await.is_err());

    // 0 keeps forever: no expires_at, and nothing is ever removed.
    let forever = spawn_app_with(|c| {
        c.workers = 0;
        c.keep_inputs = true;
        c.result_ttl = None;
        c.job_ttl = None;
    })
    .await;
    let key = forever.client_key().await;
    let created = forever.create_i2v(&key, I2V, 0).await;
    forever.put(str_field(&created, "cancel_url"), &key).await;
    let far = now_ms() + ms(Duration::from_secs(100 * 365 * 24 * 3600));
    let removed = retention::run_once(&forever.state, far).await.unwrap();
    assert_eq!(removed, Removed::default());
    let status = forever
        .status(str_field(&created, "status_url"), &key)
        .await;
    assert_eq!(status["status"], "CANCELLED", "{status}");
    assert!(
        status["statusMessages"].get("expires_at").is_none(),
        "{status}"
    );
}

#[tokio::test]
async fn orphan_blobs_are_swept_after_the_grace_period() {
    let app = spawn_app_with(|c| c.workers = 0).await;
    let far = now_ms() + ms(ORPHAN_GRACE) * 2;
    let swept = retention::sweep_orphans(&app.state, far, ORPHAN_GRACE).await;
    assert_eq!(
        swept.unwrap(),
        0,
        "an empty blob store has nothing to sweep"
    );
    let key = app.client_key().await;
    // An image whose create never committed, and a late upload of a lost worker.
    let orphan_input = Blobs::input_key(Uuid::new_v4());
    let queued = app.create_i2v(&key, I2V, 0).await;
    let stray_result = Blobs::result_key(id_of(&queued), 7);
    let unknown = "notes/readme.txt".to_string();
    for blob in [&orphan_input, &stray_result, &unknown] {
        app.state
            .blobs
            .put(blob, Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    let grace = ORPHAN_GRACE;
    let swept = retention::sweep_orphans(&app.state, now_ms(), grace)
        .await
        .unwrap();
    assert_eq!(swept, 0, "too young to be orphans");

    let later = now_ms() + ms(grace) + 60_000;
    let swept = retention::sweep_orphans(&app.state, later, grace)
        .await
        .unwrap();
    assert_eq!(swept, 1, "only the image no job references");
    assert!(app.state.blobs.get(&orphan_input).await.is_err());
    let queued_input = Blobs::input_key(id_of(&queued));
    assert!(app.state.blobs.get(&queued_input).await.is_ok());
    // A running or queued job's blobs are never orphans (its worker may report it yet).
    assert!(app.state.blobs.get(&stray_result).await.is_ok());
    assert!(
        app.state.blobs.get(&unknown).await.is_ok(),
        "other layouts are left alone"
    );

    // Once the job has ended, the stray upload it never referenced goes too.
    app.put(str_field(&queued, "cancel_url"), &key).await;
    let swept = retention::sweep_orphans(&app.state, later, grace)
        .await
        .unwrap();
    assert_eq!(swept, 1);
    assert!(app.state.blobs.get(&stray_result).await.is_err());
    assert_removed(&app, "orphan", 2).await;
}

#[tokio::test]
async fn a_result_deleted_while_it_is_fetched_is_410_not_500() {
    let app = spawn_app().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    app.wait_until_status(&created, &key, "COMPLETED").await;
    // The cleanup read nothing yet, but the video is gone (e.g. it expired between the
    // job read and the blob read).
    let job = app.job(id_of(&created)).await;
    app.state
        .blobs
        .delete(&job.result.unwrap().blob)
        .await
        .unwrap();
    let gone = expect_error(
        app.get(str_field(&created, "response_url"), &key).await,
        StatusCode::GONE,
    )
    .await;
    assert!(
        str_field(&gone, "detail").contains("no longer stored"),
        "{gone}"
    );
}

#[tokio::test]
async fn the_background_cleanup_deletes_a_finished_jobs_input_on_its_own() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.retention_interval = Duration::from_millis(20);
    })
    .await;
    let key = app.client_key().await;
    let created = app.create_i2v(&key, I2V, 0).await;
    let input = Blobs::input_key(id_of(&created));
    app.put(str_field(&created, "cancel_url"), &key).await;
    pipelet_testkit::wait_until_async(Duration::from_secs(30), "the input is removed", || async {
        app.state.blobs.get(&input).await.is_err()
    })
    .await;
    let job = app.job(id_of(&created)).await;
    assert_eq!(job.input_blob, None, "{job:?}");
}
