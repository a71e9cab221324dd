//! Shared helpers of the HTTP API tests: a real [`Application`] on a free loopback port
//! with its data in a temporary directory, a reqwest client, and small helpers to make
//! keys, send the four queue calls and poll a status with a deadline.
//!
//! Where a test needs a job in a state no HTTP call can put it in on demand (running with
//! a known progress, failed with a known reason), it plays the worker through the store,
//! exactly as the in-process workers do; everything a client sees still goes over HTTP.

#![allow(dead_code)]

mod fake_worker;
pub mod images;
pub mod media;

use std::time::{Duration, Instant};

use pipelet_server::state::AppState;
use pipelet_server::{Application, Config};
use pipelet_store::{NewKey, Role};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

/// A running server. Dropping it asks the server to stop.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub address: String,
    pub port: u16,
    /// The admin key the first start of the data dir created.
    pub admin_key: String,
    pub client: Client,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<anyhow::Result<()>>,
    _dir: TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Jobs still rendering are not worth waiting for once the test is over.
        self.server.abort();
    }
}

/// The default configuration: one in-process preview worker.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A pure API server (`workers: 0`): every job stays queued until a test moves it.
pub async fn spawn_queue_only() -> TestApp {
    spawn_app_with(|c| c.workers = 0).await
}

/// Builds the real application from [`Config::for_data_dir`] (port 0, fresh temp dir),
/// changed by `tweak`, and serves it in a task until the [`TestApp`] is dropped.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let mut config = Config::for_data_dir(dir.path().join("data"));
    tweak(&mut config);
    let app = Application::build(config)
        .await
        .expect("the application builds");
    let port = app.port();
    assert_ne!(port, 0, "the listener has a real port");
    let admin_key = app
        .admin_key()
        .expect("the first start of a data dir creates an admin key")
        .to_string();
    let state = app.state().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build the HTTP client");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        admin_key,
        client,
        state,
        shutdown: Some(tx),
        server,
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A new key with `role` and the given priority cap.
    pub async fn key(&self, role: Role, max_priority: i64) -> String {
        let (_, secret) = self
            .state
            .store
            .create_key(NewKey {
                name: format!("test-{role}-{max_priority}"),
                role,
                max_priority,
            })
            .await
            .expect("create a key");
        secret
    }

    /// A client key that may add up to 100 to its requests' priority.
    pub async fn client_key(&self) -> String {
        self.key(Role::Client, 100).await
    }

    /// `POST /queue/{model}` with a JSON body.
    pub async fn post_create(&self, key: &str, model: &str, body: &Value) -> Response {
        self.client
            .post(self.url(&format!("/queue/{model}")))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("send create")
    }

    /// Creates a request and asserts a 200; returns the create body.
    pub async fn create(&self, key: &str, model: &str, body: &Value) -> Value {
        let response = self.post_create(key, model, body).await;
        let status = response.status();
        let text = response.text().await.expect("read the create body");
        assert_eq!(status, StatusCode::OK, "create {model} {body}: {text}");
        serde_json::from_str(&text).expect("create body is JSON")
    }

    /// Creates a t2v request with a small size and returns the create body.
    pub async fn create_t2v(&self, key: &str, model: &str, priority: i64) -> Value {
        let body = json!({"prompt": "a paper boat", "width": 512, "height": 512,
                          "duration": 1, "priority": priority});
        self.create(key, model, &body).await
    }

    /// Creates an i2v request with a tiny PNG and returns the create body.
    pub async fn create_i2v(&self, key: &str, model: &str, priority: i64) -> Value {
        let body = json!({"prompt": "a slow zoom", "data_uri": images::b64(&images::png(32, 24)),
                          "duration": 1, "priority": priority});
        self.create(key, model, &body).await
    }

    pub async fn get(&self, url: &str, key: &str) -> Response {
        self.client
            .get(url)
            .bearer_auth(key)
            .send()
            .await
            .expect("send GET")
    }

    pub async fn put(&self, url: &str, key: &str) -> Response {
        self.client
            .put(url)
            .bearer_auth(key)
            .send()
            .await
            .expect("send PUT")
    }

    /// GETs a status URL and asserts a 200 JSON body.
    pub async fn status(&self, status_url: &str, key: &str) -> Value {
        json_body(self.get(status_url, key).await, StatusCode::OK).await
    }

    /// The `queue_position` of a queued request, read through its status URL.
    pub async fn position(&self, created: &Value, key: &str) -> u64 {
        let status = self.status(str_field(created, "status_url"), key).await;
        assert_eq!(status["status"], "IN_QUEUE", "{status}");
        status["queue_position"]
            .as_u64()
            .unwrap_or_else(|| panic!("no queue_position in {status}"))
    }

    /// Polls `status_url` every 25 ms until it says `want`; returns every status body
    /// seen, the last one saying `want`. Fails on another terminal status or after
    /// `timeout`.
    pub async fn wait_for_status(
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

    /// Fetches a COMPLETED result: its `video` object (with `data_uri` removed) and the
    /// MP4 bytes the base64 decodes to.
    pub async fn fetch_video(&self, response_url: &str, key: &str) -> (Value, Vec<u8>) {
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
}

/// A string field of a JSON body, or a failure naming it.
pub fn str_field<'a>(body: &'a Value, name: &str) -> &'a str {
    body[name]
        .as_str()
        .unwrap_or_else(|| panic!("no string field {name:?} in {body}"))
}

/// Asserts the status and a JSON body, and returns the body.
pub async fn json_body(response: Response, want: StatusCode) -> Value {
    let status = response.status();
    let url = response.url().to_string();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.expect("read the body");
    assert_eq!(status, want, "{url}: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "{url} answered {status} with content-type {content_type:?}: {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{url}: body is not JSON ({e}): {text}"))
}

/// Asserts an error status with a JSON body whose `detail` is a non-empty string, and
/// returns the body.
pub async fn expect_error(response: Response, want: StatusCode) -> Value {
    let body = json_body(response, want).await;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.trim().is_empty(),
        "a {want} body needs a non-empty detail: {body}"
    );
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
