//! SQLite's job columns; the row mapping itself is shared (`crate::rows`).

pub(crate) use crate::rows::{job_from_row, result_json};

pub(crate) const JOB_COLUMNS: &str = "seq, id, model_id, pipeline, owner_key_id, priority, state, \
     spec, input_blob, created_at, started_at, finished_at, attempt, max_attempts, lease_token, \
     lease_owner, lease_expires_at, cancel_requested, progress_done, progress_total, error, \
     error_detail, result, cancelled_by, webhook_url, \
     result_expired_at";
