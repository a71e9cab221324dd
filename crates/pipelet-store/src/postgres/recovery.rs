//! Transitions started by someone other than the lease holder: cancels, and ending the
//! attempts of jobs whose holder is gone (expired leases, a previous run's in-process
//! workers). Safe with several servers: rows are locked before they are judged, and
//! every update re-checks the state and lease token it judged.

use pipelet_api::clock::Clock;
use sqlx::postgres::PgPool;
use uuid::Uuid;

use super::gauge::QueuedGauge;
use super::jobs::end_attempt;
use super::rows::{JOB_COLUMNS, job_from_row, text};
use super::{usage, webhooks};
use crate::claim_order::{LEASE_EXPIRED, SERVER_RESTARTED, log_stranded, stranded_error};
use crate::rows::{UNREADABLE_SPEC, unreadable_jobs};
use crate::usage::UsageDelta;
use crate::{
    CancelOutcome, JobState, ReapOutcome, ReapedJob, Result, StoreError, WebhookEventType,
};

/// Fails, on connect, every queued or running job whose spec this version cannot read,
/// so that no claim meets one. Returns how many.
pub(super) async fn fail_unreadable(pool: &PgPool, now_ms: i64) -> Result<u64> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id::text, spec FROM jobs WHERE state IN ('queued', 'running')")
            .fetch_all(pool)
            .await?;
    let mut failed = 0;
    for (id, unreadable) in unreadable_jobs(rows) {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE jobs SET state = 'failed', finished_at = $1, error = $2, error_detail = $3, \
             spec = $5, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $4::uuid AND state IN ('queued', 'running')",
        )
        .bind(now_ms)
        .bind(UNREADABLE_SPEC)
        .bind(&unreadable.detail)
        .bind(&id)
        .bind(&unreadable.stand_in)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            usage::record_unreadable(&mut tx, &id, now_ms).await?;
        }
        tx.commit().await?;
        failed += n;
    }
    Ok(failed)
}

/// Which running jobs lost their holder.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stranded<'a> {
    /// Lease expired before this time (ms). Rows another server is reaping (locked) are
    /// skipped: that server handles them.
    ExpiredBefore(i64),
    /// Leased to an owner starting with this prefix: exact and case-sensitive, no
    /// wildcards.
    OwnerPrefix(&'a str),
}

pub(super) async fn end_stranded(
    pool: &PgPool,
    clock: &dyn Clock,
    gauge: &QueuedGauge,
    which: Stranded<'_>,
) -> Result<Vec<ReapedJob>> {
    let write = gauge.write();
    let mut tx = pool.begin().await?;
    let (filter, lock, cause) = match which {
        Stranded::ExpiredBefore(_) => (
            "lease_expires_at < $1",
            "FOR UPDATE SKIP LOCKED",
            LEASE_EXPIRED,
        ),
        // Blocking (in seq order, so two releasers cannot deadlock): the row may be
        // briefly locked by a cancel or heartbeat and must still be released.
        Stranded::OwnerPrefix(_) => (
            "left(lease_owner, length($1::text)) = $1::text",
            "FOR UPDATE",
            SERVER_RESTARTED,
        ),
    };
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND {filter} \
         ORDER BY seq {lock}"
    );
    let query = match which {
        Stranded::ExpiredBefore(now) => sqlx::query(&sql).bind(now),
        Stranded::OwnerPrefix(prefix) => sqlx::query(&sql).bind(text(prefix)),
    };
    let rows = query.fetch_all(&mut *tx).await?;
    let mut ended = Vec::with_capacity(rows.len());
    for row in &rows {
        let job = job_from_row(row)?;
        let failure = stranded_error(&job, cause);
        let detail = failure.detail.as_deref().unwrap_or(&failure.reason);
        let next = end_attempt(&mut tx, clock, &job, &failure.reason, detail, true).await?;
        ended.push((job, next, failure));
    }
    tx.commit().await?;
    for (job, _, failure) in &ended {
        log_stranded(job, failure);
    }
    let requeued = ended
        .iter()
        .filter(|(_, n, _)| *n == JobState::Queued)
        .count();
    write.commit(requeued as i64);
    Ok(ended
        .into_iter()
        .map(|(job, next, _)| ReapedJob {
            id: job.id,
            model_id: job.model_id,
            outcome: match next {
                JobState::Queued => ReapOutcome::Requeued,
                JobState::Cancelled => ReapOutcome::Cancelled,
                _ => ReapOutcome::Failed,
            },
        })
        .collect())
}

pub(super) async fn cancel(
    pool: &PgPool,
    clock: &dyn Clock,
    gauge: &QueuedGauge,
    id: Uuid,
    force: bool,
    by: &str,
) -> Result<CancelOutcome> {
    let write = gauge.write();
    let mut tx = pool.begin().await?;
    let row = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1::uuid FOR UPDATE"
    ))
    .bind(id.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    let job = row
        .as_ref()
        .map(job_from_row)
        .transpose()?
        .ok_or(StoreError::NotFound)?;
    let outcome = match job.state {
        JobState::Queued => {
            let now = clock.now_ms();
            sqlx::query(
                "UPDATE jobs SET state = 'cancelled', finished_at = $1, cancelled_by = $2 \
                 WHERE seq = $3 AND state = 'queued'",
            )
            .bind(now)
            .bind(text(by))
            .bind(job.seq)
            .execute(&mut *tx)
            .await?;
            let delta = UsageDelta::ended(&job, JobState::Cancelled, None, now);
            usage::record(&mut tx, delta).await?;
            webhooks::emit(&mut tx, &job, WebhookEventType::Cancelled, now).await?;
            CancelOutcome::Cancelled
        }
        JobState::Cancelled => CancelOutcome::AlreadyCancelled,
        JobState::Running if force => {
            sqlx::query(
                "UPDATE jobs SET cancel_requested = TRUE, \
                 cancelled_by = COALESCE(cancelled_by, $1) WHERE seq = $2 AND state = 'running'",
            )
            .bind(text(by))
            .bind(job.seq)
            .execute(&mut *tx)
            .await?;
            CancelOutcome::StopRequested
        }
        state => CancelOutcome::NotCancellable(state),
    };
    tx.commit().await?;
    write.commit(if outcome == CancelOutcome::Cancelled {
        -1
    } else {
        0
    });
    Ok(outcome)
}
