//! The one place where errors become HTTP responses: every error is JSON with a
//! `detail` a person can act on, and only server faults are 5xx.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pipelet_api::InputError;
use pipelet_store::StoreError;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{}", .0.detail)]
    Invalid(InputError),
    /// Well-formed JSON of the wrong shape (outside the validated create body).
    #[error("{0}")]
    Unprocessable(String),
    /// The request conflicts with the job's state; the body carries that state.
    #[error("{detail}")]
    Conflict {
        detail: String,
        body: serde_json::Value,
    },
    #[error("{detail}")]
    TooManyRequests {
        detail: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Unavailable(String),
    /// The result existed but retention deleted it (410).
    #[error("{0}")]
    Gone(String),
    /// The data dir's disk (or the database's) is full (507).
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Invalid(_) | ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A create refused because the disk is full: nothing was stored.
    pub fn disk_full_on_create() -> ApiError {
        ApiError::InsufficientStorage(DISK_FULL_ON_CREATE.into())
    }

    pub fn request_not_found() -> ApiError {
        ApiError::NotFound(
            "request not found: no request with this id was made with this key under this model"
                .into(),
        )
    }
}

/// The 507 `detail` of a create on a full disk.
pub const DISK_FULL_ON_CREATE: &str = "the server's disk is full; creates are refused until \
    space is freed; status, results and cancels still work";

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_disk_full() {
            return ApiError::InsufficientStorage(
                "the server's disk is full; this cannot be stored until space is freed".into(),
            );
        }
        match e {
            StoreError::NotFound => ApiError::request_not_found(),
            StoreError::Closed => ApiError::Unavailable("the server is shutting down".into()),
            // The database is unreachable: a retry later can succeed, so 503, not 500.
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_),
            ) => ApiError::Unavailable(
                "the database is unavailable right now; retry in a few seconds".into(),
            ),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = match self {
            ApiError::Invalid(e) => {
                let mut body = json!({ "detail": e.detail });
                if let Some(field) = e.field {
                    body["field"] = json!(field);
                }
                (status, Json(body)).into_response()
            }
            ApiError::Conflict { detail, mut body } => {
                body["detail"] = json!(detail);
                (status, Json(body)).into_response()
            }
            // Internal details stay in the log; the client gets a stable message.
            ApiError::Internal(_) => (
                status,
                Json(
                    json!({ "detail": "internal server error; the operator's log has the cause" }),
                ),
            )
                .into_response(),
            ApiError::TooManyRequests {
                ref detail,
                retry_after_secs,
            } => {
                let mut r = (status, Json(json!({ "detail": detail }))).into_response();
                if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            other => (status, Json(json!({ "detail": other.to_string() }))).into_response(),
        };
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"pipelet\""),
            );
        }
        response
    }
}
