//! The webhook side of the public API: a create's webhook URL (`?fal_webhook=` or the
//! `x-pipelet-webhook` header) is refused with a 422 naming the field when it is not
//! http(s) or points at this server's own network (SSRF), unless the server runs with
//! `--webhook-allow-private`; the per-key signing secret and its rotation; a job's event
//! list with the usual visibility rules. Delivery itself is tested elsewhere.

use crate::common::AppExt as _;
use crate::common::{
    T2V, TestApp, expect_error, expect_invalid, json_body, spawn_app_with, str_field,
};
use pipelet_api::Pipeline;
use pipelet_store::Role;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

fn body() -> Value {
    json!({"prompt": "a paper boat", "width": 512, "height": 512, "duration": 1})
}

/// A server whose jobs stay queued (no worker), with webhooks to private addresses
/// allowed or not.
async fn spawn(allow_private: bool) -> TestApp {
    spawn_app_with(|c| {
        c.workers = 0;
        c.webhook_allow_private = allow_private;
    })
    .await
}

async fn create_with_query(app: &TestApp, key: &str, url: &str) -> Response {
    app.client
        .post(app.url(&format!("/queue/{T2V}")))
        .query(&[("fal_webhook", url)])
        .bearer_auth(key)
        .json(&body())
        .send()
        .await
        .expect("send create")
}

async fn create_with_header(app: &TestApp, key: &str, url: &str) -> Response {
    app.client
        .post(app.url(&format!("/queue/{T2V}")))
        .header("x-pipelet-webhook", url)
        .bearer_auth(key)
        .json(&body())
        .send()
        .await
        .expect("send create")
}

/// The machine's host name when it resolves to a loopback address (most hosts files
/// say so): a name that is not `localhost` yet leads back to this machine.
async fn own_name_resolving_to_loopback() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_string();
    let addrs: Vec<_> = tokio::net::lookup_host((name.as_str(), 80))
        .await
        .ok()?
        .collect();
    (!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())).then_some(name)
}

async fn refused_urls() -> Vec<(String, &'static str)> {
    let mut urls = vec![
        ("ftp://example.com/hook".to_string(), "http:// or https://"),
        ("file:///etc/passwd".into(), "http:// or https://"),
        ("not a url".into(), "not a valid URL"),
        ("https://user:secret@example.com/hook".into(), "password"),
        ("http://127.0.0.1/".into(), "127.0.0.1"),
        ("http://127.0.0.1:8080/hook".into(), "127.0.0.1"),
        ("http://10.0.0.1/".into(), "10.0.0.1"),
        ("http://192.168.1.10/".into(), "192.168.1.10"),
        ("http://[::1]/".into(), "::1"),
        ("http://[::ffff:127.0.0.1]/".into(), "127.0.0.1"),
        (
            "http://169.254.169.254/latest/meta-data/".into(),
            "169.254.169.254",
        ),
        ("http://[fd00:ec2::254]/".into(), "fd00:ec2::254"),
        ("http://localhost/".into(), "localhost"),
        ("http://hooks.localhost:9000/x".into(), "hooks.localhost"),
    ];
    match own_name_resolving_to_loopback().await {
        Some(name) => urls.push((format!("http://{name}:8080/hook"), "resolves to")),
        None => eprintln!("this machine's name does not resolve to loopback; case skipped"),
    }
    urls
}

#[tokio::test]
async fn unsafe_webhook_urls_are_refused_naming_the_query_parameter() {
    let app = spawn(false).await;
    let key = app.client_key().await;
    for (url, word) in refused_urls().await {
        let response = create_with_query(&app, &key, &url).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], "fal_webhook", "{url}: {body}");
        let detail = str_field(&body, "detail");
        assert!(detail.contains("fal_webhook"), "{url}: {detail}");
        assert!(detail.contains(word), "{url}: {word:?} in {detail}");
    }
    let counts = app.state.store.job_counts().await.unwrap();
    assert_eq!(
        counts.iter().map(|c| c.count).sum::<u64>(),
        0,
        "nothing created"
    );
}

#[tokio::test]
async fn unsafe_webhook_urls_are_refused_naming_the_header() {
    let app = spawn(false).await;
    let key = app.client_key().await;
    for (url, word) in refused_urls().await {
        let response = create_with_header(&app, &key, &url).await;
        let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(body["field"], "x-pipelet-webhook", "{url}: {body}");
        let detail = str_field(&body, "detail");
        assert!(detail.contains("x-pipelet-webhook"), "{url}: {detail}");
        assert!(detail.contains(word), "{url}: {word:?} in {detail}");
    }
}

#[tokio::test]
async fn an_empty_or_conflicting_webhook_is_refused() {
    let app = spawn(true).await;
    let key = app.client_key().await;
    expect_invalid(
        create_with_query(&app, &key, "").await,
        &["fal_webhook", "empty"],
    )
    .await;
    let response = app
        .client
        .post(app.url(&format!("/queue/{T2V}")))
        .query(&[("fal_webhook", "http://127.0.0.1:9/a")])
        .header("x-pipelet-webhook", "http://127.0.0.1:9/b")
        .bearer_auth(&key)
        .json(&body())
        .send()
        .await
        .unwrap();
    expect_invalid(response, &["fal_webhook", "x-pipelet-webhook", "different"]).await;
    let twice = app
        .client
        .post(app.url(&format!(
            "/queue/{T2V}?fal_webhook=http://127.0.0.1:9/a&fal_webhook=http://127.0.0.1:9/b"
        )))
        .bearer_auth(&key)
        .json(&body())
        .send()
        .await
        .unwrap();
    expect_error(twice, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn allow_private_accepts_a_loopback_webhook() {
    let app = spawn(true).await;
    let key = app.client_key().await;
    let created = json_body(
        create_with_query(&app, &key, "http://127.0.0.1:9/hook").await,
        StatusCode::OK,
    )
    .await;
    let id: uuid::Uuid = str_field(&created, "request_id").parse().unwrap();
    let (job, _) = app.state.store.job_status(id).await.unwrap().unwrap();
    assert_eq!(job.webhook_url.as_deref(), Some("http://127.0.0.1:9/hook"));
    json_body(
        create_with_header(&app, &key, "http://localhost:9/hook").await,
        StatusCode::OK,
    )
    .await;
    // Still http(s) only.
    expect_invalid(
        create_with_query(&app, &key, "ftp://127.0.0.1/").await,
        &["fal_webhook"],
    )
    .await;
}

#[tokio::test]
async fn a_public_webhook_is_accepted_by_default() {
    let app = spawn(false).await;
    let key = app.client_key().await;
    // Public literal addresses pass; a name that does not resolve (offline) passes too,
    // since delivery resolves and checks it again before every try.
    for url in [
        "https://93.184.215.14/hook",
        "https://hooks.example.com/x?y=1",
    ] {
        json_body(create_with_query(&app, &key, url).await, StatusCode::OK).await;
        json_body(create_with_header(&app, &key, url).await, StatusCode::OK).await;
    }
}

#[tokio::test]
async fn the_webhook_url_is_part_of_an_idempotent_request() {
    let app = spawn(true).await;
    let key = app.client_key().await;
    let post = |url: &'static str| {
        app.client
            .post(app.url(&format!("/queue/{T2V}")))
            .query(&[("fal_webhook", url)])
            .header("Idempotency-Key", "order-9")
            .bearer_auth(&key)
            .json(&body())
            .send()
    };
    let first = json_body(post("http://127.0.0.1:9/a").await.unwrap(), StatusCode::OK).await;
    let again = post("http://127.0.0.1:9/a").await.unwrap();
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let again = json_body(again, StatusCode::OK).await;
    assert_eq!(first["request_id"], again["request_id"]);
    expect_invalid(
        post("http://127.0.0.1:9/other").await.unwrap(),
        &["Idempotency-Key"],
    )
    .await;
}

async fn get_json(app: &TestApp, path: &str, key: &str, want: StatusCode) -> Value {
    json_body(app.get(&app.url(path), key).await, want).await
}

async fn rotate(app: &TestApp, key: &str) -> Response {
    app.client
        .post(app.url("/webhooks/secret/rotate"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn each_key_has_its_own_stable_secret_and_can_rotate_it() {
    let app = spawn(false).await;
    let alice = app.client_key().await;
    let bob = app.client_key().await;
    let first = get_json(&app, "/webhooks/secret", &alice, StatusCode::OK).await;
    let secret = str_field(&first, "secret").to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let again = get_json(&app, "/webhooks/secret", &alice, StatusCode::OK).await;
    assert_eq!(again["secret"], secret.as_str(), "stable across calls");
    let other = get_json(&app, "/webhooks/secret", &bob, StatusCode::OK).await;
    assert_ne!(
        other["secret"],
        secret.as_str(),
        "another key, another secret"
    );
    let admin = get_json(&app, "/webhooks/secret", &app.admin_key, StatusCode::OK).await;
    assert!(str_field(&admin, "secret").starts_with("whsec_"));

    let rotated = json_body(rotate(&app, &alice).await, StatusCode::OK).await;
    let new = str_field(&rotated, "secret").to_string();
    assert!(new.starts_with("whsec_") && new != secret, "{rotated}");
    let until = str_field(&rotated, "previous_valid_until");
    let until = humantime::parse_rfc3339(until).expect("RFC 3339");
    let in_a_day = std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600);
    let gap = in_a_day
        .duration_since(until)
        .unwrap_or_else(|e| e.duration());
    assert!(
        gap < std::time::Duration::from_secs(120),
        "about 24 h from now"
    );
    let now = get_json(&app, "/webhooks/secret", &alice, StatusCode::OK).await;
    assert_eq!(now["secret"], new.as_str(), "the rotated secret is current");
    let bob_now = get_json(&app, "/webhooks/secret", &bob, StatusCode::OK).await;
    assert_eq!(bob_now["secret"], other["secret"], "bob's is untouched");
}

#[tokio::test]
async fn worker_keys_and_strangers_get_no_secret() {
    let app = spawn(false).await;
    let worker = app.key(Role::Worker, 0).await;
    expect_error(
        app.get(&app.url("/webhooks/secret"), &worker).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    expect_error(rotate(&app, &worker).await, StatusCode::FORBIDDEN).await;
    let anonymous = app
        .client
        .get(app.url("/webhooks/secret"))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED).await;
}

#[tokio::test]
async fn a_jobs_events_are_listed_for_its_owner_only() {
    let app = spawn(true).await;
    let alice = app.client_key().await;
    let bob = app.client_key().await;
    // Nothing listens on port 9 (discard): deliveries fail and stay pending or retry.
    let created = json_body(
        create_with_query(&app, &alice, "http://127.0.0.1:9/hook").await,
        StatusCode::OK,
    )
    .await;
    let id = str_field(&created, "request_id").to_string();
    let path = format!("/queue/{T2V}/requests/{id}/webhooks");
    let listed = get_json(&app, &path, &alice, StatusCode::OK).await;
    assert_eq!(listed, json!({"events": []}), "no event while queued");

    app.claim(Pipeline::T2v).await;
    let listed = get_json(&app, &path, &alice, StatusCode::OK).await;
    let events = listed["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{listed}");
    let event = &events[0];
    assert!(str_field(event, "id").starts_with("msg_"), "{event}");
    assert_eq!(event["event_type"], "acquired");
    assert!(
        ["pending", "delivered", "gave_up"].contains(&str_field(event, "state")),
        "{event}"
    );
    assert!(event["attempts"].is_u64(), "{event}");
    humantime::parse_rfc3339(str_field(event, "created_at")).expect("RFC 3339");
    for field in ["last_status", "last_error", "next_attempt_at"] {
        assert!(event.get(field).is_some(), "{field} in {event}");
    }
    // The admin sees it too; another key, a worker key, another model or id do not.
    let by_admin = get_json(&app, &path, &app.admin_key, StatusCode::OK).await;
    assert_eq!(by_admin["events"][0]["id"], event["id"]);
    expect_error(app.get(&app.url(&path), &bob).await, StatusCode::NOT_FOUND).await;
    let worker = app.key(Role::Worker, 0).await;
    expect_error(
        app.get(&app.url(&path), &worker).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let other_model = format!("/queue/wan22-fast-i2v/requests/{id}/webhooks");
    expect_error(
        app.get(&app.url(&other_model), &alice).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let unknown = format!("/queue/{T2V}/requests/{}/webhooks", uuid::Uuid::new_v4());
    expect_error(
        app.get(&app.url(&unknown), &alice).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
