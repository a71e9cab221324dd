//! `GET /queue/{model_id}/requests/{id}`: 200 with the MP4 as plain base64 once
//! COMPLETED; 409 with the status for every other state (and the reason for FAILED);
//! 404 for unknown requests.

use crate::common::AppExt as _;
use crate::common::{T2V, expect_error, spawn_app, spawn_queue_only, str_field};
use pipelet_api::Pipeline;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_completed_request_returns_the_mp4_as_plain_base64() {
    let app = spawn_app().await;
    let key = app.client_key().await;
    let body = json!({"prompt": "a lighthouse", "width": 512, "height": 512, "duration": 1});
    let created = app.create(&key, T2V, &body).await;
    let seen = app.wait_until_status(&created, &key, "COMPLETED").await;
    let done = seen.last().unwrap();
    let messages = &done["statusMessages"];
    assert_eq!(messages["message"], "COMPLETED", "{done}");
    assert!(
        messages["queue_time_seconds"].is_number(),
        "timings: {done}"
    );
    assert!(
        messages["inference_time_seconds"].is_number(),
        "timings: {done}"
    );
    assert!(done.get("queue_position").is_none(), "{done}");

    let url = str_field(&created, "response_url");
    let response = app.get(url, &key).await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let (video, mp4) = app.fetch_video(url, &key).await;
    assert_eq!(&mp4[4..8], b"ftyp", "an MP4 starts with ftyp");
    assert_eq!(video["file_size"], mp4.len(), "{video}");
    assert_eq!(video["content_type"], "video/mp4", "{video}");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(512), Some(512))
    );
    assert_eq!(video["num_frames"], 17, "16 fps x 1 s + 1: {video}");
    assert_eq!(video["fps"], 16, "{video}");
    let duration = video["duration"].as_f64().expect("duration");
    assert!((duration - 17.0 / 16.0).abs() < 1e-9, "{video}");
    assert!(str_field(&video, "file_name").ends_with(".mp4"), "{video}");
    assert_eq!(video["backend"], "preview", "{video}");

    // The admin gets the same bytes; fetching twice is fine.
    let (_, again) = app.fetch_video(url, &app.admin_key).await;
    assert_eq!(again, mp4);

    // Too late to cancel.
    let response = app.put(str_field(&created, "cancel_url"), &key).await;
    let body = expect_error(response, StatusCode::CONFLICT).await;
    assert_eq!(body["status"], "COMPLETED", "{body}");
}

#[tokio::test]
async fn the_result_is_409_with_the_status_until_completed() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let running = app.create_t2v(&key, T2V, 0).await;
    let queued = app.create_t2v(&key, T2V, 0).await;
    let cancelled = app.create_t2v(&key, T2V, 0).await;
    let _lease = app.claim(Pipeline::T2v).await;
    let response = app.put(str_field(&cancelled, "cancel_url"), &key).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    for (created, want) in [
        (&queued, "IN_QUEUE"),
        (&running, "IN_PROGRESS"),
        (&cancelled, "CANCELLED"),
    ] {
        let response = app.get(str_field(created, "response_url"), &key).await;
        let body = expect_error(response, StatusCode::CONFLICT).await;
        assert_eq!(body["code"], "not_completed", "{body}");
        assert_eq!(body["status"], want, "{body}");
        assert!(str_field(&body, "detail").contains(want), "{body}");
    }
    let response = app.get(str_field(&queued, "response_url"), &key).await;
    let body = expect_error(response, StatusCode::CONFLICT).await;
    assert_eq!(body["queue_position"], 0, "{body}");
}

#[tokio::test]
async fn the_result_of_a_failed_request_is_409_with_the_reason() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let lease = app.claim(Pipeline::T2v).await;
    app.fail(&lease, "the runner ran out of GPU memory").await;
    let response = app.get(str_field(&created, "response_url"), &key).await;
    let body = expect_error(response, StatusCode::CONFLICT).await;
    assert_eq!(body["status"], "FAILED", "{body}");
    assert!(
        str_field(&body, "detail").contains("the runner ran out of GPU memory"),
        "{body}"
    );
}

#[tokio::test]
async fn the_result_of_an_unknown_request_is_404() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let id = Uuid::new_v4();
    let url = app.url(&format!("/queue/{T2V}/requests/{id}"));
    let body = expect_error(app.get(&url, &key).await, StatusCode::NOT_FOUND).await;
    assert_eq!(body["code"], "request_not_found", "{body}");
    // Another key cannot read an existing one either.
    let other = app.client_key().await;
    let response = app.get(str_field(&created, "response_url"), &other).await;
    expect_error(response, StatusCode::NOT_FOUND).await;
}
