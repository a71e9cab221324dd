//! [`JobSource`] over the server's worker API (`/worker/v1`), for `pipelet worker` on
//! GPU hosts: only a server URL and a worker key, no database credentials.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use pipelet_api::clock::now_ms;
use pipelet_api::worker_protocol::{
    ClaimBody, ClaimRequest, ClaimedJob, CompleteBody, FailBody, Failure, HeartbeatAnswer,
    HeartbeatBody, HeartbeatReply, LeaseBody, LeaseRef, ProgressUpdate, RenderedVideo,
    UploadAnswer, WORKER_API_PREFIX,
};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::{Assignment, JobSource, SourceError};

/// Time for any call but a claim's wait and an upload.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest input image accepted from the server.
const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// A [`JobSource`] that calls a pipelet server's `/worker/v1` with a worker key.
pub struct HttpSource {
    client: reqwest::Client,
    base: String,
    key: String,
    /// The renderer's name, sent with each claim (the server counts tasks by it).
    backend: Option<String>,
}

impl HttpSource {
    /// A source for the server at base URL `server` (e.g. `http://gpu-queue:8080`); `key`
    /// goes in each call's bearer token. Fails only if no HTTP client can be built.
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

    /// Sends a call that is not about one job (the claim).
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, SourceError> {
        self.send_as(req, false).await
    }

    /// Sends a call about one job, where a 404 means the job is gone.
    async fn send_job(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, SourceError> {
        self.send_as(req, true).await
    }

    async fn send_as(
        &self,
        req: reqwest::RequestBuilder,
        job_route: bool,
    ) -> Result<reqwest::Response, SourceError> {
        let response = req
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| SourceError::Unavailable(format!("server unreachable: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.json::<serde_json::Value>().await.ok();
        Err(refusal(status, body.as_ref(), job_route))
    }

    async fn post_json(
        &self,
        id: Uuid,
        what: &str,
        body: &impl serde::Serialize,
    ) -> Result<reqwest::Response, SourceError> {
        self.send_job(
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
            has_input: job.has_input,
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
            progress,
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
            .send_job(self.client.get(url).timeout(CALL_TIMEOUT))
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

    async fn upload_result(&self, lease: &LeaseRef, file: &Path) -> Result<(), SourceError> {
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
            .send_job(
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
        Ok(())
    }

    async fn complete(&self, lease: &LeaseRef, video: &RenderedVideo) -> Result<(), SourceError> {
        let body = CompleteBody {
            lease_token: lease.token,
            video: video.clone(),
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

/// What an error answer means to the worker, by its `code` (and the `lease_lost` flag
/// the worker API sets on its conflicts): a refused key stops the worker, a lost lease
/// drops the job, a server in trouble is retried, anything else is a refusal.
fn refusal(status: StatusCode, body: Option<&serde_json::Value>, job_route: bool) -> SourceError {
    let field = |name: &str| body.and_then(|b| b.get(name));
    let detail = field("detail").and_then(|d| d.as_str()).unwrap_or_default();
    let code = field("code").and_then(|c| c.as_str()).unwrap_or_default();
    let lease_lost = field("lease_lost").and_then(|l| l.as_bool());
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return SourceError::Unauthorized(format!("{status}: {detail}"));
    }
    if code == "lease_lost" || lease_lost == Some(true) {
        return SourceError::LeaseLost;
    }
    // A job route's 404 is a job that is gone (`request_not_found`, `not_found`, or an
    // older server's bare 404).
    if status == StatusCode::NOT_FOUND
        && job_route
        && matches!(code, "" | "request_not_found" | "not_found")
    {
        return SourceError::LeaseLost;
    }
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return SourceError::Unavailable(format!("server answered {status}: {detail}"));
    }
    SourceError::Rejected(format!("server answered {status} ({code}): {detail}"))
}
