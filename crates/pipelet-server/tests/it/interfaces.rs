//! The interfaces for people: `GET /models`, the live status stream
//! (`GET .../status/stream`, Server-Sent Events) and the web playground at `/`.
//!
//! Each test starts the real [`pipelet_server::Application`] on a free port with its
//! data in a temporary directory. Where a test needs a job in a given state on demand,
//! it plays the worker through the store (as `common` does elsewhere); the real
//! in-process preview worker drives the end-to-end stream test.

use std::time::{Duration, Instant};

use crate::common::AppExt as _;
use crate::common::{
    ALL_MODELS, I2V, JOB_TIMEOUT, T2V, T2V_PREMIUM, TestApp, expect_error, images, json_body,
    spawn_app, spawn_queue_only, str_field,
};
use crate::common::{expect_html, preview_result};
use futures::StreamExt;
use pipelet_api::Pipeline;
use pipelet_server::{Application, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// One Server-Sent Event.
#[derive(Debug)]
struct SseEvent {
    event: String,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {self:?}"))
    }
}

/// Reads events off a `text/event-stream` response, skipping comments (keepalives).
struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    /// Asserts a 200 `text/event-stream` response and starts reading it.
    fn new(response: reqwest::Response) -> SseReader {
        assert_eq!(response.status(), StatusCode::OK, "stream status");
        let content_type = crate::common::content_type(&response);
        assert!(
            content_type.starts_with("text/event-stream"),
            "content-type {content_type:?}"
        );
        SseReader {
            body: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` when the server closed the stream. Fails after
    /// `timeout` without either.
    async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (String::from("message"), Vec::new());
                for line in block.lines() {
                    if line.is_empty() || line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event = value.to_string(),
                        "data" => data.push(value.to_string()),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    continue; // a comment-only block: a keepalive
                }
                return Some(SseEvent {
                    event,
                    data: data.join("\n"),
                });
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => panic!("no event and no end of stream within {timeout:?}"),
                Ok(None) => {
                    assert!(
                        self.buffer.trim().is_empty(),
                        "stream ended inside an event: {:?}",
                        self.buffer
                    );
                    return None;
                }
                Ok(Some(chunk)) => {
                    let chunk = chunk.expect("read the stream");
                    self.buffer
                        .push_str(&String::from_utf8_lossy(&chunk).replace('\r', ""));
                }
            }
        }
    }

    /// The next event, which must be a `status` one; returns its JSON.
    async fn status(&mut self) -> Value {
        let event = self
            .next(Duration::from_secs(10))
            .await
            .expect("a status event, not the end of the stream");
        assert_eq!(event.event, "status", "{event:?}");
        event.json()
    }
}

fn stream_url(created: &Value) -> String {
    format!("{}/stream", str_field(created, "status_url"))
}

async fn open_stream(app: &TestApp, url: &str, key: &str) -> SseReader {
    SseReader::new(app.get(url, key).await)
}

// ---------- GET /models ----------

#[tokio::test]
async fn models_lists_the_catalog_without_a_key() {
    let app = spawn_queue_only().await;
    let response = app.get_open("/models").await;
    let body = json_body(response, StatusCode::OK).await;
    let models = body["models"].as_array().expect("a models array");
    let ids: Vec<&str> = models.iter().map(|m| str_field(m, "id")).collect();
    assert_eq!(ids, ALL_MODELS, "every model of the catalog, in order");

    let by_id = |id: &str| {
        models
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no {id}"))
    };
    let t2v = by_id(T2V);
    assert_eq!(t2v["pipeline"], "t2v");
    assert_eq!(t2v["tier_priority"], 0);
    assert_eq!(by_id(T2V_PREMIUM)["tier_priority"], 10);
    assert!(
        by_id("wan22-fast-i2v-vip")["tier_priority"].as_i64()
            > by_id(I2V)["tier_priority"].as_i64()
    );
    assert_eq!(t2v["max_duration_s"], json!({"480p": 7, "720p": 5}));
    assert_eq!(t2v["defaults"]["width"], 832);
    assert_eq!(t2v["defaults"]["height"], 480);
    assert_eq!(t2v["defaults"]["duration"], 5);
    let sizes: Vec<(u64, u64)> = t2v["sizes"]
        .as_array()
        .expect("t2v sizes")
        .iter()
        .map(|s| {
            (
                s["width"].as_u64().unwrap_or(0),
                s["height"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    for size in [
        (1280, 720),
        (720, 1280),
        (480, 832),
        (832, 480),
        (512, 512),
        (768, 768),
    ] {
        assert!(sizes.contains(&size), "{size:?} in {sizes:?}");
    }
    assert!(t2v.get("heights").is_none(), "{t2v}");
    let resolution = |m: &Value, width: Option<u64>, height: u64| -> Value {
        m["resolutions"]
            .as_array()
            .expect("resolutions")
            .iter()
            .find(|r| r["height"] == height && r["width"].as_u64() == width)
            .cloned()
            .unwrap_or_else(|| panic!("no resolution {width:?}x{height} in {m}"))
    };
    let wide = resolution(t2v, Some(1280), 720);
    assert_eq!(
        (&wide["class"], &wide["max_duration_s"]),
        (&json!("720p"), &json!(5))
    );
    let small = resolution(t2v, Some(832), 480);
    assert_eq!(
        (&small["class"], &small["max_duration_s"]),
        (&json!("480p"), &json!(7))
    );

    let i2v = by_id(I2V);
    assert_eq!(i2v["pipeline"], "i2v");
    assert_eq!(i2v["heights"], json!([480, 720]));
    assert!(i2v.get("sizes").is_none(), "{i2v}");
    assert_eq!(i2v["defaults"]["height"], 480);
    assert_eq!(resolution(i2v, None, 720)["max_duration_s"], 5);
    assert_eq!(resolution(i2v, None, 480)["max_duration_s"], 7);
}

/// What `/models` says is allowed is exactly what create accepts.
#[tokio::test]
async fn models_limits_agree_with_create() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let body = json_body(app.get_open("/models").await, StatusCode::OK).await;
    let image = images::b64(&images::png(32, 24));
    for model in body["models"].as_array().expect("models") {
        let id = str_field(model, "id");
        for r in model["resolutions"].as_array().expect("resolutions") {
            let max = r["max_duration_s"].as_u64().expect("max_duration_s");
            let mut request = json!({"prompt": "a lighthouse", "height": r["height"]});
            if let Some(width) = r.get("width") {
                request["width"] = width.clone();
            } else {
                request["data_uri"] = json!(image);
            }
            request["duration"] = json!(max);
            app.create(&key, id, &request).await;
            request["duration"] = json!(max + 1);
            expect_error(
                app.post_create(&key, id, &request).await,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await;
        }
    }
}

// ---------- the live status stream ----------

/// IN_QUEUE (with its position falling) → IN_PROGRESS → progress → COMPLETED, then the
/// stream closes; each event is exactly the status endpoint's JSON.
#[tokio::test]
async fn stream_follows_a_request_through_every_change_and_closes() {
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let ahead = app.create_t2v(&key, T2V, 0).await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let mut stream = open_stream(&app, &stream_url(&created), &key).await;

    let first = stream.status().await;
    assert_eq!(first["status"], "IN_QUEUE", "{first}");
    assert_eq!(first["queue_position"], 1, "{first}");
    assert_eq!(first["request_id"], created["request_id"]);
    assert_eq!(first["response_url"], created["response_url"]);
    assert!(first["statusMessages"].is_object(), "{first}");
    assert!(
        first.get("logs").is_some(),
        "logs is always present: {first}"
    );
    // The same JSON as the status endpoint.
    assert_eq!(
        first,
        app.status(str_field(&created, "status_url"), &key).await
    );

    // The job ahead starts: this one moves up.
    let lease_ahead = app.claim(Pipeline::T2v).await;
    assert_eq!(
        lease_ahead.job.id.to_string(),
        str_field(&ahead, "request_id")
    );
    let moved = stream.status().await;
    assert_eq!(moved["status"], "IN_QUEUE", "{moved}");
    assert_eq!(moved["queue_position"], 0, "{moved}");

    let lease = app.claim(Pipeline::T2v).await;
    assert_eq!(lease.job.id.to_string(), str_field(&created, "request_id"));
    let started = stream.status().await;
    assert_eq!(started["status"], "IN_PROGRESS", "{started}");
    assert!(started.get("queue_position").is_none(), "{started}");

    app.report_progress(&lease, 2, 8).await;
    let progress = stream.status().await;
    assert_eq!(progress["status"], "IN_PROGRESS", "{progress}");
    assert_eq!(progress["statusMessages"]["message"], "PROCESSING");
    assert_eq!(
        progress["statusMessages"]["detail_message"],
        "Progress: 2/8 Tasks done"
    );
    assert_eq!(progress["progress"], 0.25, "{progress}");

    app.report_progress(&lease, 6, 8).await;
    let later = stream.status().await;
    assert_eq!(later["progress"], 0.75, "{later}");

    app.state
        .store
        .complete(&lease.lease, &preview_result("results/none.mp4", 1))
        .await
        .expect("complete");
    let done = stream.status().await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    assert_eq!(done["progress"], 1.0, "{done}");
    let end = stream.next(Duration::from_secs(10)).await;
    assert!(
        end.is_none(),
        "the stream closes after a terminal status: {end:?}"
    );

    // A stream opened on a finished request sends its status once and closes.
    let mut again = open_stream(&app, &stream_url(&created), &key).await;
    assert_eq!(again.status().await["status"], "COMPLETED");
    assert!(again.next(Duration::from_secs(10)).await.is_none());
}

/// With the real in-process preview worker: the stream ends COMPLETED, progress only
/// goes up, and the result is there.
#[tokio::test]
async fn stream_with_a_real_worker_ends_completed() {
    let app = spawn_app().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    let mut stream = open_stream(&app, &stream_url(&created), &key).await;
    let order = |s: &str| match s {
        "IN_QUEUE" => 0,
        "IN_PROGRESS" => 1,
        "COMPLETED" => 2,
        other => panic!("unexpected status {other}"),
    };
    let deadline = Instant::now() + JOB_TIMEOUT;
    let (mut last_order, mut last_progress, mut events) = (0, 0.0, Vec::new());
    while let Some(event) = stream.next(JOB_TIMEOUT).await {
        assert_eq!(event.event, "status", "{event:?}");
        let status = event.json();
        let now = order(str_field(&status, "status"));
        assert!(
            now >= last_order,
            "status went back: {events:?} then {status}"
        );
        let progress = status["progress"].as_f64().unwrap_or(0.0);
        if now == last_order {
            assert!(progress >= last_progress, "progress went back: {status}");
        }
        (last_order, last_progress) = (now, progress);
        events.push(status);
        assert!(
            Instant::now() < deadline,
            "still running after {JOB_TIMEOUT:?}"
        );
    }
    let last = events.last().expect("at least one event");
    assert_eq!(last["status"], "COMPLETED", "{events:?}");
    let (video, mp4) = app
        .fetch_video(str_field(&created, "response_url"), &key)
        .await;
    assert_eq!(video["num_frames"], 17);
    assert!(!mp4.is_empty());
}

#[tokio::test]
async fn stream_is_404_for_another_keys_request_and_401_without_a_key() {
    let app = spawn_queue_only().await;
    let owner = app.client_key().await;
    let other = app.client_key().await;
    let created = app.create_t2v(&owner, T2V, 0).await;
    let url = stream_url(&created);

    expect_error(app.get(&url, &other).await, StatusCode::NOT_FOUND).await;
    let unauthenticated = app.client.get(&url).send().await.expect("GET");
    expect_error(unauthenticated, StatusCode::UNAUTHORIZED).await;
    let id = str_field(&created, "request_id");
    let wrong_model = app.url(&format!("/queue/{I2V}/requests/{id}/status/stream"));
    expect_error(app.get(&wrong_model, &owner).await, StatusCode::NOT_FOUND).await;
    let unknown = app.url(&format!(
        "/queue/{T2V}/requests/{}/status/stream",
        uuid::Uuid::new_v4()
    ));
    expect_error(app.get(&unknown, &owner).await, StatusCode::NOT_FOUND).await;
    let garbage = app.url(&format!("/queue/{T2V}/requests/not-a-uuid/status/stream"));
    expect_error(app.get(&garbage, &owner).await, StatusCode::NOT_FOUND).await;

    // The owner and an admin may watch it.
    let mut mine = open_stream(&app, &url, &owner).await;
    assert_eq!(mine.status().await["status"], "IN_QUEUE");
    let mut admin = open_stream(&app, &url, &app.admin_key).await;
    assert_eq!(admin.status().await["status"], "IN_QUEUE");
}

/// A shutdown ends open streams (with an `end` event) so it is not held up by them.
#[tokio::test]
async fn shutdown_ends_open_streams() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_data_dir(dir.path().join("data"));
    config.workers = 0;
    let app = Application::build(config).await.expect("build");
    let port = app.port();
    let admin = app.admin_key().expect("admin key").to_string();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("http://127.0.0.1:{port}/queue/{T2V}"))
        .bearer_auth(&admin)
        .json(&json!({"prompt": "a harbour at night", "width": 512, "height": 512, "duration": 1}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("create body");
    let response = client
        .get(stream_url(&created))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("open the stream");
    let mut stream = SseReader::new(response);
    assert_eq!(stream.status().await["status"], "IN_QUEUE");

    let asked = Instant::now();
    stop_tx.send(()).expect("the server is running");
    let end = stream
        .next(Duration::from_secs(10))
        .await
        .expect("an end event before the stream closes");
    assert_eq!(end.event, "end", "{end:?}");
    assert_eq!(end.json()["reason"], "shutdown");
    assert!(stream.next(Duration::from_secs(10)).await.is_none());
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stops although a stream was open")
        .expect("join")
        .expect("clean stop");
    assert!(asked.elapsed() < Duration::from_secs(20));
}

// ---------- the playground ----------

#[tokio::test]
async fn playground_is_served_at_the_root_without_a_key() {
    let app = spawn_queue_only().await;
    let (csp, html) = expect_html(app.get_open("/").await).await;
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(
        html.starts_with("<!doctype html>"),
        "{}",
        &html[..40.min(html.len())]
    );
    assert!(html.contains("<title>pipelet playground</title>"));
    // Self-contained: nothing is loaded from elsewhere.
    for external in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
        "src=\"//",
        "href=\"//",
    ] {
        assert!(!html.contains(external), "the page loads {external}…");
    }
    // It talks to the API it documents.
    for used in ["/models", "/status/stream", "localStorage", "data_uri"] {
        assert!(html.contains(used), "the page should use {used}");
    }
}
