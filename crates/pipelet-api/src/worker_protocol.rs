//! The worker API's JSON shapes (version 1, under `/worker/v1`), shared by the server
//! and `pipelet worker`. Every call after a claim carries the lease token: the fencing
//! token that makes a lost worker's late calls harmless.

mod lease;

pub use lease::{
    ClaimRequest, Failure, HeartbeatReply, JobResult, LeaseRef, ProgressUpdate, RenderedVideo,
};

use serde::{Deserialize, Serialize};

use crate::{JobSpec, Pipeline};

/// Path prefix of the worker API.
pub const WORKER_API_PREFIX: &str = "/worker/v1";
/// Longest a claim may wait for a job before answering 204.
pub const MAX_CLAIM_WAIT_MS: u64 = 30_000;

/// `POST /worker/v1/claim`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimBody {
    /// A name for this worker, unique in the fleet (shown in job history and metrics):
    /// 1 to 128 printable characters.
    pub worker_id: String,
    /// The pipelines this worker can run; at least one.
    pub pipelines: Vec<Pipeline>,
    /// The pipeline whose weights the worker has loaded, preferred when choosing a job.
    #[serde(default)]
    pub loaded: Option<Pipeline>,
    /// How long to wait for a job in milliseconds (a long poll), at most 30000
    /// (`MAX_CLAIM_WAIT_MS`); 0 answers at once.
    #[serde(default)]
    pub wait_ms: u64,
    /// The renderer this worker runs (`preview` or `wan`): it decides how many tasks a
    /// job has, so the status can say `Progress: 0/N Tasks done` from the claim on.
    /// Left out: `wan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// How many progress tasks a job has on `backend`, as its runner counts them: the
/// preview renderer one per frame plus the file write, Wan one per denoising step plus
/// the VAE decode and the encode. An unknown or missing backend counts as Wan.
pub fn expected_tasks(backend: Option<&str>, spec: &JobSpec) -> u32 {
    match backend {
        Some("preview") => spec.num_frames.saturating_add(1),
        _ => spec.steps.saturating_add(2),
    }
}

/// 200 answer to a claim (204 when no job came within `wait_ms`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClaimedJob {
    /// The job's id (the client's `request_id`), used in every later path.
    pub job_id: String,
    /// The fencing token: every later call about this job carries it.
    pub lease_token: i64,
    /// The model the client sent the request to.
    pub model_id: String,
    /// Which weights the job needs.
    pub pipeline: Pipeline,
    /// What to render.
    pub spec: JobSpec,
    /// Whether `GET .../input` has an image for this job.
    pub has_input: bool,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The lease length in milliseconds: without a heartbeat the job is re-queued after it.
    pub lease_ms: u64,
    /// How often to heartbeat, in milliseconds (well inside `lease_ms`).
    pub heartbeat_ms: u64,
}

/// `POST /worker/v1/jobs/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatBody {
    /// The token from the claim; a stale one answers 409 `lease_lost`.
    pub lease_token: i64,
    /// Progress so far, shown to the client.
    #[serde(default)]
    pub progress: Option<ProgressUpdate>,
}

/// Answer to a heartbeat: the lease was extended.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatAnswer {
    /// The client asked to stop this job: stop and call `.../cancelled`.
    pub cancel_requested: bool,
    /// The lease now runs this much longer.
    pub lease_expires_in_ms: u64,
}

/// `POST /worker/v1/jobs/{id}/complete`, after the MP4 was uploaded with
/// `PUT .../result?lease_token=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompleteBody {
    /// The token from the claim; a stale one answers 409 `lease_lost`.
    pub lease_token: i64,
    /// The uploaded video (its fields sit beside `lease_token`).
    #[serde(flatten)]
    pub video: RenderedVideo,
}

/// `POST /worker/v1/jobs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailBody {
    /// The token from the claim; a stale one answers 409 `lease_lost`.
    pub lease_token: i64,
    /// Why, for the client, in plain words: no host or worker names, paths or raw
    /// errors (the first 2000 characters are kept).
    pub error: String,
    /// What operators need: the raw error, paths, the host. Logged by the server and
    /// shown only to admin keys (the first 8000 characters are kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Whether another attempt may succeed (a crash) or not (an undecodable input).
    pub retryable: bool,
}

/// `POST /worker/v1/jobs/{id}/cancelled`: the worker stopped after a cancel request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseBody {
    /// The token from the claim; a stale one answers 409 `lease_lost`.
    pub lease_token: i64,
}

/// Answer to `PUT .../result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UploadAnswer {
    /// Bytes stored.
    pub bytes: u64,
}
