//! The router: which path goes to which handler, and the layers around them.

pub mod docs;
pub mod favicon;
pub mod files;
pub mod health;
pub mod history;
pub mod idempotency;
pub mod models;
pub mod playground;
pub mod queue;
pub mod stream;
pub mod webhooks;
pub mod worker;
