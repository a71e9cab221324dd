//! The store layer's error type.

use crate::JobState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job not found")]
    NotFound,
    /// The lease token is stale: the job expired and went elsewhere, or already ended.
    #[error("lease lost: the job was re-queued, reassigned or already finished")]
    LeaseLost,
    #[error("job is {0}")]
    InvalidState(JobState),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("blob store error: {0}")]
    Blob(#[from] object_store::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Config(String),
    #[error("store is shutting down")]
    Closed,
    /// A streamed blob passed its size limit (in bytes).
    #[error("blob larger than {0} bytes")]
    TooLarge(u64),
}
