//! The result body, streamed: `{"video": {"data_uri": "<base64 of the MP4>", ...}}` is
//! written chunk by chunk from the blob store, so a large video is never held whole in
//! memory (nor its base64, which is a third bigger).

use axum::body::{Body, Bytes};
use axum::http::{HeaderName, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::{StreamExt, stream};
use pipelet_api::wire::{ResultResponse, VIDEO_CONTENT_TYPE, VideoResult};
use pipelet_store::blob::Blobs;
use pipelet_store::{JobRecord, JobResult, StoreError};

use crate::config::ResultDataUri;
use crate::error::ApiError;

/// The request's id as a header: fal's clients fill in `requestId` from it.
pub const FAL_REQUEST_ID: HeaderName = HeaderName::from_static("x-fal-request-id");

/// Encodes a byte stream as base64 without padding in the middle: each chunk is cut to
/// a multiple of 3 bytes and the remainder carried into the next.
fn base64_stream(
    input: impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let carry = Vec::<u8>::new();
    stream::unfold(
        (Box::pin(input), carry, false),
        |(mut input, mut carry, done)| async move {
            if done {
                return None;
            }
            match input.next().await {
                Some(Ok(chunk)) => {
                    carry.extend_from_slice(&chunk);
                    let whole = carry.len() - carry.len() % 3;
                    let encoded = STANDARD.encode(&carry[..whole]);
                    carry.drain(..whole);
                    Some((Ok(Bytes::from(encoded)), (input, carry, false)))
                }
                Some(Err(e)) => Some((Err(e), (input, carry, true))),
                None => {
                    let encoded = STANDARD.encode(&carry);
                    Some((Ok(Bytes::from(encoded)), (input, Vec::new(), true)))
                }
            }
        },
    )
    .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(b) if b.is_empty())))
}

/// The error for a result blob that cannot be read: 410 when it is gone.
pub(crate) fn unreadable(job: &JobRecord, result: &JobResult, e: StoreError) -> ApiError {
    // Retention may delete it between reading the job and reading the video.
    if e.is_blob_not_found() {
        return ApiError::Gone(
            "the request completed, but its result is no longer stored (results are \
             kept for a limited time, --result-ttl); submit the request again"
                .into(),
        );
    }
    ApiError::Internal(format!(
        "result {} of job {} is unreadable: {e}",
        result.blob, job.id
    ))
}

/// The result body of a completed job; `url` is its `video.url`, which `data_uri` holds
/// too in [`ResultDataUri::Url`] mode (then the MP4 itself is not read).
pub async fn stream(
    blobs: &Blobs,
    job: &JobRecord,
    result: &JobResult,
    url: String,
    mode: ResultDataUri,
) -> Result<Response, ApiError> {
    let headers = [
        (header::CONTENT_TYPE, "application/json".to_string()),
        (FAL_REQUEST_ID, job.id.to_string()),
    ];
    if mode == ResultDataUri::Url {
        let size = blobs
            .size(&result.blob)
            .await
            .map_err(|e| unreadable(job, result, e))?;
        let body = ResultResponse {
            video: video_result(job.id, result, size, url.clone(), url),
        };
        return Ok((headers, axum::Json(body)).into_response());
    }
    let (size, bytes) = blobs
        .stream(&result.blob)
        .await
        .map_err(|e| unreadable(job, result, e))?;
    let shell = ResultResponse {
        video: video_result(job.id, result, size, String::new(), url),
    };
    let (prefix, suffix) = shell.stream_parts();
    let body = stream::once(async move { Ok(Bytes::from(prefix)) })
        .chain(base64_stream(bytes))
        .chain(stream::once(async move { Ok(Bytes::from(suffix)) }));
    Ok((headers, Body::from_stream(body)).into_response())
}

/// The `video` of job `id`'s result: what the result endpoint answers, and what a
/// webhook's `video` repeats (with links in place of the base64).
pub(crate) fn video_result(
    id: uuid::Uuid,
    result: &JobResult,
    size: u64,
    data_uri: String,
    url: String,
) -> VideoResult {
    VideoResult {
        data_uri,
        url: Some(url),
        content_type: VIDEO_CONTENT_TYPE.into(),
        file_name: format!("{id}.mp4"),
        file_size: size,
        width: result.video.width,
        height: result.video.height,
        fps: result.video.fps,
        num_frames: result.video.frames,
        duration: f64::from(result.video.frames) / f64::from(result.video.fps.max(1)),
        backend: result.video.backend.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;

    #[tokio::test]
    async fn base64_stream_matches_one_shot_encoding() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        for split in [1, 2, 3, 4, 5, 7, 64, 999, 1000] {
            let chunks: Vec<std::io::Result<Bytes>> = data
                .chunks(split)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let out: Vec<Bytes> = base64_stream(stream::iter(chunks))
                .try_collect()
                .await
                .unwrap();
            assert_eq!(
                out.concat(),
                STANDARD.encode(&data).into_bytes(),
                "split {split}"
            );
        }
    }
}
