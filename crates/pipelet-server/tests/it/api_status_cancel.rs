//! `GET .../status` in every state and `PUT .../cancel`: 204 while queued (and again once
//! cancelled), 409 with the status once running or finished, 404 for unknown requests.
//!
//! The server runs with `workers: 0`; where a job must be running or finished, the test
//! plays the worker through the store (claim, heartbeat with progress, fail).

use crate::common::AppExt as _;
use crate::common::{T2V, expect_error, spawn_queue_only, str_field};
use pipelet_api::Pipeline;
use pipelet_store::Failure;
use reqwest::StatusCode;
use serde_json::Value;
use uuid::Uuid;

fn assert_common_shape(status: &Value, created: &Value) {
    assert_eq!(status["request_id"], created["request_id"], "{status}");
    assert_eq!(status["response_url"], created["response_url"], "{status}");
    assert!(status["statusMessages"].is_object(), "{status}");
    assert!(
        status.as_object().unwrap().contains_key("logs"),
        "logs is always present (fal clients read it): {status}"
    );
}

#[tokio::test]
async fn a_queued_request_shows_its_position_and_empty_messages() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let first = app.create_t2v(&key, T2V, 0).await;
    let second = app.create_t2v(&key, T2V, 0).await;
    let status = app.status(str_field(&second, "status_url"), &key).await;
    assert_common_shape(&status, &second);
    assert_eq!(status["status"], "IN_QUEUE", "{status}");
    assert_eq!(status["queue_position"], 1, "{status}");
    assert_eq!(status["statusMessages"], serde_json::json!({}), "{status}");
    assert!(
        status["logs"].is_null(),
        "logs are null unless asked for: {status}"
    );

    let with_logs = format!("{}?logs=1", str_field(&first, "status_url"));
    let status = app.status(&with_logs, &key).await;
    assert_eq!(status["queue_position"], 0, "{status}");
    let logs = status["logs"].as_array().expect("?logs=1 gives a list");
    assert!(!logs.is_empty(), "{status}");
    assert!(
        logs.iter()
            .all(|l| l["message"].is_string() && l["timestamp"].is_string())
    );
}

#[tokio::test]
async fn a_running_request_shows_progress_and_an_estimate() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let running = app.create_t2v(&key, T2V, 0).await;
    let waiting = app.create_t2v(&key, T2V, 0).await;
    let lease = app.claim(Pipeline::T2v).await;
    assert_eq!(lease.job.id.to_string(), str_field(&running, "request_id"));

    let url = str_field(&running, "status_url");
    let status = app.status(url, &key).await;
    assert_common_shape(&status, &running);
    assert_eq!(status["status"], "IN_PROGRESS", "{status}");
    assert!(status.get("queue_position").is_none(), "{status}");
    assert_eq!(
        status["statusMessages"]["message"], "PROCESSING",
        "{status}"
    );
    // The job behind it is now next.
    assert_eq!(app.position(&waiting, &key).await, 0);

    app.report_progress(&lease, 0, 24).await;
    let status = app.status(url, &key).await;
    let messages = &status["statusMessages"];
    assert_eq!(
        messages["detail_message"], "Progress: 0/24 Tasks done",
        "{status}"
    );
    assert!(
        status.get("estimated_total_time_seconds").is_none(),
        "{status}"
    );

    app.report_progress(&lease, 4, 24).await;
    let status = app.status(url, &key).await;
    assert_eq!(status["status"], "IN_PROGRESS", "{status}");
    let messages = &status["statusMessages"];
    assert_eq!(messages["message"], "PROCESSING", "{status}");
    assert_eq!(
        messages["detail_message"], "Progress: 4/24 Tasks done",
        "{status}"
    );
    let estimate = status["estimated_total_time_seconds"].as_f64();
    assert!(
        estimate.is_some_and(|e| e >= 0.0 && e.is_finite()),
        "{status}"
    );
    let progress = status["progress"].as_f64().expect("a numeric progress");
    assert!((progress - 4.0 / 24.0).abs() < 1e-9, "{status}");
}

#[tokio::test]
async fn a_failed_request_says_why_and_a_retried_one_is_queued_again() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let url = str_field(&created, "status_url");

    // A lost attempt with attempts left: back in the queue, saying why.
    let lease = app.claim(Pipeline::T2v).await;
    app.state
        .store
        .fail(&lease.lease, &Failure::plain("worker vanished"), true)
        .await
        .unwrap();
    let status = app.status(url, &key).await;
    assert_eq!(status["status"], "IN_QUEUE", "{status}");
    assert_eq!(status["queue_position"], 0, "{status}");

    let lease = app.claim(Pipeline::T2v).await;
    app.fail(&lease, "the GPU caught fire").await;
    let status = app.status(url, &key).await;
    assert_common_shape(&status, &created);
    assert_eq!(status["status"], "FAILED", "{status}");
    assert!(status.get("queue_position").is_none(), "{status}");
    let messages = status["statusMessages"].to_string();
    assert!(messages.contains("the GPU caught fire"), "{status}");
}

#[tokio::test]
async fn cancel_is_204_while_queued_and_again_once_cancelled() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let first = app.create_t2v(&key, T2V, 0).await;
    let second = app.create_t2v(&key, T2V, 0).await;
    for _ in 0..2 {
        let response = app.put(str_field(&first, "cancel_url"), &key).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response.text().await.unwrap().is_empty(), "204 has no body");
    }
    let status = app.status(str_field(&first, "status_url"), &key).await;
    assert_common_shape(&status, &first);
    assert_eq!(status["status"], "CANCELLED", "{status}");
    assert!(status.get("queue_position").is_none(), "{status}");
    assert_eq!(status["statusMessages"]["message"], "CANCELLED", "{status}");
    assert!(
        str_field(&status["statusMessages"], "cancelled_by").contains("client"),
        "says who cancelled: {status}"
    );
    // The request behind it moved up.
    assert_eq!(app.position(&second, &key).await, 0);
}

#[tokio::test]
async fn cancel_is_409_once_running_and_the_job_keeps_running() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let _lease = app.claim(Pipeline::T2v).await;
    let response = app.put(str_field(&created, "cancel_url"), &key).await;
    let body = expect_error(response, StatusCode::CONFLICT).await;
    assert_eq!(body["code"], "not_cancellable", "{body}");
    assert_eq!(body["status"], "IN_PROGRESS", "{body}");
    let status = app.status(str_field(&created, "status_url"), &key).await;
    assert_eq!(status["status"], "IN_PROGRESS", "{status}");
}

#[tokio::test]
async fn cancel_is_409_once_finished() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let lease = app.claim(Pipeline::T2v).await;
    app.fail(&lease, "out of memory").await;
    let response = app.put(str_field(&created, "cancel_url"), &key).await;
    let body = expect_error(response, StatusCode::CONFLICT).await;
    assert_eq!(body["status"], "FAILED", "{body}");
    let status = app.status(str_field(&created, "status_url"), &key).await;
    assert_eq!(status["status"], "FAILED", "{status}");
}

#[tokio::test]
async fn status_and_cancel_of_an_unknown_request_are_404() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let id = Uuid::new_v4();
    let base = app.url(&format!("/queue/{T2V}/requests/{id}"));
    let body = expect_error(
        app.get(&format!("{base}/status"), &key).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(body["code"], "request_not_found", "{body}");
    expect_error(
        app.put(&format!("{base}/cancel"), &key).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn malformed_paths_and_query_strings_answer_json() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let status_url = str_field(&created, "status_url");
    let cancel_url = str_field(&created, "cancel_url");

    // A path segment that is not UTF-8 names no model and no request.
    let bad_model = app.url("/queue/%FF");
    let response = app
        .client
        .post(&bad_model)
        .bearer_auth(&key)
        .json(&serde_json::json!({"prompt": "a"}))
        .send()
        .await
        .unwrap();
    expect_error(response, StatusCode::NOT_FOUND).await;
    let id = str_field(&created, "request_id");
    for path in [
        format!("/queue/%FF/requests/{id}/status"),
        format!("/queue/{T2V}/requests/%C3%28/status"),
    ] {
        expect_error(app.get(&app.url(&path), &key).await, StatusCode::NOT_FOUND).await;
    }
    expect_error(
        app.put(&app.url(&format!("/queue/%FF/requests/{id}/cancel")), &key)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    expect_error(
        app.get(&app.url(&format!("/queue/%FF/requests/{id}")), &key)
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // A query parameter given twice is a 400 with a JSON detail, and changes nothing.
    let response = app.get(&format!("{status_url}?logs=1&logs=0"), &key).await;
    expect_error(response, StatusCode::BAD_REQUEST).await;
    let response = app
        .put(&format!("{cancel_url}?force=1&force=0"), &key)
        .await;
    expect_error(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(app.status(status_url, &key).await["status"], "IN_QUEUE");
    // Unknown query parameters are ignored, like unknown body fields.
    let status = app
        .status(&format!("{status_url}?fal_webhook=x&verbose=1"), &key)
        .await;
    assert_eq!(status["queue_position"], 0, "{status}");
}
