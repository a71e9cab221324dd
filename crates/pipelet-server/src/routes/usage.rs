//! Usage reports: `GET /usage` (a key's own) and `GET /admin/v1/usage` (every key's, or
//! one name's; admin keys only). Both read the store's `usage_daily` rows, which every
//! terminal transition writes in its own transaction, so reports survive retention
//! deleting the jobs. Days are UTC; a range is at most [`MAX_DAYS`] days.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pipelet_api::wire::usage::{day_number, day_text, parse_day};
use pipelet_api::wire::{UsageReport, UsageRow, UsageTotals};
use pipelet_api::{ErrorCode, InputError};
use pipelet_store::{Role, UsageQuery, UsageRecord, now_ms};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::routes::admin_keys::AdminErrors;
use crate::state::AppState;

/// The longest range one report covers, in days (both ends included).
pub const MAX_DAYS: i64 = 366;
/// Days a report covers when `from` is not given: the last 30, today included.
pub const DEFAULT_DAYS: i64 = 30;
/// Longer key names are not names of this server (bounds the work).
const MAX_NAME_LEN: usize = 256;

/// The days of a report, and (admin keys) whose.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageParams {
    /// The first day (`YYYY-MM-DD`, UTC); default: 29 days before `to`.
    #[param(example = "2026-01-01")]
    #[serde(default)]
    from: Option<String>,
    /// The last day (`YYYY-MM-DD`, UTC), included; default: today.
    #[param(example = "2026-01-31")]
    #[serde(default)]
    to: Option<String>,
    /// `GET /admin/v1/usage` only: only keys of this name (revoked ones too).
    #[serde(default)]
    key_name: Option<String>,
}

fn invalid(field: &str, detail: String) -> ApiError {
    ApiError::Invalid(InputError::field(field, detail).with_code(ErrorCode::InvalidInput))
}

/// A parameter's value, `None` when absent or empty (as an empty form field sends it).
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn day(field: &str, value: &str) -> Result<i64, ApiError> {
    parse_day(value).ok_or_else(|| {
        let shown: String = value.chars().take(40).collect();
        invalid(
            field,
            format!("{field} must be a date as YYYY-MM-DD (UTC), got '{shown}'"),
        )
    })
}

/// The range the parameters ask for, as day numbers, checked: `from` ≤ `to`, at most
/// [`MAX_DAYS`] days. Absent ends default to today and 29 days before `to`.
fn range(params: &UsageParams, today: i64) -> Result<(i64, i64), ApiError> {
    let to = match given(&params.to) {
        Some(text) => day("to", text)?,
        None => today,
    };
    let from = match given(&params.from) {
        Some(text) => day("from", text)?,
        None => to - (DEFAULT_DAYS - 1),
    };
    if from > to {
        return Err(invalid(
            "from",
            format!(
                "from ({}) is after to ({}): from is the first day, to the last",
                day_text(from),
                day_text(to)
            ),
        ));
    }
    if to - from + 1 > MAX_DAYS {
        return Err(invalid(
            "from",
            format!(
                "the range {} to {} is {} days; a report covers at most {MAX_DAYS}: ask for \
                 a shorter range",
                day_text(from),
                day_text(to),
                to - from + 1
            ),
        ));
    }
    Ok((from, to))
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn wire_row(record: UsageRecord) -> UsageRow {
    UsageRow {
        day: record.day,
        key_name: record.key_name,
        model_id: record.model_id,
        completed: record.completed,
        failed: record.failed,
        cancelled: record.cancelled,
        video_seconds: seconds(record.video_ms),
        run_seconds: seconds(record.run_ms),
    }
}

async fn report(
    state: &AppState,
    params: &UsageParams,
    owner_key_id: Option<String>,
    owner_key_name: Option<String>,
) -> Result<Response, ApiError> {
    let (from, to) = range(params, day_number(now_ms()))?;
    let query = UsageQuery {
        from_day: day_text(from),
        to_day: day_text(to),
        owner_key_id,
        owner_key_name,
    };
    let rows: Vec<UsageRow> = state
        .store
        .usage(&query)
        .await?
        .into_iter()
        .map(wire_row)
        .collect();
    let body = UsageReport {
        from: query.from_day,
        to: query.to_day,
        totals: UsageTotals::of(&rows),
        rows,
    };
    // Usage grows with every finished request: never serve it from a cache.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

/// Your usage
///
/// What this key used, per UTC day and model: requests by how they ended (completed,
/// failed, cancelled), seconds of video produced and seconds workers spent rendering
/// (completed requests; a failed attempt reports no time). `from` and `to` default to the
/// last 30 days; a range is at most 366 days. Counts are kept when retention deletes
/// the requests themselves.
#[utoipa::path(
    get,
    path = "/usage",
    tag = "queue",
    operation_id = "own_usage",
    params(UsageParams),
    responses(
        (status = 200, description = "The key's usage, by day and model.", body = UsageReport),
        crate::openapi::KeyErrors,
        (status = 400, description = "A malformed query (e.g. a parameter given twice).",
            body = pipelet_api::wire::ErrorBody),
        (status = 422, description = "A bad date or range (`invalid_input`): `field` names \
            it and `detail` says what is allowed.", body = pipelet_api::wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn own(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> Result<Response, ApiError> {
    principal.require_client()?;
    if given(&params.key_name).is_some() {
        return Err(ApiError::Forbidden(
            "key_name is for GET /admin/v1/usage (admin keys): GET /usage reports this \
             key's own usage; drop key_name"
                .into(),
        ));
    }
    report(&state, &params, Some(principal.key.id.clone()), None).await
}

/// Usage of every key
///
/// What keys used, per UTC day, key and model (`key_name` narrows it to keys of one
/// name, revoked ones too): requests by how they ended, seconds of video produced and
/// seconds workers spent rendering (completed requests). `from` and `to` default to the
/// last 30 days; a range is at most 366 days. Admin keys only.
#[utoipa::path(
    get,
    path = "/admin/v1/usage",
    tag = "admin",
    operation_id = "all_usage",
    params(UsageParams),
    responses(
        (status = 200, description = "Usage by day, key and model.", body = UsageReport),
        AdminErrors,
        (status = 422, description = "A bad date, range or `key_name` (`invalid_input`).",
            body = pipelet_api::wire::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub async fn all(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(params): ApiQuery<UsageParams>,
) -> Result<Response, ApiError> {
    if principal.key.role != Role::Admin {
        return Err(ApiError::Forbidden(
            "GET /admin/v1/usage needs an admin key; GET /usage shows your own key's usage".into(),
        ));
    }
    let name = given(&params.key_name);
    if name.is_some_and(|n| n.len() > MAX_NAME_LEN) {
        return Err(invalid(
            "key_name",
            format!("key_name is too long (at most {MAX_NAME_LEN} bytes)"),
        ));
    }
    report(&state, &params, None, name.map(str::to_string)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(from: Option<&str>, to: Option<&str>) -> UsageParams {
        UsageParams {
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            key_name: None,
        }
    }

    #[test]
    fn ranges_default_to_the_last_thirty_days() {
        let today = parse_day("2026-03-10").unwrap_or_default();
        let (from, to) = range(&params(None, None), today).unwrap();
        assert_eq!(
            (day_text(from), day_text(to)),
            ("2026-02-09".into(), "2026-03-10".into())
        );
        let (from, to) = range(&params(Some("2026-01-01"), Some("2026-01-01")), today).unwrap();
        assert_eq!(from, to);
        assert!(range(&params(Some("2025-01-01"), Some("2026-01-01")), today).is_ok());
        assert!(range(&params(Some("2024-12-31"), Some("2026-01-01")), today).is_err());
        assert!(range(&params(Some("2026-01-02"), Some("2026-01-01")), today).is_err());
        assert!(range(&params(Some("2026-02-30"), None), today).is_err());
        assert!(range(&params(Some(" "), Some("")), today).is_ok());
    }
}
