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
