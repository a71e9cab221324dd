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
    ClaimRequest, JobRecord, JobResult, JobState, LeaseRef, ProgressUpdate, StoreError,
};
use pipelet_worker::JobSource;
use serde::Deserialize;
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

fn lease_error(e: StoreError) -> ApiError {
    match e {
        StoreError::LeaseLost => ApiError::Conflict {
            detail: "lease lost: the job was re-queued, given to another worker, cancelled or already finished; drop it".into(),
            body: serde_json::json!({ "lease_lost": true }),
        },
        StoreError::NotFound => ApiError::NotFound("no such job".into()),
        other => other.into(),
    }
}

fn job_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::NotFound("no such job".into()))
}

/// The job if `token` is its current lease, else the lease-lost conflict.
async fn leased(state: &AppState, id: Uuid, token: i64) -> Result<JobRecord, ApiError> {
    match state.store.get_job(id).await? {
        Some(job) if job.state == JobState::Running && job.lease_token == token => Ok(job),
        Some(_) => Err(lease_error(StoreError::LeaseLost)),
        None => Err(lease_error(StoreError::NotFound)),
    }
}

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
    let claimed = tokio::select! {
        claimed = state.jobs.claim(&req, wait) => claimed,
        // Long polls must not hold up a graceful shutdown.
        () = state.shutdown.cancelled() => Ok(None),
    };
    let assignment = claimed.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let Some(job) = assignment else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    Ok(Json(ClaimedJob {
        job_id: job.lease.job_id.to_string(),
        lease_token: job.lease.token,
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

pub async fn heartbeat(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    require_worker(&principal)?;
    let lease = LeaseRef {
        job_id: job_id(&id)?,
        token: body.lease_token,
    };
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

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    lease_token: i64,
}

pub async fn input(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TokenQuery>,
) -> Result<Response, ApiError> {
    require_worker(&principal)?;
    let job = leased(&state, job_id(&id)?, q.lease_token).await?;
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

/// Streams the MP4 into the blob store under a key of this lease, never holding it whole.
pub async fn upload_result(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<TokenQuery>,
    body: Body,
) -> Result<Json<UploadAnswer>, ApiError> {
    require_worker(&principal)?;
    let id = job_id(&id)?;
    leased(&state, id, q.lease_token).await?;
    let limit = state.config.max_result_bytes;
    let key = Blobs::result_key(id, q.lease_token);
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

pub async fn complete(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<StatusCode, ApiError> {
    require_worker(&principal)?;
    let id = job_id(&id)?;
    leased(&state, id, body.lease_token).await?;
    let key = Blobs::result_key(id, body.lease_token);
    let bytes = state
        .blobs
        .size(&key)
        .await
        .map_err(|_| ApiError::Conflict {
            detail: "no result was uploaded for this lease: PUT the MP4 to .../result first".into(),
            body: serde_json::json!({}),
        })?;
    let result = JobResult {
        blob: key,
        bytes,
        width: body.width,
        height: body.height,
        frames: body.frames,
        fps: body.fps,
        backend: body.backend,
        run_seconds: body.run_seconds,
    };
    let lease = LeaseRef {
        job_id: id,
        token: body.lease_token,
    };
    state
        .store
        .complete(&lease, &result)
        .await
        .map_err(lease_error)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn fail(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<FailBody>,
) -> Result<StatusCode, ApiError> {
    require_worker(&principal)?;
    let lease = LeaseRef {
        job_id: job_id(&id)?,
        token: body.lease_token,
    };
    // Bounded: this text is shown to clients.
    let error: String = body.error.chars().take(2000).collect();
    state
        .store
        .fail(&lease, &error, body.retryable)
        .await
        .map_err(lease_error)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn cancelled(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<LeaseBody>,
) -> Result<StatusCode, ApiError> {
    require_worker(&principal)?;
    let lease = LeaseRef {
        job_id: job_id(&id)?,
        token: body.lease_token,
    };
    state
        .store
        .ack_cancelled(&lease)
        .await
        .map_err(lease_error)?;
    Ok(StatusCode::NO_CONTENT)
}
