//! What a failed or retried request tells whom: a client key reads a plain reason (no
//! worker or host names, no paths, no lease tokens) in the status, the logs, the live
//! stream and the result's 409; an admin key also gets `statusMessages.internal_detail`
//! with the worker and the raw error.

use std::time::Duration;

use crate::common::AppExt as _;
use crate::common::{T2V, expect_error, spawn_app_with, str_field};
use crate::common::{spawn_queue_only_one_attempt, step_preview_worker};
use pipelet_api::Pipeline;
use pipelet_store::{ClaimRequest, JobState, Role, now_ms};
use pipelet_worker::StepOutcome;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

const HOLDER: &str = "worker:gpu-1/vm-3389";

/// Fails the test if `text` (anything a client key read) names something internal.
fn assert_plain(what: &str, text: &str, internal: &[&str]) {
    for word in internal {
        assert!(!text.contains(word), "{what} shows {word:?}: {text}");
    }
    assert!(!text.contains("internal_detail"), "{what}: {text}");
}

/// The whole body of a live status stream of a finished request (it closes by itself).
async fn stream_body(app: &crate::common::TestApp, status_url: &str, key: &str) -> String {
    let response = app.get(&format!("{status_url}/stream?logs=1"), key).await;
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("a finished request's stream closes")
        .expect("stream body")
}

#[tokio::test]
async fn a_worker_that_stops_responding_is_not_named_to_the_client() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.max_attempts = 2;
    })
    .await;
    let key = app.client_key().await;
    let admin = app.admin_key.clone();
    let created = app.create_t2v(&key, T2V, 0).await;
    let id = Uuid::parse_str(str_field(&created, "request_id")).expect("uuid");
    let status_url = str_field(&created, "status_url");
    let internal = ["gpu-1", "vm-3389", "holder", "worker:", "lease"];

    for attempt in 1..=2u32 {
        // A worker leases the job and dies: its lease runs out and the reaper takes it.
        let lease = app
            .state
            .store
            .claim(&ClaimRequest {
                worker_id: HOLDER.into(),
                pipelines: vec![Pipeline::T2v],
                loaded: None,
                lease_ms: -1,
                max_wait_for_switch_ms: 60_000,
            })
            .await
            .expect("claim")
            .expect("the request is queued");
        assert_eq!(lease.job.attempt, attempt);
        app.state.store.reap_expired(now_ms()).await.expect("reap");
        let job = app.job(id).await;
        assert_ne!(job.state, JobState::Running, "attempt {attempt} reaped");

        let status = app.status(&format!("{status_url}?logs=1"), &key).await;
        assert_plain("the client's status", &status.to_string(), &internal);
        let seen = app.status(&format!("{status_url}?logs=1"), &admin).await;
        let detail = seen["statusMessages"]["internal_detail"]
            .as_str()
            .unwrap_or_default();
        assert!(detail.contains(HOLDER), "the admin sees the worker: {seen}");
        assert!(detail.contains("lease expired"), "{seen}");
        assert!(
            seen["logs"].to_string().contains(HOLDER),
            "admin logs: {seen}"
        );
        if attempt == 1 {
            assert_eq!(status["status"], "IN_QUEUE", "{status}");
            assert_eq!(status["statusMessages"]["message"], "RETRYING", "{status}");
            assert_eq!(
                status["statusMessages"]["detail_message"],
                "the worker stopped responding (attempt 1 of 2)",
                "{status}"
            );
        } else {
            assert_eq!(status["status"], "FAILED", "{status}");
            assert_eq!(
                status["statusMessages"]["error"], "the worker stopped responding; retried 1 time",
                "{status}"
            );
        }
    }

    // The result's 409 and the live stream say the same, as plainly.
    let response_url = str_field(&created, "response_url");
    let body = expect_error(app.get(response_url, &key).await, StatusCode::CONFLICT).await;
    assert_plain("the client's 409", &body.to_string(), &internal);
    assert_eq!(
        body["detail"],
        "the request failed: the worker stopped responding; retried 1 time"
    );
    let body = expect_error(app.get(response_url, &admin).await, StatusCode::CONFLICT).await;
    assert!(
        body["statusMessages"]["internal_detail"]
            .as_str()
            .unwrap_or_default()
            .contains(HOLDER),
        "{body}"
    );
    let events = stream_body(&app, status_url, &key).await;
    assert!(events.contains("stopped responding"), "{events}");
    assert_plain("the client's stream", &events, &internal);
    let events = stream_body(&app, status_url, &admin).await;
    assert!(events.contains("internal_detail"), "{events}");
    assert!(events.contains(HOLDER), "{events}");
}

#[tokio::test]
async fn a_path_in_a_workers_error_does_not_reach_the_client() {
    let app = spawn_app_with(|c| c.workers = 0).await;
    let key = app.client_key().await;
    let worker_key = app.key(Role::Worker, 0).await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let status_url = str_field(&created, "status_url");
    let worker = |path: &str| app.url(&format!("/worker/v1{path}"));

    let claimed: Value = app
        .client
        .post(worker("/claim"))
        .bearer_auth(&worker_key)
        .json(&json!({"worker_id": "vm-3389", "pipelines": ["t2v"], "wait_ms": 0}))
        .send()
        .await
        .expect("claim")
        .json()
        .await
        .expect("claim JSON");
    let job_id = str_field(&claimed, "job_id");
    // An older worker: the raw error (path, host, URL) as the only text, no detail.
    let raw = "cannot write /srv/pipelet/scratch/x.mp4: No space left on device \
               (uploading to http://10.0.0.7:8080/blobs)";
    let response = app
        .client
        .post(worker(&format!("/jobs/{job_id}/fail")))
        .bearer_auth(&worker_key)
        .json(&json!({"lease_token": claimed["lease_token"], "error": raw, "retryable": false}))
        .send()
        .await
        .expect("fail");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let status = app.status(status_url, &key).await;
    assert_eq!(status["status"], "FAILED", "{status}");
    assert_eq!(
        status["statusMessages"]["error"], "cannot write … No space left on device (uploading to …",
        "{status}"
    );
    assert_plain(
        "the client's status",
        &status.to_string(),
        &["/srv/", "10.0.0.7", "vm-3389"],
    );
    let seen = app.status(status_url, &app.admin_key).await;
    let detail = seen["statusMessages"]["internal_detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.starts_with(raw), "{seen}");
    assert!(detail.contains("vm-3389"), "the holder too: {seen}");
}

#[tokio::test]
async fn a_runner_failure_with_a_path_does_not_reach_the_client() {
    let app = spawn_queue_only_one_attempt().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let id = Uuid::parse_str(str_field(&created, "request_id")).expect("uuid");
    // A scratch folder that does not exist: the preview cannot write its video there,
    // and the OS error names the path.
    let scratch = app.state.config.data_dir.join("no-such-scratch-dir");
    let scratch_text = scratch.to_string_lossy().into_owned();
    let outcome = step_preview_worker(&app, Pipeline::T2v, scratch).await;
    assert!(
        matches!(&outcome, StepOutcome::Failed(failed, _) if *failed == id),
        "{outcome:?}"
    );

    let status_url = str_field(&created, "status_url");
    let status = app.status(&format!("{status_url}?logs=1"), &key).await;
    assert_eq!(status["status"], "FAILED", "{status}");
    assert_plain(
        "the client's status",
        &status.to_string(),
        &[&scratch_text, "local:test"],
    );
    let seen = app.status(status_url, &app.admin_key).await;
    let detail = seen["statusMessages"]["internal_detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.contains(&scratch_text),
        "the admin sees the path: {seen}"
    );
    assert!(detail.contains("holder local:test/0"), "{seen}");
}
