//! Live status: `GET /queue/{model_id}/requests/{id}/status/stream`, as Server-Sent
//! Events. Same key rules as the status endpoint (404 for a request the key may not
//! see), and each event carries exactly the status endpoint's JSON.
//!
//! The wire format:
//!
//! - `event: status` with the status JSON as `data`, sent at once and then whenever
//!   anything a client sees changes: the status, `queue_position`, the progress, the
//!   messages. The estimates (`estimated_total_time_seconds`, also in `statusMessages`,
//!   and `estimated_start_seconds`) alone do not count as a change (they move with the
//!   clock); they ride along with the next real one.
//! - after a terminal status (`COMPLETED`, `FAILED`, `CANCELLED`) the stream ends.
//! - `event: error` with `{"detail": ...}` when the request can no longer be read; the
//!   stream then ends (poll the status URL instead).
//! - `event: end` with `{"reason": "shutdown", "detail": ...}` when the server shuts
//!   down; the stream ends so that it does not hold up a graceful shutdown.
//! - comment lines (`: keepalive`) every [`KEEPALIVE_INTERVAL`] while nothing changes,
//!   so proxies and clients can tell a quiet stream from a dead one.
//!
//! How changes are found: each stream reads its job from the store every
//! [`POLL_INTERVAL`] and sends an event only when the JSON differs. A store-level change
//! notification would save those reads, but it could not see every change: with a shared
//! PostgreSQL store, jobs are claimed and advanced through other servers, so only the
//! store itself knows; and in-process workers report progress a few times a second
//! anyway. One read by primary key (the queue position comes from memory) costs tens of
//! microseconds, and at most [`MAX_CONCURRENT_STREAMS`] streams are open at once, so
//! the worst case stays around a thousand cheap reads a second. Beyond the bound a new
//! stream gets 429 and the client can poll the status URL instead.
//!
//! `EventSource` cannot send an `Authorization` header; browsers read the stream with
//! `fetch` instead (as the playground does). Clients that do use `EventSource` through
//! a proxy that adds the header should close it after a terminal status, or it
//! reconnects.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderName;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use futures::StreamExt;
use pipelet_store::JobRecord;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::routes::queue;
use crate::state::AppState;
use crate::status_view;
use crate::urls::BaseUrl;

/// Live status streams open at once, per server; more get 429.
pub const MAX_CONCURRENT_STREAMS: usize = 256;
/// How often an open stream looks at its job.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long a stream may stay silent before a keepalive comment.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
/// What the first event tells an `EventSource` to wait before reconnecting.
const CLIENT_RETRY: Duration = Duration::from_secs(2);
/// Asks nginx and similar proxies not to buffer the stream.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The route with the default bound of [`MAX_CONCURRENT_STREAMS`].
pub fn route() -> MethodRouter<AppState> {
    route_with_limit(MAX_CONCURRENT_STREAMS)
}

/// The route with its own bound of `limit` concurrent streams.
pub fn route_with_limit(limit: usize) -> MethodRouter<AppState> {
    let slots = Arc::new(Semaphore::new(limit));
    get(
        move |state: State<AppState>,
              principal: Principal,
              base: BaseUrl,
              path: Result<Path<(String, String)>, PathRejection>,
              query: Result<Query<StreamQuery>, QueryRejection>| {
            status_stream(slots.clone(), limit, state, principal, base, path, query)
        },
    )
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// As on the status endpoint: `?logs=1` fills `logs`.
    #[serde(default)]
    logs: Option<String>,
}

/// Watch a request's status live
///
/// Server-Sent Events. `event: status` carries exactly the status endpoint's JSON
/// (a `StatusResponse`), sent at once and then whenever anything a client sees changes;
/// the stream ends after a terminal status. `event: error` (`{"detail": ...}`) ends it when
/// the request can no longer be read, and `event: end` (`{"reason": "shutdown", ...}`)
/// when the server shuts down: poll the status URL then. `: keepalive` comments come every
/// 15 s while nothing changes. `EventSource` cannot send an `Authorization` header: read
/// the stream with `fetch` (or any HTTP client).
#[utoipa::path(
    get,
    path = "/queue/{model_id}/requests/{id}/status/stream",
    tag = "queue",
    operation_id = "status_stream",
    params(crate::openapi::RequestPath, StreamQuery),
    responses(
        (status = 200, description = "A `text/event-stream` of `status` events, each with a \
            `StatusResponse` as its JSON data.", content_type = "text/event-stream",
            body = String, example = json!(concat!(
                "event: status\n",
                "data: {\"status\":\"IN_QUEUE\",\"queue_position\":0,\"statusMessages\":{},",
                "\"response_url\":\"http://127.0.0.1:8080/queue/wan22-fast-t2v/requests/",
                "9b2f5d1e-3c4a-4e8b-a1f0-5d6c7b8a9e01\",",
                "\"request_id\":\"9b2f5d1e-3c4a-4e8b-a1f0-5d6c7b8a9e01\",\"logs\":null}\n",
                "retry: 2000\n\n",
            ))),
        (status = 400, description = "A malformed query.", body = pipelet_api::wire::ErrorBody),
        (status = 401, description = "Missing, malformed or unknown API key.",
            body = pipelet_api::wire::ErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Bearer realm=\"pipelet\"`"))),
        (status = 403, description = "A worker key: worker keys can only use the worker API.",
            body = pipelet_api::wire::ErrorBody),
        (status = 404, description = "No request with this id under this model that this key \
            may see.", body = pipelet_api::wire::ErrorBody),
        (status = 429, description = "Too many live streams are open on this server; poll the \
            status URL instead.", body = pipelet_api::wire::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."))),
    ),
    security(("bearer" = [])),
)]
async fn status_stream(
    slots: Arc<Semaphore>,
    limit: usize,
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    // A path that does not even decode names no request: 404, like any unknown id.
    let Path((model_id, id)) = path.map_err(|_| ApiError::request_not_found())?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (job, position) = queue::visible_job(&state, &principal, &model_id, &id).await?;
    let permit = slots
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManyRequests {
            code: pipelet_api::ErrorCode::RateLimited,
            detail: format!(
                "too many live status streams are open ({limit}); poll the status URL \
                 instead, or try the stream again later"
            ),
            retry_after_secs: 5,
        })?;
    let watch = Watch {
        job_id: job.id,
        state,
        base,
        viewer: status_view::Viewer::of(&principal),
        with_logs: queue::truthy(&query.logs),
        pending: Some((job, position)),
        last: None,
        first: true,
        done: false,
        _permit: permit,
    };
    let events = futures::stream::unfold(watch, Watch::next).map(Ok::<Event, Infallible>);
    let sse = Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(KEEPALIVE_INTERVAL)
            .text("keepalive"),
    );
    Ok(([(X_ACCEL_BUFFERING, "no")], sse).into_response())
}

/// One open stream: what it watches and what it last sent.
struct Watch {
    state: AppState,
    job_id: Uuid,
    base: BaseUrl,
    /// Admins also see a failure's internal detail.
    viewer: status_view::Viewer,
    with_logs: bool,
    /// A status already read (the handler's own read), to send before polling.
    pending: Option<(JobRecord, Option<u64>)>,
    /// The last status sent, without the clock-driven estimate.
    last: Option<String>,
    first: bool,
    done: bool,
    /// Held for the stream's life: dropping the stream frees the slot.
    _permit: OwnedSemaphorePermit,
}

impl Watch {
    /// The next event, or `None` once the stream is over.
    async fn next(mut self) -> Option<(Event, Watch)> {
        if self.done {
            return None;
        }
        loop {
            let (job, position) = match self.pending.take() {
                Some(found) => found,
                None => {
                    tokio::select! {
                        biased;
                        () = self.state.shutdown.cancelled() => {
                            return Some(self.finish(shutdown_event()));
                        }
                        () = tokio::time::sleep(POLL_INTERVAL) => {}
                    }
                    match self.state.store.job_status(self.job_id).await {
                        Ok(Some(found)) => found,
                        Ok(None) => {
                            return Some(
                                self.finish(error_event(
                                    &ApiError::request_not_found().to_string(),
                                )),
                            );
                        }
                        Err(e) => {
                            let e = ApiError::from(e);
                            tracing::warn!(id = %self.job_id, error = %e, "status stream cannot read its job");
                            let detail = if e.status().is_server_error() {
                                "cannot read the request's status right now; poll the status URL"
                                    .to_string()
                            } else {
                                e.to_string()
                            };
                            return Some(self.finish(error_event(&detail)));
                        }
                    }
                }
            };
            let response = queue::status_body(
                &self.state,
                &job,
                position,
                &self.base,
                self.with_logs,
                self.viewer,
            );
            let mut value = match serde_json::to_value(&response) {
                Ok(value) => value,
                Err(e) => {
                    tracing::error!(id = %self.job_id, error = %e, "cannot serialize a status");
                    return Some(self.finish(error_event("internal error; poll the status URL")));
                }
            };
            let data = value.to_string();
            // Estimates move with the clock: alone they are no change.
            if let Some(fields) = value.as_object_mut() {
                fields.remove("estimated_total_time_seconds");
                fields.remove("estimated_start_seconds");
                if let Some(messages) = fields
                    .get_mut("statusMessages")
                    .and_then(|m| m.as_object_mut())
                {
                    messages.remove("estimated_total_time_seconds");
                }
            }
            let fingerprint = value.to_string();
            if self.last.as_ref() == Some(&fingerprint) {
                continue;
            }
            self.last = Some(fingerprint);
            self.done = job.state.is_terminal();
            let mut event = Event::default().event("status").data(data);
            if std::mem::take(&mut self.first) {
                event = event.retry(CLIENT_RETRY);
            }
            return Some((event, self));
        }
    }

    /// Sends `event` as the stream's last.
    fn finish(mut self, event: Event) -> (Event, Watch) {
        self.done = true;
        (event, self)
    }
}

fn error_event(detail: &str) -> Event {
    Event::default()
        .event("error")
        .data(json!({ "detail": detail }).to_string())
}

fn shutdown_event() -> Event {
    Event::default().event("end").data(
        json!({
            "reason": "shutdown",
            "detail": "the server is shutting down; poll the status URL or reconnect shortly",
        })
        .to_string(),
    )
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
