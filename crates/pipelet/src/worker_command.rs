//! `pipelet worker`: a remote agent that pulls jobs from a server's worker API and runs
//! them with a runner (`preview`, or `wan`: see [`crate::wan_args`]). Runs the same loop
//! as `serve`'s in-process workers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pipelet_api::Pipeline;
use pipelet_runner::Runner;
use pipelet_runner::preview::PreviewRunner;
use pipelet_runner::wan::WanRunner;
use pipelet_worker::{HttpSource, Worker, WorkerConfig};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// The server's base URL, e.g. http://10.0.0.5:8080.
    #[arg(long, env = "PIPELET_SERVER")]
    server: String,
    /// A worker-role key (`pipelet keys create --role worker`).
    #[arg(long, env = "PIPELET_KEY", hide_env_values = true)]
    key: String,
    /// Which runner renders the jobs.
    #[arg(long, env = "PIPELET_RUNNER", value_enum, default_value = "preview")]
    runner: RunnerKind,
    /// This worker's name in job history and metrics (default: host name and pid).
    #[arg(long, env = "PIPELET_WORKER_NAME")]
    name: Option<String>,
    /// Jobs run at once by this process. For GPUs run one process per GPU instead
    /// (CUDA_VISIBLE_DEVICES), each with concurrency 1.
    #[arg(long, env = "PIPELET_CONCURRENCY", default_value_t = 1)]
    concurrency: u32,
    /// Pipelines to serve (default: all the runner supports).
    #[arg(long, env = "PIPELET_PIPELINES", value_delimiter = ',')]
    pipelines: Vec<PipelineArg>,
    /// Where videos are written before upload (default: a folder in the temp dir).
    #[arg(long, env = "PIPELET_SCRATCH_DIR")]
    scratch_dir: Option<PathBuf>,
    /// On SIGTERM, seconds the job in hand may take before it is handed back.
    #[arg(long, env = "PIPELET_DRAIN_SECS", default_value_t = 60)]
    drain_secs: u64,
    /// On SIGTERM, after the drain, seconds spent handing the job back (or delivering a
    /// finished video) before exiting anyway; a job not handed back returns to the queue
    /// when its lease expires.
    #[arg(long, env = "PIPELET_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    shutdown_timeout_secs: u64,
    /// Seconds a claim waits on the server for a job (long poll).
    #[arg(long, env = "PIPELET_POLL_SECS", default_value_t = 25)]
    poll_secs: u64,
    /// Seconds a finished video's delivery is retried while the server is unreachable.
    #[arg(long, env = "PIPELET_DELIVERY_TIMEOUT_SECS", default_value_t = 600)]
    delivery_timeout_secs: u64,
    #[command(flatten)]
    wan: crate::wan_args::WanArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum RunnerKind {
    /// The built-in CPU renderer (no GPU, no weights).
    Preview,
    /// Wan 2.2 with diffusers in a supervised Python process (runners/wan), one per GPU.
    Wan,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PipelineArg {
    T2v,
    I2v,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into())
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    if !(args.server.starts_with("http://") || args.server.starts_with("https://")) {
        anyhow::bail!(
            "--server {:?} must start with http:// or https://",
            args.server
        );
    }
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    if args.poll_secs == 0 || args.poll_secs > 30 {
        anyhow::bail!("--poll-secs must be between 1 and 30");
    }
    let mut wan = None;
    let runner: Arc<dyn Runner> = match args.runner {
        RunnerKind::Preview => Arc::new(PreviewRunner::new()),
        RunnerKind::Wan => {
            if args.concurrency != 1 {
                anyhow::bail!(
                    "--runner wan renders one job at a time: use --concurrency 1 and one worker per GPU (CUDA_VISIBLE_DEVICES)"
                );
            }
            let runner = Arc::new(WanRunner::new(args.wan.config()?));
            // Start Python now, so a missing interpreter or package fails here, not per job.
            let about = runner
                .start()
                .await
                .map_err(|e| anyhow::anyhow!("cannot start the wan runner: {e}"))?;
            tracing::info!(runner = %about, "wan runner ready");
            wan = Some(runner.clone());
            runner
        }
    };
    let supported = runner.pipelines();
    let pipelines: Vec<Pipeline> = if args.pipelines.is_empty() {
        supported.clone()
    } else {
        args.pipelines
            .iter()
            .map(|p| match p {
                PipelineArg::T2v => Pipeline::T2v,
                PipelineArg::I2v => Pipeline::I2v,
            })
            .collect()
    };
    if let Some(p) = pipelines.iter().find(|p| !supported.contains(p)) {
        anyhow::bail!("the {} runner cannot serve {p}", runner.name());
    }
    let name = args
        .name
        .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
    let scratch = args.scratch_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pipelet-worker-{}", std::process::id()))
    });
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create scratch dir {}", scratch.display()))?;
    let source = Arc::new(HttpSource::new(&args.server, &args.key)?.with_backend(runner.name()));

    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let mut loops = JoinSet::new();
    for n in 0..args.concurrency {
        let worker_id = if args.concurrency == 1 {
            name.clone()
        } else {
            format!("{name}/{n}")
        };
        let worker = Worker::new(
            source.clone(),
            runner.clone(),
            WorkerConfig {
                worker_id,
                pipelines: pipelines.clone(),
                // The server's lease settings win; these are only fallbacks.
                lease: Duration::from_secs(30),
                heartbeat: Duration::from_secs(5),
                progress_interval: Duration::from_millis(500),
                max_wait_for_switch: Duration::from_secs(120),
                poll_wait: Duration::from_secs(args.poll_secs),
                scratch_dir: scratch.clone(),
                delivery_timeout: Duration::from_secs(args.delivery_timeout_secs),
                pipelined_delivery: true,
            },
        )
        .with_shutdown_timeout(Duration::from_secs(args.shutdown_timeout_secs));
        loops.spawn(worker.run(stop.clone(), abort.clone()));
    }
    tracing::info!(server = %args.server, %name, concurrency = args.concurrency, runner = runner.name(), "worker started");

    // A loop ends on its own only when the server refused the key (or, by a bug, all of
    // them did); then there is nothing to drain: stop at once and say why.
    let refused = tokio::select! {
        () = crate::signals::shutdown() => None,
        refused = first_refusal(&mut loops) => refused,
    };
    if let Some(refused) = refused {
        stop.cancel();
        abort.cancel();
        while loops.join_next().await.is_some() {}
        if let Some(wan) = wan {
            wan.shutdown().await;
        }
        let _ = std::fs::remove_dir(&scratch);
        anyhow::bail!(
            "{refused}; check --key (or PIPELET_KEY): it must be a worker key of this \
             server (`pipelet keys create --role worker`)"
        );
    }
    tracing::info!(
        drain = args.drain_secs,
        "stopping: no new jobs; finishing the one in hand"
    );
    stop.cancel();
    let drain = Duration::from_secs(args.drain_secs);
    if tokio::time::timeout(drain, async { while loops.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(
            shutdown_timeout = args.shutdown_timeout_secs,
            "drain time is up: handing the job back to the queue"
        );
        abort.cancel();
        while loops.join_next().await.is_some() {}
    }
    if let Some(wan) = wan {
        wan.shutdown().await;
    }
    let _ = std::fs::remove_dir(&scratch);
    Ok(())
}

/// Waits for the worker loops; the first refusal of the key, or `None` when every loop
/// ended without one.
async fn first_refusal(
    loops: &mut JoinSet<Result<(), pipelet_worker::SourceError>>,
) -> Option<pipelet_worker::SourceError> {
    while let Some(done) = loops.join_next().await {
        if let Ok(Err(e)) = done {
            return Some(e);
        }
    }
    None
}
