//! What every handler shares.

use std::sync::Arc;

use pipelet_store::Store;
use pipelet_store::blob::Blobs;

use crate::auth::KeyCache;
use crate::config::Config;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub blobs: Blobs,
    pub config: Arc<Config>,
    pub keys: Arc<KeyCache>,
    /// Bounds concurrent input-image decodes (each may take up to a few hundred MB).
    pub image_decodes: Arc<tokio::sync::Semaphore>,
}
