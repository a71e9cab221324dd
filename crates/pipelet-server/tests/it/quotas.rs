//! Per-key quotas: queued jobs (`--max-queued-per-key`), running jobs
//! (`--max-running-per-key`) and creates per minute (`--creates-per-minute`), each
//! overridden per key through the admin API; past a limit a create gets 429 with
//! `Retry-After`, the `RateLimit-*` headers and a `detail` naming the limit.

use crate::common::AppExt as _;
use crate::common::{T2V, TestApp, expect_code, json_body, spawn_app_with, str_field};
use pipelet_api::Pipeline;
use pipelet_store::{ClaimRequest, Role};
use reqwest::header::RETRY_AFTER;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

fn small_t2v() -> Value {
    json!({"prompt": "a paper boat", "width": 512, "height": 512, "duration": 1})
}

async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Response {
    let admin = app.key(Role::Admin, 0).await;
    let mut request = app.client.request(method, app.url(path)).bearer_auth(admin);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("admin call")
}

/// A client key made through the admin API with `quotas` (merged into the body).
async fn key_with(app: &TestApp, name: &str, quotas: Value) -> String {
    let mut body = json!({"name": name, "role": "client"});
    if let (Some(body), Some(quotas)) = (body.as_object_mut(), quotas.as_object()) {
        body.extend(quotas.clone());
    }
    let created = json_body(
        admin(app, Method::POST, "/admin/v1/keys", Some(body)).await,
        StatusCode::CREATED,
    )
    .await;
    str_field(&created, "secret").to_string()
}

/// A header as a number; the test fails if it is absent or not one.
fn number(response: &Response, name: &str) -> u64 {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} header in {:?}", response.headers()))
}

/// Asserts a 429 with `code`, `Retry-After` and the `RateLimit-*` headers (limit and
/// remaining as given); returns the body's `detail` and the `Retry-After` seconds.
async fn expect_limited(response: Response, code: &str, limit: u64) -> (String, u64) {
    assert!(
        response.headers().contains_key(RETRY_AFTER),
        "429 says when"
    );
    let retry_after = number(&response, "retry-after");
    assert_eq!(number(&response, "ratelimit-limit"), limit);
    assert_eq!(number(&response, "ratelimit-remaining"), 0);
    assert!(number(&response, "ratelimit-reset") >= 1);
    let body = expect_code(response, StatusCode::TOO_MANY_REQUESTS, code).await;
    (str_field(&body, "detail").to_string(), retry_after)
}

#[tokio::test]
async fn queued_jobs_per_key_are_limited_and_overridden_per_key() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.max_queued_per_key = 2;
    })
    .await;
    let key = app.client_key().await;
    let mut cancel_urls = Vec::new();
    for _ in 0..2 {
        let created = app.post_create(&key, T2V, &small_t2v()).await;
        assert_eq!(created.status(), StatusCode::OK);
        assert!(
            !created.headers().contains_key("ratelimit-limit"),
            "no rate applies"
        );
        let body: Value = created.json().await.unwrap();
        cancel_urls.push(str_field(&body, "cancel_url").to_string());
    }
    let first_cancel_url = cancel_urls.remove(0);
    let (detail, _) = expect_limited(
        app.post_create(&key, T2V, &small_t2v()).await,
        "key_queue_full",
        2,
    )
    .await;
    assert!(detail.contains("already has 2 queued jobs"), "{detail}");
    assert!(detail.contains("--max-queued-per-key"), "{detail}");
    // Another key is not held back.
    let other = app.client_key().await;
    app.create(&other, T2V, &small_t2v()).await;

    // A key's own quota beats the default, both ways.
    let bigger = key_with(&app, "bigger", json!({"max_queued": 3})).await;
    for _ in 0..3 {
        app.create(&bigger, T2V, &small_t2v()).await;
    }
    let (detail, _) = expect_limited(
        app.post_create(&bigger, T2V, &small_t2v()).await,
        "key_queue_full",
        3,
    )
    .await;
    assert!(detail.contains("its own max-queued limit"), "{detail}");
    let unlimited = key_with(&app, "unlimited", json!({"max_queued": 0})).await;
    for _ in 0..4 {
        app.create(&unlimited, T2V, &small_t2v()).await;
    }

    // Once one of the key's jobs leaves the queue, it may queue one more.
    let cancelled = app.put(&first_cancel_url, &key).await;
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    app.create(&key, T2V, &small_t2v()).await;
}

#[tokio::test]
async fn creates_per_minute_is_a_token_bucket_with_headers() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.creates_per_minute = 2;
    })
    .await;
    let key = app.client_key().await;
    // Successful creates say where the key stands, so clients can pace themselves.
    for remaining in [1, 0] {
        let created = app.post_create(&key, T2V, &small_t2v()).await;
        assert_eq!(created.status(), StatusCode::OK);
        assert_eq!(number(&created, "ratelimit-limit"), 2);
        assert_eq!(number(&created, "ratelimit-remaining"), remaining);
        assert!(number(&created, "ratelimit-reset") <= 60);
    }
    let (detail, retry_after) = expect_limited(
        app.post_create(&key, T2V, &small_t2v()).await,
        "key_rate_limited",
        2,
    )
    .await;
    assert!(
        (1..=30).contains(&retry_after),
        "one token in ≤ 30 s: {retry_after}"
    );
    assert!(detail.contains("more than 2 creates a minute"), "{detail}");
    assert!(detail.contains("--creates-per-minute"), "{detail}");

    // A key's own rate beats the default: larger, or none at all.
    let fast = key_with(&app, "fast", json!({"creates_per_minute": 600})).await;
    for _ in 0..5 {
        app.create(&fast, T2V, &small_t2v()).await;
    }
    let slow = key_with(&app, "slow", json!({"creates_per_minute": 1})).await;
    app.create(&slow, T2V, &small_t2v()).await;
    let (detail, _) = expect_limited(
        app.post_create(&slow, T2V, &small_t2v()).await,
        "key_rate_limited",
        1,
    )
    .await;
    assert!(
        detail.contains("its own creates-per-minute rate"),
        "{detail}"
    );
    let updated = admin(
        &app,
        Method::PATCH,
        "/admin/v1/keys/slow",
        Some(json!({"creates_per_minute": 0})),
    )
    .await;
    assert_eq!(updated.status(), StatusCode::OK);
    for _ in 0..3 {
        let created = app.post_create(&slow, T2V, &small_t2v()).await;
        assert_eq!(created.status(), StatusCode::OK);
        assert!(!created.headers().contains_key("ratelimit-limit"));
    }
}

fn claim_request() -> ClaimRequest {
    ClaimRequest {
        worker_id: "worker:quota-test".into(),
        pipelines: vec![Pipeline::T2v],
        loaded: None,
        lease_ms: 600_000,
        max_wait_for_switch_ms: 60_000,
    }
}

#[tokio::test]
async fn running_jobs_per_key_wait_for_the_keys_own_to_end() {
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.max_running_per_key = 1;
    })
    .await;
    let busy = key_with(&app, "busy", json!({})).await;
    let first = app.create(&busy, T2V, &small_t2v()).await;
    let second = app.create(&busy, T2V, &small_t2v()).await;
    let lease = app.claim(Pipeline::T2v).await;
    assert_eq!(lease.job.id.to_string(), str_field(&first, "request_id"));
    // busy is at its limit: another key's job runs first, then nothing is offered.
    let other = app.client_key().await;
    let theirs = app.create(&other, T2V, &small_t2v()).await;
    let next = app.claim(Pipeline::T2v).await;
    assert_eq!(next.job.id.to_string(), str_field(&theirs, "request_id"));
    let none = app.state.store.claim(&claim_request()).await.unwrap();
    assert!(none.is_none(), "busy's second job waits: {none:?}");
    // The key's own limit beats the default.
    let updated = admin(
        &app,
        Method::PATCH,
        "/admin/v1/keys/busy",
        Some(json!({"max_running": 2})),
    )
    .await;
    assert_eq!(json_body(updated, StatusCode::OK).await["max_running"], 2);
    let later = app.claim(Pipeline::T2v).await;
    assert_eq!(later.job.id.to_string(), str_field(&second, "request_id"));
}

#[tokio::test]
async fn the_admin_api_sets_shows_and_resets_quotas() {
    let app = spawn_app_with(|c| c.workers = 0).await;
    key_with(
        &app,
        "tenant",
        json!({"max_queued": 50, "max_running": 2, "creates_per_minute": 120}),
    )
    .await;
    let list = json_body(
        admin(&app, Method::GET, "/admin/v1/keys", None).await,
        StatusCode::OK,
    )
    .await;
    let tenant = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "tenant")
        .cloned()
        .unwrap();
    assert_eq!(tenant["max_queued"], 50, "{tenant}");
    assert_eq!(tenant["max_running"], 2, "{tenant}");
    assert_eq!(tenant["creates_per_minute"], 120, "{tenant}");
    // null goes back to the server's default (absent from the view); absent fields stay.
    let reset = json_body(
        admin(
            &app,
            Method::PATCH,
            "/admin/v1/keys/tenant",
            Some(json!({"max_queued": null, "max_running": 0})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert!(reset.get("max_queued").is_none(), "{reset}");
    assert_eq!(reset["max_running"], 0, "{reset}");
    assert_eq!(reset["creates_per_minute"], 120, "{reset}");
    // A quota is a count.
    let bad = admin(
        &app,
        Method::PATCH,
        "/admin/v1/keys/tenant",
        Some(json!({"max_queued": -1})),
    )
    .await;
    assert!(bad.status().is_client_error(), "{}", bad.status());
}

#[tokio::test]
async fn a_keys_next_job_runs_as_soon_as_its_running_one_ends() {
    // Two in-process workers: one idles while the key's first job runs, and must wake
    // for the second as soon as the first ends.
    let app = spawn_app_with(|c| {
        c.workers = 2;
        c.max_running_per_key = 1;
    })
    .await;
    let key = app.client_key().await;
    let first = app.create(&key, T2V, &small_t2v()).await;
    let second = app.create(&key, T2V, &small_t2v()).await;
    let started = std::time::Instant::now();
    app.wait_until_status(&first, &key, "COMPLETED").await;
    app.wait_until_status(&second, &key, "COMPLETED").await;
    let (a, b) = (
        app.job(str_field(&first, "request_id").parse().unwrap())
            .await,
        app.job(str_field(&second, "request_id").parse().unwrap())
            .await,
    );
    let (Some(first_done), Some(second_started)) = (a.finished_at_ms, b.started_at_ms) else {
        panic!("both ran: {a:?} {b:?}");
    };
    assert!(
        second_started >= first_done,
        "one at a time: the second started at {second_started}, the first ended at {first_done}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "the waiting worker woke when the first ended"
    );
}
