//! pipelet's durable state. The [`Store`] trait owns the job state machine
//! (queued → running → completed | failed | cancelled, with re-queues on lost leases),
//! fenced leases, exact queue positions and API keys; [`blob::Blobs`] owns input images
//! and result videos. SQLite is the embedded implementation, PostgreSQL the shared one
//! for several servers; both pass the same conformance tests.

pub mod blob;
mod dispatch;
mod error;
mod history;
mod idempotency;
pub mod keys;
pub mod postgres;
mod queue_index;
mod retention;
mod rows;
pub mod sqlite;
mod types;
mod webhooks;

pub use error::StoreError;
pub use history::{JobCursor, JobListQuery, JobPage, MAX_PAGE_LIMIT};
pub use idempotency::{
    CreateOutcome, IDEMPOTENCY_WINDOW_MS, Idempotency, MAX_IDEMPOTENCY_KEY_LEN, request_hash,
};
pub use keys::{KeyRecord, NewKey, Role};
pub use queue_index::QueueIndex;
pub use types::*;
pub use webhooks::{
    WEBHOOK_SECRET_OVERLAP_MS, WebhookAttempt, WebhookEvent, WebhookEventRecord, WebhookEventType,
    WebhookSecrets, WebhookSnapshot, WebhookState,
};

use async_trait::async_trait;
use uuid::Uuid;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Durably inserts a queued job. When this returns `Ok` the job is committed.
    async fn create_job(&self, job: NewJob) -> Result<JobRecord>;
    /// [`Store::create_job`] under an `Idempotency-Key`: in one transaction, either
    /// records the key and inserts the job (`Created`), or — the key already taken by
    /// `owner` since `not_before_ms` — inserts nothing and answers `Replayed` with that
    /// key's job (same request hash) or `Mismatch`. Concurrent calls with one key make
    /// exactly one job.
    async fn create_job_idempotent(
        &self,
        job: NewJob,
        idempotency: Idempotency,
    ) -> Result<CreateOutcome>;
    /// Deletes idempotency keys created before `older_than_ms`; returns how many.
    async fn purge_idempotency_keys(&self, older_than_ms: i64) -> Result<u64>;
    async fn get_job(&self, id: Uuid) -> Result<Option<JobRecord>>;
    /// A job with its exact queue position (`Some` only while queued).
    async fn job_status(&self, id: Uuid) -> Result<Option<(JobRecord, Option<u64>)>>;
    /// The most recent jobs created by `owner` (or by anyone when `None`), newest first.
    async fn list_jobs(&self, owner: Option<&str>, limit: u32) -> Result<Vec<JobRecord>>;
    /// One page of job history, newest first (by creation time, then insertion order),
    /// continuing strictly after `query.after`; see [`JobListQuery`] for the filters.
    async fn list_jobs_page(&self, query: &JobListQuery) -> Result<JobPage>;
    /// Cancels a queued job; with `force` also asks a running job to stop.
    async fn cancel(&self, id: Uuid, force: bool, by: &str) -> Result<CancelOutcome>;

    /// Leases the next job for a worker, or `None` when nothing it serves is queued.
    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Lease>>;
    /// Extends a lease and records progress. `Err(LeaseLost)` when the token is stale.
    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
        extend_ms: i64,
    ) -> Result<HeartbeatReply>;
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
    /// Re-queues running jobs whose lease owner starts with `owner_prefix` (an exact,
    /// case-sensitive prefix: in-process workers of a previous run of this server, which
    /// cannot still be alive).
    async fn release_leases_of(&self, owner_prefix: &str) -> Result<u64>;

    // Retention: finished jobs give up their blobs, then their rows, in small batches
    // (oldest first). Each call only changes rows; it returns the blob keys the rows no
    // longer reference, for the caller to delete.
    /// Forgets the input image of up to `limit` finished jobs that ended at or before
    /// `finished_by_ms` (clears `input_blob`).
    async fn release_inputs(&self, finished_by_ms: i64, limit: u32) -> Result<Vec<ReleasedBlobs>>;
    /// Marks the result of up to `limit` COMPLETED jobs that ended at or before
    /// `finished_by_ms` expired at `now_ms` (the job stays COMPLETED), forgetting their
    /// result and input blobs.
    async fn expire_results(
        &self,
        finished_by_ms: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ReleasedBlobs>>;
    /// Deletes up to `limit` finished jobs that ended at or before `finished_by_ms`,
    /// returning the blobs they still referenced.
    async fn delete_finished_jobs(
        &self,
        finished_by_ms: i64,
        limit: u32,
    ) -> Result<Vec<ReleasedBlobs>>;
    /// Gives the space of deleted rows back to the file system where the database
    /// keeps it (SQLite: an incremental vacuum of at most `max_pages` pages; PostgreSQL's
    /// autovacuum does this itself). Returns the pages freed.
    async fn reclaim_space(&self, max_pages: u32) -> Result<u64>;

    /// Counts of jobs per (model id, state) and how many are queued in total.
    async fn job_counts(&self) -> Result<Vec<JobCount>>;
    /// Jobs queued right now, from memory (cheap enough for every create).
    fn queued_total(&self) -> u64;
    /// A future that resolves when a job may have become claimable.
    fn job_available(&self) -> std::sync::Arc<tokio::sync::Notify>;

    /// Whether this process may run the reaper now: always with one server; on a
    /// shared database, only the one holding the reaper lock.
    async fn try_reaper_lock(&self) -> Result<bool> {
        Ok(true)
    }

    async fn create_key(&self, key: NewKey) -> Result<(KeyRecord, String)>;
    async fn find_key_by_secret(&self, secret: &str) -> Result<Option<KeyRecord>>;
    async fn count_keys(&self) -> Result<u64>;
    /// A random secret shared by every server on this store, created by the first call
    /// for `name` (e.g. the key that signs result links, so any server accepts them).
    async fn server_secret(&self, name: &str) -> Result<String>;

    // Webhooks: the outbox written with each state change of a job that has a
    // `webhook_url` (see [`WebhookEvent`]), and the per-key signing secrets.
    /// Each job's earliest event that is neither delivered nor given up, when its next
    /// attempt is due at `now_ms` and no one holds it; at most `limit`, oldest due
    /// first. Marks them held until `now_ms + hold_ms`, so another server (or loop)
    /// skips them meanwhile.
    async fn webhook_due(&self, now_ms: i64, limit: u32, hold_ms: i64)
    -> Result<Vec<WebhookEvent>>;
    /// Records the end of one delivery try of `event_id` (and releases its hold).
    /// `Err(NotFound)` for an unknown event.
    async fn webhook_record_attempt(
        &self,
        event_id: &str,
        attempt: WebhookAttempt,
        now_ms: i64,
    ) -> Result<()>;
    /// Every event of a job, in order.
    async fn webhook_events_of(&self, job_id: Uuid) -> Result<Vec<WebhookEventRecord>>;
    /// Events neither delivered nor given up.
    async fn webhook_pending(&self) -> Result<u64>;
    /// The signing secrets of an API key, created on first use.
    async fn webhook_secrets(&self, owner_key_id: &str, now_ms: i64) -> Result<WebhookSecrets>;
    /// Issues a new secret for the key; the old one stays `previous` for 24 h.
    async fn rotate_webhook_secret(
        &self,
        owner_key_id: &str,
        now_ms: i64,
    ) -> Result<WebhookSecrets>;
}
