//! What every handler shares.

use std::sync::Arc;

use pipelet_store::Store;
use pipelet_store::blob::Blobs;
use tokio_util::sync::CancellationToken;

use crate::auth::KeyCache;
use crate::config::Config;
use crate::metrics::Metrics;

/// Everything a handler or background task needs; cheap to clone (all shared).
#[derive(Clone)]
pub struct AppState {
    /// The store, wrapped in [`crate::metrics::MeteredStore`] so transitions are counted.
    pub store: Arc<dyn Store>,
    /// Input images and result videos: the data dir's `blobs/`, or `--blob-url`.
    pub blobs: Blobs,
    /// The configuration the server started with.
    pub config: Arc<Config>,
    /// Recently verified API keys, so polls skip the key lookup.
    pub keys: Arc<KeyCache>,
    /// Bounds concurrent input-image decodes (each may take up to a few hundred MB).
    pub image_decodes: Arc<tokio::sync::Semaphore>,
    /// Dispatch over the store: shared by the worker API and the in-process workers.
    pub queue: Arc<crate::queue_service::QueueService>,
    /// What `/metrics` serves, and the queue-time estimator of `statusMessages`.
    pub metrics: Arc<Metrics>,
    /// Refuses creates while the data dir's disk is full (see `disk.rs`).
    pub disk: Arc<crate::disk::DiskGuard>,
    /// Signs and checks the `video.url` links of results.
    pub links: Arc<crate::result_links::LinkSigner>,
    /// Fires when the server starts shutting down (ends long polls).
    pub shutdown: CancellationToken,
    /// The per-key creates-per-minute buckets (`--creates-per-minute`).
    pub create_limiter: Arc<crate::quotas::CreateLimiter>,
}
