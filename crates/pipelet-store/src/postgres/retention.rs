//! Retention on PostgreSQL: each step is one statement over at most `limit` rows,
//! locked `FOR UPDATE SKIP LOCKED` so it never waits on (or for) another transaction,
//! and returning the blob keys the rows gave up. Autovacuum gives the space back.

use sqlx::Row;
use sqlx::postgres::{PgPool, PgRow};

use crate::retention::{FINISHED_STATES, released};
use crate::{ReleasedBlobs, Result};

fn collect(
    rows: Vec<PgRow>,
    result_live: impl Fn(&PgRow) -> Result<bool>,
) -> Result<Vec<ReleasedBlobs>> {
    rows.iter()
        .map(|row| {
            let result: Option<String> = row.try_get("result")?;
            let live = result_live(row)?;
            released(
                &row.try_get::<String, _>("id")?,
                row.try_get("input_blob")?,
                result.as_deref().filter(|_| live),
            )
        })
        .collect()
}

pub(super) async fn release_inputs(
    pool: &PgPool,
    finished_by_ms: i64,
    limit: u32,
) -> Result<Vec<ReleasedBlobs>> {
    let rows = sqlx::query(&format!(
        "WITH due AS (SELECT seq, input_blob FROM jobs WHERE input_blob IS NOT NULL \
           AND finished_at IS NOT NULL AND finished_at <= $1 AND state IN {FINISHED_STATES} \
           ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         UPDATE jobs j SET input_blob = NULL FROM due WHERE j.seq = due.seq \
         RETURNING j.id::text AS id, due.input_blob AS input_blob, NULL::text AS result"
    ))
    .bind(finished_by_ms)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    collect(rows, |_| Ok(false))
}

pub(super) async fn expire_results(
    pool: &PgPool,
    finished_by_ms: i64,
    now_ms: i64,
    limit: u32,
) -> Result<Vec<ReleasedBlobs>> {
    let rows = sqlx::query(
        "WITH due AS (SELECT seq, input_blob, result FROM jobs WHERE state = 'completed' \
           AND result_expired_at IS NULL AND finished_at IS NOT NULL AND finished_at <= $1 \
           ORDER BY finished_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
         UPDATE jobs j SET result_expired_at = $2, input_blob = NULL FROM due \
         WHERE j.seq = due.seq \
         RETURNING j.id::text AS id, due.input_blob AS input_blob, due.result AS result",
    )
    .bind(finished_by_ms)
    .bind(now_ms)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    collect(rows, |_| Ok(true))
}

pub(super) async fn delete_finished_jobs(
    pool: &PgPool,
    finished_by_ms: i64,
    limit: u32,
) -> Result<Vec<ReleasedBlobs>> {
    let rows = sqlx::query(&format!(
        "WITH due AS (SELECT seq FROM jobs WHERE finished_at IS NOT NULL \
           AND finished_at <= $1 AND state IN {FINISHED_STATES} \
           ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
         DELETE FROM jobs j USING due WHERE j.seq = due.seq \
         RETURNING j.id::text AS id, j.input_blob, j.result, j.result_expired_at"
    ))
    .bind(finished_by_ms)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    collect(rows, |row| {
        Ok(row
            .try_get::<Option<i64>, _>("result_expired_at")?
            .is_none())
    })
}
