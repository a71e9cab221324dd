//! `POST /queue/{model_id}` with an `Idempotency-Key`: a repeat answers the first
//! create again (200, `Idempotent-Replayed: true`) and creates nothing; the same key for
//! another request is a 422 naming the header; keys are scoped per API key.

use crate::common::AppExt as _;
use crate::common::images::{b64, png};
use crate::common::{
    I2V, T2V, T2V_PRO, TestApp, expect_invalid, json_body, spawn_queue_only, str_field,
};
use futures::StreamExt;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

const REPLAYED: &str = "idempotent-replayed";

fn body() -> Value {
    json!({"prompt": "a paper boat", "width": 512, "height": 512, "duration": 1})
}

async fn post(app: &TestApp, key: &str, model: &str, idem: &str, body: &str) -> Response {
    app.client
        .post(app.url(&format!("/queue/{model}")))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("Idempotency-Key", idem)
        .body(body.to_string())
        .send()
        .await
        .expect("send create")
}

async fn jobs(app: &TestApp) -> u64 {
    let counts = app.state.store.job_counts().await.unwrap();
    counts.iter().map(|c| c.count).sum()
}

fn replayed(response: &Response) -> Option<String> {
    response
        .headers()
        .get(REPLAYED)
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn a_repeated_create_answers_the_first_one_and_creates_nothing() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let first = post(&app, &key, T2V, "order-17", &body().to_string()).await;
    assert_eq!(replayed(&first), None, "a first create is not a replay");
    let first = json_body(first, StatusCode::OK).await;

    // The same request, its JSON laid out differently.
    let same = r#"{ "duration": 1, "height": 512,
                    "width": 512, "prompt": "a paper boat" }"#;
    let again = post(&app, &key, T2V, "order-17", same).await;
    assert_eq!(replayed(&again).as_deref(), Some("true"));
    let fal_id = again
        .headers()
        .get("x-fal-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let again = json_body(again, StatusCode::OK).await;
    assert_eq!(again, first, "the replay is the first answer");
    assert_eq!(fal_id.as_deref(), Some(str_field(&first, "request_id")));
    assert_eq!(jobs(&app).await, 1);

    // Still the same answer once the job has finished (here: cancelled).
    let cancel = app.put(str_field(&first, "cancel_url"), &key).await;
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    let later = post(&app, &key, T2V, "order-17", same).await;
    assert_eq!(replayed(&later).as_deref(), Some("true"));
    let later = json_body(later, StatusCode::OK).await;
    assert_eq!(later["request_id"], first["request_id"], "{later}");
}

#[tokio::test]
async fn the_same_key_for_another_request_is_refused_naming_the_header() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    json_body(
        post(&app, &key, T2V, "k", &body().to_string()).await,
        StatusCode::OK,
    )
    .await;
    let mut other = body();
    other["prompt"] = json!("a paper plane");
    expect_invalid(
        post(&app, &key, T2V, "k", &other.to_string()).await,
        &["Idempotency-Key"],
    )
    .await;
    // Another model with the same body is another request too.
    expect_invalid(
        post(&app, &key, T2V_PRO, "k", &body().to_string()).await,
        &["Idempotency-Key"],
    )
    .await;
    assert_eq!(jobs(&app).await, 1);
}

#[tokio::test]
async fn keys_are_scoped_per_api_key() {
    let app = spawn_queue_only().await;
    let alice = app.client_key().await;
    let bob = app.client_key().await;
    let a = json_body(
        post(&app, &alice, T2V, "shared", &body().to_string()).await,
        StatusCode::OK,
    )
    .await;
    let b = post(&app, &bob, T2V, "shared", &body().to_string()).await;
    assert_eq!(replayed(&b), None);
    let b = json_body(b, StatusCode::OK).await;
    assert_ne!(a["request_id"], b["request_id"]);
    assert_eq!(jobs(&app).await, 2);
}

#[tokio::test]
async fn the_key_is_one_to_255_characters() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let longest = "k".repeat(255);
    json_body(
        post(&app, &key, T2V, &longest, &body().to_string()).await,
        StatusCode::OK,
    )
    .await;
    for bad in ["k".repeat(256), String::new()] {
        expect_invalid(
            post(&app, &key, T2V, &bad, &body().to_string()).await,
            &["Idempotency-Key"],
        )
        .await;
    }
    assert_eq!(jobs(&app).await, 1);
}

#[tokio::test]
async fn twenty_concurrent_creates_with_one_key_make_one_job() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let sends = (0..20).map(|_| post(&app, &key, T2V, "burst", "{\"prompt\": \"x\"}"));
    let mut ids = Vec::new();
    for response in futures::future::join_all(sends).await {
        let created = json_body(response, StatusCode::OK).await;
        ids.push(str_field(&created, "request_id").to_string());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(jobs(&app).await, 1);
}

#[tokio::test]
async fn a_replayed_or_refused_create_keeps_no_second_input_image() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let image = json!({"prompt": "a slow zoom", "data_uri": b64(&png(32, 24)), "duration": 1});
    let first = json_body(
        post(&app, &key, I2V, "img", &image.to_string()).await,
        StatusCode::OK,
    )
    .await;
    let again = post(&app, &key, I2V, "img", &image.to_string()).await;
    assert_eq!(replayed(&again).as_deref(), Some("true"));
    assert_eq!(json_body(again, StatusCode::OK).await, first);
    let mut other = image.clone();
    other["prompt"] = json!("a fast zoom");
    expect_invalid(
        post(&app, &key, I2V, "img", &other.to_string()).await,
        &["Idempotency-Key"],
    )
    .await;
    let inputs: Vec<_> = app.state.blobs.list("inputs").collect().await;
    assert_eq!(inputs.len(), 1, "{inputs:?}");
}
