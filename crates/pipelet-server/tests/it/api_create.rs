//! `POST /queue/{model_id}`: the 200 shape and its URLs, and every error status of the
//! contract's table (401 is in `api_auth.rs`), each with a JSON `detail`.

use crate::common::AppExt as _;
use crate::common::images::{b64, png};
use crate::common::{
    ALL_MODELS, I2V, T2V, expect_error, json_body, spawn_app_with, spawn_queue_only, str_field,
};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use serde_json::{Value, json};
use uuid::Uuid;

fn small_t2v() -> Value {
    json!({"prompt": "a paper boat", "width": 512, "height": 512, "duration": 1})
}

/// The create body's URLs are `<base>/queue/<model>/requests/<id>[/status|/cancel]`.
fn assert_urls(created: &Value, base: &str, model: &str) {
    let id = str_field(created, "request_id");
    let uuid = Uuid::parse_str(id).unwrap_or_else(|_| panic!("request_id {id:?} is not a UUID"));
    assert_eq!(uuid.to_string(), id, "request_id is a canonical UUID");
    let request = format!("{base}/queue/{model}/requests/{id}");
    assert_eq!(str_field(created, "response_url"), request, "{created}");
    assert_eq!(
        str_field(created, "status_url"),
        format!("{request}/status")
    );
    assert_eq!(
        str_field(created, "cancel_url"),
        format!("{request}/cancel")
    );
}

#[tokio::test]
async fn create_answers_a_uuid_absolute_urls_and_the_queue_position() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let first = app.create(&key, T2V, &small_t2v()).await;
    assert_urls(&first, &app.address, T2V);
    assert_eq!(first["queue_position"], 0, "{first}");
    assert_eq!(
        first["priority"], 0,
        "the default priority, said back: {first}"
    );
    let second = app.create(&key, T2V, &small_t2v()).await;
    assert_eq!(second["queue_position"], 1, "{second}");
    assert_ne!(first["request_id"], second["request_id"]);

    // The URLs work as given, and the status links back to the same response_url.
    let status = app.status(str_field(&second, "status_url"), &key).await;
    assert_eq!(status["response_url"], second["response_url"], "{status}");
    assert_eq!(status["request_id"], second["request_id"], "{status}");
}

#[tokio::test]
async fn urls_follow_the_host_header_and_forwarded_proto() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let response = app
        .client
        .post(app.url(&format!("/queue/{T2V}")))
        .bearer_auth(&key)
        .header(HOST, "videos.example.com:8443")
        .header("x-forwarded-proto", "https")
        .json(&small_t2v())
        .send()
        .await
        .unwrap();
    let created = json_body(response, StatusCode::OK).await;
    assert_urls(&created, "https://videos.example.com:8443", T2V);

    // A Host that is not a host name is never echoed into links.
    let response = app
        .client
        .post(app.url(&format!("/queue/{T2V}")))
        .bearer_auth(&key)
        .header(HOST, "evil.example/\"><script>")
        .json(&small_t2v())
        .send()
        .await
        .unwrap();
    let created = json_body(response, StatusCode::OK).await;
    for url in ["response_url", "status_url", "cancel_url"] {
        let url = str_field(&created, url);
        assert!(!url.contains("evil") && !url.contains('<'), "{url}");
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    }
}

#[tokio::test]
async fn urls_use_the_configured_public_url() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.public_url = Some("https://video.example.com".into());
    })
    .await;
    let key = app.client_key().await;
    let created = app.create(&key, T2V, &small_t2v()).await;
    assert_urls(&created, "https://video.example.com", T2V);
    // The links point elsewhere; the same path on this server answers.
    let id = str_field(&created, "request_id");
    let here = app.url(&format!("/queue/{T2V}/requests/{id}/status"));
    let status = app.status(&here, &key).await;
    assert_eq!(status["response_url"], created["response_url"], "{status}");
}

#[tokio::test]
async fn every_catalog_model_accepts_a_request() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    for model in ALL_MODELS {
        let body = if model.contains("i2v") {
            json!({"prompt": "a slow zoom", "data_uri": b64(&png(32, 24)), "duration": 1})
        } else {
            small_t2v()
        };
        let created = app.create(&key, model, &body).await;
        assert_urls(&created, &app.address, model);
    }
}

#[tokio::test]
async fn an_unknown_model_is_404_and_the_detail_lists_the_models() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let response = app
        .post_create(&key, "wan22-fast-t2v-ultra", &small_t2v())
        .await;
    let body = expect_error(response, StatusCode::NOT_FOUND).await;
    assert_eq!(body["code"], "unknown_model", "{body}");
    let detail = str_field(&body, "detail");
    assert!(detail.contains("wan22-fast-t2v-ultra"), "{detail}");
    for model in ALL_MODELS {
        assert!(detail.contains(model), "{model} missing from: {detail}");
    }
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_a_json_detail() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.max_body_bytes = 64 * 1024;
    })
    .await;
    let key = app.client_key().await;
    let big = "x".repeat(100 * 1024);
    let response = app.post_create(&key, T2V, &json!({"prompt": big})).await;
    let body = expect_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(body["code"], "payload_too_large", "{body}");
    assert!(str_field(&body, "detail").contains("65536"), "{body}");
    // An image-to-video body with a big image, too.
    let image = b64(&vec![0u8; 80 * 1024]);
    let response = app
        .post_create(&key, I2V, &json!({"prompt": "p", "data_uri": image}))
        .await;
    expect_error(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    // A body under the limit still works on the same server.
    app.create(&key, T2V, &small_t2v()).await;
}

#[tokio::test]
async fn malformed_or_empty_bodies_are_400() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    for raw in [
        "",
        "   \n",
        "{not json",
        "{\"prompt\": \"a cat\"",
        "prompt=a+cat",
    ] {
        let response = app
            .client
            .post(app.url(&format!("/queue/{T2V}")))
            .bearer_auth(&key)
            .header(CONTENT_TYPE, "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let body = expect_error(response, StatusCode::BAD_REQUEST).await;
        assert_eq!(body["code"], "bad_request", "{body}");
        assert!(
            str_field(&body, "detail").contains("JSON") || raw.trim().is_empty(),
            "{raw:?}: {body}"
        );
    }
}

#[tokio::test]
async fn json_that_is_not_an_object_is_422() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    for body in [json!([]), json!("a cat"), json!(5), json!(null)] {
        let response = app.post_create(&key, T2V, &body).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["code"], "invalid_input", "{body}");
    }
}

#[tokio::test]
async fn validation_errors_carry_their_code_and_field() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    for (body, code, field) in [
        (
            json!({"prompt": "a", "width": 333}),
            "invalid_resolution",
            "width",
        ),
        (
            json!({"prompt": "a", "width": 1280, "height": 720, "duration": 9}),
            "duration_too_long",
            "duration",
        ),
        (json!({}), "missing_field", "prompt"),
        (json!({"prompt": "a", "seed": "x"}), "wrong_type", "seed"),
    ] {
        let response = app.post_create(&key, T2V, &body).await;
        let got = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(got["code"], code, "{body}: {got}");
        assert_eq!(got["field"], field, "{body}: {got}");
    }
    let response = app
        .post_create(&key, I2V, &json!({"prompt": "p", "data_uri": "R0lGODlh"}))
        .await;
    let got = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(got["code"], "unsupported_image_format", "{got}");
}

#[tokio::test]
async fn unknown_body_fields_are_ignored() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let body = json!({"prompt": "a cat", "width": 512, "height": 512, "duration": 1,
                      "sync_mode": true, "num_inference_steps": 99, "extra": {"a": [1, 2]}});
    app.create(&key, T2V, &body).await;
}

#[tokio::test]
async fn a_full_queue_is_429_until_a_slot_frees() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.max_queued = 2;
    })
    .await;
    let key = app.client_key().await;
    let first = app.create(&key, T2V, &small_t2v()).await;
    app.create(&key, T2V, &small_t2v()).await;
    let response = app.post_create(&key, T2V, &small_t2v()).await;
    assert!(
        response.headers().contains_key(RETRY_AFTER),
        "429 says when to retry"
    );
    let body = expect_error(response, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["code"], "queue_full", "{body}");
    assert!(str_field(&body, "detail").contains("full"), "{body}");
    assert!(
        str_field(&body, "detail").contains("(2 jobs waiting)"),
        "{body}"
    );
    // The queue bound counts both pipelines.
    let i2v = json!({"prompt": "p", "data_uri": b64(&png(32, 24)), "duration": 1});
    let response = app.post_create(&key, I2V, &i2v).await;
    expect_error(response, StatusCode::TOO_MANY_REQUESTS).await;

    let cancelled = app.put(str_field(&first, "cancel_url"), &key).await;
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    app.create(&key, I2V, &i2v).await;
}

#[tokio::test]
async fn a_queue_of_one_says_1_job() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.max_queued = 1;
    })
    .await;
    let key = app.client_key().await;
    app.create(&key, T2V, &small_t2v()).await;
    let response = app.post_create(&key, T2V, &small_t2v()).await;
    let body = expect_error(response, StatusCode::TOO_MANY_REQUESTS).await;
    let detail = str_field(&body, "detail");
    assert!(detail.contains("(1 job waiting)"), "{detail}");
}

#[tokio::test]
async fn health_and_ready_need_no_key() {
    let app = spawn_queue_only().await;
    for path in ["/health", "/ready"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        let body = json_body(response, StatusCode::OK).await;
        assert!(body["status"].is_string(), "{path}: {body}");
    }
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_json() {
    let app = spawn_queue_only().await;
    let key = app.admin_key.clone();
    let id = Uuid::new_v4();
    for path in [
        "/nope/deeper",
        "/nope",
        "/queue",
        &format!("/queue/{T2V}/requests"),
        &format!("/queue/{T2V}/requests/{id}/logs"),
    ] {
        let response = app.get(&app.url(path), &key).await;
        expect_error(response, StatusCode::NOT_FOUND).await;
    }
    let wrong = [
        (reqwest::Method::GET, format!("/queue/{T2V}")),
        (reqwest::Method::DELETE, format!("/queue/{T2V}")),
        (
            reqwest::Method::POST,
            format!("/queue/{T2V}/requests/{id}/status"),
        ),
        (
            reqwest::Method::GET,
            format!("/queue/{T2V}/requests/{id}/cancel"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/queue/{T2V}/requests/{id}"),
        ),
        (reqwest::Method::POST, "/health".to_string()),
    ];
    for (method, path) in wrong {
        let response = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let body = expect_error(response, StatusCode::METHOD_NOT_ALLOWED).await;
        assert!(body.is_object(), "{method} {path}");
    }
}
