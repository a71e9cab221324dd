//! `GET /requests`: the caller's request history, newest first, in cursor pages.

use serde::{Deserialize, Serialize};

use super::JobStatus;

/// One request in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestSummary {
    #[cfg_attr(
        feature = "openapi",
        schema(example = "9b2f5d1e-3c4a-4e8b-a1f0-5d6c7b8a9e01")
    )]
    /// The id `POST /queue/{model_id}` returned.
    pub request_id: String,
    /// The model the request was sent to.
    #[cfg_attr(feature = "openapi", schema(example = "wan22-fast-t2v"))]
    pub model_id: String,
    /// The status now, as `GET .../status` would report it.
    pub status: JobStatus,

    /// When the request was created (RFC 3339, UTC).
    #[cfg_attr(feature = "openapi", schema(example = "2026-01-01T12:00:00.000Z"))]
    pub created_at: String,
    /// When it finished (`COMPLETED`, `FAILED` or `CANCELLED`); `null` before.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub finished_at: Option<String>,
    /// Absolute URL of the result.
    pub response_url: String,
    /// Absolute URL of the status.
    pub status_url: String,
    /// Absolute URL to cancel the request with `PUT`.
    pub cancel_url: String,
}

/// `GET /requests` → 200.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestList {
    /// Newest first.
    pub requests: Vec<RequestSummary>,
    /// Pass as `?cursor=` for the next (older) page; `null` on the last page.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub next_cursor: Option<String>,
}
