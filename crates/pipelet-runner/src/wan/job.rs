//! One job's exchange with a started runner: `load` if the pipeline is not resident,
//! `generate`, progress, `cancel` when the token fires, and the answer mapped to a
//! [`RunnerError`] (or to [`Broken`] when the process itself failed).

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::process::{Broken, RunnerProcess};
use super::protocol::{Command, Done, ErrorEvent, Event, GenerateSpec};
use super::{PipelineSource, WanConfig};
use crate::{Progress, ProgressFn, RenderJob, RunnerError};

/// How long a cancelled job may take to stop (a VAE decode in progress cannot be
/// interrupted) before the process is killed.
const CANCEL_GRACE: Duration = Duration::from_secs(180);

/// How a job's exchange ended.
pub enum Outcome {
    Finished(Result<Done, RunnerError>),
    /// The process failed; it must be replaced. The job failed with a transient error.
    Broken(Broken),
    /// The runner answered, then said it is exiting (`fatal`): replace it.
    Fatal(RunnerError),
}

/// Makes `job.pipeline` resident in `process`; `Err` says how the job ends instead.
pub async fn ensure_loaded(
    process: &mut RunnerProcess,
    job: &RenderJob,
    source: &PipelineSource,
) -> Result<(), Outcome> {
    let name = job.pipeline.as_str();
    if process.resident.iter().any(|p| p == name) {
        return Ok(());
    }
    tracing::info!(pipeline = name, model = %source.model, "loading the wan pipeline");
    let load = Command::Load {
        pipeline: name.to_string(),
        model: source.model.clone(),
        loras: source.loras.clone(),
    };
    // A load may evict other pipelines even when it fails: trust only the next `loaded`.
    process.resident.clear();
    process.send(&load).await.map_err(Outcome::Broken)?;
    loop {
        match process.recv().await {
            Ok(Event::Loaded {
                pipeline,
                seconds,
                resident,
            }) if pipeline == name => {
                tracing::info!(pipeline = name, seconds, "wan pipeline loaded");
                process.resident = resident;
                return Ok(());
            }
            Ok(Event::Error(e)) if e.job_id.is_none() => {
                // The model's name may be a local path, and the message a traceback.
                let err = RunnerError::permanent(
                    format!("the {} model could not be loaded", job.pipeline.long_name()),
                    format!(
                        "the wan runner cannot load the {} model {}: {}",
                        job.pipeline.long_name(),
                        source.model,
                        e.message
                    ),
                );
                return Err(if e.fatal {
                    Outcome::Fatal(err)
                } else {
                    Outcome::Finished(Err(err))
                });
            }
            Ok(other) => tracing::debug!(event = ?other, "ignored while loading"),
            Err(b) => return Err(Outcome::Broken(b)),
        }
    }
}

/// Sends `generate` for `job` and follows it to its end.
pub async fn generate(
    process: &mut RunnerProcess,
    config: &WanConfig,
    job: &RenderJob,
    image_path: Option<&Path>,
    out: &Path,
    progress: &ProgressFn,
    cancel: &CancellationToken,
) -> Outcome {
    let spec = GenerateSpec {
        job_id: job.job_id.clone(),
        pipeline: job.pipeline.as_str().to_string(),
        prompt: job.spec.prompt.clone(),
        negative_prompt: job.spec.negative_prompt.clone(),
        width: job.spec.width,
        height: job.spec.height,
        num_frames: job.spec.num_frames,
        fps: job.spec.fps,
        steps: job.spec.steps,
        guidance: config.guidance,
        seed: job.seed,
        image_path: image_path.map(|p| p.to_string_lossy().into_owned()),
        output_path: out.to_string_lossy().into_owned(),
    };
    if let Err(b) = process.send(&Command::Generate(Box::new(spec))).await {
        return Outcome::Broken(b);
    }
    let mut cancel_sent = false;
    let mut cancel_deadline = None;
    loop {
        let event = tokio::select! {
            event = process.recv() => event,
            () = cancel.cancelled(), if !cancel_sent => {
                tracing::info!(job_id = %job.job_id, "cancelling the wan job");
                let stop = Command::Cancel { job_id: job.job_id.clone() };
                if let Err(b) = process.send(&stop).await {
                    return Outcome::Broken(b);
                }
                cancel_sent = true;
                cancel_deadline = Some(tokio::time::Instant::now() + CANCEL_GRACE);
                continue;
            }
            () = sleep_until(cancel_deadline) => {
                return Outcome::Broken(Broken::Timeout(format!(
                    "did not stop within {CANCEL_GRACE:?} of a cancel"
                )));
            }
        };
        let event = match event {
            Ok(event) => event,
            Err(b) => return Outcome::Broken(b),
        };
        match event {
            Event::Progress {
                job_id,
                done,
                total,
            } if job_id == job.job_id => progress(Progress { done, total }),
            Event::Done(done) if done.job_id == job.job_id => {
                if cancel.is_cancelled() {
                    // Finished just as the cancel went out: the result must not be used.
                    return Outcome::Finished(Err(RunnerError::Cancelled));
                }
                return Outcome::Finished(Ok(done));
            }
            Event::Cancelled { job_id } if job_id == job.job_id => {
                return Outcome::Finished(Err(RunnerError::Cancelled));
            }
            Event::Error(e) if e.job_id.as_deref().is_none_or(|id| id == job.job_id) => {
                let err = if cancel.is_cancelled() {
                    RunnerError::Cancelled
                } else {
                    job_error(job, &e)
                };
                return if e.fatal {
                    Outcome::Fatal(err)
                } else {
                    Outcome::Finished(Err(err))
                };
            }
            other => tracing::debug!(event = ?other, "ignored an event for another job"),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The runner's `error` for a job, as the worker reports it: the client reads what kind
/// of failure it was; the runner's own message (tracebacks, paths) is the detail.
fn job_error(job: &RenderJob, e: &ErrorEvent) -> RunnerError {
    let size = format!(
        "{}x{}, {} frames",
        job.spec.width, job.spec.height, job.spec.num_frames
    );
    let m = &e.message;
    match e.kind.as_str() {
        "oom" => RunnerError::permanent(
            format!("out of GPU memory at {size}"),
            format!("out of GPU memory at {size}: {m}"),
        ),
        "bad_weights" => RunnerError::permanent(
            "the model's weights on this worker are unusable",
            format!("the wan runner's weights are unusable: {m}"),
        ),
        "invalid" => RunnerError::permanent(
            "the model runner refused the job",
            format!("the wan runner refused the job: {m}"),
        ),
        "internal" => RunnerError::transient(
            "the model runner failed",
            format!("the wan runner failed: {m}"),
        ),
        other if e.retryable => RunnerError::transient(
            "the model runner failed",
            format!("the wan runner failed ({other}): {m}"),
        ),
        other => RunnerError::permanent(
            "the model runner failed",
            format!("the wan runner failed ({other}): {m}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelet_api::{JobSpec, Pipeline};

    fn job() -> RenderJob {
        RenderJob {
            job_id: "j".into(),
            pipeline: Pipeline::T2v,
            spec: JobSpec {
                width: 1280,
                height: 720,
                num_frames: 81,
                fps: 16,
                steps: 4,
                ..JobSpec::sample("p")
            },
            seed: 1,
            image: None,
        }
    }

    fn error(kind: &str, retryable: bool) -> ErrorEvent {
        ErrorEvent {
            kind: kind.into(),
            message: "CUDA out of memory. Tried to allocate 2.00 GiB".into(),
            retryable,
            job_id: Some("j".into()),
            pipeline: None,
            fatal: false,
        }
    }

    #[test]
    fn error_kinds_map_to_clear_messages() {
        let oom = job_error(&job(), &error("oom", false));
        assert!(
            matches!(&oom, RunnerError::Permanent(f)
                if f.reason == "out of GPU memory at 1280x720, 81 frames"
                && f.detail.starts_with("out of GPU memory at 1280x720, 81 frames: CUDA out of memory")),
            "{oom:?}"
        );
        // The runner's raw message stays in the detail, whatever the kind.
        for (kind, retryable) in [
            ("bad_weights", false),
            ("invalid", false),
            ("internal", true),
        ] {
            let e = job_error(&job(), &error(kind, retryable));
            assert!(!e.reason().contains("CUDA"), "{kind}: {e:?}");
            assert!(e.to_string().contains("CUDA out of memory"), "{kind}: {e}");
        }
        assert!(matches!(
            job_error(&job(), &error("bad_weights", false)),
            RunnerError::Permanent(_)
        ));
        assert!(matches!(
            job_error(&job(), &error("invalid", false)),
            RunnerError::Permanent(_)
        ));
        assert!(matches!(
            job_error(&job(), &error("internal", true)),
            RunnerError::Transient(_)
        ));
        assert!(matches!(
            job_error(&job(), &error("novel", true)),
            RunnerError::Transient(_)
        ));
    }
}
