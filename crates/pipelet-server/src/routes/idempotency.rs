//! The `Idempotency-Key` header of `POST /queue/{model_id}`: reading and checking it,
//! and the answers to a create the store did not perform (a replay of the key's
//! earlier create, or a mismatch). The store makes the key and the job commit together
//! (see `pipelet_store::Store::create_job_idempotent`).

use axum::Json;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use pipelet_api::wire::CreateResponse;
use pipelet_api::{ErrorCode, ModelSpec};
use pipelet_store::{
    CreateOutcome, IDEMPOTENCY_WINDOW_MS, Idempotency, MAX_IDEMPOTENCY_KEY_LEN, now_ms,
};
use serde_json::json;

use crate::error::ApiError;
use crate::result_body::FAL_REQUEST_ID;
use crate::state::AppState;
use crate::urls::BaseUrl;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The request's `Idempotency-Key`, if it sent one: 1 to 255 visible ASCII characters.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(&IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "the Idempotency-Key header was sent more than once; send it once".into(),
        ));
    }
    let key = value.to_str().map_err(|_| {
        ApiError::BadRequest(
            "the Idempotency-Key header must be visible ASCII text (a UUID, say)".into(),
        )
    })?;
    if key.is_empty() {
        return Err(ApiError::coded(
            ErrorCode::InvalidIdempotencyKey,
            "the Idempotency-Key header is empty; send a unique value such as a UUID, or leave \
             the header out",
        ));
    }
    if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(ApiError::coded(
            ErrorCode::InvalidIdempotencyKey,
            format!(
                "the Idempotency-Key header is {} characters long; at most \
                 {MAX_IDEMPOTENCY_KEY_LEN} are allowed",
                key.len()
            ),
        ));
    }
    Ok(Some(key.to_string()))
}

/// What the store needs to make a create with `key` idempotent for this API key. The
/// webhook URL is part of the request, so a repeat with another one is a mismatch.
pub fn idempotency(
    owner: &str,
    key: String,
    model_id: &str,
    body: &serde_json::Value,
    webhook_url: Option<&str>,
) -> Idempotency {
    // No model id holds a newline, so this cannot collide with a create without a
    // webhook (whose hash, and so its stored keys, stays as before).
    let hashed_model = match webhook_url {
        Some(url) => format!("{model_id}\nwebhook={url}"),
        None => model_id.to_string(),
    };
    Idempotency {
        owner: owner.to_string(),
        key,
        request_hash: pipelet_store::request_hash(&hashed_model, body),
        not_before_ms: now_ms().saturating_sub(IDEMPOTENCY_WINDOW_MS),
    }
}

/// The answer to a create the store answered with a replay or a mismatch. A replay is
/// the original create's answer rebuilt from its job, with the job's queue position as
/// of now (0 once it has started or finished), plus `Idempotent-Replayed: true`.
pub async fn answer(
    state: &AppState,
    base: &BaseUrl,
    model: &ModelSpec,
    outcome: CreateOutcome,
) -> Result<Response, ApiError> {
    let id = match outcome {
        CreateOutcome::Replayed(id) => id,
        CreateOutcome::Mismatch => {
            return Err(ApiError::coded(
                ErrorCode::IdempotencyKeyReused,
                "this Idempotency-Key was already used (within the last 24 hours) for a \
                 different request: another body or model. Send a new Idempotency-Key for a \
                 new request",
            ));
        }
        CreateOutcome::Created(job) => {
            return Err(ApiError::Internal(format!(
                "job {} was created but answered as a replay",
                job.id
            )));
        }
    };
    let Some((job, position)) = state.store.job_status(id).await? else {
        return Err(ApiError::Conflict {
            code: ErrorCode::IdempotentRequestDeleted,
            detail: "the request made earlier with this Idempotency-Key no longer exists (it \
                     was deleted); send a new Idempotency-Key to create it again"
                .into(),
            body: json!({}),
        });
    };
    let created = CreateResponse {
        request_id: id.to_string(),
        response_url: base.request(&model.id, id),
        status_url: base.status(&model.id, id),
        cancel_url: base.cancel(&model.id, id),
        queue_position: position.unwrap_or(0),
        // The job's priority is the model tier's plus the one the request got.
        priority: job.priority - model.priority,
    };
    Ok((
        [
            (
                FAL_REQUEST_ID,
                HeaderValue::from_str(&id.to_string())
                    .map_err(|e| ApiError::Internal(format!("request id header: {e}")))?,
            ),
            (IDEMPOTENT_REPLAYED, HeaderValue::from_static("true")),
        ],
        Json(created),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(IDEMPOTENCY_KEY, HeaderValue::from_bytes(v).unwrap());
        }
        map
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(key_of(&headers(&[])).unwrap(), None);
        assert_eq!(
            key_of(&headers(&[b"abc-1"])).unwrap().as_deref(),
            Some("abc-1")
        );
        let max = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN);
        assert_eq!(
            key_of(&headers(&[max.as_bytes()])).unwrap(),
            Some(max.clone())
        );
        let long = "k".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1);
        for bad in [
            &[long.as_bytes()][..],
            &[b""],
            &[b"a", b"b"],
            &[b"caf\xc3\xa9"],
        ] {
            let e = key_of(&headers(bad)).unwrap_err();
            assert!(e.to_string().contains("Idempotency-Key"), "{e}");
        }
    }
}
