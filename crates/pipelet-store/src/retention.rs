//! Retention, the part both backends share: which blob keys a finished job's row gives
//! up when its input is released, its result expires or the row is deleted. The
//! policies (how long, in what batches) belong to the server; the store only changes
//! rows and reports the keys.

use uuid::Uuid;

use crate::{JobResult, ReleasedBlobs, Result, StoreError};

/// The state names of finished jobs, for SQL (`state IN (…)`).
pub(crate) const FINISHED_STATES: &str = "('completed', 'failed', 'cancelled')";

/// The keys a row held: its input blob, and its result's blob when `result` (the row's
/// result JSON) is still live (not expired).
pub(crate) fn released(
    id: &str,
    input_blob: Option<String>,
    live_result: Option<&str>,
) -> Result<ReleasedBlobs> {
    let job_id = Uuid::parse_str(id).map_err(|_| StoreError::Corrupt(format!("job id: {id:?}")))?;
    let mut keys: Vec<String> = input_blob.into_iter().collect();
    if let Some(json) = live_result {
        let result: JobResult = serde_json::from_str(json)
            .map_err(|e| StoreError::Corrupt(format!("result of job {id}: {e}")))?;
        keys.push(result.blob);
    }
    Ok(ReleasedBlobs { job_id, keys })
}
