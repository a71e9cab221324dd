//! The store's traits, one per concern, and [`Delegating`], which lets a wrapper (the
//! server's metrics) pass the concerns it does not watch straight through.

mod job_store;
mod key_store;
mod lease_store;
mod maintenance_store;
mod usage_store;
mod webhook_store;

pub use job_store::JobStore;
pub use key_store::KeyStore;
pub use lease_store::LeaseStore;
pub use maintenance_store::MaintenanceStore;
pub use usage_store::UsageStore;
pub use webhook_store::WebhookStore;

use async_trait::async_trait;
use uuid::Uuid;

use crate::{
    KeyRecord, KeyUpdate, NewKey, ReleasedBlobs, Result, Store, UsageQuery, UsageRecord,
    WebhookAttempt, WebhookEvent, WebhookEventRecord, WebhookSecrets,
};

/// A store wrapper: implementing it gives [`KeyStore`], [`MaintenanceStore`],
/// [`UsageStore`] and [`WebhookStore`] that call the wrapped store unchanged, so the wrapper writes only
/// [`JobStore`] and [`LeaseStore`], where job transitions happen.
pub trait Delegating: Send + Sync {
    /// The wrapped store, which every delegated call goes to unchanged.
    fn inner(&self) -> &dyn Store;
}

#[async_trait]
impl<T: Delegating> KeyStore for T {
    async fn create_key(&self, key: NewKey) -> Result<(KeyRecord, String)> {
        self.inner().create_key(key).await
    }
    async fn find_key_by_secret(&self, secret: &str) -> Result<Option<KeyRecord>> {
        self.inner().find_key_by_secret(secret).await
    }
    async fn count_keys(&self) -> Result<u64> {
        self.inner().count_keys().await
    }
    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        self.inner().list_keys().await
    }
    async fn revoke_key(&self, name: &str) -> Result<KeyRecord> {
        self.inner().revoke_key(name).await
    }
    async fn rotate_key(&self, name: &str) -> Result<(KeyRecord, String)> {
        self.inner().rotate_key(name).await
    }
    async fn update_key(&self, name: &str, update: KeyUpdate) -> Result<KeyRecord> {
        self.inner().update_key(name, update).await
    }
    async fn key_generation(&self) -> Result<i64> {
        self.inner().key_generation().await
    }
    async fn server_secret(&self, name: &str) -> Result<String> {
        self.inner().server_secret(name).await
    }
    fn set_quota_defaults(&self, defaults: crate::QuotaDefaults) {
        self.inner().set_quota_defaults(defaults)
    }
}

#[async_trait]
impl<T: Delegating> MaintenanceStore for T {
    async fn purge_idempotency_keys(&self, older_than_ms: i64) -> Result<u64> {
        self.inner().purge_idempotency_keys(older_than_ms).await
    }
    async fn release_inputs(&self, finished_by_ms: i64, limit: u32) -> Result<Vec<ReleasedBlobs>> {
        self.inner().release_inputs(finished_by_ms, limit).await
    }
    async fn expire_results(
        &self,
        finished_by_ms: i64,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<ReleasedBlobs>> {
        let inner = self.inner();
        inner.expire_results(finished_by_ms, now_ms, limit).await
    }
    async fn delete_finished_jobs(
        &self,
        finished_by_ms: i64,
        limit: u32,
    ) -> Result<Vec<ReleasedBlobs>> {
        self.inner()
            .delete_finished_jobs(finished_by_ms, limit)
            .await
    }
    async fn reclaim_space(&self, max_pages: u32) -> Result<u64> {
        self.inner().reclaim_space(max_pages).await
    }
}

#[async_trait]
impl<T: Delegating> WebhookStore for T {
    async fn webhook_due(
        &self,
        now_ms: i64,
        limit: u32,
        hold_ms: i64,
    ) -> Result<Vec<WebhookEvent>> {
        self.inner().webhook_due(now_ms, limit, hold_ms).await
    }
    async fn webhook_record_attempt(
        &self,
        event_id: &str,
        attempt: WebhookAttempt,
        now_ms: i64,
    ) -> Result<()> {
        let inner = self.inner();
        inner
            .webhook_record_attempt(event_id, attempt, now_ms)
            .await
    }
    async fn webhook_events_of(&self, job_id: Uuid) -> Result<Vec<WebhookEventRecord>> {
        self.inner().webhook_events_of(job_id).await
    }
    async fn webhook_pending(&self) -> Result<u64> {
        self.inner().webhook_pending().await
    }
    async fn webhook_secrets(&self, owner_key_id: &str, now_ms: i64) -> Result<WebhookSecrets> {
        self.inner().webhook_secrets(owner_key_id, now_ms).await
    }
    async fn rotate_webhook_secret(
        &self,
        owner_key_id: &str,
        now_ms: i64,
    ) -> Result<WebhookSecrets> {
        self.inner()
            .rotate_webhook_secret(owner_key_id, now_ms)
            .await
    }
}

#[async_trait]
impl<T: Delegating> UsageStore for T {
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRecord>> {
        self.inner().usage(query).await
    }
}
