//! The shared store: PostgreSQL, for several `pipelet serve` processes on one database.
//!
//! Every transition is one transaction (or one guarded statement) that names the state
//! it starts from, and every lease-holder call is fenced by `(id, state = 'running',
//! lease_token)`, exactly as in the SQLite store; the dispatch decisions themselves are
//! the shared functions of `crate::claim_order`.
//!
//! - **Claim**: a CTE locks the head of each requested pipeline with
//!   `FOR UPDATE SKIP LOCKED` (so concurrent claimers on any server take different
//!   jobs and never wait on each other), `dispatch::pick_head` chooses one, and a
//!   guarded `UPDATE` leases it with `lease_token + 1` (the monotonic fencing token).
//! - **Creates** are group-committed: concurrent creates of this process share one
//!   multi-row `INSERT` and one commit. `create_job` returns only after `COMMIT`, and
//!   every write does, so a 2xx is durable under PostgreSQL's `synchronous_commit`
//!   (on by default; an operator who turns it off trades that away).
//! - **Queue positions** are computed by the database, never from process memory (other
//!   servers' writes would make a local index wrong). One statement reads the job and,
//!   while it is queued, two counts over the partial index `jobs_dispatch (pipeline,
//!   priority DESC, vstart, seq) WHERE state = 'queued'`: jobs of the pipeline at a
//!   higher priority, plus jobs at the same priority with a smaller (fair-queuing start
//!   tag, seq) (see `crate::fair` and `fair.rs`). Each is a contiguous
//!   range of that index, so both are index-only range scans that cost what the
//!   position is: one statement, one snapshot, exact. A single `OR` condition could not
//!   use the range and would scan the whole pipeline whatever the position. Measured
//!   (`tests/position_cost.rs`, 10,000 queued, loopback, a busy 2-core machine): the
//!   status read costs ≈0.2 ms for the row alone, ≈0.23 ms at position 0 and ≈1.0 ms
//!   at position 9,999 once autovacuum has set the visibility map (1.1–1.8 ms right
//!   after a burst of inserts, before it has), against ≈0.025 ms on SQLite, whose
//!   in-memory index makes the position free. The total is O(position) per poll, so a
//!   backlog of n jobs all polling costs O(n²) per polling round (≈5 CPU-seconds per
//!   round at n = 10,000); if that ever matters, the alternative considered was a
//!   per-process mirror of the queue kept exact by a commit-ordered change log (a
//!   version row bumped by every queue change), which makes a position O(log n) but
//!   serialises every create, claim and cancel of every server on that one row.
//! - **`queued_total()`** is synchronous (the 429 check on every create), so it reads a
//!   cached count (`gauge.rs`): moved by this process's own writes and re-read with a
//!   `count(*)` every poll interval. Exact for one server; across several it lags other
//!   servers' writes by up to one interval, which is fine for a queue-full limit.
//! - **Wake-ups**: creates and re-queues `NOTIFY pipelet_jobs` in their transaction; a
//!   `LISTEN` connection wakes [`crate::Store::job_available`], and a timer wakes it every
//!   poll interval too, so a lost notification (or a dropped listener connection) delays
//!   a worker by at most one interval and never strands it.
//! - **Reaping** locks expired rows `FOR UPDATE SKIP LOCKED` and re-checks the lease
//!   token in each update, so reapers on several servers never re-queue a job twice.
//!   [`PgStore::try_reaper_lock`] elects one reaper with a session advisory lock.
//! - **Migrations** run on connect through sqlx's migrator, which holds
//!   `pg_advisory_lock` (keyed by the database name) while it checks and applies them,
//!   so servers starting together apply each migration once (the lock is taken before
//!   even the `_sqlx_migrations` table is created). They run on a connection of their
//!   own that is closed afterwards, so a failed run cannot keep the lock.

mod api_keys;
mod create;
mod fair;
mod gauge;
mod jobs;
mod recovery;
mod retention;
mod rows;
mod server_lock;
mod store_impl;
mod usage;
mod wakeups;
mod webhooks;

pub use server_lock::{SERVER_LOCK_KEY, ServerLock, ServerLockMode};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use pipelet_api::clock::{self, Clock, SharedClock};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::{NewJob, Result};
use gauge::QueuedGauge;

/// The channel creates and re-queues notify; a payload-less hint.
pub const JOBS_CHANNEL: &str = "pipelet_jobs";
/// `pg_try_advisory_lock` key of the reaper election ("pipelet" + 0x01).
pub const REAPER_LOCK_KEY: i64 = 0x7069_7065_6c65_7401;
/// Concurrent creates that may share one transaction.
const MAX_CREATE_BATCH: usize = 256;

type PendingCreate = (NewJob, oneshot::Sender<Result<crate::Created>>);

/// Tuning for [`PgStore::connect_with`]; [`Default`] suits a server.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (the `LISTEN` connection and the reaper-lock connection
    /// are extra).
    pub max_connections: u32,
    /// How long a call waits for a free connection before failing.
    pub acquire_timeout: Duration,
    /// Polling fallback for wake-ups, and how often `queued_total()` is re-read.
    pub poll_interval: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            // Short, so requests fail fast (503) while the database is away.
            acquire_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The [`crate::Store`] on a PostgreSQL database that several servers may share.
pub struct PgStore {
    pool: PgPool,
    listen_pool: PgPool,
    connect_options: PgConnectOptions,
    available: Arc<Notify>,
    gauge: Arc<QueuedGauge>,
    creates: mpsc::Sender<PendingCreate>,
    background: Vec<JoinHandle<()>>,
    reaper: tokio::sync::Mutex<Option<ReaperSession>>,
    /// Where every job time (leases, heartbeats, finish times) is read.
    clock: SharedClock,
    /// The per-key quotas for keys without their own.
    quotas: Arc<crate::api_keys::QuotaCell>,
}

/// The dedicated connection that holds (or tries for) the reaper lock.
struct ReaperSession {
    conn: PgConnection,
    leader: bool,
}

impl PgStore {
    /// Connects to `url` (`postgres://user@host/db`), applies migrations and starts the
    /// listener and the polling fallback.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(PgConnectOptions::from_str(url)?, PgOptions::default()).await
    }

    /// [`PgStore::connect`] with already parsed connection options and pool `tuning`.
    pub async fn connect_with(options: PgConnectOptions, tuning: PgOptions) -> Result<Self> {
        Self::connect_with_clock(options, tuning, clock::system()).await
    }

    /// [`PgStore::connect_with`] reading the time from `clock` (tests move a
    /// [`ManualClock`](pipelet_api::clock::ManualClock) instead of sleeping).
    pub async fn connect_with_clock(
        options: PgConnectOptions,
        tuning: PgOptions,
        clock: SharedClock,
    ) -> Result<Self> {
        let options = options.application_name("pipelet");
        // A one-connection pool of its own: closing it ends the session, which also drops
        // the migrator's advisory lock if the run failed half-way.
        let migrate_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(tuning.acquire_timeout)
            .connect_with(options.clone())
            .await?;
        let migrated = sqlx::migrate!("./migrations/postgres")
            .run(&migrate_pool)
            .await;
        migrate_pool.close().await;
        migrated?;

        let pool = PgPoolOptions::new()
            .max_connections(tuning.max_connections.max(1))
            .acquire_timeout(tuning.acquire_timeout)
            .connect_with(options.clone())
            .await?;
        // The listener holds one connection for good; the second slot lets it reconnect
        // while the dead one is still being closed.
        let listen_pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(tuning.acquire_timeout)
            .connect_with(options.clone())
            .await?;
        let available = Arc::new(Notify::new());
        let gauge = Arc::new(QueuedGauge::default());
        recovery::fail_unreadable(&pool, clock.now_ms()).await?;
        wakeups::refresh_gauge(&pool, &gauge).await?;
        let listener = wakeups::listen(&listen_pool).await?;

        let (creates, rx) = mpsc::channel(MAX_CREATE_BATCH * 4);
        let quotas = Arc::new(crate::api_keys::QuotaCell::default());
        tokio::spawn(create::run_create_batches(
            rx,
            pool.clone(),
            gauge.clone(),
            clock.clone(),
            quotas.clone(),
        ));
        let background = vec![
            tokio::spawn(wakeups::run_listener(listener, available.clone())),
            tokio::spawn(wakeups::run_poller(
                pool.clone(),
                gauge.clone(),
                available.clone(),
                tuning.poll_interval,
            )),
        ];
        Ok(Self {
            pool,
            listen_pool,
            connect_options: options,
            available,
            gauge,
            creates,
            background,
            reaper: tokio::sync::Mutex::new(None),
            clock,
            quotas,
        })
    }

    /// The clock this store reads the time from.
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Tries to become (or confirms this process still is) the one reaper among the
    /// servers sharing the database: `pg_try_advisory_lock` on a connection kept open
    /// while leader. A lost connection loses the lock, reported as `false` at the next
    /// call. Reaping stays safe without the election; it only avoids duplicate work.
    pub async fn try_reaper_lock(&self) -> Result<bool> {
        let mut slot = self.reaper.lock().await;
        if let Some(session) = slot.as_mut()
            && session.leader
        {
            if session.conn.ping().await.is_ok() {
                return Ok(true);
            }
            tracing::warn!("reaper lock connection lost; no longer the reaper");
            *slot = None;
        }
        let session = match slot.as_mut() {
            Some(session) => session,
            None => slot.insert(ReaperSession {
                conn: self.connect_options.connect().await?,
                leader: false,
            }),
        };
        let tried = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(REAPER_LOCK_KEY)
            .fetch_one(&mut session.conn)
            .await;
        match tried {
            Ok(got) => {
                session.leader = got;
                Ok(got)
            }
            Err(e) => {
                *slot = None;
                Err(e.into())
            }
        }
    }

    /// Gives up the reaper lock (if held) by closing its connection.
    pub async fn release_reaper_lock(&self) -> Result<()> {
        if let Some(session) = self.reaper.lock().await.take() {
            session.conn.close().await?;
        }
        Ok(())
    }

    /// Stops the background tasks and closes every connection (used by tests and on
    /// shutdown; creates already sent are still answered).
    pub async fn close(&self) {
        for task in &self.background {
            task.abort();
        }
        if let Err(e) = self.release_reaper_lock().await {
            tracing::debug!(error = %e, "closing the reaper connection");
        }
        self.listen_pool.close().await;
        self.pool.close().await;
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}
