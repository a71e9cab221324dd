//! Webhook delivery latency and signed-link download throughput.
//!
//! A real `pipelet serve --workers 0 --webhook-allow-private` (SQLite) and a local axum
//! receiver on 127.0.0.1 that records when each `(jobId, eventType)` arrived. The bench
//! creates [`Plan::jobs`] requests with `?fal_webhook=` pointing at the receiver and
//! completes them as fake workers through the worker API (claim, upload a small MP4-ish
//! body, complete). Per job: the `completed` webhook's arrival minus the moment the
//! complete call returned (one clock: this process). Deliveries/s: every event received
//! divided by the time from the first complete to the last delivery.
//!
//! Then `download`: one job whose result is [`DOWNLOAD_BYTES`]; it is fetched through
//! its signed `video.url` [`Plan::downloads`] times, and its blob file read directly
//! from the data dir as many times, in the same run; the ratio is link / direct.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::load::{Client, MODEL};
use crate::server::{Server, block_on_phase, create_key};
use crate::stats::{Latencies, Summary};

/// Fake workers completing jobs at once.
pub const WORKERS: usize = 4;
/// Size of the download part's result.
pub const DOWNLOAD_BYTES: usize = 20 * 1024 * 1024;
const CREATE_BODY: &str =
    r#"{"prompt":"webhook probe: a lighthouse at dusk","width":832,"height":480,"duration":5}"#;
/// Longest the whole phase may take before it gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest to wait for the last webhook after the last complete.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Plan {
    pub jobs: usize,
    pub downloads: usize,
    pub rust_log: Option<String>,
}

pub struct Report {
    pub jobs: usize,
    /// completed-webhook arrival − complete returned.
    pub latency: Summary,
    /// Events received (acquired + completed).
    pub events: usize,
    /// First complete → last delivery.
    pub delivery_wall: Duration,
    pub downloads: usize,
    pub link_mb_s: f64,
    pub direct_mb_s: f64,
}

impl Report {
    pub fn deliveries_per_s(&self) -> f64 {
        self.events as f64 / self.delivery_wall.as_secs_f64().max(1e-9)
    }
    pub fn ratio(&self) -> f64 {
        self.link_mb_s / self.direct_mb_s.max(1e-9)
    }
}

/// Arrivals: (jobId, eventType) → when.
#[derive(Default)]
struct Received {
    at: Mutex<HashMap<(String, String), Instant>>,
    notify: tokio::sync::Notify,
}

async fn hook(
    axum::extract::State(received): axum::extract::State<Arc<Received>>,
    body: Bytes,
) -> StatusCode {
    let now = Instant::now();
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let (Some(job), Some(event)) = (v["jobId"].as_str(), v["eventType"].as_str()) else {
        return StatusCode::BAD_REQUEST;
    };
    received
        .at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry((job.to_string(), event.to_string()))
        .or_insert(now);
    received.notify.notify_waiters();
    StatusCode::OK
}

#[derive(Deserialize)]
struct Claimed {
    job_id: String,
    lease_token: i64,
}

/// Claims one job as worker `worker` (waiting up to 1 s); `None` when the queue is empty.
async fn claim(client: &mut Client, worker: &str) -> anyhow::Result<Option<Claimed>> {
    let body = json!({"worker_id": worker, "pipelines": ["t2v"], "wait_ms": 1000});
    Ok(client
        .claim(Bytes::from(body.to_string()))
        .await?
        .map(|(job, _)| job))
}

/// Uploads `result` and completes; returns when the complete call returned.
async fn finish(client: &mut Client, job: &Claimed, result: Bytes) -> anyhow::Result<Instant> {
    let body = json!({"lease_token": job.lease_token, "width": 832, "height": 480, "frames": 81,
                      "fps": 16, "backend": "pipelet-bench", "run_seconds": 0.01});
    client
        .finish(&job.job_id, job.lease_token, result, &body)
        .await
}

/// A stand-in MP4: an `ftyp` box, then zeros up to `len` bytes.
fn mp4ish(len: usize) -> Bytes {
    let mut v = b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom".to_vec();
    v.resize(len.max(v.len()), 0);
    Bytes::from(v)
}

pub fn run(bin: &Path, tmp: &Path, plan: &Plan) -> anyhow::Result<Report> {
    let dir = tmp.join("webhooks");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let data_dir = dir.join("data");
    let server = Server::start_extra(
        bin,
        &data_dir,
        plan.rust_log.as_deref(),
        0,
        false,
        None,
        &["--webhook-allow-private"],
    )?;
    let worker_key = create_key(bin, &data_dir, "worker", "webhooks-bench", None)?;
    let result = block_on_phase(
        "webhooks",
        PHASE_TIMEOUT,
        measure(&server, &worker_key, &data_dir, plan),
    );
    server.finish(result)
}

async fn measure(
    server: &Server,
    worker_key: &str,
    data_dir: &Path,
    plan: &Plan,
) -> anyhow::Result<Report> {
    let addr = server.addr;
    let received = Arc::new(Received::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the webhook receiver")?;
    let hook_addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(received.clone());
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut admin = Client::connect(addr, &server.admin_key).await?;
    let query = format!("?fal_webhook=http://{hook_addr}/hook");
    eprintln!(
        "webhooks: creating {} jobs with a webhook to {hook_addr}…",
        plan.jobs
    );
    for _ in 0..plan.jobs {
        admin.create(&query, CREATE_BODY).await?;
    }
    eprintln!("webhooks: completing them with {WORKERS} fake workers…");
    let mut workers = JoinSet::new();
    for n in 0..WORKERS {
        let key = worker_key.to_string();
        workers.spawn(async move {
            let mut client = Client::connect(addr, &key).await?;
            let name = format!("webhooks-{n}");
            let mut completed = Vec::new();
            while let Some(job) = claim(&mut client, &name).await? {
                let at = finish(&mut client, &job, mp4ish(4096)).await?;
                completed.push((job.job_id, at));
            }
            anyhow::Ok(completed)
        });
    }
    let mut completed: Vec<(String, Instant)> = Vec::with_capacity(plan.jobs);
    while let Some(r) = workers.join_next().await {
        completed.extend(r.context("a fake worker panicked")??);
    }
    if completed.len() != plan.jobs {
        bail!("completed {} jobs, created {}", completed.len(), plan.jobs);
    }
    let want_events = 2 * plan.jobs;
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let notified = received.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let have = received.at.lock().unwrap_or_else(|e| e.into_inner()).len();
        if have >= want_events {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            bail!(
                "only {have} of {want_events} webhook events arrived within {DELIVERY_TIMEOUT:?}"
            );
        }
    }
    let at = received
        .at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut latencies = Latencies::with_capacity(plan.jobs);
    for (id, done) in &completed {
        let got = at
            .get(&(id.clone(), "completed".to_string()))
            .with_context(|| format!("no completed webhook for {id}"))?;
        latencies.record(got.saturating_duration_since(*done));
    }
    let first_complete = completed
        .iter()
        .map(|(_, t)| *t)
        .min()
        .context("no completes")?;
    let last_delivery = at.values().copied().max().context("no deliveries")?;
    let events = at.len();
    receiver.abort();

    let (link_mb_s, direct_mb_s) = download(server, worker_key, data_dir, plan).await?;
    Ok(Report {
        jobs: plan.jobs,
        latency: latencies.summary(),
        events,
        delivery_wall: last_delivery.saturating_duration_since(first_complete),
        downloads: plan.downloads,
        link_mb_s,
        direct_mb_s,
    })
}

/// The one `.mp4` under `<data-dir>/blobs/results/<id>/`.
fn find_blob(data_dir: &Path, id: &str) -> anyhow::Result<PathBuf> {
    let dir = data_dir.join("blobs").join("results").join(id);
    let entries =
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "mp4") {
            return Ok(path);
        }
    }
    bail!("no .mp4 in {}", dir.display())
}

/// MB/s through the signed link and reading the blob file, `plan.downloads` times each.
async fn download(
    server: &Server,
    worker_key: &str,
    data_dir: &Path,
    plan: &Plan,
) -> anyhow::Result<(f64, f64)> {
    let addr = server.addr;
    let mut admin = Client::connect(addr, &server.admin_key).await?;
    let id = admin.create("", CREATE_BODY).await?;
    let mut worker = Client::connect(addr, worker_key).await?;
    let job = loop {
        if let Some(job) = claim(&mut worker, "webhooks-download").await? {
            break job;
        }
    };
    if job.job_id != id {
        bail!("claimed {} instead of {id}", job.job_id);
    }
    finish(&mut worker, &job, mp4ish(DOWNLOAD_BYTES)).await?;
    let (status, reply) = admin
        .send(Method::GET, &format!("/queue/{MODEL}/requests/{id}"), None)
        .await?;
    if status != StatusCode::OK {
        bail!(
            "result answered {status}: {}",
            String::from_utf8_lossy(&reply)
        );
    }
    let result: Value = serde_json::from_slice(&reply).context("bad result answer")?;
    let url = result["video"]["url"]
        .as_str()
        .context("the result has no video.url")?;
    // Same server: keep the path and query, drop the scheme and host.
    let path = url
        .find("/files/")
        .map(|i| &url[i..])
        .with_context(|| format!("video.url {url:?} is not a /files/ link"))?
        .to_string();
    eprintln!(
        "download: {} MB, {} times via the link and from the blob file…",
        DOWNLOAD_BYTES / (1024 * 1024),
        plan.downloads
    );
    // The link needs no key: an empty bearer token.
    let mut anonymous = Client::connect(addr, "").await?;
    let mb = (DOWNLOAD_BYTES * plan.downloads) as f64 / 1e6;
    let started = Instant::now();
    for _ in 0..plan.downloads {
        let (status, body) = anonymous.send(Method::GET, &path, None).await?;
        if status != StatusCode::OK || body.len() != DOWNLOAD_BYTES {
            bail!("GET {path} answered {status} with {} bytes", body.len());
        }
    }
    let link = mb / started.elapsed().as_secs_f64();
    let blob = find_blob(data_dir, &id)?;
    let started = Instant::now();
    for _ in 0..plan.downloads {
        let bytes = tokio::fs::read(&blob)
            .await
            .with_context(|| format!("cannot read {}", blob.display()))?;
        if bytes.len() != DOWNLOAD_BYTES {
            bail!("{} has {} bytes", blob.display(), bytes.len());
        }
    }
    let direct = mb / started.elapsed().as_secs_f64();
    Ok((link, direct))
}
