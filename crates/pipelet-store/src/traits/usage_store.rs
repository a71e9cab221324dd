//! [`UsageStore`]: what each key used, per UTC day and model.

use async_trait::async_trait;

use crate::{Result, UsageQuery, UsageRecord};

/// Usage: counts written by every terminal transition in its own transaction (see
/// `crate::usage`), kept when retention deletes the jobs.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// The rows of `query`'s days and key, ordered by day, key name and model.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRecord>>;
}
