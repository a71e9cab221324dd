//! The JSON body of a webhook, as the public service sends it: `eventType`, `jobId`,
//! `queueName`, `workerName`, `leaseExpiry`, `acquiredAt`, `updatedAt` (ms since the
//! epoch; `null` when the job never had one), `webhookUrl`; `completed` adds `video`,
//! whose `data_uri` and `data_url` are both the download link (a webhook never carries
//! the video inline), and `failed` adds `error`.
//!
//! The download link needs an absolute URL, but the delivery loop has no request to take
//! a Host from: it uses `--public-url` when set, else `http://<listen address>`. Set
//! `--public-url` whenever receivers reach the server under another name (a proxy, a
//! wildcard listen address such as `0.0.0.0`).

use pipelet_store::{JobResult, WebhookEvent, WebhookEventType};
use serde::Serialize;

use crate::config::Config;
use crate::state::AppState;

/// The `video` of a `completed` event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WebhookVideo {
    /// The download link (never the video inline, whatever `--result-data-uri` says).
    pub data_uri: String,
    /// The download link again, under the public service's other name for it.
    pub data_url: String,
    /// The download link: it works for `--result-url-ttl` from this attempt on.
    pub url: String,
    /// Always `video/mp4`.
    pub content_type: String,
    /// `{job_id}.mp4`.
    pub file_name: String,
    /// The MP4's size in bytes.
    pub file_size: u64,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Frames in the video.
    pub num_frames: u32,
    /// Seconds: `num_frames / fps`.
    pub duration: f64,
}

/// A webhook body.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    /// `acquired`, `completed`, `failed`, `cancelled` or `retried`.
    pub event_type: &'static str,
    /// The request id the create answered with.
    pub job_id: String,
    /// The model id the job was created under.
    pub queue_name: String,
    /// The worker holding (or last holding) the job; `None` if none ever claimed it.
    pub worker_name: Option<String>,
    /// Ms since the epoch when the job's lease runs out (or ran out, for an event that
    /// ended it); `None` if it never had one.
    pub lease_expiry: Option<i64>,
    /// Ms since the epoch when a worker last claimed the job; `None` if never.
    pub acquired_at: Option<i64>,
    /// Ms since the epoch of the state change this event reports.
    pub updated_at: i64,
    /// Where this body is sent: the job's `webhook_url`.
    pub webhook_url: String,
    /// `completed` only: the video, by link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<WebhookVideo>,
    /// `failed` only: the failure reason (empty if none was recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The base of links sent without a request: `--public-url`, else the listen address.
pub fn base_url(config: &Config) -> String {
    match &config.public_url {
        Some(url) => url.clone(),
        None => format!("{}://{}", config.scheme(), config.listen),
    }
}

/// The `video` of a completed job, with `link` as its download link.
pub fn video(event: &WebhookEvent, result: &JobResult, link: String) -> WebhookVideo {
    let v = crate::result_body::video_result(
        event.job_id,
        result,
        result.bytes,
        link.clone(),
        link.clone(),
    );
    WebhookVideo {
        data_uri: v.data_uri,
        data_url: link.clone(),
        url: link,
        content_type: v.content_type,
        file_name: v.file_name,
        file_size: v.file_size,
        width: v.width,
        height: v.height,
        fps: v.fps,
        num_frames: v.num_frames,
        duration: v.duration,
    }
}

/// The body of `event`; `link` is the download link of a completed job's video.
pub fn body(event: &WebhookEvent, link: Option<String>) -> WebhookBody {
    let snapshot = &event.snapshot;
    let video = match (&event.event_type, &snapshot.result, link) {
        (WebhookEventType::Completed, Some(result), Some(link)) => Some(video(event, result, link)),
        _ => None,
    };
    let error = match event.event_type {
        WebhookEventType::Failed => Some(snapshot.error.clone().unwrap_or_default()),
        _ => None,
    };
    WebhookBody {
        event_type: event.event_type.as_str(),
        job_id: event.job_id.to_string(),
        queue_name: snapshot.model_id.clone(),
        worker_name: snapshot.worker_name.clone(),
        lease_expiry: snapshot.lease_expiry_ms,
        acquired_at: snapshot.acquired_at_ms,
        updated_at: snapshot.updated_at_ms,
        webhook_url: event.url.clone(),
        video,
        error,
    }
}

/// The download link of a completed job's video: an S3 presigned URL with `--presign`,
/// else a link signed by this server under [`base_url`]. It works for
/// `--result-url-ttl` from this attempt on (each retry signs a fresh one).
pub async fn download_link(
    state: &AppState,
    event: &WebhookEvent,
    result: &JobResult,
) -> Result<String, String> {
    let ttl = state.config.result_url_ttl;
    if state.config.presign {
        match state.blobs.presigned_get(&result.blob, ttl).await {
            Ok(Some(url)) => return Ok(url),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot presign the result: {e}")),
        }
    }
    let expires = crate::result_links::now_secs().saturating_add(ttl.as_secs().max(1));
    Ok(format!(
        "{}{}",
        base_url(&state.config),
        state.links.path(event.job_id, expires)
    ))
}

/// The serialized body of `event`, ready to sign and send.
pub async fn render(state: &AppState, event: &WebhookEvent) -> Result<Vec<u8>, String> {
    let link = match (&event.event_type, &event.snapshot.result) {
        (WebhookEventType::Completed, Some(result)) => {
            Some(download_link(state, event, result).await?)
        }
        _ => None,
    };
    serde_json::to_vec(&body(event, link)).map_err(|e| format!("cannot encode the body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipelet_store::WebhookSnapshot;
    use uuid::Uuid;

    fn event(kind: WebhookEventType) -> WebhookEvent {
        WebhookEvent {
            id: "msg_1".into(),
            seq: 1,
            job_id: Uuid::nil(),
            owner_key_id: "key".into(),
            url: "http://receiver.example/hook".into(),
            event_type: kind,
            snapshot: WebhookSnapshot {
                model_id: "wan/t2v".into(),
                worker_name: Some("w1".into()),
                lease_expiry_ms: Some(3000),
                acquired_at_ms: Some(1000),
                updated_at_ms: 2000,
                error: Some("the worker crashed".into()),
                result: Some(JobResult {
                    blob: "results/x".into(),
                    bytes: 1234,
                    video: pipelet_store::RenderedVideo {
                        width: 64,
                        height: 48,
                        frames: 10,
                        fps: 5,
                        backend: "preview".into(),
                        run_seconds: 1.0,
                    },
                }),
            },
            attempts: 0,
            created_at_ms: 2000,
        }
    }

    #[test]
    fn completed_has_the_link_twice_and_the_metadata() {
        let body = serde_json::to_value(body(
            &event(WebhookEventType::Completed),
            Some("http://h/files/x.mp4?sig=1".into()),
        ))
        .expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "eventType": "completed",
                "jobId": "00000000-0000-0000-0000-000000000000",
                "queueName": "wan/t2v",
                "workerName": "w1",
                "leaseExpiry": 3000,
                "acquiredAt": 1000,
                "updatedAt": 2000,
                "webhookUrl": "http://receiver.example/hook",
                "video": {
                    "data_uri": "http://h/files/x.mp4?sig=1",
                    "data_url": "http://h/files/x.mp4?sig=1",
                    "url": "http://h/files/x.mp4?sig=1",
                    "content_type": "video/mp4",
                    "file_name": "00000000-0000-0000-0000-000000000000.mp4",
                    "file_size": 1234,
                    "width": 64,
                    "height": 48,
                    "fps": 5,
                    "num_frames": 10,
                    "duration": 2.0,
                }
            })
        );
    }

    #[test]
    fn failed_has_the_error_and_others_have_neither() {
        let failed =
            serde_json::to_value(body(&event(WebhookEventType::Failed), None)).expect("json");
        assert_eq!(failed["eventType"], "failed");
        assert_eq!(failed["error"], "the worker crashed");
        assert!(failed.get("video").is_none());
        for kind in [
            WebhookEventType::Acquired,
            WebhookEventType::Cancelled,
            WebhookEventType::Retried,
        ] {
            let name = kind.as_str();
            let value = serde_json::to_value(body(&event(kind), None)).expect("json");
            assert_eq!(value["eventType"], name);
            assert!(value.get("video").is_none(), "{value}");
            assert!(value.get("error").is_none(), "{value}");
        }
    }
}
