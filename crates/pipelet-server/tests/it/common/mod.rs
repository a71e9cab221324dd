//! Shared helpers of the HTTP API tests. The server itself ([`TestApp`]: the real
//! application on a free loopback port, data in a temp dir) comes from
//! `pipelet-testkit`; here are the model names, [`AppExt`] (the four queue calls, status
//! polling with a deadline, result download) and the error-body checks.
//!
//! Where a test needs a job in a state no HTTP call can put it in on demand (running with
//! a known progress, failed with a known reason), it plays the worker through the store,
//! exactly as the in-process workers do; everything a client sees still goes over HTTP.

#![allow(dead_code)]

pub mod images;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pipelet_api::Pipeline;
use pipelet_runner::preview::PreviewRunner;
use pipelet_server::queue_service::QueueService;
use pipelet_store::{ClaimRequest, JobRecord, JobResult, Lease, ProgressUpdate, RenderedVideo};
pub use pipelet_testkit::app::{TestApp, spawn_app, spawn_app_with, spawn_queue_only};
pub use pipelet_testkit::media;
use pipelet_worker::{StepOutcome, Worker, WorkerConfig};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const T2V: &str = "wan22-fast-t2v";
pub const T2V_PREMIUM: &str = "wan22-fast-t2v-premium";
pub const T2V_PRO: &str = "wan22-fast-t2v-pro";
pub const I2V: &str = "wan22-fast-i2v";
pub const I2V_PRO: &str = "wan22-fast-i2v-pro";
pub const I2V_VIP: &str = "wan22-fast-i2v-vip";
pub const ALL_MODELS: [&str; 6] = [T2V, T2V_PREMIUM, T2V_PRO, I2V, I2V_PRO, I2V_VIP];

/// How long a test waits for a job to reach a state before failing.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_EVERY: Duration = Duration::from_millis(25);

/// What the API tests do with a [`TestApp`] beyond the kit's own helpers: the queue
/// calls, status polling and result download, and playing a worker through the store
/// (`fake_worker.rs`).
pub(crate) trait AppExt {
    /// `POST /queue/{model}` with a JSON body.
    async fn post_create(&self, key: &str, model: &str, body: &Value) -> Response;
    /// Creates a request and asserts a 200; returns the create body.
    async fn create(&self, key: &str, model: &str, body: &Value) -> Value;
    /// Creates a t2v request with a small size and returns the create body.
    async fn create_t2v(&self, key: &str, model: &str, priority: i64) -> Value;
    /// Creates an i2v request with a tiny PNG and returns the create body.
    async fn create_i2v(&self, key: &str, model: &str, priority: i64) -> Value;
    /// `GET url` with `key`.
    async fn get(&self, url: &str, key: &str) -> Response;
    /// `PUT url` with `key`.
    async fn put(&self, url: &str, key: &str) -> Response;
    /// GETs a status URL and asserts a 200 JSON body.
    async fn status(&self, status_url: &str, key: &str) -> Value;
    /// The `queue_position` of a queued request, read through its status URL.
    async fn position(&self, created: &Value, key: &str) -> u64;
    /// Polls `status_url` every 25 ms until it says `want`; returns every status body
    /// seen, the last one saying `want`. Fails on another terminal status or after
    /// `timeout`.
    async fn wait_for_status(
        &self,
        status_url: &str,
        key: &str,
        want: &str,
        timeout: Duration,
    ) -> Vec<Value>;
    /// Waits (up to [`JOB_TIMEOUT`]) until the request `created` says `want`; returns every
    /// status seen.
    async fn wait_until_status(&self, created: &Value, key: &str, want: &str) -> Vec<Value>;
    /// `GET path` without a key.
    async fn get_open(&self, path: &str) -> Response;
    /// The job `id` as the store has it.
    async fn job(&self, id: Uuid) -> JobRecord;
    /// Fetches a COMPLETED result: its `video` object (with `data_uri` removed) and the
    /// MP4 bytes the base64 decodes to.
    async fn fetch_video(&self, response_url: &str, key: &str) -> (Value, Vec<u8>);
    /// Plays a worker: leases the next queued job of `pipeline` (it becomes IN_PROGRESS).
    async fn claim(&self, pipeline: Pipeline) -> Lease;
    /// Reports progress on a leased job, as a worker's heartbeat does.
    async fn report_progress(&self, lease: &Lease, done: u32, total: u32);
    /// Ends a leased job FAILED for good with `reason`.
    async fn fail(&self, lease: &Lease, reason: &str);
}

impl AppExt for TestApp {
    /// `POST /queue/{model}` with a JSON body.
    async fn post_create(&self, key: &str, model: &str, body: &Value) -> Response {
        self.client
            .post(self.url(&format!("/queue/{model}")))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("send create")
    }

    /// Creates a request and asserts a 200; returns the create body.
    async fn create(&self, key: &str, model: &str, body: &Value) -> Value {
        let response = self.post_create(key, model, body).await;
        let status = response.status();
        let text = response.text().await.expect("read the create body");
        assert_eq!(status, StatusCode::OK, "create {model} {body}: {text}");
        serde_json::from_str(&text).expect("create body is JSON")
    }

    /// Creates a t2v request with a small size and returns the create body.
    async fn create_t2v(&self, key: &str, model: &str, priority: i64) -> Value {
        let body = json!({"prompt": "a paper boat", "width": 512, "height": 512,
                          "duration": 1, "priority": priority});
        self.create(key, model, &body).await
    }

    /// Creates an i2v request with a tiny PNG and returns the create body.
    async fn create_i2v(&self, key: &str, model: &str, priority: i64) -> Value {
        let body = json!({"prompt": "a slow zoom", "data_uri": images::b64(&images::png(32, 24)),
                          "duration": 1, "priority": priority});
        self.create(key, model, &body).await
    }

    async fn get(&self, url: &str, key: &str) -> Response {
        self.client
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .expect("send GET")
    }

    async fn put(&self, url: &str, key: &str) -> Response {
        self.client
            .put(url)
            .bearer_auth(key)
            .send()
            .await
            .expect("send PUT")
    }

    /// GETs a status URL and asserts a 200 JSON body.
    async fn status(&self, status_url: &str, key: &str) -> Value {
        json_body(self.get(status_url, key).await, StatusCode::OK).await
    }

    /// The `queue_position` of a queued request, read through its status URL.
    async fn position(&self, created: &Value, key: &str) -> u64 {
        let status = self.status(str_field(created, "status_url"), key).await;
        assert_eq!(status["status"], "IN_QUEUE", "{status}");
        status["queue_position"]
            .as_u64()
            .unwrap_or_else(|| panic!("no queue_position in {status}"))
    }

    /// Polls `status_url` every 25 ms until it says `want`; returns every status body
    /// seen, the last one saying `want`. Fails on another terminal status or after
    /// `timeout`.
    async fn wait_for_status(
        &self,
        status_url: &str,
        key: &str,
        want: &str,
        timeout: Duration,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let body = self.status(status_url, key).await;
            let status = body["status"].as_str().unwrap_or_default().to_string();
            seen.push(body);
            if status == want {
                return seen;
            }
            let terminal = matches!(status.as_str(), "COMPLETED" | "FAILED" | "CANCELLED");
            assert!(
                !terminal,
                "{status_url} ended {status} while waiting for {want}: {}",
                seen.last().unwrap()
            );
            assert!(
                Instant::now() < deadline,
                "{status_url} still {status} after {timeout:?}, waiting for {want}"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    async fn wait_until_status(&self, created: &Value, key: &str, want: &str) -> Vec<Value> {
        let status_url = str_field(created, "status_url");
        self.wait_for_status(status_url, key, want, JOB_TIMEOUT)
            .await
    }

    async fn get_open(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn job(&self, id: Uuid) -> JobRecord {
        self.state
            .store
            .get_job(id)
            .await
            .expect("read the job")
            .expect("the job exists")
    }

    /// Fetches a COMPLETED result: its `video` object (with `data_uri` removed) and the
    /// MP4 bytes the base64 decodes to.
    async fn fetch_video(&self, response_url: &str, key: &str) -> (Value, Vec<u8>) {
        use base64::Engine as _;
        let mut body = json_body(self.get(response_url, key).await, StatusCode::OK).await;
        let video = body["video"].take();
        let mut video = match video {
            Value::Object(map) => map,
            other => panic!("result has no video object: {other}"),
        };
        let data = match video.remove("data_uri") {
            Some(Value::String(s)) => s,
            other => panic!("video.data_uri must be a string, got {other:?}"),
        };
        assert!(
            !data.starts_with("data:"),
            "data_uri must be plain base64 so `base64 --decode` works"
        );
        let mp4 = base64::engine::general_purpose::STANDARD
            .decode(&data)
            .expect("video.data_uri is standard base64");
        (Value::Object(video), mp4)
    }

    // Playing a worker through the store, for states no HTTP call can reach on
    // demand: running with a known progress, failed with a known reason.
    /// Plays a worker: leases the next queued job of `pipeline` (it becomes IN_PROGRESS).
    async fn claim(&self, pipeline: Pipeline) -> Lease {
        let request = ClaimRequest {
            worker_id: "worker:api-test".into(),
            pipelines: vec![pipeline],
            loaded: None,
            lease_ms: 600_000,
            max_wait_for_switch_ms: 60_000,
        };
        self.state
            .store
            .claim(&request)
            .await
            .expect("claim")
            .expect("a queued job to claim")
    }

    /// Reports progress on a leased job, as a worker's heartbeat does.
    async fn report_progress(&self, lease: &Lease, done: u32, total: u32) {
        self.state
            .store
            .heartbeat(&lease.lease, Some(ProgressUpdate { done, total }), 600_000)
            .await
            .expect("heartbeat");
    }

    /// Ends a leased job FAILED for good with `reason`.
    async fn fail(&self, lease: &Lease, reason: &str) {
        self.state
            .store
            .fail(&lease.lease, &pipelet_store::Failure::plain(reason), false)
            .await
            .expect("fail the job");
    }
}

/// A string field of a JSON body, or a failure naming it.
pub fn str_field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {name:?} in {body}"))
}

/// A response's `content-type`, or "" without one.
pub fn content_type(response: &Response) -> String {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A 512x512 preview render of 17 frames stored at `blob`, as a worker reports it.
pub fn preview_result(blob: impl Into<String>, bytes: u64) -> JobResult {
    JobResult {
        blob: blob.into(),
        bytes,
        video: RenderedVideo {
            width: 512,
            height: 512,
            frames: 17,
            fps: 16,
            backend: "preview".into(),
            run_seconds: 1.0,
        },
    }
}

/// The secret of a new key `name` with `role`, made in the app's store.
pub async fn named_key(app: &TestApp, name: &str, role: pipelet_store::Role) -> String {
    let (_, secret) = app
        .state
        .store
        .create_key(pipelet_store::NewKey {
            name: name.into(),
            role,
            max_priority: 0,
            expires_at_ms: None,
        })
        .await
        .expect("create a key");
    secret
}

/// A server without workers whose jobs get one attempt (a failure is final).
pub async fn spawn_queue_only_one_attempt() -> TestApp {
    spawn_app_with(|c| {
        c.workers = 0;
        c.max_attempts = 1;
    })
    .await
}

/// Asserts the status and a JSON body, and returns the body.
pub async fn json_body(response: Response, want: StatusCode) -> Value {
    let status = response.status();
    let url = response.url().to_string();
    let content_type = content_type(&response);
    let text = response.text().await.expect("read the body");
    assert_eq!(status, want, "{url}: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "{url} answered {status} with content-type {content_type:?}: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: body is not JSON ({e}): {text}"))
}

/// Asserts an error status with a JSON body whose `detail` is a non-empty string and
/// whose `code` is in the error table with this status, and returns the body.
pub async fn expect_error(response: Response, want: StatusCode) -> Value {
    let body = json_body(response, want).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.trim().is_empty(),
        "a {want} body needs a non-empty detail: {body}"
    );
    let code = body["code"].as_str().unwrap_or_default();
    let known = pipelet_api::ErrorCode::from_code(code)
        .unwrap_or_else(|| panic!("a {want} body needs a known code: {body}"));
    assert_eq!(
        known.status(),
        want.as_u16(),
        "{code} has another status: {body}"
    );
    body
}

/// Asserts an error status and its `code`, and returns the body.
pub async fn expect_code(response: Response, want: StatusCode, code: &str) -> Value {
    let body = expect_error(response, want).await;
    assert_eq!(body["code"], code, "{body}");
    body
}

/// Asserts a 422 whose `detail` mentions every one of `words`; returns the detail.
pub async fn expect_invalid(response: Response, words: &[&str]) -> String {
    let body = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    let detail = str_field(&body, "detail").to_string();
    for word in words {
        assert!(
            detail.contains(word),
            "422 detail should mention {word:?}: {detail}"
        );
    }
    detail
}

/// Runs one step of an in-process preview worker for `pipeline` over the app's store and
/// blobs (as `serve`'s workers do), writing its scratch files under `scratch_dir`.
pub async fn step_preview_worker(
    app: &TestApp,
    pipeline: Pipeline,
    scratch_dir: std::path::PathBuf,
) -> StepOutcome {
    let source = Arc::new(QueueService::new(
        app.state.store.clone(),
        app.state.blobs.clone(),
        Duration::from_secs(30),
    ));
    let mut worker = Worker::new(
        source,
        Arc::new(PreviewRunner::new()),
        WorkerConfig {
            worker_id: "local:test/0".into(),
            pipelines: vec![pipeline],
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            progress_interval: Duration::from_millis(250),
            max_wait_for_switch: Duration::from_secs(120),
            poll_wait: Duration::from_secs(5),
            scratch_dir,
            delivery_timeout: Duration::from_secs(10),
            pipelined_delivery: false,
        },
    );
    let never = CancellationToken::new();
    worker.step(&never, &never).await.expect("the step runs")
}

/// Asserts a 200 HTML page; returns its `content-security-policy` and its text.
pub async fn expect_html(response: Response) -> (String, String) {
    assert_eq!(response.status(), StatusCode::OK, "{}", response.url());
    let content_type = content_type(&response);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let csp = response
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let html = response.text().await.expect("read the page");
    (csp, html)
}
