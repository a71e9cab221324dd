//! Liveness and readiness: no key needed, and cheap.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::state::AppState;

pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Ready when the store answers.
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    match state.store.count_keys().await {
        Ok(_) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unavailable", "detail": format!("store: {e}") })),
        ),
    }
}

/// Prometheus text. Open by default; `--metrics-require-key` asks for any valid key.
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
