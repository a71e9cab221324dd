//! Retention: finished jobs give up their input image as soon as they end (unless
//! `--keep-inputs`), their result after `--result-ttl` (the job stays `COMPLETED`, its
//! status says when the result expired, and the result answers 410 Gone), and their row
//! after `--job-ttl` (then 404). An orphan sweep deletes blobs that no job references
//! (a crash between an upload and its commit, a lost worker's late upload) once they
//! are [`ORPHAN_GRACE`] old.
//!
//! The work runs in a background task in small batches ([`BATCH`] rows per store call,
//! each one short transaction), so the API never waits for more than one batch; on a
//! shared PostgreSQL database only the server holding the reaper lock cleans. Each
//! batch first changes the rows, then deletes the blobs the rows gave up: a blob whose
//! delete fails is unreferenced from then on, and the orphan sweep removes it later.
//! [`run_once`] and [`sweep_orphans`] take the time as an argument so tests can act
//! as if days had passed.

use std::time::Duration;

use futures::StreamExt;
use pipelet_api::wire::StatusMessages;
use pipelet_store::{JobRecord, JobState, ReleasedBlobs, Result, now_ms};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;
use crate::status_view::rfc3339;

/// Rows per store call.
pub const BATCH: u32 = 100;
/// Batches per step and run: a backlog (say, after the first start with retention) is
/// worked off over several runs instead of in one long burst.
const MAX_BATCHES: usize = 50;
/// How often the cleanup runs (`Config::retention_interval`).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// How old an unreferenced blob must be before the orphan sweep deletes it: a create
/// writes its image before it commits the job, and a worker uploads its video before it
/// reports the job done.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);
/// How often the orphan sweep (a walk over every blob) runs.
pub const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// SQLite pages given back to the file system per run (4 KiB each).
const VACUUM_PAGES: u32 = 4096;

/// What one run removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Result videos deleted (expired, or with their job).
    pub results: u64,
    /// Input images deleted.
    pub inputs: u64,
    /// Finished jobs deleted.
    pub jobs: u64,
    /// Blobs no job referenced.
    pub orphans: u64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// When a finished job's result and input go: `--result-ttl` after it ended, or with the
/// whole job at `--job-ttl` if that comes first; `None` while it runs or when kept forever.
pub fn expires_at_ms(job: &JobRecord, config: &Config) -> Option<i64> {
    let finished = job.finished_at_ms.filter(|_| job.state.is_terminal())?;
    [config.result_ttl, config.job_ttl]
        .into_iter()
        .flatten()
        .map(|ttl| finished.saturating_add(ms(ttl)))
        .min()
}

/// Adds the retention fields to a status's `statusMessages`: `expires_at` on every
/// finished job (unless kept forever), `expired_at` once a result is gone.
pub fn annotate(messages: &mut StatusMessages, job: &JobRecord, config: &Config) {
    messages.expires_at = expires_at_ms(job, config).map(rfc3339);
    messages.expired_at = job
        .result_expired_at_ms
        .filter(|_| job.state == JobState::Completed)
        .map(rfc3339);
}

/// The 410 for the result of a job whose result expired, if it did.
pub fn gone(job: &JobRecord) -> Option<ApiError> {
    let at = job
        .result_expired_at_ms
        .filter(|_| job.state == JobState::Completed)?;
    Some(ApiError::Gone(format!(
        "the request completed, but its result expired at {} and was deleted (the server \
         keeps results for a limited time, --result-ttl); submit the request again to get \
         a new video",
        rfc3339(at)
    )))
}

/// Deletes the blobs that rows gave up; returns how many (input, result) blobs went. A
/// delete that fails leaves an orphan for the sweep.
async fn delete_blobs(state: &AppState, released: &[ReleasedBlobs]) -> (u64, u64) {
    let (mut inputs, mut results) = (0, 0);
    for key in released.iter().flat_map(|r| r.keys.iter()) {
        match state.blobs.delete_if_exists(key).await {
            Ok(true) if key.starts_with("results/") => results += 1,
            Ok(true) => inputs += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot delete a blob; the orphan sweep will retry")
            }
        }
    }
    (inputs, results)
}

/// Runs one store step in batches until nothing more is due (or [`MAX_BATCHES`]).
async fn in_batches<F, Fut>(state: &AppState, removed: &mut Removed, mut step: F) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<ReleasedBlobs>>>,
{
    let mut rows = 0u64;
    for _ in 0..MAX_BATCHES {
        let released = step().await?;
        rows += released.len() as u64;
        let (inputs, results) = delete_blobs(state, &released).await;
        removed.inputs += inputs;
        removed.results += results;
        if released.len() < BATCH as usize {
            break;
        }
        // Let the API's requests in between batches.
        tokio::task::yield_now().await;
    }
    Ok(rows)
}

/// Everything due at `now_ms`: inputs of finished jobs, expired results, then old jobs;
/// then SQLite's freed pages go back to the file system. Counted in the metrics.
pub async fn run_once(state: &AppState, now_ms: i64) -> Result<Removed> {
    let config = &state.config;
    let store = &state.store;
    let mut removed = Removed::default();
    // Inputs: as soon as the job ends, or with its result under --keep-inputs.
    let inputs_by = if config.keep_inputs {
        config.result_ttl.map(|ttl| now_ms.saturating_sub(ms(ttl)))
    } else {
        Some(now_ms)
    };
    if let Some(by) = inputs_by {
        in_batches(state, &mut removed, || store.release_inputs(by, BATCH)).await?;
    }
    if let Some(ttl) = config.result_ttl {
        let by = now_ms.saturating_sub(ms(ttl));
        in_batches(state, &mut removed, || {
            store.expire_results(by, now_ms, BATCH)
        })
        .await?;
    }
    if let Some(ttl) = config.job_ttl {
        let by = now_ms.saturating_sub(ms(ttl));
        removed.jobs = in_batches(state, &mut removed, || {
            store.delete_finished_jobs(by, BATCH)
        })
        .await?;
    }
    if removed.jobs > 0 {
        store.reclaim_space(VACUUM_PAGES).await?;
    }
    let metrics = &state.metrics;
    metrics.cleanup_removed("result", removed.results);
    metrics.cleanup_removed("input", removed.inputs);
    metrics.cleanup_removed("job", removed.jobs);
    if removed != Removed::default() {
        tracing::info!(?removed, "retention cleanup");
    }
    Ok(removed)
}

/// The job a blob key belongs to: `inputs/<id>` or `results/<id>/<lease>.mp4`.
fn job_of_key(key: &str) -> Option<Uuid> {
    let mut parts = key.split('/');
    let id = match (parts.next()?, parts.next()?, parts.next(), parts.next()) {
        ("inputs", id, None, None) => id,
        ("results", id, Some(file), None) if file.ends_with(".mp4") => id,
        _ => return None,
    };
    Uuid::parse_str(id).ok()
}

/// Whether `key` (of job `id`) is still needed: the job's live input or result, or any
/// blob of a job that has not finished (its worker may be about to report it).
async fn referenced(state: &AppState, id: Uuid, key: &str) -> Result<bool> {
    let Some(job) = state.store.get_job(id).await? else {
        return Ok(false);
    };
    if !job.state.is_terminal() {
        return Ok(true);
    }
    let live_result = job
        .result
        .as_ref()
        .filter(|_| job.result_expired_at_ms.is_none())
        .is_some_and(|r| r.blob == key);
    Ok(job.input_blob.as_deref() == Some(key) || live_result)
}

/// Deletes blobs older than `grace` (at `now_ms`) that no job references. Keys of
/// another layout are left alone.
pub async fn sweep_orphans(state: &AppState, now_ms: i64, grace: Duration) -> Result<u64> {
    let before = now_ms.saturating_sub(ms(grace));
    let mut removed = 0;
    for prefix in ["inputs", "results"] {
        let mut listing = state.blobs.list(prefix);
        while let Some(entry) = listing.next().await {
            let (key, modified) = entry?;
            if modified > before {
                continue;
            }
            let Some(id) = job_of_key(&key) else {
                continue;
            };
            if referenced(state, id, &key).await? {
                continue;
            }
            match state.blobs.delete_if_exists(&key).await {
                Ok(true) => {
                    tracing::info!(key, "deleted an orphan blob");
                    removed += 1;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(key, error = %e, "cannot delete an orphan blob"),
            }
        }
    }
    state.metrics.cleanup_removed("orphan", removed);
    Ok(removed)
}

/// The background task: [`run_once`] every `retention_interval` ([`INTERVAL`]) and [`sweep_orphans`] every
/// [`ORPHAN_SWEEP_EVERY`], on the one server that holds the reaper lock.
pub(crate) async fn run(state: AppState, stop: CancellationToken) {
    let mut last_sweep: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(state.config.retention_interval) => {}
            () = stop.cancelled() => return,
        }
        match state.store.try_reaper_lock().await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "retention: cannot take the reaper lock");
                continue;
            }
        }
        let work = async {
            run_once(&state, now_ms()).await?;
            if last_sweep.is_none_or(|at| at.elapsed() >= ORPHAN_SWEEP_EVERY) {
                sweep_orphans(&state, now_ms(), ORPHAN_GRACE).await?;
                last_sweep = Some(std::time::Instant::now());
            }
            Ok::<_, pipelet_store::StoreError>(())
        };
        tokio::select! {
            done = work => if let Err(e) = done {
                tracing::warn!(error = %e, "retention cleanup failed; retrying next round");
            },
            () = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_name_their_job() {
        let id = Uuid::new_v4();
        assert_eq!(job_of_key(&format!("inputs/{id}")), Some(id));
        assert_eq!(job_of_key(&format!("results/{id}/3.mp4")), Some(id));
        for other in [
            format!("inputs/{id}/x"),
            format!("results/{id}"),
            format!("results/{id}/3.txt"),
            "inputs/not-a-uuid".to_string(),
            format!("elsewhere/{id}"),
        ] {
            assert_eq!(job_of_key(&other), None, "{other}");
        }
    }
}
