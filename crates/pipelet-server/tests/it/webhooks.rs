//! Webhook delivery against a real receiver on loopback (an axum server on port 0):
//! every event type in order with the exact body, retries with a stable `webhook-id`,
//! a 410 that stops, a receiver that is down and then up, and the signatures checked by
//! PyPI's `standardwebhooks` (an implementation independent of ours).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use pipelet_store::{ClaimRequest, WebhookEventRecord, WebhookState};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use uuid::Uuid;

/// One POST the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: Bytes,
    at: Instant,
}

impl Delivery {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the webhook body is JSON")
    }
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

#[derive(Default)]
struct Inbox {
    got: Vec<Delivery>,
    /// Statuses to answer, in order; 200 once empty.
    script: VecDeque<u16>,
}

/// A webhook receiver on 127.0.0.1.
struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Receiver::on(listener, script)
    }

    fn on(listener: TcpListener, script: &[u16]) -> Receiver {
        let addr = listener.local_addr().expect("receiver address");
        let inbox = Arc::new(Mutex::new(Inbox {
            got: Vec::new(),
            script: script.iter().copied().collect(),
        }));
        let state = inbox.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let inbox = state.clone();
                async move {
                    let headers = headers
                        .iter()
                        .map(|(k, v)| {
                            (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                        })
                        .collect();
                    let mut inbox = inbox.lock().expect("inbox");
                    inbox.got.push(Delivery {
                        headers,
                        body,
                        at: Instant::now(),
                    });
                    let status = inbox.script.pop_front().unwrap_or(200);
                    AxumStatus::from_u16(status).expect("a valid status")
                }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            inbox,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn all(&self) -> Vec<Delivery> {
        self.inbox.lock().expect("inbox").got.clone()
    }

    /// The deliveries for `job` (by `jobId`), in arrival order.
    fn of(&self, job: &str) -> Vec<Delivery> {
        self.all()
            .into_iter()
            .filter(|d| d.json()["jobId"] == job)
            .collect()
    }

    /// Waits until `job` got `n` deliveries; returns them.
    async fn wait_for(&self, job: &str, n: usize) -> Vec<Delivery> {
        let deadline = Instant::now() + JOB_TIMEOUT;
        loop {
            let got = self.of(job);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "job {job} got {} of {n} webhooks: {:?}",
                got.len(),
                got.iter().map(Delivery::json).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A server that may call loopback receivers, with fast retries.
async fn spawn(workers: u32) -> TestApp {
    spawn_app_with(|c| {
        c.workers = workers;
        c.webhook_allow_private = true;
        c.webhook_retry_base = Duration::from_millis(100);
        // A short lease so a lost worker's job is re-queued (`retried`) quickly.
        c.lease = Duration::from_secs(1);
        c.heartbeat = Duration::from_millis(250);
    })
    .await
}

/// Creates a t2v request with `?fal_webhook=url`, as fal-client's `webhook_url` does.
async fn create_with_webhook(app: &TestApp, key: &str, url: &str) -> Value {
    let response = app
        .client
        .post(app.url(&format!("/queue/{T2V}")))
        .query(&[("fal_webhook", url)])
        .bearer_auth(key)
        .json(&json!({"prompt": "a paper boat", "width": 512, "height": 512, "duration": 1}))
        .send()
        .await
        .expect("send create");
    json_body(response, reqwest::StatusCode::OK).await
}

fn job_id(created: &Value) -> Uuid {
    str_field(created, "request_id").parse().expect("a uuid")
}

async fn events_of(app: &TestApp, job: Uuid) -> Vec<WebhookEventRecord> {
    app.state
        .store
        .webhook_events_of(job)
        .await
        .expect("events")
}

/// Waits until `check` holds for the job's outbox; returns it.
async fn wait_outbox(
    app: &TestApp,
    job: Uuid,
    what: &str,
    check: impl Fn(&[WebhookEventRecord]) -> bool,
) -> Vec<WebhookEventRecord> {
    let deadline = Instant::now() + JOB_TIMEOUT;
    loop {
        let events = events_of(app, job).await;
        if check(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "{what}: {events:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the job's first event is in `state`; returns the outbox.
async fn wait_first_event(
    app: &TestApp,
    job: Uuid,
    what: &str,
    state: WebhookState,
) -> Vec<WebhookEventRecord> {
    wait_outbox(app, job, what, |events| {
        events.first().is_some_and(|e| e.state == state)
    })
    .await
}

/// The body every event has, from the outbox's snapshot of the job.
fn expected_base(record: &WebhookEventRecord, url: &str) -> serde_json::Map<String, Value> {
    let e = &record.event;
    let s = &e.snapshot;
    let Value::Object(map) = json!({
        "eventType": e.event_type.as_str(),
        "jobId": e.job_id.to_string(),
        "queueName": s.model_id,
        "workerName": s.worker_name,
        "leaseExpiry": s.lease_expiry_ms,
        "acquiredAt": s.acquired_at_ms,
        "updatedAt": s.updated_at_ms,
        "webhookUrl": url,
    }) else {
        unreachable!()
    };
    map
}

fn event_types(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| d.json()["eventType"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test]
async fn acquired_then_completed_with_the_exact_body_and_a_working_link() {
    let receiver = Receiver::start(&[]).await;
    let app = spawn(1).await;
    let key = app.client_key().await;
    let created = create_with_webhook(&app, &key, &receiver.url()).await;
    let id = job_id(&created);
    app.wait_until_status(&created, &key, "COMPLETED").await;
    let got = receiver.wait_for(&id.to_string(), 2).await;
    assert_eq!(event_types(&got), ["acquired", "completed"]);
    let outbox = wait_outbox(&app, id, "both delivered", |events| {
        events.len() == 2 && events.iter().all(|e| e.state == WebhookState::Delivered)
    })
    .await;
    let job = app.job(id).await;

    // acquired: the worker, its lease and when it took the job.
    let acquired = got[0].json();
    let want = Value::Object(expected_base(&outbox[0], &receiver.url()));
    assert_eq!(acquired, want);
    assert_eq!(acquired["queueName"], T2V);
    assert_eq!(acquired["jobId"], str_field(&created, "request_id"));
    assert!(
        acquired["workerName"]
            .as_str()
            .is_some_and(|w| w.starts_with("local:")),
        "{acquired}"
    );
    assert_eq!(acquired["acquiredAt"], json!(job.started_at_ms));
    let acquired_at = acquired["acquiredAt"].as_i64().expect("acquiredAt");
    assert!(acquired["leaseExpiry"].as_i64().expect("leaseExpiry") > acquired_at);
    assert!(acquired["updatedAt"].as_i64().expect("updatedAt") >= acquired_at);
    assert_eq!(got[0].header("webhook-id"), outbox[0].event.id);

    // completed: the link (never the video inline) and the result's metadata.
    let completed = got[1].json();
    let link = completed["video"]["data_url"]
        .as_str()
        .expect("video.data_url")
        .to_string();
    assert!(link.starts_with(&app.address), "{link}");
    let (result_video, mp4) = app
        .fetch_video(str_field(&created, "response_url"), &key)
        .await;
    let mut want = expected_base(&outbox[1], &receiver.url());
    want.insert(
        "video".into(),
        json!({
            "data_uri": link,
            "data_url": link,
            "url": link,
            "content_type": "video/mp4",
            "file_name": format!("{id}.mp4"),
            "file_size": mp4.len(),
            "width": result_video["width"],
            "height": result_video["height"],
            "fps": result_video["fps"],
            "num_frames": result_video["num_frames"],
            "duration": result_video["duration"],
        }),
    );
    assert_eq!(completed, Value::Object(want));
    assert!(completed["updatedAt"].as_i64() >= acquired["updatedAt"].as_i64());
    // The link downloads the same bytes, without a key.
    let downloaded = app.client.get(&link).send().await.expect("download");
    assert_eq!(downloaded.status(), reqwest::StatusCode::OK);
    assert_eq!(downloaded.bytes().await.expect("bytes").as_ref(), &mp4[..]);
    // Each event has its own stable id.
    assert_ne!(got[0].header("webhook-id"), got[1].header("webhook-id"));
}

#[tokio::test]
async fn cancelled_failed_and_retried_events_in_order() {
    let receiver = Receiver::start(&[]).await;
    let app = spawn(0).await;
    let key = app.client_key().await;
    let url = receiver.url();

    // cancelled: a queued job cancelled by its client.
    let cancelled = create_with_webhook(&app, &key, &url).await;
    let response = app.put(str_field(&cancelled, "cancel_url"), &key).await;
    assert!(
        response.status().is_success(),
        "cancel: {}",
        response.status()
    );

    // failed: a worker takes it and fails it for good.
    let failed = create_with_webhook(&app, &key, &url).await;
    let lease = app.claim(pipelet_api::Pipeline::ALL[0]).await;
    assert_eq!(
        lease.job.id,
        job_id(&failed),
        "the claim took the failed job"
    );
    app.fail(&lease, "the prompt was refused").await;

    // retried: a worker takes it and vanishes; the reaper re-queues it.
    let retried = create_with_webhook(&app, &key, &url).await;
    let lease = app
        .state
        .store
        .claim(&ClaimRequest {
            worker_id: "worker:lost".into(),
            pipelines: pipelet_api::Pipeline::ALL.to_vec(),
            loaded: None,
            lease_ms: 100,
            max_wait_for_switch_ms: 60_000,
        })
        .await
        .expect("claim")
        .expect("a job to claim");
    assert_eq!(lease.job.id, job_id(&retried));

    let got = receiver
        .wait_for(str_field(&cancelled, "request_id"), 1)
        .await;
    assert_eq!(event_types(&got), ["cancelled"]);
    let outbox = events_of(&app, job_id(&cancelled)).await;
    assert_eq!(
        got[0].json(),
        Value::Object(expected_base(&outbox[0], &url))
    );
    assert_eq!(got[0].json()["workerName"], Value::Null);

    let got = receiver.wait_for(str_field(&failed, "request_id"), 2).await;
    assert_eq!(event_types(&got), ["acquired", "failed"]);
    let outbox = events_of(&app, job_id(&failed)).await;
    let job = app
        .state
        .store
        .get_job(job_id(&failed))
        .await
        .expect("read")
        .expect("job");
    let mut want = expected_base(&outbox[1], &url);
    want.insert("error".into(), json!(job.error));
    assert_eq!(got[1].json(), Value::Object(want));
    assert_eq!(got[1].json()["workerName"], "worker:api-test");
    assert!(
        got[1].json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("the prompt was refused")),
        "{}",
        got[1].json()
    );

    let got = receiver
        .wait_for(str_field(&retried, "request_id"), 2)
        .await;
    assert_eq!(event_types(&got), ["acquired", "retried"]);
    let outbox = events_of(&app, job_id(&retried)).await;
    assert_eq!(
        got[0].json(),
        Value::Object(expected_base(&outbox[0], &url))
    );
    assert_eq!(
        got[1].json(),
        Value::Object(expected_base(&outbox[1], &url))
    );
    assert_eq!(got[0].json()["workerName"], "worker:lost");
}

/// Creates a queued request with a webhook and cancels it: exactly one event.
async fn one_event(app: &TestApp, url: &str) -> Uuid {
    let key = app.client_key().await;
    let created = create_with_webhook(app, &key, url).await;
    let response = app.put(str_field(&created, "cancel_url"), &key).await;
    assert!(
        response.status().is_success(),
        "cancel: {}",
        response.status()
    );
    job_id(&created)
}

#[tokio::test]
async fn failures_are_retried_with_the_same_id_until_a_2xx() {
    let receiver = Receiver::start(&[500, 500, 200]).await;
    let app = spawn(0).await;
    let job = one_event(&app, &receiver.url()).await;
    let got = receiver.wait_for(&job.to_string(), 3).await;
    let ids: Vec<&str> = got.iter().map(|d| d.header("webhook-id")).collect();
    assert_eq!(ids, [ids[0]; 3], "one event keeps its webhook-id");
    assert!(ids[0].starts_with("msg_"), "{ids:?}");
    assert!(
        got.iter().all(|d| d.body == got[0].body),
        "the same body each try"
    );
    // Backoff: about 100 ms, then about 300 ms (±20 %).
    let first = got[1].at - got[0].at;
    let second = got[2].at - got[1].at;
    assert!(first >= Duration::from_millis(75), "{first:?}");
    assert!(second >= Duration::from_millis(230), "{second:?}");
    let outbox = wait_first_event(
        &app,
        job,
        "delivered on the third try",
        WebhookState::Delivered,
    )
    .await;
    assert_eq!(outbox[0].event.attempts, 3);
    assert_eq!(outbox[0].last_status, Some(200));
    assert_eq!(outbox[0].next_attempt_at_ms, None);
    let metrics = app
        .state
        .metrics
        .render(&*app.state.store)
        .await
        .expect("metrics");
    assert!(
        metrics.contains(r#"pipelet_webhook_deliveries_total{outcome="retry"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"pipelet_webhook_deliveries_total{outcome="delivered"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("pipelet_webhooks_pending 0"), "{metrics}");
}

#[tokio::test]
async fn a_410_stops_the_deliveries() {
    let receiver = Receiver::start(&[410]).await;
    let app = spawn(0).await;
    let job = one_event(&app, &receiver.url()).await;
    let outbox = wait_first_event(&app, job, "given up", WebhookState::GaveUp).await;
    assert_eq!(outbox[0].last_status, Some(410));
    assert_eq!(outbox[0].next_attempt_at_ms, None);
    assert_eq!(receiver.of(&job.to_string()).len(), 1);
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_event_once_it_is_up() {
    // A port nothing listens on (for now).
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("address")
    };
    let url = format!("http://{addr}/hook");
    let app = spawn(0).await;
    let job = one_event(&app, &url).await;
    let outbox = wait_outbox(&app, job, "two failed tries", |events| {
        events.first().is_some_and(|e| e.event.attempts >= 2)
    })
    .await;
    assert_eq!(outbox[0].state, WebhookState::Pending);
    assert_eq!(outbox[0].last_status, None);
    assert!(outbox[0].last_error.is_some(), "{outbox:#?}");
    assert!(outbox[0].next_attempt_at_ms.is_some(), "{outbox:#?}");

    let listener = TcpListener::bind(addr).await.expect("bind the same port");
    let receiver = Receiver::on(listener, &[]);
    let got = receiver.wait_for(&job.to_string(), 1).await;
    assert_eq!(event_types(&got), ["cancelled"]);
    assert_eq!(got[0].header("webhook-id"), outbox[0].event.id);
    wait_first_event(&app, job, "delivered", WebhookState::Delivered).await;
}

/// Runs `tests/verify_webhook.py` on `cases` with the Python that has `standardwebhooks`.
fn verify_with_standardwebhooks(python: &str, cases: Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cases.json");
    std::fs::write(&path, json!({"cases": cases}).to_string()).expect("write cases");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_webhook.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(&path)
        .output()
        .expect("run verify_webhook.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "standardwebhooks disagrees:\n{text}"
    );
}

fn case(secret: &str, delivery: &Delivery, body: &str, valid: bool) -> Value {
    json!({
        "secret": secret,
        "body": body,
        "headers": {
            "webhook-id": delivery.header("webhook-id"),
            "webhook-timestamp": delivery.header("webhook-timestamp"),
            "webhook-signature": delivery.header("webhook-signature"),
        },
        "valid": valid,
    })
}

#[tokio::test]
async fn signatures_verify_with_the_standardwebhooks_package() {
    let Ok(python) = std::env::var("PIPELET_WEBHOOK_VERIFY_PYTHON") else {
        eprintln!(
            "skipped: PIPELET_WEBHOOK_VERIFY_PYTHON is not set (source \
             scripts/webhook-verify-env.sh to install PyPI's standardwebhooks)"
        );
        return;
    };
    let receiver = Receiver::start(&[]).await;
    let app = spawn(0).await;
    let key = app.client_key().await;
    let secret_of = |body: Value| str_field(&body, "secret").to_string();
    let old = secret_of(
        json_body(
            app.get(&app.url("/webhooks/secret"), &key).await,
            reqwest::StatusCode::OK,
        )
        .await,
    );
    let created = create_with_webhook(&app, &key, &receiver.url()).await;
    app.put(str_field(&created, "cancel_url"), &key).await;
    let got = receiver
        .wait_for(str_field(&created, "request_id"), 1)
        .await;
    let body = String::from_utf8(got[0].body.to_vec()).expect("utf-8 body");
    let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let tampered = body.replace("cancelled", "completed");
    assert_ne!(tampered, body);
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 1);
    let mut cases = vec![
        case(&old, &got[0], &body, true),
        case(&old, &got[0], &tampered, false),
        case(other, &got[0], &body, false),
    ];

    // After a rotation both secrets sign (for 24 h).
    let response = app
        .client
        .post(app.url("/webhooks/secret/rotate"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("rotate");
    let new = secret_of(json_body(response, reqwest::StatusCode::OK).await);
    assert_ne!(new, old);
    let created = create_with_webhook(&app, &key, &receiver.url()).await;
    app.put(str_field(&created, "cancel_url"), &key).await;
    let got = receiver
        .wait_for(str_field(&created, "request_id"), 1)
        .await;
    let body = String::from_utf8(got[0].body.to_vec()).expect("utf-8 body");
    assert_eq!(got[0].header("webhook-signature").split(' ').count(), 2);
    cases.push(case(&new, &got[0], &body, true));
    cases.push(case(&old, &got[0], &body, true));
    cases.push(case(other, &got[0], &body, false));

    // Another key's secret does not verify this key's events.
    let stranger = app.client_key().await;
    let theirs = secret_of(
        json_body(
            app.get(&app.url("/webhooks/secret"), &stranger).await,
            reqwest::StatusCode::OK,
        )
        .await,
    );
    cases.push(case(&theirs, &got[0], &body, false));
    verify_with_standardwebhooks(&python, Value::Array(cases));
}

/// A receiver whose `/hook` answers `answer`, and which counts hits on `/elsewhere`.
async fn odd_receiver(
    answer: fn() -> axum::response::Response,
) -> (String, Arc<Mutex<(u32, u32)>>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let hits = Arc::new(Mutex::new((0u32, 0u32)));
    let (h1, h2) = (hits.clone(), hits.clone());
    let app = axum::Router::new()
        .route(
            "/hook",
            post(move || {
                let hits = h1.clone();
                async move {
                    hits.lock().expect("hits").0 += 1;
                    answer()
                }
            }),
        )
        .route(
            "/elsewhere",
            post(move || {
                let hits = h2.clone();
                async move {
                    hits.lock().expect("hits").1 += 1;
                    AxumStatus::OK
                }
            }),
        );
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), hits, server)
}

#[tokio::test]
async fn redirects_are_not_followed_and_count_as_failures() {
    use axum::response::IntoResponse;
    let (url, hits, server) = odd_receiver(|| {
        (
            AxumStatus::TEMPORARY_REDIRECT,
            [(axum::http::header::LOCATION, "/elsewhere")],
        )
            .into_response()
    })
    .await;
    let app = spawn(0).await;
    let job = one_event(&app, &url).await;
    let outbox = wait_outbox(&app, job, "a failed try", |events| {
        events.first().is_some_and(|e| e.event.attempts >= 1)
    })
    .await;
    assert_eq!(outbox[0].state, WebhookState::Pending);
    assert_eq!(outbox[0].last_status, Some(307));
    assert!(
        outbox[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("redirect")),
        "{outbox:#?}"
    );
    let (hook, elsewhere) = *hits.lock().expect("hits");
    assert!(hook >= 1);
    assert_eq!(elsewhere, 0, "the redirect was followed");
    server.abort();
}

#[tokio::test]
async fn an_endless_answer_is_not_read_whole() {
    use axum::response::IntoResponse;
    // An endless answer: read whole, it would run into the 10 s timeout (a retry).
    let (url, _hits, server) = odd_receiver(|| {
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        (AxumStatus::OK, axum::body::Body::from_stream(stream)).into_response()
    })
    .await;
    let app = spawn(0).await;
    let job = one_event(&app, &url).await;
    let outbox = wait_first_event(&app, job, "delivered", WebhookState::Delivered).await;
    assert_eq!(outbox[0].last_status, Some(200));
    assert_eq!(outbox[0].event.attempts, 1);
    server.abort();
}
