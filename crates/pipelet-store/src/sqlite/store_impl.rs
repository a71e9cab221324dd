//! [`Store`] for [`SqliteStore`]: reads on the pool, writes on the writer connection.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::Row;
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use super::rows::{JOB_COLUMNS, job_from_row};
use super::{SqliteStore, jobs, keys};
use crate::dispatch::{LEASE_EXPIRED, SERVER_RESTARTED};
use crate::keys::{KeyRecord, NewKey};
use crate::{
    CancelOutcome, ClaimRequest, FailOutcome, Failure, HeartbeatReply, JobCount, JobRecord,
    JobResult, JobState, Lease, LeaseRef, NewJob, ProgressUpdate, ReapedJob, Result, Store,
    StoreError,
};

#[async_trait]
impl Store for SqliteStore {
    async fn create_job(&self, job: NewJob) -> Result<JobRecord> {
        let (tx, rx) = oneshot::channel();
        self.creates
            .send((job, tx))
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

    async fn cancel(&self, id: Uuid, force: bool, by: &str) -> Result<CancelOutcome> {
        let mut conn = self.writer.lock().await;
        let outcome = jobs::cancel(&mut conn, &self.index, id, force, by).await?;
        self.live.refresh(&mut conn, id).await?;
        Ok(outcome)
    }

    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Lease>> {
        if req
            .pipelines
            .iter()
            .all(|&p| self.index().queued_in(p) == 0)
        {
            return Ok(None);
        }
        let mut conn = self.writer.lock().await;
        let lease = jobs::claim(&mut conn, &self.index, req).await?;
        if let Some(lease) = &lease {
            self.live.put(lease.job.clone());
        }
        Ok(lease)
    }

    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
        extend_ms: i64,
    ) -> Result<HeartbeatReply> {
        let mut conn = self.writer.lock().await;
        let reply = jobs::heartbeat(&mut conn, lease, progress, extend_ms).await?;
        self.live.heartbeat(lease.job_id, progress, &reply);
        Ok(reply)
    }

    async fn complete(&self, lease: &LeaseRef, result: &JobResult) -> Result<()> {
        let mut conn = self.writer.lock().await;
        jobs::complete(&mut conn, lease, result).await?;
        self.live.forget(lease.job_id);
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
            &self.index,
            &self.available,
            lease,
            failure,
            retryable,
        )
        .await?;
        self.live.refresh(&mut conn, lease.job_id).await?;
        Ok(outcome)
    }

    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<()> {
        let mut conn = self.writer.lock().await;
        jobs::ack_cancelled(&mut conn, lease).await?;
        self.live.forget(lease.job_id);
        Ok(())
    }

    async fn reap_expired(&self, now_ms: i64) -> Result<Vec<ReapedJob>> {
        let mut conn = self.writer.lock().await;
        let reaped = jobs::end_stranded(
            &mut conn,
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

    async fn job_counts(&self) -> Result<Vec<JobCount>> {
        let mut conn = self.read.acquire().await?;
        let rows = sqlx::query(
            "SELECT model_id, state, count(*) AS n FROM jobs \
             WHERE state IN ('queued', 'running') GROUP BY model_id, state",
        )
        .fetch_all(&mut *conn)
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

    fn queued_total(&self) -> u64 {
        self.index().total()
    }

    fn job_available(&self) -> Arc<Notify> {
        self.available.clone()
    }

    async fn create_key(&self, key: NewKey) -> Result<(KeyRecord, String)> {
        let mut conn = self.writer.lock().await;
        keys::create(&mut conn, key).await
    }

    async fn find_key_by_secret(&self, secret: &str) -> Result<Option<KeyRecord>> {
        let mut conn = self.read.acquire().await?;
        keys::find_by_secret(&mut conn, secret).await
    }

    async fn count_keys(&self) -> Result<u64> {
        let mut conn = self.read.acquire().await?;
        keys::count(&mut conn).await
    }
}
