//! Prometheus metrics. [`MeteredStore`] wraps the store, so every job transition is
//! counted in one place whether an in-process or a remote worker caused it; queue
//! depths are read from the store when `/metrics` is scraped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pipelet_store::{
    CancelOutcome, ClaimRequest, CreateOutcome, Created, Delegating, FailOutcome, Failure,
    HeartbeatReply, Idempotency, JobCount, JobListQuery, JobPage, JobRecord, JobResult, JobStore,
    Lease, LeaseRef, LeaseStore, NewJob, ProgressUpdate, ReapOutcome, ReapedJob, Result, Store,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use uuid::Uuid;

/// A worker counts as active if it claimed or heartbeated this recently.
const WORKER_ACTIVE_WINDOW: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelState {
    model: String,
    state: String,
}

/// The counters, histograms and gauges served at `/metrics`, plus the queue-time
/// estimator and webhook wake-up that need the same job transitions.
pub struct Metrics {
    registry: Registry,
    created: Family<ModelLabel, Counter>,
    finished: Family<ModelState, Counter>,
    retries: Family<ModelLabel, Counter>,
    lease_expiries: Counter,
    wait_seconds: Family<ModelLabel, Histogram>,
    run_seconds: Family<ModelLabel, Histogram>,
    queue: Family<ModelState, Gauge>,
    active_workers: Gauge,
    /// Worker id → last seen; job → its worker, so heartbeats refresh the right one.
    seen: Mutex<(HashMap<String, Instant>, HashMap<Uuid, String>)>,
    /// Retention: what the cleanup removed, by kind (`result`, `input`, `job`, `orphan`).
    cleanup_removed: Family<KindLabel, Counter>,
    /// Webhook delivery attempts by outcome (`delivered`, `retry`, `gave_up`).
    webhook_deliveries: Family<OutcomeLabel, Counter>,
    /// Webhook events neither delivered nor given up, read from the store on scrape.
    webhooks_pending: Gauge,
    /// Notified after every job state change that may have written a webhook event, so
    /// the delivery loop looks at once instead of at its next poll.
    pub webhook_wake: Arc<Notify>,
    /// The queue-time estimator, fed by the same store calls as the metrics.
    pub eta: crate::eta::Eta,
}

fn histogram() -> Histogram {
    // 5 ms to ~45 min.
    Histogram::new(exponential_buckets(0.005, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pipelet");
        let m = Metrics {
            created: Family::default(),
            finished: Family::default(),
            retries: Family::default(),
            lease_expiries: Counter::default(),
            wait_seconds: Family::new_with_constructor(histogram),
            run_seconds: Family::new_with_constructor(histogram),
            queue: Family::default(),
            active_workers: Gauge::default(),
            seen: Mutex::default(),
            cleanup_removed: Family::default(),
            webhook_deliveries: Family::default(),
            webhooks_pending: Gauge::default(),
            webhook_wake: Arc::new(Notify::new()),
            eta: crate::eta::Eta::default(),
            registry: Registry::default(),
        };
        registry.register("jobs_created", "Jobs accepted", m.created.clone());
        registry.register(
            "jobs_finished",
            "Jobs that reached a terminal state",
            m.finished.clone(),
        );
        registry.register(
            "job_retries",
            "Attempts that ended and were re-queued",
            m.retries.clone(),
        );
        registry.register(
            "lease_expiries",
            "Leases that expired without a heartbeat",
            m.lease_expiries.clone(),
        );
        registry.register(
            "job_wait_seconds",
            "Time from create to start",
            m.wait_seconds.clone(),
        );
        registry.register(
            "job_run_seconds",
            "Time a worker spent rendering",
            m.run_seconds.clone(),
        );
        registry.register("queue_jobs", "Jobs waiting or running now", m.queue.clone());
        registry.register(
            "workers_active",
            "Workers seen in the last minute",
            m.active_workers.clone(),
        );
        registry.register(
            "cleanup_removed",
            "What retention removed: expired results, input images, finished jobs, orphan blobs",
            m.cleanup_removed.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered (2xx), retry, gave_up (410 or out of attempts)",
            m.webhook_deliveries.clone(),
        );
        // Every outcome shows from the start, at 0.
        for outcome in ["delivered", "retry", "gave_up"] {
            let _ = m
                .webhook_deliveries
                .get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "webhooks_pending",
            "Webhook events neither delivered nor given up",
            m.webhooks_pending.clone(),
        );
        Metrics { registry, ..m }
    }
}

fn model(model: &str) -> ModelLabel {
    ModelLabel {
        model: model.to_string(),
    }
}

impl Metrics {
    fn seen(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Instant>, HashMap<Uuid, String>)> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `worker_id` active for the next 60 s (the `active_workers` gauge); called on
    /// every claim, even one that waits without getting a job.
    pub fn worker_seen(&self, worker_id: &str) {
        self.seen().0.insert(worker_id.to_string(), Instant::now());
    }

    /// Counts `n` things of `kind` (`result`, `input`, `job`, `orphan`) removed by
    /// retention.
    pub fn cleanup_removed(&self, kind: &'static str, n: u64) {
        if n > 0 {
            self.cleanup_removed
                .get_or_create(&KindLabel { kind })
                .inc_by(n);
        }
    }

    /// Counts one webhook delivery attempt (`delivered`, `retry` or `gave_up`).
    pub fn webhook_delivery(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// A job changed state: a webhook event may be due.
    fn job_changed(&self) {
        self.webhook_wake.notify_one();
    }

    fn retried(&self, model_id: &str) {
        self.retries.get_or_create(&model(model_id)).inc();
    }

    fn finished(&self, model: &str, state: &str) {
        self.finished
            .get_or_create(&ModelState {
                model: model.to_string(),
                state: state.to_string(),
            })
            .inc();
    }

    fn job_ended(&self, job: Uuid) {
        self.seen().1.remove(&job);
    }

    fn created(&self, model_id: &str) {
        self.created.get_or_create(&model(model_id)).inc();
    }

    /// `worker_id` leased `job`: its wait, and the worker its heartbeats will refresh.
    fn claimed(&self, worker_id: &str, job: &JobRecord) {
        self.job_changed();
        self.eta.claimed(worker_id, job);
        let started = job.started_at_ms.unwrap_or(job.created_at_ms);
        let waited = (started - job.created_at_ms).max(0);
        self.wait_seconds
            .get_or_create(&model(&job.model_id))
            .observe(waited as f64 / 1000.0);
        self.seen().1.insert(job.id, worker_id.to_string());
    }

    /// A heartbeat for `job` keeps its worker active.
    fn beat(&self, job: Uuid) {
        let mut seen = self.seen();
        if let Some(worker) = seen.1.get(&job).cloned() {
            seen.0.insert(worker, Instant::now());
        }
    }

    /// The Prometheus text, with the queue depths read from `store` now.
    pub async fn render(&self, store: &dyn Store) -> Result<String> {
        let counts: Vec<JobCount> = store.job_counts().await?;
        self.queue.clear();
        for c in counts {
            self.queue
                .get_or_create(&ModelState {
                    model: c.model_id,
                    state: c.state.to_string(),
                })
                .set(i64::try_from(c.count).unwrap_or(i64::MAX));
        }
        // Best effort: a failed count leaves the last value rather than failing the scrape.
        match store.webhook_pending().await {
            Ok(pending) => {
                self.webhooks_pending
                    .set(i64::try_from(pending).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "cannot count pending webhook events"),
        }
        {
            let mut seen = self.seen();
            seen.0.retain(|_, at| at.elapsed() < WORKER_ACTIVE_WINDOW);
            self.active_workers
                .set(i64::try_from(seen.0.len()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| pipelet_store::StoreError::Corrupt(format!("metrics encoding: {e}")))?;
        Ok(out)
    }
}

/// The store, counted.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`; the server uses only the wrapped store, so no transition goes uncounted.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    /// The model of a job a lease refers to, for labels (one cheap read).
    async fn model_of(&self, id: Uuid) -> String {
        match self.inner.get_job(id).await {
            Ok(Some(job)) => job.model_id,
            _ => "unknown".into(),
        }
    }

    /// Counts the end of an attempt of `id`; returns its model, for labels.
    async fn ended(&self, id: Uuid) -> String {
        self.metrics.job_changed();
        self.metrics.job_ended(id);
        self.model_of(id).await
    }
}

// Keys, retention and webhooks change no job's state: they pass straight through.
impl Delegating for MeteredStore {
    fn inner(&self) -> &dyn Store {
        &*self.inner
    }
}

#[async_trait]
impl JobStore for MeteredStore {
    async fn create_job(&self, job: NewJob) -> Result<Created> {
        let created = self.inner.create_job(job).await?;
        self.metrics.created(&created.model_id);
        Ok(created)
    }
    async fn create_job_idempotent(
        &self,
        job: NewJob,
        idempotency: Idempotency,
    ) -> Result<CreateOutcome> {
        let outcome = self.inner.create_job_idempotent(job, idempotency).await?;
        // Only a new job counts as created; a replay made nothing.
        if let CreateOutcome::Created(created) = &outcome {
            self.metrics.created(&created.model_id);
        }
        Ok(outcome)
    }
    async fn cancel(&self, id: Uuid, force: bool, by: &str) -> Result<CancelOutcome> {
        let outcome = self.inner.cancel(id, force, by).await?;
        self.metrics.job_changed();
        if outcome == CancelOutcome::Cancelled {
            let model = self.model_of(id).await;
            self.metrics.finished(&model, "cancelled");
        }
        Ok(outcome)
    }
    async fn get_job(&self, id: Uuid) -> Result<Option<JobRecord>> {
        self.inner.get_job(id).await
    }
    async fn job_status(&self, id: Uuid) -> Result<Option<(JobRecord, Option<u64>)>> {
        self.inner.job_status(id).await
    }
    async fn list_jobs(&self, owner: Option<&str>, limit: u32) -> Result<Vec<JobRecord>> {
        self.inner.list_jobs(owner, limit).await
    }
    async fn list_jobs_page(&self, query: &JobListQuery) -> Result<JobPage> {
        self.inner.list_jobs_page(query).await
    }
    async fn job_counts(&self) -> Result<Vec<JobCount>> {
        self.inner.job_counts().await
    }
    fn queued_total(&self) -> u64 {
        self.inner.queued_total()
    }
}

#[async_trait]
impl LeaseStore for MeteredStore {
    async fn claim(&self, req: &ClaimRequest) -> Result<Option<Lease>> {
        self.metrics.worker_seen(&req.worker_id);
        self.metrics
            .eta
            .worker_claiming(&req.worker_id, &req.pipelines);
        let lease = self.inner.claim(req).await?;
        if let Some(lease) = &lease {
            self.metrics.claimed(&req.worker_id, &lease.job);
        }
        Ok(lease)
    }
    fn job_available(&self) -> Arc<Notify> {
        self.inner.job_available()
    }
    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        progress: Option<ProgressUpdate>,
        extend_ms: i64,
    ) -> Result<HeartbeatReply> {
        self.metrics.beat(lease.job_id);
        let reply = self.inner.heartbeat(lease, progress, extend_ms).await?;
        // A job this server did not see claimed (it restarted since): one read, once.
        if !self.metrics.eta.knows(lease.job_id)
            && let Ok(Some(job)) = self.inner.get_job(lease.job_id).await
        {
            self.metrics.eta.adopt(&job, pipelet_store::now_ms());
        }
        self.metrics.eta.heartbeat(lease.job_id, progress);
        Ok(reply)
    }
    async fn complete(&self, lease: &LeaseRef, result: &JobResult) -> Result<()> {
        self.inner.complete(lease, result).await?;
        self.metrics.eta.completed(lease.job_id);
        let model = self.ended(lease.job_id).await;
        self.metrics.finished(&model, "completed");
        self.metrics
            .run_seconds
            .get_or_create(&self::model(&model))
            .observe(result.video.run_seconds);
        Ok(())
    }
    async fn fail(
        &self,
        lease: &LeaseRef,
        failure: &Failure,
        retryable: bool,
    ) -> Result<FailOutcome> {
        let outcome = self.inner.fail(lease, failure, retryable).await?;
        self.metrics.eta.ended(lease.job_id);
        let model = self.ended(lease.job_id).await;
        match outcome {
            FailOutcome::Requeued => self.metrics.retried(&model),
            FailOutcome::Failed => self.metrics.finished(&model, "failed"),
            // A forced cancel was pending: the job ended CANCELLED, not FAILED.
            FailOutcome::Cancelled => self.metrics.finished(&model, "cancelled"),
        }
        Ok(outcome)
    }
    async fn ack_cancelled(&self, lease: &LeaseRef) -> Result<()> {
        self.inner.ack_cancelled(lease).await?;
        self.metrics.eta.ended(lease.job_id);
        let model = self.ended(lease.job_id).await;
        self.metrics.finished(&model, "cancelled");
        Ok(())
    }
    async fn reap_expired(&self, now_ms: i64) -> Result<Vec<ReapedJob>> {
        let reaped = self.inner.reap_expired(now_ms).await?;
        if !reaped.is_empty() {
            self.metrics.job_changed();
        }
        for job in &reaped {
            self.metrics.lease_expiries.inc();
            match job.outcome {
                ReapOutcome::Requeued => self.metrics.retried(&job.model_id),
                ReapOutcome::Failed => self.metrics.finished(&job.model_id, "failed"),
                ReapOutcome::Cancelled => self.metrics.finished(&job.model_id, "cancelled"),
            };
            self.metrics.job_ended(job.id);
            self.metrics.eta.ended(job.id);
        }
        Ok(reaped)
    }
    async fn try_reaper_lock(&self) -> Result<bool> {
        self.inner.try_reaper_lock().await
    }
    async fn release_leases_of(&self, owner_prefix: &str) -> Result<u64> {
        let released = self.inner.release_leases_of(owner_prefix).await?;
        if released > 0 {
            self.metrics.job_changed();
        }
        Ok(released)
    }
}
