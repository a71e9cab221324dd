//! Plain data that crosses the [`crate::Store`] trait: jobs, leases, claims and outcomes.

use pipelet_api::{JobSpec, Pipeline};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

// The lease-holder types live in `pipelet-api`, shared with `pipelet worker`.
pub use pipelet_api::clock::now_ms;
pub use pipelet_api::worker_protocol::{
    ClaimRequest, Failure, HeartbeatReply, JobResult, LeaseRef, ProgressUpdate, RenderedVideo,
};

/// The job state machine. `Running` re-enters `Queued` when a lease is lost and attempts
/// remain; the three others are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a worker that serves its pipeline.
    Queued,
    /// A worker holds its lease.
    Running,
    /// The result is stored (retention may delete it later; the state stays).
    Completed,
    /// Ended with an error that is not retryable, or on its last attempt.
    Failed,
    /// Cancelled while queued, or stopped by a forced cancel while running.
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order: what counts and [`JobState::parse`] go through.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The lowercase name, as stored in the `state` column and written in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state named by [`JobState::as_str`]; `None` for any other text.
    pub fn parse(s: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Completed, failed or cancelled: the state never changes again.
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
    /// The request id clients will see; the input image is stored under it first.
    pub id: Uuid,
    /// The catalog model it was created under (e.g. `wan22-fast-t2v`).
    pub model_id: String,
    /// What renders it: workers claim only the pipelines they serve.
    pub pipeline: Pipeline,
    /// The id of the API key that created it: only that key (and admins) can see it.
    pub owner_key_id: String,
    /// Tier priority plus the request's (clamped) priority; higher runs sooner.
    pub priority: i64,
    /// The validated spec (stored as JSON).
    pub spec: JobSpec,
    /// Blob key of the input image (image-to-video only), already written.
    pub input_blob: Option<String>,
    /// Claims allowed before a lost or failed attempt fails the job (`--max-attempts`).
    pub max_attempts: u32,
    /// Where the job's events are POSTed; `None` sends no webhooks.
    pub webhook_url: Option<String>,
}

/// A job as stored: its request, state, current lease and outcome. Times are ms since
/// the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The request id clients see.
    pub id: Uuid,
    /// Insertion order; the age tie-break of dispatch.
    pub seq: i64,
    /// The catalog model it was created under.
    pub model_id: String,
    /// What renders it.
    pub pipeline: Pipeline,
    /// The id of the API key that created it.
    pub owner_key_id: String,
    /// As [`NewJob::priority`]: higher runs sooner.
    pub priority: i64,
    /// Where it is in the state machine.
    pub state: JobState,
    /// The validated request.
    pub spec: JobSpec,
    /// Blob key of the input image; `None` for text-to-video or once retention
    /// released it.
    pub input_blob: Option<String>,
    /// When it was created.
    pub created_at_ms: i64,
    /// When a worker last claimed it (each retry resets it); `None` if never claimed.
    pub started_at_ms: Option<i64>,
    /// When it reached a terminal state; retention counts its TTLs from here.
    pub finished_at_ms: Option<i64>,
    /// Claims so far (0 until the first); once it equals `max_attempts`, a lost or
    /// failed attempt fails the job.
    pub attempt: u32,
    /// Claims allowed (`--max-attempts` when it was created).
    pub max_attempts: u32,
    /// Fencing token, bumped on every claim: a [`LeaseRef`] with an older one is stale
    /// and changes nothing.
    pub lease_token: i64,
    /// The worker id holding the lease (`local:…` in process, `worker:<key>/<name>`
    /// remote); `None` unless running.
    pub lease_owner: Option<String>,
    /// When the lease runs out unless a heartbeat extends it; `None` unless running.
    pub lease_expires_at_ms: Option<i64>,
    /// A forced cancel is pending: the next heartbeat tells the worker to stop.
    pub cancel_requested: bool,
    /// The last progress a heartbeat reported in this attempt.
    pub progress: Option<ProgressUpdate>,
    /// Why the last attempt failed, for the client: plain words, no worker or host
    /// names, paths or lease tokens (kept on retries so the status can say why).
    pub error: Option<String>,
    /// What operators need about the same failure: the worker, the host, paths, the
    /// raw error. Logged, and shown only to admin keys.
    pub error_detail: Option<String>,
    /// The rendered video (its blob key and metadata), once completed.
    pub result: Option<JobResult>,
    /// Who cancelled it, as recorded in history (e.g. `key 'ci' (client)`).
    pub cancelled_by: Option<String>,
    /// Where its events are POSTed; `None` sends no webhooks.
    pub webhook_url: Option<String>,
    /// When retention deleted the result (the job stays COMPLETED; its result is gone).
    pub result_expired_at_ms: Option<i64>,
}

/// A claimed job: what a worker holds until it completes, fails or loses it.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Job id and fencing token: every later call of the attempt carries it.
    pub lease: LeaseRef,
    /// The job as claimed (running, `attempt` already counted).
    pub job: JobRecord,
    /// Ms since the epoch when the lease runs out unless a heartbeat extends it.
    pub expires_at_ms: i64,
}

/// What [`crate::JobStore::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued and is now CANCELLED.
    Cancelled,
    /// It was CANCELLED already; nothing changed.
    AlreadyCancelled,
    /// A running job was asked to stop (force); it ends CANCELLED when its worker stops.
    StopRequested,
    /// Started or finished; carries the state the job is in.
    NotCancellable(JobState),
}

/// Where [`crate::LeaseStore::fail`] left the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Retryable with attempts left: queued again.
    Requeued,
    /// Not retryable, or the last attempt: FAILED.
    Failed,
    /// A forced cancel was pending: the attempt's end stopped the job as asked, and it
    /// ended CANCELLED (the error is still recorded).
    Cancelled,
}

/// A job whose lease expired, as [`crate::LeaseStore::reap_expired`] left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReapedJob {
    /// The job's request id.
    pub id: Uuid,
    /// Its model, for the metrics' labels.
    pub model_id: String,
    /// Where it went.
    pub outcome: ReapOutcome,
}

/// Where an expired lease left its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapOutcome {
    /// Attempts remain: queued again.
    Requeued,
    /// That was its last attempt: FAILED.
    Failed,
    /// A forced cancel was pending: CANCELLED.
    Cancelled,
}

/// How many jobs of one model are in one state (the `/metrics` queue gauges).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    /// The catalog model id.
    pub model_id: String,
    /// The state counted.
    pub state: JobState,
    /// Jobs of `model_id` in `state`.
    pub count: u64,
}

/// What one retention step took from one finished job: the blob keys it no longer
/// references, which the caller deletes (a key that fails to delete is an orphan, which
/// the orphan sweep removes later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedBlobs {
    /// The job the blobs belonged to.
    pub job_id: Uuid,
    /// Blob keys to delete (input image, result video).
    pub keys: Vec<String>,
}
