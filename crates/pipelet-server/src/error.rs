//! The one place where errors become HTTP responses: every error is JSON with a
//! `detail` a person can act on and a stable `code` from pipelet-api's [`ErrorCode`]
//! table, and only server faults are 5xx.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pipelet_api::{ErrorCode, InputError};
use pipelet_store::StoreError;
use serde_json::json;

/// An error answered to a client. Each variant has one [`ErrorCode`] (or carries one),
/// and the code decides the HTTP status, so the status, the body's `code` and the
/// `docs/errors.md` table cannot disagree.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `unauthorized` (401).
    #[error("{0}")]
    Unauthorized(String),
    /// `forbidden` (403).
    #[error("{0}")]
    Forbidden(String),
    /// `not_found` (404): an endpoint, job, file or link target.
    #[error("{0}")]
    NotFound(String),
    /// `bad_request` (400).
    #[error("{0}")]
    BadRequest(String),
    /// `payload_too_large` (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A validation failure (422) with its own code, and the field at fault.
    #[error("{}", .0.detail)]
    Invalid(InputError),
    /// `invalid_input` (422): well-formed JSON of the wrong shape (outside the validated
    /// create body).
    #[error("{0}")]
    Unprocessable(String),
    /// The request conflicts with the job's state (409); the body carries that state.
    #[error("{detail}")]
    Conflict {
        /// Which conflict, e.g. `not_cancellable` or `lease_lost`.
        code: ErrorCode,
        /// The human-readable message, sent as the body's `detail`.
        detail: String,
        /// Extra fields merged into the JSON body (an object; anything else is dropped).
        body: serde_json::Value,
    },
    /// 429 with a `Retry-After` header.
    #[error("{detail}")]
    TooManyRequests {
        /// Why the request was refused, e.g. `queue_full`.
        code: ErrorCode,
        /// The human-readable message, sent as the body's `detail`.
        detail: String,
        /// Seconds sent in the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// 429 for a key past one of its quotas, with `Retry-After` and the IETF
    /// `RateLimit-Limit` / `RateLimit-Remaining` / `RateLimit-Reset` headers.
    #[error("{detail}")]
    RateLimited {
        /// Which quota, e.g. `key_queue_full` or `key_rate_limited`.
        code: ErrorCode,
        /// The human-readable message naming the limit, sent as the body's `detail`.
        detail: String,
        /// Seconds sent in the `Retry-After` header.
        retry_after_secs: u64,
        /// Where the key stands against the limit it hit.
        limit: crate::quotas::RateLimit,
    },
    /// `unavailable` (503): retry shortly.
    #[error("{0}")]
    Unavailable(String),
    /// `result_expired` (410): the result existed but retention deleted it.
    #[error("{0}")]
    Gone(String),
    /// `disk_full` (507): the data dir's disk (or the database's) is full.
    #[error("{0}")]
    InsufficientStorage(String),
    /// `internal` (500): the cause goes to the log, not to the client.
    #[error("internal error: {0}")]
    Internal(String),
    /// Any other code, with no extra fields (e.g. `request_not_found`, `unknown_model`).
    #[error("{detail}")]
    Coded {
        /// The body's `code`; its HTTP status comes from the code table.
        code: ErrorCode,
        /// The human-readable message, sent as the body's `detail`.
        detail: String,
    },
}

impl ApiError {
    /// The machine-readable code of the body.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Unauthorized(_) => ErrorCode::Unauthorized,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::Invalid(e) => e.code,
            ApiError::Unprocessable(_) => ErrorCode::InvalidInput,
            ApiError::Conflict { code, .. }
            | ApiError::TooManyRequests { code, .. }
            | ApiError::RateLimited { code, .. }
            | ApiError::Coded { code, .. } => *code,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Gone(_) => ErrorCode::ResultExpired,
            ApiError::InsufficientStorage(_) => ErrorCode::DiskFull,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The HTTP status: the code's, from the table.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// An error with `code` and no extra fields.
    pub fn coded(code: ErrorCode, detail: impl Into<String>) -> ApiError {
        ApiError::Coded {
            code,
            detail: detail.into(),
        }
    }

    /// A create refused because the disk is full: nothing was stored.
    pub fn disk_full_on_create() -> ApiError {
        ApiError::InsufficientStorage(DISK_FULL_ON_CREATE.into())
    }

    /// The 404 for a request id that is unknown, not the caller's, or under another
    /// model: one answer for all three, so ids of other keys' jobs cannot be probed.
    pub fn request_not_found() -> ApiError {
        ApiError::coded(
            ErrorCode::RequestNotFound,
            "request not found: no request with this id was made with this key under this model",
        )
    }

    /// Worker API: the lease token is stale; the worker must drop the job.
    pub fn lease_lost() -> ApiError {
        ApiError::Conflict {
            code: ErrorCode::LeaseLost,
            detail: "lease lost: the job was re-queued, given to another worker, cancelled or \
                     already finished; drop it"
                .into(),
            body: json!({ "lease_lost": true }),
        }
    }
}

/// The 507 `detail` of a create on a full disk.
pub const DISK_FULL_ON_CREATE: &str = "the server's disk is full; creates are refused until \
    space is freed; status, results and cancels still work";

/// Every store error has its answer here; there is deliberately no catch-all arm, so a
/// new `StoreError` variant fails to compile until it is given one.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_disk_full() {
            return ApiError::InsufficientStorage(
                "the server's disk is full; this cannot be stored until space is freed".into(),
            );
        }
        // The database is unreachable or refused this once: a retry later can succeed.
        if e.is_transient() {
            return ApiError::Unavailable(
                "the database is unavailable right now; retry in a few seconds".into(),
            );
        }
        match e {
            StoreError::NotFound => ApiError::request_not_found(),
            StoreError::LeaseLost => ApiError::lease_lost(),
            // Only acknowledging a cancel nobody requested refuses with this; the lease
            // is still valid.
            StoreError::InvalidState(state) => ApiError::Conflict {
                code: ErrorCode::CancelNotRequested,
                detail: format!(
                    "the job is {state} and no cancel was requested: report `cancelled` only \
                     after a heartbeat answered cancel_requested; the lease is still yours, so \
                     finish or fail the job"
                ),
                body: json!({ "lease_lost": false }),
            },
            StoreError::TooLarge(limit) => {
                ApiError::PayloadTooLarge(format!("larger than the limit of {limit} bytes"))
            }
            StoreError::Closed => ApiError::Unavailable("the server is shutting down".into()),
            StoreError::KeyNotFound(name) => ApiError::coded(
                ErrorCode::KeyNotFound,
                format!("no live key is named '{name}' (see GET /admin/v1/keys)"),
            ),
            StoreError::KeyNameTaken(name) => ApiError::coded(
                ErrorCode::KeyNameTaken,
                format!("a live key is already named '{name}'; revoke it or choose another name"),
            ),
            StoreError::KeyQueueFull { limit, own } => crate::quotas::queue_full(limit, own),
            e @ (StoreError::Database(_)
            | StoreError::Migrate(_)
            | StoreError::Corrupt(_)
            | StoreError::Blob(_)
            | StoreError::Io(_)
            | StoreError::Config(_)) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        if status.is_server_error() {
            tracing::error!(error = %self, code = code.as_str(), "request failed");
        }
        let mut retry_after = None;
        let mut rate_limit = None;
        let body = match self {
            ApiError::Invalid(e) => {
                let mut body = json!({ "detail": e.detail, "code": code });
                if let Some(field) = e.field {
                    body["field"] = json!(field);
                }
                body
            }
            ApiError::Conflict {
                detail, mut body, ..
            } => {
                if !body.is_object() {
                    body = json!({});
                }
                body["detail"] = json!(detail);
                body["code"] = json!(code);
                body
            }
            // Internal details stay in the log; the client gets a stable message.
            ApiError::Internal(_) => json!({
                "detail": "internal server error; the operator's log has the cause",
                "code": code,
            }),
            ApiError::TooManyRequests {
                detail,
                retry_after_secs,
                ..
            } => {
                retry_after = Some(retry_after_secs);
                json!({ "detail": detail, "code": code })
            }
            ApiError::RateLimited {
                detail,
                retry_after_secs,
                limit,
                ..
            } => {
                retry_after = Some(retry_after_secs);
                rate_limit = Some(limit);
                json!({ "detail": detail, "code": code })
            }
            other => json!({ "detail": other.to_string(), "code": code }),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(v) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if let Some(limit) = rate_limit {
            limit.add_headers(response.headers_mut());
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pipelet\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_answers_its_codes_status() {
        let cases = [
            (ApiError::Unauthorized("x".into()), 401),
            (ApiError::Forbidden("x".into()), 403),
            (ApiError::NotFound("x".into()), 404),
            (ApiError::request_not_found(), 404),
            (ApiError::BadRequest("x".into()), 400),
            (ApiError::PayloadTooLarge("x".into()), 413),
            (ApiError::Unprocessable("x".into()), 422),
            (ApiError::lease_lost(), 409),
            (ApiError::Unavailable("x".into()), 503),
            (ApiError::Gone("x".into()), 410),
            (ApiError::disk_full_on_create(), 507),
            (ApiError::Internal("x".into()), 500),
        ];
        for (e, status) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
        }
    }

    #[test]
    fn store_errors_map_to_codes() {
        let code = |e: StoreError| ApiError::from(e).code();
        assert_eq!(code(StoreError::NotFound), ErrorCode::RequestNotFound);
        assert_eq!(code(StoreError::LeaseLost), ErrorCode::LeaseLost);
        assert_eq!(code(StoreError::Closed), ErrorCode::Unavailable);
        assert_eq!(code(StoreError::Corrupt("x".into())), ErrorCode::Internal);
        assert_eq!(code(StoreError::TooLarge(5)), ErrorCode::PayloadTooLarge);
        let enospc = std::io::Error::from_raw_os_error(28);
        assert_eq!(code(StoreError::Io(enospc)), ErrorCode::DiskFull);
    }
}
