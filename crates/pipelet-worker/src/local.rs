//! [`JobSource`] straight over the store and blob store, for `serve`'s in-process workers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pipelet_store::blob::Blobs;
use pipelet_store::{
    ClaimRequest, Failure, HeartbeatReply, JobResult, LeaseRef, ProgressUpdate, Store, StoreError,
};

use crate::{Assignment, JobSource, SourceError};

pub struct LocalSource {
    store: Arc<dyn Store>,
    blobs: Blobs,
    lease_ms: i64,
}

impl LocalSource {
    pub fn new(store: Arc<dyn Store>, blobs: Blobs, lease: Duration) -> Self {
        Self {
            store,
            blobs,
            lease_ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

fn store_error(e: StoreError) -> SourceError {
    match e {
        StoreError::LeaseLost | StoreError::NotFound => SourceError::LeaseLost,
        other => SourceError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl JobSource for LocalSource {
    async fn claim(
        &self,
        req: &ClaimRequest,
        wait: Duration,
    ) -> Result<Option<Assignment>, SourceError> {
        let deadline = tokio::time::Instant::now() + wait;
        let available = self.store.job_available();
        loop {
            // Register interest before looking, so a job created in between still wakes us.
            let notified = available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(lease) = self.store.claim(req).await.map_err(store_error)? {
                let spec = serde_json::from_value(lease.job.spec.clone())
                    .map_err(|e| SourceError::InvalidJob(e.to_string()));
                return match spec {
                    Ok(spec) => Ok(Some(Assignment {
                        lease: lease.lease,
                        model_id: lease.job.model_id,
                        pipeline: lease.job.pipeline,
                        spec,
                        input_blob: lease.job.input_blob,
                        attempt: lease.job.attempt,
                        heartbeat: None,
                    })),
                    Err(e) => {
                        let failure = Failure::new(
                            "the job's stored settings cannot be read by this server version",
                            e.to_string(),
                        );
                        let _ = self.store.fail(&lease.lease, &failure, false).await;
                        Err(e)
                    }
                };
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
    ) -> Result<HeartbeatReply, SourceError> {
        self.store
            .heartbeat(lease, progress, self.lease_ms)
            .await
            .map_err(store_error)
    }

    async fn fetch_input(&self, job: &Assignment) -> Result<Vec<u8>, SourceError> {
        let key = job.input_blob.as_deref().ok_or_else(|| {
            SourceError::InvalidJob("image-to-video job has no input image".into())
        })?;
        let bytes =
            self.blobs.get(key).await.map_err(|e| {
                SourceError::Unavailable(format!("cannot read input image {key}: {e}"))
            })?;
        Ok(bytes.to_vec())
    }

    async fn upload_result(&self, lease: &LeaseRef, file: &Path) -> Result<String, SourceError> {
        let key = Blobs::result_key(lease.job_id, lease.token);
        self.blobs
            .put_file(&key, file)
            .await
            .map_err(|e| SourceError::Unavailable(format!("cannot store result: {e}")))?;
        Ok(key)
    }

    async fn complete(&self, lease: &LeaseRef, result: &JobResult) -> Result<(), SourceError> {
        self.store
            .complete(lease, result)
            .await
            .map_err(store_error)
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
            .map_err(store_error)
    }

    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<(), SourceError> {
        self.store.ack_cancelled(lease).await.map_err(store_error)
    }
}
