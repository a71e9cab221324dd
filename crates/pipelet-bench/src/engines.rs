//! Shared engines: the same `pipelet serve --workers 0` on the embedded SQLite store and
//! on PostgreSQL (`--database-url`), one after the other in one run, each on a fresh
//! store (a new data dir; a new database `pipelet_bench_<random>`, created here and
//! dropped afterwards), with the same three loads:
//!
//! 1. **creates/s**: [`load::creates`], `--creates` jobs from `--concurrency`
//!    connections (the queue positions must come back exactly 0..N-1);
//! 2. **status vs health**: [`load::polls`], the job at position N-1 against `/health`
//!    in ABBA slices, exactly as in the main status phase;
//! 3. **claims/s**: `--claim-workers` tasks, each on its own keep-alive connection with
//!    a worker key (`pipelet keys create --role worker`), loop over the worker API:
//!    `POST /worker/v1/claim` (the queue is full, so it answers at once), then finish
//!    the job, by default as a worker does (`PUT …/result` of a tiny body, then
//!    `POST …/complete`), or with `--claim-finish fail` by `POST …/fail` with
//!    `retryable: false`. One claim + finish is a cycle; cycles/s is the figure.
//!
//! What to quote is PostgreSQL's rate as a ratio to SQLite's: the server, the database
//! and the load generator share this machine's cores. Beside each rate, CPU time per
//! request of the server, of the PostgreSQL backends serving it (found by their process
//! title, so only for a PostgreSQL on this machine; SQLite runs inside the server) and
//! of the load generator.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;
use sqlx::{ConnectOptions, Connection, PgConnection};
use tokio::task::JoinSet;

use crate::load::{self, CpuProbe, CpuSplit, CreateReport, EndpointReport, PollPlan, PollReport};
use crate::server::{Server, create_key};
use crate::stats::{Latencies, Summary, postgres_backends_cpu};
use crate::{endpoint_json, round};

/// Where the bench creates its databases unless `PIPELET_BENCH_DATABASE_URL` says
/// otherwise: any database the user may connect to, on a server where it may
/// `CREATE DATABASE`.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const WORKER_KEY_NAME: &str = "bench-engines";
/// The claim's long poll: the queue is never empty while measuring, so this only
/// bounds the wait once it has run dry (a 204 then ends that worker's loop).
const CLAIM_WAIT_MS: u64 = 100;
/// What `--claim-finish complete` uploads as the "video".
const RESULT_BODY: &[u8] = b"pipelet-bench: a stand-in for an mp4";
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How each claimed job is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Finish {
    /// `PUT …/result?lease_token=` (a few bytes), then `POST …/complete`: a worker's path.
    Complete,
    /// `POST …/fail` with `retryable: false`: the store's writes without the upload.
    Fail,
}

impl Finish {
    pub fn describe(self) -> &'static str {
        match self {
            Finish::Complete => "claim, PUT result, complete",
            Finish::Fail => "claim, fail (retryable: false)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Finish::Complete => "claim+result+complete",
            Finish::Fail => "claim+fail",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub concurrency: usize,
    pub creates: u64,
    pub polls: PollPlan,
    pub claim_workers: usize,
    /// Measured time of the claim loop (after `polls.warmup` unrecorded).
    pub claim_duration: Duration,
    pub finish: Finish,
    /// The PostgreSQL server (any database on it) where the bench database is created.
    pub pg_url: String,
    /// `VACUUM (ANALYZE) jobs` after the creates, before the status polls (PostgreSQL).
    pub vacuum: bool,
    pub rust_log: Option<String>,
    /// Keep the PostgreSQL database (its name is printed) instead of dropping it.
    pub keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    pub fn key(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Engine::Sqlite => "SQLite",
            Engine::Postgres => "PostgreSQL",
        }
    }
}

/// The claim loop's figures: one cycle = claim + finish.
pub struct ClaimReport {
    pub cycles: u64,
    /// From the end of the warm-up to the end of the last recorded cycle.
    pub measured: Duration,
    pub cycle: Summary,
    pub claim: Summary,
    pub finish: Summary,
    pub cpu: CpuSplit,
    /// A claim found the queue empty (204): the loop ran out of jobs before its time.
    pub drained: bool,
}

impl ClaimReport {
    pub fn per_second(&self) -> f64 {
        if self.measured.is_zero() {
            return 0.0;
        }
        self.cycles as f64 / self.measured.as_secs_f64()
    }
}

pub struct EngineReport {
    pub engine: Engine,
    pub creates: CreateReport,
    pub position: u64,
    pub position_after: u64,
    pub polls: PollReport,
    pub claims: ClaimReport,
    /// `VACUUM (ANALYZE) jobs` ran before the polls, and took this long.
    pub vacuum: Option<Duration>,
    pub elapsed: Duration,
}

impl EngineReport {
    fn creates_per_s(&self) -> f64 {
        self.creates.count as f64 / self.creates.elapsed.as_secs_f64()
    }

    fn status_health(&self) -> f64 {
        self.polls.status.per_second() / self.polls.health.per_second().max(f64::MIN_POSITIVE)
    }
}

/// The PostgreSQL server as the bench found it.
pub struct PgInfo {
    pub version: String,
    /// `host:port/database` of the URL, without credentials.
    pub server: String,
    pub synchronous_commit: String,
    pub autovacuum: String,
    /// The bench database's name.
    pub database: String,
    /// Its backends were found on this machine, so their CPU time is counted.
    pub local: bool,
}

pub struct Report {
    pub sqlite: EngineReport,
    pub postgres: EngineReport,
    pub pg: PgInfo,
    pub finish: Finish,
    pub claim_workers: usize,
    pub concurrency: usize,
    /// The temporary directory is on tmpfs: SQLite's fsyncs cost nothing there.
    pub tmpfs: bool,
}

/// Runs the three loads on SQLite, then on PostgreSQL, each on a fresh store under
/// `tmp` (and, for PostgreSQL, in a fresh database on `plan.pg_url`'s server).
pub fn run(bin: &Path, tmp: &Path, plan: &Plan) -> anyhow::Result<Report> {
    if plan.claim_workers == 0 {
        bail!("--claim-workers must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    // PostgreSQL first, so a missing server fails the run before SQLite's half.
    let mut pg = rt.block_on(pg_info(&plan.pg_url))?;
    let tmpfs = on_tmpfs(tmp);
    if tmpfs {
        eprintln!(
            "warning: the temporary directory is on tmpfs, where SQLite's fsyncs cost \
             nothing while PostgreSQL's do not: the ratios will flatter SQLite"
        );
    }
    let (sqlite, _) =
        run_engine(&rt, bin, tmp, plan, Engine::Sqlite, None).context("engines phase, SQLite")?;
    let db = rt.block_on(BenchDb::create(&plan.pg_url))?;
    pg.database = db.name.clone();
    let postgres = run_engine(&rt, bin, tmp, plan, Engine::Postgres, Some(&db));
    if plan.keep {
        eprintln!("kept the PostgreSQL database {} ({})", db.name, pg.server);
    } else if let Err(e) = rt.block_on(db.drop_db()) {
        eprintln!("warning: could not drop the database {}: {e:#}", db.name);
    }
    let (postgres, local) = postgres.context("engines phase, PostgreSQL")?;
    pg.local = local;
    Ok(Report {
        sqlite,
        postgres,
        pg,
        finish: plan.finish,
        claim_workers: plan.claim_workers,
        concurrency: plan.concurrency,
        tmpfs,
    })
}

/// One engine: a server on a fresh store, its worker key, the three loads. With
/// PostgreSQL, also whether its backends were seen on this machine.
fn run_engine(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    tmp: &Path,
    plan: &Plan,
    engine: Engine,
    db: Option<&BenchDb>,
) -> anyhow::Result<(EngineReport, bool)> {
    let started = Instant::now();
    let dir = tmp.join(format!("engines-{}", engine.key()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let data_dir = dir.join("data");
    let url = db.map(|d| d.url.as_str());
    let server = Server::start_with(bin, &data_dir, plan.rust_log.as_deref(), 0, false, url)?;
    let worker_key = create_key(bin, &data_dir, "worker", WORKER_KEY_NAME, url)
        .map_err(|e| e.context(format!("server log tail:\n{}", server.log_tail())))?;
    let probe = CpuProbe {
        server_pid: server.pid(),
        pg_database: db.map(|d| Arc::from(d.name.as_str())),
    };
    // The server's pool and its LISTEN connection are open by now.
    let local = db.is_some_and(|d| !postgres_backends_cpu(&d.name).is_empty());
    eprintln!(
        "engines ({}): server on {} (pid {}){}; {} creates from {} connections, status vs \
         health, then {} claim workers…",
        engine.label(),
        server.addr,
        server.pid(),
        db.map(|d| format!(", database {}", d.name))
            .unwrap_or_default(),
        plan.creates,
        plan.concurrency,
        plan.claim_workers
    );
    let driven = rt.block_on(drive(
        server.addr,
        &server.admin_key,
        &worker_key,
        &probe,
        plan,
        engine,
        db,
    ));
    let mut report = server.finish(driven)?;
    report.elapsed = started.elapsed();
    Ok((report, local))
}

async fn drive(
    addr: SocketAddr,
    admin_key: &str,
    worker_key: &str,
    cpu: &CpuProbe,
    plan: &Plan,
    engine: Engine,
    db: Option<&BenchDb>,
) -> anyhow::Result<EngineReport> {
    let creates = load::creates(addr, admin_key, cpu, plan.concurrency, plan.creates).await?;
    let want = plan.creates - 1;
    if !creates.positions_exact || creates.last_position != want {
        bail!(
            "create responses did not carry the queue positions 0..{want} exactly once \
             (highest was {})",
            creates.last_position
        );
    }
    let vacuum = match db {
        Some(db) if plan.vacuum => Some(db.vacuum_jobs().await?),
        _ => None,
    };
    let last = &creates.last_id;
    let position = queued_at(addr, admin_key, last, want, "before the polls").await?;
    let polls = load::polls(addr, admin_key, cpu, last, &plan.polls).await?;
    let position_after = queued_at(addr, admin_key, last, want, "after the polls").await?;
    let claims = claims(addr, worker_key, cpu, plan).await?;
    Ok(EngineReport {
        engine,
        creates,
        position,
        position_after,
        polls,
        claims,
        vacuum,
        elapsed: Duration::ZERO,
    })
}

/// The job's queue position, which must be at least `want` (it is still queued).
async fn queued_at(
    addr: SocketAddr,
    key: &str,
    id: &str,
    want: u64,
    phase: &str,
) -> anyhow::Result<u64> {
    match load::job_status(addr, key, id).await? {
        (state, Some(p)) if state == "IN_QUEUE" && p >= want => Ok(p),
        (state, position) => bail!(
            "{phase}: the last job should be IN_QUEUE at position >= {want}, but it is \
             {state} at {position:?}"
        ),
    }
}

#[derive(Deserialize)]
struct Claimed {
    job_id: String,
    lease_token: i64,
}

/// `plan.claim_workers` workers, each claiming and finishing jobs back to back on its own
/// connection until `plan.claim_duration` after a warm-up of `plan.polls.warmup`.
async fn claims(
    addr: SocketAddr,
    worker_key: &str,
    cpu: &CpuProbe,
    plan: &Plan,
) -> anyhow::Result<ClaimReport> {
    let clients = load::connect_all(addr, worker_key, plan.claim_workers).await?;
    let t0 = Instant::now() + plan.polls.warmup;
    let end = t0 + plan.claim_duration;
    let finish = plan.finish;
    let mut tasks = JoinSet::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let body = Bytes::from(
            json!({
                "worker_id": format!("bench-{i}"),
                "pipelines": ["t2v"],
                "loaded": "t2v",
                "wait_ms": CLAIM_WAIT_MS,
            })
            .to_string(),
        );
        tasks.spawn(async move {
            let mut lat = [
                Latencies::default(),
                Latencies::default(),
                Latencies::default(),
            ];
            let mut last_end = None;
            let mut drained = false;
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let Some((job, claimed)) = client.claim::<Claimed>(body.clone()).await? else {
                    drained = true;
                    break;
                };
                finish_job(&mut client, finish, &job).await?;
                let done = Instant::now();
                if sent >= t0 {
                    lat[0].record(done - sent);
                    lat[1].record(claimed - sent);
                    lat[2].record(done - claimed);
                    last_end = Some(done);
                }
            }
            anyhow::Ok((lat, last_end, drained))
        });
    }
    tokio::time::sleep_until(t0.into()).await;
    let cpu0 = cpu.sample();
    let mut merged = [
        Latencies::default(),
        Latencies::default(),
        Latencies::default(),
    ];
    let mut last_end: Option<Instant> = None;
    let mut drained = false;
    while let Some(joined) = tasks.join_next().await {
        let (lat, task_end, task_drained) = joined.context("a claim task panicked")??;
        for (m, l) in merged.iter_mut().zip(lat) {
            m.merge(l);
        }
        last_end = last_end.max(task_end);
        drained |= task_drained;
    }
    let cpu = CpuSplit::between(&cpu0, &cpu.sample());
    let [cycle, claim, finish] = merged;
    Ok(ClaimReport {
        cycles: cycle.len() as u64,
        measured: last_end.map_or(Duration::ZERO, |e| e.saturating_duration_since(t0)),
        cycle: cycle.summary(),
        claim: claim.summary(),
        finish: finish.summary(),
        cpu,
        drained,
    })
}

async fn finish_job(
    client: &mut load::Client,
    finish: Finish,
    job: &Claimed,
) -> anyhow::Result<()> {
    let (id, token) = (&job.job_id, job.lease_token);
    match finish {
        Finish::Complete => {
            let done = json!({
                "lease_token": token,
                "width": 832,
                "height": 480,
                "frames": 81,
                "fps": 16,
                "backend": "pipelet-bench",
                "run_seconds": 0.0,
            });
            client
                .finish(id, token, Bytes::from_static(RESULT_BODY), &done)
                .await?;
        }
        Finish::Fail => {
            let failed = json!({
                "lease_token": token,
                "error": "pipelet-bench: a claim cycle",
                "retryable": false,
            });
            client
                .expect(
                    Method::POST,
                    &format!("/worker/v1/jobs/{id}/fail"),
                    Some(Bytes::from(failed.to_string())),
                    StatusCode::NO_CONTENT,
                )
                .await?;
        }
    }
    Ok(())
}

/// `url` with its database replaced by `db` (query parameters kept).
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_at = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_at..].find('/') {
        Some(slash) => &base[..authority_at + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// `host:port/database` of a URL: no scheme, no credentials, no parameters.
fn describe_url(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split_once('?').map_or(rest, |(base, _)| base);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{host}/{path}")
}

async fn pg_connect(url: &str) -> anyhow::Result<PgConnection> {
    let options: sqlx::postgres::PgConnectOptions = url
        .parse()
        .with_context(|| format!("not a postgres:// URL: {}", describe_url(url)))?;
    let options = options.application_name("pipelet-bench");
    match tokio::time::timeout(PG_CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => bail!(
            "PostgreSQL unreachable at {}: {e}. The engines phase needs one: start it, or \
             point PIPELET_BENCH_DATABASE_URL (or --pg-url) at one",
            describe_url(url)
        ),
        Err(_) => bail!(
            "PostgreSQL at {} did not answer within {PG_CONNECT_TIMEOUT:?}",
            describe_url(url)
        ),
    }
}

async fn pg_info(url: &str) -> anyhow::Result<PgInfo> {
    let mut conn = pg_connect(url).await?;
    let mut show = async |name: &str| -> anyhow::Result<String> {
        sqlx::query_scalar::<_, String>(&format!("SHOW {name}"))
            .fetch_one(&mut conn)
            .await
            .with_context(|| format!("SHOW {name}"))
    };
    let version = show("server_version").await?;
    let synchronous_commit = show("synchronous_commit").await?;
    let autovacuum = show("autovacuum").await?;
    let _ = conn.close().await;
    Ok(PgInfo {
        version,
        server: describe_url(url),
        synchronous_commit,
        autovacuum,
        database: String::new(),
        local: false,
    })
}

/// A database of the bench's own on the PostgreSQL server.
struct BenchDb {
    name: String,
    url: String,
    admin_url: String,
}

impl BenchDb {
    async fn create(admin_url: &str) -> anyhow::Result<BenchDb> {
        let mut admin = pg_connect(admin_url).await?;
        let name = format!("pipelet_bench_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        let _ = admin.close().await;
        Ok(BenchDb {
            url: with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_string(),
        })
    }

    /// Drops the database, ending any session still on it.
    async fn drop_db(&self) -> anyhow::Result<()> {
        let mut admin = pg_connect(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .with_context(|| format!("DROP DATABASE {}", self.name))?;
        let _ = admin.close().await;
        Ok(())
    }

    /// `VACUUM (ANALYZE) jobs`: sets the visibility map, so the position counts are
    /// index-only scans, as they are once autovacuum has been by.
    async fn vacuum_jobs(&self) -> anyhow::Result<Duration> {
        let mut conn = pg_connect(&self.url).await?;
        let started = Instant::now();
        sqlx::query("VACUUM (ANALYZE) jobs")
            .execute(&mut conn)
            .await
            .context("VACUUM (ANALYZE) jobs")?;
        let took = started.elapsed();
        let _ = conn.close().await;
        Ok(took)
    }
}

/// Whether `path` is on tmpfs (Linux).
fn on_tmpfs(path: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: statfs writes only into the struct we hand it; the path is a valid C
        // string for the duration of the call.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
        rc == 0 && st.f_type == libc::TMPFS_MAGIC
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        false
    }
}

fn ratio(pg: f64, sqlite: f64) -> f64 {
    pg / sqlite.max(f64::MIN_POSITIVE)
}

fn us_per(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1e6 / n.max(1) as f64
}

/// The table, and `summary["engines"]`.
pub fn print(r: &Report, summary: &mut serde_json::Value) {
    let (s, p) = (&r.sqlite, &r.postgres);
    println!();
    println!(
        "engines: the same `serve --workers 0`, fresh stores: SQLite (a new data dir) vs \
         PostgreSQL {} at {} (a new database {}; synchronous_commit {}, autovacuum {}{})",
        r.pg.version,
        r.pg.server.split('/').next().unwrap_or_default(),
        r.pg.database,
        r.pg.synchronous_commit,
        r.pg.autovacuum,
        match p.vacuum {
            Some(took) => format!("; VACUUM (ANALYZE) jobs before the polls: {took:.0?}"),
            None => String::new(),
        }
    );
    println!(
        "{} connections for creates and polls; {} claim workers, one cycle = {}",
        r.concurrency,
        r.claim_workers,
        r.finish.describe()
    );
    if r.tmpfs {
        println!("warning: the temporary directory is on tmpfs: SQLite's fsyncs are free there");
    }
    println!();
    println!(
        "{:<34} {:>10} {:>11} {:>10}",
        "", "SQLite", "PostgreSQL", "PG/SQLite"
    );
    let line = |name: String, a: f64, b: f64, digits: usize| {
        println!(
            "{name:<34} {a:>10.digits$} {b:>11.digits$} {:>10.2}",
            ratio(b, a)
        );
    };
    line(
        format!("creates/s ({})", s.creates.count),
        s.creates_per_s(),
        p.creates_per_s(),
        0,
    );
    line(
        format!("status polls/s (pos {}/{})", s.position, p.position),
        s.polls.status.per_second(),
        p.polls.status.per_second(),
        0,
    );
    line(
        "health/s (same slices)".into(),
        s.polls.health.per_second(),
        p.polls.health.per_second(),
        0,
    );
    line(
        "status/health".into(),
        s.status_health(),
        p.status_health(),
        2,
    );
    line(
        format!("claims/s ({} workers)", r.claim_workers),
        s.claims.per_second(),
        p.claims.per_second(),
        0,
    );
    println!("  <- quote the PG/SQLite ratios: server, database and load share the cores");

    println!();
    println!(
        "{:<11} {:<20} {:>8} {:>8} {:>8} {:>8} {:>11} {:>10} {:>12}",
        "engine",
        "phase",
        "requests",
        "req/s",
        "p50 ms",
        "p99 ms",
        "srv µs/req",
        "db µs/req",
        "bench µs/req"
    );
    for e in [s, p] {
        let db = |cpu: Duration, n: u64| match e.engine {
            Engine::Postgres if r.pg.local => format!("{:.0}", us_per(cpu, n)),
            Engine::Postgres => "n/a".to_string(),
            // The store runs inside the server: its time is in srv.
            Engine::Sqlite => "-".to_string(),
        };
        let row = |phase: &str, n: u64, rate: f64, lat: &Summary, cpu: &CpuSplit| {
            println!(
                "{:<11} {phase:<20} {n:>8} {rate:>8.0} {:>8.2} {:>8.2} {:>11.0} {:>10} {:>12.0}",
                e.engine.label(),
                lat.p50_ms,
                lat.p99_ms,
                us_per(cpu.server, n),
                db(cpu.db, n),
                us_per(cpu.client, n),
            );
        };
        let c = &e.creates;
        row("create", c.count, e.creates_per_s(), &c.latency, &c.cpu);
        let poll = |name: &str, x: &EndpointReport| {
            row(name, x.requests, x.per_second(), &x.latency, &x.cpu);
        };
        poll(&format!("status (pos {})", e.position), &e.polls.status);
        poll("health", &e.polls.health);
        let k = &e.claims;
        row("claim cycle", k.cycles, k.per_second(), &k.cycle, &k.cpu);
        for (name, lat) in [("  claim", &k.claim), ("  finish", &k.finish)] {
            println!(
                "{:<11} {name:<20} {:>8} {:>8} {:>8.2} {:>8.2}",
                "", "", "", lat.p50_ms, lat.p99_ms
            );
        }
        if k.drained {
            println!(
                "{:<11} (the queue ran dry during the claim loop: raise --creates or lower \
                 --duration)",
                ""
            );
        }
    }
    println!(
        "srv: the pipelet server process (with SQLite, the store too); db: the PostgreSQL \
         backends of the bench database{}; claim cycles count as requests",
        if r.pg.local {
            ""
        } else {
            " (n/a: PostgreSQL is not on this machine)"
        }
    );

    let engine_json = |e: &EngineReport| {
        let db_us = |cpu: &CpuSplit, n: u64| match e.engine {
            Engine::Postgres if r.pg.local => json!(round(us_per(cpu.db, n), 1)),
            _ => serde_json::Value::Null,
        };
        let c = &e.creates;
        let poll = |x: &EndpointReport| {
            let mut v = endpoint_json(x);
            v["db_cpu_us_per_req"] = db_us(&x.cpu, x.requests);
            v
        };
        let k = &e.claims;
        json!({
            "creates": {
                "count": c.count,
                "per_s": round(e.creates_per_s(), 1),
                "p50_ms": c.latency.p50_ms,
                "p99_ms": c.latency.p99_ms,
                "server_cpu_us_per_req": round(us_per(c.cpu.server, c.count), 1),
                "db_cpu_us_per_req": db_us(&c.cpu, c.count),
                "bench_cpu_us_per_req": round(us_per(c.cpu.client, c.count), 1),
            },
            "status": poll(&e.polls.status),
            "health": poll(&e.polls.health),
            "status_health_ratio": round(e.status_health(), 3),
            "status_queue_position": e.position,
            "status_queue_position_after": e.position_after,
            "vacuum_s": e.vacuum.map(|d| round(d.as_secs_f64(), 3)),
            "claims": {
                "cycles": k.cycles,
                "per_s": round(k.per_second(), 1),
                "cycle_p50_ms": k.cycle.p50_ms,
                "cycle_p99_ms": k.cycle.p99_ms,
                "claim_p50_ms": k.claim.p50_ms,
                "claim_p99_ms": k.claim.p99_ms,
                "finish_p50_ms": k.finish.p50_ms,
                "finish_p99_ms": k.finish.p99_ms,
                "server_cpu_us_per_cycle": round(us_per(k.cpu.server, k.cycles), 1),
                "db_cpu_us_per_cycle": db_us(&k.cpu, k.cycles),
                "bench_cpu_us_per_cycle": round(us_per(k.cpu.client, k.cycles), 1),
                "drained": k.drained,
            },
            "elapsed_s": round(e.elapsed.as_secs_f64(), 1),
        })
    };
    summary["engines"] = json!({
        "postgres_version": r.pg.version,
        "postgres_synchronous_commit": r.pg.synchronous_commit,
        "postgres_autovacuum": r.pg.autovacuum,
        "claim_workers": r.claim_workers,
        "claim_cycle": r.finish.key(),
        "tmpfs": r.tmpfs,
        "sqlite": engine_json(s),
        "postgres": engine_json(p),
        "ratios": {
            "creates_per_s": round(ratio(p.creates_per_s(), s.creates_per_s()), 3),
            "status_per_s": round(ratio(p.polls.status.per_second(), s.polls.status.per_second()), 3),
            "health_per_s": round(ratio(p.polls.health.per_second(), s.polls.health.per_second()), 3),
            "status_health": round(ratio(p.status_health(), s.status_health()), 3),
            "claims_per_s": round(ratio(p.claims.per_second(), s.claims.per_second()), 3),
        },
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }

    #[test]
    fn urls_are_described_without_credentials() {
        assert_eq!(
            describe_url("postgres://u:secret@h:5432/postgres?sslmode=disable"),
            "h:5432/postgres"
        );
        assert_eq!(describe_url("postgres://h"), "h/");
    }
}
