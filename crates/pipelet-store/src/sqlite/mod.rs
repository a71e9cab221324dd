//! The embedded store: one SQLite file in WAL mode.
//!
//! All writes go through one connection behind a mutex (SQLite has one writer anyway,
//! so this turns lock contention into a fair queue), each in a `BEGIN IMMEDIATE`
//! transaction. Creates are group-committed: concurrent creates share one transaction
//! and one fsync, which is what makes durable creates fast. Reads use a small pool,
//! but queued and running jobs — the ones clients poll — are answered from
//! `LiveJobs`, a mirror kept under the writer lock, because a round trip through
//! sqlx's SQLite thread costs several times the rest of a status request. The data
//! dir is locked to one server, so every job write passes through this process.

mod api_keys;
mod jobs;
mod live;
mod retention;
mod rows;
mod store_impl;
mod usage;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pipelet_api::clock::{self, Clock, SharedClock};
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::{CreateOutcome, Idempotency, NewJob, QueueIndex, Result};
pub(crate) use live::LiveJobs;

/// Concurrent creates that may share one transaction.
const MAX_CREATE_BATCH: usize = 256;
/// How long a connection waits for SQLite's lock before giving up (another process,
/// such as `pipelet keys create`, may hold it briefly).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CONNECTIONS: u32 = 4;

/// A create waiting for its batch, with its `Idempotency-Key` if it has one.
type PendingCreate = (
    NewJob,
    Option<Idempotency>,
    oneshot::Sender<Result<CreateOutcome>>,
);

/// The [`crate::Store`] on one SQLite file; only one server may use it (the data
/// dir lock keeps a second one out).
pub struct SqliteStore {
    read: SqlitePool,
    writer: Arc<tokio::sync::Mutex<SqliteConnection>>,
    index: Arc<Mutex<QueueIndex>>,
    /// Queued and running jobs, mirrored in memory.
    live: Arc<LiveJobs>,
    available: Arc<Notify>,
    creates: mpsc::Sender<PendingCreate>,
    /// Where every job time (leases, heartbeats, finish times) is read.
    clock: SharedClock,
    /// The per-key quotas for keys without their own.
    quotas: Arc<crate::api_keys::QuotaCell>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with_clock(path, clock::system()).await
    }

    /// [`SqliteStore::open`] reading the time from `clock` (tests move a
    /// [`ManualClock`](pipelet_api::clock::ManualClock) instead of sleeping).
    pub async fn open_with_clock(path: &Path, clock: SharedClock) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            // Before the first table exists, so a new database frees deleted jobs'
            // pages with `incremental_vacuum` (retention); older ones switch below.
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a 2xx means the commit reached the disk, not just the OS.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .disable_statement_logging();
        let mut writer = options.connect().await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await?;
        retention::ensure_incremental_vacuum(&mut writer).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .connect_with(options)
            .await?;

        live::fail_unreadable(&mut writer, clock.now_ms()).await?;
        let index = Arc::new(Mutex::new(jobs::load_index(&mut writer).await?));
        let writer = Arc::new(tokio::sync::Mutex::new(writer));
        let available = Arc::new(Notify::new());
        let (creates, rx) = mpsc::channel(MAX_CREATE_BATCH * 4);
        let live = Arc::new(LiveJobs::default());
        live::load(&live, &mut *writer.lock().await).await?;
        let quotas = Arc::new(crate::api_keys::QuotaCell::default());
        tokio::spawn(jobs::run_create_batches(
            rx,
            writer.clone(),
            index.clone(),
            live.clone(),
            available.clone(),
            clock.clone(),
            quotas.clone(),
        ));
        Ok(Self {
            read,
            writer,
            index,
            live,
            available,
            creates,
            clock,
            quotas,
        })
    }

    /// The clock this store reads the time from.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    fn index(&self) -> MutexGuard<'_, QueueIndex> {
        // A panic while holding the lock cannot leave the index half-updated (every
        // update is a single call), so a poisoned lock is still usable.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the pools so the file can be reopened cleanly (used by tests).
    pub async fn close(&self) {
        self.read.close().await;
    }
}

pub(crate) fn lock_index(index: &Mutex<QueueIndex>) -> MutexGuard<'_, QueueIndex> {
    index.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) async fn begin(conn: &mut SqliteConnection) -> Result<()> {
    sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
    Ok(())
}

/// Commits on `Ok`, rolls back on `Err`.
pub(crate) async fn finish<T>(conn: &mut SqliteConnection, result: Result<T>) -> Result<T> {
    match result {
        Ok(value) => {
            sqlx::query("COMMIT").execute(&mut *conn).await?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                tracing::error!(error = %rollback, "rollback failed");
                // The connection may be in an unknown state; ping so the next user fails fast.
                let _ = conn.ping().await;
            }
            Err(e)
        }
    }
}
