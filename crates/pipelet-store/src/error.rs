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

impl StoreError {
    /// Whether a blob that was asked for does not exist.
    pub fn is_blob_not_found(&self) -> bool {
        matches!(self, StoreError::Blob(object_store::Error::NotFound { .. }))
    }

    /// Whether this failed because the disk (or the database's storage) is full:
    /// `ENOSPC` (or a disk quota) anywhere in the cause chain, SQLite's `SQLITE_FULL`,
    /// PostgreSQL's `disk_full` (53100). Nothing was written then; it may succeed once
    /// space is freed.
    pub fn is_disk_full(&self) -> bool {
        fn io_full(e: &std::io::Error) -> bool {
            matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) || e
                .get_ref()
                .is_some_and(|inner| chain_full(Some(inner as &(dyn std::error::Error + 'static))))
        }
        fn chain_full(mut e: Option<&(dyn std::error::Error + 'static)>) -> bool {
            while let Some(err) = e {
                if err.downcast_ref::<std::io::Error>().is_some_and(io_full) {
                    return true;
                }
                e = err.source();
            }
            false
        }
        match self {
            StoreError::Io(e) => io_full(e),
            StoreError::Blob(e) => chain_full(Some(e)),
            StoreError::Database(sqlx::Error::Database(db)) => {
                // 13 = SQLITE_FULL; 53100 = PostgreSQL's disk_full.
                matches!(db.code().as_deref(), Some("13" | "53100"))
            }
            StoreError::Database(sqlx::Error::Io(e)) => io_full(e),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_found_in_the_cause_chain() {
        let enospc = || std::io::Error::from_raw_os_error(28);
        assert!(StoreError::Io(enospc()).is_disk_full());
        let wrapped = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::other(enospc())),
        };
        assert!(StoreError::Blob(wrapped).is_disk_full());
        let other = object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::PermissionDenied)),
        };
        assert!(!StoreError::Blob(other).is_disk_full());
        assert!(!StoreError::NotFound.is_disk_full());
    }
}
