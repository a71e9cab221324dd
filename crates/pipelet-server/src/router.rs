//! The router: which path goes to which handler, and the layers every request passes:
//! a request id (propagated to the response and put in the trace span), tracing, the
//! body limit, and a panic guard that still answers JSON.

use std::any::Any;

use crate::routes::admin_keys;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::routes::{health, queue, worker_api};
use crate::state::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::Internal("a handler panicked".into()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound(
        "no such endpoint; the API is POST /queue/{model_id}, GET .../requests/{id}/status, \
         PUT .../requests/{id}/cancel and GET .../requests/{id}"
            .into(),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::coded(
        pipelet_api::ErrorCode::MethodNotAllowed,
        "method not allowed here: create is POST, status and result are GET, cancel is PUT",
    )
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let api = Router::new()
        .route("/queue/{model_id}", post(queue::create))
        .route("/queue/{model_id}/requests/{id}", get(queue::result))
        .route("/queue/{model_id}/requests/{id}/status", get(queue::status))
        .route(
            "/queue/{model_id}/requests/{id}/status/stream",
            crate::routes::stream::route(),
        )
        .route("/queue/{model_id}/requests/{id}/cancel", put(queue::cancel))
        .route(
            "/queue/{model_id}/requests/{id}/video.mp4",
            get(crate::routes::files::video),
        )
        .route("/files/{file}", get(crate::routes::files::download))
        .route(
            "/queue/{model_id}/requests/{id}/webhooks",
            get(crate::routes::webhooks::events),
        )
        .route("/webhooks/secret", get(crate::routes::webhooks::secret))
        .route(
            "/webhooks/secret/rotate",
            post(crate::routes::webhooks::rotate),
        )
        .route("/worker/v1/claim", post(worker_api::claim))
        .route(
            "/worker/v1/jobs/{id}/heartbeat",
            post(worker_api::heartbeat),
        )
        .route("/worker/v1/jobs/{id}/input", get(worker_api::input))
        .route(
            "/worker/v1/jobs/{id}/result",
            put(worker_api::upload_result).layer(DefaultBodyLimit::disable()),
        )
        .route("/worker/v1/jobs/{id}/complete", post(worker_api::complete))
        .route("/worker/v1/jobs/{id}/fail", post(worker_api::fail))
        .route(
            "/worker/v1/jobs/{id}/cancelled",
            post(worker_api::cancelled),
        )
        .route(
            "/admin/v1/keys",
            get(admin_keys::list).post(admin_keys::create),
        )
        .route(
            "/admin/v1/keys/{name}",
            axum::routing::patch(admin_keys::update).delete(admin_keys::revoke),
        )
        .route("/admin/v1/keys/{name}/rotate", post(admin_keys::rotate))
        .route("/admin/v1/usage", get(crate::routes::usage::all))
        .route("/usage", get(crate::routes::usage::own))
        .route("/metrics", get(health::metrics))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/requests", get(crate::routes::history::list))
        .route("/models", get(crate::routes::models::list))
        .route("/", get(crate::routes::playground::page))
        .route("/docs", get(crate::routes::docs::page))
        .route("/favicon.ico", get(crate::routes::favicon::icon))
        .route("/openapi.json", get(crate::routes::docs::openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state);
    api.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .layer(CatchPanicLayer::custom(panic_response)),
    )
}
