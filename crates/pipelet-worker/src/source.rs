//! Where a worker gets jobs from and reports back to.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use pipelet_api::{JobSpec, Pipeline};
use pipelet_store::{ClaimRequest, Failure, HeartbeatReply, JobResult, LeaseRef, ProgressUpdate};

/// A leased job, with what the runner needs.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub lease: LeaseRef,
    pub model_id: String,
    pub pipeline: Pipeline,
    pub spec: JobSpec,
    pub input_blob: Option<String>,
    pub attempt: u32,
    /// The heartbeat interval the server asks for, when it says.
    pub heartbeat: Option<Duration>,
}

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
}

#[async_trait]
pub trait JobSource: Send + Sync {
    /// Leases the next job, waiting up to `wait` for one to arrive.
    async fn claim(
        &self,
        req: &ClaimRequest,
        wait: Duration,
    ) -> Result<Option<Assignment>, SourceError>;
    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
    ) -> Result<HeartbeatReply, SourceError>;
    /// The input image bytes of an i2v job.
    async fn fetch_input(&self, job: &Assignment) -> Result<Vec<u8>, SourceError>;
    /// Stores the finished MP4; returns its blob key.
    async fn upload_result(&self, lease: &LeaseRef, file: &Path) -> Result<String, SourceError>;
    async fn complete(&self, lease: &LeaseRef, result: &JobResult) -> Result<(), SourceError>;
    /// Ends the attempt: `failure.reason` is what the client reads, its detail only
    /// operators (logs, admin keys).
    async fn fail(
        &self,
        lease: &LeaseRef,
        failure: &Failure,
        retryable: bool,
    ) -> Result<(), SourceError>;
    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<(), SourceError>;
}
