//! `pipelet-bench`: the numbers pipelet promises, measured against a real server.
//!
//! ```text
//! cargo run --release -p pipelet-bench -- [--quick]
//! ```
//!
//! 1. **creates/s**: a real `pipelet serve --workers 0` (the release binary, built or
//!    found by [`server::find_or_build`]) in a temporary data dir; `--concurrency`
//!    keep-alive connections POST `/queue/wan22-fast-t2v` until `--creates` jobs exist
//!    (this also fills the queue). The queue positions returned must be exactly
//!    0..N-1.
//! 2. **status vs health**: with the queue full, status polls of the job that will be
//!    dispatched last (position N-1) against `GET /health` on the same server, same
//!    connections, alternating in short slices for `--duration` seconds each. The
//!    ratio of the two rates is the number to quote: the load generator and the server
//!    share this machine's cores, so absolute rates say as much about the client and the
//!    machine as about the server. The server's CPU time per request is shown too.
//! 3. **dispatch latency** ([`dispatch`]): one preview worker (concurrency 1), remote
//!    (`serve --workers 0` + a `pipelet worker` process) and in-process (`serve
//!    --workers 1`): submit→start latency on an idle worker (`started_at − created_at`),
//!    and the idle gap between consecutive jobs on a busy one (target: p50 ≤ 10 ms for
//!    both). `--only dispatch` runs this phase alone.
//! 4. **engines** ([`engines`], opt-in: `--engines`, or `--only engines` alone; needs a
//!    PostgreSQL server): phases 1 and 2 plus claims/s (`--claim-workers` worker-API
//!    loops of claim + finish) on SQLite and then on PostgreSQL, each on a fresh store,
//!    reported as PostgreSQL/SQLite ratios.
//! 5. **eta** ([`eta`], opt-in: `--eta`, or `--only eta` alone): the queue-time estimate
//!    `estimated_start_seconds` against the real start times, on 200 requests
//!    (`--eta-jobs`) with two workers played through the worker API.
//! 6. **webhooks** ([`webhooks`], opt-in: `--webhooks`, or `--only webhooks` alone):
//!    completion → `completed` webhook latency and deliveries/s over 1,000 jobs
//!    (`--webhook-jobs`) to a local receiver, and a 20 MB result downloaded through its
//!    signed link as a ratio to reading the blob file directly.
//! 7. **preview render**: 81 frames at 832x480 and 1280x720, t2v and i2v, in process
//!    through `pipelet_runner::preview::PreviewRunner`, wall and process CPU time
//!    (target: 832x480 in under 2 s of one core).
//!
//! The output is a table, then one line of JSON (the last line) for machines.

mod dispatch_latency;
mod engines;
mod eta;
mod load;
mod render;
mod server;
mod stats;
mod webhooks;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;

use crate::dispatch_latency::ModeReport;
use crate::load::{CpuProbe, CreateReport, EndpointReport, PollPlan, PollReport};
use crate::render::RenderCase;
use crate::server::Server;
use crate::stats::{Spread, spread};

const TARGET_RATIO: f64 = 0.5;
const TARGET_CREATES_PER_S: f64 = 2000.0;
const TARGET_PREVIEW_CPU_S: f64 = 2.0;

#[derive(Debug, Parser)]
#[command(
    name = "pipelet-bench",
    about = "Benchmarks a real `pipelet serve` (creates/s, status vs health, dispatch latency, SQLite vs PostgreSQL) and the preview renderer"
)]
struct Args {
    /// Shorter run: shorter poll slices, fewer dispatch jobs, one render per case.
    #[arg(long)]
    quick: bool,
    /// Concurrent keep-alive connections for every HTTP phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Jobs created (and left queued) before the polls.
    #[arg(long, default_value_t = 10_000)]
    creates: u64,
    /// Seconds of measured load per endpoint in the status-vs-health phase
    /// [default: 5, or 1.5 with --quick].
    #[arg(long)]
    duration: Option<f64>,
    /// Renders per preview case; the best time is kept [default: 2, or 1 with --quick].
    #[arg(long)]
    render_reps: Option<u32>,
    /// `status` or `health`: poll only that endpoint (e.g. to profile the server under
    /// one load; no ratio, no dispatch phase). `dispatch`: run only the dispatch phase.
    /// `engines`: run only the engines phase (SQLite vs PostgreSQL).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Also run the engines phase: creates/s, status polls/s and claims/s on SQLite and
    /// on PostgreSQL, as ratios (about 75 s more, 35 s with --quick; needs a PostgreSQL server).
    #[arg(long)]
    engines: bool,
    /// The PostgreSQL server of the engines phase (any database on it: the bench creates
    /// `pipelet_bench_<random>` there and drops it afterwards).
    #[arg(
        long,
        env = "PIPELET_BENCH_DATABASE_URL",
        hide_env_values = true,
        default_value = engines::DEFAULT_PG_URL
    )]
    pg_url: String,
    /// Engines phase: `VACUUM (ANALYZE) jobs` on PostgreSQL after the creates, before
    /// the status polls (as if autovacuum had run: sets the visibility map).
    #[arg(long)]
    pg_vacuum: bool,
    /// Engines phase: concurrent workers in the claim loop (one connection each).
    #[arg(long, default_value_t = 16)]
    claim_workers: usize,
    /// Engines phase: how each claimed job is finished.
    #[arg(long, value_enum, default_value = "complete")]
    claim_finish: engines::Finish,
    /// Jobs per dispatch experiment (idle, then busy) and per set-up
    /// [default: 50, or 20 with --quick].
    #[arg(long)]
    dispatch_jobs: Option<usize>,
    /// Skip the dispatch phase.
    #[arg(long)]
    no_dispatch: bool,
    /// Also run the eta phase: the queue-time estimate against the real start times
    /// (about 70 s more).
    #[arg(long)]
    eta: bool,
    /// Measured requests of the eta phase.
    #[arg(long, default_value_t = 200)]
    eta_jobs: usize,
    /// Also run the webhooks phase: completion → webhook latency, deliveries/s, and a
    /// 20 MB result via its signed link vs the blob file.
    #[arg(long)]
    webhooks: bool,
    /// Jobs completed with a webhook in the webhooks phase.
    #[arg(long, default_value_t = 1000)]
    webhook_jobs: usize,
    /// Sequential downloads of the 20 MB result (and reads of its blob) in the webhooks phase.
    #[arg(long, default_value_t = 20)]
    downloads: usize,
    /// Keep the temporary directory (data dirs, server and worker logs) and print its
    /// path, to inspect a run afterwards.
    #[arg(long)]
    keep_tmp: bool,
    /// Skip the preview render phase.
    #[arg(long)]
    no_render: bool,
    /// Skip the HTTP phases (no server is started).
    #[arg(long)]
    no_server: bool,
    /// The `pipelet` binary to run, instead of building target/release/pipelet.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Do not run `cargo build --release -p pipelet`; use the binary already there.
    #[arg(long)]
    no_build: bool,
    /// RUST_LOG for the server, and for the dispatch phase's worker (default: unset,
    /// i.e. the default `info`).
    #[arg(long)]
    server_log: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    Status,
    Health,
    Dispatch,
    Engines,
    Eta,
    Webhooks,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What the phases measured (each `None`/empty when it did not run).
struct Results {
    http: Option<HttpResults>,
    dispatch: Option<Vec<ModeReport>>,
    engines: Option<engines::Report>,
    eta: Option<eta::Report>,
    webhooks: Option<webhooks::Report>,
    renders: Vec<RenderCase>,
}

struct HttpResults {
    creates: CreateReport,
    polls: PollReport,
    position_before: u64,
    position_after: u64,
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.concurrency == 0 || args.creates == 0 {
        bail!("--concurrency and --creates must be at least 1");
    }
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build of the load generator; use `cargo run --release -p pipelet-bench`"
        );
    }
    let per_endpoint = args.duration.unwrap_or(if args.quick { 1.5 } else { 5.0 });
    if !(per_endpoint > 0.0 && per_endpoint <= 600.0) {
        bail!("--duration must be between 0 and 600 seconds");
    }
    let plan = PollPlan {
        concurrency: args.concurrency,
        per_endpoint: Duration::from_secs_f64(per_endpoint),
        slice: Duration::from_millis(if args.quick { 250 } else { 500 }),
        warmup: Duration::from_millis(if args.quick { 250 } else { 500 }),
        only: match args.only {
            Some(Only::Status) => Some(load::Endpoint::Status),
            Some(Only::Health) => Some(load::Endpoint::Health),
            Some(Only::Dispatch | Only::Engines | Only::Eta | Only::Webhooks) | None => None,
        },
    };
    let only_other = matches!(
        args.only,
        Some(Only::Dispatch | Only::Engines | Only::Eta | Only::Webhooks)
    );
    let run_http = !args.no_server && !only_other;
    let run_dispatch =
        !args.no_server && !args.no_dispatch && matches!(args.only, None | Some(Only::Dispatch));
    let run_engines = !args.no_server
        && (args.only == Some(Only::Engines) || (args.engines && args.only.is_none()));
    let run_eta =
        !args.no_server && (args.only == Some(Only::Eta) || (args.eta && args.only.is_none()));
    let run_webhooks = !args.no_server
        && (args.only == Some(Only::Webhooks) || (args.webhooks && args.only.is_none()));
    if args.only == Some(Only::Webhooks) && args.no_server {
        bail!("--only webhooks needs the server (drop --no-server)");
    }
    if run_webhooks && (args.webhook_jobs == 0 || args.downloads == 0) {
        bail!("--webhook-jobs and --downloads must be at least 1");
    }
    if args.only == Some(Only::Eta) && args.no_server {
        bail!("--only eta needs the server (drop --no-server)");
    }
    if run_eta && args.eta_jobs == 0 {
        bail!("--eta-jobs must be at least 1");
    }
    let run_render = !args.no_render && !only_other;
    if args.only == Some(Only::Engines) && args.no_server {
        bail!("--only engines needs the server (drop --no-server)");
    }
    let dispatch_jobs = args
        .dispatch_jobs
        .unwrap_or(if args.quick { 20 } else { 50 });
    if run_dispatch && dispatch_jobs < 2 {
        bail!("--dispatch-jobs must be at least 2");
    }
    let reps = args.render_reps.unwrap_or(if args.quick { 1 } else { 2 });
    let tmp = tempfile::Builder::new()
        .prefix("pipelet-bench-")
        .tempdir()
        .context("cannot create a temporary directory")?;

    let mut server_bin = None;
    let mut build_time = Duration::ZERO;
    if run_http || run_dispatch || run_engines || run_eta || run_webhooks {
        let building = Instant::now();
        server_bin = Some(server::find_or_build(
            args.server_bin.as_deref(),
            args.no_build,
        )?);
        build_time = building.elapsed();
    }
    let http = match &server_bin {
        Some(bin) if run_http => Some(http_phases(&args, bin, tmp.path(), &plan)?),
        _ => None,
    };
    let dispatch = match &server_bin {
        Some(bin) if run_dispatch => {
            let plan = dispatch_latency::Plan {
                idle_jobs: dispatch_jobs,
                busy_jobs: dispatch_jobs,
                rust_log: args.server_log.clone(),
            };
            Some(dispatch_latency::run(bin, tmp.path(), &plan)?)
        }
        _ => None,
    };

    let engines = match &server_bin {
        Some(bin) if run_engines => {
            let plan = engines::Plan {
                concurrency: args.concurrency,
                creates: args.creates,
                polls: PollPlan {
                    only: None,
                    ..plan.clone()
                },
                claim_workers: args.claim_workers,
                claim_duration: plan.per_endpoint,
                finish: args.claim_finish,
                pg_url: args.pg_url.clone(),
                vacuum: args.pg_vacuum,
                rust_log: args.server_log.clone(),
                keep: args.keep_tmp,
            };
            Some(engines::run(bin, tmp.path(), &plan)?)
        }
        _ => None,
    };

    let eta = match &server_bin {
        Some(bin) if run_eta => {
            let plan = eta::Plan {
                jobs: args.eta_jobs,
                rust_log: args.server_log.clone(),
            };
            Some(eta::run(bin, tmp.path(), &plan)?)
        }
        _ => None,
    };

    let webhooks = match &server_bin {
        Some(bin) if run_webhooks => {
            let plan = webhooks::Plan {
                jobs: args.webhook_jobs,
                downloads: args.downloads,
                rust_log: args.server_log.clone(),
            };
            Some(webhooks::run(bin, tmp.path(), &plan)?)
        }
        _ => None,
    };

    let renders = if !run_render {
        Vec::new()
    } else {
        eprintln!("rendering previews ({reps} per case)…");
        let out = tmp.path().join("renders");
        std::fs::create_dir_all(&out)
            .with_context(|| format!("cannot create {}", out.display()))?;
        render::run_all(&out, reps)?
    };

    if args.keep_tmp {
        let kept = tmp.keep();
        eprintln!("kept the temporary directory {}", kept.display());
    }
    let elapsed = started.elapsed();
    let results = Results {
        http,
        dispatch,
        engines,
        eta,
        webhooks,
        renders,
    };
    print_report(
        &args,
        cpus,
        server_bin.as_deref(),
        &results,
        (elapsed.saturating_sub(build_time), build_time),
    );
    Ok(())
}

fn http_phases(
    args: &Args,
    bin: &std::path::Path,
    tmp: &std::path::Path,
    plan: &PollPlan,
) -> anyhow::Result<HttpResults> {
    let data_dir = tmp.join("data");
    let server = Server::start(bin, &data_dir, args.server_log.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    let result = rt.block_on(async {
        let (addr, key, pid) = (server.addr, server.admin_key.as_str(), server.pid());
        eprintln!(
            "server {} on {addr} (pid {pid}); creating {} jobs from {} connections…",
            bin.display(),
            args.creates,
            args.concurrency
        );
        let cpu = CpuProbe::server(pid);
        let creates = load::creates(addr, key, &cpu, args.concurrency, args.creates).await?;
        let want = args.creates - 1;
        if !creates.positions_exact || creates.last_position != want {
            bail!(
                "create responses did not carry the queue positions 0..{want} exactly once \
                 (highest was {})",
                creates.last_position
            );
        }
        let check = |phase: &'static str, (state, position): (String, Option<u64>)| match position {
            Some(p) if state == "IN_QUEUE" && p >= want => Ok(p),
            _ => bail!(
                "{phase}: the last job should be IN_QUEUE at position >= {want}, \
                     but it is {state} at {position:?}"
            ),
        };
        let position_before = check(
            "before the polls",
            load::job_status(addr, key, &creates.last_id).await?,
        )?;
        eprintln!(
            "polling status (position {position_before}) vs health for {:.1} s each…",
            plan.per_endpoint.as_secs_f64()
        );
        let polls = load::polls(addr, key, &cpu, &creates.last_id, plan).await?;
        let position_after = check(
            "after the polls",
            load::job_status(addr, key, &creates.last_id).await?,
        )?;
        anyhow::Ok(HttpResults {
            creates,
            polls,
            position_before,
            position_after,
        })
    });
    drop(rt);
    match result {
        Ok(results) => {
            server.stop()?;
            Ok(results)
        }
        Err(e) => Err(e.context(format!("server log tail:\n{}", server.log_tail()))),
    }
}

fn ok(pass: bool) -> &'static str {
    if pass { "ok" } else { "MISS" }
}

fn endpoint_json(e: &EndpointReport) -> serde_json::Value {
    json!({
        "requests": e.requests,
        "per_s": round(e.per_second(), 1),
        "p50_ms": e.latency.p50_ms,
        "p99_ms": e.latency.p99_ms,
        "max_ms": e.latency.max_ms,
        "server_cpu_us_per_req": round(e.server_cpu_us_per_request(), 1),
        "bench_cpu_us_per_req": round(e.client_cpu_us_per_request(), 1),
    })
}

fn plan_seconds(a: &EndpointReport, b: &EndpointReport) -> f64 {
    a.measured.max(b.measured).as_secs_f64()
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn print_report(
    args: &Args,
    cpus: usize,
    server_bin: Option<&std::path::Path>,
    results: &Results,
    (elapsed, build): (Duration, Duration),
) {
    let http = results.http.as_ref();
    let renders = &results.renders;
    let mut summary = json!({
        "bench": "pipelet",
        "quick": args.quick,
        "cpus": cpus,
        "concurrency": args.concurrency,
    });
    println!();
    println!(
        "pipelet-bench: {cpus} CPUs shared by server and load generator; {} connections",
        args.concurrency
    );
    if let (Some(h), Some(bin)) = (http, server_bin) {
        let c = &h.creates;
        let creates_per_s = c.count as f64 / c.elapsed.as_secs_f64();
        let (s, hl) = (&h.polls.status, &h.polls.health);
        let both = !s.measured.is_zero() && !hl.measured.is_zero();
        let ratio = both.then(|| s.per_second() / hl.per_second());
        println!(
            "server: {} serve --workers 0 (SQLite, fresh data dir)",
            bin.display()
        );
        println!();
        println!(
            "{:<24} {:>9} {:>10} {:>8} {:>8} {:>13} {:>13}",
            "phase", "requests", "req/s", "p50 ms", "p99 ms", "srv µs/req", "bench µs/req"
        );
        let row = |name: &str, n: u64, rate: f64, p50: f64, p99: f64, srv: f64, cli: f64| {
            println!(
                "{name:<24} {n:>9} {rate:>10.0} {p50:>8.2} {p99:>8.2} {srv:>13.0} {cli:>13.0}"
            );
        };
        let per_req = |d: Duration, n: u64| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        row(
            "create (fills queue)",
            c.count,
            creates_per_s,
            c.latency.p50_ms,
            c.latency.p99_ms,
            per_req(c.cpu.server, c.count),
            per_req(c.cpu.client, c.count),
        );
        for (name, e) in [
            (format!("status (pos {})", h.position_before), s),
            ("health".to_string(), hl),
        ] {
            if e.measured.is_zero() {
                continue;
            }
            row(
                &name,
                e.requests,
                e.per_second(),
                e.latency.p50_ms,
                e.latency.p99_ms,
                e.server_cpu_us_per_request(),
                e.client_cpu_us_per_request(),
            );
        }
        println!();
        if let Some(ratio) = ratio {
            println!(
                "status/health throughput ratio: {ratio:.2}  (target >= {TARGET_RATIO}: {})  <- the number to quote",
                ok(ratio >= TARGET_RATIO)
            );
            println!(
                "server CPU per request: a status poll costs {:.1}x a health check",
                s.server_cpu_us_per_request() / hl.server_cpu_us_per_request().max(1e-9)
            );
        }
        println!(
            "creates/s: {creates_per_s:.0}  (target >= {TARGET_CREATES_PER_S}: {}); queue positions exact: {}",
            ok(creates_per_s >= TARGET_CREATES_PER_S),
            c.positions_exact
        );
        summary["creates"] = json!({
            "count": c.count,
            "per_s": round(creates_per_s, 1),
            "p50_ms": c.latency.p50_ms,
            "p99_ms": c.latency.p99_ms,
            "server_cpu_us_per_req": round(per_req(c.cpu.server, c.count), 1),
            "bench_cpu_us_per_req": round(per_req(c.cpu.client, c.count), 1),
            "positions_exact": c.positions_exact,
        });
        if !s.measured.is_zero() {
            summary["status"] = endpoint_json(s);
        }
        summary["status_queue_position"] = json!(h.position_before);
        summary["status_queue_position_after"] = json!(h.position_after);
        if !hl.measured.is_zero() {
            summary["health"] = endpoint_json(hl);
        }
        summary["seconds_per_endpoint"] = json!(plan_seconds(s, hl));
        summary["targets"]["creates_per_s"] = json!(creates_per_s >= TARGET_CREATES_PER_S);
        if let Some(ratio) = ratio {
            summary["status_health_ratio"] = json!(round(ratio, 3));
            summary["targets"]["status_health_ratio"] = json!(ratio >= TARGET_RATIO);
        }
    }
    if let Some(reports) = &results.dispatch {
        print_dispatch(reports, &mut summary);
    }
    if let Some(report) = &results.engines {
        engines::print(report, &mut summary);
    }
    if let Some(report) = &results.eta {
        print_eta(report, &mut summary);
    }
    if let Some(report) = &results.webhooks {
        print_webhooks(report, &mut summary);
    }
    if !renders.is_empty() {
        println!();
        println!(
            "{:<12} {:>9} {:>7} {:>8} {:>8} {:>9} {:>10}",
            "preview", "size", "frames", "wall s", "cpu s", "cpu/wall", "bytes"
        );
        let mut cases = Vec::new();
        let mut preview_ok = true;
        for r in renders {
            let (wall, cpu) = (r.wall.as_secs_f64(), r.cpu.as_secs_f64());
            let target = (r.width, r.height) == (832, 480);
            let mark = if target {
                preview_ok &= cpu < TARGET_PREVIEW_CPU_S;
                format!(
                    "  (target < {TARGET_PREVIEW_CPU_S} s cpu: {})",
                    ok(cpu < TARGET_PREVIEW_CPU_S)
                )
            } else {
                String::new()
            };
            println!(
                "{:<12} {:>9} {:>7} {:>8.3} {:>8.3} {:>9.2} {:>10}{mark}",
                r.pipeline.as_str(),
                format!("{}x{}", r.width, r.height),
                r.frames,
                wall,
                cpu,
                cpu / wall.max(f64::MIN_POSITIVE),
                r.bytes
            );
            cases.push(json!({
                "pipeline": r.pipeline.as_str(),
                "width": r.width,
                "height": r.height,
                "frames": r.frames,
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
                "bytes": r.bytes,
            }));
        }
        summary["preview"] = json!(cases);
        summary["targets"]["preview_832x480_cpu"] = json!(preview_ok);
    }
    // The benchmark's own time, and apart from it the time spent building the server.
    summary["elapsed_s"] = json!(round(elapsed.as_secs_f64(), 1));
    summary["build_s"] = json!(round(build.as_secs_f64(), 1));
    println!();
    println!("{summary}");
}

fn spread_json(s: Spread) -> serde_json::Value {
    json!({
        "n": s.n,
        "p50": round(s.p50, 3),
        "p90": round(s.p90, 3),
        "max": round(s.max, 3),
    })
}

fn print_webhooks(report: &webhooks::Report, summary: &mut serde_json::Value) {
    let l = &report.latency;
    println!();
    println!(
        "webhooks: {} jobs completed by {} fake workers, webhooks to a local receiver",
        report.jobs,
        webhooks::WORKERS
    );
    println!(
        "  complete → `completed` webhook   p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        l.p50_ms, l.p99_ms, l.max_ms
    );
    println!(
        "  deliveries                       {} events in {:.2} s = {:.0} /s",
        report.events,
        report.delivery_wall.as_secs_f64(),
        report.deliveries_per_s()
    );
    println!(
        "download: {} MB result x {} sequential",
        webhooks::DOWNLOAD_BYTES / (1024 * 1024),
        report.downloads
    );
    println!(
        "  via video.url (signed link)      {:>9.1} MB/s",
        report.link_mb_s
    );
    println!(
        "  blob file read directly          {:>9.1} MB/s",
        report.direct_mb_s
    );
    println!("  ratio link / direct              {:>9.3}", report.ratio());
    summary["webhooks"] = json!({
        "jobs": report.jobs,
        "p50_ms": round(l.p50_ms, 2),
        "p99_ms": round(l.p99_ms, 2),
        "max_ms": round(l.max_ms, 2),
        "events": report.events,
        "deliveries_per_s": round(report.deliveries_per_s(), 1),
        "download_link_mb_s": round(report.link_mb_s, 1),
        "download_direct_mb_s": round(report.direct_mb_s, 1),
        "download_ratio": round(report.ratio(), 3),
    });
}

fn print_eta(report: &eta::Report, summary: &mut serde_json::Value) {
    let e = eta::errors(report);
    let deepest = report.samples.iter().map(|s| s.position).max().unwrap_or(0);
    println!();
    println!(
        "eta: estimated_start_seconds vs the real start, {} requests, {} workers, Poisson \
         arrivals at {:.2}x their capacity; run times = the contract's 90 s (480p) / 180 s \
         (720p) x {} x U[0.75, 1.25], mean {:.3} s; {} warm-up jobs first",
        report.jobs,
        eta::WORKERS,
        eta::LOAD,
        eta::TIME_SCALE,
        report.mean_run_s,
        eta::WARMUP_JOBS
    );
    println!(
        "  estimated while IN_QUEUE: {} (deepest position {deepest}); started before \
         their first poll: {}; null estimates: {}",
        report.samples.len(),
        report.started_before_poll,
        report.null_estimates
    );
    println!(
        "  real wait: mean {:.3} s; |estimate - real|: mean {:.3} s, p50 {:.3} s, p90 {:.3} s, \
         max {:.3} s; bias (estimate - real) {:+.3} s",
        e.mean_real, e.mae, e.abs.p50, e.abs.p90, e.abs.max, e.bias
    );
    println!(
        "  relative: sum|error| / sum(real) = {:.3}; |error| / real for the {} waits of at \
         least one mean run: p50 {:.3}, p90 {:.3}",
        e.weighted_rel, e.rel.n, e.rel.p50, e.rel.p90
    );
    summary["eta"] = json!({
        "jobs": report.jobs,
        "workers": eta::WORKERS,
        "estimated": report.samples.len(),
        "started_before_poll": report.started_before_poll,
        "null_estimates": report.null_estimates,
        "mean_run_s": round(report.mean_run_s, 3),
        "mean_real_wait_s": round(e.mean_real, 3),
        "abs_error_s": {"mean": round(e.mae, 3), "p50": round(e.abs.p50, 3),
                        "p90": round(e.abs.p90, 3), "max": round(e.abs.max, 3)},
        "bias_s": round(e.bias, 3),
        "relative": {"weighted": round(e.weighted_rel, 3), "n": e.rel.n,
                     "p50": round(e.rel.p50, 3), "p90": round(e.rel.p90, 3)},
        "elapsed_s": round(report.elapsed.as_secs_f64(), 1),
    });
}

fn print_dispatch(reports: &[ModeReport], summary: &mut serde_json::Value) {
    use dispatch_latency::TARGET_P50_MS;
    println!();
    println!(
        "dispatch: preview runner, {}, one worker (concurrency 1); \
         idle = one job at a time, busy = all queued at once",
        dispatch_latency::PROBE_DESCRIPTION
    );
    println!(
        "{:<14} {:<58} {:>4} {:>8} {:>8} {:>8}",
        "worker", "ms", "n", "p50", "p90", "max"
    );
    let mut out = serde_json::Map::new();
    for r in reports {
        let idle_db = spread(&r.idle_db);
        let gap_db = spread(&r.busy_db_gap);
        // (what, figures, whether the p50 target applies)
        let rows: [(&str, Spread, bool); 7] = [
            (
                "idle: started_at - created_at [DB; the definition]",
                idle_db,
                true,
            ),
            (
                "idle: create's 200 -> IN_PROGRESS polled [client]",
                spread(&r.idle_client),
                false,
            ),
            (
                "idle:   that poll's round trip [client's resolution]",
                spread(&r.idle_poll_rtt),
                false,
            ),
            (
                "idle: 'request queued' -> 'job started' [logs]",
                spread(&r.idle_log),
                true,
            ),
            (
                "busy gap: started_at(i+1) - started_at(i) - run(i) [DB]",
                gap_db,
                true,
            ),
            (
                "busy gap: 'job started' (i+1) - (i) - run(i) [worker log]",
                spread(&r.busy_log_gap),
                true,
            ),
            ("render: run_seconds [worker]", spread(&r.render), false),
        ];
        for (i, (name, s, targeted)) in rows.iter().enumerate() {
            let who = if i == 0 { r.mode.label() } else { "" };
            let mark = if *targeted {
                format!("  (p50 <= {TARGET_P50_MS}: {})", ok(s.p50 <= TARGET_P50_MS))
            } else {
                String::new()
            };
            println!(
                "{who:<14} {name:<58} {:>4} {:>8.2} {:>8.2} {:>8.2}{mark}",
                s.n, s.p50, s.p90, s.max
            );
        }
        if r.busy_excluded > 0 {
            println!(
                "{:<14} ({} busy pairs left out: the next job was created after the render ended)",
                "", r.busy_excluded
            );
        }
        out.insert(
            r.mode.key().to_string(),
            json!({
                "idle": {
                    "db_ms": spread_json(idle_db),
                    "client_ms": spread_json(spread(&r.idle_client)),
                    "client_poll_rtt_ms": spread_json(spread(&r.idle_poll_rtt)),
                    "log_ms": spread_json(spread(&r.idle_log)),
                },
                "busy": {
                    "db_gap_ms": spread_json(gap_db),
                    "log_gap_ms": spread_json(spread(&r.busy_log_gap)),
                    "excluded_pairs": r.busy_excluded,
                },
                "render_ms": spread_json(spread(&r.render)),
                "elapsed_s": round(r.elapsed.as_secs_f64(), 1),
            }),
        );
        if r.mode == dispatch_latency::Mode::Remote {
            summary["targets"]["dispatch_idle_p50"] = json!(idle_db.p50 <= TARGET_P50_MS);
            summary["targets"]["dispatch_busy_gap_p50"] = json!(gap_db.p50 <= TARGET_P50_MS);
        }
    }
    println!(
        "DB: the server's clock in whole ms (each difference +-1 ms; started_at is stamped \
         before the claim commits). logs/client: microsecond clocks on this machine. \
         JSON targets: remote worker, DB."
    );
    out.insert("job".into(), json!(dispatch_latency::PROBE_DESCRIPTION));
    summary["dispatch"] = serde_json::Value::Object(out);
}
