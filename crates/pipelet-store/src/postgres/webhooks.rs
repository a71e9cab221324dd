//! The webhook outbox and signing secrets in PostgreSQL. Events are inserted inside the
//! caller's transaction (the state change they report). Several servers hand out due
//! events concurrently: each locks its candidates with `FOR UPDATE SKIP LOCKED` and
//! marks them held, so no event goes to two servers.

use sqlx::postgres::{PgConnection, PgPool};
use uuid::Uuid;

use super::rows::{JOB_COLUMNS, job_from_row, text};
use crate::webhooks::{
    EVENT_COLUMNS_TAIL, SECRET_COLUMNS, WEBHOOK_SECRET_OVERLAP_MS, generate_secret, new_event_id,
    record_from_row, secrets_from_row, snapshot_json,
};
use crate::{
    JobRecord, Result, StoreError, WebhookAttempt, WebhookEvent, WebhookEventRecord,
    WebhookEventType, WebhookSecrets, WebhookSnapshot,
};

fn event_columns(alias: &str) -> String {
    let tail = EVENT_COLUMNS_TAIL
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{alias}.job_id::text AS job_id, {tail}")
}

/// In the caller's transaction, after the transition: writes `event_type` for `before`'s
/// job when it has a webhook URL (reading the job as the transition left it).
pub(super) async fn emit(
    tx: &mut PgConnection,
    before: &JobRecord,
    event_type: WebhookEventType,
    now: i64,
) -> Result<()> {
    let Some(url) = before.webhook_url.as_deref() else {
        return Ok(());
    };
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE seq = $1"))
        .bind(before.seq)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    let after = job_from_row(&row)?;
    let snapshot = WebhookSnapshot::of(before, &after, now);
    sqlx::query(
        "INSERT INTO webhook_events (id, job_id, owner_key_id, url, event_type, snapshot, \
         created_at_ms, next_attempt_at_ms) VALUES ($1, $2::uuid, $3, $4, $5, $6, $7, $7)",
    )
    .bind(new_event_id())
    .bind(after.id.to_string())
    .bind(text(&after.owner_key_id))
    .bind(text(url))
    .bind(event_type.as_str())
    .bind(text(&snapshot_json(&snapshot)?))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub(super) async fn due(
    pool: &PgPool,
    now: i64,
    limit: u32,
    hold_ms: i64,
) -> Result<Vec<WebhookEvent>> {
    // Only a job's earliest unfinished event qualifies: the next waits for it. Rows
    // another server is taking are skipped; one it took and committed fails the
    // re-checked `held_until_ms` condition.
    let rows = sqlx::query(&format!(
        "WITH due AS ( \
           SELECT e.seq FROM webhook_events e WHERE e.state = 'pending' \
             AND e.next_attempt_at_ms <= $1 AND e.held_until_ms <= $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_events p WHERE p.job_id = e.job_id \
                             AND p.state = 'pending' AND p.seq < e.seq) \
           ORDER BY e.next_attempt_at_ms, e.seq LIMIT $2 \
           FOR UPDATE SKIP LOCKED) \
         UPDATE webhook_events w SET held_until_ms = $3 FROM due WHERE w.seq = due.seq \
         RETURNING {}",
        event_columns("w")
    ))
    .bind(now)
    .bind(i64::from(limit))
    .bind(now.saturating_add(hold_ms))
    .fetch_all(pool)
    .await?;
    let mut events = rows
        .iter()
        .map(|row| record_from_row(row).map(|r| r.event))
        .collect::<Result<Vec<_>>>()?;
    events.sort_by_key(|e| e.seq);
    Ok(events)
}

pub(super) async fn record_attempt(
    pool: &PgPool,
    event_id: &str,
    attempt: &WebhookAttempt,
) -> Result<()> {
    let (state, status, error, next_at) = attempt.columns();
    let done = sqlx::query(
        "UPDATE webhook_events SET state = $1, attempts = attempts + 1, last_status = $2, \
         last_error = $3, next_attempt_at_ms = $4, held_until_ms = 0 WHERE id = $5",
    )
    .bind(state.as_str())
    .bind(status)
    .bind(error.as_deref().map(text))
    .bind(next_at)
    .bind(text(event_id))
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn events_of(pool: &PgPool, job_id: Uuid) -> Result<Vec<WebhookEventRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM webhook_events e WHERE e.job_id = $1::uuid ORDER BY e.seq",
        event_columns("e")
    ))
    .bind(job_id.to_string())
    .fetch_all(pool)
    .await?;
    rows.iter().map(record_from_row).collect()
}

pub(super) async fn pending(pool: &PgPool) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE state = 'pending'")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

async fn read_secrets(
    conn: &mut PgConnection,
    owner_key_id: &str,
    now: i64,
) -> Result<WebhookSecrets> {
    let row = sqlx::query(&format!(
        "SELECT {SECRET_COLUMNS} FROM webhook_secrets WHERE owner_key_id = $1"
    ))
    .bind(text(owner_key_id))
    .fetch_one(&mut *conn)
    .await?;
    secrets_from_row(&row, now)
}

async fn ensure_secret(conn: &mut PgConnection, owner_key_id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_secrets (owner_key_id, secret, created_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (owner_key_id) DO NOTHING",
    )
    .bind(text(owner_key_id))
    .bind(generate_secret())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn secrets(pool: &PgPool, owner_key_id: &str, now: i64) -> Result<WebhookSecrets> {
    let mut conn = pool.acquire().await?;
    ensure_secret(&mut conn, owner_key_id, now).await?;
    read_secrets(&mut conn, owner_key_id, now).await
}

pub(super) async fn rotate(pool: &PgPool, owner_key_id: &str, now: i64) -> Result<WebhookSecrets> {
    let mut tx = pool.begin().await?;
    ensure_secret(&mut tx, owner_key_id, now).await?;
    sqlx::query(
        "UPDATE webhook_secrets SET previous_secret = secret, previous_until_ms = $1, \
         secret = $2, created_at_ms = $3 WHERE owner_key_id = $4",
    )
    .bind(now.saturating_add(WEBHOOK_SECRET_OVERLAP_MS))
    .bind(generate_secret())
    .bind(now)
    .bind(text(owner_key_id))
    .execute(&mut *tx)
    .await?;
    let secrets = read_secrets(&mut tx, owner_key_id, now).await?;
    tx.commit().await?;
    Ok(secrets)
}
