//! Mapping between PostgreSQL rows and the store's types, and the one text rule
//! PostgreSQL adds: `TEXT` cannot hold a NUL character, so free text from callers
//! (errors, names, URLs) has NULs replaced before it is bound.

use std::borrow::Cow;

use pipelet_api::Pipeline;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::{JobRecord, JobResult, JobState, ProgressUpdate, Result, StoreError};

/// Every job column, in the shape [`job_from_row`] reads (the UUID as text, so the
/// crate needs no sqlx `uuid` feature).
pub(crate) const JOB_COLUMNS: &str = "seq, id::text AS id, model_id, pipeline, owner_key_id, \
     priority, state, spec, input_blob, created_at, started_at, finished_at, attempt, \
     max_attempts, lease_token, lease_owner, lease_expires_at, cancel_requested, \
     progress_done, progress_total, error, result, cancelled_by, webhook_url";

/// `s` with every NUL replaced by U+FFFD, borrowed when there is none (the usual case).
pub(crate) fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

pub(crate) fn opt_text(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.map(text)
}

fn corrupt(what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!("{what}: {value:?}"))
}

fn u32_of(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(what, &v.to_string()))
}

pub(crate) fn job_from_row(row: &PgRow) -> Result<JobRecord> {
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
        cancel_requested: row.try_get("cancel_requested")?,
        progress,
        error: row.try_get("error")?,
        result: match result {
            Some(json) => {
                Some(serde_json::from_str(&json).map_err(|e| corrupt("result", &e.to_string()))?)
            }
            None => None,
        },
        cancelled_by: row.try_get("cancelled_by")?,
        webhook_url: row.try_get("webhook_url")?,
    })
}

pub(crate) fn result_json(result: &JobResult) -> Result<String> {
    serde_json::to_string(result).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_and_clean_text_borrowed() {
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
        assert_eq!(text("a\0b"), "a\u{fffd}b");
        assert_eq!(opt_text(None), None);
    }
}
