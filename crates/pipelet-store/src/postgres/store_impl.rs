//! [`Store`] for [`PgStore`]: every call on the pool, every write committed before it
//! returns.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Row;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::recovery::{self, Stranded};
use super::rows::{JOB_COLUMNS, job_from_row};
use super::{PgStore, jobs, keys};
use crate::keys::{KeyRecord, NewKey};
use crate::{
    CancelOutcome, ClaimRequest, FailOutcome, Failure, HeartbeatReply, JobCount, JobRecord,
    JobResult, JobState, Lease, LeaseRef, NewJob, ProgressUpdate, ReapedJob, Result, Store,
    StoreError,
};

#[async_trait]
impl Store for PgStore {
    async fn try_reaper_lock(&self) -> Result<bool> {
        PgStore::try_reaper_lock(self).await
    }

    async fn create_job(&self, job: NewJob) -> Result<JobRecord> {
        let (tx, rx) = oneshot::channel();
        self.creates
            .send((job, tx))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
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

    async fn cancel(&self, id: Uuid, force: bool, by: &str) -> Result<CancelOutcome> {
        recovery::cancel(&self.pool, &self.gauge, id, force, by).await
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Lease>> {
        jobs::claim(&self.pool, &self.gauge, req).await
    }

    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
        extend_ms: i64,
    ) -> Result<HeartbeatReply> {
        jobs::heartbeat(&self.pool, lease, progress, extend_ms).await
    }

    async fn complete(&self, lease: &LeaseRef, result: &JobResult) -> Result<()> {
        jobs::complete(&self.pool, lease, result).await
    }

    async fn fail(
        &self,
        lease: &LeaseRef,
        failure: &Failure,
        retryable: bool,
    ) -> Result<FailOutcome> {
        jobs::fail(&self.pool, &self.gauge, lease, failure, retryable).await
    }

    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<()> {
        jobs::ack_cancelled(&self.pool, lease).await
    }

    async fn reap_expired(&self, now_ms: i64) -> Result<Vec<ReapedJob>> {
        recovery::end_stranded(&self.pool, &self.gauge, Stranded::ExpiredBefore(now_ms)).await
    }

    async fn release_leases_of(&self, owner_prefix: &str) -> Result<u64> {
        let released =
            recovery::end_stranded(&self.pool, &self.gauge, Stranded::OwnerPrefix(owner_prefix))
                .await?;
        Ok(released.len() as u64)
    }

    async fn job_counts(&self) -> Result<Vec<JobCount>> {
        let rows = sqlx::query(
            "SELECT model_id, state, count(*) AS n FROM jobs \
             WHERE state IN ('queued', 'running') GROUP BY model_id, state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok(JobCount {
                    model_id: row.try_get("model_id")?,
                    state: JobState::parse(&state)
                        .ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?,
                    count: u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Approximate across servers: see `gauge.rs`.
    fn queued_total(&self) -> u64 {
        self.gauge.get()
    }

    fn job_available(&self) -> Arc<Notify> {
        self.available.clone()
    }

    async fn create_key(&self, key: NewKey) -> Result<(KeyRecord, String)> {
        keys::create(&self.pool, key).await
    }

    async fn find_key_by_secret(&self, secret: &str) -> Result<Option<KeyRecord>> {
        keys::find_by_secret(&self.pool, secret).await
    }

    async fn count_keys(&self) -> Result<u64> {
        keys::count(&self.pool).await
    }
}
