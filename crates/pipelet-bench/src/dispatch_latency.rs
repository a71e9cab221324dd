//! Dispatch latency, with the `preview` runner and one worker (concurrency 1) on this
//! machine, in two set-ups: `pipelet serve --workers 0` plus one remote
//! `pipelet worker` process (worker key, worker API over HTTP), and `pipelet serve
//! --workers 1` (the in-process worker) for comparison. Each set-up gets a fresh data
//! dir and runs two experiments with small jobs (t2v 512x512, `duration` 1 = 17 frames):
//!
//! 1. **idle**: jobs submitted one at a time, each waited for (`COMPLETED`) before the
//!    next, so the worker is always idle in its claim long-poll when a job arrives.
//!    Latency = `started_at − created_at` from the jobs table (the definition; the
//!    server's clock, whole milliseconds). Finer, beside it: the client's time from the
//!    create's 200 to the first status poll that is no longer `IN_QUEUE` (polled back to
//!    back, so it overstates by up to one poll round trip), and from the server's
//!    "request queued" log line to the worker's "job started" line (microsecond
//!    timestamps, both on this machine's real-time clock).
//! 2. **busy**: jobs queued at once; in dispatch order, gap_i = the start of job i+1's
//!    claim − the end of job i's render, the end being `started_at(i) +
//!    run_seconds(i)` (DB: ms) — or, finer, the worker's own "job started" log time of
//!    i+1 − that of i − `run_seconds(i)` (one process, microseconds).
//!
//! Jobs are read back from the SQLite file with [`SqliteStore`] once the server has
//! stopped; log lines from `--log-format json` output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pipelet_store::prelude::*;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::{JobRecord, JobState};
use serde::Deserialize;
use tokio::task::JoinSet;

use crate::load::Client;
use crate::server::{Server, clean_env, create_key, file_tail, stop_child};

/// The probe job: as small as the API allows for t2v, so the phase stays short.
const PROBE_BODY: &str = r#"{"prompt":"dispatch probe: a paper boat drifting on a still pond","width":512,"height":512,"duration":1}"#;
pub const PROBE_DESCRIPTION: &str = "t2v 512x512, 17 frames";
/// Unrecorded jobs first: the worker's first claim, the runner's first render.
const WARMUP_JOBS: usize = 2;
/// Pause before each idle probe, so the worker is back in its claim long-poll and
/// the previous job's delivery is over.
const SETTLE: Duration = Duration::from_millis(10);
/// Poll interval while a job runs (its start is polled back to back).
const RUNNING_POLL: Duration = Duration::from_millis(2);
const JOB_TIMEOUT: Duration = Duration::from_secs(60);
const WORKER_NAME: &str = "bench-dispatch";

/// The issue's target for both the idle latency and the busy gap (p50).
pub const TARGET_P50_MS: f64 = 10.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `serve --workers 0` and one `pipelet worker` process over HTTP.
    Remote,
    /// `serve --workers 1`.
    InProcess,
}

impl Mode {
    pub fn key(self) -> &'static str {
        match self {
            Mode::Remote => "remote",
            Mode::InProcess => "in_process",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Mode::Remote => "remote worker",
            Mode::InProcess => "in-process",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub idle_jobs: usize,
    pub busy_jobs: usize,
    /// RUST_LOG for the server and the worker.
    pub rust_log: Option<String>,
}

/// What one set-up measured; every figure in milliseconds.
#[derive(Debug, Clone)]
pub struct ModeReport {
    pub mode: Mode,
    /// `started_at − created_at` (jobs table, server clock, whole ms).
    pub idle_db: Vec<f64>,
    /// Create's 200 → first status poll answered with the job no longer `IN_QUEUE`.
    pub idle_client: Vec<f64>,
    /// Round trip of the poll that saw the job start (the client figure's resolution).
    pub idle_poll_rtt: Vec<f64>,
    /// Server log "request queued" (after the create's commit) → "job started" log.
    pub idle_log: Vec<f64>,
    /// `started_at(i+1) − (started_at(i) + run_seconds(i))`.
    pub busy_db_gap: Vec<f64>,
    /// Worker log "job started"(i+1) − ("job started"(i) + run_seconds(i)).
    pub busy_log_gap: Vec<f64>,
    /// Pairs left out because job i+1 was created after job i's render ended.
    pub busy_excluded: usize,
    /// The worker's `run_seconds` of the measured jobs.
    pub render: Vec<f64>,
    pub elapsed: Duration,
}

/// Runs both set-ups, each in a folder of its own under `tmp`.
pub fn run(bin: &Path, tmp: &Path, plan: &Plan) -> anyhow::Result<Vec<ModeReport>> {
    if plan.idle_jobs == 0 || plan.busy_jobs < 2 {
        bail!("the dispatch phase needs at least 1 idle job and 2 busy jobs");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    let mut reports = Vec::new();
    for mode in [Mode::Remote, Mode::InProcess] {
        let dir = tmp.join(format!("dispatch-{}", mode.key()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let report = run_mode(&rt, bin, &dir, mode, plan)
            .with_context(|| format!("dispatch phase, {}", mode.label()))?;
        reports.push(report);
    }
    Ok(reports)
}

fn run_mode(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    dir: &Path,
    mode: Mode,
    plan: &Plan,
) -> anyhow::Result<ModeReport> {
    let started = Instant::now();
    let data_dir = dir.join("data");
    let rust_log = plan.rust_log.as_deref();
    let workers = u32::from(mode == Mode::InProcess);
    let server = Server::start_with(bin, &data_dir, rust_log, workers, true, None)?;
    let addr = server.addr;
    let worker = match mode {
        Mode::Remote => {
            let key = create_key(bin, &data_dir, "worker", WORKER_NAME, None)?;
            Some(WorkerProcess::start(
                bin,
                &format!("http://{addr}"),
                &key,
                dir,
                rust_log,
            )?)
        }
        Mode::InProcess => None,
    };
    eprintln!(
        "dispatch ({}): server on {addr} (pid {}){}; {} idle jobs one at a time, then {} at once…",
        mode.label(),
        server.pid(),
        worker
            .as_ref()
            .map(|w| format!(", worker pid {}", w.child.id()))
            .unwrap_or_default(),
        plan.idle_jobs,
        plan.busy_jobs
    );
    let driven = rt.block_on(drive(addr, &server.admin_key, plan));
    let (probes, burst) = match driven {
        Ok(v) => v,
        Err(e) => {
            let worker_log = worker
                .as_ref()
                .map(|w| format!("\nworker log tail:\n{}", file_tail(&w.log, 20)))
                .unwrap_or_default();
            return Err(e.context(format!(
                "server log tail:\n{}{worker_log}",
                server.log_tail()
            )));
        }
    };
    // Stop the worker first (nothing is in hand: every job completed), then the server.
    let worker_log = match worker {
        Some(w) => Some(w.stop()?),
        None => None,
    };
    let server_log = server.log_path().to_path_buf();
    server.stop()?;

    let jobs = rt.block_on(load_jobs(&data_dir.join("pipelet.db")))?;
    let mut logs = LogTimes::default();
    logs.read(&server_log)?;
    if let Some(path) = &worker_log {
        logs.read(path)?;
    }
    let mut report = analyse(mode, &probes, &burst, &jobs, &logs)?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// A `pipelet worker --runner preview --concurrency 1` process, logging JSON lines to
/// `<dir>/worker.log`; SIGTERM'd (then killed) when dropped.
struct WorkerProcess {
    child: Child,
    log: PathBuf,
}

impl WorkerProcess {
    fn start(
        bin: &Path,
        server: &str,
        key: &str,
        dir: &Path,
        rust_log: Option<&str>,
    ) -> anyhow::Result<WorkerProcess> {
        let log = dir.join("worker.log");
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(bin);
        command
            .args(["--log-format", "json", "worker", "--server", server])
            .args(["--runner", "preview", "--concurrency", "1", "--name"])
            .arg(WORKER_NAME)
            .arg("--scratch-dir")
            .arg(dir.join("scratch"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        clean_env(&mut command, rust_log);
        // In the environment rather than on the command line, where `ps` would show it.
        command.env("PIPELET_KEY", key);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {} worker", bin.display()))?;
        Ok(WorkerProcess { child, log })
    }

    /// Stops the worker; returns its log file.
    fn stop(mut self) -> anyhow::Result<PathBuf> {
        stop_child(&mut self.child, "the worker")?;
        Ok(self.log.clone())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Err(e) = stop_child(&mut self.child, "the worker") {
            eprintln!("warning: {e:#}");
        }
    }
}

/// One idle-worker job as the client saw it.
#[derive(Debug)]
struct Probe {
    id: String,
    /// Create's 200 → the first status poll that was not `IN_QUEUE`.
    to_start: Duration,
    /// The round trip of that poll.
    poll_rtt: Duration,
}

/// Warm-up, the idle probes, then the burst; returns the probes and the burst's ids.
async fn drive(
    addr: std::net::SocketAddr,
    key: &str,
    plan: &Plan,
) -> anyhow::Result<(Vec<Probe>, Vec<String>)> {
    let mut client = Client::connect(addr, key).await?;
    for _ in 0..WARMUP_JOBS {
        probe(&mut client).await?;
    }
    let mut probes = Vec::with_capacity(plan.idle_jobs);
    for _ in 0..plan.idle_jobs {
        probes.push(probe(&mut client).await?);
    }
    tokio::time::sleep(SETTLE).await;
    let burst = burst(addr, key, plan.busy_jobs).await?;
    let deadline = Instant::now() + JOB_TIMEOUT + Duration::from_secs(2) * burst.len() as u32;
    for id in &burst {
        wait_completed(&mut client, id, deadline, Duration::from_millis(10)).await?;
    }
    Ok((probes, burst))
}

/// Submits one job to an idle worker, times its start as the client sees it, and
/// waits until it has completed.
async fn probe(client: &mut Client) -> anyhow::Result<Probe> {
    tokio::time::sleep(SETTLE).await;
    let id = create(client).await?;
    let created = Instant::now();
    let deadline = created + JOB_TIMEOUT;
    // Back to back: the resolution is one poll's round trip.
    let (seen, poll_rtt) = loop {
        let sent = Instant::now();
        let status = status_of(client, &id).await?;
        let now = Instant::now();
        if status != "IN_QUEUE" {
            break (now, now - sent);
        }
        if now > deadline {
            bail!("job {id} was not started within {JOB_TIMEOUT:?}");
        }
    };
    wait_completed(client, &id, deadline, RUNNING_POLL).await?;
    Ok(Probe {
        id,
        to_start: seen - created,
        poll_rtt,
    })
}

/// Queues `n` jobs at once, one connection each (the server commits them together).
async fn burst(addr: std::net::SocketAddr, key: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(Client::connect(addr, key).await?);
    }
    let mut tasks = JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        tasks.spawn(async move { create(&mut client).await.map(|id| (i, id)) });
    }
    let mut ids = vec![String::new(); n];
    while let Some(joined) = tasks.join_next().await {
        let (i, id) = joined.context("a create task panicked")??;
        ids[i] = id;
    }
    Ok(ids)
}

#[derive(Deserialize)]
struct StatusReply {
    status: String,
}

async fn create(client: &mut Client) -> anyhow::Result<String> {
    client.create("", PROBE_BODY).await
}

async fn status_of(client: &mut Client, id: &str) -> anyhow::Result<String> {
    let (reply, _): (StatusReply, _) = client.status(id).await?;
    Ok(reply.status)
}

async fn wait_completed(
    client: &mut Client,
    id: &str,
    deadline: Instant,
    every: Duration,
) -> anyhow::Result<()> {
    loop {
        match status_of(client, id).await?.as_str() {
            "COMPLETED" => return Ok(()),
            s @ ("FAILED" | "CANCELLED") => bail!("job {id} ended {s}"),
            s if Instant::now() > deadline => bail!("job {id} is still {s} after the deadline"),
            _ => tokio::time::sleep(every).await,
        }
    }
}

/// Every job in the (stopped) server's database, by id.
async fn load_jobs(db: &Path) -> anyhow::Result<HashMap<String, JobRecord>> {
    let store = SqliteStore::open(db)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let jobs = store
        .list_jobs(None, 1_000_000)
        .await
        .context("cannot list the jobs")?;
    store.close().await;
    Ok(jobs.into_iter().map(|j| (j.id.to_string(), j)).collect())
}

/// Microsecond timestamps from `--log-format json` lines, by job id.
#[derive(Debug, Default)]
struct LogTimes {
    /// The server's "request queued" (logged after the create has committed).
    queued: HashMap<String, i64>,
    /// The worker's "job started" (logged once the claim has reached the worker, just
    /// before the render starts).
    started: HashMap<String, i64>,
}

impl LogTimes {
    fn read(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        for line in text.lines() {
            self.line(line);
        }
        Ok(())
    }

    fn line(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let Some(at) = v["timestamp"].as_str().and_then(parse_utc_micros) else {
            return;
        };
        let (map, id) = match v["fields"]["message"].as_str() {
            Some("request queued") => (&mut self.queued, &v["fields"]["id"]),
            Some("job started") => (&mut self.started, &v["span"]["id"]),
            _ => return,
        };
        if let Some(id) = id.as_str() {
            // The first attempt's; retries are refused in `analyse` anyway.
            map.entry(id.to_string()).or_insert(at);
        }
    }
}

/// Parses tracing's `YYYY-MM-DDTHH:MM:SS[.ffffff]Z` into microseconds since the epoch.
fn parse_utc_micros(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || frac.len() > 9 {
        return None;
    }
    let micros = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
        digits.parse::<i64>().ok()?
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000_000 + ss * 1_000_000 + micros)
}

fn completed<'a>(jobs: &'a HashMap<String, JobRecord>, id: &str) -> anyhow::Result<&'a JobRecord> {
    let job = jobs
        .get(id)
        .with_context(|| format!("job {id} is not in the database"))?;
    if job.state != JobState::Completed || job.attempt != 1 {
        bail!(
            "job {id} is {:?} after {} attempts; expected completed at the first",
            job.state,
            job.attempt
        );
    }
    if job.started_at_ms.is_none() || job.result.is_none() {
        bail!("job {id} has no started_at or no result");
    }
    Ok(job)
}

fn started_ms(job: &JobRecord) -> f64 {
    job.started_at_ms.unwrap_or_default() as f64
}

fn run_ms(job: &JobRecord) -> f64 {
    job.result
        .as_ref()
        .map_or(0.0, |r| r.video.run_seconds * 1000.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn analyse(
    mode: Mode,
    probes: &[Probe],
    burst: &[String],
    jobs: &HashMap<String, JobRecord>,
    logs: &LogTimes,
) -> anyhow::Result<ModeReport> {
    let mut report = ModeReport {
        mode,
        idle_db: Vec::new(),
        idle_client: Vec::new(),
        idle_poll_rtt: Vec::new(),
        idle_log: Vec::new(),
        busy_db_gap: Vec::new(),
        busy_log_gap: Vec::new(),
        busy_excluded: 0,
        render: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for p in probes {
        let job = completed(jobs, &p.id)?;
        report
            .idle_db
            .push(started_ms(job) - job.created_at_ms as f64);
        report.idle_client.push(ms(p.to_start));
        report.idle_poll_rtt.push(ms(p.poll_rtt));
        if let (Some(q), Some(s)) = (logs.queued.get(&p.id), logs.started.get(&p.id)) {
            report.idle_log.push((s - q) as f64 / 1000.0);
        }
        report.render.push(run_ms(job));
    }
    let mut order = burst
        .iter()
        .map(|id| completed(jobs, id))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Dispatch order (one worker): by claim time, ties by insertion order.
    order.sort_by_key(|j| (j.started_at_ms, j.seq));
    for job in &order {
        report.render.push(run_ms(job));
    }
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let render_end = started_ms(a) + run_ms(a);
        if b.created_at_ms as f64 > render_end {
            // Not queued yet when the worker became free: not a busy worker's gap.
            report.busy_excluded += 1;
            continue;
        }
        report.busy_db_gap.push(started_ms(b) - render_end);
        let (ida, idb) = (a.id.to_string(), b.id.to_string());
        if let (Some(sa), Some(sb)) = (logs.started.get(&ida), logs.started.get(&idb)) {
            report
                .busy_log_gap
                .push((sb - sa) as f64 / 1000.0 - run_ms(a));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracing_timestamps() {
        assert_eq!(
            parse_utc_micros("2026-11-25T18:58:08.003416Z"),
            Some(1_795_633_088_003_416)
        );
        assert_eq!(
            parse_utc_micros("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000)
        );
        assert_eq!(parse_utc_micros("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(parse_utc_micros("2026-11-25 18:58:08Z"), None);
        assert_eq!(parse_utc_micros("2026-13-01T00:00:00Z"), None);
    }

    #[test]
    fn reads_log_lines() {
        let mut logs = LogTimes::default();
        logs.line(r#"{"timestamp":"1970-01-01T00:00:01.000100Z","level":"INFO","fields":{"message":"request queued","id":"a","position":0}}"#);
        logs.line(r#"{"timestamp":"1970-01-01T00:00:01.002300Z","level":"INFO","fields":{"message":"job started"},"span":{"id":"a","name":"job"}}"#);
        logs.line("not json");
        logs.line(r#"{"timestamp":"1970-01-01T00:00:02Z","fields":{"message":"job ended"},"span":{"id":"a"}}"#);
        assert_eq!(logs.queued.get("a"), Some(&1_000_100));
        assert_eq!(logs.started.get("a"), Some(&1_002_300));
        assert_eq!(logs.started.len(), 1);
    }
}
