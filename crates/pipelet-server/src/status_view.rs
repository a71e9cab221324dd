//! How a stored job looks to a client: the status JSON of the seed's API.

use pipelet_api::wire::{JobStatus, LogEntry, StatusMessages, StatusResponse};
use pipelet_store::{JobRecord, JobState};

use crate::urls::BaseUrl;

pub fn rfc3339(ms: i64) -> String {
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

pub fn wire_status(state: JobState) -> JobStatus {
    match state {
        JobState::Queued => JobStatus::InQueue,
        JobState::Running => JobStatus::InProgress,
        JobState::Completed => JobStatus::Completed,
        JobState::Failed => JobStatus::Failed,
        JobState::Cancelled => JobStatus::Cancelled,
    }
}

fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    ((to_ms - from_ms).max(0) as f64) / 1000.0
}

pub fn messages(job: &JobRecord, now_ms: i64) -> StatusMessages {
    match job.state {
        JobState::Queued => match (&job.error, job.attempt) {
            // A retried job says why it is waiting again.
            (Some(error), attempt) if attempt > 0 => StatusMessages {
                message: Some("RETRYING".into()),
                detail_message: Some(error.clone()),
                attempt: Some(attempt),
                ..Default::default()
            },
            _ => StatusMessages::default(),
        },
        JobState::Running => {
            let mut m = match job.progress {
                Some(p) => StatusMessages::processing(p.done, p.total),
                // Claimed, but the worker has not reported its task count yet.
                None => StatusMessages {
                    message: Some("PROCESSING".into()),
                    detail_message: Some("Starting".into()),
                    ..Default::default()
                },
            };
            m.attempt = Some(job.attempt);
            m.started_at = job.started_at_ms.map(rfc3339);
            if job.cancel_requested {
                m.detail_message = m
                    .detail_message
                    .map(|d| format!("{d} (stopping: cancel requested)"));
            }
            m
        }
        JobState::Completed => {
            let started = job.started_at_ms.unwrap_or(job.created_at_ms);
            let finished = job.finished_at_ms.unwrap_or(now_ms);
            let backend = job
                .result
                .as_ref()
                .map(|r| r.backend.clone())
                .unwrap_or_default();
            let mut m = StatusMessages::completed(
                seconds_between(job.created_at_ms, started),
                seconds_between(started, finished),
                backend,
            );
            m.started_at = job.started_at_ms.map(rfc3339);
            m.finished_at = job.finished_at_ms.map(rfc3339);
            m
        }
        JobState::Failed => {
            let mut m = StatusMessages::failed(
                job.error.clone().unwrap_or_else(|| "the job failed".into()),
            );
            m.attempt = Some(job.attempt);
            m.finished_at = job.finished_at_ms.map(rfc3339);
            m
        }
        JobState::Cancelled => StatusMessages::cancelled(
            job.cancelled_by.clone().unwrap_or_else(|| "unknown".into()),
            rfc3339(job.finished_at_ms.unwrap_or(now_ms)),
        ),
    }
}

/// What we know happened to a job, in fal's log-entry shape (for `?logs=1`).
pub fn logs(job: &JobRecord) -> Vec<LogEntry> {
    let entry = |ms: i64, level: &str, message: String| LogEntry {
        message,
        level: level.into(),
        source: "pipelet".into(),
        timestamp: rfc3339(ms),
    };
    let mut logs = vec![entry(
        job.created_at_ms,
        "INFO",
        format!("queued for {}", job.model_id),
    )];
    if let Some(at) = job.started_at_ms {
        logs.push(entry(
            at,
            "INFO",
            format!("attempt {} started", job.attempt.max(1)),
        ));
    }
    if let (Some(at), Some(error)) = (job.finished_at_ms.or(job.started_at_ms), &job.error) {
        logs.push(entry(at, "ERROR", error.clone()));
    }
    if let Some(at) = job.finished_at_ms {
        logs.push(entry(
            at,
            "INFO",
            format!("ended {}", wire_status(job.state).as_str()),
        ));
    }
    logs
}

pub fn status_response(
    job: &JobRecord,
    position: Option<u64>,
    base: &BaseUrl,
    with_logs: bool,
    now_ms: i64,
) -> StatusResponse {
    let mut response = StatusResponse::new(
        wire_status(job.state),
        job.id.to_string(),
        base.request(&job.model_id, job.id),
        position,
    )
    .with_messages(messages(job, now_ms));
    if with_logs {
        response.logs = Some(logs(job));
    }
    match job.state {
        JobState::Running => {
            if let Some(p) = job.progress.filter(|p| p.total > 0) {
                let fraction = f64::from(p.done) / f64::from(p.total);
                response = response.with_progress(fraction);
                if p.done > 0
                    && let Some(started) = job.started_at_ms
                {
                    response = response.with_estimate(seconds_between(started, now_ms) / fraction);
                }
            }
        }
        JobState::Completed => response = response.with_progress(1.0),
        _ => {}
    }
    response
}
