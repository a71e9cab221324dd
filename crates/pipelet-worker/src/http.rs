//! [`JobSource`] over the server's worker API (`/worker/v1`), for `pipelet worker` on
//! GPU hosts: only a server URL and a worker key, no database credentials.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use pipelet_api::worker_protocol::{
    ClaimBody, ClaimedJob, CompleteBody, FailBody, HeartbeatAnswer, HeartbeatBody, LeaseBody,
    UploadAnswer, WORKER_API_PREFIX, WireProgress,
};
use pipelet_store::{
    ClaimRequest, Failure, HeartbeatReply, JobResult, LeaseRef, ProgressUpdate, now_ms,
};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::{Assignment, JobSource, SourceError};

/// Time for any call but a claim's wait and an upload.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest input image accepted from the server.
const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

pub struct HttpSource {
    client: reqwest::Client,
    base: String,
    key: String,
    /// The renderer's name, sent with each claim (the server counts tasks by it).
    backend: Option<String>,
}

impl HttpSource {
    pub fn new(server: &str, key: &str) -> Result<Self, SourceError> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("pipelet-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            client,
            base: format!("{}{WORKER_API_PREFIX}", server.trim_end_matches('/')),
            key: key.to_string(),
            backend: None,
        })
    }

    /// Names the renderer (`preview` or `wan`) in every claim, so the server knows how
    /// many tasks a job has before the first progress report.
    pub fn with_backend(mut self, backend: &str) -> Self {
        self.backend = Some(backend.to_string());
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn job_url(&self, id: Uuid, what: &str) -> String {
        self.url(&format!("/jobs/{id}/{what}"))
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, SourceError> {
        let response = req
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| SourceError::Unavailable(format!("server unreachable: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let detail = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
            .unwrap_or_default();
        Err(match status {
            StatusCode::CONFLICT | StatusCode::NOT_FOUND => SourceError::LeaseLost,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => SourceError::Unavailable(format!(
                "the server refused this worker's key ({status}): {detail}"
            )),
            _ => SourceError::Unavailable(format!("server answered {status}: {detail}")),
        })
    }

    async fn post_json(
        &self,
        id: Uuid,
        what: &str,
        body: &impl serde::Serialize,
    ) -> Result<reqwest::Response, SourceError> {
        self.send(
            self.client
                .post(self.job_url(id, what))
                .timeout(CALL_TIMEOUT)
                .json(body),
        )
        .await
    }
}

#[async_trait]
impl JobSource for HttpSource {
    async fn claim(
        &self,
        req: &ClaimRequest,
        wait: Duration,
    ) -> Result<Option<Assignment>, SourceError> {
        let body = ClaimBody {
            worker_id: req.worker_id.clone(),
            pipelines: req.pipelines.clone(),
            loaded: req.loaded,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            backend: self.backend.clone(),
        };
        let response = self
            .send(
                self.client
                    .post(self.url("/claim"))
                    .timeout(wait + CALL_TIMEOUT)
                    .json(&body),
            )
            .await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let job: ClaimedJob = response
            .json()
            .await
            .map_err(|e| SourceError::Unavailable(format!("bad claim answer: {e}")))?;
        let job_id = Uuid::parse_str(&job.job_id)
            .map_err(|_| SourceError::Unavailable(format!("bad job id {:?}", job.job_id)))?;
        Ok(Some(Assignment {
            lease: LeaseRef {
                job_id,
                token: job.lease_token,
            },
            model_id: job.model_id,
            pipeline: job.pipeline,
            spec: job.spec,
            input_blob: job.has_input.then(|| "remote".to_string()),
            attempt: job.attempt,
            heartbeat: Some(Duration::from_millis(job.heartbeat_ms.max(100))),
        }))
    }

    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
    ) -> Result<HeartbeatReply, SourceError> {
        let body = HeartbeatBody {
            lease_token: lease.token,
            progress: progress.map(|p| WireProgress {
                done: p.done,
                total: p.total,
            }),
        };
        let answer: HeartbeatAnswer = self
            .post_json(lease.job_id, "heartbeat", &body)
            .await?
            .json()
            .await
            .map_err(|e| SourceError::Unavailable(format!("bad heartbeat answer: {e}")))?;
        Ok(HeartbeatReply {
            cancel_requested: answer.cancel_requested,
            expires_at_ms: now_ms()
                + i64::try_from(answer.lease_expires_in_ms).unwrap_or(i64::MAX / 2),
        })
    }

    async fn fetch_input(&self, job: &Assignment) -> Result<Vec<u8>, SourceError> {
        let url = format!(
            "{}?lease_token={}",
            self.job_url(job.lease.job_id, "input"),
            job.lease.token
        );
        let response = self
            .send(self.client.get(url).timeout(CALL_TIMEOUT))
            .await?;
        if response.content_length().unwrap_or(0) > MAX_INPUT_BYTES as u64 {
            return Err(SourceError::InvalidJob("input image too large".into()));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| SourceError::Unavailable(format!("input download failed: {e}")))?;
        Ok(bytes.to_vec())
    }

    async fn upload_result(&self, lease: &LeaseRef, file: &Path) -> Result<String, SourceError> {
        let handle = tokio::fs::File::open(file)
            .await
            .map_err(|e| SourceError::Unavailable(format!("cannot open result: {e}")))?;
        let size = handle
            .metadata()
            .await
            .map(|m| m.len())
            .map_err(|e| SourceError::Unavailable(format!("cannot stat result: {e}")))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(handle));
        let url = format!(
            "{}?lease_token={}",
            self.job_url(lease.job_id, "result"),
            lease.token
        );
        let answer: UploadAnswer = self
            .send(
                self.client
                    .put(url)
                    .header(reqwest::header::CONTENT_LENGTH, size)
                    .header(reqwest::header::CONTENT_TYPE, "video/mp4")
                    .body(body),
            )
            .await?
            .json()
            .await
            .map_err(|e| SourceError::Unavailable(format!("bad upload answer: {e}")))?;
        if answer.bytes != size {
            return Err(SourceError::Unavailable(format!(
                "upload truncated: sent {size} bytes, server stored {}",
                answer.bytes
            )));
        }
        Ok(format!("remote:{}", lease.job_id))
    }

    async fn complete(&self, lease: &LeaseRef, result: &JobResult) -> Result<(), SourceError> {
        let body = CompleteBody {
            lease_token: lease.token,
            width: result.width,
            height: result.height,
            frames: result.frames,
            fps: result.fps,
            backend: result.backend.clone(),
            run_seconds: result.run_seconds,
        };
        self.post_json(lease.job_id, "complete", &body).await?;
        Ok(())
    }

    async fn fail(
        &self,
        lease: &LeaseRef,
        failure: &Failure,
        retryable: bool,
    ) -> Result<(), SourceError> {
        let body = FailBody {
            lease_token: lease.token,
            error: failure.reason.clone(),
            detail: failure.detail.clone(),
            retryable,
        };
        self.post_json(lease.job_id, "fail", &body).await?;
        Ok(())
    }

    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<(), SourceError> {
        let body = LeaseBody {
            lease_token: lease.token,
        };
        self.post_json(lease.job_id, "cancelled", &body).await?;
        Ok(())
    }
}
