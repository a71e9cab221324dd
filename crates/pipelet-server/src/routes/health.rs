//! Liveness and readiness: no key needed, and cheap.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

/// Liveness
///
/// Answers while the process runs. No key needed.
#[utoipa::path(
    get,
    path = "/health",
    tag = "ops",
    operation_id = "health",
    responses((status = 200, description = "Alive.", body = crate::openapi::Health)),
    security(()),
)]
pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness
///
/// Ready when the store answers. No key needed.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "ops",
    operation_id = "ready",
    responses(
        (status = 200, description = "Ready: the store answers.", body = crate::openapi::Ready),
        (status = 503, description = "Not ready: `status` is `unavailable` and `detail` says \
            why.", body = crate::openapi::Ready),
    ),
    security(()),
)]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.count_keys().await {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unavailable",
                "detail": format!("store: {e}"),
                "code": pipelet_api::ErrorCode::Unavailable,
            })),
        ),
    }
}

/// Prometheus metrics
///
/// Prometheus text (OpenMetrics): jobs created and finished, retries, lease expiries, wait
/// and run times, queue depths and active workers. Open by default;
/// `--metrics-require-key` asks for any valid key.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    operation_id = "metrics",
    responses(
        (status = 200, description = "The metrics.", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 401, description = "The operator requires a key (`--metrics-require-key`) \
            and it is missing, malformed or unknown.", body = pipelet_api::wire::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"pipelet\"`"))),
    ),
    security((), ("bearer" = [])),
)]
pub async fn metrics(
    State(state): State<AppState>,
    principal: Result<crate::auth::Principal, crate::error::ApiError>,
) -> Result<impl IntoResponse, crate::error::ApiError> {
    if state.config.metrics_require_key {
        principal?;
    }
    let text = state.metrics.render(state.store.as_ref()).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}
