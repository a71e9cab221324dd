//! Webhook outbox types. An event is written in the same transaction as the job state
//! change it reports (so a crash cannot lose it), then handed out by
//! [`crate::Store::webhook_due`] to a delivery loop, one event per job at a time (a
//! job's events arrive in order), and finished by [`crate::Store::webhook_record_attempt`].
//! Signing secrets are per API key ([`WebhookSecrets`]).

use base64::Engine;
use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use crate::{JobRecord, JobResult, Result, StoreError};

/// How long the previous secret keeps signing after a rotation.
pub const WEBHOOK_SECRET_OVERLAP_MS: i64 = 24 * 60 * 60 * 1000;

/// What happened to the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEventType {
    /// A worker took the job.
    Acquired,
    /// The job completed; the body carries its video by link.
    Completed,
    /// The job failed for good; the body carries the reason.
    Failed,
    /// The job was cancelled (queued, or stopped by a forced cancel).
    Cancelled,
    /// Re-queued after an attempt was lost (worker gone, retryable failure).
    Retried,
}

impl WebhookEventType {
    /// Every event type: what [`WebhookEventType::parse`] goes through.
    pub const ALL: [WebhookEventType; 5] = [
        WebhookEventType::Acquired,
        WebhookEventType::Completed,
        WebhookEventType::Failed,
        WebhookEventType::Cancelled,
        WebhookEventType::Retried,
    ];

    /// The `snake_case` name: the body's `eventType` and the stored `event_type`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEventType::Acquired => "acquired",
            WebhookEventType::Completed => "completed",
            WebhookEventType::Failed => "failed",
            WebhookEventType::Cancelled => "cancelled",
            WebhookEventType::Retried => "retried",
        }
    }

    /// The type named by [`WebhookEventType::as_str`]; `None` for any other text.
    pub fn parse(s: &str) -> Option<WebhookEventType> {
        WebhookEventType::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the job looked like when the event happened (stored as JSON with the event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookSnapshot {
    /// The catalog model the job was created under.
    pub model_id: String,
    /// The lease holder, or the last one when the transition ended the lease.
    pub worker_name: Option<String>,
    /// When that lease ran or runs out, ms since the epoch.
    pub lease_expiry_ms: Option<i64>,
    /// When a worker last claimed the job, ms since the epoch.
    pub acquired_at_ms: Option<i64>,
    /// When the transition happened, ms since the epoch.
    pub updated_at_ms: i64,
    /// The client-facing reason (never the admin-only detail).
    pub error: Option<String>,
    /// The video, for `completed`.
    pub result: Option<JobResult>,
}

impl WebhookSnapshot {
    /// The job after a transition at `now_ms`; the worker and lease come from `before`
    /// when the transition cleared them (a completion still names its worker).
    pub(crate) fn of(before: &JobRecord, after: &JobRecord, now_ms: i64) -> Self {
        Self {
            model_id: after.model_id.clone(),
            worker_name: after
                .lease_owner
                .clone()
                .or_else(|| before.lease_owner.clone()),
            lease_expiry_ms: after.lease_expires_at_ms.or(before.lease_expires_at_ms),
            acquired_at_ms: after.started_at_ms,
            updated_at_ms: now_ms,
            error: after.error.clone(),
            result: after.result.clone(),
        }
    }
}

/// One event in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// `msg_<uuid v7>`: the Standard Webhooks `webhook-id`, the same on every try.
    pub id: String,
    /// Outbox order (a job's events in the order they happened).
    pub seq: i64,
    /// The job it reports on.
    pub job_id: Uuid,
    /// The job's API key: its secrets sign the delivery.
    pub owner_key_id: String,
    /// The job's `webhook_url` when the event was written.
    pub url: String,
    /// What happened.
    pub event_type: WebhookEventType,
    /// The job as of the event, so retries send the same body.
    pub snapshot: WebhookSnapshot,
    /// Delivery tries made so far.
    pub attempts: u32,
    /// When the event was written, ms since the epoch.
    pub created_at_ms: i64,
}

/// Where an event's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookState {
    /// Not delivered yet; another try is due at `next_attempt_at_ms`.
    Pending,
    /// A try got a 2xx.
    Delivered,
    /// No more tries: a 410, or the last attempt failed.
    GaveUp,
}

impl WebhookState {
    /// The `snake_case` name, as stored and listed.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookState::Pending => "pending",
            WebhookState::Delivered => "delivered",
            WebhookState::GaveUp => "gave_up",
        }
    }

    /// The state named by [`WebhookState::as_str`]; `None` for any other text.
    pub fn parse(s: &str) -> Option<WebhookState> {
        [
            WebhookState::Pending,
            WebhookState::Delivered,
            WebhookState::GaveUp,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// An event with its delivery state (`GET …/webhooks`).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEventRecord {
    /// The event itself.
    pub event: WebhookEvent,
    /// Where its delivery stands.
    pub state: WebhookState,
    /// The HTTP status of the last try; `None` before one or when none answered.
    pub last_status: Option<u16>,
    /// Why the last try failed (at most 1024 characters).
    pub last_error: Option<String>,
    /// When the next try is due (`None` once delivered or given up).
    pub next_attempt_at_ms: Option<i64>,
}

/// The end of one delivery try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAttempt {
    /// A 2xx.
    Delivered {
        /// The receiver's 2xx status.
        status: u16,
    },
    /// Try again at `next_at_ms`.
    Retry {
        /// The receiver's status; `None` when it did not answer.
        status: Option<u16>,
        /// Why it failed (kept to 1024 characters).
        error: String,
        /// When the next try is due, ms since the epoch.
        next_at_ms: i64,
    },
    /// No more tries (410, or the last attempt failed).
    GaveUp {
        /// The receiver's status; `None` when it did not answer.
        status: Option<u16>,
        /// Why it failed (kept to 1024 characters).
        error: String,
    },
}

impl WebhookAttempt {
    /// The columns the attempt sets: (state, last_status, last_error, next_attempt_at).
    pub(crate) fn columns(&self) -> (WebhookState, Option<i64>, Option<String>, Option<i64>) {
        match self {
            WebhookAttempt::Delivered { status } => (
                WebhookState::Delivered,
                Some(i64::from(*status)),
                None,
                None,
            ),
            WebhookAttempt::Retry {
                status,
                error,
                next_at_ms,
            } => (
                WebhookState::Pending,
                status.map(i64::from),
                Some(bounded_error(error)),
                Some(*next_at_ms),
            ),
            WebhookAttempt::GaveUp { status, error } => (
                WebhookState::GaveUp,
                status.map(i64::from),
                Some(bounded_error(error)),
                None,
            ),
        }
    }
}

/// Longest delivery error kept (a receiver's text can be anything).
const MAX_ERROR_CHARS: usize = 1024;

fn bounded_error(error: &str) -> String {
    error.chars().take(MAX_ERROR_CHARS).collect()
}

/// The signing secrets of one API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSecrets {
    /// `whsec_` + base64 of 32 random bytes.
    pub current: String,
    /// The secret before the last rotation, only while that was less than 24 h ago.
    pub previous: Option<String>,
}

/// The columns [`secrets_from_row`] reads from `webhook_secrets`.
pub(crate) const SECRET_COLUMNS: &str = "secret, previous_secret, previous_until_ms";

/// Reads a key's secrets from either backend's row of [`SECRET_COLUMNS`]: the previous
/// secret counts only until its overlap ends (`previous_until_ms`, checked at `now`).
pub(crate) fn secrets_from_row<'r, R>(row: &'r R, now: i64) -> Result<WebhookSecrets>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let previous: Option<String> = row.try_get("previous_secret")?;
    let until: Option<i64> = row.try_get("previous_until_ms")?;
    Ok(WebhookSecrets {
        current: row.try_get("secret")?,
        previous: previous.filter(|_| until.is_some_and(|u| now < u)),
    })
}

/// A new `whsec_…` secret from the OS-seeded CSPRNG (`ThreadRng`).
pub(crate) fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A new event id (`msg_` + UUID v7, so ids sort by creation).
pub(crate) fn new_event_id() -> String {
    format!("msg_{}", Uuid::now_v7().simple())
}

pub(crate) fn snapshot_json(snapshot: &WebhookSnapshot) -> Result<String> {
    serde_json::to_string(snapshot).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Columns of `webhook_events` in the shape [`record_from_row`] reads; `{job_id}` is the
/// backend's text form of the job id.
pub(crate) const EVENT_COLUMNS_TAIL: &str = "seq, id, owner_key_id, url, event_type, snapshot, \
     attempts, created_at_ms, state, last_status, last_error, next_attempt_at_ms";

/// Reads an event (with its state) from either backend's row.
pub(crate) fn record_from_row<'r, R>(row: &'r R) -> Result<WebhookEventRecord>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: Decode<'r, R::Database> + Type<R::Database>,
    Option<i64>: Decode<'r, R::Database> + Type<R::Database>,
{
    let corrupt = |what: &str, v: &str| StoreError::Corrupt(format!("webhook {what}: {v:?}"));
    let job_id: String = row.try_get("job_id")?;
    let event_type: String = row.try_get("event_type")?;
    let snapshot: String = row.try_get("snapshot")?;
    let state: String = row.try_get("state")?;
    let attempts: i64 = row.try_get("attempts")?;
    let last_status: Option<i64> = row.try_get("last_status")?;
    Ok(WebhookEventRecord {
        event: WebhookEvent {
            id: row.try_get("id")?,
            seq: row.try_get("seq")?,
            job_id: Uuid::parse_str(&job_id).map_err(|_| corrupt("job id", &job_id))?,
            owner_key_id: row.try_get("owner_key_id")?,
            url: row.try_get("url")?,
            event_type: WebhookEventType::parse(&event_type)
                .ok_or_else(|| corrupt("event type", &event_type))?,
            snapshot: serde_json::from_str(&snapshot)
                .map_err(|e| corrupt("snapshot", &e.to_string()))?,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            created_at_ms: row.try_get("created_at_ms")?,
        },
        state: WebhookState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        last_status: last_status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get("last_error")?,
        next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_shaped() {
        let a = generate_secret();
        let b = generate_secret();
        assert_ne!(a, b);
        let raw = a.strip_prefix("whsec_").unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap_or_default();
        assert_eq!(bytes.len(), 32);
    }

    #[test]
    fn event_types_round_trip() {
        for t in WebhookEventType::ALL {
            assert_eq!(WebhookEventType::parse(t.as_str()), Some(t));
            assert_eq!(
                serde_json::to_value(t).unwrap_or_default(),
                serde_json::json!(t.as_str())
            );
        }
    }
}
