//! Plain data that crosses the [`crate::Store`] trait: jobs, leases, claims and outcomes.

use pipelet_api::Pipeline;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The job state machine. `Running` re-enters `Queued` when a lease is lost and attempts
/// remain; the three others are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job to enqueue. The id is chosen by the caller so blobs can be written first.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub model_id: String,
    pub pipeline: Pipeline,
    pub owner_key_id: String,
    /// Tier priority plus the request's (clamped) priority; higher runs sooner.
    pub priority: i64,
    /// The validated [`pipelet_api::JobSpec`] as JSON.
    pub spec: serde_json::Value,
    pub input_blob: Option<String>,
    pub max_attempts: u32,
    pub webhook_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: Uuid,
    /// Insertion order; the age tie-break of dispatch.
    pub seq: i64,
    pub model_id: String,
    pub pipeline: Pipeline,
    pub owner_key_id: String,
    pub priority: i64,
    pub state: JobState,
    pub spec: serde_json::Value,
    pub input_blob: Option<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub attempt: u32,
    pub max_attempts: u32,
    pub lease_token: i64,
    pub lease_owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub cancel_requested: bool,
    pub progress: Option<ProgressUpdate>,
    /// Why the last attempt failed, for the client: plain words, no worker or host
    /// names, paths or lease tokens (kept on retries so the status can say why).
    pub error: Option<String>,
    /// What operators need about the same failure: the worker, the host, paths, the
    /// raw error. Logged, and shown only to admin keys.
    pub error_detail: Option<String>,
    pub result: Option<JobResult>,
    pub cancelled_by: Option<String>,
    pub webhook_url: Option<String>,
    /// When retention deleted the result (the job stays COMPLETED; its result is gone).
    pub result_expired_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressUpdate {
    pub done: u32,
    pub total: u32,
}

/// Where a finished video lives and what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub blob: String,
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    pub fps: u32,
    pub backend: String,
    /// Seconds the worker spent rendering (for `statusMessages` timings).
    pub run_seconds: f64,
}

#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// Identifies the lease holder, e.g. `local:<server-instance>/0` or `worker:<name>`.
    pub worker_id: String,
    pub pipelines: Vec<Pipeline>,
    /// The pipeline the worker has in memory; preferred unless another waited too long.
    pub loaded: Option<Pipeline>,
    pub lease_ms: i64,
    /// How long a job of another pipeline may wait before it beats the loaded one.
    pub max_wait_for_switch_ms: i64,
}

/// The fencing pair every lease-holder call must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRef {
    pub job_id: Uuid,
    pub token: i64,
}

#[derive(Debug, Clone)]
pub struct Lease {
    pub lease: LeaseRef,
    pub job: JobRecord,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub cancel_requested: bool,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled,
    AlreadyCancelled,
    /// A running job was asked to stop (force); it ends CANCELLED when its worker stops.
    StopRequested,
    /// Started or finished; carries the state the job is in.
    NotCancellable(JobState),
}

/// Why an attempt ended without a result, in two texts: `reason` is shown to the
/// client (plain, nothing internal); `detail` (the raw error, paths, hosts) goes only to
/// logs and admin keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    Requeued,
    Failed,
    /// A forced cancel was pending: the attempt's end stopped the job as asked, and it
    /// ended CANCELLED (the error is still recorded).
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapedJob {
    pub id: Uuid,
    pub model_id: String,
    pub outcome: ReapOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapOutcome {
    Requeued,
    Failed,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    pub model_id: String,
    pub state: JobState,
    pub count: u64,
}

/// What one retention step took from one finished job: the blob keys it no longer
/// references, which the caller deletes (a key that fails to delete is an orphan, which
/// the orphan sweep removes later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedBlobs {
    pub job_id: Uuid,
    pub keys: Vec<String>,
}

pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}
