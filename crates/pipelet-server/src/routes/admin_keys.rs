//! The admin API for API keys (`/admin/v1/keys`): list, create, update, rotate and
//! revoke, by name. Admin keys only (others get 403 `forbidden`). A secret appears only
//! in the answer of a create or rotate, never in a list or a log. A revoke, rotate or
//! update clears this server's key cache at once; other servers see the change through
//! the store's key generation within a second (see `crate::auth`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use pipelet_api::InputError;
use pipelet_store::api_keys::{check_key_name, expiry_after};
use pipelet_store::{KeyRecord, KeyUpdate, NewKey, Role, now_ms};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;
use crate::status_view::rfc3339;

/// A key as listed: never its secret, only the first characters of it.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    /// The key's id: what requests record as their owner.
    pub id: String,
    /// The key's name, unique among live keys; the admin API addresses keys by it.
    pub name: String,
    /// `client`, `worker` or `admin`.
    #[schema(example = "client")]
    pub role: String,
    /// The first 8 characters of the secret after `plt_`, to recognise it by (not
    /// enough to use it); empty for keys made before prefixes were kept.
    pub prefix: String,
    /// The most `priority` the key's requests may add.
    pub max_priority: i64,
    /// When the key was created (RFC 3339).
    pub created_at: String,
    /// When the key stops working (RFC 3339); absent if never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When the key was last used (RFC 3339, to within about a minute); absent if never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// When the key was revoked (RFC 3339); absent while live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// The most requests it may have queued at once (0: no limit); absent: the
    /// server's `--max-queued-per-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u64>,
    /// The most of its requests that may run at once (0: no limit); absent: the
    /// server's `--max-running-per-key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u64>,
    /// The most creates it may make a minute (0: no limit); absent: the server's
    /// `--creates-per-minute`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creates_per_minute: Option<u64>,
    /// Its share of the queue against other keys' requests of the same priority
    /// (1 to 100, default 1): weight 2 gets twice the dispatches of weight 1.
    pub weight: i64,
}

impl From<KeyRecord> for KeyView {
    fn from(key: KeyRecord) -> Self {
        KeyView {
            id: key.id,
            name: key.name,
            role: key.role.as_str().to_string(),
            prefix: key.prefix,
            max_priority: key.max_priority,
            created_at: rfc3339(key.created_at_ms),
            expires_at: key.expires_at_ms.map(rfc3339),
            last_used_at: key.last_used_at_ms.map(rfc3339),
            revoked_at: key.revoked_at_ms.map(rfc3339),
            max_queued: key.max_queued,
            max_running: key.max_running,
            creates_per_minute: key.creates_per_minute,
            weight: key.weight,
        }
    }
}

/// `GET /admin/v1/keys`: every key, revoked ones too, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys.
    pub keys: Vec<KeyView>,
}

/// `POST /admin/v1/keys`: the key to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    /// 1 to 100 printable characters, not the name of a live key.
    pub name: String,
    /// `client` (the queue API for its own requests), `worker` (only the worker API) or
    /// `admin` (everything).
    #[schema(example = "client")]
    pub role: String,
    /// The most `priority` the key's requests may add (default 0).
    #[serde(default)]
    pub max_priority: Option<i64>,
    /// Seconds until the key stops working (at least 1); absent: never.
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// The most requests it may have queued at once (0: no limit); absent: the
    /// server's `--max-queued-per-key`.
    #[serde(default)]
    pub max_queued: Option<u64>,
    /// The most of its requests that may run at once (0: no limit); absent: the
    /// server's `--max-running-per-key`.
    #[serde(default)]
    pub max_running: Option<u64>,
    /// The most creates it may make a minute (0: no limit); absent: the server's
    /// `--creates-per-minute`.
    #[serde(default)]
    pub creates_per_minute: Option<u64>,
    /// Its share of the queue against other keys' requests of the same priority, 1 to
    /// 100 (default 1).
    #[serde(default)]
    pub weight: Option<i64>,
}

/// A new secret (create or rotate): shown only in this answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeySecret {
    /// The key, as listed.
    pub key: KeyView,
    /// The secret (`plt_…`) to send as `Authorization: Bearer <secret>`; it cannot be
    /// shown again.
    pub secret: String,
}

/// `PATCH /admin/v1/keys/{name}`: what to change; absent fields stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyBody {
    /// A new priority cap.
    #[serde(default)]
    pub max_priority: Option<i64>,
    /// A new expiry: seconds from now (at least 1).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
    /// `true` removes the expiry (not with `expires_in_secs`).
    #[serde(default)]
    pub no_expiry: bool,
    /// A new queued-requests quota (0: no limit); `null` goes back to the server's
    /// `--max-queued-per-key`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub max_queued: Option<Option<u64>>,
    /// A new running-requests quota (0: no limit); `null` goes back to the server's
    /// `--max-running-per-key`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub max_running: Option<Option<u64>>,
    /// A new creates-per-minute rate (0: no limit); `null` goes back to the server's
    /// `--creates-per-minute`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub creates_per_minute: Option<Option<u64>>,
    /// A new share of the queue against other keys' requests of the same priority, 1
    /// to 100.
    #[serde(default)]
    pub weight: Option<i64>,
}

/// A field that is present, `null` included: absent stays `None` (by `default`), `null`
/// is `Some(None)`.
fn present<'de, D>(d: D) -> Result<Option<Option<u64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<u64>::deserialize(d).map(Some)
}

/// The key named in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct KeyPath {
    /// The name of a live key (percent-encoded).
    pub name: String,
}

/// Errors of every admin-API call.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "only its OpenAPI description is used")]
pub enum AdminErrors {
    /// Missing, malformed, unknown, revoked or expired API key (`unauthorized`).
    #[response(status = 401, headers(("WWW-Authenticate" = String,
        description = "`Bearer realm=\"pipelet\"`")))]
    Unauthorized(pipelet_api::wire::ErrorBody),
    /// Not an admin key (`forbidden`).
    #[response(status = 403)]
    Forbidden(pipelet_api::wire::ErrorBody),
    /// Too many failed authentications from this address (`rate_limited`).
    #[response(status = 429)]
    RateLimited(pipelet_api::wire::ErrorBody),
}

/// Errors of the admin calls on one key.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "only its OpenAPI description is used")]
pub enum AdminKeyErrors {
    /// No live key has this name (`key_not_found`).
    #[response(status = 404)]
    NotFound(pipelet_api::wire::ErrorBody),
}

fn require_admin(principal: &Principal) -> Result<(), ApiError> {
    if principal.key.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "key management needs an admin key".into(),
        ))
    }
}

fn invalid(field: &str, detail: impl Into<String>) -> ApiError {
    ApiError::Invalid(InputError::field(field, detail))
}

/// A `weight` in 1..=100, or why not.
fn check_weight(weight: Option<i64>) -> Result<Option<i64>, ApiError> {
    use pipelet_store::fair::{MAX_WEIGHT, MIN_WEIGHT};
    match weight {
        Some(w) if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&w) => Err(invalid(
            "weight",
            format!("weight must be {MIN_WEIGHT} to {MAX_WEIGHT}"),
        )),
        w => Ok(w),
    }
}

/// A positive `expires_in_secs` as an expiry from now.
fn expiry(secs: u64) -> Result<i64, ApiError> {
    if secs == 0 {
        return Err(invalid(
            "expires_in_secs",
            "expires_in_secs must be at least 1",
        ));
    }
    Ok(expiry_after(now_ms(), secs))
}

/// List API keys
///
/// Every key, revoked ones too, oldest first: name, role, the first characters of its
/// secret, priority cap, created, expires, last used (to within a minute) and revoked.
/// Never a secret. Admin keys only.
#[utoipa::path(
    get,
    path = "/admin/v1/keys",
    tag = "admin",
    operation_id = "list_keys",
    responses(
        (status = 200, description = "The keys.", body = KeyList),
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<KeyList>, ApiError> {
    require_admin(&principal)?;
    let keys = state.store.list_keys().await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(KeyView::from).collect(),
    }))
}

/// Create an API key
///
/// Creates a key and answers its secret, once. The name must not be a live key's
/// (409 `key_name_taken`). Admin keys only.
#[utoipa::path(
    post,
    path = "/admin/v1/keys",
    tag = "admin",
    operation_id = "create_key",
    request_body = CreateKeyBody,
    responses(
        (status = 201, description = "The key and its secret.", body = KeySecret),
        (status = 409, description = "A live key has this name (`key_name_taken`).",
            body = pipelet_api::wire::ErrorBody),
        (status = 422, description = "A bad name, role or expiry (`invalid_field`).",
            body = pipelet_api::wire::ErrorBody),
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<KeySecret>), ApiError> {
    require_admin(&principal)?;
    let name = check_key_name(&body.name).map_err(|e| invalid("name", e))?;
    let role = Role::parse(body.role.trim())
        .ok_or_else(|| invalid("role", "role must be client, worker or admin"))?;
    let expires_at_ms = body.expires_in_secs.map(expiry).transpose()?;
    let weight = check_weight(body.weight)?;
    let (key, secret) = state
        .store
        .create_key(NewKey {
            name,
            role,
            max_priority: body.max_priority.unwrap_or(0),
            expires_at_ms,
        })
        .await?;
    // Quotas are set by an update of the new key (NULL, the server's default, until then).
    let key = if body.max_queued.is_some()
        || body.max_running.is_some()
        || body.creates_per_minute.is_some()
        || weight.is_some()
    {
        state
            .store
            .update_key(
                &key.name,
                KeyUpdate {
                    max_queued: body.max_queued.map(Some),
                    max_running: body.max_running.map(Some),
                    creates_per_minute: body.creates_per_minute.map(Some),
                    weight,
                    ..KeyUpdate::default()
                },
            )
            .await?
    } else {
        key
    };
    tracing::info!(by = %principal.label(), name = %key.name, role = %key.role, "key created");
    Ok((
        StatusCode::CREATED,
        Json(KeySecret {
            key: key.into(),
            secret,
        }),
    ))
}

/// Update an API key
///
/// Changes the priority cap, the expiry or the quotas (`max_queued`, `max_running`,
/// `creates_per_minute`; `null` goes back to the server's default) of the live key with
/// this name. Admin keys only.
#[utoipa::path(
    patch,
    path = "/admin/v1/keys/{name}",
    tag = "admin",
    operation_id = "update_key",
    params(KeyPath),
    request_body = UpdateKeyBody,
    responses(
        (status = 200, description = "The key as updated.", body = KeyView),
        (status = 422, description = "A bad expiry (`invalid_field`).",
            body = pipelet_api::wire::ErrorBody),
        AdminKeyErrors,
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(KeyPath { name }): ApiPath<KeyPath>,
    ApiJson(body): ApiJson<UpdateKeyBody>,
) -> Result<Json<KeyView>, ApiError> {
    require_admin(&principal)?;
    let expires_at_ms = match (body.expires_in_secs, body.no_expiry) {
        (Some(_), true) => {
            return Err(invalid(
                "no_expiry",
                "send expires_in_secs or no_expiry, not both",
            ));
        }
        (Some(secs), false) => Some(Some(expiry(secs)?)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    let weight = check_weight(body.weight)?;
    let key = state
        .store
        .update_key(
            &name,
            KeyUpdate {
                max_priority: body.max_priority,
                expires_at_ms,
                max_queued: body.max_queued,
                max_running: body.max_running,
                creates_per_minute: body.creates_per_minute,
                weight,
            },
        )
        .await?;
    state.keys.clear();
    tracing::info!(by = %principal.label(), name = %key.name, "key updated");
    Ok(Json(key.into()))
}

/// Rotate an API key
///
/// Gives the live key with this name a new secret (same id, name and role) and answers
/// it, once; the old secret stops working at once on every server (within a second).
/// Admin keys only.
#[utoipa::path(
    post,
    path = "/admin/v1/keys/{name}/rotate",
    tag = "admin",
    operation_id = "rotate_key",
    params(KeyPath),
    responses(
        (status = 200, description = "The key and its new secret.", body = KeySecret),
        AdminKeyErrors,
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn rotate(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(KeyPath { name }): ApiPath<KeyPath>,
) -> Result<Json<KeySecret>, ApiError> {
    require_admin(&principal)?;
    let (key, secret) = state.store.rotate_key(&name).await?;
    state.keys.clear();
    tracing::info!(by = %principal.label(), name = %key.name, "key rotated");
    Ok(Json(KeySecret {
        key: key.into(),
        secret,
    }))
}

/// Revoke an API key
///
/// Revokes the live key with this name: it is refused (401) on every server within a
/// second. Its name may then be used again. Admin keys only.
#[utoipa::path(
    delete,
    path = "/admin/v1/keys/{name}",
    tag = "admin",
    operation_id = "revoke_key",
    params(KeyPath),
    responses(
        (status = 204, description = "Revoked."),
        AdminKeyErrors,
        AdminErrors,
    ),
    security(("bearer" = [])),
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(KeyPath { name }): ApiPath<KeyPath>,
) -> Result<StatusCode, ApiError> {
    require_admin(&principal)?;
    let key = state.store.revoke_key(&name).await?;
    state.keys.clear();
    tracing::info!(by = %principal.label(), name = %key.name, "key revoked");
    Ok(StatusCode::NO_CONTENT)
}
