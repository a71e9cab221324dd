//! The OpenAPI 3 document of pipelet's HTTP API, generated from the code: the
//! `#[utoipa::path]` annotation on each handler and the wire types of `pipelet-api`.
//!
//! It is served at `GET /openapi.json` (no key) and rendered by the docs page at
//! `GET /docs`. A copy is committed as `docs/openapi.json`; the `openapi` test fails
//! when the two differ (`PIPELET_UPDATE_OPENAPI=1 cargo test -p pipelet-server --test
//! openapi` rewrites the copy).
//!
//! The types here exist only for the document: path and query parameters shared by
//! several operations, and the few bodies that the handlers build as ad-hoc JSON.

use std::sync::OnceLock;

use pipelet_api::ErrorCode;
use pipelet_api::wire::{ErrorBody, JobStatus, StatusMessages};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, ToSchema};

use crate::routes;

/// The name of the security scheme every keyed operation names.
pub const BEARER: &str = "bearer";

const DESCRIPTION: &str = "\
A self-hosted video generation queue for the Wan 2.2 \"fast\" models, with a fal.ai-style \
queue API.

Submit a request with `POST /queue/{model_id}`, follow the `status_url` of the answer until \
the status is `COMPLETED` (or watch `.../status/stream`), then `GET` the `response_url` for \
the video: `video.data_uri` is plain base64 of the MP4, so \
`jq -r '.video.data_uri' | base64 --decode > output.mp4` works.

Every call but `/health`, `/ready`, `/models`, `/metrics` (unless the operator requires a \
key), `/openapi.json` and the pages needs `Authorization: Bearer <key>` (fal's \
`Authorization: Key <key>` works too). A request is visible only to the key that created it \
(or an admin key): anyone else gets 404, never 403. Every error is JSON with a `detail` a \
person can act on and a stable `code` for programs (the table of codes is the `ErrorCode` \
schema, and `docs/errors.md`).";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pipelet",
        version = env!("CARGO_PKG_VERSION"),
        description = DESCRIPTION,
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::queue::create,
        routes::queue::status,
        routes::stream::status_stream,
        routes::queue::cancel,
        routes::queue::result,
        routes::files::video,
        routes::files::download,
        routes::webhooks::events,
        routes::webhooks::secret,
        routes::webhooks::rotate,
        routes::history::list,
        routes::models::list,
        routes::admin_keys::list,
        routes::admin_keys::create,
        routes::admin_keys::update,
        routes::admin_keys::rotate,
        routes::admin_keys::revoke,
        routes::usage::own,
        routes::usage::all,
        routes::worker_api::claim,
        routes::worker_api::heartbeat,
        routes::worker_api::input,
        routes::worker_api::upload_result,
        routes::worker_api::complete,
        routes::worker_api::fail,
        routes::worker_api::cancelled,
        routes::health::health,
        routes::health::ready,
        routes::health::metrics,
        routes::docs::openapi_json,
        routes::docs::page,
        routes::playground::page,
        routes::favicon::icon,
    ),
    // WorkerConflict is named only by `WorkerJobErrors`, which does not register it.
    components(schemas(ErrorBody, ErrorCode, WorkerConflict)),
    modifiers(&BearerScheme),
    tags(
        (name = "queue", description = "The public queue API: create a request, follow its \
            status, cancel it, fetch the video. Client or admin keys."),
        (name = "models", description = "The model catalog: which `model_id`s exist and what \
            each accepts."),
        (name = "worker", description = "The worker API (`/worker/v1`) that `pipelet worker` \
            agents use to claim jobs, hold their leases and deliver results. Worker keys only; \
            every call after a claim carries the lease token, and a stale one changes nothing."),
        (name = "admin", description = "Key management (`/admin/v1/keys`): list, create, \
            update, rotate and revoke API keys by name; every key's usage \
            (`/admin/v1/usage`). Admin keys only; a secret is shown only when created or \
            rotated."),
        (name = "ops", description = "Health, readiness, metrics, this document and the web \
            pages."),
    )
)]
/// The document's root: every operation and schema is listed on its `#[openapi]`;
/// read it through [`spec`] or [`spec_json`], which build it once.
pub struct ApiDoc;

/// Adds the bearer-key security scheme.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key, sent as `Authorization: Bearer <key>`; fal's \
                         `Authorization: Key <key>` is accepted too. An operator makes keys \
                         with `pipelet keys create --name NAME [--role client|worker|admin]`: \
                         client keys use the queue API, worker keys only the worker API, \
                         admin keys everything.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, built once.
pub fn spec() -> &'static utoipa::openapi::OpenApi {
    static SPEC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    SPEC.get_or_init(ApiDoc::openapi)
}

/// The document as pretty JSON with a final newline: the text of `docs/openapi.json`.
pub fn spec_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        // Serializing plain structs with string keys cannot fail; the openapi test
        // serializes it on every run, and there is no document to serve instead.
        #[allow(clippy::expect_used)]
        let mut text = spec()
            .to_pretty_json()
            .expect("the OpenAPI document serializes");
        text.push('\n');
        text
    })
}

/// `/queue/{model_id}`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ModelPath {
    /// A model id from `GET /models`, e.g. `wan22-fast-t2v` or `wan22-fast-i2v`.
    pub model_id: String,
}

/// `/queue/{model_id}/requests/{id}...`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RequestPath {
    /// The model the request was created under; any other gives 404.
    pub model_id: String,
    /// The `request_id` of the create response.
    pub id: String,
}

/// `/files/{file}`: a result's signed link.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FilePath {
    /// `{request_id}.mp4`.
    pub file: String,
}

/// `/worker/v1/jobs/{id}/...`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    /// The `job_id` of the claim.
    pub id: String,
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers (whether the store does is `GET /ready`).
    #[schema(example = "ok")]
    pub status: String,
}

/// `GET /ready`.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ready`, or `unavailable` (with a 503) when the store does not answer.
    #[schema(example = "ready")]
    pub status: String,
    /// Why the server is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `unavailable` when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
}

/// `PUT .../cancel?force=true` on a running request → 202: its worker was told to stop.
#[derive(Serialize, ToSchema)]
pub struct CancelAccepted {
    /// `IN_PROGRESS`: it ends `CANCELLED` once the worker stops.
    pub status: JobStatus,
    /// Says that the worker was told to stop and the request will end `CANCELLED`.
    pub detail: String,
}

/// `GET /queue/{model_id}/requests/{id}` before the request is `COMPLETED` → 409.
#[derive(Serialize, ToSchema)]
pub struct ResultNotReady {
    /// Why there is no result yet (or will be none): for `FAILED`, the reason.
    pub detail: String,
    /// `not_completed`.
    pub code: ErrorCode,
    /// The request's status now: `IN_QUEUE`, `IN_PROGRESS`, `FAILED` or `CANCELLED`.
    pub status: JobStatus,
    /// As in the status response (e.g. `expired_at` once retention deleted the result).
    #[serde(rename = "statusMessages")]
    pub status_messages: StatusMessages,
    /// `IN_QUEUE` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
}

/// A worker call refused because of the job's state → 409.
#[derive(Serialize, ToSchema)]
pub struct WorkerConflict {
    /// What the worker must do now, in words (e.g. drop the job).
    pub detail: String,
    /// `lease_lost`, `cancel_not_requested` or `result_not_uploaded`.
    pub code: ErrorCode,
    /// `true` when the lease is gone (the job was re-queued, given to another worker,
    /// cancelled or already finished): drop the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_lost: Option<bool>,
}

// The error responses shared by a family of routes, declared once here and named in each
// route's `responses(...)`. Route-specific errors stay with their route.

/// Errors of every keyed queue-API call (client and admin keys).
#[derive(IntoResponses)]
pub enum KeyErrors {
    /// Missing, malformed or unknown API key (`unauthorized`).
    #[response(status = 401, headers(("WWW-Authenticate" = String,
        description = "`Bearer realm=\"pipelet\"`")))]
    Unauthorized(ErrorBody),
    /// A worker key: worker keys can only use the worker API (`forbidden`). On `GET
    /// /requests`, also `key_name` with a key that is not an admin key.
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// Errors of the calls on one request (`/queue/{model_id}/requests/{id}...`).
#[derive(IntoResponses)]
pub enum RequestErrors {
    /// Missing, malformed or unknown API key (`unauthorized`).
    #[response(status = 401, headers(("WWW-Authenticate" = String,
        description = "`Bearer realm=\"pipelet\"`")))]
    Unauthorized(ErrorBody),
    /// A worker key: worker keys can only use the worker API (`forbidden`).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No request with this id under this model that this key may see
    /// (`request_not_found`).
    #[response(status = 404)]
    NotFound(ErrorBody),
}

/// Errors of every worker-API call.
#[derive(IntoResponses)]
pub enum WorkerKeyErrors {
    /// Missing, malformed or unknown API key (`unauthorized`).
    #[response(status = 401, headers(("WWW-Authenticate" = String,
        description = "`Bearer realm=\"pipelet\"`")))]
    Unauthorized(ErrorBody),
    /// Not a worker key: the worker API needs one (`pipelet keys create --role worker`;
    /// `forbidden`).
    #[response(status = 403)]
    Forbidden(ErrorBody),
}

/// Errors of the worker-API calls on a leased job (`/worker/v1/jobs/{id}/...`).
#[derive(IntoResponses)]
pub enum WorkerJobErrors {
    /// Missing, malformed or unknown API key (`unauthorized`).
    #[response(status = 401, headers(("WWW-Authenticate" = String,
        description = "`Bearer realm=\"pipelet\"`")))]
    Unauthorized(ErrorBody),
    /// Not a worker key: the worker API needs one (`pipelet keys create --role worker`;
    /// `forbidden`).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such job, or (`.../input`) the job has no input image (`not_found`).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// `lease_lost` (`lease_lost: true`): the job was re-queued, given to another worker,
    /// cancelled or already finished; drop it. The lease is still held on
    /// `cancel_not_requested` (`.../cancelled` with no cancel requested; `lease_lost:
    /// false`) and `result_not_uploaded` (`.../complete` before the MP4 was PUT to
    /// `.../result`).
    #[response(status = 409)]
    Conflict(WorkerConflict),
}

/// Errors of the worker-API calls that take a JSON body on a leased job.
#[derive(IntoResponses)]
pub enum WorkerBodyErrors {
    /// The body is unreadable or not JSON.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Well-formed JSON of the wrong shape; `detail` names the field.
    #[response(status = 422)]
    Unprocessable(ErrorBody),
}
