//! The public queue API: create, status, cancel, result. Handlers are thin: auth and
//! URL extraction, then the store and the validation in `pipelet-api`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use pipelet_api::wire::CreateResponse;
use pipelet_api::{ModelSpec, Pipeline, ValidatedCreate, validate_create};
use pipelet_store::blob::Blobs;
use pipelet_store::{CancelOutcome, CreateOutcome, Created, JobRecord, NewJob, now_ms};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::result_body::{self, FAL_REQUEST_ID};
use crate::routes::idempotency;
use crate::state::AppState;
use crate::status_view::{self, wire_status};
use crate::urls::BaseUrl;

/// The lowest request `priority` anyone may ask for (deprioritising is always allowed).
const MIN_REQUEST_PRIORITY: i64 = -1000;

fn model<'a>(state: &'a AppState, model_id: &str) -> Result<&'a ModelSpec, ApiError> {
    state.config.catalog.get(model_id).ok_or_else(|| {
        let known: Vec<&str> = state
            .config
            .catalog
            .models
            .iter()
            .map(|m| m.id.as_str())
            .collect();
        ApiError::coded(
            pipelet_api::ErrorCode::UnknownModel,
            format!(
                "unknown model '{model_id}'; available models: {}",
                known.join(", ")
            ),
        )
    })
}

fn parse_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<serde_json::Value, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!(
                "request body is larger than the limit of {limit} bytes; send a smaller image"
            ))
        } else {
            ApiError::BadRequest(format!("cannot read the request body: {rejection}"))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "request body is empty: send a JSON object such as {\"prompt\": \"a cat surfing\"}"
                .into(),
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("request body is not valid JSON: {e}")))
}

/// Validates a create body. Image decoding is CPU-heavy and can take hundreds of MB, so
/// it runs off the async threads and only a few at a time.
async fn validate(
    state: &AppState,
    model: &ModelSpec,
    body: serde_json::Value,
) -> Result<ValidatedCreate, ApiError> {
    if model.pipeline == Pipeline::T2v {
        return validate_create(model, &body, &state.config.limits).map_err(ApiError::Invalid);
    }
    let _permit = state
        .image_decodes
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("the server is shutting down".into()))?;
    let (model, limits) = (model.clone(), state.config.limits);
    tokio::task::spawn_blocking(move || validate_create(&model, &body, &limits))
        .await
        .map_err(|e| ApiError::Internal(format!("image validation task failed: {e}")))?
        .map_err(ApiError::Invalid)
}

/// Create a request
///
/// Queues a video request for `model_id`. A 200 means the request is durable. Follow the
/// `status_url` of the answer until `COMPLETED`, then fetch the `response_url`.
///
/// Text-to-video models take `width` and `height`; image-to-video models need `data_uri`
/// and use only `height`. Unknown fields are ignored.
#[utoipa::path(
    post,
    path = "/queue/{model_id}",
    tag = "queue",
    operation_id = "create",
    params(
        crate::openapi::ModelPath,
        crate::routes::webhooks::CreateQuery,
        ("x-pipelet-webhook" = Option<String>, Header, description = "The same as the \
            `fal_webhook` query parameter, for clients that cannot add one: a URL that gets a \
            signed POST on each event of the request. When both are sent they must be the \
            same URL (otherwise 422)."),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the create safe to \
            retry: 1 to 255 visible ASCII characters (a UUID, say), unique per request. A \
            repeat with the same key from the same API key within 24 hours answers the first \
            create again (200 with `Idempotent-Replayed: true`, the same `request_id`; \
            `queue_position` as of now) and creates nothing; the same key with another body \
            or model is a 422."),
    ),
    request_body(
        content = pipelet_api::wire::CreateRequest,
        content_type = "application/json",
        description = "What to generate (at most 20 MiB by default; `--max-body-bytes`).",
    ),
    responses(
        (status = 200, description = "Queued: the request's id, its URLs, its queue \
            position and the priority it got.", body = CreateResponse,
            headers(("x-fal-request-id" = String, description = "The request's id (fal's \
                clients read `requestId` from it)."),
                ("Idempotent-Replayed" = String, description = "`true` when this answers an \
                earlier create with the same `Idempotency-Key` (nothing new was created); \
                absent otherwise."),
                ("RateLimit-Limit" = u64, description = "When a creates-per-minute rate \
                    applies to the key: the creates it may make at once (the bucket)."),
                ("RateLimit-Remaining" = u64, description = "Creates left in it now."),
                ("RateLimit-Reset" = u64, description = "Seconds until it is full again."))),
        crate::openapi::KeyErrors,
        (status = 400, description = "The body is empty, unreadable or not JSON; the \
            `Idempotency-Key` header is sent twice or is not visible ASCII text; or \
            `fal_webhook` is given twice.",
            body = pipelet_api::wire::ErrorBody),
        (status = 404, description = "Unknown model; `detail` lists the available ones.",
            body = pipelet_api::wire::ErrorBody),
        (status = 413, description = "The body is larger than the server's limit.",
            body = pipelet_api::wire::ErrorBody),
        (status = 409, description = "The request an `Idempotency-Key` was first used for \
            has since been deleted; send a new key.", body = pipelet_api::wire::ErrorBody),
        (status = 422, description = "Invalid input: `field` names the field at fault and \
            `detail` says what is allowed (`fal_webhook` or `x-pipelet-webhook` for a webhook \
            URL that is not http(s), or whose host is or resolves to a loopback, private, \
            link-local or metadata address); or an `Idempotency-Key` that is empty, longer \
            than 255 characters, or already used for a different request (or webhook URL).",
            body = pipelet_api::wire::ErrorBody),
        (status = 429, description = "The queue is full (`queue_full`), this key has as \
            many queued requests as its quota allows (`key_queue_full`), or it made more \
            creates than its rate allows (`key_rate_limited`); try again later.",
            body = pipelet_api::wire::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait before retrying."),
                ("RateLimit-Limit" = u64, description = "The key's quota that was hit \
                    (per-key limits only)."),
                ("RateLimit-Remaining" = u64, description = "What is left of it (0)."),
                ("RateLimit-Reset" = u64, description = "Seconds until it is whole again."))),
        (status = 503, description = "The server is shutting down.",
            body = pipelet_api::wire::ErrorBody),
        (status = 507, description = "The server's disk is full: nothing was stored; \
            creates succeed again once space is freed (status, results and cancels still \
            work).", body = pipelet_api::wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    ApiPath(model_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<crate::routes::webhooks::CreateQuery>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    principal.require_client()?;
    let model = model(&state, &model_id)?;
    let idempotency_key = idempotency::key_of(&headers)?;
    let body = parse_body(body, state.config.max_body_bytes)?;
    let webhook_url = crate::routes::webhooks::webhook_of(&state, query, &headers).await?;
    // Hashed as sent, before validation consumes it.
    let idempotency = idempotency_key.map(|key| {
        idempotency::idempotency(
            &principal.key.id,
            key,
            &model.id,
            &body,
            webhook_url.as_deref(),
        )
    });
    let validated = validate(&state, model, body).await?;
    if state.store.queued_total() >= state.config.max_queued {
        return Err(ApiError::TooManyRequests {
            code: pipelet_api::ErrorCode::QueueFull,
            detail: format!(
                "the queue is full ({} waiting); try again later",
                pipelet_api::plural(state.config.max_queued, "job", "jobs")
            ),
            retry_after_secs: 30,
        });
    }
    // Per server: see `crate::quotas`. The key's queued-jobs quota is the store's.
    let rate_limit = state.create_limiter.take(&principal.key)?;

    // A full disk refuses creates before anything is written.
    state.disk.admit_create().await?;
    let id = Uuid::new_v4();
    let input_blob = match validated.image {
        Some(image) => {
            let key = Blobs::input_key(id);
            state
                .blobs
                .put(&key, Bytes::from(image))
                .await
                .map_err(|e| state.disk.create_failed(e))?;
            Some(key)
        }
        None => None,
    };
    let requested = validated.spec.requested_priority.clamp(
        MIN_REQUEST_PRIORITY,
        principal.key.max_priority.max(MIN_REQUEST_PRIORITY),
    );
    let new_job = NewJob {
        id,
        model_id: model.id.clone(),
        pipeline: model.pipeline,
        owner_key_id: principal.key.id.clone(),
        priority: model.priority + requested,
        spec: validated.spec,
        input_blob: input_blob.clone(),
        max_attempts: state.config.max_attempts,
        webhook_url,
    };
    let created = match idempotency {
        None => state
            .store
            .create_job(new_job)
            .await
            .map(CreateOutcome::Created),
        Some(idem) => state.store.create_job_idempotent(new_job, idem).await,
    };
    let Created { job, position } = match created {
        Ok(CreateOutcome::Created(created)) => created,
        Ok(other) => {
            // Nothing was created, so nothing points at the image just stored.
            if let Some(key) = input_blob {
                let _ = state.blobs.delete(&key).await;
            }
            return idempotency::answer(&state, &base, model, other).await;
        }
        Err(e) => {
            // No job points at the image, so it must not linger — unless the connection
            // broke mid-call, when the commit may have happened and only its answer was
            // lost: an orphan image is cheaper than a committed job without its input.
            if let Some(key) = input_blob.filter(|_| !e.may_have_committed()) {
                let _ = state.blobs.delete(&key).await;
            }
            return Err(state.disk.create_failed(e));
        }
    };
    tracing::info!(id = %job.id, model = %job.model_id, priority = job.priority, position, "request queued");
    let created = CreateResponse {
        request_id: id.to_string(),
        response_url: base.request(&model.id, id),
        status_url: base.status(&model.id, id),
        cancel_url: base.cancel(&model.id, id),
        queue_position: position,
        priority: requested,
    };
    let mut response = ([(FAL_REQUEST_ID, id.to_string())], Json(created)).into_response();
    // So clients can pace themselves before they hit the rate.
    if let Some(limit) = rate_limit {
        limit.add_headers(response.headers_mut());
    }
    Ok(response)
}

/// Loads a job the caller may see under this model, or 404 (never 403: ids leak nothing).
pub(crate) async fn visible_job(
    state: &AppState,
    principal: &Principal,
    model_id: &str,
    id: &str,
) -> Result<(JobRecord, Option<u64>), ApiError> {
    principal.require_client()?;
    let id = Uuid::parse_str(id).map_err(|_| ApiError::request_not_found())?;
    match state.store.job_status(id).await? {
        Some((job, pos)) if job.model_id == model_id && principal.can_see(&job.owner_key_id) => {
            Ok((job, pos))
        }
        _ => Err(ApiError::request_not_found()),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// `1`, `true` or `yes` fills `logs` (otherwise it is `null`).
    #[serde(default)]
    logs: Option<String>,
}

/// Whether a flag in the query is on: `1`, `true` or `yes`.
pub(crate) fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("1" | "true" | "yes"))
}

/// Get a request's status
///
/// `IN_QUEUE` (with `queue_position`), `IN_PROGRESS` (with `progress` and
/// `estimated_total_time_seconds`), then `COMPLETED`, `FAILED` or `CANCELLED`;
/// `statusMessages` says what is happening. A job retried after a lost worker shows
/// `IN_QUEUE` again.
#[utoipa::path(
    get,
    path = "/queue/{model_id}/requests/{id}/status",
    tag = "queue",
    operation_id = "status",
    params(crate::openapi::RequestPath, StatusQuery),
    responses(
        (status = 200, description = "The request's status.",
            body = pipelet_api::wire::StatusResponse,
            headers(("x-fal-request-id" = String, description = "The request's id (fal's \
                clients read `requestId` from it)."))),
        crate::openapi::RequestErrors,
        (status = 400, description = "A malformed query (e.g. `logs` given twice).",
            body = pipelet_api::wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    ApiPath((model_id, id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<StatusQuery>,
) -> Result<Response, ApiError> {
    let (job, position) = visible_job(&state, &principal, &model_id, &id).await?;
    let viewer = status_view::Viewer::of(&principal);
    let body = status_body(&state, &job, position, &base, truthy(&query.logs), viewer);
    Ok(([(FAL_REQUEST_ID, job.id.to_string())], Json(body)).into_response())
}

/// The status JSON of `job` as of now, with its retention notes: what the status
/// endpoint answers and each status event of the live stream carries.
pub(crate) fn status_body(
    state: &AppState,
    job: &JobRecord,
    position: Option<u64>,
    base: &BaseUrl,
    with_logs: bool,
    viewer: status_view::Viewer,
) -> pipelet_api::wire::StatusResponse {
    let mut body = status_view::status_response(
        job,
        position,
        base,
        with_logs,
        now_ms(),
        viewer,
        &state.metrics.eta,
    );
    crate::retention::annotate(&mut body.status_messages, job, &state.config);
    body
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CancelQuery {
    /// `1`, `true` or `yes` also stops a running request (202).
    #[serde(default)]
    force: Option<String>,
}

/// Cancel a request
///
/// A queued request is cancelled at once (204; again 204 for one already cancelled). A
/// running one is refused with 409 unless `?force=true`, which tells its worker to stop
/// (202) so that it ends `CANCELLED`.
#[utoipa::path(
    put,
    path = "/queue/{model_id}/requests/{id}/cancel",
    tag = "queue",
    operation_id = "cancel",
    params(crate::openapi::RequestPath, CancelQuery),
    responses(
        (status = 204, description = "Cancelled (or it already was)."),
        (status = 202, description = "`?force=true` on a running request: its worker was told \
            to stop; the request ends `CANCELLED`.", body = crate::openapi::CancelAccepted),
        crate::openapi::RequestErrors,
        (status = 400, description = "A malformed query.", body = pipelet_api::wire::ErrorBody),
        (status = 409, description = "The request has started (without `?force`) or already \
            finished; `status` says which.", body = pipelet_api::wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((model_id, id)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<CancelQuery>,
) -> Result<Response, ApiError> {
    let (job, _) = visible_job(&state, &principal, &model_id, &id).await?;
    let force = truthy(&query.force);
    match state.store.cancel(job.id, force, &principal.label()).await? {
        CancelOutcome::Cancelled | CancelOutcome::AlreadyCancelled => {
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        CancelOutcome::StopRequested => Ok((
            StatusCode::ACCEPTED,
            Json(json!({
                "status": "IN_PROGRESS",
                "detail": "the job is running; its worker was told to stop and it will end CANCELLED",
            })),
        )
            .into_response()),
        CancelOutcome::NotCancellable(now) => {
            let status = wire_status(now);
            let detail = if now.is_terminal() {
                format!("the request already finished ({}); nothing to cancel", status.as_str())
            } else {
                "the request has already started; only queued requests can be cancelled \
                 (add ?force=true to stop a running one)"
                    .to_string()
            };
            Err(ApiError::Conflict {
                code: pipelet_api::ErrorCode::NotCancellable,
                detail,
                body: json!({ "status": status }),
            })
        }
    }
}

/// Get a request's result
///
/// The finished video once the request is `COMPLETED`: `video.data_uri` is plain base64 of
/// the MP4, so `jq -r '.video.data_uri' | base64 --decode > output.mp4` works (unless the
/// server runs with `--result-data-uri url`, when it is the link of `video.url`).
/// `video.url` is a link to the raw MP4 that needs no key and expires
/// (`--result-url-ttl`, 2 hours by default).
#[utoipa::path(
    get,
    path = "/queue/{model_id}/requests/{id}",
    tag = "queue",
    operation_id = "result",
    params(crate::openapi::RequestPath),
    responses(
        (status = 200, description = "The video.", body = pipelet_api::wire::ResultResponse,
            headers(("x-fal-request-id" = String, description = "The request's id (fal's \
                clients read `requestId` from it)."))),
        crate::openapi::RequestErrors,
        (status = 409, description = "The request is not `COMPLETED`: the body has its status \
            (and for `FAILED` the reason).", body = crate::openapi::ResultNotReady),
        (status = 410, description = "The request is `COMPLETED` but its result has expired \
            under the server's retention (`--result-ttl`); its status says when \
            (`statusMessages.expired_at`).", body = pipelet_api::wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn result(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    ApiPath((model_id, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    let (job, position) = visible_job(&state, &principal, &model_id, &id).await?;
    let result = completed_result(&state, &principal, &job, position)?;
    let url = crate::result_links::video_url(&state, &base, &job, result).await?;
    result_body::stream(
        &state.blobs,
        &job,
        result,
        url,
        state.config.result_data_uri,
    )
    .await
}

/// The result of a job the caller may see: 410 once expired, 409 (with the status) while
/// there is none.
pub(crate) fn completed_result<'a>(
    state: &AppState,
    principal: &Principal,
    job: &'a JobRecord,
    position: Option<u64>,
) -> Result<&'a pipelet_store::JobResult, ApiError> {
    if let Some(gone) = crate::retention::gone(job) {
        return Err(gone);
    }
    let Some(result) = job.result.as_ref().filter(|_| job.state.is_terminal()) else {
        let status = wire_status(job.state);
        let viewer = status_view::Viewer::of(principal);
        let mut messages = status_view::messages(job, now_ms(), viewer, &state.metrics.eta);
        crate::retention::annotate(&mut messages, job, &state.config);
        let detail = match (job.state, &job.error) {
            (pipelet_store::JobState::Failed, Some(reason)) => {
                format!("the request failed: {reason}")
            }
            (s, _) if s.is_terminal() => {
                format!("the request ended {}; there is no result", status.as_str())
            }
            _ => format!(
                "the request is {}; poll its status_url until COMPLETED",
                status.as_str()
            ),
        };
        let mut body = json!({ "status": status, "statusMessages": messages });
        if let Some(p) = position {
            body["queue_position"] = json!(p);
        }
        return Err(ApiError::Conflict {
            code: pipelet_api::ErrorCode::NotCompleted,
            detail,
            body,
        });
    };
    Ok(result)
}
