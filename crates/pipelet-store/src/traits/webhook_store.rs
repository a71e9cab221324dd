//! [`WebhookStore`]: the webhook outbox and signing secrets.

use async_trait::async_trait;
use uuid::Uuid;

use crate::{Result, WebhookAttempt, WebhookEvent, WebhookEventRecord, WebhookSecrets};

/// Webhooks: the outbox written with each state change of a job that has a
/// `webhook_url` (see [`crate::WebhookEvent`]), and the per-key signing secrets.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Each job's earliest event that is neither delivered nor given up, when its next
    /// attempt is due at `now_ms` and no one holds it; at most `limit`, oldest due
    /// first. Marks them held until `now_ms + hold_ms`, so another server (or loop)
    /// skips them meanwhile.
    async fn webhook_due(&self, now_ms: i64, limit: u32, hold_ms: i64)
    -> Result<Vec<WebhookEvent>>;

    /// Records the end of one delivery try of `event_id` (and releases its hold).
    /// `Err(NotFound)` for an unknown event.
    async fn webhook_record_attempt(
        &self,
        event_id: &str,
        attempt: WebhookAttempt,
        now_ms: i64,
    ) -> Result<()>;

    /// Every event of a job, in order.
    async fn webhook_events_of(&self, job_id: Uuid) -> Result<Vec<WebhookEventRecord>>;

    /// Events neither delivered nor given up.
    async fn webhook_pending(&self) -> Result<u64>;

    /// The signing secrets of an API key, created on first use.
    async fn webhook_secrets(&self, owner_key_id: &str, now_ms: i64) -> Result<WebhookSecrets>;

    /// Issues a new secret for the key; the old one stays `previous` for 24 h.
    async fn rotate_webhook_secret(
        &self,
        owner_key_id: &str,
        now_ms: i64,
    ) -> Result<WebhookSecrets>;
}
