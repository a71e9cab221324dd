//! The worker API (`/worker/v1`): how remote `pipelet worker` agents claim jobs, hold
//! their leases, fetch inputs, stream results in, and report. Worker keys only; every
//! call after a claim carries the lease token and a stale one changes nothing.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use pipelet_api::worker_protocol::{
    ClaimBody, ClaimedJob, CompleteBody, FailBody, HeartbeatAnswer, HeartbeatBody, LeaseBody,
    MAX_CLAIM_WAIT_MS, UploadAnswer,
};
use pipelet_store::blob::Blobs;
use pipelet_store::{
    ClaimRequest, Failure, JobRecord, Lease, LeaseRef, ProgressUpdate, StoreError,
};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;

/// Longest worker name accepted.
const MAX_WORKER_ID_CHARS: usize = 128;

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn require_worker(principal: &Principal) -> Result<(), ApiError> {
    match principal.key.role {
        pipelet_store::Role::Worker => Ok(()),
        _ => Err(ApiError::Forbidden(
            "the worker API needs a worker key: create one with `pipelet keys create --role worker`".into(),
        )),
    }
}

/// A store error on a leased job: [`ApiError`]'s conversion (lease lost, a cancel
/// nobody requested), except that an unknown job is `not_found`, not a queue request.
fn lease_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::NotFound("no such job".into()),
        other => other.into(),
    }
}

fn job_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound("no such job".into()))
}

/// The lease a call on `/worker/v1/jobs/{id}/...` names, once the caller is known to
/// hold a worker key and `id` is a job id.
fn worker_lease(principal: &Principal, id: &str, token: i64) -> Result<LeaseRef, ApiError> {
    require_worker(principal)?;
    Ok(LeaseRef {
        job_id: job_id(id)?,
        token,
    })
}

/// The job if `lease` is its current lease, else the lease-lost conflict.
async fn leased(state: &AppState, lease: &LeaseRef) -> Result<JobRecord, ApiError> {
    state.queue.leased(lease).await.map_err(lease_error)
}

/// Claim a job
///
/// Long-polls up to `wait_ms` for a queued job of one of `pipelines` (preferring the
/// `loaded` one) and leases it to this worker. Heartbeat every `heartbeat_ms` to keep the
/// lease.
#[utoipa::path(
    post,
    path = "/worker/v1/claim",
    tag = "worker",
    operation_id = "worker_claim",
    request_body = ClaimBody,
    responses(
        (status = 200, description = "A job, leased to this worker.", body = ClaimedJob),
        (status = 204, description = "No job came within `wait_ms`: ask again."),
        crate::openapi::WorkerKeyErrors,
        (status = 400, description = "The body is not JSON, `worker_id` is not 1 to 128 printable \
            characters, or `pipelines` is empty.",
            body = pipelet_api::wire::ErrorBody),
        (status = 422, description = "Well-formed JSON of the wrong shape; `detail` names \
            the field.", body = pipelet_api::wire::ErrorBody),
        (status = 503, description = "The queue cannot be read, or the server is shutting \
            down.", body = pipelet_api::wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn claim(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<ClaimBody>,
) -> Result<Response, ApiError> {
    require_worker(&principal)?;
    let name = body.worker_id.trim();
    if name.is_empty()
        || name.chars().count() > MAX_WORKER_ID_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::BadRequest(format!(
            "worker_id must be 1 to {MAX_WORKER_ID_CHARS} printable characters"
        )));
    }
    if body.pipelines.is_empty() {
        return Err(ApiError::BadRequest(
            "pipelines must name at least one of t2v, i2v".into(),
        ));
    }
    let config = &state.config;
    let req = ClaimRequest {
        worker_id: format!("worker:{}/{name}", principal.key.name),
        pipelines: body.pipelines,
        loaded: body.loaded,
        lease_ms: i64::try_from(millis(config.lease)).unwrap_or(i64::MAX),
        max_wait_for_switch_ms: i64::try_from(millis(config.max_wait_for_switch))
            .unwrap_or(i64::MAX),
    };
    let wait = std::time::Duration::from_millis(body.wait_ms.min(MAX_CLAIM_WAIT_MS));
    state.metrics.worker_seen(&req.worker_id);
    // Only the two known renderers: anything else counts tasks as Wan does.
    if let Some(backend @ ("preview" | "wan")) = body.backend.as_deref() {
        state.metrics.eta.set_backend(&req.worker_id, backend);
    }
    let claimed = tokio::select! {
        claimed = state.queue.claim_wait(&req, wait) => claimed,
        // Long polls must not hold up a graceful shutdown.
        () = state.shutdown.cancelled() => Ok(None),
    };
    let lease = claimed.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let Some(Lease { lease, job, .. }) = lease else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    Ok(Json(ClaimedJob {
        job_id: lease.job_id.to_string(),
        lease_token: lease.token,
        model_id: job.model_id,
        pipeline: job.pipeline,
        spec: job.spec,
        has_input: job.input_blob.is_some(),
        attempt: job.attempt,
        lease_ms: millis(config.lease),
        heartbeat_ms: millis(config.heartbeat),
    })
    .into_response())
}

/// Heartbeat
///
/// Extends the lease and reports progress; the answer says whether the client asked to
/// cancel (then stop and call `.../cancelled`).
#[utoipa::path(
    post,
    path = "/worker/v1/jobs/{id}/heartbeat",
    tag = "worker",
    operation_id = "worker_heartbeat",
    params(crate::openapi::JobPath),
    request_body = HeartbeatBody,
    responses(
        (status = 200, description = "The lease was extended.", body = HeartbeatAnswer),
        crate::openapi::WorkerJobErrors,
        crate::openapi::WorkerBodyErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    let lease = worker_lease(&principal, &id, body.lease_token)?;
    let progress = body.progress.map(|p| ProgressUpdate {
        done: p.done.min(p.total),
        total: p.total,
    });
    let lease_ms = i64::try_from(millis(state.config.lease)).unwrap_or(i64::MAX);
    let reply = state
        .store
        .heartbeat(&lease, progress, lease_ms)
        .await
        .map_err(lease_error)?;
    Ok(Json(HeartbeatAnswer {
        cancel_requested: reply.cancel_requested,
        lease_expires_in_ms: millis(state.config.lease),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The `lease_token` of the claim.
    lease_token: i64,
}

/// Fetch the input image
///
/// The job's input image file (image-to-video), streamed as it was uploaded.
#[utoipa::path(
    get,
    path = "/worker/v1/jobs/{id}/input",
    tag = "worker",
    operation_id = "worker_input",
    params(crate::openapi::JobPath, TokenQuery),
    responses(
        (status = 200, description = "The image file (JPEG, PNG or WebP).",
            content_type = "application/octet-stream", body = Vec<u8>),
        crate::openapi::WorkerJobErrors,
        (status = 400, description = "`lease_token` is missing or not an integer.",
            body = pipelet_api::wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn input(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TokenQuery>,
) -> Result<Response, ApiError> {
    let lease = worker_lease(&principal, &id, q.lease_token)?;
    let job = leased(&state, &lease).await?;
    let key = job
        .input_blob
        .ok_or_else(|| ApiError::NotFound("this job has no input image".into()))?;
    let (size, stream) = state.blobs.stream(&key).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Upload the result
///
/// Streams the MP4 into the blob store under a key of this lease, never holding it whole.
/// Then call `.../complete`. Bounded by `--max-result-bytes`, not by the body limit.
#[utoipa::path(
    put,
    path = "/worker/v1/jobs/{id}/result",
    tag = "worker",
    operation_id = "worker_upload_result",
    params(crate::openapi::JobPath, TokenQuery),
    request_body(content = Vec<u8>, content_type = "video/mp4",
        description = "The MP4 file (any content type is accepted)."),
    responses(
        (status = 200, description = "Stored.", body = UploadAnswer),
        crate::openapi::WorkerJobErrors,
        (status = 400, description = "`lease_token` is missing or not an integer.",
            body = pipelet_api::wire::ErrorBody),
        (status = 413, description = "The result is larger than `--max-result-bytes`.",
            body = pipelet_api::wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn upload_result(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TokenQuery>,
    body: Body,
) -> Result<Json<UploadAnswer>, ApiError> {
    let lease = worker_lease(&principal, &id, q.lease_token)?;
    leased(&state, &lease).await?;
    let limit = state.config.max_result_bytes;
    let key = Blobs::result_key(lease.job_id, lease.token);
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let bytes = state
        .blobs
        .put_stream(&key, stream, limit)
        .await
        .map_err(|e| match e {
            StoreError::TooLarge(limit) => ApiError::PayloadTooLarge(format!(
                "result is larger than the limit of {limit} bytes (--max-result-bytes)"
            )),
            other => other.into(),
        })?;
    Ok(Json(UploadAnswer { bytes }))
}

/// Complete a job
///
/// Marks the job `COMPLETED` with the MP4 uploaded under this lease.
#[utoipa::path(
    post,
    path = "/worker/v1/jobs/{id}/complete",
    tag = "worker",
    operation_id = "worker_complete",
    params(crate::openapi::JobPath),
    request_body = CompleteBody,
    responses(
        (status = 204, description = "The job is `COMPLETED`."),
        crate::openapi::WorkerJobErrors,
        crate::openapi::WorkerBodyErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn complete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<StatusCode, ApiError> {
    let lease = worker_lease(&principal, &id, body.lease_token)?;
    leased(&state, &lease).await?;
    let result = state
        .queue
        .uploaded_result(&lease, body.video)
        .await
        .ok_or_else(|| ApiError::Conflict {
            code: pipelet_api::ErrorCode::ResultNotUploaded,
            detail: "no result was uploaded for this lease: PUT the MP4 to .../result first".into(),
            body: serde_json::json!({}),
        })?;
    state
        .store
        .complete(&lease, &result)
        .await
        .map_err(lease_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fail a job
///
/// Reports that the attempt failed. A `retryable` failure re-queues the job while attempts
/// remain; otherwise the request ends `FAILED` with `error` as the reason.
#[utoipa::path(
    post,
    path = "/worker/v1/jobs/{id}/fail",
    tag = "worker",
    operation_id = "worker_fail",
    params(crate::openapi::JobPath),
    request_body = FailBody,
    responses(
        (status = 204, description = "Recorded."),
        crate::openapi::WorkerJobErrors,
        crate::openapi::WorkerBodyErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn fail(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<FailBody>,
) -> Result<StatusCode, ApiError> {
    let lease = worker_lease(&principal, &id, body.lease_token)?;
    let failure = reported_failure(&body);
    tracing::warn!(
        id = %lease.job_id,
        worker = %principal.key.name,
        reason = %failure.reason,
        detail = failure.detail.as_deref().unwrap_or(""),
        retryable = body.retryable,
        "a worker reported a failed attempt"
    );
    state
        .store
        .fail(&lease, &failure, body.retryable)
        .await
        .map_err(lease_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Most characters kept of a reported failure's client reason and of its detail.
const MAX_REASON_CHARS: usize = 2000;
const MAX_DETAIL_CHARS: usize = 8000;

/// A worker's report as the store keeps it, bounded. The reason is shown to clients, so
/// whatever in it looks internal (a path, a URL, a lease holder's name, as an older
/// worker would send) is cut out of it; the untouched text then serves as the detail.
fn reported_failure(body: &FailBody) -> Failure {
    let (reason, redacted) = client_reason(&body.error);
    let detail = body
        .detail
        .clone()
        .or_else(|| redacted.then(|| body.error.clone()));
    Failure {
        reason: reason.chars().take(MAX_REASON_CHARS).collect(),
        detail: detail.map(|d| d.chars().take(MAX_DETAIL_CHARS).collect()),
    }
}

/// `text` with every word that names something internal replaced by `…`, and whether
/// any was: absolute paths, URLs, and lease holders (`worker:...`, `local:...`).
fn client_reason(text: &str) -> (String, bool) {
    let internal = |word: &str| {
        let w = word.trim_start_matches(['(', '[', '{', '"', '\'', '`', '<']);
        let bytes = w.as_bytes();
        w.starts_with('/')
            || w.starts_with("~/")
            || w.starts_with("\\\\")
            || (bytes.len() > 2
                && bytes[0].is_ascii_alphabetic()
                && bytes[1] == b':'
                && matches!(bytes[2], b'\\' | b'/'))
            || w.contains("://")
            || w.starts_with("worker:")
            || w.starts_with("local:")
    };
    let mut redacted = false;
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|word| {
            if internal(word) {
                redacted = true;
                "…"
            } else {
                word
            }
        })
        .collect();
    if redacted {
        (words.join(" "), true)
    } else {
        (text.to_string(), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &str, detail: Option<&str>) -> FailBody {
        FailBody {
            lease_token: 1,
            error: error.into(),
            detail: detail.map(str::to_string),
            retryable: true,
        }
    }

    #[test]
    fn a_plain_reason_passes_untouched() {
        for text in [
            "out of GPU memory at 1280x720, 81 frames",
            "the input image is Gif; only JPEG, PNG and WebP are accepted",
            "image/png at 24/7: I/O",
        ] {
            let f = reported_failure(&body(text, None));
            assert_eq!(f, Failure::plain(text));
        }
        let f = reported_failure(&body("bad image", Some("decoder: /tmp/x.png")));
        assert_eq!(f, Failure::new("bad image", "decoder: /tmp/x.png"));
    }

    #[test]
    fn paths_urls_and_holders_are_cut_from_the_reason() {
        let raw = "cannot write /var/lib/pipelet/tmp/a.mp4: disk full (holder \
                   worker:gpu-1/vm-3389, see http://10.0.0.7:8080/x or C:\\data\\y)";
        let f = reported_failure(&body(raw, None));
        assert_eq!(f.reason, "cannot write … disk full (holder … see … or …");
        assert_eq!(f.detail.as_deref(), Some(raw), "the raw text is the detail");
        // A detail the worker sent wins over the raw reason.
        let f = reported_failure(&body(raw, Some("the worker's detail")));
        assert_eq!(f.detail.as_deref(), Some("the worker's detail"));
    }

    #[test]
    fn reports_are_bounded() {
        let f = reported_failure(&body(&"x".repeat(10_000), Some(&"y".repeat(20_000))));
        assert_eq!(f.reason.chars().count(), MAX_REASON_CHARS);
        assert_eq!(f.detail.map(|d| d.chars().count()), Some(MAX_DETAIL_CHARS));
    }
}

/// Acknowledge a cancel
///
/// The worker stopped after a heartbeat said `cancel_requested`: the request ends
/// `CANCELLED`.
#[utoipa::path(
    post,
    path = "/worker/v1/jobs/{id}/cancelled",
    tag = "worker",
    operation_id = "worker_cancelled",
    params(crate::openapi::JobPath),
    request_body = LeaseBody,
    responses(
        (status = 204, description = "The request is `CANCELLED`."),
        crate::openapi::WorkerJobErrors,
        crate::openapi::WorkerBodyErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn cancelled(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<LeaseBody>,
) -> Result<StatusCode, ApiError> {
    let lease = worker_lease(&principal, &id, body.lease_token)?;
    state
        .store
        .ack_cancelled(&lease)
        .await
        .map_err(lease_error)?;
    Ok(StatusCode::NO_CONTENT)
}
