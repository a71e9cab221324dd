//! Usage reports: `GET /usage` shows a key its own requests by day and model (completed,
//! failed, cancelled, video and render seconds); `GET /admin/v1/usage` shows an admin
//! every key's (and `?key_name=` one name's); a client key gets 403 there; bad dates
//! and ranges get a 422 naming the parameter. Counts survive retention deleting jobs.

use crate::common::AppExt as _;
use crate::common::{
    T2V, T2V_PRO, TestApp, expect_code, json_body, named_key, preview_result, spawn_queue_only,
    str_field,
};
use pipelet_api::Pipeline;
use pipelet_api::wire::usage::{day_number, day_text, utc_day};
use pipelet_store::{Role, now_ms};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn usage(app: &TestApp, path: &str, key: &str) -> Value {
    json_body(app.get(&app.url(path), key).await, StatusCode::OK).await
}

/// Completes the next queued T2V job as a worker would: 17 frames at 16 fps (1.062 s of
/// video, counted in whole milliseconds) and 1 s of rendering.
async fn complete_next(app: &TestApp) {
    let lease = app.claim(Pipeline::T2v).await;
    let result = preview_result(format!("results/{}.mp4", lease.lease.job_id), 10);
    app.state
        .store
        .complete(&lease.lease, &result)
        .await
        .expect("complete");
}

/// Alice: two completed and one cancelled on T2V, one failed on T2V pro. Bob: one
/// completed. One of Alice's still queued (not counted).
async fn some_usage(app: &TestApp, alice: &str, bob: &str) {
    for key in [alice, alice, bob] {
        app.create_t2v(key, T2V, 0).await;
        complete_next(app).await;
    }
    let cancelled = app.create_t2v(alice, T2V, 0).await;
    let cancel = app.put(str_field(&cancelled, "cancel_url"), alice).await;
    assert_eq!(cancel.status(), StatusCode::NO_CONTENT);
    app.create_t2v(alice, T2V_PRO, 0).await;
    let lease = app.claim(Pipeline::T2v).await;
    app.fail(&lease, "bad luck").await;
    app.create_t2v(alice, T2V, 0).await;
}

fn row(day: &str, key: &str, model: &str, counts: [u64; 3], video: f64, run: f64) -> Value {
    json!({"day": day, "key_name": key, "model_id": model, "completed": counts[0],
           "failed": counts[1], "cancelled": counts[2], "video_seconds": video,
           "run_seconds": run})
}

#[tokio::test]
async fn a_key_sees_its_own_usage_and_an_admin_sees_everyones() {
    let app = spawn_queue_only().await;
    let alice = named_key(&app, "alice", Role::Client).await;
    let bob = named_key(&app, "bob", Role::Client).await;
    let today = utc_day(now_ms());
    let empty = usage(&app, "/usage", &alice).await;
    assert_eq!(empty["rows"], json!([]), "{empty}");
    assert_eq!(empty["to"], today.as_str());
    let month_ago = day_text(day_number(now_ms()) - 29);
    assert_eq!(
        empty["from"],
        month_ago.as_str(),
        "the last 30 days by default"
    );

    some_usage(&app, &alice, &bob).await;
    let mine = usage(&app, "/usage", &alice).await;
    assert_eq!(
        mine["rows"],
        json!([
            row(&today, "alice", T2V, [2, 0, 1], 2.124, 2.0),
            row(&today, "alice", T2V_PRO, [0, 1, 0], 0.0, 0.0),
        ]),
        "{mine}"
    );
    assert_eq!(
        mine["totals"],
        json!({"completed": 2, "failed": 1, "cancelled": 1, "video_seconds": 2.124,
               "run_seconds": 2.0})
    );
    let bobs = usage(&app, &format!("/usage?from={today}&to={today}"), &bob).await;
    assert_eq!(
        bobs["rows"],
        json!([row(&today, "bob", T2V, [1, 0, 0], 1.062, 1.0)])
    );

    let all = usage(&app, "/admin/v1/usage", &app.admin_key).await;
    let keys: Vec<&str> = all["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| str_field(r, "key_name"))
        .collect();
    assert_eq!(keys, ["alice", "alice", "bob"], "{all}");
    assert_eq!(all["totals"]["completed"], 3);
    let only_bob = usage(&app, "/admin/v1/usage?key_name=bob", &app.admin_key).await;
    assert_eq!(only_bob["rows"], bobs["rows"]);
    let nobody = usage(&app, "/admin/v1/usage?key_name=carol", &app.admin_key).await;
    assert_eq!(nobody["rows"], json!([]));

    // Another day's range has none of it.
    let next = day_text(day_number(now_ms()) + 1);
    let later = usage(&app, &format!("/usage?from={next}&to={next}"), &alice).await;
    assert_eq!(later["rows"], json!([]), "{later}");
}

#[tokio::test]
async fn a_client_key_gets_403_on_the_admin_report() {
    let app = spawn_queue_only().await;
    let alice = named_key(&app, "alice", Role::Client).await;
    let worker = named_key(&app, "w", Role::Worker).await;
    let response = app.get(&app.url("/admin/v1/usage"), &alice).await;
    expect_code(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app.get(&app.url("/usage?key_name=bob"), &alice).await;
    expect_code(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app.get(&app.url("/usage"), &worker).await;
    expect_code(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app.get(&app.url("/usage"), "plt_not_a_key").await;
    expect_code(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn bad_dates_and_ranges_get_422_naming_the_parameter() {
    let app = spawn_queue_only().await;
    let alice = named_key(&app, "alice", Role::Client).await;
    for (query, field) in [
        ("from=2026-02-30", "from"),
        ("to=yesterday", "to"),
        ("from=2026-1-01", "from"),
        ("from=2026-01-02&to=2026-01-01", "from"),
        ("from=2024-01-01&to=2026-01-01", "from"),
    ] {
        for (path, key) in [("/usage", &alice), ("/admin/v1/usage", &app.admin_key)] {
            let response = app.get(&app.url(&format!("{path}?{query}")), key).await;
            let body =
                expect_code(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_input").await;
            assert_eq!(body["field"], field, "{query}: {body}");
        }
    }
    // 366 days is the longest range.
    usage(&app, "/usage?from=2025-01-01&to=2026-01-01", &alice).await;
}

#[tokio::test]
async fn usage_outlives_retention() {
    let app = spawn_queue_only().await;
    let alice = named_key(&app, "alice", Role::Client).await;
    let bob = named_key(&app, "bob", Role::Client).await;
    some_usage(&app, &alice, &bob).await;
    let before = usage(&app, "/admin/v1/usage", &app.admin_key).await;
    let deleted = app
        .state
        .store
        .delete_finished_jobs(now_ms() + 1, 100)
        .await
        .expect("delete finished jobs");
    assert_eq!(deleted.len(), 5);
    let after = usage(&app, "/admin/v1/usage", &app.admin_key).await;
    assert_eq!(after, before);
}
