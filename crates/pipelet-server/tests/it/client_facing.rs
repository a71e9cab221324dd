//! What a client meets around the queue calls: `/favicon.ico` answers, responses carry
//! `x-fal-request-id` (fal's clients fill in `requestId` from it), no message shows a
//! server path, and the admin key survives a first start that could not listen.

use crate::common::AppExt as _;
use crate::common::{I2V, JOB_TIMEOUT, T2V, expect_error, spawn_app, spawn_app_with, str_field};
use crate::common::{preview_result, spawn_queue_only_one_attempt, step_preview_worker};
use pipelet_api::Pipeline;
use pipelet_server::{Application, Config};
use pipelet_store::blob::Blobs;
use pipelet_worker::StepOutcome;
use reqwest::StatusCode;
use uuid::Uuid;

const FAL_REQUEST_ID: &str = "x-fal-request-id";

#[tokio::test]
async fn the_favicon_answers_without_a_key() {
    let app = crate::common::spawn_queue_only().await;
    let response = app.get_open("/favicon.ico").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "image/x-icon");
    let icon = response.bytes().await.expect("icon bytes");
    assert_eq!(&icon[..4], &[0, 0, 1, 0], "an ICO file");
}

#[tokio::test]
async fn create_status_and_result_carry_x_fal_request_id() {
    let app = spawn_app().await;
    let key = app.client_key().await;
    let body = serde_json::json!({"prompt": "a kite", "width": 512, "height": 512, "duration": 1});
    let response = app.post_create(&key, T2V, &body).await;
    assert_eq!(response.status(), StatusCode::OK);
    let header = |r: &reqwest::Response| {
        r.headers()
            .get(FAL_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let on_create = header(&response);
    let created: serde_json::Value = response.json().await.expect("create JSON");
    let id = str_field(&created, "request_id").to_string();
    assert_eq!(on_create.as_deref(), Some(id.as_str()), "create");

    let status_url = str_field(&created, "status_url");
    app.wait_for_status(status_url, &key, "COMPLETED", JOB_TIMEOUT)
        .await;
    let status = app.get(status_url, &key).await;
    assert_eq!(status.status(), StatusCode::OK);
    assert_eq!(header(&status).as_deref(), Some(id.as_str()), "status");

    let result = app.get(str_field(&created, "response_url"), &key).await;
    assert_eq!(result.status(), StatusCode::OK);
    assert_eq!(header(&result).as_deref(), Some(id.as_str()), "result");
}

/// Where the data dir's path must not show: everything a client reads.
fn assert_no_path(what: &str, text: &str, data_dir: &std::path::Path) {
    let dir = data_dir.to_string_lossy();
    assert!(
        !text.contains(dir.as_ref()) && !text.contains("/blobs/"),
        "{what} shows a server path: {text}"
    );
}

#[tokio::test]
async fn an_unreadable_input_image_fails_without_showing_a_server_path() {
    let app = spawn_queue_only_one_attempt().await;
    let key = app.client_key().await;
    let created = app.create_i2v(&key, I2V, 0).await;
    let id = Uuid::parse_str(str_field(&created, "request_id")).expect("uuid");
    // As when the image was stored by another server with blobs of its own.
    app.state
        .blobs
        .delete(&Blobs::input_key(id))
        .await
        .expect("delete the input image");

    let data_dir = app.state.config.data_dir.clone();
    let outcome = step_preview_worker(&app, Pipeline::I2v, data_dir.join("tmp")).await;
    assert!(
        matches!(&outcome, StepOutcome::Failed(failed, _) if *failed == id),
        "{outcome:?}"
    );

    let status = app.status(str_field(&created, "status_url"), &key).await;
    assert_eq!(status["status"], "FAILED", "{status}");
    assert_no_path("the status", &status.to_string(), &data_dir);
    let result = app.get(str_field(&created, "response_url"), &key).await;
    let body = expect_error(result, StatusCode::CONFLICT).await;
    assert_no_path("the result", &body.to_string(), &data_dir);
}

#[tokio::test]
async fn a_result_missing_from_the_blob_store_shows_no_server_path() {
    let app = spawn_app_with(|c| c.workers = 0).await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let lease = app.claim(Pipeline::T2v).await;
    let result = preview_result(
        Blobs::result_key(lease.lease.job_id, lease.lease.token),
        1000,
    );
    app.state
        .store
        .complete(&lease.lease, &result)
        .await
        .expect("complete without uploading the video");
    let response = app.get(str_field(&created, "response_url"), &key).await;
    // A video missing from the blob store is gone for the client (410, as after
    // retention), never a 500 carrying the blob's path.
    let body = expect_error(response, StatusCode::GONE).await;
    assert_no_path("the result", &body.to_string(), &app.state.config.data_dir);
}

#[tokio::test]
async fn a_first_start_that_cannot_listen_leaves_the_admin_key_to_the_next() {
    let dir = tempfile::tempdir().expect("temp dir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("take a port");
    let mut config = Config::for_data_dir(dir.path().join("data"));
    config.workers = 0;
    config.listen = busy.local_addr().expect("busy address");
    let failed = Application::build(config.clone())
        .await
        .err()
        .expect("a busy port fails the start");
    assert!(
        format!("{failed:#}").contains("cannot listen"),
        "{failed:#}"
    );

    config.listen = "127.0.0.1:0".parse().expect("address");
    let app = Application::build(config).await.expect("the next start");
    let key = app
        .admin_key()
        .expect("the next start creates and shows the admin key");
    let file = dir.path().join("data").join("admin.key");
    assert_eq!(app.admin_key_file(), Some(file.as_path()));
    let saved = std::fs::read_to_string(&file).expect("admin.key");
    assert_eq!(saved.trim(), key);
}
