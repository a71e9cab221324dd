//! The queue as lease holders use it, over the store and the blob store: the one place
//! a claim waits for a job. The worker API's handlers call it for remote workers, and it
//! is the [`JobSource`] of `serve`'s in-process workers, so both take the same path.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pipelet_api::worker_protocol::{
    ClaimRequest, Failure, HeartbeatReply, JobResult, LeaseRef, ProgressUpdate, RenderedVideo,
};
use pipelet_store::blob::Blobs;
use pipelet_store::prelude::*;
use pipelet_store::{JobRecord, JobState, Lease, StoreError};
use pipelet_worker::{Assignment, JobSource, SourceError};

/// Claims, heartbeats and completions over the store and blobs; one per server,
/// shared by the worker API handlers and the in-process workers.
pub struct QueueService {
    store: Arc<dyn Store>,
    blobs: Blobs,
    lease_ms: i64,
}

impl QueueService {
    /// `lease` is how long each heartbeat extends a lease (`--lease-secs`).
    pub fn new(store: Arc<dyn Store>, blobs: Blobs, lease: Duration) -> Self {
        Self {
            store,
            blobs,
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Leases the next job for `req`, waiting up to `wait` for one to be queued.
    pub async fn claim_wait(
        &self,
        req: &ClaimRequest,
        wait: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let deadline = tokio::time::Instant::now() + wait;
        let available = self.store.job_available();
        loop {
            // Register interest before looking, so a job created in between still wakes us.
            let notified = available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(lease) = self.store.claim(req).await? {
                return Ok(Some(lease));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    /// The job if `lease` is its current lease: `LeaseLost` when the token is stale or
    /// the job is no longer running, `NotFound` when there is no such job.
    pub async fn leased(&self, lease: &LeaseRef) -> Result<JobRecord, StoreError> {
        match self.store.get_job(lease.job_id).await? {
            Some(job) if job.state == JobState::Running && job.lease_token == lease.token => {
                Ok(job)
            }
            Some(_) => Err(StoreError::LeaseLost),
            None => Err(StoreError::NotFound),
        }
    }

    /// The result of `video` as uploaded under `lease`, or `None` when nothing was.
    pub async fn uploaded_result(
        &self,
        lease: &LeaseRef,
        video: RenderedVideo,
    ) -> Option<JobResult> {
        let key = Blobs::result_key(lease.job_id, lease.token);
        let bytes = self.blobs.size(&key).await.ok()?;
        Some(JobResult {
            blob: key,
            bytes,
            video,
        })
    }
}

fn source_error(e: StoreError) -> SourceError {
    match e {
        StoreError::LeaseLost | StoreError::NotFound => SourceError::LeaseLost,
        other => SourceError::Unavailable(other.to_string()),
    }
}

/// What a worker needs of a leased job.
pub fn assignment(lease: Lease, heartbeat: Option<Duration>) -> Assignment {
    Assignment {
        lease: lease.lease,
        model_id: lease.job.model_id,
        pipeline: lease.job.pipeline,
        spec: lease.job.spec,
        has_input: lease.job.input_blob.is_some(),
        attempt: lease.job.attempt,
        heartbeat,
    }
}

#[async_trait]
impl JobSource for QueueService {
    async fn claim(
        &self,
        req: &ClaimRequest,
        wait: Duration,
    ) -> Result<Option<Assignment>, SourceError> {
        let lease = self.claim_wait(req, wait).await.map_err(source_error)?;
        Ok(lease.map(|lease| assignment(lease, None)))
    }

    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
    ) -> Result<HeartbeatReply, SourceError> {
        self.store
            .heartbeat(lease, progress, self.lease_ms)
            .await
            .map_err(source_error)
    }

    async fn fetch_input(&self, job: &Assignment) -> Result<Vec<u8>, SourceError> {
        let record = self.leased(&job.lease).await.map_err(source_error)?;
        let key = record.input_blob.ok_or_else(|| {
            SourceError::InvalidJob("image-to-video job has no input image".into())
        })?;
        let bytes =
            self.blobs.get(&key).await.map_err(|e| {
                SourceError::Unavailable(format!("cannot read input image {key}: {e}"))
            })?;
        Ok(bytes.to_vec())
    }

    async fn upload_result(&self, lease: &LeaseRef, file: &Path) -> Result<(), SourceError> {
        let key = Blobs::result_key(lease.job_id, lease.token);
        self.blobs
            .put_file(&key, file)
            .await
            .map(|_| ())
            .map_err(|e| SourceError::Unavailable(format!("cannot store result: {e}")))
    }

    async fn complete(&self, lease: &LeaseRef, video: &RenderedVideo) -> Result<(), SourceError> {
        let result = self
            .uploaded_result(lease, video.clone())
            .await
            .ok_or_else(|| SourceError::Unavailable("the result was not stored".into()))?;
        self.store
            .complete(lease, &result)
            .await
            .map_err(source_error)
    }

    async fn fail(
        &self,
        lease: &LeaseRef,
        failure: &Failure,
        retryable: bool,
    ) -> Result<(), SourceError> {
        self.store
            .fail(lease, failure, retryable)
            .await
            .map(|_| ())
            .map_err(source_error)
    }

    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<(), SourceError> {
        self.store.ack_cancelled(lease).await.map_err(source_error)
    }
}
