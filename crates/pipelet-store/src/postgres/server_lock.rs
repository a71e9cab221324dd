//! Which servers share a PostgreSQL database: every `pipelet serve` on one holds a
//! session-level advisory lock on a connection of its own for as long as it runs. A
//! server with shared blob storage takes it shared; a `--single-server` one, whose blobs
//! only it can read, takes it exclusive. So a single server refuses to start beside any
//! other server on its database, and every other server refuses beside a single server.
//!
//! The lock is taken at start: it guards against starting a wrong fleet, not against a
//! database restart (which ends the session and drops the lock) while one runs.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use crate::Result;

/// Advisory-lock key of the server lock ("pipelet" + 0x02; the reaper's is 0x01).
pub const SERVER_LOCK_KEY: i64 = 0x7069_7065_6c65_7402;

/// How a server holds the [`ServerLock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerLockMode {
    /// Any number of servers with shared blob storage.
    Shared,
    /// One server alone on the database (`--single-server`).
    Exclusive,
}

/// The held lock: dropping it (or [`ServerLock::release`]) ends its session, which
/// releases the lock.
pub struct ServerLock {
    conn: PgConnection,
}

impl std::fmt::Debug for ServerLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerLock")
    }
}

impl ServerLock {
    /// Takes the lock of the database `url` in `mode` without waiting: `Ok(None)` when
    /// another server holds it in a conflicting mode.
    pub async fn try_acquire(url: &str, mode: ServerLockMode) -> Result<Option<ServerLock>> {
        let options = PgConnectOptions::from_str(url)?.application_name("pipelet");
        let mut conn = options.connect().await?;
        let sql = match mode {
            ServerLockMode::Shared => "SELECT pg_try_advisory_lock_shared($1)",
            ServerLockMode::Exclusive => "SELECT pg_try_advisory_lock($1)",
        };
        let got = sqlx::query_scalar::<_, bool>(sql)
            .bind(SERVER_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(ServerLock { conn }))
        } else {
            if let Err(e) = conn.close().await {
                tracing::debug!(error = %e, "closing the server-lock connection");
            }
            Ok(None)
        }
    }

    /// Releases the lock now by closing its session.
    pub async fn release(self) -> Result<()> {
        self.conn.close().await?;
        Ok(())
    }
}
