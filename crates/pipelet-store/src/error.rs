//! The store layer's error type.

use crate::JobState;

/// Why a store or blob call failed. [`StoreError::is_transient`] and
/// [`StoreError::is_disk_full`] sort out what the server answers with 503 and 507.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No job (or webhook event) with that id: never created, or deleted by retention.
    #[error("job not found")]
    NotFound,
    /// The lease token is stale: the job expired and went elsewhere, or already ended.
    #[error("lease lost: the job was re-queued, reassigned or already finished")]
    LeaseLost,
    /// The job is in a state that does not allow the call (e.g. acknowledging a cancel
    /// nobody requested); carries the state it is in.
    #[error("job is {0}")]
    InvalidState(JobState),
    /// The database refused or could not be reached; see [`StoreError::is_transient`].
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be brought up to date on open.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database holds or answered something that should be impossible: a value
    /// this version cannot read (unknown state or role, bad JSON) or a row missing
    /// inside its own transaction. Not retryable.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The blob store (local directory or object storage) failed.
    #[error("blob store error: {0}")]
    Blob(#[from] object_store::Error),
    /// A local file operation failed (opening the data dir, a temporary blob file).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A bad `--blob-url` or database URL; the message says what to fix.
    #[error("{0}")]
    Config(String),
    /// The store's connection task has stopped (the server is shutting down).
    #[error("store is shutting down")]
    Closed,
    /// A streamed blob passed its size limit (in bytes).
    #[error("blob larger than {0} bytes")]
    TooLarge(u64),
    /// No live (not revoked) key has this name.
    #[error("no live key is named '{0}'")]
    KeyNotFound(String),
    /// A live key already has this name; names of live keys are unique.
    #[error("a live key is already named '{0}'; revoke it or choose another name")]
    KeyNameTaken(String),
    /// A create refused: the owner already has `limit` queued jobs, its queued-jobs
    /// quota (the key's own when `own`, else the server's default).
    #[error("this key already has {limit} queued jobs")]
    KeyQueueFull {
        /// The quota that was reached.
        limit: u64,
        /// Whether it is the key's own quota rather than the server's default.
        own: bool,
    },
}

impl StoreError {
    /// Whether a blob that was asked for does not exist.
    pub fn is_blob_not_found(&self) -> bool {
        matches!(self, StoreError::Blob(object_store::Error::NotFound { .. }))
    }

    /// Whether a retry a little later can succeed: the database is unreachable (pool
    /// timed out or closed, connection I/O failed or was lost) or refused this one
    /// transaction (a serialization failure or deadlock). The server answers these 503.
    pub fn is_transient(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| transient_code(&code)),
            _ => false,
        }
    }

    /// Whether the write may have committed although it failed: the connection broke
    /// mid-call, perhaps while COMMIT was in flight, so only its answer was lost.
    /// Callers must then keep what a committed write would point at.
    pub fn may_have_committed(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Io(_)) => true,
            // PostgreSQL's connection_exception class.
            StoreError::Database(sqlx::Error::Database(db)) => db
                .code()
                .is_some_and(|c| c.len() == 5 && c.starts_with("08")),
            _ => false,
        }
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

/// A database error code that means "retry": PostgreSQL SQLSTATEs (five characters) for
/// a lost connection (class 08), a serialization failure or deadlock, or a server going
/// away; SQLite result codes (numbers) whose primary code is BUSY or LOCKED.
fn transient_code(code: &str) -> bool {
    // SQLite's extended codes stay below 10000, so five characters is a SQLSTATE.
    if code.len() == 5 {
        return code.starts_with("08") || matches!(code, "40001" | "40P01" | "57P01" | "57P03");
    }
    // 5 = SQLITE_BUSY, 6 = SQLITE_LOCKED; extended codes keep the primary in the low byte.
    code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
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

    #[test]
    fn transient_and_maybe_committed() {
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(StoreError::Database(sqlx::Error::PoolClosed).is_transient());
        let io = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(StoreError::Database(io()).is_transient());
        assert!(StoreError::Database(io()).may_have_committed());
        assert!(!StoreError::Database(sqlx::Error::PoolTimedOut).may_have_committed());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::NotFound.is_transient());
        assert!(!StoreError::Corrupt("x".into()).is_transient());
        for code in ["40001", "40P01", "08006", "57P01", "5", "6", "517", "262"] {
            assert!(transient_code(code), "{code}");
        }
        for code in ["23505", "53100", "13", "19", "2067", "42601"] {
            assert!(!transient_code(code), "{code}");
        }
    }
}
