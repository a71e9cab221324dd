//! Raw MP4 downloads of results: `GET /files/{request_id}.mp4?expires=…&sig=…` (the
//! signed `video.url`, no key) and `GET /queue/{model_id}/requests/{id}/video.mp4` (key
//! auth). Both stream from the blob store (never holding the file) and answer single
//! `Range` requests with 206, so a browser `<video>` can seek.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pipelet_api::wire::ErrorBody;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, IntoResponses};
use uuid::Uuid;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::result_body::{FAL_REQUEST_ID, unreadable};
use crate::result_links::now_secs;
use crate::routes::queue::{completed_result, visible_job};
use crate::state::AppState;

/// Longest `Range` header looked at (a longer one is ignored: the whole file answers).
const MAX_RANGE_HEADER: usize = 200;

/// What a `Range` header asks of a file of a given size.
#[derive(Debug, PartialEq, Eq)]
enum RangeAsk {
    /// No (usable) range: the whole file, 200.
    Whole,
    /// Bytes `start..=end`, 206.
    Part { start: u64, end: u64 },
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range. Several ranges, other
/// units and malformed headers get the whole file (a server may ignore `Range`).
fn parse_range(value: Option<&str>, size: u64) -> RangeAsk {
    let Some(spec) = value
        .filter(|v| v.len() <= MAX_RANGE_HEADER)
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeAsk::Whole;
    };
    if spec.contains(',') {
        return RangeAsk::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsk::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", n) => match number(n) {
            None => RangeAsk::Whole,
            Some(0) => RangeAsk::Unsatisfiable,
            Some(_) if size == 0 => RangeAsk::Unsatisfiable,
            Some(n) => RangeAsk::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        },
        (a, "") => match number(a) {
            None => RangeAsk::Whole,
            Some(a) if a >= size => RangeAsk::Unsatisfiable,
            Some(a) => RangeAsk::Part {
                start: a,
                end: size - 1,
            },
        },
        (a, b) => match (number(a), number(b)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= size {
                    RangeAsk::Unsatisfiable
                } else {
                    RangeAsk::Part {
                        start: a,
                        end: b.min(size - 1),
                    }
                }
            }
            _ => RangeAsk::Whole,
        },
    }
}

/// A strong ETag per stored video: result blob keys are unique per attempt and never
/// rewritten, so key and size identify the bytes.
fn etag(blob: &str, size: u64) -> String {
    let digest = Sha256::digest(blob.as_bytes());
    format!("\"{}-{size}\"", hex::encode(&digest[..8]))
}

/// Whether an `If-None-Match` header lists `tag` (or is `*`).
fn none_match(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == tag)
}

fn header_value(text: String) -> Result<HeaderValue, ApiError> {
    HeaderValue::try_from(text).map_err(|e| ApiError::Internal(format!("bad header: {e}")))
}

/// Streams a completed job's MP4, honouring `Range`, `If-Range` and `If-None-Match`.
async fn serve_mp4(
    state: &AppState,
    job: &pipelet_store::JobRecord,
    result: &pipelet_store::JobResult,
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let size = state
        .blobs
        .size(&result.blob)
        .await
        .map_err(|e| unreadable(job, result, e))?;
    let tag = etag(&result.blob, size);
    let mut headers = HeaderMap::new();
    headers.insert(header::ETAG, header_value(tag.clone())?);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(FAL_REQUEST_ID, header_value(job.id.to_string())?);
    if none_match(request, &tag) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(pipelet_api::wire::VIDEO_CONTENT_TYPE),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        header_value(format!("inline; filename=\"{}.mp4\"", job.id))?,
    );
    // A range of another version of the file would splice two videos: `If-Range` with
    // another tag asks for the whole file instead.
    let if_range_ok = request
        .get(header::IF_RANGE)
        .is_none_or(|v| v.to_str().is_ok_and(|v| v.trim() == tag));
    let range = request
        .get(header::RANGE)
        .filter(|_| if_range_ok)
        .and_then(|v| v.to_str().ok());
    let (status, start, end) = match parse_range(range, size) {
        RangeAsk::Whole => (StatusCode::OK, 0, size),
        RangeAsk::Part { start, end } => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes {start}-{end}/{size}"))?,
            );
            (StatusCode::PARTIAL_CONTENT, start, end + 1)
        }
        RangeAsk::Unsatisfiable => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes */{size}"))?,
            );
            let detail = format!(
                "the range {:?} is outside the video, which is {size} bytes long",
                range.unwrap_or_default()
            );
            return Ok((
                StatusCode::RANGE_NOT_SATISFIABLE,
                headers,
                axum::Json(serde_json::json!({
                    "detail": detail,
                    "code": pipelet_api::ErrorCode::RangeNotSatisfiable,
                })),
            )
                .into_response());
        }
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if start == end {
        return Ok((status, headers, Body::empty()).into_response());
    }
    let bytes = state
        .blobs
        .stream_range(&result.blob, start..end)
        .await
        .map_err(|e| unreadable(job, result, e))?;
    Ok((status, headers, Body::from_stream(bytes)).into_response())
}

/// The answers both MP4 downloads share (the link and the keyed route): the file, a
/// range of it, not modified, expired, or a range past its end.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "only its OpenAPI description is used")]
pub enum Mp4Responses {
    /// The MP4.
    #[response(status = 200, content_type = "video/mp4",
        headers(("Content-Length" = u64), ("ETag" = String),
            ("Accept-Ranges" = String, description = "`bytes`")))]
    Whole(Vec<u8>),
    /// The requested range of the MP4.
    #[response(status = 206, content_type = "video/mp4",
        headers(("Content-Range" = String, description = "`bytes a-b/size`"),
            ("Content-Length" = u64), ("ETag" = String)))]
    Part(Vec<u8>),
    /// `If-None-Match` names the current `ETag`.
    #[response(status = 304)]
    NotModified,
    /// The result expired under the server's retention (`--result-ttl`).
    #[response(status = 410)]
    Expired(ErrorBody),
    /// The range starts past the end of the video.
    #[response(status = 416,
        headers(("Content-Range" = String, description = "`bytes */size`")))]
    RangeNotSatisfiable(ErrorBody),
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// When the link stops working (Unix seconds).
    #[serde(default)]
    expires: Option<String>,
    /// The link's signature (base64url).
    #[serde(default)]
    sig: Option<String>,
}

/// Download a result by its link
///
/// The `video.url` of a result: the raw MP4, with no API key, until the link expires
/// (`--result-url-ttl`, 2 hours by default). Single `Range` requests get 206 (several
/// ranges get the whole file, 200); `If-None-Match` with the `ETag` gets 304.
#[utoipa::path(
    get,
    path = "/files/{file}",
    tag = "queue",
    operation_id = "download",
    params(crate::openapi::FilePath, LinkQuery,
        ("Range" = Option<String>, Header, description = "`bytes=a-b`, `bytes=a-` or \
            `bytes=-n` (the last n bytes).")),
    responses(
        Mp4Responses,
        (status = 403, description = "The link expired, or its signature is invalid (it \
            was changed); fetch the result again for a fresh one.",
            body = pipelet_api::wire::ErrorBody),
        (status = 404, description = "Not a result link, or the request no longer exists.",
            body = pipelet_api::wire::ErrorBody),
    ),
    // The signature in the link is the authorization.
    security(()),
)]
pub async fn download(
    State(state): State<AppState>,
    ApiPath(file): ApiPath<String>,
    ApiQuery(query): ApiQuery<LinkQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let not_a_link = || {
        ApiError::NotFound(
            "not a result link: result links look like /files/{request_id}.mp4?expires=…&sig=…"
                .into(),
        )
    };
    let id = file
        .strip_suffix(".mp4")
        .and_then(|id| Uuid::parse_str(id).ok())
        .ok_or_else(not_a_link)?;
    // The signature first: a forged link costs no database read.
    state.links.verify(
        id,
        query.expires.as_deref(),
        query.sig.as_deref(),
        now_secs(),
    )?;
    let job =
        state.store.get_job(id).await?.ok_or_else(|| {
            ApiError::NotFound("the request of this link no longer exists".into())
        })?;
    if let Some(gone) = crate::retention::gone(&job) {
        return Err(gone);
    }
    let result = job
        .result
        .as_ref()
        .filter(|_| job.state == pipelet_store::JobState::Completed)
        .ok_or_else(|| ApiError::NotFound("the request of this link has no result".into()))?;
    serve_mp4(&state, &job, result, &headers).await
}

/// Download a result's MP4
///
/// The raw MP4 of a `COMPLETED` request, with the same headers as its `video.url` link
/// (`Range` → 206, `ETag`, `If-None-Match` → 304).
#[utoipa::path(
    get,
    path = "/queue/{model_id}/requests/{id}/video.mp4",
    tag = "queue",
    operation_id = "video",
    params(crate::openapi::RequestPath,
        ("Range" = Option<String>, Header, description = "`bytes=a-b`, `bytes=a-` or \
            `bytes=-n` (the last n bytes).")),
    responses(
        Mp4Responses,
        crate::openapi::RequestErrors,
        (status = 409, description = "The request is not `COMPLETED`: the body has its status \
            (and for `FAILED` the reason).", body = crate::openapi::ResultNotReady),
    ),
    security(("bearer" = [])),
)]
pub async fn video(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((model_id, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (job, position) = visible_job(&state, &principal, &model_id, &id).await?;
    let result = completed_result(&state, &principal, &job, position)?;
    serve_mp4(&state, &job, result, &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_rfc_9110() {
        use RangeAsk::*;
        let cases = [
            (None, 100, Whole),
            (Some("bytes=0-99"), 1000, Part { start: 0, end: 99 }),
            (Some("bytes=10-"), 100, Part { start: 10, end: 99 }),
            (Some("bytes=-10"), 100, Part { start: 90, end: 99 }),
            (Some("bytes=-500"), 100, Part { start: 0, end: 99 }),
            (Some("bytes=50-5000"), 100, Part { start: 50, end: 99 }),
            (Some("bytes=100-"), 100, Unsatisfiable),
            (Some("bytes=100-200"), 100, Unsatisfiable),
            (Some("bytes=-0"), 100, Unsatisfiable),
            (Some("bytes=0-1,5-6"), 100, Whole),
            (Some("bytes=5-1"), 100, Whole),
            (Some("items=0-1"), 100, Whole),
            (Some("bytes=x-1"), 100, Whole),
            (Some("bytes=+1-2"), 100, Whole),
        ];
        for (header, size, want) in cases {
            assert_eq!(parse_range(header, size), want, "{header:?} of {size}");
        }
    }
}
