//! The store traits for [`SqliteStore`]: reads on the pool, writes on the writer connection.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::rows::{JOB_COLUMNS, job_from_row};
use super::{SqliteStore, api_keys, jobs, retention, webhooks};
use crate::ReleasedBlobs;
use crate::api_keys::{KeyRecord, KeyUpdate, NewKey};
use crate::claim_order::{LEASE_EXPIRED, SERVER_RESTARTED};
use crate::rows::{JOB_COUNTS_SQL, job_count_from_row};
use crate::{
    CancelOutcome, ClaimRequest, CreateOutcome, Created, FailOutcome, Failure, HeartbeatReply,
    Idempotency, JobCount, JobListQuery, JobPage, JobRecord, JobResult, JobState, JobStore,
    KeyStore, Lease, LeaseRef, LeaseStore, MaintenanceStore, NewJob, ProgressUpdate, ReapedJob,
    Result, StoreError, WebhookAttempt, WebhookEvent, WebhookEventRecord, WebhookSecrets,
    WebhookStore,
};

#[async_trait]
impl JobStore for SqliteStore {
    async fn create_job(&self, job: NewJob) -> Result<Created> {
        let (tx, rx) = oneshot::channel();
        self.creates
            .send((job, None, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        match rx.await.map_err(|_| StoreError::Closed)?? {
            CreateOutcome::Created(created) => Ok(created),
            other => Err(StoreError::Corrupt(format!(
                "a create without an idempotency key answered {other:?}"
            ))),
        }
    }

    async fn create_job_idempotent(
        &self,
        job: NewJob,
        idempotency: Idempotency,
    ) -> Result<CreateOutcome> {
        let (tx, rx) = oneshot::channel();
        self.creates
            .send((job, Some(idempotency), tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn get_job(&self, id: Uuid) -> Result<Option<JobRecord>> {
        if let Some(job) = self.live.get(id) {
            return Ok(Some(job));
        }
        let mut conn = self.read.acquire().await?;
        jobs::fetch_job(&mut conn, id).await
    }

    async fn job_status(&self, id: Uuid) -> Result<Option<(JobRecord, Option<u64>)>> {
        if let Some(job) = self.live.get(id) {
            let position = (job.state == JobState::Queued)
                .then(|| self.index().position(job.pipeline, job.priority, job.seq))
                .flatten();
            // Queued with no position only between a write and its index update.
            if job.state != JobState::Queued || position.is_some() {
                return Ok(Some((job, position)));
            }
        }
        let mut conn = self.read.acquire().await?;
        // A claim can commit between reading the row and asking the index; one re-read
        // then sees the new state.
        for _ in 0..2 {
            let Some(job) = jobs::fetch_job(&mut conn, id).await? else {
                return Ok(None);
            };
            if job.state != JobState::Queued {
                return Ok(Some((job, None)));
            }
            if let Some(pos) = self.index().position(job.pipeline, job.priority, job.seq) {
                return Ok(Some((job, Some(pos))));
            }
        }
        Ok(jobs::fetch_job(&mut conn, id).await?.map(|job| (job, None)))
    }

    async fn list_jobs(&self, owner: Option<&str>, limit: u32) -> Result<Vec<JobRecord>> {
        let mut conn = self.read.acquire().await?;
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR owner_key_id = ?1) \
             ORDER BY seq DESC LIMIT ?2"
        ))
        .bind(owner)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn list_jobs_page(&self, query: &JobListQuery) -> Result<JobPage> {
        let size = query.page_size();
        let mut sql = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1"
        ));
        // Only the filters given go into the SQL, so the planner can use the indexes.
        if let Some(owner) = &query.owner_key_id {
            sql.push(" AND owner_key_id = ").push_bind(owner.clone());
        }
        if let Some(name) = &query.owner_key_name {
            sql.push(" AND owner_key_id IN (SELECT id FROM api_keys WHERE name = ")
                .push_bind(name.clone())
                .push(")");
        }
        if let Some(model_id) = &query.model_id {
            sql.push(" AND model_id = ").push_bind(model_id.clone());
        }
        if let Some(state) = query.state {
            sql.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(after) = query.after {
            sql.push(" AND (created_at, seq) < (")
                .push_bind(after.created_at_ms)
                .push(", ")
                .push_bind(after.seq)
                .push(")");
        }
        sql.push(" ORDER BY created_at DESC, seq DESC LIMIT ")
            .push_bind(i64::from(size) + 1);
        let mut conn = self.read.acquire().await?;
        let rows = sql.build().fetch_all(&mut *conn).await?;
        let jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        Ok(JobPage::from_rows(jobs, size))
    }

    async fn cancel(&self, id: Uuid, force: bool, by: &str) -> Result<CancelOutcome> {
        let mut conn = self.writer.lock().await;
        let outcome = jobs::cancel(&mut conn, self.clock(), &self.index, id, force, by).await?;
        self.live.refresh(&mut conn, id).await?;
        Ok(outcome)
    }

    async fn job_counts(&self) -> Result<Vec<JobCount>> {
        let mut conn = self.read.acquire().await?;
        let rows = sqlx::query(JOB_COUNTS_SQL).fetch_all(&mut *conn).await?;
        rows.iter().map(job_count_from_row).collect()
    }

    fn queued_total(&self) -> u64 {
        self.index().total()
    }
}

impl SqliteStore {
    /// A running job ended: its owner may have been at its running-jobs quota with jobs
    /// queued, so waiting workers look again (nothing to do when nothing is queued).
    fn slot_freed(&self) {
        if self.index().total() > 0 {
            self.available.notify_waiters();
        }
    }
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Lease>> {
        if req
            .pipelines
            .iter()
            .all(|&p| self.index().queued_in(p) == 0)
        {
            return Ok(None);
        }
        let mut conn = self.writer.lock().await;
        let max_running = self.quotas.get().max_running;
        let lease = jobs::claim(&mut conn, self.clock(), &self.index, req, max_running).await?;
        if let Some(lease) = &lease {
            self.live.put(lease.job.clone());
        }
        Ok(lease)
    }

    fn job_available(&self) -> Arc<Notify> {
        self.available.clone()
    }

    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
        extend_ms: i64,
    ) -> Result<HeartbeatReply> {
        let mut conn = self.writer.lock().await;
        let reply = jobs::heartbeat(&mut conn, self.clock(), lease, progress, extend_ms).await?;
        self.live.heartbeat(lease.job_id, progress, &reply);
        Ok(reply)
    }

    async fn complete(&self, lease: &LeaseRef, result: &JobResult) -> Result<()> {
        let mut conn = self.writer.lock().await;
        jobs::complete(&mut conn, self.clock(), lease, result).await?;
        self.live.forget(lease.job_id);
        self.slot_freed();
        Ok(())
    }

    async fn fail(
        &self,
        lease: &LeaseRef,
        failure: &Failure,
        retryable: bool,
    ) -> Result<FailOutcome> {
        let mut conn = self.writer.lock().await;
        let outcome = jobs::fail(
            &mut conn,
            self.clock(),
            &self.index,
            &self.available,
            lease,
            failure,
            retryable,
        )
        .await?;
        self.live.refresh(&mut conn, lease.job_id).await?;
        if outcome != FailOutcome::Requeued {
            self.slot_freed();
        }
        Ok(outcome)
    }

    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<()> {
        let mut conn = self.writer.lock().await;
        jobs::ack_cancelled(&mut conn, self.clock(), lease).await?;
        self.live.forget(lease.job_id);
        self.slot_freed();
        Ok(())
    }

    async fn reap_expired(&self, now_ms: i64) -> Result<Vec<ReapedJob>> {
        let mut conn = self.writer.lock().await;
        let reaped = jobs::end_stranded(
            &mut conn,
            self.clock(),
            &self.index,
            &self.available,
            "lease_expires_at < CAST(? AS INTEGER)",
            now_ms.to_string(),
            LEASE_EXPIRED,
        )
        .await?;
        for job in &reaped {
            self.live.refresh(&mut conn, job.id).await?;
        }
        Ok(reaped)
    }

    async fn release_leases_of(&self, owner_prefix: &str) -> Result<u64> {
        let mut conn = self.writer.lock().await;
        // An exact, case-sensitive prefix (`LIKE` folds ASCII case and has wildcards).
        // `length` and `substr` both count characters, so the comparison is exact.
        let released = jobs::end_stranded(
            &mut conn,
            self.clock(),
            &self.index,
            &self.available,
            "substr(lease_owner, 1, length(?1)) = ?1",
            owner_prefix.to_string(),
            SERVER_RESTARTED,
        )
        .await?;
        for job in &released {
            self.live.refresh(&mut conn, job.id).await?;
        }
        Ok(released.len() as u64)
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, key: NewKey) -> Result<(KeyRecord, String)> {
        let mut conn = self.writer.lock().await;
        api_keys::create(&mut conn, self.clock(), key).await
    }

    async fn find_key_by_secret(&self, secret: &str) -> Result<Option<KeyRecord>> {
        let found = {
            let mut conn = self.read.acquire().await?;
            api_keys::find_by_secret(&mut conn, self.clock(), secret).await?
        };
        let Some((key, stale)) = found else {
            return Ok(None);
        };
        // Only a use more than a minute after the last recorded one costs a write.
        if stale {
            let mut conn = self.writer.lock().await;
            api_keys::touch(&mut conn, self.clock(), &key.id).await?;
        }
        Ok(Some(key))
    }

    async fn count_keys(&self) -> Result<u64> {
        let mut conn = self.read.acquire().await?;
        api_keys::count(&mut conn).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        let mut conn = self.read.acquire().await?;
        api_keys::list(&mut conn).await
    }

    async fn revoke_key(&self, name: &str) -> Result<KeyRecord> {
        let mut conn = self.writer.lock().await;
        api_keys::revoke(&mut conn, self.clock(), name).await
    }

    async fn rotate_key(&self, name: &str) -> Result<(KeyRecord, String)> {
        let mut conn = self.writer.lock().await;
        api_keys::rotate(&mut conn, name).await
    }

    async fn update_key(&self, name: &str, update: KeyUpdate) -> Result<KeyRecord> {
        let mut conn = self.writer.lock().await;
        api_keys::update(&mut conn, name, update).await
    }

    async fn key_generation(&self) -> Result<i64> {
        let mut conn = self.read.acquire().await?;
        api_keys::generation(&mut conn).await
    }

    async fn server_secret(&self, name: &str) -> Result<String> {
        let mut conn = self.writer.lock().await;
        api_keys::server_secret(&mut conn, self.clock(), name).await
    }

    fn set_quota_defaults(&self, defaults: crate::QuotaDefaults) {
        self.quotas.set(defaults);
    }
}

#[async_trait]
impl MaintenanceStore for SqliteStore {
    async fn purge_idempotency_keys(&self, older_than_ms: i64) -> Result<u64> {
        let mut conn = self.writer.lock().await;
        jobs::purge_idempotency_keys(&mut conn, older_than_ms).await
    }

    async fn release_inputs(&self, finished_by_ms: i64, limit: u32) -> Result<Vec<ReleasedBlobs>> {
        let mut conn = self.writer.lock().await;
        retention::release_inputs(&mut conn, finished_by_ms, limit).await
    }

    async fn expire_results(
        &self,
        finished_by_ms: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ReleasedBlobs>> {
        let mut conn = self.writer.lock().await;
        retention::expire_results(&mut conn, finished_by_ms, now_ms, limit).await
    }

    async fn delete_finished_jobs(
        &self,
        finished_by_ms: i64,
        limit: u32,
    ) -> Result<Vec<ReleasedBlobs>> {
        let mut conn = self.writer.lock().await;
        retention::delete_finished_jobs(&mut conn, finished_by_ms, limit).await
    }

    async fn reclaim_space(&self, max_pages: u32) -> Result<u64> {
        let mut conn = self.writer.lock().await;
        retention::reclaim_space(&mut conn, max_pages).await
    }
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn webhook_due(
        &self,
        now_ms: i64,
        limit: u32,
        hold_ms: i64,
    ) -> Result<Vec<WebhookEvent>> {
        let mut conn = self.writer.lock().await;
        webhooks::due(&mut conn, now_ms, limit, hold_ms).await
    }

    async fn webhook_record_attempt(
        &self,
        event_id: &str,
        attempt: WebhookAttempt,
        _now_ms: i64,
    ) -> Result<()> {
        let mut conn = self.writer.lock().await;
        webhooks::record_attempt(&mut conn, event_id, &attempt).await
    }

    async fn webhook_events_of(&self, job_id: Uuid) -> Result<Vec<WebhookEventRecord>> {
        let mut conn = self.read.acquire().await?;
        webhooks::events_of(&mut conn, job_id).await
    }

    async fn webhook_pending(&self) -> Result<u64> {
        let mut conn = self.read.acquire().await?;
        webhooks::pending(&mut conn).await
    }

    async fn webhook_secrets(&self, owner_key_id: &str, now_ms: i64) -> Result<WebhookSecrets> {
        let mut conn = self.writer.lock().await;
        webhooks::secrets(&mut conn, owner_key_id, now_ms).await
    }

    async fn rotate_webhook_secret(
        &self,
        owner_key_id: &str,
        now_ms: i64,
    ) -> Result<WebhookSecrets> {
        let mut conn = self.writer.lock().await;
        webhooks::rotate(&mut conn, owner_key_id, now_ms).await
    }
}

#[async_trait]
impl crate::UsageStore for SqliteStore {
    async fn usage(&self, query: &crate::UsageQuery) -> Result<Vec<crate::UsageRecord>> {
        let mut conn = self.read.acquire().await?;
        super::usage::read(&mut conn, query).await
    }
}
