//! The JSON bodies the public queue API sends back: create, status, result and error.
//!
//! Field names and presence follow the API contract (and fal's clients, which read
//! `logs` and follow the URLs), so these types are the single place that shape lives.

use serde::{Deserialize, Serialize};

use crate::error_codes::ErrorCode;
use crate::spec::InputError;

mod create;
mod history;
mod result;
pub mod usage;

pub use create::CreateRequest;
pub use history::{RequestList, RequestSummary};
pub use result::{ResultResponse, VIDEO_CONTENT_TYPE, VideoResult};
pub use usage::{UsageReport, UsageRow, UsageTotals};

/// `POST /queue/{model_id}` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateResponse {
    /// The request's id: an opaque string (a UUID).
    #[cfg_attr(
        feature = "openapi",
        schema(example = "9b2f5d1e-3c4a-4e8b-a1f0-5d6c7b8a9e01")
    )]
    pub request_id: String,
    /// Absolute URL of the result: `GET` it once the status is `COMPLETED`.
    pub response_url: String,
    /// Absolute URL of the status: poll it with `GET`.
    pub status_url: String,
    /// Absolute URL to cancel the request with `PUT`.
    pub cancel_url: String,
    /// Jobs that will be dispatched before this one (0: next).
    pub queue_position: u64,
    /// The `priority` the request was queued with: the body's `priority` (default 0),
    /// lowered to the key's cap when it asked for more. Dispatch uses it plus the model
    /// tier's priority.
    // `default` only so answers of servers older than the field still parse; this
    // server always sends it.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true, example = 0))]
    pub priority: i64,
}

/// The public status of a request. A job retried after a lost worker shows `IN_QUEUE`
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Waiting for a worker (also after a lost worker's job is re-queued).
    InQueue,
    /// A worker is rendering it.
    InProgress,
    /// Done; the result can be fetched until retention deletes it.
    Completed,
    /// Ended with an error; `statusMessages.error` says why.
    Failed,
    /// Cancelled by a client before it finished.
    Cancelled,
}

impl JobStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [JobStatus; 5] = [
        JobStatus::InQueue,
        JobStatus::InProgress,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The wire spelling (`"IN_QUEUE"`, ...), as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::InQueue => "IN_QUEUE",
            JobStatus::InProgress => "IN_PROGRESS",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }

    /// The status spelled `s` exactly as on the wire; `None` for anything else.
    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the request can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `statusMessages`: always an object, `{}` while queued. Absent fields are omitted.
///
/// In progress it holds `message` `"PROCESSING"` and `detail_message`
/// `"Progress: 4/24 Tasks done"`; COMPLETED adds the timings, FAILED the reason and
/// CANCELLED who cancelled and when.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct StatusMessages {
    /// `"PROCESSING"` in progress; a one-word summary in terminal states.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `"Progress: 4/24 Tasks done"` in progress; a sentence in terminal states.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail_message: Option<String>,
    /// FAILED: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which attempt is (or was last) running, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// COMPLETED: seconds from submission until a worker started the last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_time_seconds: Option<f64>,
    /// COMPLETED: seconds the worker spent making the video.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inference_time_seconds: Option<f64>,
    /// When a worker started the request (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the request reached its terminal status (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// CANCELLED: who asked (a key name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
    /// The renderer that made the video (`preview` or `wan`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Admin keys only, on FAILED and RETRYING: what operators need about the failure
    /// (the worker, the raw error); `error` and `detail_message` stay plain for clients.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_detail: Option<String>,
    /// In progress, once it can be estimated: the whole job's expected time in seconds
    /// (where the public pipelet service puts it; the status also has a top-level copy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_total_time_seconds: Option<f64>,
    /// In progress: `true` once a forced cancel asked the worker to stop (the job then
    /// ends `CANCELLED`); `detail_message` keeps its `Progress: i/N Tasks done` form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_requested: Option<bool>,
    /// Finished requests (RFC 3339): when the result and input image are deleted under
    /// the server's retention (`--result-ttl`, or `--job-ttl` if that comes first);
    /// absent when they are kept forever. Later than this the result answers 410 Gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// COMPLETED requests whose result was deleted (RFC 3339): when. The status stays
    /// `COMPLETED`; the result answers 410 Gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<String>,
}

impl StatusMessages {
    /// In progress: `{"message":"PROCESSING","detail_message":"Progress: 4/24 Tasks done"}`.
    pub fn processing(done: u32, total: u32) -> Self {
        StatusMessages {
            message: Some("PROCESSING".to_owned()),
            detail_message: Some(format!("Progress: {done}/{total} Tasks done")),
            ..Default::default()
        }
    }

    /// FAILED with the reason a person reads.
    pub fn failed(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        StatusMessages {
            message: Some("FAILED".to_owned()),
            detail_message: Some(reason.clone()),
            error: Some(reason),
            ..Default::default()
        }
    }

    /// CANCELLED by `by` at `at` (RFC 3339).
    pub fn cancelled(by: impl Into<String>, at: impl Into<String>) -> Self {
        let (by, at) = (by.into(), at.into());
        StatusMessages {
            message: Some("CANCELLED".to_owned()),
            detail_message: Some(format!("Cancelled by {by} at {at}")),
            cancelled_by: Some(by),
            finished_at: Some(at),
            ..Default::default()
        }
    }

    /// COMPLETED, with the timings.
    pub fn completed(queue_s: f64, inference_s: f64, backend: impl Into<String>) -> Self {
        StatusMessages {
            message: Some("COMPLETED".to_owned()),
            detail_message: Some(format!(
                "Waited {queue_s:.1} s in the queue, generated in {inference_s:.1} s"
            )),
            queue_time_seconds: Some(queue_s),
            inference_time_seconds: Some(inference_s),
            backend: Some(backend.into()),
            ..Default::default()
        }
    }

    /// Whether every field is absent, i.e. it serializes as `{}`.
    pub fn is_empty(&self) -> bool {
        *self == StatusMessages::default()
    }
}

/// One log line, in fal's shape (`logs` is null unless asked for with `?logs=1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    /// The log line, written for a person.
    pub message: String,
    /// `"INFO"`, `"WARN"` or `"ERROR"`.
    pub level: String,
    /// What wrote the line (`"pipelet"` for the server's own lines).
    #[serde(default)]
    pub source: String,
    /// RFC 3339.
    pub timestamp: String,
}

/// `GET .../status` → 200.
///
/// Build it with [`StatusResponse::new`] so `queue_position` is present only while
/// `IN_QUEUE`, as the contract says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(
        description = "The status of a request (`GET .../status`, and each event of \
                          `.../status/stream`)."
    )
)]
pub struct StatusResponse {
    /// Where the request is in its lifecycle.
    pub status: JobStatus,
    /// `IN_QUEUE` only: how many jobs will be dispatched before this one (0: next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
    /// Always an object (`{}` while queued).
    #[serde(rename = "statusMessages", default)]
    pub status_messages: StatusMessages,
    /// Absolute URL of the result.
    pub response_url: String,
    /// The id `POST /queue/{model_id}` returned.
    pub request_id: String,
    /// Always present (fal clients read it); `null` unless logs were asked for.
    #[serde(default)]
    pub logs: Option<Vec<LogEntry>>,
    /// Fraction done, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// The whole job's expected time, while in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_total_time_seconds: Option<f64>,
    /// `IN_QUEUE` only, and then always present: the expected seconds until a worker
    /// starts this request, from its position, the workers serving its pipeline and
    /// recent run times; `null` when no worker serves the pipeline right now.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_or_null"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub estimated_start_seconds: Option<Option<f64>>,
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present_or_null<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

impl StatusResponse {
    /// A status with no messages; `queue_position` is kept only for `IN_QUEUE`.
    pub fn new(
        status: JobStatus,
        request_id: impl Into<String>,
        response_url: impl Into<String>,
        queue_position: Option<u64>,
    ) -> Self {
        StatusResponse {
            status,
            queue_position: queue_position.filter(|_| status == JobStatus::InQueue),
            status_messages: StatusMessages::default(),
            response_url: response_url.into(),
            request_id: request_id.into(),
            logs: None,
            progress: None,
            estimated_total_time_seconds: None,
            estimated_start_seconds: None,
        }
    }

    /// Replaces `statusMessages` (use this before [`StatusResponse::with_estimate`], which
    /// writes into it).
    pub fn with_messages(mut self, messages: StatusMessages) -> Self {
        self.status_messages = messages;
        self
    }

    /// Sets `progress`, clamped to [0, 1]; a NaN is dropped.
    pub fn with_progress(mut self, progress: f64) -> Self {
        self.progress = (!progress.is_nan()).then(|| progress.clamp(0.0, 1.0));
        self
    }

    /// Sets `estimated_total_time_seconds`, at the top level and in `statusMessages`; a
    /// value that is not finite is dropped.
    pub fn with_estimate(mut self, total_seconds: f64) -> Self {
        let total = total_seconds.is_finite().then_some(total_seconds);
        self.estimated_total_time_seconds = total;
        self.status_messages.estimated_total_time_seconds = total;
        self
    }

    /// Sets `estimated_start_seconds` of an `IN_QUEUE` status (`None`: `null`, no worker
    /// serves the pipeline); other statuses leave it out.
    pub fn with_start_estimate(mut self, seconds: Option<f64>) -> Self {
        self.estimated_start_seconds = (self.status == JobStatus::InQueue)
            .then(|| seconds.filter(|s| s.is_finite()).map(|s| s.max(0.0)));
        self
    }
}

/// Every error body: `{"detail": "...", "code": "..."}`, plus the field at fault or the
/// request's status when they help.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong, written for a person: which field, what is allowed.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "duration 7 s is too long for 720p output (1280x720): at most 5 s")
    )]
    pub detail: String,
    /// What went wrong, for programs: a stable code from the table in `docs/errors.md`.
    pub code: ErrorCode,
    /// 422: the body field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For 409 on a result that is not ready: the request's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<JobStatus>,
}

impl ErrorBody {
    /// An error body with no `field` or `status`; `code` decides the HTTP status.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ErrorBody {
            detail: detail.into(),
            code,
            field: None,
            status: None,
        }
    }

    /// Adds the request's status (409 `not_completed` and `not_cancellable`).
    pub fn with_status(mut self, status: JobStatus) -> Self {
        self.status = Some(status);
        self
    }
}

impl From<InputError> for ErrorBody {
    fn from(e: InputError) -> Self {
        ErrorBody {
            detail: e.detail,
            code: e.code,
            field: e.field,
            status: None,
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
