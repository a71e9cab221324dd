//! The store traits for [`PgStore`]: every call on the pool, every write committed before it
//! returns.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::recovery::{self, Stranded};
use super::rows::{JOB_COLUMNS, job_from_row};
use super::{PgStore, api_keys, jobs, retention, webhooks};
use crate::ReleasedBlobs;
use crate::api_keys::{KeyRecord, KeyUpdate, NewKey};
use crate::rows::{JOB_COUNTS_SQL, job_count_from_row};
use crate::{
    CancelOutcome, ClaimRequest, CreateOutcome, Created, FailOutcome, Failure, HeartbeatReply,
    Idempotency, JobCount, JobListQuery, JobPage, JobRecord, JobResult, JobStore, KeyStore, Lease,
    LeaseRef, LeaseStore, MaintenanceStore, NewJob, ProgressUpdate, ReapedJob, Result, StoreError,
    WebhookAttempt, WebhookEvent, WebhookEventRecord, WebhookSecrets, WebhookStore,
};

#[async_trait]
impl JobStore for PgStore {
    async fn create_job(&self, job: NewJob) -> Result<Created> {
        let (tx, rx) = oneshot::channel();
        self.creates
            .send((job, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn create_job_idempotent(
        &self,
        job: NewJob,
        idempotency: Idempotency,
    ) -> Result<CreateOutcome> {
        super::create::create_idempotent(
            &self.pool,
            self.clock(),
            &self.gauge,
            &job,
            &idempotency,
            self.quotas.get().max_queued,
        )
        .await
    }

    async fn get_job(&self, id: Uuid) -> Result<Option<JobRecord>> {
        jobs::fetch_job(&self.pool, id).await
    }

    async fn job_status(&self, id: Uuid) -> Result<Option<(JobRecord, Option<u64>)>> {
        jobs::job_status(&self.pool, id).await
    }

    async fn list_jobs(&self, owner: Option<&str>, limit: u32) -> Result<Vec<JobRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE ($1::text IS NULL OR owner_key_id = $1) \
             ORDER BY seq DESC LIMIT $2"
        ))
        .bind(owner.map(super::rows::text))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn list_jobs_page(&self, query: &JobListQuery) -> Result<JobPage> {
        use super::rows::text;
        let size = query.page_size();
        let mut sql = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE TRUE"
        ));
        // Only the filters given go into the SQL, so the planner can use the indexes.
        if let Some(owner) = &query.owner_key_id {
            sql.push(" AND owner_key_id = ")
                .push_bind(text(owner).into_owned());
        }
        if let Some(name) = &query.owner_key_name {
            sql.push(" AND owner_key_id IN (SELECT id FROM api_keys WHERE name = ")
                .push_bind(text(name).into_owned())
                .push(")");
        }
        if let Some(model_id) = &query.model_id {
            sql.push(" AND model_id = ")
                .push_bind(text(model_id).into_owned());
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
        let rows = sql.build().fetch_all(&self.pool).await?;
        let jobs = rows.iter().map(job_from_row).collect::<Result<Vec<_>>>()?;
        Ok(JobPage::from_rows(jobs, size))
    }

    async fn cancel(&self, id: Uuid, force: bool, by: &str) -> Result<CancelOutcome> {
        recovery::cancel(&self.pool, self.clock(), &self.gauge, id, force, by).await
    }

    async fn job_counts(&self) -> Result<Vec<JobCount>> {
        let rows = sqlx::query(JOB_COUNTS_SQL).fetch_all(&self.pool).await?;
        rows.iter().map(job_count_from_row).collect()
    }

    /// Approximate across servers: see `gauge.rs`.
    fn queued_total(&self) -> u64 {
        self.gauge.get()
    }
}

#[async_trait]
impl LeaseStore for PgStore {
    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Lease>> {
        let max_running = self.quotas.get().max_running;
        jobs::claim(&self.pool, self.clock(), &self.gauge, req, max_running).await
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
        jobs::heartbeat(&self.pool, self.clock(), lease, progress, extend_ms).await
    }

    async fn complete(&self, lease: &LeaseRef, result: &JobResult) -> Result<()> {
        jobs::complete(&self.pool, self.clock(), lease, result).await
    }

    async fn fail(
        &self,
        lease: &LeaseRef,
        failure: &Failure,
        retryable: bool,
    ) -> Result<FailOutcome> {
        jobs::fail(
            &self.pool,
            self.clock(),
            &self.gauge,
            lease,
            failure,
            retryable,
        )
        .await
    }

    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<()> {
        jobs::ack_cancelled(&self.pool, self.clock(), lease).await
    }

    async fn reap_expired(&self, now_ms: i64) -> Result<Vec<ReapedJob>> {
        recovery::end_stranded(
            &self.pool,
            self.clock(),
            &self.gauge,
            Stranded::ExpiredBefore(now_ms),
        )
        .await
    }

    async fn try_reaper_lock(&self) -> Result<bool> {
        PgStore::try_reaper_lock(self).await
    }

    async fn release_leases_of(&self, owner_prefix: &str) -> Result<u64> {
        let released = recovery::end_stranded(
            &self.pool,
            self.clock(),
            &self.gauge,
            Stranded::OwnerPrefix(owner_prefix),
        )
        .await?;
        Ok(released.len() as u64)
    }
}

#[async_trait]
impl KeyStore for PgStore {
    async fn create_key(&self, key: NewKey) -> Result<(KeyRecord, String)> {
        api_keys::create(&self.pool, self.clock(), key).await
    }

    async fn find_key_by_secret(&self, secret: &str) -> Result<Option<KeyRecord>> {
        let Some((key, stale)) = api_keys::find_by_secret(&self.pool, self.clock(), secret).await?
        else {
            return Ok(None);
        };
        // Only a use more than a minute after the last recorded one costs a write.
        if stale {
            api_keys::touch(&self.pool, self.clock(), &key.id).await?;
        }
        Ok(Some(key))
    }

    async fn count_keys(&self) -> Result<u64> {
        api_keys::count(&self.pool).await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        api_keys::list(&self.pool).await
    }

    async fn revoke_key(&self, name: &str) -> Result<KeyRecord> {
        api_keys::revoke(&self.pool, self.clock(), name).await
    }

    async fn rotate_key(&self, name: &str) -> Result<(KeyRecord, String)> {
        api_keys::rotate(&self.pool, name).await
    }

    async fn update_key(&self, name: &str, update: KeyUpdate) -> Result<KeyRecord> {
        api_keys::update(&self.pool, name, update).await
    }

    async fn key_generation(&self) -> Result<i64> {
        api_keys::generation(&self.pool).await
    }

    async fn server_secret(&self, name: &str) -> Result<String> {
        api_keys::server_secret(&self.pool, self.clock(), name).await
    }

    fn set_quota_defaults(&self, defaults: crate::QuotaDefaults) {
        self.quotas.set(defaults);
    }
}

#[async_trait]
impl MaintenanceStore for PgStore {
    async fn purge_idempotency_keys(&self, older_than_ms: i64) -> Result<u64> {
        super::create::purge_idempotency_keys(&self.pool, older_than_ms).await
    }

    async fn release_inputs(&self, finished_by_ms: i64, limit: u32) -> Result<Vec<ReleasedBlobs>> {
        retention::release_inputs(&self.pool, finished_by_ms, limit).await
    }

    async fn expire_results(
        &self,
        finished_by_ms: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ReleasedBlobs>> {
        retention::expire_results(&self.pool, finished_by_ms, now_ms, limit).await
    }

    async fn delete_finished_jobs(
        &self,
        finished_by_ms: i64,
        limit: u32,
    ) -> Result<Vec<ReleasedBlobs>> {
        retention::delete_finished_jobs(&self.pool, finished_by_ms, limit).await
    }

    /// Autovacuum returns PostgreSQL's space; nothing to do here.
    async fn reclaim_space(&self, _max_pages: u32) -> Result<u64> {
        Ok(0)
    }
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn webhook_due(
        &self,
        now_ms: i64,
        limit: u32,
        hold_ms: i64,
    ) -> Result<Vec<WebhookEvent>> {
        webhooks::due(&self.pool, now_ms, limit, hold_ms).await
    }

    async fn webhook_record_attempt(
        &self,
        event_id: &str,
        attempt: WebhookAttempt,
        _now_ms: i64,
    ) -> Result<()> {
        webhooks::record_attempt(&self.pool, event_id, &attempt).await
    }

    async fn webhook_events_of(&self, job_id: Uuid) -> Result<Vec<WebhookEventRecord>> {
        webhooks::events_of(&self.pool, job_id).await
    }

    async fn webhook_pending(&self) -> Result<u64> {
        webhooks::pending(&self.pool).await
    }

    async fn webhook_secrets(&self, owner_key_id: &str, now_ms: i64) -> Result<WebhookSecrets> {
        webhooks::secrets(&self.pool, owner_key_id, now_ms).await
    }

    async fn rotate_webhook_secret(
        &self,
        owner_key_id: &str,
        now_ms: i64,
    ) -> Result<WebhookSecrets> {
        webhooks::rotate(&self.pool, owner_key_id, now_ms).await
    }
}

#[async_trait]
impl crate::UsageStore for PgStore {
    async fn usage(&self, query: &crate::UsageQuery) -> Result<Vec<crate::UsageRecord>> {
        let mut conn = self.pool.acquire().await?;
        super::usage::read(&mut conn, query).await
    }
}
