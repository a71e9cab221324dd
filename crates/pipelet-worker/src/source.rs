//! Where a worker gets jobs from and reports back to.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use pipelet_api::worker_protocol::{
    ClaimRequest, Failure, HeartbeatReply, LeaseRef, ProgressUpdate, RenderedVideo,
};
use pipelet_api::{JobSpec, Pipeline};

/// A leased job, with what the runner needs.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// The job and fencing token every report about it carries.
    pub lease: LeaseRef,
    /// The model the client sent the request to (for logs).
    pub model_id: String,
    /// Which weights the runner needs.
    pub pipeline: Pipeline,
    /// What to render.
    pub spec: JobSpec,
    /// Whether the job has an input image ([`JobSource::fetch_input`]).
    pub has_input: bool,
    /// Which attempt this is, from 1.
    pub attempt: u32,
    /// The heartbeat interval the server asks for, when it says.
    pub heartbeat: Option<Duration>,
}

/// Why a [`JobSource`] call failed; the variant tells the worker what to do next.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The lease was lost (expired and re-queued, or the job ended): stop, report nothing.
    #[error("lease lost")]
    LeaseLost,
    /// The job's stored spec cannot be run (a bug or a schema change); fail it.
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// The source is unreachable or failed; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The source refused the call for a reason retrying does not change (a malformed
    /// report, a call that does not fit the job's state); the lease is not lost.
    #[error("{0}")]
    Rejected(String),
    /// The source refused this worker's credentials: fatal, the worker stops.
    #[error("the worker key was refused: {0}")]
    Unauthorized(String),
}

/// The queue as a worker sees it: the server's queue service in-process, or
/// [`crate::HttpSource`] over the worker API.
#[async_trait]
pub trait JobSource: Send + Sync {
    /// Leases the next job, waiting up to `wait` for one to arrive.
    async fn claim(
        &self,
        req: &ClaimRequest,
        wait: Duration,
    ) -> Result<Option<Assignment>, SourceError>;
    /// Extends the lease and reports progress; the reply says whether to cancel.
    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
    ) -> Result<HeartbeatReply, SourceError>;
    /// The input image bytes of an i2v job.
    async fn fetch_input(&self, job: &Assignment) -> Result<Vec<u8>, SourceError>;
    /// Stores the finished MP4 under this lease.
    async fn upload_result(&self, lease: &LeaseRef, file: &Path) -> Result<(), SourceError>;
    /// Completes the job with the video uploaded under this lease.
    async fn complete(&self, lease: &LeaseRef, video: &RenderedVideo) -> Result<(), SourceError>;
    /// Ends the attempt: `failure.reason` is what the client reads, its detail only
    /// operators (logs, admin keys).
    async fn fail(
        &self,
        lease: &LeaseRef,
        failure: &Failure,
        retryable: bool,
    ) -> Result<(), SourceError>;
    /// Reports that the worker stopped after a cancel request; ends the job `CANCELLED`.
    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<(), SourceError>;
}
