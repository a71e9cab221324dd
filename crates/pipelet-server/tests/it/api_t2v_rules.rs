//! The create body's rules through HTTP, one representative case per rule (pipelet-api's
//! unit tests cover the details): text-to-video sizes, durations, the prompt and the
//! optional fields. Every refusal is a 422 whose `detail` says what is allowed.

use crate::common::AppExt as _;
use crate::common::{T2V, T2V_PREMIUM, TestApp, expect_invalid, spawn_queue_only};
use serde_json::{Value, json};

/// Creates `body` under the base t2v model and asserts a 200.
async fn accepted(app: &TestApp, key: &str, body: Value) {
    app.create(key, T2V, &body).await;
}

/// Creates `body` and asserts a 422 mentioning `words`; returns the detail.
async fn refused(app: &TestApp, key: &str, body: Value, words: &[&str]) -> String {
    let response = app.post_create(key, T2V, &body).await;
    expect_invalid(response, words).await
}

#[tokio::test]
async fn every_allowed_size_is_accepted_and_others_list_the_allowed_ones() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let sizes = [
        (1280, 720),
        (720, 1280),
        (480, 832),
        (832, 480),
        (512, 512),
        (768, 768),
    ];
    for (width, height) in sizes {
        let body = json!({"prompt": "a fox", "width": width, "height": height, "duration": 1});
        accepted(&app, &key, body).await;
    }
    // No size at all: the default, 832x480.
    accepted(&app, &key, json!({"prompt": "a fox"})).await;

    let all: Vec<String> = sizes.iter().map(|(w, h)| format!("{w}x{h}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    for (width, height) in [(1280, 480), (720, 720), (1920, 1080), (0, 0)] {
        let body = json!({"prompt": "a fox", "width": width, "height": height});
        refused(&app, &key, body, &all).await;
    }
    refused(
        &app,
        &key,
        json!({"prompt": "a fox", "width": 999}),
        &["999", "512x512"],
    )
    .await;
    refused(
        &app,
        &key,
        json!({"prompt": "a fox", "width": "512", "height": 512}),
        &["width"],
    )
    .await;
    refused(
        &app,
        &key,
        json!({"prompt": "a fox", "height": -480}),
        &["height"],
    )
    .await;
}

#[tokio::test]
async fn a_single_dimension_picks_the_size_that_has_it() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    // The duration limit shows which size was picked: 6 s is refused for 720-class
    // output, and the refusal names the size.
    for (field, value, size) in [
        ("width", 1280, "1280x720"),
        ("height", 1280, "720x1280"),
        ("width", 768, "768x768"),
    ] {
        let body = json!({"prompt": "a fox", field: value, "duration": 6});
        refused(&app, &key, body, &["duration", size]).await;
        accepted(
            &app,
            &key,
            json!({"prompt": "a fox", field: value, "duration": 5}),
        )
        .await;
    }
    // 480-class picks allow 7 s.
    for (field, value) in [("height", 480), ("width", 480), ("width", 512)] {
        accepted(
            &app,
            &key,
            json!({"prompt": "a fox", field: value, "duration": 7}),
        )
        .await;
    }
}

#[tokio::test]
async fn durations_are_whole_seconds_within_the_size_class() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    for duration in [json!(5), json!(5.0), json!(7), json!(1), json!(null)] {
        let body = json!({"prompt": "rain", "width": 832, "height": 480, "duration": duration});
        accepted(&app, &key, body).await;
    }
    accepted(
        &app,
        &key,
        json!({"prompt": "rain", "width": 1280, "height": 720, "duration": 5}),
    )
    .await;
    for duration in [
        json!(0),
        json!(-1),
        json!(5.5),
        json!("5"),
        json!(true),
        json!([5]),
    ] {
        let body = json!({"prompt": "rain", "width": 832, "height": 480, "duration": duration});
        refused(&app, &key, body, &["duration"]).await;
    }
    for (width, height) in [(1280, 720), (720, 1280), (768, 768)] {
        let body = json!({"prompt": "rain", "width": width, "height": height, "duration": 6});
        refused(&app, &key, body, &["duration", "5"]).await;
    }
    for (width, height) in [(832, 480), (480, 832), (512, 512)] {
        let body = json!({"prompt": "rain", "width": width, "height": height, "duration": 8});
        refused(&app, &key, body, &["duration", "7"]).await;
    }
}

#[tokio::test]
async fn the_prompt_is_required_non_empty_and_bounded() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    refused(
        &app,
        &key,
        json!({"width": 512, "height": 512}),
        &["prompt"],
    )
    .await;
    refused(&app, &key, json!({"prompt": null}), &["prompt"]).await;
    refused(&app, &key, json!({"prompt": ""}), &["prompt"]).await;
    refused(&app, &key, json!({"prompt": "  \n\t"}), &["prompt"]).await;
    refused(&app, &key, json!({"prompt": 42}), &["prompt"]).await;
    refused(&app, &key, json!({"prompt": ["a", "b"]}), &["prompt"]).await;
    // The default bound is 4000 characters, counted as characters, not bytes.
    accepted(&app, &key, json!({"prompt": "é".repeat(4000)})).await;
    let detail = refused(&app, &key, json!({"prompt": "a".repeat(4001)}), &["prompt"]).await;
    assert!(detail.contains("4000"), "{detail}");
    // The 422 names the field.
    let response = app.post_create(&key, T2V, &json!({"prompt": ""})).await;
    let body =
        crate::common::expect_error(response, reqwest::StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["field"], "prompt", "{body}");
}

#[tokio::test]
async fn the_prompt_bound_follows_the_configuration() {
    let app = crate::common::spawn_app_with(|c| {
        c.workers = 0;
        c.limits.max_prompt_chars = 10;
    })
    .await;
    let key = app.client_key().await;
    accepted(&app, &key, json!({"prompt": "0123456789"})).await;
    refused(
        &app,
        &key,
        json!({"prompt": "0123456789a"}),
        &["prompt", "10"],
    )
    .await;
}

#[tokio::test]
async fn optional_fields_are_checked_by_type_and_range() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let ok = [
        json!({"prompt": "a", "priority": 5}),
        json!({"prompt": "a", "priority": -1000}),
        json!({"prompt": "a", "priority": 1000}),
        json!({"prompt": "a", "higher_quality_with_more_steps": true}),
        json!({"prompt": "a", "higher_quality_with_more_steps": false}),
        json!({"prompt": "a", "seed": 42, "negative_prompt": "blurry"}),
    ];
    for body in ok {
        app.create(&key, T2V_PREMIUM, &body).await;
    }
    let bad = [
        (json!({"prompt": "a", "priority": "5"}), "priority"),
        (json!({"prompt": "a", "priority": 1.5}), "priority"),
        (json!({"prompt": "a", "priority": 1001}), "priority"),
        (json!({"prompt": "a", "priority": -1001}), "priority"),
        (
            json!({"prompt": "a", "higher_quality_with_more_steps": "yes"}),
            "higher_quality",
        ),
        (
            json!({"prompt": "a", "higher_quality_with_more_steps": 1}),
            "higher_quality",
        ),
        (json!({"prompt": "a", "seed": -1}), "seed"),
    ];
    for (body, field) in bad {
        refused(&app, &key, body, &[field]).await;
    }
}
