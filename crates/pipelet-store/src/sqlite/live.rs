//! [`LiveJobs`]: the queued and running jobs, mirrored in memory so status polls (the
//! hot read path) never touch SQLite. Every write that changes such a job refreshes
//! its entry while it still holds the writer lock, so the mirror never goes back in
//! time; terminal jobs leave the mirror and are read from the database.
//!
//! Its size is bounded by the queue limit plus the running jobs.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use sqlx::sqlite::SqliteConnection;
use uuid::Uuid;

use super::jobs::fetch_job;
use super::rows::{JOB_COLUMNS, job_from_row};
use super::{begin, finish, usage};
use crate::rows::{UNREADABLE_SPEC, unreadable_jobs};
use crate::{HeartbeatReply, JobRecord, ProgressUpdate, Result};

#[derive(Default)]
pub(crate) struct LiveJobs {
    jobs: Mutex<HashMap<Uuid, JobRecord>>,
}

impl LiveJobs {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, JobRecord>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: Uuid) -> Option<JobRecord> {
        self.lock().get(&id).cloned()
    }

    /// Records a job's new state: kept while live, dropped once terminal.
    pub(crate) fn put(&self, job: JobRecord) {
        let mut jobs = self.lock();
        if job.state.is_terminal() {
            jobs.remove(&job.id);
        } else {
            jobs.insert(job.id, job);
        }
    }

    pub(crate) fn forget(&self, id: Uuid) {
        self.lock().remove(&id);
    }

    pub(crate) fn heartbeat(
        &self,
        id: Uuid,
        progress: Option<ProgressUpdate>,
        reply: &HeartbeatReply,
    ) {
        if let Some(job) = self.lock().get_mut(&id) {
            if progress.is_some() {
                job.progress = progress;
            }
            job.lease_expires_at_ms = Some(reply.expires_at_ms);
            job.cancel_requested = reply.cancel_requested;
        }
    }

    /// Re-reads `id` on the writer connection (call with the writer lock held).
    pub(crate) async fn refresh(&self, conn: &mut SqliteConnection, id: Uuid) -> Result<()> {
        match fetch_job(conn, id).await? {
            Some(job) => self.put(job),
            None => self.forget(id),
        }
        Ok(())
    }
}

/// Fails, on open, every queued or running job whose spec this version cannot read, so
/// that neither the mirror nor a claim ever meets one. Returns how many.
pub(super) async fn fail_unreadable(conn: &mut SqliteConnection, now_ms: i64) -> Result<u64> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, spec FROM jobs WHERE state IN ('queued', 'running')")
            .fetch_all(&mut *conn)
            .await?;
    let mut failed = 0;
    for (id, unreadable) in unreadable_jobs(rows) {
        begin(conn).await?;
        let done = async {
            let n = sqlx::query(
                "UPDATE jobs SET state = 'failed', finished_at = ?, error = ?, \
                 error_detail = ?, spec = ?, lease_owner = NULL, lease_expires_at = NULL \
                 WHERE id = ?",
            )
            .bind(now_ms)
            .bind(UNREADABLE_SPEC)
            .bind(&unreadable.detail)
            .bind(&unreadable.stand_in)
            .bind(&id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if n > 0 {
                usage::record_unreadable(conn, &id, now_ms).await?;
            }
            Ok(n)
        }
        .await;
        failed += finish(conn, done).await?;
    }
    Ok(failed)
}

/// Fills the mirror from the database on open.
pub(super) async fn load(live: &LiveJobs, conn: &mut SqliteConnection) -> Result<()> {
    let rows = sqlx::query(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('queued', 'running')"
    ))
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        live.put(job_from_row(&row)?);
    }
    Ok(())
}
