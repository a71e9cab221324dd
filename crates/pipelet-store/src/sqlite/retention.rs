//! Retention on SQLite: each step is one `BEGIN IMMEDIATE` transaction on the writer
//! connection over at most `limit` rows, so the API waits at most one small batch.
//! Space goes back to the file system with `PRAGMA incremental_vacuum` (the database
//! runs with `auto_vacuum = INCREMENTAL`; see `SqliteStore::open`).

use sqlx::Row;
use sqlx::sqlite::{SqliteConnection, SqliteRow};

use super::{begin, finish};
use crate::retention::{FINISHED_STATES, released};
use crate::{ReleasedBlobs, Result};

pub(super) async fn release_inputs(
    conn: &mut SqliteConnection,
    finished_by_ms: i64,
    limit: u32,
) -> Result<Vec<ReleasedBlobs>> {
    run_batch(conn, Step::ReleaseInputs, finished_by_ms, limit).await
}

pub(super) async fn expire_results(
    conn: &mut SqliteConnection,
    finished_by_ms: i64,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<ReleasedBlobs>> {
    run_batch(conn, Step::ExpireResults { now_ms }, finished_by_ms, limit).await
}

pub(super) async fn delete_finished_jobs(
    conn: &mut SqliteConnection,
    finished_by_ms: i64,
    limit: u32,
) -> Result<Vec<ReleasedBlobs>> {
    run_batch(conn, Step::Delete, finished_by_ms, limit).await
}

/// One retention step: which rows it picks, what it writes to each, and which of the
/// row's blobs it hands back for deletion.
#[derive(Clone, Copy)]
enum Step {
    /// Drops a finished job's input image.
    ReleaseInputs,
    /// Marks a completed job's result expired (and drops its input).
    ExpireResults { now_ms: i64 },
    /// Deletes the finished job's row.
    Delete,
}

impl Step {
    fn select(self) -> String {
        match self {
            Step::ReleaseInputs => format!(
                "SELECT seq, id, input_blob FROM jobs WHERE input_blob IS NOT NULL \
                 AND finished_at IS NOT NULL AND finished_at <= ? AND state IN {FINISHED_STATES} \
                 ORDER BY finished_at LIMIT ?"
            ),
            Step::ExpireResults { .. } => {
                "SELECT seq, id, input_blob, result FROM jobs WHERE state = 'completed' \
                 AND result_expired_at IS NULL AND finished_at IS NOT NULL AND finished_at <= ? \
                 ORDER BY finished_at LIMIT ?"
                    .to_owned()
            }
            Step::Delete => format!(
                "SELECT seq, id, input_blob, result, result_expired_at FROM jobs \
                 WHERE finished_at IS NOT NULL AND finished_at <= ? AND state IN {FINISHED_STATES} \
                 ORDER BY finished_at LIMIT ?"
            ),
        }
    }

    /// The statement run on each picked row; its last parameter is the row's `seq`.
    fn write(self) -> &'static str {
        match self {
            Step::ReleaseInputs => "UPDATE jobs SET input_blob = NULL WHERE seq = ?",
            Step::ExpireResults { .. } => {
                "UPDATE jobs SET result_expired_at = ?, input_blob = NULL WHERE seq = ?"
            }
            Step::Delete => "DELETE FROM jobs WHERE seq = ?",
        }
    }

    /// The result blob the step frees: none when only inputs go, and none for a deleted
    /// job whose result already expired (its blob went then).
    fn freed_result(self, row: &SqliteRow) -> Result<Option<String>> {
        Ok(match self {
            Step::ReleaseInputs => None,
            Step::ExpireResults { .. } => row.try_get("result")?,
            Step::Delete => {
                let expired: Option<i64> = row.try_get("result_expired_at")?;
                let result: Option<String> = row.try_get("result")?;
                result.filter(|_| expired.is_none())
            }
        })
    }
}

/// Runs `step` over at most `limit` jobs finished by `finished_by_ms`, in one
/// transaction.
async fn run_batch(
    conn: &mut SqliteConnection,
    step: Step,
    finished_by_ms: i64,
    limit: u32,
) -> Result<Vec<ReleasedBlobs>> {
    begin(conn).await?;
    let done = async {
        let rows = sqlx::query(&step.select())
            .bind(finished_by_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut write = sqlx::query(step.write());
            if let Step::ExpireResults { now_ms } = step {
                write = write.bind(now_ms);
            }
            write
                .bind(row.try_get::<i64, _>("seq")?)
                .execute(&mut *conn)
                .await?;
            let result = step.freed_result(&row)?;
            out.push(released(
                &row.try_get::<String, _>("id")?,
                row.try_get("input_blob")?,
                result.as_deref(),
            )?);
        }
        Ok(out)
    }
    .await;
    finish(conn, done).await
}

/// Frees up to `max_pages` pages from the end of the file; returns how many were free
/// before (at most that many are given back).
pub(super) async fn reclaim_space(conn: &mut SqliteConnection, max_pages: u32) -> Result<u64> {
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(&mut *conn)
        .await?;
    if free > 0 {
        // The pragma's result rows must be stepped through for it to do its work.
        sqlx::query(&format!("PRAGMA incremental_vacuum({max_pages})"))
            .fetch_all(&mut *conn)
            .await?;
    }
    Ok(u64::try_from(free).unwrap_or(0).min(u64::from(max_pages)))
}

/// Makes an existing database give space back incrementally: `auto_vacuum` can only
/// change from NONE (what databases made before retention use) with a `VACUUM`, which
/// rewrites the file once. New databases get the mode when they are created. A
/// `VACUUM` that fails (e.g. the disk is too full for the copy it makes) is logged and
/// tried again on the next start; the store works either way.
pub(super) async fn ensure_incremental_vacuum(conn: &mut SqliteConnection) -> Result<()> {
    let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&mut *conn)
        .await?;
    // 2 = INCREMENTAL.
    if mode == 2 {
        return Ok(());
    }
    sqlx::query("PRAGMA auto_vacuum = INCREMENTAL")
        .execute(&mut *conn)
        .await?;
    tracing::info!("switching the database to incremental vacuum (a one-off VACUUM)");
    if let Err(e) = sqlx::query("VACUUM").execute(&mut *conn).await {
        tracing::warn!(error = %e, "cannot VACUUM the database; deleted jobs' space is not given back until a later start succeeds");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::ConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;

    use crate::prelude::*;
    use crate::sqlite::SqliteStore;
    use crate::{NewJob, now_ms};

    async fn pragma(path: &std::path::Path, name: &str) -> i64 {
        let mut conn = SqliteConnectOptions::from_str("sqlite://")
            .unwrap()
            .filename(path)
            .connect()
            .await
            .unwrap();
        sqlx::query_scalar(&format!("PRAGMA {name}"))
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_old_database_switches_to_incremental_vacuum_and_gives_space_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipelet.db");
        // A database made the way they were before retention: auto_vacuum NONE.
        {
            let mut conn = SqliteConnectOptions::from_str("sqlite://")
                .unwrap()
                .filename(&path)
                .create_if_missing(true)
                .connect()
                .await
                .unwrap();
            sqlx::query("CREATE TABLE before_retention (x INTEGER)")
                .execute(&mut conn)
                .await
                .unwrap();
        }
        assert_eq!(pragma(&path, "auto_vacuum").await, 0);

        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(pragma(&path, "auto_vacuum").await, 2, "INCREMENTAL");

        let big = "x".repeat(16 * 1024);
        for _ in 0..40 {
            let job = store
                .create_job(NewJob {
                    id: uuid::Uuid::new_v4(),
                    model_id: "wan22-fast-t2v".into(),
                    pipeline: pipelet_api::Pipeline::T2v,
                    owner_key_id: "owner".into(),
                    priority: 0,
                    spec: pipelet_api::JobSpec::sample(big.clone()),
                    input_blob: None,
                    max_attempts: 1,
                    webhook_url: None,
                })
                .await
                .unwrap();
            store.cancel(job.id, false, "test").await.unwrap();
        }
        let deleted = store.delete_finished_jobs(now_ms() + 1, 100).await.unwrap();
        assert_eq!(deleted.len(), 40);
        assert!(
            pragma(&path, "freelist_count").await > 100,
            "deleted rows free pages"
        );
        let freed = store.reclaim_space(100_000).await.unwrap();
        assert!(freed > 100, "freed {freed} pages");
        assert_eq!(pragma(&path, "freelist_count").await, 0);
        store.close().await;
    }
}
