//! The worker API's JSON shapes (version 1, under `/worker/v1`), shared by the server
//! and `pipelet worker`. Every call after a claim carries the lease token: the fencing
//! token that makes a lost worker's late calls harmless.

use serde::{Deserialize, Serialize};

use crate::{JobSpec, Pipeline};

/// Path prefix of the worker API.
pub const WORKER_API_PREFIX: &str = "/worker/v1";
/// Longest a claim may wait for a job before answering 204.
pub const MAX_CLAIM_WAIT_MS: u64 = 30_000;

/// `POST /worker/v1/claim`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimBody {
    /// A name for this worker, unique in the fleet (shown in job history and metrics).
    pub worker_id: String,
    pub pipelines: Vec<Pipeline>,
    /// The pipeline whose weights the worker has loaded, preferred when choosing a job.
    #[serde(default)]
    pub loaded: Option<Pipeline>,
    /// How long to wait for a job, at most [`MAX_CLAIM_WAIT_MS`].
    #[serde(default)]
    pub wait_ms: u64,
}

/// 200 answer to a claim (204 when no job came within `wait_ms`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimedJob {
    pub job_id: String,
    pub lease_token: i64,
    pub model_id: String,
    pub pipeline: Pipeline,
    pub spec: JobSpec,
    /// Whether `GET .../input` has an image for this job.
    pub has_input: bool,
    pub attempt: u32,
    /// The lease length and the heartbeat interval the server expects.
    pub lease_ms: u64,
    pub heartbeat_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireProgress {
    pub done: u32,
    pub total: u32,
}

/// `POST /worker/v1/jobs/{id}/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatBody {
    pub lease_token: i64,
    #[serde(default)]
    pub progress: Option<WireProgress>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    /// The client asked to stop this job: stop and call `.../cancelled`.
    pub cancel_requested: bool,
    pub lease_expires_in_ms: u64,
}

/// `POST /worker/v1/jobs/{id}/complete`, after the MP4 was uploaded with
/// `PUT .../result?lease_token=`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteBody {
    pub lease_token: i64,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: u32,
    pub backend: String,
    pub run_seconds: f64,
}

/// `POST /worker/v1/jobs/{id}/fail`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailBody {
    pub lease_token: i64,
    pub error: String,
    /// Whether another attempt may succeed (a crash) or not (an undecodable input).
    pub retryable: bool,
}

/// `POST /worker/v1/jobs/{id}/cancelled`: the worker stopped after a cancel request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseBody {
    pub lease_token: i64,
}

/// Answer to `PUT .../result`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadAnswer {
    pub bytes: u64,
}
