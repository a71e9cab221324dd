//! The webhook side of the public API: the webhook URL of a create (`?fal_webhook=` or
//! `x-pipelet-webhook`, checked against server-side request forgery), the per-key
//! signing secret (`GET /webhooks/secret`, `POST /webhooks/secret/rotate`) and a job's
//! event log (`GET /queue/{model_id}/requests/{id}/webhooks`).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName};
use pipelet_api::InputError;
use pipelet_store::{WEBHOOK_SECRET_OVERLAP_MS, WebhookEventRecord, now_ms};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::routes::queue::visible_job;
use crate::state::AppState;
use crate::status_view::rfc3339;
use crate::webhooks::ssrf;

/// The query parameter fal's clients send (`submit(..., webhook_url=...)`).
pub const FAL_WEBHOOK: &str = "fal_webhook";
/// The header alternative, for clients that cannot add query parameters.
pub const WEBHOOK_HEADER_NAME: &str = "x-pipelet-webhook";
const WEBHOOK_HEADER: HeaderName = HeaderName::from_static(WEBHOOK_HEADER_NAME);

/// The create's query string (unknown parameters are ignored).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// A URL that gets a signed POST on each event of the request (`acquired`,
    /// `completed`, `failed`, `cancelled`, `retried`): http or https, at most 2048 bytes,
    /// whose host is not and does not resolve to a loopback, private, link-local or
    /// metadata address (unless the server runs with `--webhook-allow-private`). The
    /// header `x-pipelet-webhook` says the same; when both are sent they must be equal.
    #[serde(default)]
    pub fal_webhook: Option<String>,
}

fn invalid(field: &str, detail: impl Into<String>) -> ApiError {
    ApiError::Invalid(InputError::field(field, detail))
}

/// The create's webhook URL, if it gave one, checked: a 422 naming `fal_webhook` or
/// `x-pipelet-webhook` when it is not an http(s) URL or its host is (or resolves to) a
/// forbidden address. Both given and different is a 422 too, rather than silently
/// picking one.
pub async fn webhook_of(
    state: &AppState,
    query: CreateQuery,
    headers: &HeaderMap,
) -> Result<Option<String>, ApiError> {
    let header_name = WEBHOOK_HEADER_NAME;
    let mut values = headers.get_all(&WEBHOOK_HEADER).iter();
    let header = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(invalid(
                header_name,
                "the x-pipelet-webhook header was sent more than once; send one URL",
            ));
        }
        (Some(value), None) => Some(
            value
                .to_str()
                .map_err(|_| invalid(header_name, "the x-pipelet-webhook header must be ASCII"))?
                .trim()
                .to_string(),
        ),
    };
    let query = query.fal_webhook.map(|q| q.trim().to_string());
    let (field, url) = match (query, header) {
        (None, None) => return Ok(None),
        (Some(q), Some(h)) if q != h => {
            return Err(invalid(
                FAL_WEBHOOK,
                "fal_webhook and the x-pipelet-webhook header name different URLs; send one \
                 of them (or the same URL in both)",
            ));
        }
        (Some(q), _) => (FAL_WEBHOOK, q),
        (None, Some(h)) => (header_name, h),
    };
    if url.is_empty() {
        return Err(invalid(
            field,
            format!("{field} is empty; give an http:// or https:// URL, or leave it out"),
        ));
    }
    let allow_private = state.config.webhook_allow_private;
    let parsed = ssrf::check_url(&url, allow_private)
        .map_err(|e| invalid(field, format!("{field}: {e}")))?;
    // A host that does not resolve yet passes: delivery resolves and checks every try.
    ssrf::check_resolved(&parsed, allow_private)
        .await
        .map_err(|e| invalid(field, format!("{field}: {e}")))?;
    Ok(Some(url))
}

/// The calling key's webhook signing secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretResponse {
    /// `whsec_` and the base64 of 32 random bytes, as Standard Webhooks libraries take it.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub secret: String,
}

/// A new secret; events are signed with both until `previous_valid_until`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotateResponse {
    pub secret: String,
    /// When signatures with the previous secret stop (RFC 3339, 24 hours from now).
    pub previous_valid_until: String,
}

/// One webhook event of a request.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventView {
    /// The `webhook-id` header of its deliveries (`msg_…`), the same on every try.
    pub id: String,
    /// `acquired`, `completed`, `failed`, `cancelled` or `retried`.
    pub event_type: String,
    /// `pending`, `delivered` or `gave_up`.
    pub state: String,
    /// Delivery tries so far.
    pub attempts: u32,
    /// The HTTP status of the last try (`null` before the first, or when it got none).
    pub last_status: Option<u16>,
    /// Why the last try failed, if it did.
    pub last_error: Option<String>,
    /// When the next try is due (RFC 3339); `null` once delivered or given up.
    pub next_attempt_at: Option<String>,
    /// When the event happened (RFC 3339).
    pub created_at: String,
}

impl From<WebhookEventRecord> for WebhookEventView {
    fn from(r: WebhookEventRecord) -> Self {
        WebhookEventView {
            id: r.event.id,
            event_type: r.event.event_type.as_str().to_string(),
            state: r.state.as_str().to_string(),
            attempts: r.event.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            next_attempt_at: r.next_attempt_at_ms.map(rfc3339),
            created_at: rfc3339(r.event.created_at_ms),
        }
    }
}

/// A request's webhook events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventsResponse {
    pub events: Vec<WebhookEventView>,
}

/// Get the webhook signing secret
///
/// The secret that signs the webhooks of requests created with this API key (Standard
/// Webhooks: `webhook-signature` is `v1,` and the base64 HMAC-SHA256 of
/// `webhook-id.webhook-timestamp.body`). Each key has its own, made on first use.
#[utoipa::path(
    get,
    path = "/webhooks/secret",
    tag = "queue",
    operation_id = "webhook_secret",
    responses(
        (status = 200, description = "The key's current secret.", body = SecretResponse),
        crate::openapi::KeyErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn secret(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<SecretResponse>, ApiError> {
    principal.require_client()?;
    let secrets = state
        .store
        .webhook_secrets(&principal.key.id, now_ms())
        .await?;
    Ok(Json(SecretResponse {
        secret: secrets.current,
    }))
}

/// Rotate the webhook signing secret
///
/// Issues a new secret for this API key. For 24 hours webhooks carry signatures with
/// both the new and the previous secret (space-separated in `webhook-signature`), so
/// receivers can switch without losing events.
#[utoipa::path(
    post,
    path = "/webhooks/secret/rotate",
    tag = "queue",
    operation_id = "rotate_webhook_secret",
    responses(
        (status = 200, description = "The new secret and when the previous one stops \
            signing.", body = RotateResponse),
        crate::openapi::KeyErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<RotateResponse>, ApiError> {
    principal.require_client()?;
    let now = now_ms();
    let secrets = state
        .store
        .rotate_webhook_secret(&principal.key.id, now)
        .await?;
    tracing::info!(key = %principal.label(), "webhook secret rotated");
    Ok(Json(RotateResponse {
        secret: secrets.current,
        previous_valid_until: rfc3339(now.saturating_add(WEBHOOK_SECRET_OVERLAP_MS)),
    }))
}

/// List a request's webhook events
///
/// Every event of the request (oldest first) with its delivery state: tries so far, the
/// last HTTP status or error, and when the next try is due. Empty for a request created
/// without a webhook.
#[utoipa::path(
    get,
    path = "/queue/{model_id}/requests/{id}/webhooks",
    tag = "queue",
    operation_id = "webhook_events",
    params(crate::openapi::RequestPath),
    responses(
        (status = 200, description = "The request's webhook events.",
            body = WebhookEventsResponse),
        crate::openapi::RequestErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn events(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((model_id, id)): ApiPath<(String, String)>,
) -> Result<Json<WebhookEventsResponse>, ApiError> {
    let (job, _) = visible_job(&state, &principal, &model_id, &id).await?;
    let events = state.store.webhook_events_of(job.id).await?;
    Ok(Json(WebhookEventsResponse {
        events: events.into_iter().map(WebhookEventView::from).collect(),
    }))
}
