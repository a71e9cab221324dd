//! [`JobStore`]: jobs as clients see them.

use async_trait::async_trait;
use uuid::Uuid;

use crate::{
    CancelOutcome, CreateOutcome, Created, Idempotency, JobCount, JobListQuery, JobPage, JobRecord,
    NewJob, Result,
};

/// Jobs as clients see them: create, read, list, cancel, count.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Durably inserts a queued job. When this returns `Ok` the job is committed; the
    /// answer carries its queue position as of that commit.
    async fn create_job(&self, job: NewJob) -> Result<Created>;

    /// [`JobStore::create_job`] under an `Idempotency-Key`: in one transaction, either
    /// records the key and inserts the job (`Created`), or — the key already taken by
    /// `owner` since `not_before_ms` — inserts nothing and answers `Replayed` with that
    /// key's job (same request hash) or `Mismatch`. Concurrent calls with one key make
    /// exactly one job.
    async fn create_job_idempotent(
        &self,
        job: NewJob,
        idempotency: Idempotency,
    ) -> Result<CreateOutcome>;

    /// The job, or `None` (never created, or deleted by retention); no queue position,
    /// so cheaper than [`JobStore::job_status`].
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

    /// Counts of jobs per (model id, state) and how many are queued in total.
    async fn job_counts(&self) -> Result<Vec<JobCount>>;

    /// Jobs queued right now, from memory (cheap enough for every create).
    fn queued_total(&self) -> u64;
}
