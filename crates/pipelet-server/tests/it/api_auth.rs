//! Keys and visibility: 401 without a valid key on every queue endpoint, fal's
//! `Key <key>` scheme, 403 for worker keys, and 404 (never 403) for another key's
//! request, another model id or an id that is not a UUID. Admin keys see everything.

use crate::common::AppExt as _;
use crate::common::{T2V, T2V_PRO, TestApp, expect_error, json_body, spawn_queue_only, str_field};
use pipelet_store::Role;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// The four queue calls for one created request, as (method, url, body).
fn calls(app: &TestApp, created: &Value) -> Vec<(Method, String, Option<Value>)> {
    let body = json!({"prompt": "a cat", "width": 512, "height": 512, "duration": 1});
    vec![
        (Method::POST, app.url(&format!("/queue/{T2V}")), Some(body)),
        (
            Method::GET,
            str_field(created, "status_url").to_string(),
            None,
        ),
        (
            Method::PUT,
            str_field(created, "cancel_url").to_string(),
            None,
        ),
        (
            Method::GET,
            str_field(created, "response_url").to_string(),
            None,
        ),
    ]
}

async fn send(
    app: &TestApp,
    (method, url, body): &(Method, String, Option<Value>),
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client.request(method.clone(), url);
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    request.send().await.expect("send")
}

#[tokio::test]
async fn every_queue_endpoint_needs_a_valid_key() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let bad_headers = [
        None,
        Some("Bearer plt_not-a-real-key".to_string()),
        Some(format!("Basic {key}")),
        Some(format!("Token {key}")),
        Some(key.clone()), // no scheme at all
        Some("Bearer".to_string()),
        Some("Bearer    ".to_string()),
    ];
    for call in calls(&app, &created) {
        for header in &bad_headers {
            let response = send(&app, &call, header.as_deref()).await;
            assert!(
                response.headers().contains_key(WWW_AUTHENTICATE),
                "401 names the scheme"
            );
            let body = expect_error(response, StatusCode::UNAUTHORIZED).await;
            assert_eq!(body["code"], "unauthorized", "{body}");
            assert!(
                !str_field(&body, "detail").contains(&key),
                "a 401 must not echo the key: {body}"
            );
        }
    }
    // Nothing was created or cancelled by the refused calls.
    let status = app.status(str_field(&created, "status_url"), &key).await;
    assert_eq!(status["status"], "IN_QUEUE", "{status}");
    assert_eq!(status["queue_position"], 0, "{status}");
}

#[tokio::test]
async fn bearer_and_fals_key_scheme_are_both_accepted() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    for header in [
        format!("Bearer {key}"),
        format!("bearer {key}"),
        format!("Key {key}"),
        format!("key {key}"),
    ] {
        let call = (
            Method::POST,
            app.url(&format!("/queue/{T2V}")),
            Some(json!({"prompt": "a"})),
        );
        let created = json_body(send(&app, &call, Some(&header)).await, StatusCode::OK).await;
        // status, then cancel (while queued), then the result of the cancelled request.
        let want = [StatusCode::OK, StatusCode::NO_CONTENT, StatusCode::CONFLICT];
        for (call, want) in calls(&app, &created).into_iter().skip(1).zip(want) {
            let status = send(&app, &call, Some(&header)).await.status();
            assert_eq!(status, want, "{header:?} on {} {}", call.0, call.1);
        }
    }
}

#[tokio::test]
async fn worker_keys_get_403_on_client_endpoints() {
    let app = spawn_queue_only().await;
    let worker = app.key(Role::Worker, 0).await;
    let created = app.create_t2v(&app.admin_key, T2V, 0).await;
    for call in calls(&app, &created) {
        let response = send(&app, &call, Some(&format!("Bearer {worker}"))).await;
        let body = expect_error(response, StatusCode::FORBIDDEN).await;
        assert_eq!(body["code"], "forbidden", "{body}");
        assert!(str_field(&body, "detail").contains("worker"), "{body}");
    }
    let status = app
        .status(str_field(&created, "status_url"), &app.admin_key)
        .await;
    assert_eq!(
        status["status"], "IN_QUEUE",
        "the worker's cancel did nothing: {status}"
    );
}

#[tokio::test]
async fn another_clients_request_is_404_and_untouched() {
    let app = spawn_queue_only().await;
    let (alice, bob) = (app.client_key().await, app.client_key().await);
    let created = app.create_t2v(&alice, T2V, 0).await;
    let not_found = expect_error(
        app.get(str_field(&created, "status_url"), &bob).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    for call in calls(&app, &created).into_iter().skip(1) {
        let response = send(&app, &call, Some(&format!("Bearer {bob}"))).await;
        let body = expect_error(response, StatusCode::NOT_FOUND).await;
        // The same answer as for an id that does not exist: nothing leaks.
        assert_eq!(body, not_found, "{} {}", call.0, call.1);
    }
    let id = Uuid::new_v4();
    let missing = app.url(&format!("/queue/{T2V}/requests/{id}/status"));
    let body = expect_error(app.get(&missing, &alice).await, StatusCode::NOT_FOUND).await;
    assert_eq!(body, not_found);

    // Bob's cancel did not cancel it; Alice still sees it queued.
    let status = app.status(str_field(&created, "status_url"), &alice).await;
    assert_eq!(status["status"], "IN_QUEUE", "{status}");
}

#[tokio::test]
async fn admin_keys_see_and_cancel_every_request() {
    let app = spawn_queue_only().await;
    let alice = app.client_key().await;
    let admin = app.key(Role::Admin, 0).await;
    let created = app.create_t2v(&alice, T2V, 0).await;
    for key in [&app.admin_key, &admin] {
        let status = app.status(str_field(&created, "status_url"), key).await;
        assert_eq!(status["status"], "IN_QUEUE", "{status}");
        let result = app.get(str_field(&created, "response_url"), key).await;
        expect_error(result, StatusCode::CONFLICT).await;
    }
    let cancel = app.put(str_field(&created, "cancel_url"), &admin).await;
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    let status = app.status(str_field(&created, "status_url"), &alice).await;
    assert_eq!(status["status"], "CANCELLED", "{status}");
}

#[tokio::test]
async fn another_model_id_or_a_non_uuid_id_is_404() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let id = str_field(&created, "request_id");
    let mut paths = Vec::new();
    for model in [T2V_PRO, "wan22-fast-i2v", "no-such-model"] {
        paths.push(format!("/queue/{model}/requests/{id}"));
    }
    for bad_id in [
        "12",
        "not-a-uuid",
        &id.to_uppercase().replace('-', "_"),
        "%20",
    ] {
        paths.push(format!("/queue/{T2V}/requests/{bad_id}"));
    }
    for path in paths {
        for (method, suffix) in [
            (Method::GET, "/status"),
            (Method::PUT, "/cancel"),
            (Method::GET, ""),
        ] {
            let url = app.url(&format!("{path}{suffix}"));
            let response = app
                .client
                .request(method.clone(), &url)
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            expect_error(response, StatusCode::NOT_FOUND).await;
        }
    }
    // Still queued: the cancels under the wrong model did nothing.
    let status = app.status(str_field(&created, "status_url"), &key).await;
    assert_eq!(status["status"], "IN_QUEUE", "{status}");
}
