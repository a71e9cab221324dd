//! The webhook outbox and signing secrets in SQLite. Events are inserted inside the
//! caller's transaction (the state change they report); with one writer, handing out
//! due events is a plain transaction.

use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::{begin, finish, jobs};
use crate::webhooks::{
    EVENT_COLUMNS_TAIL, SECRET_COLUMNS, WEBHOOK_SECRET_OVERLAP_MS, generate_secret, new_event_id,
    record_from_row, secrets_from_row, snapshot_json,
};
use crate::{
    JobRecord, Result, StoreError, WebhookAttempt, WebhookEvent, WebhookEventRecord,
    WebhookEventType, WebhookSecrets, WebhookSnapshot,
};

fn event_columns() -> String {
    format!("job_id, {EVENT_COLUMNS_TAIL}")
}

/// In the caller's transaction, after the transition: writes `event_type` for `before`'s
/// job when it has a webhook URL (reading the job as the transition left it).
pub(super) async fn emit(
    conn: &mut SqliteConnection,
    before: &JobRecord,
    event_type: WebhookEventType,
    now: i64,
) -> Result<()> {
    let Some(url) = before.webhook_url.as_deref() else {
        return Ok(());
    };
    let after = jobs::fetch_job(conn, before.id)
        .await?
        .ok_or(StoreError::NotFound)?;
    insert(
        conn,
        &after,
        url,
        event_type,
        &WebhookSnapshot::of(before, &after, now),
        now,
    )
    .await
}

async fn insert(
    conn: &mut SqliteConnection,
    job: &JobRecord,
    url: &str,
    event_type: WebhookEventType,
    snapshot: &WebhookSnapshot,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_events (id, job_id, owner_key_id, url, event_type, snapshot, \
         created_at_ms, next_attempt_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new_event_id())
    .bind(job.id.to_string())
    .bind(&job.owner_key_id)
    .bind(url)
    .bind(event_type.as_str())
    .bind(snapshot_json(snapshot)?)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn due(
    conn: &mut SqliteConnection,
    now: i64,
    limit: u32,
    hold_ms: i64,
) -> Result<Vec<WebhookEvent>> {
    begin(conn).await?;
    let due = async {
        // Only a job's earliest unfinished event qualifies: the next waits for it.
        let rows = sqlx::query(&format!(
            "SELECT {} FROM webhook_events e WHERE e.state = 'pending' \
             AND e.next_attempt_at_ms <= ?1 AND e.held_until_ms <= ?1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_events p WHERE p.job_id = e.job_id \
                             AND p.state = 'pending' AND p.seq < e.seq) \
             ORDER BY e.next_attempt_at_ms, e.seq LIMIT ?2",
            event_columns()
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = record_from_row(row)?;
            sqlx::query("UPDATE webhook_events SET held_until_ms = ? WHERE seq = ?")
                .bind(now.saturating_add(hold_ms))
                .bind(record.event.seq)
                .execute(&mut *conn)
                .await?;
            events.push(record.event);
        }
        Ok(events)
    }
    .await;
    finish(conn, due).await
}

pub(super) async fn record_attempt(
    conn: &mut SqliteConnection,
    event_id: &str,
    attempt: &WebhookAttempt,
) -> Result<()> {
    let (state, status, error, next_at) = attempt.columns();
    let done = sqlx::query(
        "UPDATE webhook_events SET state = ?, attempts = attempts + 1, last_status = ?, \
         last_error = ?, next_attempt_at_ms = ?, held_until_ms = 0 WHERE id = ?",
    )
    .bind(state.as_str())
    .bind(status)
    .bind(error)
    .bind(next_at)
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub(super) async fn events_of(
    conn: &mut SqliteConnection,
    job_id: Uuid,
) -> Result<Vec<WebhookEventRecord>> {
    let rows = sqlx::query(&format!(
        "SELECT {} FROM webhook_events WHERE job_id = ? ORDER BY seq",
        event_columns()
    ))
    .bind(job_id.to_string())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(record_from_row).collect()
}

pub(super) async fn pending(conn: &mut SqliteConnection) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE state = 'pending'")
        .fetch_one(&mut *conn)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

async fn read_secrets(
    conn: &mut SqliteConnection,
    owner_key_id: &str,
    now: i64,
) -> Result<WebhookSecrets> {
    let row = sqlx::query(&format!(
        "SELECT {SECRET_COLUMNS} FROM webhook_secrets WHERE owner_key_id = ?"
    ))
    .bind(owner_key_id)
    .fetch_one(&mut *conn)
    .await?;
    secrets_from_row(&row, now)
}

async fn ensure_secret(conn: &mut SqliteConnection, owner_key_id: &str, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO webhook_secrets (owner_key_id, secret, created_at_ms) VALUES (?, ?, ?) \
         ON CONFLICT (owner_key_id) DO NOTHING",
    )
    .bind(owner_key_id)
    .bind(generate_secret())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn secrets(
    conn: &mut SqliteConnection,
    owner_key_id: &str,
    now: i64,
) -> Result<WebhookSecrets> {
    ensure_secret(conn, owner_key_id, now).await?;
    read_secrets(conn, owner_key_id, now).await
}

pub(super) async fn rotate(
    conn: &mut SqliteConnection,
    owner_key_id: &str,
    now: i64,
) -> Result<WebhookSecrets> {
    begin(conn).await?;
    let rotated = async {
        ensure_secret(conn, owner_key_id, now).await?;
        sqlx::query(
            "UPDATE webhook_secrets SET previous_secret = secret, previous_until_ms = ?, \
             secret = ?, created_at_ms = ? WHERE owner_key_id = ?",
        )
        .bind(now.saturating_add(WEBHOOK_SECRET_OVERLAP_MS))
        .bind(generate_secret())
        .bind(now)
        .bind(owner_key_id)
        .execute(&mut *conn)
        .await?;
        read_secrets(conn, owner_key_id, now).await
    }
    .await;
    finish(conn, rotated).await
}
