//! The built-in CPU `preview` runner: real, cheap animations encoded to H.264 MP4, so
//! the embedded server and every test work on a machine without a GPU.
//!
//! This module owns the job flow (validate, render each frame, encode, mux, write the
//! file atomically) and its contract with the worker: progress after every frame and
//! after the final write, cancellation between frames, no file at `out` unless the
//! render succeeded. Rendering lives in [`t2v`] and [`i2v`], the "PREVIEW" mark every
//! frame carries in [`mark`], encoding in [`encode`], the container in [`crate::mp4`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use pipelet_api::Pipeline;
use tokio_util::sync::CancellationToken;

use crate::mp4::{Mp4Video, write_mp4};
use crate::{Progress, ProgressFn, RenderJob, RenderOutput, Runner, RunnerError};

mod encode;
mod i2v;
mod mark;
mod rng;
mod t2v;

use encode::{EncodedVideo, H264Encoder};
pub use mark::PreviewMark;

/// The name recorded in results, so nobody mistakes a preview for a real generation.
pub const BACKEND: &str = "preview";

/// Largest frame OpenH264 encodes (either orientation).
const MAX_LONG_SIDE: u32 = 3840;
const MAX_SHORT_SIDE: u32 = 2160;

/// The CPU preview renderer: t2v draws a prompt-seeded animation, i2v animates the
/// input image with a slow zoom and pan.
#[derive(Debug, Clone, Copy, Default)]
pub struct PreviewRunner;

impl PreviewRunner {
    /// The preview runner; it holds no state, so any number may run at once.
    pub fn new() -> Self {
        Self
    }
}

#[async_trait::async_trait]
impl Runner for PreviewRunner {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn pipelines(&self) -> Vec<Pipeline> {
        vec![Pipeline::T2v, Pipeline::I2v]
    }

    async fn run(
        &self,
        job: &RenderJob,
        out: &Path,
        progress: ProgressFn,
        cancel: CancellationToken,
    ) -> Result<RenderOutput, RunnerError> {
        // If this future is dropped mid-render, stop the blocking thread too.
        let token = cancel.child_token();
        let _stop_on_drop = token.clone().drop_guard();
        let (job, path) = (job.clone(), out.to_path_buf());
        let result = tokio::task::spawn_blocking(move || render(&job, &path, &*progress, &token))
            .await
            .unwrap_or_else(|e| {
                Err(RunnerError::transient(
                    "the preview renderer failed",
                    format!("the preview render task failed: {e}"),
                ))
            });
        if result.is_err() {
            // `out` was "created or truncated" for this job: leave nothing that could be
            // taken for a result (the render itself only ever writes a temporary file).
            match tokio::fs::remove_file(out).await {
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

/// Renders `job` to `out` on the current thread.
fn render(
    job: &RenderJob,
    out: &Path,
    progress: &(dyn Fn(Progress) + Send + Sync),
    cancel: &CancellationToken,
) -> Result<RenderOutput, RunnerError> {
    validate(job)?;
    let total = job.spec.num_frames + 1;
    if cancel.is_cancelled() {
        return Err(RunnerError::Cancelled);
    }
    let mut scene = Scene::new(job)?;
    let mark = PreviewMark::new(job.spec.width, job.spec.height);
    let mut encoder = H264Encoder::new(job.spec.width, job.spec.height, job.spec.fps)?;
    let mut rgb = vec![0u8; job.spec.width as usize * job.spec.height as usize * 3];
    for index in 0..job.spec.num_frames {
        if cancel.is_cancelled() {
            return Err(RunnerError::Cancelled);
        }
        scene.render(index, &mut rgb);
        mark.apply(&mut rgb);
        encoder.encode_rgb(&rgb)?;
        progress(Progress {
            done: index + 1,
            total,
        });
    }
    let video = encoder.finish()?;
    let bytes = write_atomically(job, &video, out, cancel)?;
    progress(Progress { done: total, total });
    tracing::debug!(job_id = %job.job_id, bytes, frames = job.spec.num_frames, "preview rendered");
    Ok(RenderOutput {
        path: out.to_path_buf(),
        bytes,
        width: job.spec.width,
        height: job.spec.height,
        frames: job.spec.num_frames,
        fps: job.spec.fps,
        backend: BACKEND,
    })
}

/// The API layer validates jobs; these checks keep a bad job from reaching code that
/// would panic (odd sizes in 4:2:0, encoder limits) or overflow counters.
fn validate(job: &RenderJob) -> Result<(), RunnerError> {
    let (w, h) = (job.spec.width, job.spec.height);
    if w == 0 || h == 0 || w % 2 != 0 || h % 2 != 0 {
        return Err(RunnerError::Permanent(
            format!("frame size {w}x{h} must be positive and even").into(),
        ));
    }
    if w.max(h) > MAX_LONG_SIDE || w.min(h) > MAX_SHORT_SIDE {
        return Err(RunnerError::Permanent(
            format!("frame size {w}x{h} exceeds the encoder's {MAX_LONG_SIDE}x{MAX_SHORT_SIDE}")
                .into(),
        ));
    }
    if job.spec.num_frames == 0 || job.spec.num_frames > 100_000 {
        return Err(RunnerError::Permanent(
            format!("num_frames {} is out of range", job.spec.num_frames).into(),
        ));
    }
    if job.spec.fps == 0 || job.spec.fps > 240 {
        return Err(RunnerError::Permanent(
            format!("fps {} is out of range", job.spec.fps).into(),
        ));
    }
    Ok(())
}

/// What draws the frames for a job.
enum Scene {
    Plasma(Box<t2v::Plasma>),
    KenBurns(Box<i2v::KenBurns>),
}

impl Scene {
    fn new(job: &RenderJob) -> Result<Self, RunnerError> {
        match job.pipeline {
            Pipeline::T2v => Ok(Self::Plasma(Box::new(t2v::Plasma::new(
                job.spec.width,
                job.spec.height,
                &job.spec.prompt,
                job.seed,
            )))),
            Pipeline::I2v => {
                let image = job.image.as_deref().ok_or_else(|| {
                    RunnerError::Permanent("an image-to-video job needs an input image".into())
                })?;
                let kb = i2v::KenBurns::new(
                    image,
                    job.spec.width,
                    job.spec.height,
                    job.spec.num_frames,
                    &job.spec.prompt,
                    job.seed,
                )?;
                Ok(Self::KenBurns(Box::new(kb)))
            }
        }
    }

    fn render(&mut self, index: u32, rgb: &mut [u8]) {
        match self {
            Self::Plasma(p) => p.render(index, rgb),
            Self::KenBurns(k) => k.render(index, rgb),
        }
    }
}

/// Muxes into a temporary file beside `out`, syncs it, then renames it over `out`, so a
/// crash leaves either no file or a complete one, never a truncated MP4.
fn write_atomically(
    job: &RenderJob,
    video: &EncodedVideo,
    out: &Path,
    cancel: &CancellationToken,
) -> Result<u64, RunnerError> {
    let io = |what: &str, e: &dyn std::fmt::Display| {
        RunnerError::transient(
            format!("{what} the video file"),
            format!("{what} {}: {e}", out.display()),
        )
    };
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".pipelet-preview-").suffix(".mp4.part");
    // The result gets the usual mode of a new file (0666 less umask), not tempfile's 0600.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder
        .tempfile_in(dir)
        .map_err(|e| io("cannot create a temporary file for", &e))?;
    let mp4 = Mp4Video {
        width: job.spec.width,
        height: job.spec.height,
        // 1000 ticks per frame keeps every timestamp exact.
        timescale: job.spec.fps * 1000,
        sample_delta: 1000,
        sps: &video.sps,
        pps: &video.pps,
        sample_sizes: &video.sample_sizes,
        keyframes: &video.keyframes,
    };
    let mut w = BufWriter::new(tmp.as_file());
    let bytes = write_mp4(&mut w, &mp4, &video.data).map_err(|e| io("cannot write", &e))?;
    w.flush().map_err(|e| io("cannot write", &e))?;
    drop(w);
    tmp.as_file()
        .sync_all()
        .map_err(|e| io("cannot sync", &e))?;
    // Last chance to honour a cancel: after the rename the result exists.
    if cancel.is_cancelled() {
        return Err(RunnerError::Cancelled);
    }
    tmp.persist(out)
        .map_err(|e| io("cannot move the result to", &e.error))?;
    // Make the rename itself durable; not every platform can sync a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(bytes)
}
