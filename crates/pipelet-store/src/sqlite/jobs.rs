//! The job state machine in SQL: every transition is one `BEGIN IMMEDIATE` transaction
//! on the writer connection, guarded by the state (and lease token) it starts from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pipelet_api::Pipeline;
use pipelet_api::clock::{Clock, SharedClock};
use sqlx::Row;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use super::rows::{JOB_COLUMNS, job_from_row, result_json};
use super::{PendingCreate, begin, finish, lock_index, usage, webhooks};
use crate::api_keys::{QuotaCell, effective_limit};
use crate::claim_order::{
    Head, StrandedCause, next_state, pick_head, recorded_detail, stranded_error,
};
use crate::usage::UsageDelta;
use crate::{
    CancelOutcome, ClaimRequest, CreateOutcome, Created, FailOutcome, Failure, Idempotency,
    JobRecord, JobResult, JobState, Lease, LeaseRef, NewJob, QueueIndex, QuotaDefaults,
    ReapOutcome, ReapedJob, Result, StoreError, WebhookEventType,
};

pub(super) async fn load_index(conn: &mut SqliteConnection) -> Result<QueueIndex> {
    let rows = sqlx::query(
        "SELECT pipeline, priority, seq, vstart, owner_key_id FROM jobs WHERE state = 'queued'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut index = QueueIndex::new();
    for row in rows {
        let pipeline: String = row.try_get("pipeline")?;
        let pipeline = Pipeline::parse(&pipeline)
            .ok_or_else(|| StoreError::Corrupt(format!("pipeline {pipeline:?}")))?;
        let owner: String = row.try_get("owner_key_id")?;
        index.insert(
            pipeline,
            row.try_get("priority")?,
            row.try_get("seq")?,
            row.try_get("vstart")?,
            &owner,
        );
    }
    Ok(index)
}

/// The fair-queuing state a create batch starts from (read from the queue index before
/// its transaction) plus the tags the batch has given so far, so each job's start tag
/// ([`crate::fair::start_tag`]) sees the jobs queued before it in the same batch.
#[derive(Debug, Clone, Default)]
struct BatchTags {
    /// Per (pipeline, priority): the smallest queued tag.
    heads: HashMap<(Pipeline, i64), Option<i64>>,
    /// Per (pipeline, priority, owner): the owner's greatest queued tag.
    lasts: HashMap<(Pipeline, i64, String), Option<i64>>,
    /// Per owner: its weight, read once per batch.
    weights: HashMap<String, i64>,
    /// seq → the tag given to the job inserted with it.
    given: HashMap<i64, i64>,
}

impl BatchTags {
    fn new(index: &QueueIndex, jobs: impl Iterator<Item = (Pipeline, i64, String)>) -> Self {
        let mut tags = Self::default();
        for (pipeline, priority, owner) in jobs {
            tags.heads
                .entry((pipeline, priority))
                .or_insert_with(|| index.head_tag(pipeline, priority));
            let last = index.last_tag(pipeline, priority, &owner);
            tags.lasts
                .entry((pipeline, priority, owner))
                .or_insert(last);
        }
        tags
    }

    /// The start tag of `job`, whose owner's weight is read (once) on `conn`.
    async fn tag_for(&mut self, conn: &mut SqliteConnection, job: &NewJob) -> Result<i64> {
        let weight = match self.weights.get(&job.owner_key_id) {
            Some(&weight) => weight,
            None => {
                let weight: Option<i64> =
                    sqlx::query_scalar("SELECT weight FROM api_keys WHERE id = ?")
                        .bind(&job.owner_key_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                let weight = weight.unwrap_or(crate::fair::DEFAULT_WEIGHT);
                self.weights.insert(job.owner_key_id.clone(), weight);
                weight
            }
        };
        let head = self
            .heads
            .get(&(job.pipeline, job.priority))
            .copied()
            .flatten();
        let last = self
            .lasts
            .get(&(job.pipeline, job.priority, job.owner_key_id.clone()))
            .copied()
            .flatten();
        Ok(crate::fair::start_tag(head, last, weight))
    }

    /// Records that a job of `job` was inserted with `seq` and `tag`.
    fn given(&mut self, job: &NewJob, seq: i64, tag: i64) {
        let head = self.heads.entry((job.pipeline, job.priority)).or_default();
        *head = Some(head.map_or(tag, |h| h.min(tag)));
        let last = self
            .lasts
            .entry((job.pipeline, job.priority, job.owner_key_id.clone()))
            .or_default();
        *last = Some(last.map_or(tag, |l| l.max(tag)));
        self.given.insert(seq, tag);
    }
}

/// A job queued again keeps its start tag, or takes the queue's head tag if that is
/// smaller ([`crate::fair::requeue_tag`]). Runs after its state is back to queued, in the
/// caller's transaction (which sees earlier re-queues of the same transaction).
async fn retag_requeued(conn: &mut SqliteConnection, job: &JobRecord) -> Result<i64> {
    let tag: i64 = sqlx::query_scalar(
        "UPDATE jobs SET vstart = min(vstart, coalesce((SELECT min(q.vstart) FROM jobs q            WHERE q.state = 'queued' AND q.pipeline = ?1 AND q.priority = ?2 AND q.seq != ?3),            vstart)) WHERE seq = ?3 RETURNING vstart",
    )
    .bind(job.pipeline.as_str())
    .bind(job.priority)
    .bind(job.seq)
    .fetch_one(&mut *conn)
    .await?;
    Ok(tag)
}

async fn insert_job(
    conn: &mut SqliteConnection,
    job: &NewJob,
    now: i64,
    vstart: i64,
) -> Result<JobRecord> {
    let spec = serde_json::to_string(&job.spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let row = sqlx::query(&format!(
        "INSERT INTO jobs (id, model_id, pipeline, owner_key_id, priority, state, spec, \
         input_blob, created_at, enqueued_at, max_attempts, webhook_url, vstart) \
         VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?) RETURNING {JOB_COLUMNS}"
    ))
    .bind(job.id.to_string())
    .bind(&job.model_id)
    .bind(job.pipeline.as_str())
    .bind(&job.owner_key_id)
    .bind(job.priority)
    .bind(spec)
    .bind(&job.input_blob)
    .bind(now)
    .bind(now)
    .bind(i64::from(job.max_attempts))
    .bind(&job.webhook_url)
    .bind(vstart)
    .fetch_one(&mut *conn)
    .await?;
    job_from_row(&row)
}

/// One create inside the caller's transaction. With an idempotency key, a fresh entry
/// for it (possibly written earlier in the same batch, which this transaction sees)
/// answers instead of a new job; otherwise the key is (re)written with the job.
async fn create_one(
    conn: &mut SqliteConnection,
    job: &NewJob,
    idempotency: Option<&Idempotency>,
    now: i64,
    quotas: QuotaDefaults,
    tags: &mut BatchTags,
) -> Result<CreateOutcome> {
    if let Some(idem) = idempotency {
        let existing = sqlx::query(
            "SELECT request_hash, job_id FROM idempotency_keys \
             WHERE owner = ? AND key = ? AND created_at_ms >= ?",
        )
        .bind(&idem.owner)
        .bind(&idem.key)
        .bind(idem.not_before_ms)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(row) = existing {
            let hash: String = row.try_get("request_hash")?;
            if hash != idem.request_hash {
                return Ok(CreateOutcome::Mismatch);
            }
            let job_id: String = row.try_get("job_id")?;
            let job_id = Uuid::parse_str(&job_id)
                .map_err(|_| StoreError::Corrupt(format!("idempotency job id {job_id:?}")))?;
            return Ok(CreateOutcome::Replayed(job_id));
        }
    }
    // After the replay check (a retried create answers its job, whatever the quota),
    // before anything is written.
    check_queue_quota(conn, &job.owner_key_id, quotas.max_queued).await?;
    if let Some(idem) = idempotency {
        // An expired entry is replaced.
        sqlx::query(
            "INSERT INTO idempotency_keys (owner, key, request_hash, job_id, created_at_ms) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (owner, key) DO UPDATE SET \
             request_hash = excluded.request_hash, job_id = excluded.job_id, \
             created_at_ms = excluded.created_at_ms",
        )
        .bind(&idem.owner)
        .bind(&idem.key)
        .bind(&idem.request_hash)
        .bind(job.id.to_string())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    let tag = tags.tag_for(conn, job).await?;
    let record = insert_job(conn, job, now, tag).await?;
    tags.given(job, record.seq, tag);
    // The position is filled in from the queue index once the batch commits.
    Ok(CreateOutcome::Created(Created {
        job: record,
        position: 0,
    }))
}

/// [`StoreError::KeyQueueFull`] when `owner` already has as many queued jobs as its
/// quota (its own, else `default`). Runs in the create's transaction under the writer
/// lock, so concurrent creates (earlier ones in the same batch included) count exactly.
async fn check_queue_quota(conn: &mut SqliteConnection, owner: &str, default: u64) -> Result<()> {
    let own: Option<Option<i64>> =
        sqlx::query_scalar("SELECT max_queued FROM api_keys WHERE id = ?")
            .bind(owner)
            .fetch_optional(&mut *conn)
            .await?;
    let own = own.flatten().map(|n| u64::try_from(n).unwrap_or(0));
    let Some(limit) = effective_limit(own, default) else {
        return Ok(());
    };
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    // Counts at most `limit` rows of the owner's index range.
    let queued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE owner_key_id = ? AND state = 'queued' \
         LIMIT ?)",
    )
    .bind(owner)
    .bind(limit_sql)
    .fetch_one(&mut *conn)
    .await?;
    if queued >= limit_sql {
        return Err(StoreError::KeyQueueFull {
            limit,
            own: own.is_some(),
        });
    }
    Ok(())
}

pub(super) async fn purge_idempotency_keys(
    conn: &mut SqliteConnection,
    older_than_ms: i64,
) -> Result<u64> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at_ms < ?")
        .bind(older_than_ms)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// Group commit: takes every create waiting in the channel, inserts them in one
/// transaction (one fsync), and answers each. If the batch fails, each job is retried
/// alone so one bad row cannot fail its neighbours. Creates in one batch are applied in
/// order, so two with the same idempotency key make one job (the second replays it).
pub(super) async fn run_create_batches(
    mut rx: mpsc::Receiver<PendingCreate>,
    writer: Arc<tokio::sync::Mutex<SqliteConnection>>,
    index: Arc<Mutex<QueueIndex>>,
    live: Arc<super::LiveJobs>,
    available: Arc<Notify>,
    clock: SharedClock,
    quotas: Arc<QuotaCell>,
) {
    let mut batch = Vec::with_capacity(super::MAX_CREATE_BATCH);
    while rx.recv_many(&mut batch, super::MAX_CREATE_BATCH).await > 0 {
        let mut conn = writer.lock().await;
        let now = clock.now_ms();
        let quotas = quotas.get();
        let start = {
            let index = lock_index(&index);
            BatchTags::new(
                &index,
                batch
                    .iter()
                    .map(|(job, _, _)| (job.pipeline, job.priority, job.owner_key_id.clone())),
            )
        };
        let mut tags = start.clone();
        let all = async {
            begin(&mut conn).await?;
            let mut outcomes = Vec::with_capacity(batch.len());
            let mut inserted = Ok(());
            for (job, idem, _) in &batch {
                match create_one(&mut conn, job, idem.as_ref(), now, quotas, &mut tags).await {
                    Ok(outcome) => outcomes.push(Ok(outcome)),
                    // Refused before writing anything: its neighbours go ahead.
                    Err(e @ StoreError::KeyQueueFull { .. }) => outcomes.push(Err(e)),
                    Err(e) => {
                        inserted = Err(e);
                        break;
                    }
                }
            }
            finish(&mut conn, inserted.map(|()| outcomes)).await
        }
        .await;
        let mut results: Vec<Result<CreateOutcome>> = match all {
            Ok(outcomes) => outcomes,
            Err(e) => {
                tracing::warn!(error = %e, jobs = batch.len(), "batched create failed; retrying one by one");
                let mut results = Vec::with_capacity(batch.len());
                // The batch rolled back: start again from the committed queue.
                tags = start;
                for (job, idem, _) in &batch {
                    let before = tags.clone();
                    let one = match begin(&mut conn).await {
                        Ok(()) => {
                            let r =
                                create_one(&mut conn, job, idem.as_ref(), now, quotas, &mut tags)
                                    .await;
                            finish(&mut conn, r).await
                        }
                        Err(e) => Err(e),
                    };
                    if one.is_err() {
                        tags = before;
                    }
                    results.push(one);
                }
                results
            }
        };
        {
            let mut index = lock_index(&index);
            for created in created_in(&mut results) {
                let job = &created.job;
                let tag = tags.given.get(&job.seq).copied().unwrap_or(0);
                index.insert(job.pipeline, job.priority, job.seq, tag, &job.owner_key_id);
            }
            // Positions as of this commit: the writer lock is still held, so no claim
            // or cancel has moved the queue since.
            for created in created_in(&mut results) {
                let job = &created.job;
                created.position = index
                    .position(job.pipeline, job.priority, job.seq)
                    .unwrap_or(0);
            }
        }
        // Still under the writer lock, so no later transition can be overwritten.
        for created in created_in(&mut results) {
            live.put(created.job.clone());
        }
        drop(conn);
        available.notify_waiters();
        for ((_, _, reply), result) in batch.drain(..).zip(results) {
            // The caller may have gone away (client disconnected); the job stays created.
            let _ = reply.send(result);
        }
    }
}

/// The jobs a batch created, among its answers.
fn created_in(results: &mut [Result<CreateOutcome>]) -> impl Iterator<Item = &mut Created> {
    results.iter_mut().filter_map(|r| match r {
        Ok(CreateOutcome::Created(created)) => Some(created),
        _ => None,
    })
}

pub(super) async fn fetch_job(conn: &mut SqliteConnection, id: Uuid) -> Result<Option<JobRecord>> {
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(job_from_row).transpose()
}

/// The first queued job of `pipeline` in dispatch order whose owner is below its
/// running-jobs quota (its own, else `max_running`; 0 is none): a key at its quota is
/// skipped until one of its running jobs ends.
async fn head_of(
    conn: &mut SqliteConnection,
    pipeline: Pipeline,
    max_running: u64,
) -> Result<Option<Head>> {
    let row = sqlx::query(
        "SELECT seq, priority, created_at FROM jobs WHERE state = 'queued' AND pipeline = ?1 \
         AND NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.id = jobs.owner_key_id \
           AND coalesce(k.max_running, ?2) > 0 \
           AND (SELECT count(*) FROM jobs r WHERE r.owner_key_id = k.id \
                AND r.state = 'running') >= coalesce(k.max_running, ?2)) \
         ORDER BY priority DESC, vstart, seq LIMIT 1",
    )
    .bind(pipeline.as_str())
    .bind(i64::try_from(max_running).unwrap_or(i64::MAX))
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(Head {
            pipeline,
            seq: row.try_get("seq")?,
            priority: row.try_get("priority")?,
            created_at: row.try_get("created_at")?,
        })
    })
    .transpose()
}

pub(super) async fn claim(
    conn: &mut SqliteConnection,
    clock: &dyn Clock,
    index: &Mutex<QueueIndex>,
    req: &ClaimRequest,
    max_running: u64,
) -> Result<Option<Lease>> {
    let now = clock.now_ms();
    begin(conn).await?;
    let claimed = async {
        let mut heads = Vec::with_capacity(req.pipelines.len());
        for &pipeline in &req.pipelines {
            if let Some(head) = head_of(conn, pipeline, max_running).await? {
                heads.push(head);
            }
        }
        let Some(head) = pick_head(heads, req, now) else {
            return Ok(None);
        };
        let expires = now + req.lease_ms;
        let row = sqlx::query(&format!(
            "UPDATE jobs SET state = 'running', attempt = attempt + 1, \
             lease_token = lease_token + 1, lease_owner = ?, lease_expires_at = ?, \
             heartbeat_at = ?, started_at = ?, progress_done = NULL, progress_total = NULL \
             WHERE seq = ? AND state = 'queued' RETURNING {JOB_COLUMNS}"
        ))
        .bind(&req.worker_id)
        .bind(expires)
        .bind(now)
        .bind(now)
        .bind(head.seq)
        .fetch_one(&mut *conn)
        .await?;
        let job = job_from_row(&row)?;
        webhooks::emit(conn, &job, WebhookEventType::Acquired, now).await?;
        Ok(Some((head, job, expires)))
    }
    .await;
    let claimed = finish(conn, claimed).await?;
    Ok(claimed.map(|(head, job, expires_at_ms)| {
        lock_index(index).remove(head.pipeline, head.priority, head.seq);
        Lease {
            lease: LeaseRef {
                job_id: job.id,
                token: job.lease_token,
            },
            job,
            expires_at_ms,
        }
    }))
}

/// Loads the job a lease-holder call refers to, or `LeaseLost` when the token is stale.
async fn leased_job(conn: &mut SqliteConnection, lease: &LeaseRef) -> Result<JobRecord> {
    match fetch_job(conn, lease.job_id).await? {
        Some(job) if job.state == JobState::Running && job.lease_token == lease.token => Ok(job),
        Some(_) => Err(StoreError::LeaseLost),
        None => Err(StoreError::NotFound),
    }
}

pub(super) async fn heartbeat(
    conn: &mut SqliteConnection,
    clock: &dyn Clock,
    lease: &LeaseRef,
    progress: Option<crate::ProgressUpdate>,
    extend_ms: i64,
) -> Result<crate::HeartbeatReply> {
    let now = clock.now_ms();
    let expires = now + extend_ms;
    let row = sqlx::query(
        "UPDATE jobs SET heartbeat_at = ?, lease_expires_at = ?, \
         progress_done = COALESCE(?, progress_done), progress_total = COALESCE(?, progress_total) \
         WHERE id = ? AND state = 'running' AND lease_token = ? RETURNING cancel_requested",
    )
    .bind(now)
    .bind(expires)
    .bind(progress.map(|p| i64::from(p.done)))
    .bind(progress.map(|p| i64::from(p.total)))
    .bind(lease.job_id.to_string())
    .bind(lease.token)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Ok(crate::HeartbeatReply {
            cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
            expires_at_ms: expires,
        }),
        None => match fetch_job(conn, lease.job_id).await? {
            Some(_) => Err(StoreError::LeaseLost),
            None => Err(StoreError::NotFound),
        },
    }
}

pub(super) async fn complete(
    conn: &mut SqliteConnection,
    clock: &dyn Clock,
    lease: &LeaseRef,
    result: &JobResult,
) -> Result<()> {
    begin(conn).await?;
    let done = async {
        let job = leased_job(conn, lease).await?;
        let now = clock.now_ms();
        sqlx::query(
            "UPDATE jobs SET state = 'completed', finished_at = ?, result = ?, \
             lease_owner = NULL, lease_expires_at = NULL, progress_done = progress_total \
             WHERE id = ? AND lease_token = ?",
        )
        .bind(now)
        .bind(result_json(result)?)
        .bind(lease.job_id.to_string())
        .bind(lease.token)
        .execute(&mut *conn)
        .await?;
        let delta = UsageDelta::ended(&job, JobState::Completed, Some(result), now);
        usage::record(conn, delta).await?;
        webhooks::emit(conn, &job, WebhookEventType::Completed, now).await
    }
    .await;
    finish(conn, done).await
}

/// Moves a running job to its next state after an attempt ended without a result,
/// recording the client's `reason` and the operators' `detail`. Returns the new state.
/// Caller holds the transaction.
async fn end_attempt(
    conn: &mut SqliteConnection,
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
        "UPDATE jobs SET state = ?, error = ?, error_detail = ?, finished_at = ?, \
         lease_owner = NULL, lease_expires_at = NULL, progress_done = NULL, \
         progress_total = NULL WHERE seq = ? AND state = 'running'",
    )
    .bind(next.as_str())
    .bind(reason)
    .bind(detail)
    .bind(finished)
    .bind(job.seq)
    .execute(&mut *conn)
    .await?;
    usage::record(conn, UsageDelta::ended(job, next, None, now)).await?;
    let event = match next {
        JobState::Queued => WebhookEventType::Retried,
        JobState::Cancelled => WebhookEventType::Cancelled,
        _ => WebhookEventType::Failed,
    };
    webhooks::emit(conn, job, event, now).await?;
    Ok(next)
}

pub(super) async fn fail(
    conn: &mut SqliteConnection,
    clock: &dyn Clock,
    index: &Mutex<QueueIndex>,
    available: &Notify,
    lease: &LeaseRef,
    failure: &Failure,
    retryable: bool,
) -> Result<FailOutcome> {
    begin(conn).await?;
    let ended = async {
        let job = leased_job(conn, lease).await?;
        let detail = recorded_detail(&job, failure);
        let next = end_attempt(conn, clock, &job, &failure.reason, &detail, retryable).await?;
        let tag = match next {
            JobState::Queued => retag_requeued(conn, &job).await?,
            _ => 0,
        };
        Ok((job, next, tag))
    }
    .await;
    let (job, next, tag) = finish(conn, ended).await?;
    Ok(match next {
        JobState::Queued => {
            lock_index(index).insert(job.pipeline, job.priority, job.seq, tag, &job.owner_key_id);
            available.notify_waiters();
            FailOutcome::Requeued
        }
        JobState::Cancelled => FailOutcome::Cancelled,
        _ => FailOutcome::Failed,
    })
}

/// Ends a running attempt as CANCELLED, which only a pending forced cancel allows.
pub(super) async fn ack_cancelled(
    conn: &mut SqliteConnection,
    clock: &dyn Clock,
    lease: &LeaseRef,
) -> Result<()> {
    begin(conn).await?;
    let done = async {
        let job = leased_job(conn, lease).await?;
        if !job.cancel_requested {
            return Err(StoreError::InvalidState(JobState::Running));
        }
        let now = clock.now_ms();
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = ?, lease_owner = NULL, \
             lease_expires_at = NULL, cancelled_by = COALESCE(cancelled_by, ?) WHERE seq = ?",
        )
        .bind(now)
        .bind(job.lease_owner.as_deref().unwrap_or("worker"))
        .bind(job.seq)
        .execute(&mut *conn)
        .await?;
        let delta = UsageDelta::ended(&job, JobState::Cancelled, None, now);
        usage::record(conn, delta).await?;
        webhooks::emit(conn, &job, WebhookEventType::Cancelled, now).await
    }
    .await;
    finish(conn, done).await
}

/// Ends the attempts of every running job matched by `filter_sql` (a WHERE clause on
/// running jobs with one bound text parameter), re-queueing while attempts remain.
pub(super) async fn end_stranded(
    conn: &mut SqliteConnection,
    clock: &dyn Clock,
    index: &Mutex<QueueIndex>,
    available: &Notify,
    filter_sql: &str,
    param: String,
    cause: StrandedCause,
) -> Result<Vec<ReapedJob>> {
    begin(conn).await?;
    let ended = async {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE state = 'running' AND {filter_sql} \
             ORDER BY seq"
        ))
        .bind(&param)
        .fetch_all(&mut *conn)
        .await?;
        let mut ended = Vec::with_capacity(rows.len());
        for row in rows {
            let job = job_from_row(&row)?;
            let failure = stranded_error(&job, cause);
            let detail = failure.detail.as_deref().unwrap_or(&failure.reason);
            let next = end_attempt(conn, clock, &job, &failure.reason, detail, true).await?;
            let tag = match next {
                JobState::Queued => retag_requeued(conn, &job).await?,
                _ => 0,
            };
            ended.push((job, next, failure, tag));
        }
        Ok(ended)
    }
    .await;
    let ended = finish(conn, ended).await?;
    for (job, _, failure, _) in &ended {
        crate::claim_order::log_stranded(job, failure);
    }
    let mut requeued = false;
    let reaped = {
        let mut index = lock_index(index);
        ended
            .into_iter()
            .map(|(job, next, _, tag)| {
                let outcome = match next {
                    JobState::Queued => {
                        index.insert(job.pipeline, job.priority, job.seq, tag, &job.owner_key_id);
                        requeued = true;
                        ReapOutcome::Requeued
                    }
                    JobState::Cancelled => ReapOutcome::Cancelled,
                    _ => ReapOutcome::Failed,
                };
                ReapedJob {
                    id: job.id,
                    model_id: job.model_id,
                    outcome,
                }
            })
            .collect()
    };
    if requeued {
        available.notify_waiters();
    }
    Ok(reaped)
}

pub(super) async fn cancel(
    conn: &mut SqliteConnection,
    clock: &dyn Clock,
    index: &Mutex<QueueIndex>,
    id: Uuid,
    force: bool,
    by: &str,
) -> Result<CancelOutcome> {
    begin(conn).await?;
    let outcome = async {
        let job = fetch_job(conn, id).await?.ok_or(StoreError::NotFound)?;
        let now = clock.now_ms();
        let outcome = match job.state {
            JobState::Queued => {
                sqlx::query(
                    "UPDATE jobs SET state = 'cancelled', finished_at = ?, cancelled_by = ? \
                     WHERE seq = ?",
                )
                .bind(now)
                .bind(by)
                .bind(job.seq)
                .execute(&mut *conn)
                .await?;
                let delta = UsageDelta::ended(&job, JobState::Cancelled, None, now);
                usage::record(conn, delta).await?;
                webhooks::emit(conn, &job, WebhookEventType::Cancelled, now).await?;
                CancelOutcome::Cancelled
            }
            JobState::Cancelled => CancelOutcome::AlreadyCancelled,
            JobState::Running if force => {
                sqlx::query(
                    "UPDATE jobs SET cancel_requested = 1, \
                     cancelled_by = COALESCE(cancelled_by, ?) WHERE seq = ?",
                )
                .bind(by)
                .bind(job.seq)
                .execute(&mut *conn)
                .await?;
                CancelOutcome::StopRequested
            }
            state => CancelOutcome::NotCancellable(state),
        };
        Ok((job, outcome))
    }
    .await;
    let (job, outcome) = finish(conn, outcome).await?;
    if outcome == CancelOutcome::Cancelled {
        lock_index(index).remove(job.pipeline, job.priority, job.seq);
    }
    Ok(outcome)
}
