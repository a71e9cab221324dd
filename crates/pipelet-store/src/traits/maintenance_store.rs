//! [`MaintenanceStore`]: idempotency-key purges and retention.

use async_trait::async_trait;

use crate::{ReleasedBlobs, Result};

/// Housekeeping. Retention gives up the blobs of finished jobs, then their rows, in
/// small batches (oldest first); each call only changes rows and returns the blob keys
/// the rows no longer reference, for the caller to delete.
#[async_trait]
pub trait MaintenanceStore: Send + Sync {
    /// Deletes idempotency keys created before `older_than_ms`; returns how many.
    async fn purge_idempotency_keys(&self, older_than_ms: i64) -> Result<u64>;

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
}
