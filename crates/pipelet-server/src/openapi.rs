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

use pipelet_api::wire::{JobStatus, StatusMessages};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

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
person can act on.";

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
        routes::worker::claim,
        routes::worker::heartbeat,
        routes::worker::input,
        routes::worker::upload_result,
        routes::worker::complete,
        routes::worker::fail,
        routes::worker::cancelled,
        routes::health::health,
        routes::health::ready,
        routes::health::metrics,
        routes::docs::openapi_json,
        routes::docs::page,
        routes::playground::page,
        routes::favicon::icon,
    ),
    components(schemas(pipelet_api::wire::ErrorBody)),
    modifiers(&BearerScheme),
    tags(
        (name = "queue", description = "The public queue API: create a request, follow its \
            status, cancel it, fetch the video. Client or admin keys."),
        (name = "models", description = "The model catalog: which `model_id`s exist and what \
            each accepts."),
        (name = "worker", description = "The worker API (`/worker/v1`) that `pipelet worker` \
            agents use to claim jobs, hold their leases and deliver results. Worker keys only; \
            every call after a claim carries the lease token, and a stale one changes nothing."),
        (name = "ops", description = "Health, readiness, metrics, this document and the web \
            pages."),
    )
)]
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
}

/// `PUT .../cancel?force=true` on a running request → 202: its worker was told to stop.
#[derive(Serialize, ToSchema)]
pub struct CancelAccepted {
    /// `IN_PROGRESS`: it ends `CANCELLED` once the worker stops.
    pub status: JobStatus,
    pub detail: String,
}

/// `GET /queue/{model_id}/requests/{id}` before the request is `COMPLETED` → 409.
#[derive(Serialize, ToSchema)]
pub struct ResultNotReady {
    /// Why there is no result yet (or will be none): for `FAILED`, the reason.
    pub detail: String,
    pub status: JobStatus,
    #[serde(rename = "statusMessages")]
    pub status_messages: StatusMessages,
    /// `IN_QUEUE` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
}

/// A worker call refused because of the job's state → 409.
#[derive(Serialize, ToSchema)]
pub struct WorkerConflict {
    pub detail: String,
    /// `true` when the lease is gone (the job was re-queued, given to another worker,
    /// cancelled or already finished): drop the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_lost: Option<bool>,
}
