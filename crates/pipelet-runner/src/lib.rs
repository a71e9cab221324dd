//! Runners turn a validated job into an MP4 file. The worker loop only sees the
//! [`Runner`] trait; `preview` (CPU, in this crate) and `wan` (a supervised Python
//! process, GPU; in [`wan`]) implement it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pipelet_api::{JobSpec, Pipeline};
use tokio_util::sync::CancellationToken;

mod mp4;
pub mod preview;
pub mod wan;

/// Everything a runner needs to render one job. Sizes are final (already validated and
/// derived by the API layer): width and height are multiples of 16.
#[derive(Debug, Clone)]
pub struct RenderJob {
    /// The queue's job id; used in log lines and the Wan protocol, not in the video.
    pub job_id: String,
    /// Which model weights render it (i2v also needs `image`).
    pub pipeline: Pipeline,
    /// What to render, exactly as validated at create and stored: the one typed spec
    /// (prompt, negative prompt, final size in multiples of 16, `num_frames`, fps, steps).
    pub spec: JobSpec,
    /// Same seed, prompt and size give the same video (always so for the preview).
    pub seed: u64,
    /// The encoded input image (JPEG/PNG/WebP) for i2v; `None` for t2v.
    pub image: Option<Arc<Vec<u8>>>,
}

/// Progress in "tasks" (frames, denoising steps, encode...): `done` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Tasks finished so far (at most `total`).
    pub done: u32,
    /// Tasks of the whole job (frames or denoising steps, plus encoding).
    pub total: u32,
}

/// Called by a runner whenever a task finishes. Must be cheap and must not block.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// What a runner produced: an MP4 file at `path`.
#[derive(Debug, Clone)]
pub struct RenderOutput {
    /// Where the MP4 was written (the `out` the runner was given).
    pub path: PathBuf,
    /// File size in bytes.
    pub bytes: u64,
    /// Video width in pixels.
    pub width: u32,
    /// Video height in pixels.
    pub height: u32,
    /// Number of frames in the file.
    pub frames: u32,
    /// Frames per second.
    pub fps: u32,
    /// Which backend made it ("preview", "wan"), recorded in the result metadata.
    pub backend: &'static str,
}

/// Why a render failed, in two texts: `reason` is what the client reads (plain words:
/// no paths, host names or raw errors), `detail` what operators need (logged, and shown
/// only to admin keys). Displays as the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderFailure {
    /// Shown to the client: plain words, nothing internal.
    pub reason: String,
    /// For operators: the raw error, paths, the host.
    pub detail: String,
}

impl RenderFailure {
    /// A client-facing `reason` with the internal `detail` behind it.
    pub fn new(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            detail: detail.into(),
        }
    }
}

/// A message that is safe to show as it is (it holds nothing internal).
impl From<String> for RenderFailure {
    fn from(reason: String) -> Self {
        Self {
            detail: reason.clone(),
            reason,
        }
    }
}

impl From<&str> for RenderFailure {
    fn from(reason: &str) -> Self {
        reason.to_string().into()
    }
}

impl std::fmt::Display for RenderFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Why [`Runner::run`] returned no video; the variant decides whether the job is retried.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The cancel token fired; no output must be used.
    #[error("cancelled")]
    Cancelled,
    /// The job cannot succeed on any attempt (e.g. an undecodable input image).
    #[error("{0}")]
    Permanent(RenderFailure),
    /// Something that may succeed on another attempt (I/O, a crashed runner process).
    #[error("{0}")]
    Transient(RenderFailure),
}

impl RunnerError {
    /// A permanent failure: `reason` for the client, `detail` for operators.
    pub fn permanent(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Permanent(RenderFailure::new(reason, detail))
    }

    /// A transient failure: `reason` for the client, `detail` for operators.
    pub fn transient(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Transient(RenderFailure::new(reason, detail))
    }

    /// What the client reads.
    pub fn reason(&self) -> &str {
        match self {
            Self::Cancelled => "cancelled",
            Self::Permanent(f) | Self::Transient(f) => &f.reason,
        }
    }
}

/// A video renderer the worker loop drives: [`preview::PreviewRunner`] or [`wan::WanRunner`].
#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    /// Short name, e.g. "preview".
    fn name(&self) -> &'static str;
    /// Pipelines this runner can serve.
    fn pipelines(&self) -> Vec<Pipeline>;
    /// Render `job` into an MP4 at `out` (the file is created or truncated). Reports
    /// progress through `progress` and stops soon after `cancel` fires, returning
    /// [`RunnerError::Cancelled`].
    async fn run(
        &self,
        job: &RenderJob,
        out: &Path,
        progress: ProgressFn,
        cancel: CancellationToken,
    ) -> Result<RenderOutput, RunnerError>;
}
