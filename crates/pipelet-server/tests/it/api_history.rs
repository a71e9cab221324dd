//! `GET /requests`: each key's history, newest first, in cursor pages that stay stable
//! while requests arrive; filters; admin keys see everyone (and `?key_name=`); bad
//! parameters get a 422 naming them.

use crate::common::AppExt as _;
use crate::common::{
    I2V, T2V, TestApp, expect_error, json_body, named_key, spawn_queue_only, str_field,
};
use pipelet_store::Role;
use reqwest::StatusCode;
use serde_json::Value;

async fn list(app: &TestApp, key: &str, query: &str) -> Value {
    json_body(
        app.get(&app.url(&format!("/requests{query}")), key).await,
        StatusCode::OK,
    )
    .await
}

fn request_ids(page: &Value) -> Vec<String> {
    page["requests"]
        .as_array()
        .unwrap_or_else(|| panic!("no requests list in {page}"))
        .iter()
        .map(|r| str_field(r, "request_id").to_string())
        .collect()
}

fn created_ids(created: &[Value]) -> Vec<String> {
    created
        .iter()
        .rev()
        .map(|c| str_field(c, "request_id").to_string())
        .collect()
}

#[tokio::test]
async fn a_key_lists_its_own_requests_newest_first_with_their_urls() {
    let app = spawn_queue_only().await;
    let alice = named_key(&app, "alice", Role::Client).await;
    let bob = named_key(&app, "bob", Role::Client).await;
    let empty = list(&app, &alice, "").await;
    assert_eq!(
        empty,
        serde_json::json!({"requests": [], "next_cursor": null})
    );

    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(app.create_t2v(&alice, T2V, 0).await);
        app.create_t2v(&bob, T2V, 0).await;
    }
    mine.push(app.create_i2v(&alice, I2V, 0).await);

    let page = list(&app, &alice, "").await;
    assert_eq!(request_ids(&page), created_ids(&mine), "{page}");
    assert!(page["next_cursor"].is_null(), "{page}");
    let newest = &page["requests"][0];
    let created = &mine[3];
    for field in ["request_id", "response_url", "status_url", "cancel_url"] {
        assert_eq!(newest[field], created[field], "{field}: {newest}");
    }
    assert_eq!(newest["model_id"], I2V);
    assert_eq!(newest["status"], "IN_QUEUE");
    assert!(newest["finished_at"].is_null(), "{newest}");
    assert!(
        str_field(newest, "created_at").ends_with('Z'),
        "RFC 3339 UTC: {newest}"
    );
    // The status URL of a listed request works.
    let status = app.status(str_field(newest, "status_url"), &alice).await;
    assert_eq!(status["status"], "IN_QUEUE");

    // Bob sees only his three.
    let bobs = list(&app, &bob, "").await;
    assert_eq!(request_ids(&bobs).len(), 3);
    assert!(
        request_ids(&bobs)
            .iter()
            .all(|id| !created_ids(&mine).contains(id))
    );

    // Once cancelled, the status and finished_at follow.
    let cancel = app.put(str_field(&mine[0], "cancel_url"), &alice).await;
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    let page = list(&app, &alice, "?status=CANCELLED").await;
    assert_eq!(request_ids(&page), created_ids(&mine[..1]));
    assert_eq!(page["requests"][0]["status"], "CANCELLED");
    assert!(page["requests"][0]["finished_at"].is_string(), "{page}");

    let t2v = list(&app, &alice, &format!("?model_id={T2V}&status=in_queue")).await;
    assert_eq!(request_ids(&t2v), created_ids(&mine[1..3]));
    let i2v = list(&app, &alice, &format!("?model_id={I2V}")).await;
    assert_eq!(request_ids(&i2v), created_ids(&mine[3..]));
}

#[tokio::test]
async fn pages_follow_the_cursor_without_duplicates_while_requests_arrive() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let mut before = Vec::new();
    for _ in 0..7 {
        before.push(app.create_t2v(&key, T2V, 0).await);
    }
    let mut seen = Vec::new();
    let mut query = "?limit=3".to_string();
    let mut pages = 0;
    loop {
        let page = list(&app, &key, &query).await;
        pages += 1;
        let ids = request_ids(&page);
        assert!(ids.len() <= 3, "{page}");
        seen.extend(ids);
        // New requests between pages must not shift the next page.
        app.create_t2v(&key, T2V, 0).await;
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created_ids(&before));

    let first = list(&app, &key, "").await;
    assert_eq!(
        request_ids(&first).len(),
        10,
        "the default page holds up to 20"
    );
}

#[tokio::test]
async fn an_admin_key_sees_every_key_and_may_filter_by_key_name() {
    let app = spawn_queue_only().await;
    let alice = named_key(&app, "alice", Role::Client).await;
    let bob = named_key(&app, "bob", Role::Client).await;
    let a = app.create_t2v(&alice, T2V, 0).await;
    let b = app.create_t2v(&bob, T2V, 0).await;
    let admin = &app.admin_key;

    let all = list(&app, admin, "").await;
    assert_eq!(request_ids(&all), created_ids(&[a.clone(), b.clone()]));
    let only_bob = list(&app, admin, "?key_name=bob").await;
    assert_eq!(request_ids(&only_bob), created_ids(&[b]));
    let nobody = list(&app, admin, "?key_name=nobody").await;
    assert_eq!(request_ids(&nobody), Vec::<String>::new());

    // A client key cannot look at another key's history, not even its own by name.
    for query in ["?key_name=bob", "?key_name=alice"] {
        let body = expect_error(
            app.get(&app.url(&format!("/requests{query}")), &alice)
                .await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert!(str_field(&body, "detail").contains("key_name"), "{body}");
    }
    let worker = app.key(Role::Worker, 0).await;
    expect_error(
        app.get(&app.url("/requests"), &worker).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let anonymous = app.get_open("/requests").await;
    expect_error(anonymous, StatusCode::UNAUTHORIZED).await;
    // Alice still sees hers only.
    assert_eq!(
        request_ids(&list(&app, &alice, "").await),
        created_ids(&[a])
    );
}

#[tokio::test]
async fn bad_parameters_are_refused_naming_the_parameter() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    app.create_t2v(&key, T2V, 0).await;
    let cases = [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=-3", "limit"),
        ("?status=DONE", "status"),
        ("?model_id=no-such-model", "model_id"),
        ("?cursor=not-a-cursor", "cursor"),
        ("?cursor=djE6MTI", "cursor"),
    ];
    for (query, field) in cases {
        let body = expect_error(
            app.get(&app.url(&format!("/requests{query}")), &key).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert_eq!(body["field"], field, "{query}: {body}");
        assert!(
            str_field(&body, "detail").contains(field),
            "{query}: {body}"
        );
    }
    expect_error(
        app.get(&app.url("/requests?limit=1&limit=2"), &key).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // The edges are allowed; empty values are as good as absent.
    for query in [
        "?limit=1",
        "?limit=100",
        "?limit=&status=&model_id=&cursor=",
    ] {
        list(&app, &key, query).await;
    }
}
