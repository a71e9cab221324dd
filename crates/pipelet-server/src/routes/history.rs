//! `GET /requests`: the caller's request history, newest first, in cursor pages.
//!
//! A client key sees only its own requests; an admin key sees every key's (and may
//! narrow them with `?key_name=`). Pages are keyset pages of the store
//! ([`pipelet_store::JobListQuery`]): the opaque `next_cursor` continues strictly after
//! the last request shown, so requests created while a caller pages never shift the
//! pages that follow.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pipelet_api::InputError;
use pipelet_api::wire::{JobStatus, RequestList, RequestSummary};
use pipelet_store::{JobCursor, JobListQuery, JobRecord, JobState, Role};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;
use crate::status_view::{rfc3339, wire_status};
use crate::urls::BaseUrl;

/// Requests per page when `?limit=` is not given.
pub const DEFAULT_LIMIT: u32 = 20;
/// The most requests one page may hold.
pub const MAX_LIMIT: u32 = 100;
/// Longer values are not names, ids or cursors of this server (bounds the work).
const MAX_PARAM_LEN: usize = 256;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only requests of this model (a `model_id` from `GET /models`).
    #[param(example = "wan22-fast-t2v")]
    #[serde(default)]
    model_id: Option<String>,
    /// Only requests in this status: `IN_QUEUE`, `IN_PROGRESS`, `COMPLETED`, `FAILED` or
    /// `CANCELLED`.
    #[param(value_type = Option<JobStatus>)]
    #[serde(default)]
    status: Option<String>,
    /// Requests per page, 1 to 100 (default 20).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, example = 20)]
    #[serde(default)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page; omit it for the newest requests.
    #[serde(default)]
    cursor: Option<String>,
    /// Admin keys only: only requests made with keys of this name.
    #[serde(default)]
    key_name: Option<String>,
}

/// A parameter's value, `None` when absent or empty (as an empty form field sends it).
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn invalid(field: &str, detail: String) -> ApiError {
    ApiError::Invalid(InputError::field(field, detail))
}

fn bounded<'a>(field: &str, value: Option<&'a str>) -> Result<Option<&'a str>, ApiError> {
    match value {
        Some(v) if v.len() > MAX_PARAM_LEN => Err(invalid(
            field,
            format!("{field} is too long (at most {MAX_PARAM_LEN} bytes)"),
        )),
        other => Ok(other),
    }
}

fn parse_limit(value: Option<&str>) -> Result<u32, ApiError> {
    let Some(text) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<u32>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(invalid(
            "limit",
            format!("limit must be a whole number from 1 to {MAX_LIMIT}, got '{text}'"),
        )),
    }
}

fn parse_status(value: Option<&str>) -> Result<Option<JobState>, ApiError> {
    let Some(text) = value else {
        return Ok(None);
    };
    let state = JobState::ALL
        .into_iter()
        .find(|&s| wire_status(s).as_str().eq_ignore_ascii_case(text));
    match state {
        Some(state) => Ok(Some(state)),
        None => {
            let known: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            Err(invalid(
                "status",
                format!("unknown status '{text}'; use one of {}", known.join(", ")),
            ))
        }
    }
}

fn parse_model(state: &AppState, value: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(text) = value else {
        return Ok(None);
    };
    let catalog = &state.config.catalog;
    if catalog.get(text).is_some() {
        return Ok(Some(text.to_string()));
    }
    let known: Vec<&str> = catalog.models.iter().map(|m| m.id.as_str()).collect();
    Err(invalid(
        "model_id",
        format!(
            "unknown model_id '{text}'; available models: {}",
            known.join(", ")
        ),
    ))
}

fn parse_cursor(value: Option<&str>) -> Result<Option<JobCursor>, ApiError> {
    let Some(text) = value else {
        return Ok(None);
    };
    JobCursor::decode(text).map(Some).ok_or_else(|| {
        invalid(
            "cursor",
            "cursor is not one this server made: pass the next_cursor of the previous page \
             unchanged, or omit it for the newest requests"
                .to_string(),
        )
    })
}

fn summary(job: &JobRecord, base: &BaseUrl) -> RequestSummary {
    RequestSummary {
        request_id: job.id.to_string(),
        model_id: job.model_id.clone(),
        status: wire_status(job.state),
        created_at: rfc3339(job.created_at_ms),
        finished_at: job.finished_at_ms.map(rfc3339),
        response_url: base.request(&job.model_id, job.id),
        status_url: base.status(&job.model_id, job.id),
        cancel_url: base.cancel(&job.model_id, job.id),
    }
}

/// List your requests
///
/// The requests made with this key, newest first, one page at a time: pass the answer's
/// `next_cursor` as `?cursor=` for the next (older) page; it is `null` on the last one.
/// Requests created while you page do not shift the pages that follow. An admin key
/// sees every key's requests (`?key_name=` narrows them to keys of one name).
#[utoipa::path(
    get,
    path = "/requests",
    tag = "queue",
    operation_id = "list_requests",
    params(HistoryQuery),
    responses(
        (status = 200, description = "A page of requests, newest first.", body = RequestList),
        crate::openapi::KeyErrors,
        (status = 400, description = "A malformed query (e.g. a parameter given twice).",
            body = pipelet_api::wire::ErrorBody),
        (status = 422, description = "A bad `limit`, `status`, `model_id` or `cursor`: \
            `field` names it and `detail` says what is allowed.",
            body = pipelet_api::wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    base: BaseUrl,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    principal.require_client()?;
    let key_name = bounded("key_name", given(&query.key_name))?;
    let owner_key_id = match (principal.key.role, key_name) {
        (Role::Admin, _) => None,
        (_, Some(_)) => {
            return Err(ApiError::Forbidden(
                "key_name is for admin keys only: a client key lists its own requests; \
                 drop key_name"
                    .into(),
            ));
        }
        _ => Some(principal.key.id.clone()),
    };
    let store_query = JobListQuery {
        owner_key_id,
        owner_key_name: key_name.map(str::to_string),
        model_id: parse_model(&state, bounded("model_id", given(&query.model_id))?)?,
        state: parse_status(bounded("status", given(&query.status))?)?,
        limit: parse_limit(bounded("limit", given(&query.limit))?)?,
        after: parse_cursor(bounded("cursor", given(&query.cursor))?)?,
    };
    let page = state.store.list_jobs_page(&store_query).await?;
    let body = RequestList {
        requests: page.jobs.iter().map(|job| summary(job, &base)).collect(),
        next_cursor: page.next.map(|c| c.encode()),
    };
    // A history changes with every request: never serve it from a cache.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_one_to_a_hundred_are_refused_by_name() {
        assert_eq!(parse_limit(None).unwrap(), DEFAULT_LIMIT);
        assert_eq!(parse_limit(Some("1")).unwrap(), 1);
        assert_eq!(parse_limit(Some("100")).unwrap(), 100);
        for bad in ["0", "101", "-1", "ten", "1.5", "99999999999"] {
            let err = parse_limit(Some(bad)).unwrap_err();
            assert!(err.to_string().contains("limit"), "{bad}: {err}");
        }
    }

    #[test]
    fn statuses_are_the_wire_names_in_any_case() {
        assert_eq!(parse_status(None).unwrap(), None);
        assert_eq!(
            parse_status(Some("IN_QUEUE")).unwrap(),
            Some(JobState::Queued)
        );
        assert_eq!(
            parse_status(Some("completed")).unwrap(),
            Some(JobState::Completed)
        );
        let err = parse_status(Some("queued")).unwrap_err();
        assert!(err.to_string().contains("IN_QUEUE"), "{err}");
    }

    #[test]
    fn empty_values_count_as_not_given() {
        assert_eq!(given(&Some("  ".into())), None);
        assert_eq!(given(&Some(" x ".into())), Some("x"));
        assert_eq!(given(&None), None);
    }
}
