//! What every handler shares.

use std::sync::Arc;

use pipelet_store::Store;
use pipelet_store::blob::Blobs;
use pipelet_worker::LocalSource;
use tokio_util::sync::CancellationToken;

use crate::auth::KeyCache;
use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub blobs: Blobs,
    pub config: Arc<Config>,
    pub keys: Arc<KeyCache>,
    /// Bounds concurrent input-image decodes (each may take up to a few hundred MB).
    pub image_decodes: Arc<tokio::sync::Semaphore>,
    /// Dispatch over the store: shared by the worker API and the in-process workers.
    pub jobs: Arc<LocalSource>,
    pub metrics: Arc<Metrics>,
    /// Refuses creates while the data dir's disk is full (see `disk.rs`).
    pub disk: Arc<crate::disk::DiskGuard>,
    /// Signs and checks the `video.url` links of results.
    pub links: Arc<crate::result_links::LinkSigner>,
    /// Fires when the server starts shutting down (ends long polls).
    pub shutdown: CancellationToken,
}
