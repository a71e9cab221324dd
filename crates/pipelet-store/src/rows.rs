//! Mapping between database rows and the store's types, shared by both backends: each
//! backend only names its columns (`JOB_COLUMNS`) so that they decode the same way.

use pipelet_api::Pipeline;
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use crate::{JobRecord, JobResult, JobState, ProgressUpdate, Result, StoreError};

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value:?}"))
}

fn u32_of(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(what, &v.to_string()))
}

/// The client's reason for a job whose stored spec this version cannot read (written by
/// a newer or incompatible version): it is failed rather than left to block the queue.
pub(crate) const UNREADABLE_SPEC: &str =
    "the job's stored settings cannot be read by this server version";

/// A job spec this version cannot read: why (with the stored text, for operators), and
/// the readable stand-in the failed job keeps so that its status still reads (its prompt
/// when that survives, the rest from [`pipelet_api::JobSpec::sample`]).
pub(crate) struct UnreadableSpec {
    pub detail: String,
    pub stand_in: String,
}

/// `Some` when a stored spec cannot be read as a [`pipelet_api::JobSpec`].
pub(crate) fn unreadable_spec(spec: &str) -> Option<UnreadableSpec> {
    let error = serde_json::from_str::<pipelet_api::JobSpec>(spec).err()?;
    let prompt = serde_json::from_str::<serde_json::Value>(spec)
        .ok()
        .and_then(|v| v.get("prompt").and_then(|p| p.as_str()).map(str::to_string))
        .unwrap_or_default();
    let stored: String = spec.chars().take(2000).collect();
    Some(UnreadableSpec {
        detail: format!("unreadable job spec: {error}; stored spec: {stored}"),
        stand_in: serde_json::to_string(&pipelet_api::JobSpec::sample(prompt)).ok()?,
    })
}

/// The jobs among `rows` (`(id, spec)`) whose spec this version cannot read, each
/// logged as it comes up to be failed.
pub(crate) fn unreadable_jobs(
    rows: Vec<(String, String)>,
) -> impl Iterator<Item = (String, UnreadableSpec)> {
    rows.into_iter().filter_map(|(id, spec)| {
        let unreadable = unreadable_spec(&spec)?;
        tracing::error!(job = %id, error = %unreadable.detail, "failing a job this version cannot read");
        Some((id, unreadable))
    })
}

/// Both backends' count of live jobs by model and state, read by [`job_count_from_row`].
pub(crate) const JOB_COUNTS_SQL: &str = "SELECT model_id, state, count(*) AS n FROM jobs \
     WHERE state IN ('queued', 'running') GROUP BY model_id, state";

/// Reads one row of [`JOB_COUNTS_SQL`].
pub(crate) fn job_count_from_row<'r, R>(row: &'r R) -> Result<crate::JobCount>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let state: String = row.try_get("state")?;
    Ok(crate::JobCount {
        model_id: row.try_get("model_id")?,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("state {state:?}")))?,
        count: u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
    })
}

/// Reads a job from any backend's row of its `JOB_COLUMNS` (in both, `cancel_requested`
/// comes back as an integer).
pub(crate) fn job_from_row<'r, R>(row: &'r R) -> Result<JobRecord>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let pipeline: String = row.try_get("pipeline")?;
    let state: String = row.try_get("state")?;
    let spec: String = row.try_get("spec")?;
    let result: Option<String> = row.try_get("result")?;
    let progress = match (
        row.try_get::<Option<i64>, _>("progress_done")?,
        row.try_get::<Option<i64>, _>("progress_total")?,
    ) {
        (Some(done), Some(total)) => Some(ProgressUpdate {
            done: u32_of(done, "progress_done")?,
            total: u32_of(total, "progress_total")?,
        }),
        _ => None,
    };
    Ok(JobRecord {
        id: Uuid::parse_str(&id).map_err(|_| corrupt("job id", &id))?,
        seq: row.try_get("seq")?,
        model_id: row.try_get("model_id")?,
        pipeline: Pipeline::parse(&pipeline).ok_or_else(|| corrupt("pipeline", &pipeline))?,
        owner_key_id: row.try_get("owner_key_id")?,
        priority: row.try_get("priority")?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        spec: serde_json::from_str(&spec).map_err(|e| corrupt("spec", &e.to_string()))?,
        input_blob: row.try_get("input_blob")?,
        created_at_ms: row.try_get("created_at")?,
        started_at_ms: row.try_get("started_at")?,
        finished_at_ms: row.try_get("finished_at")?,
        attempt: u32_of(row.try_get("attempt")?, "attempt")?,
        max_attempts: u32_of(row.try_get("max_attempts")?, "max_attempts")?,
        lease_token: row.try_get("lease_token")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at_ms: row.try_get("lease_expires_at")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        progress,
        error: row.try_get("error")?,
        error_detail: row.try_get("error_detail")?,
        result: match result {
            Some(json) => {
                Some(serde_json::from_str(&json).map_err(|e| corrupt("result", &e.to_string()))?)
            }
            None => None,
        },
        cancelled_by: row.try_get("cancelled_by")?,
        webhook_url: row.try_get("webhook_url")?,
        result_expired_at_ms: row.try_get("result_expired_at")?,
    })
}

pub(crate) fn result_json(result: &JobResult) -> Result<String> {
    serde_json::to_string(result).map_err(|e| StoreError::Corrupt(e.to_string()))
}
