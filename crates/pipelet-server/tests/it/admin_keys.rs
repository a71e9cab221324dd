//! The admin key API (`/admin/v1/keys`): list, create, update, rotate and revoke by
//! name, admin keys only; secrets appear only in create and rotate answers; a revoked or
//! rotated secret is refused at once by this server; and failed authentications from one
//! address are refused with 429 past the limit, even with a valid key.

use crate::common::AppExt as _;
use crate::common::{TestApp, expect_code, json_body, spawn_queue_only, str_field};
use pipelet_store::Role;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("admin call")
}

async fn admin_key(app: &TestApp) -> String {
    app.key(Role::Admin, 0).await
}

/// The listed key named `name`.
async fn listed(app: &TestApp, admin: &str, name: &str) -> Value {
    let list = json_body(
        call(app, Method::GET, "/admin/v1/keys", admin, None).await,
        StatusCode::OK,
    )
    .await;
    list["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key {name} in {list}"))
        .clone()
}

#[tokio::test]
async fn admins_create_list_update_rotate_and_revoke_keys() {
    let app = spawn_queue_only().await;
    let admin = admin_key(&app).await;

    let created = json_body(
        call(
            &app,
            Method::POST,
            "/admin/v1/keys",
            &admin,
            Some(
                json!({"name": "ci", "role": "client", "max_priority": 3, "expires_in_secs": 3600}),
            ),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let secret = str_field(&created, "secret").to_string();
    assert!(secret.starts_with("plt_"), "{created}");
    assert_eq!(created["key"]["name"], "ci");
    assert_eq!(created["key"]["role"], "client");
    assert_eq!(created["key"]["max_priority"], 3);
    assert!(created["key"]["expires_at"].is_string(), "{created}");
    assert_eq!(created["key"]["prefix"], secret[4..12]);
    // The key works.
    let r = app.get(&app.url("/requests"), &secret).await;
    assert_eq!(r.status(), StatusCode::OK);

    // The list shows it without its secret, and its use (to within a minute).
    let list = call(&app, Method::GET, "/admin/v1/keys", &admin, None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !list.contains(&secret),
        "a list never shows a secret: {list}"
    );
    let ci = listed(&app, &admin, "ci").await;
    assert!(ci["last_used_at"].is_string(), "{ci}");
    assert!(ci.get("revoked_at").is_none(), "{ci}");

    // A live name cannot be taken twice.
    let taken = call(
        &app,
        Method::POST,
        "/admin/v1/keys",
        &admin,
        Some(json!({"name": "ci", "role": "worker"})),
    )
    .await;
    expect_code(taken, StatusCode::CONFLICT, "key_name_taken").await;
    let bad_role = call(
        &app,
        Method::POST,
        "/admin/v1/keys",
        &admin,
        Some(json!({"name": "x", "role": "root"})),
    )
    .await;
    expect_code(bad_role, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;

    // Update: the cap, then no expiry.
    let updated = json_body(
        call(
            &app,
            Method::PATCH,
            "/admin/v1/keys/ci",
            &admin,
            Some(json!({"max_priority": 9, "no_expiry": true})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["max_priority"], 9);
    assert!(updated.get("expires_at").is_none(), "{updated}");

    // Rotate: a new secret; the old one is refused at once.
    let rotated = json_body(
        call(&app, Method::POST, "/admin/v1/keys/ci/rotate", &admin, None).await,
        StatusCode::OK,
    )
    .await;
    let new_secret = str_field(&rotated, "secret").to_string();
    assert_ne!(new_secret, secret);
    assert_eq!(
        rotated["key"]["id"], created["key"]["id"],
        "same key, new secret"
    );
    let old = app.get(&app.url("/requests"), &secret).await;
    expect_code(old, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!(
        app.get(&app.url("/requests"), &new_secret).await.status(),
        StatusCode::OK
    );

    // Revoke: 204, then the secret is refused at once and the name is free again.
    let revoked = call(&app, Method::DELETE, "/admin/v1/keys/ci", &admin, None).await;
    assert_eq!(revoked.status(), StatusCode::NO_CONTENT);
    let refused = app.get(&app.url("/requests"), &new_secret).await;
    expect_code(refused, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert!(listed(&app, &admin, "ci").await["revoked_at"].is_string());
    for (method, path) in [
        (Method::DELETE, "/admin/v1/keys/ci"),
        (Method::POST, "/admin/v1/keys/ci/rotate"),
        (Method::PATCH, "/admin/v1/keys/nobody"),
    ] {
        let body = (method == Method::PATCH).then(|| json!({"max_priority": 1}));
        let r = call(&app, method, path, &admin, body).await;
        expect_code(r, StatusCode::NOT_FOUND, "key_not_found").await;
    }
    let again = call(
        &app,
        Method::POST,
        "/admin/v1/keys",
        &admin,
        Some(json!({"name": "ci", "role": "client"})),
    )
    .await;
    assert_eq!(again.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn only_admin_keys_manage_keys() {
    let app = spawn_queue_only().await;
    let client = app.client_key().await;
    let worker = app.key(Role::Worker, 0).await;
    for key in [&client, &worker] {
        for (method, path) in [
            (Method::GET, "/admin/v1/keys"),
            (Method::POST, "/admin/v1/keys"),
            (Method::PATCH, "/admin/v1/keys/x"),
            (Method::POST, "/admin/v1/keys/x/rotate"),
            (Method::DELETE, "/admin/v1/keys/x"),
        ] {
            let body = (method != Method::GET && method != Method::DELETE)
                .then(|| json!({"name": "x", "role": "admin"}));
            let body = if method == Method::PATCH {
                Some(json!({"max_priority": 1}))
            } else {
                body
            };
            let r = call(&app, method.clone(), path, key, body).await;
            expect_code(r, StatusCode::FORBIDDEN, "forbidden").await;
        }
    }
    let r = call(&app, Method::GET, "/admin/v1/keys", "plt_wrong", None).await;
    expect_code(r, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn repeated_failed_authentications_are_refused_even_with_a_valid_key() {
    let app = spawn_queue_only().await;
    let good = app.client_key().await;
    for n in 0..20 {
        let r = app
            .get(&app.url("/requests"), &format!("plt_guess{n}"))
            .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {n}");
    }
    let refused = app.get(&app.url("/requests"), &good).await;
    let retry_after: u64 = refused
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    expect_code(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

/// A key's fair-sharing weight: 1 by default, set at create or by update, 1 to 100.
#[tokio::test]
async fn keys_have_a_fair_sharing_weight() {
    let app = spawn_queue_only().await;
    let admin = admin_key(&app).await;
    let create = |name: &str, weight: Option<i64>| {
        let mut body = json!({"name": name, "role": "client"});
        if let Some(weight) = weight {
            body["weight"] = json!(weight);
        }
        call(&app, Method::POST, "/admin/v1/keys", &admin, Some(body))
    };
    let plain = json_body(create("plain", None).await, StatusCode::CREATED).await;
    assert_eq!(plain["key"]["weight"], 1);
    let heavy = json_body(create("heavy", Some(3)).await, StatusCode::CREATED).await;
    assert_eq!(heavy["key"]["weight"], 3);
    assert_eq!(listed(&app, &admin, "heavy").await["weight"], 3);
    for weight in [0, 101] {
        let r = create("bad", Some(weight)).await;
        expect_code(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    }
    let updated = json_body(
        call(
            &app,
            Method::PATCH,
            "/admin/v1/keys/plain",
            &admin,
            Some(json!({"weight": 5})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(updated["weight"], 5);
    let r = call(
        &app,
        Method::PATCH,
        "/admin/v1/keys/plain",
        &admin,
        Some(json!({"weight": -1})),
    )
    .await;
    expect_code(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
}
