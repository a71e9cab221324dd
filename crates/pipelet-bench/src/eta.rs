//! The queue-time estimate (`estimated_start_seconds`) against the real start times.
//!
//! A real `pipelet serve --workers 0` and two workers played by this process through the
//! worker API (one connection each, `backend` left out, i.e. Wan's task count): each
//! claims, "renders" for a run time it draws itself, reporting progress after each of its
//! 6 tasks (4 steps + decode + encode) as a Wan worker does, uploads a stand-in result
//! and completes. Run times are the contract's typical times scaled down by
//! [`TIME_SCALE`] (90 s at 480p → 0.45 s, 180 s at 720p → 0.9 s), each times a uniform
//! draw in [0.75, 1.25]; 70 % of the requests are 480p, 30 % 720p.
//!
//! After [`WARMUP_JOBS`] unrecorded jobs (so the server has measured run times), the
//! requests arrive as a Poisson process at [`LOAD`] times what the two workers can take,
//! so a queue builds up and drains. For each request the bench polls its status right
//! after the create answered and keeps `estimated_start_seconds` if it is still
//! `IN_QUEUE`; the real wait is from that poll's answer to the moment a worker's claim
//! answer for it arrived (one monotonic clock, this process). The error is
//! `|estimate − real|`, in seconds and relative to the real wait.
//!
//! Deterministic draws (a fixed-seed xorshift), so runs differ only by timing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::load::Client;
use crate::server::{Server, block_on_phase, create_key};
use crate::stats::{Spread, spread};

/// Seconds of the bench per second of the contract's typical run times.
pub const TIME_SCALE: f64 = 0.005;
/// Arrival rate as a multiple of the workers' capacity.
pub const LOAD: f64 = 1.25;
/// Jobs run before the measured ones, one at a time, not recorded.
pub const WARMUP_JOBS: usize = 4;
/// Workers played by the bench.
pub const WORKERS: usize = 2;
/// Progress tasks per job, as a Wan worker counts them for 4 steps.
const TASKS: u32 = 6;
const SHARE_720P: f64 = 0.3;
const BODY_480P: &str =
    r#"{"prompt":"eta probe: a lighthouse at dusk","width":832,"height":480,"duration":5}"#;
const BODY_720P: &str =
    r#"{"prompt":"eta probe: a lighthouse at dusk","width":1280,"height":720,"duration":5}"#;
const RESULT_BODY: &[u8] = b"pipelet-bench: a stand-in for an mp4";
/// Longest the whole phase may take before it gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Plan {
    pub jobs: usize,
    pub rust_log: Option<String>,
}

/// One measured request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// `estimated_start_seconds` at the first poll (`None`: it was `null`).
    pub estimate: Option<f64>,
    /// Seconds from that poll's answer to the claim answer.
    pub real: f64,
    pub position: u64,
}

pub struct Report {
    pub jobs: usize,
    /// Requests a worker had already started by their first poll (no estimate).
    pub started_before_poll: usize,
    /// Requests whose estimate was `null`.
    pub null_estimates: usize,
    pub samples: Vec<Sample>,
    pub mean_run_s: f64,
    pub elapsed: Duration,
}

/// A fixed-seed xorshift64*: the same draws on every run.
struct Draws(u64);

impl Draws {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn typical_seconds(height: u64) -> f64 {
    if height >= 720 { 180.0 } else { 90.0 }
}

#[derive(Deserialize)]
struct Claimed {
    job_id: String,
    lease_token: i64,
    spec: ClaimedSpec,
}

#[derive(Deserialize)]
struct ClaimedSpec {
    width: u64,
    height: u64,
}

/// Claim answers seen: job id → when.
type Starts = Arc<Mutex<HashMap<String, Instant>>>;

/// One played worker: claims until `stop`, running each job for its drawn time.
async fn worker(
    addr: SocketAddr,
    key: String,
    n: usize,
    starts: Starts,
    done: Arc<tokio::sync::Notify>,
    finished: Arc<std::sync::atomic::AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut client = Client::connect(addr, &key).await?;
    let mut draws = Draws(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
    let claim = Bytes::from(
        json!({"worker_id": format!("eta-{n}"), "pipelines": ["t2v"], "wait_ms": 200}).to_string(),
    );
    while !stop.is_cancelled() {
        let Some((job, claimed_at)) = client.claim::<Claimed>(claim.clone()).await? else {
            continue;
        };
        starts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job.job_id.clone(), claimed_at);
        let side = job.spec.width.min(job.spec.height);
        let run = typical_seconds(side) * TIME_SCALE * (0.75 + 0.5 * draws.next_f64());
        let (id, token) = (&job.job_id, job.lease_token);
        for done_tasks in 1..=TASKS {
            tokio::time::sleep(Duration::from_secs_f64(run / f64::from(TASKS))).await;
            let heartbeat =
                json!({"lease_token": token, "progress": {"done": done_tasks, "total": TASKS}});
            client
                .expect(
                    Method::POST,
                    &format!("/worker/v1/jobs/{id}/heartbeat"),
                    Some(Bytes::from(heartbeat.to_string())),
                    StatusCode::OK,
                )
                .await?;
        }
        let complete = json!({"lease_token": token, "width": job.spec.width,
            "height": job.spec.height, "frames": 81, "fps": 16, "backend": "pipelet-bench",
            "run_seconds": run});
        client
            .finish(id, token, Bytes::from_static(RESULT_BODY), &complete)
            .await?;
        finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        done.notify_waiters();
    }
    Ok(())
}

async fn wait_finished(
    finished: &std::sync::atomic::AtomicUsize,
    done: &tokio::sync::Notify,
    want: usize,
) {
    loop {
        let notified = done.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if finished.load(std::sync::atomic::Ordering::SeqCst) >= want {
            return;
        }
        notified.await;
    }
}

pub fn run(bin: &Path, tmp: &Path, plan: &Plan) -> anyhow::Result<Report> {
    let dir = tmp.join("eta");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let data_dir = dir.join("data");
    let server = Server::start_with(bin, &data_dir, plan.rust_log.as_deref(), 0, false, None)?;
    let worker_key = create_key(bin, &data_dir, "worker", "eta-bench", None)?;
    let result = block_on_phase(
        "eta",
        PHASE_TIMEOUT,
        measure(server.addr, &server.admin_key, &worker_key, plan),
    );
    server.finish(result)
}

async fn measure(
    addr: SocketAddr,
    admin_key: &str,
    worker_key: &str,
    plan: &Plan,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let starts: Starts = Arc::default();
    let done = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    let mut workers = JoinSet::new();
    for n in 0..WORKERS {
        workers.spawn(worker(
            addr,
            worker_key.to_string(),
            n,
            starts.clone(),
            done.clone(),
            finished.clone(),
            stop.clone(),
        ));
    }
    let mut client = Client::connect(addr, admin_key).await?;
    let mut draws = Draws(0x2545_F491_4F6C_DD1D);
    let body = |draws: &mut Draws| {
        if draws.next_f64() < SHARE_720P {
            BODY_720P
        } else {
            BODY_480P
        }
    };
    eprintln!(
        "eta: {WARMUP_JOBS} warm-up jobs, then {} requests…",
        plan.jobs
    );
    for i in 0..WARMUP_JOBS {
        client.create("", body(&mut draws)).await?;
        wait_finished(&finished, &done, i + 1).await;
    }

    let mean_run = TIME_SCALE * ((1.0 - SHARE_720P) * 90.0 + SHARE_720P * 180.0);
    let mean_gap = mean_run / WORKERS as f64 / LOAD;
    let mut polls: Vec<(String, Option<Option<f64>>, u64, Instant)> = Vec::new();
    let mut next = tokio::time::Instant::now();
    for _ in 0..plan.jobs {
        tokio::time::sleep_until(next).await;
        // Exponential gaps: a Poisson process.
        next += Duration::from_secs_f64(-mean_gap * (1.0 - draws.next_f64()).ln());
        let id = client.create("", body(&mut draws)).await?;
        let (status, at) = client.status::<Value>(&id).await?;
        let estimate = match status["status"].as_str() {
            Some("IN_QUEUE") => match status.get("estimated_start_seconds") {
                Some(v) if v.is_null() => Some(None),
                Some(v) => Some(Some(v.as_f64().context("estimated_start_seconds")?)),
                None => bail!("an IN_QUEUE status without estimated_start_seconds: {status}"),
            },
            _ => None,
        };
        let position = status["queue_position"].as_u64().unwrap_or(0);
        polls.push((id, estimate, position, at));
    }
    wait_finished(&finished, &done, WARMUP_JOBS + plan.jobs).await;
    stop.cancel();
    while let Some(joined) = workers.join_next().await {
        joined.context("a worker task panicked")??;
    }

    let starts = starts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut report = Report {
        jobs: plan.jobs,
        started_before_poll: 0,
        null_estimates: 0,
        samples: Vec::new(),
        mean_run_s: mean_run,
        elapsed: started.elapsed(),
    };
    for (id, estimate, position, polled_at) in polls {
        let claimed = *starts
            .get(&id)
            .with_context(|| format!("request {id} was never claimed"))?;
        match estimate {
            None => report.started_before_poll += 1,
            Some(None) => report.null_estimates += 1,
            Some(Some(estimate)) => report.samples.push(Sample {
                estimate: Some(estimate),
                real: claimed.saturating_duration_since(polled_at).as_secs_f64(),
                position,
            }),
        }
    }
    Ok(report)
}

/// The figures: absolute errors (s), and relative ones.
pub struct Errors {
    pub abs: Spread,
    pub mae: f64,
    pub bias: f64,
    /// |error| / real wait, for waits of at least one mean run time.
    pub rel: Spread,
    /// Σ|error| / Σ real wait.
    pub weighted_rel: f64,
    pub mean_real: f64,
}

pub fn errors(report: &Report) -> Errors {
    let pairs: Vec<(f64, f64)> = report
        .samples
        .iter()
        .filter_map(|s| s.estimate.map(|e| (e, s.real)))
        .collect();
    let n = pairs.len().max(1) as f64;
    let abs: Vec<f64> = pairs.iter().map(|(e, r)| (e - r).abs()).collect();
    let rel: Vec<f64> = pairs
        .iter()
        .filter(|(_, r)| *r >= report.mean_run_s)
        .map(|(e, r)| (e - r).abs() / r)
        .collect();
    let real_sum: f64 = pairs.iter().map(|(_, r)| r).sum();
    Errors {
        mae: abs.iter().sum::<f64>() / n,
        bias: pairs.iter().map(|(e, r)| e - r).sum::<f64>() / n,
        abs: spread(&abs),
        rel: spread(&rel),
        weighted_rel: abs.iter().sum::<f64>() / real_sum.max(f64::MIN_POSITIVE),
        mean_real: real_sum / n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_enough_and_repeatable() {
        let mut a = Draws(7);
        let mut b = Draws(7);
        let xs: Vec<f64> = (0..10_000).map(|_| a.next_f64()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert_eq!(xs[0], b.next_f64());
    }

    #[test]
    fn errors_are_absolute_and_relative() {
        let report = Report {
            jobs: 2,
            started_before_poll: 0,
            null_estimates: 0,
            samples: vec![
                Sample {
                    estimate: Some(2.0),
                    real: 1.0,
                    position: 0,
                },
                Sample {
                    estimate: Some(3.0),
                    real: 4.0,
                    position: 1,
                },
            ],
            mean_run_s: 0.5,
            elapsed: Duration::ZERO,
        };
        let e = errors(&report);
        assert!((e.mae - 1.0).abs() < 1e-9);
        assert!(e.bias.abs() < 1e-9);
        assert!((e.weighted_rel - 0.4).abs() < 1e-9);
        assert_eq!(e.rel.n, 2);
    }
}
