//! How a stored job looks to a client: the public queue API's status JSON.
//!
//! A failure has two texts: the plain reason every caller reads (`error`,
//! `detail_message`), and the internal detail (worker, host, raw error) that only admin
//! keys get, as `statusMessages.internal_detail` and in the logs.

use pipelet_api::wire::{JobStatus, LogEntry, StatusMessages, StatusResponse};
use pipelet_store::{JobRecord, JobState, Role};

use crate::auth::Principal;
use crate::eta::Eta;
use crate::urls::BaseUrl;

/// Who reads a status: admins also see what went wrong inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Client,
    Admin,
}

impl Viewer {
    pub fn of(principal: &Principal) -> Self {
        if principal.key.role == Role::Admin {
            Viewer::Admin
        } else {
            Viewer::Client
        }
    }

    /// The job's internal failure detail, for admins only.
    fn detail_of(self, job: &JobRecord) -> Option<String> {
        match self {
            Viewer::Admin => job.error_detail.clone(),
            Viewer::Client => None,
        }
    }
}

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

/// `statusMessages`. While running, `detail_message` is always `Progress: i/N Tasks
/// done` (clients parse it): `0/N` from the claim on, `N` counted as the worker's
/// renderer counts tasks until it reports its own; anything else goes in other fields.
pub fn messages(job: &JobRecord, now_ms: i64, viewer: Viewer, eta: &Eta) -> StatusMessages {
    match job.state {
        JobState::Queued => match (&job.error, job.attempt) {
            // A retried job says why it is waiting again.
            (Some(error), attempt) if attempt > 0 => StatusMessages {
                message: Some("RETRYING".into()),
                detail_message: Some(error.clone()),
                attempt: Some(attempt),
                internal_detail: viewer.detail_of(job),
                ..Default::default()
            },
            _ => StatusMessages::default(),
        },
        JobState::Running => {
            let mut m = match job.progress {
                Some(p) => StatusMessages::processing(p.done, p.total),
                // Claimed, but the worker has not reported its task count yet.
                None => StatusMessages::processing(0, eta.tasks(job)),
            };
            m.attempt = Some(job.attempt);
            m.started_at = job.started_at_ms.map(rfc3339);
            m.cancel_requested = job.cancel_requested.then_some(true);
            m
        }
        JobState::Completed => {
            let started = job.started_at_ms.unwrap_or(job.created_at_ms);
            let finished = job.finished_at_ms.unwrap_or(now_ms);
            let backend = job
                .result
                .as_ref()
                .map(|r| r.video.backend.clone())
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
            m.internal_detail = viewer.detail_of(job);
            m
        }
        JobState::Cancelled => StatusMessages::cancelled(
            job.cancelled_by.clone().unwrap_or_else(|| "unknown".into()),
            rfc3339(job.finished_at_ms.unwrap_or(now_ms)),
        ),
    }
}

/// What we know happened to a job, in fal's log-entry shape (for `?logs=1`).
pub fn logs(job: &JobRecord, viewer: Viewer) -> Vec<LogEntry> {
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
        if let Some(detail) = viewer.detail_of(job) {
            logs.push(entry(at, "DEBUG", format!("internal detail: {detail}")));
        }
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
    viewer: Viewer,
    eta: &Eta,
) -> StatusResponse {
    let mut response = StatusResponse::new(
        wire_status(job.state),
        job.id.to_string(),
        base.request(&job.model_id, job.id),
        position,
    )
    .with_messages(messages(job, now_ms, viewer, eta));
    if with_logs {
        response.logs = Some(logs(job, viewer));
    }
    match job.state {
        JobState::Queued => {
            response = response
                .with_start_estimate(eta.start_estimate(job.pipeline, position.unwrap_or(0)));
        }
        JobState::Running => {
            let fraction = job
                .progress
                .filter(|p| p.total > 0)
                .map_or(0.0, |p| f64::from(p.done) / f64::from(p.total));
            response = response.with_progress(fraction);
            // The job's own pace once it has one, before that the measured average.
            let estimate = match job.started_at_ms {
                Some(started) if fraction > 0.0 => {
                    Some(seconds_between(started, now_ms) / fraction)
                }
                _ => eta.measured_run(job),
            };
            if let Some(total) = estimate {
                response = response.with_estimate(total);
            }
        }
        JobState::Completed => response = response.with_progress(1.0),
        _ => {}
    }
    response
}
