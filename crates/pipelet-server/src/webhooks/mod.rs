//! Webhooks: a POST to a job's `webhook_url` on each of its events (`acquired`,
//! `completed`, `failed`, `cancelled`, `retried`), signed per Standard Webhooks.
//!
//! The store writes each event to an outbox in the same transaction as the state change
//! it reports, so a crash never loses one. [`run`], one per server, delivers them: every
//! [`POLL_INTERVAL`] (sooner when a job changed state) it takes the due events, each
//! job's earliest unfinished one only, so a job's events arrive in order, holds them for
//! [`HOLD`] so no other server (`SKIP LOCKED` on PostgreSQL) or loop takes them
//! meanwhile, delivers up to [`CONCURRENCY`] at once and records each attempt: a 2xx is
//! delivered, a 410 stops, anything else is retried with exponential backoff and jitter
//! until `--webhook-max-attempts`. Delivery is at least once: a server that dies
//! mid-delivery leaves the event held, and the next loop retries it once the hold ends.
//!
//! `payload` builds the body, `sign` the signature headers, `deliver` makes one attempt
//! and `ssrf` keeps receivers off internal addresses.

pub mod deliver;
pub mod payload;
pub mod sign;
pub mod ssrf;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use pipelet_store::{WebhookAttempt, WebhookEvent, now_ms};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// How often the loop looks for due events when nothing wakes it.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Events taken per round.
pub const BATCH: u32 = 32;
/// Deliveries in flight at once.
pub const CONCURRENCY: usize = 16;
/// How long taken events stay hidden from other loops: longer than one attempt
/// (resolution plus the 10 s timeout), so an event is in one delivery at a time.
pub const HOLD: Duration = Duration::from_secs(30);
/// After a stop, how long deliveries in flight may still finish; the rest are retried
/// (at least once) after their hold by the next server.
const STOP_DRAIN: Duration = Duration::from_secs(5);
/// A store error is retried after this long.
const STORE_ERROR_BACKOFF: Duration = Duration::from_secs(2);

/// Delivers the outbox until `stop` fires. `wake` is notified when a job changed state
/// (an event may be due now).
pub async fn run(state: AppState, wake: Arc<Notify>, stop: CancellationToken) {
    let settings = deliver::Settings {
        allow_private: state.config.webhook_allow_private,
        max_attempts: state.config.webhook_max_attempts,
        retry_base: state.config.webhook_retry_base,
    };
    let hold_ms = i64::try_from(HOLD.as_millis()).unwrap_or(i64::MAX);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let pause = match state.store.webhook_due(now_ms(), BATCH, hold_ms).await {
            // A delivered event may have made the job's next one due: look again now.
            Ok(events) if !events.is_empty() => {
                let round = deliver_all(&state, &settings, events);
                tokio::select! {
                    () = round => {}
                    () = async {
                        stop.cancelled().await;
                        tokio::time::sleep(STOP_DRAIN).await;
                    } => return,
                }
                continue;
            }
            Ok(_) => POLL_INTERVAL,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the webhook outbox");
                STORE_ERROR_BACKOFF
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = wake.notified() => {}
            () = stop.cancelled() => return,
        }
    }
}

/// Delivers `events` (each of a different job), [`CONCURRENCY`] at a time.
async fn deliver_all(state: &AppState, settings: &deliver::Settings, events: Vec<WebhookEvent>) {
    futures::stream::iter(events)
        .for_each_concurrent(CONCURRENCY, |event| async move {
            deliver_one(state, settings, event).await;
        })
        .await;
}

/// One attempt of `event`, recorded in the store.
pub async fn deliver_one(state: &AppState, settings: &deliver::Settings, event: WebhookEvent) {
    let attempt_no = event.attempts.saturating_add(1);
    let exchange = match prepare(state, &event).await {
        Ok((body, timestamp, signature)) => {
            deliver::post(&event, body, timestamp, &signature, settings.allow_private).await
        }
        Err(e) => deliver::Exchange::Error(e),
    };
    let attempt = deliver::classify(exchange, attempt_no, settings, now_ms());
    let outcome = match &attempt {
        WebhookAttempt::Delivered { .. } => "delivered",
        WebhookAttempt::Retry { .. } => "retry",
        WebhookAttempt::GaveUp { .. } => "gave_up",
    };
    match &attempt {
        WebhookAttempt::Delivered { status } => {
            tracing::debug!(event = %event.id, job = %event.job_id, status, "webhook delivered")
        }
        WebhookAttempt::Retry { status, error, .. } | WebhookAttempt::GaveUp { status, error } => {
            tracing::info!(event = %event.id, job = %event.job_id, ?status, error, attempt = attempt_no, outcome, "webhook not delivered")
        }
    }
    state.metrics.webhook_delivery(outcome);
    // Not recorded (store down): the hold ends and the event is tried again.
    if let Err(e) = state
        .store
        .webhook_record_attempt(&event.id, attempt, now_ms())
        .await
    {
        tracing::warn!(event = %event.id, error = %e, "cannot record a webhook attempt");
    }
}

/// The body, the `webhook-timestamp` and the `webhook-signature` of this attempt: the
/// timestamp is now (receivers reject old ones), and every valid secret of the job's
/// API key signs.
async fn prepare(state: &AppState, event: &WebhookEvent) -> Result<(Vec<u8>, i64, String), String> {
    let body = payload::render(state, event).await?;
    let secrets = state
        .store
        .webhook_secrets(&event.owner_key_id, now_ms())
        .await
        .map_err(|e| format!("cannot read the webhook secret: {e}"))?;
    let timestamp = i64::try_from(crate::result_links::now_secs()).unwrap_or(i64::MAX);
    let mut keys = vec![secrets.current.as_str()];
    keys.extend(secrets.previous.as_deref());
    let signature = sign::signature_header(&keys, &event.id, timestamp, &body)?;
    Ok((body, timestamp, signature))
}
