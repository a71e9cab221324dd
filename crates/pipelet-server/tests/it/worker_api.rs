//! The worker API over real HTTP: role checks, fenced leases (a zombie's late calls are
//! refused and change nothing), streamed result upload, forced cancel of a running job,
//! and the metrics that show it all.

use std::time::Duration;

use crate::common::*;
use pipelet_store::Role;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn claim(app: &TestApp, key: &str, worker: &str) -> reqwest::Response {
    app.client
        .post(app.url("/worker/v1/claim"))
        .bearer_auth(key)
        .json(&json!({"worker_id": worker, "pipelines": ["t2v", "i2v"], "wait_ms": 2000}))
        .send()
        .await
        .expect("claim")
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("post")
}

async fn upload(
    app: &TestApp,
    key: &str,
    id: &str,
    token: i64,
    bytes: Vec<u8>,
) -> reqwest::Response {
    app.client
        .put(app.url(&format!("/worker/v1/jobs/{id}/result?lease_token={token}")))
        .bearer_auth(key)
        .body(bytes)
        .send()
        .await
        .expect("upload")
}

/// Claims as `worker` and returns the claim's JSON body (there must be a job).
async fn claimed(app: &TestApp, key: &str, worker: &str) -> Value {
    claim(app, key, worker)
        .await
        .json()
        .await
        .expect("claim json")
}

/// `POST /worker/v1/jobs/{id}/{verb}` with `body`.
async fn job_call(
    app: &TestApp,
    key: &str,
    id: &str,
    verb: &str,
    body: Value,
) -> reqwest::Response {
    post(app, key, &format!("/worker/v1/jobs/{id}/{verb}"), body).await
}

fn complete_body(token: i64) -> Value {
    json!({"lease_token": token, "width": 512, "height": 512, "frames": 17, "fps": 16,
           "backend": "test", "run_seconds": 0.5})
}

#[tokio::test]
async fn only_worker_keys_use_the_worker_api() {
    let app = spawn_queue_only().await;
    let client = app.client_key().await;
    let r = claim(&app, &client, "w").await;
    expect_code(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = claim(&app, &app.admin_key, "w").await;
    expect_code(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = claim(&app, "plt_nope", "w").await;
    expect_code(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let worker = app.key(Role::Worker, 0).await;
    // A worker key cannot create or read client requests.
    let r = app.post_create(&worker, T2V, &json!({"prompt": "x"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Nothing queued: the long poll answers 204 after its wait.
    let r = app
        .client
        .post(app.url("/worker/v1/claim"))
        .bearer_auth(&worker)
        .json(&json!({"worker_id": "w", "pipelines": ["t2v"], "wait_ms": 50}))
        .send()
        .await
        .expect("claim");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Bad claims are 4xx with a detail.
    let r = post(
        &app,
        &worker,
        "/worker/v1/claim",
        json!({"worker_id": "", "pipelines": ["t2v"]}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = post(
        &app,
        &worker,
        "/worker/v1/claim",
        json!({"worker_id": "w", "pipelines": []}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.json::<Value>().await.expect("json")["detail"].is_string());
}

#[tokio::test]
async fn a_zombie_workers_late_calls_are_refused() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.lease = Duration::from_millis(300);
        c.heartbeat = Duration::from_millis(100);
    })
    .await;
    let client = app.client_key().await;
    let worker = app.key(Role::Worker, 0).await;
    let created = app.create_t2v(&client, T2V, 0).await;
    let id = str_field(&created, "request_id").to_string();

    let zombie = claimed(&app, &worker, "zombie").await;
    assert_eq!(zombie["job_id"], id.as_str());
    let old = zombie["lease_token"].as_i64().expect("token");
    // The zombie stops heartbeating; the reaper re-queues the job (a true position again).
    app.wait_until_status(&created, &client, "IN_QUEUE").await;
    let fresh = claimed(&app, &worker, "fresh").await;
    let new = fresh["lease_token"].as_i64().expect("token");
    assert!(new > old);
    assert_eq!(fresh["attempt"], 2);

    let hb = job_call(&app, &worker, &id, "heartbeat", json!({"lease_token": old})).await;
    let body = expect_error(hb, StatusCode::CONFLICT).await;
    assert_eq!(body["code"], "lease_lost", "{body}");
    assert_eq!(body["lease_lost"], true, "{body}");
    assert_eq!(
        upload(&app, &worker, &id, old, b"late".to_vec())
            .await
            .status(),
        StatusCode::CONFLICT
    );
    let late = job_call(&app, &worker, &id, "complete", complete_body(old)).await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    let fail = json!({"lease_token": old, "error": "boom", "retryable": false});
    assert_eq!(
        job_call(&app, &worker, &id, "fail", fail).await.status(),
        StatusCode::CONFLICT
    );
    let status = app.status(str_field(&created, "status_url"), &client).await;
    assert_eq!(
        status["status"], "IN_PROGRESS",
        "the zombie changed nothing: {status}"
    );

    // The live lease completes normally; completing needs an uploaded result first.
    let early = job_call(&app, &worker, &id, "complete", complete_body(new)).await;
    let body = expect_error(early, StatusCode::CONFLICT).await;
    assert_eq!(body["code"], "result_not_uploaded", "{body}");
    let video = b"not really an mp4, but bytes are bytes".to_vec();
    let r = upload(&app, &worker, &id, new, video.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.expect("json")["bytes"], video.len());
    let done = job_call(&app, &worker, &id, "complete", complete_body(new)).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let again = job_call(&app, &worker, &id, "complete", complete_body(new)).await;
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "completes exactly once"
    );
    let (meta, bytes) = app
        .fetch_video(str_field(&created, "response_url"), &client)
        .await;
    assert_eq!(bytes, video);
    assert_eq!(meta["backend"], "test");
}

#[tokio::test]
async fn results_over_the_limit_are_refused() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.max_result_bytes = 1024;
    })
    .await;
    let client = app.client_key().await;
    let worker = app.key(Role::Worker, 0).await;
    app.create_t2v(&client, T2V, 0).await;
    let job = claimed(&app, &worker, "w").await;
    let id = job["job_id"].as_str().expect("id").to_string();
    let token = job["lease_token"].as_i64().expect("token");
    let r = upload(&app, &worker, &id, token, vec![0u8; 4096]).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        r.json::<Value>().await.expect("json")["detail"]
            .as_str()
            .expect("detail")
            .contains("1024")
    );
    let r = job_call(&app, &worker, &id, "complete", complete_body(token)).await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "nothing was stored");
}

#[tokio::test]
async fn a_running_job_is_cancelled_only_when_forced() {
    let app = spawn_app_with(|c| {
        c.lease = Duration::from_secs(4);
        c.heartbeat = Duration::from_millis(200);
    })
    .await;
    let client = app.client_key().await;
    let body = json!({"prompt": "long", "width": 1280, "height": 720, "duration": 5});
    let created = app.create(&client, T2V, &body).await;
    let status_url = str_field(&created, "status_url");
    let cancel_url = str_field(&created, "cancel_url");
    app.wait_for_status(status_url, &client, "IN_PROGRESS", JOB_TIMEOUT)
        .await;
    assert_eq!(
        app.put(cancel_url, &client).await.status(),
        StatusCode::CONFLICT
    );
    let forced = app.put(&format!("{cancel_url}?force=true"), &client).await;
    assert_eq!(forced.status(), StatusCode::ACCEPTED);
    app.wait_for_status(status_url, &client, "CANCELLED", JOB_TIMEOUT)
        .await;
    let status = app.status(status_url, &client).await;
    assert!(
        status["statusMessages"]["cancelled_by"]
            .as_str()
            .expect("by")
            .contains("test-client")
    );
    let result = app.get(str_field(&created, "response_url"), &client).await;
    assert_eq!(result.status(), StatusCode::CONFLICT);
    let metrics = app.get_open("/metrics").await.text().await.expect("text");
    assert!(
        metrics.contains(&format!(
            "pipelet_jobs_finished_total{{model=\"{T2V}\",state=\"cancelled\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_cancel_nobody_requested_is_refused_and_the_lease_kept() {
    let app = spawn_queue_only().await;
    let client = app.client_key().await;
    let worker = app.key(Role::Worker, 0).await;
    let created = app.create_t2v(&client, T2V, 0).await;
    let id = str_field(&created, "request_id").to_string();
    let job = claimed(&app, &worker, "w").await;
    let token = job["lease_token"].as_i64().expect("token");

    let r = job_call(
        &app,
        &worker,
        &id,
        "cancelled",
        json!({"lease_token": token}),
    )
    .await;
    let body = expect_error(r, StatusCode::CONFLICT).await;
    assert_eq!(body["code"], "cancel_not_requested", "{body}");
    assert_eq!(body["lease_lost"], false, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("no cancel was requested"),
        "{body}"
    );
    let status = app.status(str_field(&created, "status_url"), &client).await;
    assert_eq!(status["status"], "IN_PROGRESS");
    let hb = job_call(
        &app,
        &worker,
        &id,
        "heartbeat",
        json!({"lease_token": token}),
    )
    .await;
    assert_eq!(hb.status(), StatusCode::OK, "the lease is still valid");
}

#[tokio::test]
async fn metrics_show_queue_depth_workers_and_timings() {
    let app = spawn_queue_only().await;
    let client = app.client_key().await;
    for _ in 0..3 {
        app.create_t2v(&client, T2V_PRO, 0).await;
    }
    let worker = app.key(Role::Worker, 0).await;
    assert_eq!(claim(&app, &worker, "gpu-7").await.status(), StatusCode::OK);
    let r = app.get_open("/metrics").await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.expect("text");
    for line in [
        format!("pipelet_queue_jobs{{model=\"{T2V_PRO}\",state=\"queued\"}} 2"),
        format!("pipelet_queue_jobs{{model=\"{T2V_PRO}\",state=\"running\"}} 1"),
        format!("pipelet_jobs_created_total{{model=\"{T2V_PRO}\"}} 3"),
        format!("pipelet_job_wait_seconds_count{{model=\"{T2V_PRO}\"}} 1"),
        "pipelet_workers_active 1".to_string(),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
}

#[tokio::test]
async fn metrics_can_require_a_key() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.metrics_require_key = true;
    })
    .await;
    let r = app.get_open("/metrics").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app.get(&app.url("/metrics"), &app.admin_key).await;
    assert_eq!(r.status(), StatusCode::OK);
}
