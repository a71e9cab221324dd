//! The `wan` runner: real Wan 2.2 generation by a long-lived Python process
//! (`runners/wan`, Hugging Face diffusers) that keeps its pipelines in GPU memory
//! between jobs, driven over JSON lines on stdin/stdout (`runners/wan/PROTOCOL.md`).
//!
//! [`WanRunner`] owns one such process (one per GPU: pick the GPU with
//! `CUDA_VISIBLE_DEVICES`) and supervises it: started on first use (or by
//! [`WanRunner::start`]), a `load` sent when a job needs a pipeline that is not resident,
//! progress relayed, `cancel` sent when the job's token fires. If the process dies or
//! breaks the protocol, the job in hand fails with a transient error (so it is retried)
//! and the next job starts a fresh process.

use std::path::Path;
use std::time::Duration;

use pipelet_api::Pipeline;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::{ProgressFn, RenderJob, RenderOutput, Runner, RunnerError};

mod config;
mod job;
mod lines;
mod process;
pub mod protocol;

pub use config::{PipelineSource, WanConfig, find_runner_dir, is_runner_dir, lora_pair};
use job::Outcome;
use process::RunnerProcess;
pub use protocol::{Expert, LoraSpec};

/// The name recorded in results.
pub const BACKEND: &str = "wan";

/// The Wan 2.2 runner: one Python process, one job at a time.
pub struct WanRunner {
    config: WanConfig,
    process: Mutex<Option<RunnerProcess>>,
}

impl WanRunner {
    /// A runner for `config`; its Python process starts on the first job, or at
    /// [`WanRunner::start`].
    pub fn new(config: WanConfig) -> Self {
        Self {
            config,
            process: Mutex::new(None),
        }
    }

    /// Starts the process now (instead of on the first job) so a broken set-up shows at
    /// start-up. Returns a line describing the runner.
    pub async fn start(&self) -> Result<String, RunnerError> {
        let mut slot = self.process.lock().await;
        let process = Self::ensure_started(&self.config, &mut slot).await?;
        let r = &process.ready;
        let mut versions: Vec<String> =
            r.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
        versions.sort();
        Ok(format!(
            "{} {} ({}), {}",
            r.device,
            r.device_name.as_deref().unwrap_or(""),
            r.dtype,
            versions.join(", ")
        ))
    }

    /// The runner process's id, if one runs.
    pub async fn pid(&self) -> Option<u32> {
        self.process.lock().await.as_ref().and_then(|p| p.pid())
    }

    /// Closes the runner's stdin and waits for it to exit (it finishes nothing: the
    /// worker only calls this once its jobs are done).
    pub async fn shutdown(&self) {
        if let Some(mut process) = self.process.lock().await.take() {
            process.stop(Duration::from_secs(10)).await;
        }
    }

    async fn ensure_started<'a>(
        config: &WanConfig,
        slot: &'a mut Option<RunnerProcess>,
    ) -> Result<&'a mut RunnerProcess, RunnerError> {
        if slot.is_none() {
            tracing::info!(python = %config.python.display(), dir = %config.runner_dir.display(), "starting the wan runner");
            let process = RunnerProcess::start(config)
                .await
                .map_err(|why| RunnerError::transient("the model runner could not start", why))?;
            tracing::info!(pid = ?process.pid(), device = %process.ready.device, "wan runner ready");
            *slot = Some(process);
        }
        slot.as_mut()
            .ok_or_else(|| RunnerError::Transient("the wan runner did not start".into()))
    }

    async fn run_in_process(
        &self,
        job: &RenderJob,
        out: &Path,
        progress: &ProgressFn,
        cancel: &CancellationToken,
    ) -> Result<RenderOutput, RunnerError> {
        let source = self.config.source(job.pipeline).ok_or_else(|| {
            RunnerError::permanent(
                format!("this worker has no {} model", job.pipeline.long_name()),
                format!(
                    "this wan runner has no {} model (--wan-{})",
                    job.pipeline.long_name(),
                    job.pipeline
                ),
            )
        })?;
        let image = write_input_image(job, out).await?;
        let mut slot = self.process.lock().await;
        if let Some(stale) = slot.take_if(|p| p.in_flight) {
            let why = stale
                .kill_and_describe("was abandoned mid-job", Duration::ZERO)
                .await;
            tracing::warn!("{why}; starting a new one");
        }
        let process = Self::ensure_started(&self.config, &mut slot).await?;
        process.in_flight = true;
        let outcome = match job::ensure_loaded(process, job, source).await {
            Err(outcome) => outcome,
            Ok(()) if cancel.is_cancelled() => Outcome::Finished(Err(RunnerError::Cancelled)),
            Ok(()) => {
                let image_path = image.as_ref().map(|f| f.path());
                job::generate(
                    process,
                    &self.config,
                    job,
                    image_path,
                    out,
                    progress,
                    cancel,
                )
                .await
            }
        };
        if let Some(process) = slot.as_mut() {
            process.in_flight = false;
        }
        match outcome {
            Outcome::Finished(Ok(done)) => output(job, out, done).await,
            Outcome::Finished(Err(e)) => Err(e),
            Outcome::Fatal(e) => {
                if let Some(process) = slot.take() {
                    let why = process
                        .kill_and_describe("exited after a fatal error", process::EXIT_GRACE)
                        .await;
                    tracing::warn!("{why}");
                }
                Err(e)
            }
            Outcome::Broken(broken) => {
                let why = match slot.take() {
                    Some(process) => process.describe_broken(broken).await,
                    None => "wan runner failed".to_string(),
                };
                tracing::warn!("{why}; it restarts on the next job");
                // The process's own words (stderr, exit status) are for operators.
                Err(RunnerError::transient(
                    "the model runner stopped unexpectedly",
                    why,
                ))
            }
        }
    }
}

#[async_trait::async_trait]
impl Runner for WanRunner {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn pipelines(&self) -> Vec<Pipeline> {
        Pipeline::ALL
            .into_iter()
            .filter(|p| self.config.source(*p).is_some())
            .collect()
    }

    async fn run(
        &self,
        job: &RenderJob,
        out: &Path,
        progress: ProgressFn,
        cancel: CancellationToken,
    ) -> Result<RenderOutput, RunnerError> {
        let out = std::path::absolute(out).map_err(|e| {
            RunnerError::transient(
                "the worker cannot write the video",
                format!("output path {}: {e}", out.display()),
            )
        })?;
        let result = self.run_in_process(job, &out, &progress, &cancel).await;
        if result.is_err() {
            match tokio::fs::remove_file(&out).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %out.display(), error = %e, "cannot remove a stale output file")
                }
            }
        }
        result
    }
}

/// Writes an i2v job's image beside `out` for the runner; removed when dropped.
async fn write_input_image(
    job: &RenderJob,
    out: &Path,
) -> Result<Option<tempfile::NamedTempFile>, RunnerError> {
    let Some(bytes) = job.image.clone() else {
        return match job.pipeline {
            Pipeline::I2v => Err(RunnerError::Permanent(
                "an image-to-video job needs an input image".into(),
            )),
            Pipeline::T2v => Ok(None),
        };
    };
    let dir = out.parent().unwrap_or(Path::new(".")).to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut file = tempfile::Builder::new()
            .prefix(".pipelet-wan-input-")
            .tempfile_in(&dir)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.as_file().sync_all()?;
        Ok(file)
    })
    .await
    .map_err(|e| {
        RunnerError::transient(
            "cannot write the input image",
            format!("cannot write the input image: {e}"),
        )
    })?
    .map(Some)
    .map_err(|e: std::io::Error| {
        // tempfile's errors name the path: for operators only.
        RunnerError::transient(
            "cannot write the input image",
            format!("cannot write the input image: {e}"),
        )
    })
}

/// Checks the runner's `done` against the job and the file on disk.
async fn output(
    job: &RenderJob,
    out: &Path,
    done: protocol::Done,
) -> Result<RenderOutput, RunnerError> {
    let meta = tokio::fs::metadata(out).await.map_err(|e| {
        RunnerError::transient(
            "the model runner's video cannot be read",
            format!(
                "the wan runner reported {} but it cannot be read: {e}",
                done.path
            ),
        )
    })?;
    let made = (done.width, done.height, done.frames, done.fps);
    if made
        != (
            job.spec.width,
            job.spec.height,
            job.spec.num_frames,
            job.spec.fps,
        )
    {
        return Err(RunnerError::Transient(
            format!(
                "the wan runner made {}x{}, {} frames at {} fps, not {}x{}, {} frames at {} fps",
                done.width,
                done.height,
                done.frames,
                done.fps,
                job.spec.width,
                job.spec.height,
                job.spec.num_frames,
                job.spec.fps
            )
            .into(),
        ));
    }
    tracing::debug!(job_id = %job.job_id, seconds = done.seconds, bytes = meta.len(), "wan video rendered");
    Ok(RenderOutput {
        path: out.to_path_buf(),
        bytes: meta.len(),
        width: done.width,
        height: done.height,
        frames: done.frames,
        fps: done.fps,
        backend: BACKEND,
    })
}
