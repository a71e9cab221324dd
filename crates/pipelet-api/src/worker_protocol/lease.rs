//! What a lease holder and the queue exchange, whether the worker runs in the server's
//! process or talks to it over `/worker/v1`: the claim, the fencing pair, progress, the
//! finished video and the failure report.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Pipeline;

/// What a worker asks the queue for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Identifies the lease holder, e.g. `local:<server-instance>/0` or `worker:<name>`.
    pub worker_id: String,
    /// Pipelines the worker can run; only their jobs are offered.
    pub pipelines: Vec<Pipeline>,
    /// The pipeline the worker has in memory; preferred unless another waited too long.
    pub loaded: Option<Pipeline>,
    /// Lease length in milliseconds; the job is re-queued if not renewed within it.
    pub lease_ms: i64,
    /// How long a job of another pipeline may wait before it beats the loaded one.
    pub max_wait_for_switch_ms: i64,
}

/// The fencing pair every lease-holder call must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The leased job.
    pub job_id: Uuid,
    /// Bumped on every claim, so a previous holder's token no longer matches.
    pub token: i64,
}

/// Tasks done out of the total: what a heartbeat reports, what the store keeps and what
/// the status shows. One type on every hop (the wire calls its schema `WireProgress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = WireProgress))]
pub struct ProgressUpdate {
    /// Tasks finished so far (at most `total`).
    pub done: u32,
    /// Tasks the job has in all (denoising steps or frames, plus finishing work).
    pub total: u32,
}

/// The answer to a heartbeat: the lease was extended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// A client asked to cancel: the holder should stop and report `cancelled`.
    pub cancel_requested: bool,
    /// When the extended lease runs out, in milliseconds since the Unix epoch.
    pub expires_at_ms: i64,
}

/// What a worker rendered: the fields of `complete` beside `lease_token`, and of the
/// stored result, which adds where the file went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RenderedVideo {
    /// The video's size in pixels.
    pub width: u32,
    /// The video's height in pixels.
    pub height: u32,
    /// Number of frames in the file.
    pub frames: u32,
    /// Frames per second.
    pub fps: u32,
    /// The renderer that made it: `preview` or `wan`.
    pub backend: String,
    /// Seconds spent rendering (for `statusMessages` timings).
    pub run_seconds: f64,
}

/// Where a finished video lives and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// The MP4's key in the blob store (one per job and lease token).
    pub blob: String,
    /// The MP4's size in bytes.
    pub bytes: u64,
    /// What the worker reported about the video.
    #[serde(flatten)]
    pub video: RenderedVideo,
}

/// Why an attempt ended without a result, in two texts: `reason` is shown to the
/// client (plain, nothing internal); `detail` (the raw error, paths, hosts) goes only to
/// logs and admin keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Shown to the client; plain words, no hosts, paths or raw errors.
    pub reason: String,
    /// For logs and admin keys only: the raw error and where it happened.
    pub detail: Option<String>,
}

impl Failure {
    /// A failure whose reason says everything and holds nothing internal.
    pub fn plain(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            detail: None,
        }
    }

    /// A client-facing `reason` with the internal `detail` behind it.
    pub fn new(reason: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            detail: Some(detail.into()),
        }
    }
}
