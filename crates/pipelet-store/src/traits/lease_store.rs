//! [`LeaseStore`]: how workers hold jobs.

use async_trait::async_trait;

use crate::{
    ClaimRequest, FailOutcome, Failure, HeartbeatReply, JobResult, Lease, LeaseRef, ProgressUpdate,
    ReapedJob, Result,
};

/// Leases: workers claim jobs, hold them with heartbeats and end their attempts; lost
/// leases bring their jobs back to the queue.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Leases the next job for a worker, or `None` when nothing it serves is queued.
    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Lease>>;

    /// A future that resolves when a job may have become claimable.
    fn job_available(&self) -> std::sync::Arc<tokio::sync::Notify>;

    /// Extends a lease and records progress. `Err(LeaseLost)` when the token is stale.
    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
        extend_ms: i64,
    ) -> Result<HeartbeatReply>;

    /// Ends the attempt COMPLETED with `result`, whose video the worker has already
    /// uploaded; `Err(LeaseLost)` when the token is stale.
    async fn complete(&self, lease: &LeaseRef, result: &JobResult) -> Result<()>;

    /// Ends an attempt with an error: re-queued when `retryable` and attempts remain;
    /// `FailOutcome::Cancelled` when a forced cancel was pending (the cancel wins).
    /// `failure.reason` becomes the job's client-facing `error`; its detail, with the
    /// lease holder and attempt, the admin-only `error_detail`.
    async fn fail(
        &self,
        lease: &LeaseRef,
        failure: &Failure,
        retryable: bool,
    ) -> Result<FailOutcome>;

    /// Ends an attempt that stopped because its job was cancelled while running (a
    /// forced cancel is pending); `Err(InvalidState(Running))`, changing nothing, when
    /// no cancel was requested.
    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<()>;

    /// Re-queues (or fails, after the last attempt) every job whose lease expired.
    async fn reap_expired(&self, now_ms: i64) -> Result<Vec<ReapedJob>>;

    /// Whether this process may run the reaper now: always with one server; on a
    /// shared database, only the one holding the reaper lock.
    async fn try_reaper_lock(&self) -> Result<bool> {
        Ok(true)
    }

    /// Re-queues running jobs whose lease owner starts with `owner_prefix` (an exact,
    /// case-sensitive prefix: in-process workers of a previous run of this server, which
    /// cannot still be alive).
    async fn release_leases_of(&self, owner_prefix: &str) -> Result<u64>;
}
