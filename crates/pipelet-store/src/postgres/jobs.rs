//! The job state machine in PostgreSQL: reads with exact queue positions, the claim,
//! and the lease-holder calls, each fenced by `(id, state = 'running', lease_token)`.

use pipelet_api::clock::Clock;
use sqlx::Row;
use sqlx::postgres::PgPool;
use uuid::Uuid;

use super::JOBS_CHANNEL;
use super::gauge::QueuedGauge;
use super::rows::{JOB_COLUMNS, job_from_row, result_json, text};
use super::{usage, webhooks};
use crate::claim_order::{Head, next_state, pick_head, recorded_detail};
use crate::rows::{UNREADABLE_SPEC, unreadable_spec};
use crate::usage::UsageDelta;
use crate::{
    ClaimRequest, FailOutcome, Failure, HeartbeatReply, JobRecord, JobResult, JobState, Lease,
    LeaseRef, ProgressUpdate, Result, StoreError, WebhookEventType,
};

pub(super) async fn fetch_job(pool: &PgPool, id: Uuid) -> Result<Option<JobRecord>> {
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1::uuid"
    ))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(job_from_row).transpose()
}

/// The job and, while it is queued, its exact position: one statement (one snapshot)
/// that adds two index-only range counts over `jobs_dispatch`.
pub(super) async fn job_status(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(JobRecord, Option<u64>)>> {
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS}, CASE WHEN j.state = 'queued' THEN \
           (SELECT count(*) FROM jobs q WHERE q.state = 'queued' \
              AND q.pipeline = j.pipeline AND q.priority > j.priority) \
         + (SELECT count(*) FROM jobs q WHERE q.state = 'queued' \
              AND q.pipeline = j.pipeline AND q.priority = j.priority \
              AND (q.vstart, q.seq) < (j.vstart, j.seq)) \
         END AS queue_position \
         FROM jobs j WHERE j.id = $1::uuid"
    ))
    .bind(id.to_string())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let job = job_from_row(&row)?;
    let position: Option<i64> = row.try_get("queue_position")?;
    Ok(Some((job, position.and_then(|p| u64::try_from(p).ok()))))
}

pub(super) async fn claim(
    pool: &PgPool,
    clock: &dyn Clock,
    gauge: &QueuedGauge,
    req: &ClaimRequest,
    max_running: u64,
) -> Result<Option<Lease>> {
    if req.pipelines.is_empty() {
        return Ok(None);
    }
    let now = clock.now_ms();
    let pipelines: Vec<&str> = req.pipelines.iter().map(|p| p.as_str()).collect();
    let write = gauge.write();
    let mut tx = pool.begin().await?;
    // The head of each pipeline, locked; heads other claimers hold are skipped, so they
    // get the next job instead of waiting. Locks on heads not picked end with the commit.
    let rows = sqlx::query(
        "WITH heads AS ( \
           SELECT h.seq, h.pipeline, h.priority, h.created_at \
           FROM unnest($1::text[]) AS p(name) \
           CROSS JOIN LATERAL ( \
             SELECT seq, pipeline, priority, created_at FROM jobs \
             WHERE state = 'queued' AND pipeline = p.name \
             AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.id = jobs.owner_key_id \
               AND coalesce(k.max_running, $2) > 0 \
               AND (SELECT count(*) FROM jobs r WHERE r.owner_key_id = k.id \
                    AND r.state = 'running') >= coalesce(k.max_running, $2)) \
             ORDER BY priority DESC, vstart, seq LIMIT 1 \
             FOR UPDATE SKIP LOCKED) h) \
         SELECT seq, pipeline, priority, created_at FROM heads",
    )
    .bind(&pipelines)
    .bind(i64::try_from(max_running).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await?;
    let mut heads = Vec::with_capacity(rows.len());
    for row in rows {
        let pipeline: String = row.try_get("pipeline")?;
        heads.push(Head {
            pipeline: pipelet_api::Pipeline::parse(&pipeline)
                .ok_or_else(|| StoreError::Corrupt(format!("pipeline {pipeline:?}")))?,
            seq: row.try_get("seq")?,
            priority: row.try_get("priority")?,
            created_at: row.try_get("created_at")?,
        });
    }
    let Some(head) = pick_head(heads, req, now) else {
        return Ok(None);
    };
    let expires = now + req.lease_ms;
    let row = sqlx::query(&format!(
        "UPDATE jobs SET state = 'running', attempt = attempt + 1, \
         lease_token = lease_token + 1, lease_owner = $1, lease_expires_at = $2, \
         heartbeat_at = $3, started_at = $3, progress_done = NULL, progress_total = NULL \
         WHERE seq = $4 AND state = 'queued' RETURNING {JOB_COLUMNS}"
    ))
    .bind(text(&req.worker_id))
    .bind(expires)
    .bind(now)
    .bind(head.seq)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        // Unreachable while the row lock holds; treat as nothing to claim.
        return Ok(None);
    };
    let job = match job_from_row(&row) {
        Ok(job) => job,
        // Written by a version this one cannot read: failed, so it cannot block the queue.
        Err(StoreError::Corrupt(why)) => {
            let spec: String = row.try_get("spec")?;
            let unreadable = unreadable_spec(&spec);
            let detail = unreadable.as_ref().map_or(why, |u| u.detail.clone());
            tracing::error!(seq = head.seq, error = %detail, "failing a job this version cannot read");
            sqlx::query(
                "UPDATE jobs SET state = 'failed', finished_at = $1, error = $2, \
                 error_detail = $3, spec = COALESCE($5, spec), lease_owner = NULL, \
                 lease_expires_at = NULL WHERE seq = $4",
            )
            .bind(now)
            .bind(UNREADABLE_SPEC)
            .bind(&detail)
            .bind(head.seq)
            .bind(unreadable.map(|u| u.stand_in))
            .execute(&mut *tx)
            .await?;
            let id: String = row.try_get("id")?;
            usage::record_unreadable(&mut tx, &id, now).await?;
            tx.commit().await?;
            write.commit(-1);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if over_running_quota(&mut tx, &job.owner_key_id, max_running).await? {
        // A concurrent claim (perhaps on another server) took the owner's last slot
        // after the heads were read: undo this one; the next claim skips the owner.
        tx.rollback().await?;
        return Ok(None);
    }
    webhooks::emit(&mut tx, &job, WebhookEventType::Acquired, now).await?;
    tx.commit().await?;
    write.commit(-1);
    Ok(Some(Lease {
        lease: LeaseRef {
            job_id: job.id,
            token: job.lease_token,
        },
        job,
        expires_at_ms: expires,
    }))
}

/// Whether `owner`, counting the job this transaction just leased, now runs more jobs
/// than its running-jobs quota (its own, else `default`; 0 is none). The key's row is
/// locked first, so concurrent claims for one owner count one after the other, exactly.
async fn over_running_quota(
    tx: &mut sqlx::PgConnection,
    owner: &str,
    default: u64,
) -> Result<bool> {
    let limit: Option<i64> = sqlx::query_scalar(
        "SELECT coalesce(max_running, $2) FROM api_keys WHERE id = $1 \
         AND coalesce(max_running, $2) > 0 FOR UPDATE",
    )
    .bind(text(owner))
    .bind(i64::try_from(default).unwrap_or(i64::MAX))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(limit) = limit else {
        return Ok(false);
    };
    let running: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE owner_key_id = $1 AND state = 'running'",
    )
    .bind(text(owner))
    .fetch_one(&mut *tx)
    .await?;
    Ok(running > limit)
}

/// Why a fenced statement matched no row: the job is gone, or the lease is stale.
async fn lease_miss(pool: &PgPool, lease: &LeaseRef) -> StoreError {
    let exists =
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1::uuid)")
            .bind(lease.job_id.to_string())
            .fetch_one(pool)
            .await;
    match exists {
        Ok(true) => StoreError::LeaseLost,
        Ok(false) => StoreError::NotFound,
        Err(e) => e.into(),
    }
}

pub(super) async fn heartbeat(
    pool: &PgPool,
    clock: &dyn Clock,
    lease: &LeaseRef,
    progress: Option<ProgressUpdate>,
    extend_ms: i64,
) -> Result<HeartbeatReply> {
    let now = clock.now_ms();
    let expires = now + extend_ms;
    let row = sqlx::query(
        "UPDATE jobs SET heartbeat_at = $1, lease_expires_at = $2, \
         progress_done = COALESCE($3, progress_done), \
         progress_total = COALESCE($4, progress_total) \
         WHERE id = $5::uuid AND state = 'running' AND lease_token = $6 \
         RETURNING cancel_requested",
    )
    .bind(now)
    .bind(expires)
    .bind(progress.map(|p| i64::from(p.done)))
    .bind(progress.map(|p| i64::from(p.total)))
    .bind(lease.job_id.to_string())
    .bind(lease.token)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(row) => Ok(HeartbeatReply {
            cancel_requested: row.try_get("cancel_requested")?,
            expires_at_ms: expires,
        }),
        None => Err(lease_miss(pool, lease).await),
    }
}

pub(super) async fn complete(
    pool: &PgPool,
    clock: &dyn Clock,
    lease: &LeaseRef,
    result: &JobResult,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    // Locked and judged first: the `completed` event names the worker the update clears.
    let job = leased_job(&mut tx, lease).await?;
    let now = clock.now_ms();
    sqlx::query(
        "UPDATE jobs SET state = 'completed', finished_at = $1, result = $2, \
         lease_owner = NULL, lease_expires_at = NULL, progress_done = progress_total \
         WHERE seq = $3 AND state = 'running' AND lease_token = $4",
    )
    .bind(now)
    .bind(result_json(result)?)
    .bind(job.seq)
    .bind(lease.token)
    .execute(&mut *tx)
    .await?;
    let delta = UsageDelta::ended(&job, JobState::Completed, Some(result), now);
    usage::record(&mut tx, delta).await?;
    webhooks::emit(&mut tx, &job, WebhookEventType::Completed, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Ends a running attempt as CANCELLED, which only a pending forced cancel allows.
pub(super) async fn ack_cancelled(
    pool: &PgPool,
    clock: &dyn Clock,
    lease: &LeaseRef,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    let job = leased_job(&mut tx, lease).await?;
    if !job.cancel_requested {
        // Dropping the transaction rolls it back: nothing changes.
        return Err(StoreError::InvalidState(JobState::Running));
    }
    let now = clock.now_ms();
    sqlx::query(
        "UPDATE jobs SET state = 'cancelled', finished_at = $1, lease_owner = NULL, \
         lease_expires_at = NULL, cancelled_by = COALESCE(cancelled_by, lease_owner, 'worker') \
         WHERE seq = $2 AND state = 'running' AND lease_token = $3",
    )
    .bind(now)
    .bind(job.seq)
    .bind(lease.token)
    .execute(&mut *tx)
    .await?;
    let delta = UsageDelta::ended(&job, JobState::Cancelled, None, now);
    usage::record(&mut tx, delta).await?;
    webhooks::emit(&mut tx, &job, WebhookEventType::Cancelled, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Locks the job a lease-holder call refers to (in the caller's transaction), or
/// `LeaseLost` when the token is stale.
async fn leased_job(tx: &mut sqlx::PgConnection, lease: &LeaseRef) -> Result<JobRecord> {
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1::uuid FOR UPDATE"
    ))
    .bind(lease.job_id.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    match row.as_ref().map(job_from_row).transpose()? {
        Some(job) if job.state == JobState::Running && job.lease_token == lease.token => Ok(job),
        Some(_) => Err(StoreError::LeaseLost),
        None => Err(StoreError::NotFound),
    }
}

pub(super) async fn fail(
    pool: &PgPool,
    clock: &dyn Clock,
    gauge: &QueuedGauge,
    lease: &LeaseRef,
    failure: &Failure,
    retryable: bool,
) -> Result<FailOutcome> {
    let write = gauge.write();
    let mut tx = pool.begin().await?;
    let job = leased_job(&mut tx, lease).await?;
    let detail = recorded_detail(&job, failure);
    let next = end_attempt(&mut tx, clock, &job, &failure.reason, &detail, retryable).await?;
    tx.commit().await?;
    Ok(match next {
        JobState::Queued => {
            write.commit(1);
            FailOutcome::Requeued
        }
        JobState::Cancelled => FailOutcome::Cancelled,
        _ => FailOutcome::Failed,
    })
}

/// Moves a running job (locked by the caller's transaction) to its next state after an
/// attempt ended without a result, recording the client's `reason` and the operators'
/// `detail`, and notifying workers when it is queued again.
pub(super) async fn end_attempt(
    tx: &mut sqlx::PgConnection,
    clock: &dyn Clock,
    job: &JobRecord,
    reason: &str,
    detail: &str,
    retryable: bool,
) -> Result<JobState> {
    let next = next_state(job, retryable);
    let now = clock.now_ms();
    let finished = next.is_terminal().then_some(now);
    sqlx::query(
        "UPDATE jobs SET state = $1, error = $2, error_detail = $3, finished_at = $4, \
         lease_owner = NULL, lease_expires_at = NULL, progress_done = NULL, \
         progress_total = NULL WHERE seq = $5 AND state = 'running' AND lease_token = $6",
    )
    .bind(next.as_str())
    .bind(text(reason))
    .bind(text(detail))
    .bind(finished)
    .bind(job.seq)
    .bind(job.lease_token)
    .execute(&mut *tx)
    .await?;
    usage::record(&mut *tx, UsageDelta::ended(job, next, None, now)).await?;
    let event = match next {
        JobState::Queued => WebhookEventType::Retried,
        JobState::Cancelled => WebhookEventType::Cancelled,
        _ => WebhookEventType::Failed,
    };
    webhooks::emit(&mut *tx, job, event, now).await?;
    if next == JobState::Queued {
        // Keeps its fair-queuing tag, or takes the queue's head tag if that is smaller
        // (`crate::fair::requeue_tag`): back to the front, as before fair sharing.
        sqlx::query(
            "UPDATE jobs SET vstart = LEAST(vstart, COALESCE((SELECT min(q.vstart) FROM jobs q \
               WHERE q.state = 'queued' AND q.pipeline = $1 AND q.priority = $2 \
               AND q.seq <> $3), vstart)) WHERE seq = $3",
        )
        .bind(job.pipeline.as_str())
        .bind(job.priority)
        .bind(job.seq)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(JOBS_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    Ok(next)
}
