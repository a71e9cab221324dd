//! Group-committed creates: every create waiting in the channel goes into one
//! multi-row `INSERT` and one commit (one WAL flush), which also sends the
//! [`super::JOBS_CHANNEL`] notification. If the batch fails, each job is retried alone
//! so one bad row (a duplicate id, say) cannot fail its neighbours.

use std::collections::HashMap;
use std::sync::Arc;

use pipelet_api::clock::{Clock, SharedClock};
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::gauge::QueuedGauge;
use super::rows::{JOB_COLUMNS, job_from_row, opt_text, text};
use super::{JOBS_CHANNEL, MAX_CREATE_BATCH, PendingCreate};
use crate::api_keys::{QuotaCell, effective_limit};
use crate::{CreateOutcome, Created, Idempotency, NewJob, Result, StoreError};

pub(super) async fn run_create_batches(
    mut rx: mpsc::Receiver<PendingCreate>,
    pool: PgPool,
    gauge: Arc<QueuedGauge>,
    clock: SharedClock,
    quotas: Arc<QuotaCell>,
) {
    let mut batch = Vec::with_capacity(MAX_CREATE_BATCH);
    while rx.recv_many(&mut batch, MAX_CREATE_BATCH).await > 0 {
        let now = clock.now_ms();
        let max_queued = quotas.get().max_queued;
        let jobs: Vec<&NewJob> = batch.iter().map(|(job, _)| job).collect();
        let results = match insert_all(&pool, &gauge, &jobs, now, max_queued).await {
            Ok(mut by_id) => jobs
                .iter()
                .map(|job| {
                    by_id.remove(&job.id).unwrap_or_else(|| {
                        Err(StoreError::Corrupt(format!(
                            "job {} missing from its batch",
                            job.id
                        )))
                    })
                })
                .collect(),
            Err(e) if jobs.len() > 1 => {
                tracing::warn!(error = %e, jobs = jobs.len(), "batched create failed; retrying one by one");
                let mut results = Vec::with_capacity(jobs.len());
                for &job in &jobs {
                    let one = insert_all(&pool, &gauge, &[job], now, max_queued).await;
                    results.push(one.and_then(|mut by_id| {
                        by_id.remove(&job.id).unwrap_or(Err(StoreError::NotFound))
                    }));
                }
                results
            }
            Err(e) => vec![Err(e)],
        };
        for ((_, reply), result) in batch.drain(..).zip(results) {
            // The caller may have gone away (client disconnected); the job stays created.
            let _ = reply.send(result);
        }
    }
}

/// Inserts `jobs` in one transaction and commits; seqs follow the order of `jobs`.
/// Each answers its job, or [`StoreError::KeyQueueFull`] when its owner's queued-jobs
/// quota refused it (its neighbours are inserted all the same).
async fn insert_all(
    pool: &PgPool,
    gauge: &QueuedGauge,
    jobs: &[&NewJob],
    now: i64,
    max_queued: u64,
) -> Result<HashMap<Uuid, Result<Created>>> {
    let write = gauge.write();
    let mut tx = pool.begin().await?;
    let mut refused = admit(&mut tx, jobs, max_queued).await?;
    let admitted: Vec<&NewJob> = jobs
        .iter()
        .copied()
        .filter(|job| !refused.contains_key(&job.id))
        .collect();
    let records = if admitted.is_empty() {
        Vec::new()
    } else {
        insert_in(&mut tx, &admitted, now).await?
    };
    tx.commit().await?;
    write.commit(records.len() as i64);
    let mut answers: HashMap<Uuid, Result<Created>> =
        records.into_iter().map(|r| (r.job.id, Ok(r))).collect();
    answers.extend(refused.drain().map(|(id, e)| (id, Err(e))));
    Ok(answers)
}

/// The jobs of `jobs` that their owner's queued-jobs quota (its own, else `default`;
/// 0 is none) refuses, in order: each limited owner's key row is locked (in id order,
/// so batches on several servers cannot deadlock) before its queued jobs are counted,
/// so concurrent creates of one key, on any server, count one after the other.
async fn admit(
    conn: &mut PgConnection,
    jobs: &[&NewJob],
    default: u64,
) -> Result<HashMap<Uuid, StoreError>> {
    let mut owners: Vec<String> = jobs
        .iter()
        .map(|j| text(&j.owner_key_id).into_owned())
        .collect();
    owners.sort();
    owners.dedup();
    let rows = sqlx::query(
        "SELECT id, max_queued FROM api_keys WHERE id = ANY($1::text[]) \
         AND coalesce(max_queued, $2) > 0 ORDER BY id FOR UPDATE",
    )
    .bind(&owners)
    .bind(i64::try_from(default).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let mut refused = HashMap::new();
    if rows.is_empty() {
        return Ok(refused);
    }
    // Owner → (limit, whether the key's own, queued now).
    let mut limits: HashMap<String, (u64, bool, u64)> = HashMap::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get("id")?;
        let own: Option<i64> = row.try_get("max_queued")?;
        let own = own.map(|n| u64::try_from(n).unwrap_or(0));
        if let Some(limit) = effective_limit(own, default) {
            limits.insert(id, (limit, own.is_some(), 0));
        }
    }
    let limited: Vec<&str> = limits.keys().map(String::as_str).collect();
    let counts = sqlx::query(
        "SELECT owner_key_id, count(*) AS queued FROM jobs \
         WHERE owner_key_id = ANY($1::text[]) AND state = 'queued' GROUP BY owner_key_id",
    )
    .bind(&limited)
    .fetch_all(&mut *conn)
    .await?;
    for row in counts {
        let owner: String = row.try_get("owner_key_id")?;
        let queued: i64 = row.try_get("queued")?;
        if let Some(entry) = limits.get_mut(&owner) {
            entry.2 = u64::try_from(queued).unwrap_or(0);
        }
    }
    for job in jobs {
        if let Some((limit, own, queued)) = limits.get_mut(text(&job.owner_key_id).as_ref()) {
            if *queued >= *limit {
                refused.insert(
                    job.id,
                    StoreError::KeyQueueFull {
                        limit: *limit,
                        own: *own,
                    },
                );
            } else {
                *queued += 1;
            }
        }
    }
    Ok(refused)
}

/// A create with an `Idempotency-Key`, in a transaction of its own rather than in a
/// batch: claiming the key may wait for another server's transaction that holds it,
/// which must not hold up unrelated creates.
///
/// The key row is written first with `INSERT … ON CONFLICT`. Under READ COMMITTED a
/// conflict with an uncommitted insert waits until that transaction ends: if it
/// committed, the conflict is seen and its row is read (the statement after sees it);
/// if it rolled back, this insert goes ahead. So concurrent creates with one key make
/// exactly one job. An entry older than `not_before_ms` is taken over by the update.
pub(super) async fn create_idempotent(
    pool: &PgPool,
    clock: &dyn Clock,
    gauge: &QueuedGauge,
    job: &NewJob,
    idem: &Idempotency,
    max_queued: u64,
) -> Result<CreateOutcome> {
    let now = clock.now_ms();
    let write = gauge.write();
    let mut tx = pool.begin().await?;
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (owner, key, request_hash, job_id, created_at_ms) \
         VALUES ($1, $2, $3, $4::uuid, $5) ON CONFLICT (owner, key) DO UPDATE SET \
         request_hash = EXCLUDED.request_hash, job_id = EXCLUDED.job_id, \
         created_at_ms = EXCLUDED.created_at_ms \
         WHERE idempotency_keys.created_at_ms < $6 RETURNING job_id",
    )
    .bind(text(&idem.owner))
    .bind(text(&idem.key))
    .bind(&idem.request_hash)
    .bind(job.id.to_string())
    .bind(now)
    .bind(idem.not_before_ms)
    .fetch_optional(&mut *tx)
    .await?;
    if claimed.is_none() {
        // A live entry, committed by its creator (the insert above waited for it).
        let row = sqlx::query(
            "SELECT request_hash, job_id::text AS job_id FROM idempotency_keys \
             WHERE owner = $1 AND key = $2",
        )
        .bind(text(&idem.owner))
        .bind(text(&idem.key))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Corrupt("idempotency key vanished while locked".into()))?;
        tx.rollback().await?;
        drop(write);
        let hash: String = row.try_get("request_hash")?;
        if hash != idem.request_hash {
            return Ok(CreateOutcome::Mismatch);
        }
        let job_id: String = row.try_get("job_id")?;
        let job_id = Uuid::parse_str(&job_id)
            .map_err(|_| StoreError::Corrupt(format!("idempotency job id {job_id:?}")))?;
        return Ok(CreateOutcome::Replayed(job_id));
    }
    if let Some(e) = admit(&mut tx, &[job], max_queued).await?.remove(&job.id) {
        // Rolled back with the key, so a retry once the queue drains creates the job.
        tx.rollback().await?;
        return Err(e);
    }
    let mut records = insert_in(&mut tx, &[job], now).await?;
    tx.commit().await?;
    write.commit(records.len() as i64);
    records
        .pop()
        .map(CreateOutcome::Created)
        .ok_or_else(|| StoreError::Corrupt(format!("job {} missing after its insert", job.id)))
}

pub(super) async fn purge_idempotency_keys(pool: &PgPool, older_than_ms: i64) -> Result<u64> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at_ms < $1")
        .bind(older_than_ms)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Inserts `jobs` (seqs in their order) and notifies, in the caller's transaction;
/// answers each with its queue position as that transaction sees it.
async fn insert_in(conn: &mut PgConnection, jobs: &[&NewJob], now: i64) -> Result<Vec<Created>> {
    let mut specs = Vec::with_capacity(jobs.len());
    for job in jobs {
        specs.push(
            serde_json::to_string(&job.spec).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    let model_ids: Vec<_> = jobs.iter().map(|j| text(&j.model_id)).collect();
    let pipelines: Vec<&str> = jobs.iter().map(|j| j.pipeline.as_str()).collect();
    let owners: Vec<_> = jobs.iter().map(|j| text(&j.owner_key_id)).collect();
    let priorities: Vec<i64> = jobs.iter().map(|j| j.priority).collect();
    let blobs: Vec<_> = jobs
        .iter()
        .map(|j| opt_text(j.input_blob.as_deref()))
        .collect();
    let attempts: Vec<i64> = jobs.iter().map(|j| i64::from(j.max_attempts)).collect();
    let webhooks: Vec<_> = jobs
        .iter()
        .map(|j| opt_text(j.webhook_url.as_deref()))
        .collect();
    let vstarts = super::fair::start_tags(&mut *conn, jobs).await?;

    let rows = sqlx::query(&format!(
        "INSERT INTO jobs (id, model_id, pipeline, owner_key_id, priority, state, spec, \
         input_blob, created_at, enqueued_at, max_attempts, webhook_url, vstart) \
         SELECT n.id::uuid, n.model_id, n.pipeline, n.owner_key_id, n.priority, 'queued', \
                n.spec, n.input_blob, $9, $9, n.max_attempts, n.webhook_url, n.vstart \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], \
                     $6::text[], $7::text[], $8::int8[], $10::text[], $11::int8[]) \
              WITH ORDINALITY AS n(id, model_id, pipeline, owner_key_id, priority, spec, \
                                   input_blob, max_attempts, webhook_url, vstart, ord) \
         ORDER BY n.ord \
         RETURNING {JOB_COLUMNS}"
    ))
    .bind(&ids)
    .bind(&model_ids)
    .bind(&pipelines)
    .bind(&owners)
    .bind(&priorities)
    .bind(&specs)
    .bind(&blobs)
    .bind(&attempts)
    .bind(now)
    .bind(&webhooks)
    .bind(&vstarts)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(JOBS_CHANNEL)
        .execute(&mut *conn)
        .await?;
    let records = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
    // The same count as `jobs::job_status`, for every new job at once.
    let seqs: Vec<i64> = records.iter().map(|r| r.seq).collect();
    let positions = sqlx::query(
        "SELECT n.seq, (SELECT count(*) FROM jobs q WHERE q.state = 'queued' \
           AND q.pipeline = j.pipeline AND (q.priority > j.priority \
             OR (q.priority = j.priority AND (q.vstart, q.seq) < (j.vstart, j.seq)))) \
           AS queue_position \
         FROM unnest($1::int8[]) AS n(seq) JOIN jobs j ON j.seq = n.seq",
    )
    .bind(&seqs)
    .fetch_all(&mut *conn)
    .await?;
    let mut by_seq = HashMap::with_capacity(positions.len());
    for row in positions {
        let seq: i64 = row.try_get("seq")?;
        let position: i64 = row.try_get("queue_position")?;
        by_seq.insert(seq, u64::try_from(position).unwrap_or(0));
    }
    Ok(records
        .into_iter()
        .map(|job| Created {
            position: by_seq.get(&job.seq).copied().unwrap_or(0),
            job,
        })
        .collect())
}
