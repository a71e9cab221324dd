//! pipelet's durable state. The [`Store`] traits, one per concern ([`JobStore`],
//! [`LeaseStore`], [`KeyStore`], [`MaintenanceStore`], [`WebhookStore`], [`UsageStore`]),
//! own the job state machine (queued → running → completed | failed | cancelled, with re-queues on
//! lost leases),
//! fenced leases, exact queue positions and API keys; [`blob::Blobs`] owns input images
//! and result videos. SQLite is the embedded implementation, PostgreSQL the shared one
//! for several servers; both pass the same conformance tests.

pub mod api_keys;
pub mod blob;
mod claim_order;
mod error;
pub mod fair;
mod history;
mod idempotency;
mod job;
pub mod postgres;
mod queue_index;
mod retention;
mod rows;
pub mod sqlite;
mod traits;
mod usage;
mod webhooks;

pub use api_keys::{KeyRecord, KeyUpdate, NewKey, QuotaDefaults, Role};
pub use error::StoreError;
pub use history::{JobCursor, JobListQuery, JobPage, MAX_PAGE_LIMIT};
pub use idempotency::{
    CreateOutcome, Created, IDEMPOTENCY_WINDOW_MS, Idempotency, MAX_IDEMPOTENCY_KEY_LEN,
    request_hash,
};
pub use job::*;
pub use queue_index::QueueIndex;
pub use traits::{
    Delegating, JobStore, KeyStore, LeaseStore, MaintenanceStore, UsageStore, WebhookStore,
};
pub use usage::{UsageQuery, UsageRecord};
pub use webhooks::{
    WEBHOOK_SECRET_OVERLAP_MS, WebhookAttempt, WebhookEvent, WebhookEventRecord, WebhookEventType,
    WebhookSecrets, WebhookSnapshot, WebhookState,
};

/// The store traits, for `use pipelet_store::prelude::*` where a `dyn Store` is called
/// (a method of a supertrait needs that trait in scope).
pub mod prelude {
    pub use crate::{
        JobStore, KeyStore, LeaseStore, MaintenanceStore, Store, UsageStore, WebhookStore,
    };
}

/// What every store call returns: the value, or a [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The whole store: every concern in one object, so callers hold an `Arc<dyn Store>`.
/// Implement the six traits; this one comes with them.
pub trait Store:
    JobStore + LeaseStore + KeyStore + MaintenanceStore + WebhookStore + UsageStore + 'static
{
}

impl<T> Store for T where
    T: JobStore
        + LeaseStore
        + KeyStore
        + MaintenanceStore
        + WebhookStore
        + UsageStore
        + 'static
        + ?Sized
{
}
