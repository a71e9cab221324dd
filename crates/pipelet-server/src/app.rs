//! Application lifecycle: [`Application::build`] opens the store and blobs, binds the
//! listener and starts the in-process workers and the reaper; [`Application::port`]
//! tells tests where it listens; [`Application::run_until_stopped`] serves until the
//! shutdown future resolves, then stops taking work and drains.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use pipelet_api::Pipeline;
use pipelet_runner::preview::PreviewRunner;
use pipelet_store::blob::Blobs;
use pipelet_store::postgres::{PgStore, ServerLock, ServerLockMode};
use pipelet_store::prelude::*;
use pipelet_store::sqlite::SqliteStore;
use pipelet_store::{NewKey, Role, now_ms};
use pipelet_worker::{Worker, WorkerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::KeyCache;
use crate::config::Config;
use crate::metrics::{MeteredStore, Metrics};
use crate::queue_service::QueueService;
use crate::state::AppState;
use crate::tls::TlsCertificate;

/// Lease-holder prefix of in-process workers: none can outlive the process.
const LOCAL_WORKER_PREFIX: &str = "local:";
/// Input images decoded at once (each may need up to ~320 MB at the default limits).
const MAX_CONCURRENT_IMAGE_DECODES: usize = 4;
/// Recent jobs whose run times seed the queue-time estimates on start (one query).
const ETA_SEED_JOBS: u32 = 500;
/// How often the reaper looks for expired leases, at most.
const MAX_REAP_INTERVAL: Duration = Duration::from_secs(5);
/// How often the reaper deletes idempotency keys past their window (they are ignored
/// once expired anyway; this only bounds the table).
const IDEMPOTENCY_PURGE_INTERVAL: Duration = Duration::from_secs(600);

/// A built server not yet serving: its listener is bound and its store open, so a
/// start error surfaces from [`Application::build`] before anything is served.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    admin_key: Option<String>,
    admin_key_file: Option<PathBuf>,
    tls: Option<Arc<TlsCertificate>>,
    _lock: Option<File>,
    server_lock: Option<ServerLock>,
}

/// Takes an exclusive lock on the data dir: two servers on one SQLite file would each
/// believe their in-process leases are the only ones.
fn lock_data_dir(dir: &Path) -> anyhow::Result<File> {
    let path = dir.join("pipelet.lock");
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another pipelet server is already using {}; stop it or pick another --data-dir",
            dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Writes the first admin key to `<data-dir>/admin.key`, readable by the owner only.
fn write_admin_key(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{secret}")?;
    file.sync_all()?;
    Ok(())
}

/// Takes this server's place on a shared PostgreSQL database: alone with
/// `--single-server` (its blobs are its own), else beside other servers with shared blobs.
async fn lock_database(url: &str, single_server: bool) -> anyhow::Result<ServerLock> {
    let mode = if single_server {
        ServerLockMode::Exclusive
    } else {
        ServerLockMode::Shared
    };
    let lock = ServerLock::try_acquire(url, mode)
        .await
        .context("cannot take the server lock on the PostgreSQL database (--database-url)")?;
    lock.ok_or_else(|| match mode {
        ServerLockMode::Exclusive => anyhow::anyhow!(
            "another pipelet server is running on this database, and --single-server needs \
             the database to itself (its images and videos stay in its own data dir). Stop \
             the other server, or run every server with the same shared storage, \
             --blob-url s3://bucket/prefix (or gs://, az://, or file:///path/of/a/shared/mount), \
             and without --single-server"
        ),
        ServerLockMode::Shared => anyhow::anyhow!(
            "a pipelet server started with --single-server is running on this database; \
             its images and videos stay in its own data dir, so no other server may join it. \
             Stop it, then run every server with the same shared storage, \
             --blob-url s3://bucket/prefix (or gs://, az://, or file:///path/of/a/shared/mount)"
        ),
    })
}

/// On a store without keys, creates the admin key and saves it to
/// `<data-dir>/admin.key`. A key that cannot be saved is still returned (to be printed):
/// failing the start instead would lose it.
async fn create_first_admin_key(
    store: &dyn Store,
    data_dir: &Path,
) -> anyhow::Result<(Option<String>, Option<PathBuf>)> {
    if store.count_keys().await? > 0 {
        return Ok((None, None));
    }
    let (_, secret) = store
        .create_key(NewKey {
            name: "admin".into(),
            role: Role::Admin,
            max_priority: 1000,
            expires_at_ms: None,
        })
        .await?;
    let path = data_dir.join("admin.key");
    match write_admin_key(&path, &secret) {
        Ok(()) => Ok((Some(secret), Some(path))),
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot save the admin key; copy it from the output"
            );
            Ok((Some(secret), None))
        }
    }
}

/// The SQLite file of a data dir; `pipelet keys` opens the same file offline.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("pipelet.db")
}

/// The configured store: PostgreSQL when a database URL is given, else the SQLite file
/// in the data dir, which is then locked to this server (returned lock).
pub async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Option<File>)> {
    if let Some(url) = &config.database_url {
        let store = PgStore::connect(url)
            .await
            .context("cannot open the PostgreSQL database (--database-url)")?;
        return Ok((Arc::new(store), None));
    }
    let lock = lock_data_dir(&config.data_dir)?;
    let store = SqliteStore::open(&database_path(&config.data_dir))
        .await
        .context("cannot open the database")?;
    Ok((Arc::new(store), Some(lock)))
}

impl Application {
    /// Opens the store and blobs, binds `config.listen` and creates the first admin key
    /// (first start of a data dir only); fails if the data dir or database is in use.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        // First: a bad certificate is the operator's to fix before anything starts.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsCertificate::load(cert, key)?),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together: give both or neither"),
        };
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let (store, lock) = open_store(&config).await?;
        let server_lock = match &config.database_url {
            Some(url) => Some(lock_database(url, config.single_server).await?),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        // Queue-time estimates start from the recent run times rather than the defaults.
        match store.list_jobs(None, ETA_SEED_JOBS).await {
            Ok(recent) => metrics.eta.seed(recent.iter().rev()),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read recent jobs for the queue-time estimates")
            }
        }
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, metrics.clone()));
        // Shared by every server on the store, so any of them accepts any link.
        let link_secret = store
            .server_secret(crate::result_links::SECRET_NAME)
            .await
            .context("cannot read the result-link secret from the store")?;
        let links = Arc::new(crate::result_links::LinkSigner::new(link_secret.as_bytes()));
        let blobs = match &config.blob_url {
            Some(url) => Blobs::from_url(url).with_context(|| format!("--blob-url {url}"))?,
            None => Blobs::local(&config.data_dir.join("blobs"))?,
        };

        // In-process workers of a previous run died with it; their jobs go back now
        // rather than after a lease expiry. Only with the embedded store: on a shared
        // database another server's in-process workers may be alive.
        if lock.is_some() {
            let released = store.release_leases_of(LOCAL_WORKER_PREFIX).await?;
            if released > 0 {
                tracing::warn!(released, "re-queued jobs left running by a previous run");
            }
        }

        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        // With port 0 the real address is only known now; links fall back to it.
        let mut config = config;
        config.listen = listener.local_addr()?;

        // Last, once nothing else can fail: a start that failed after creating the key
        // would never show it, and the next start finds a key and creates none.
        let (admin_key, admin_key_file) = create_first_admin_key(&*store, &config.data_dir).await?;
        let queue = Arc::new(QueueService::new(
            store.clone(),
            blobs.clone(),
            config.lease,
        ));
        let disk = Arc::new(crate::disk::DiskGuard::new(&config.data_dir));
        store.set_quota_defaults(pipelet_store::QuotaDefaults {
            max_queued: config.max_queued_per_key,
            max_running: config.max_running_per_key,
        });
        let create_limiter = Arc::new(crate::quotas::CreateLimiter::new(
            config.creates_per_minute,
            config.create_burst,
        ));
        let state = AppState {
            create_limiter,
            links,
            disk,
            store,
            blobs,
            queue,
            metrics,
            shutdown: CancellationToken::new(),
            config: Arc::new(config),
            keys: Arc::new(KeyCache::default()),
            image_decodes: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_IMAGE_DECODES)),
        };
        Ok(Application {
            listener,
            state,
            admin_key,
            admin_key_file,
            tls,
            _lock: lock,
            server_lock,
        })
    }

    /// The bound address, with the real port when `config.listen` asked for port 0.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The bound port (0 if the socket cannot report it); tests build their URLs from it.
    pub fn port(&self) -> u16 {
        self.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The admin key created on this start (only on the first start of a data dir).
    pub fn admin_key(&self) -> Option<&str> {
        self.admin_key.as_deref()
    }

    /// Where [`Application::admin_key`] was saved; `None` if it could not be (the log
    /// says why) or no key was created.
    pub fn admin_key_file(&self) -> Option<&Path> {
        self.admin_key_file.as_deref()
    }

    /// The certificate served with `--tls-cert`/`--tls-key` (`None`: plain http), whose
    /// [`TlsCertificate::reload`] SIGHUP calls.
    pub fn tls(&self) -> Option<&Arc<TlsCertificate>> {
        self.tls.as_ref()
    }

    /// The shared state, for tests that seed jobs or keys through the store directly.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then refuses new work, waits up to
    /// `--shutdown-grace` for running jobs and hands the rest back to the queue.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // The data-dir lock is held until the very end.
        let Application {
            listener,
            state,
            tls,
            _lock: lock,
            server_lock,
            ..
        } = self;
        let config = state.config.clone();
        let stop = state.shutdown.clone();
        let abort = CancellationToken::new();
        let mut background = JoinSet::new();
        spawn_workers(&state, &stop, &abort, &mut background)?;
        background.spawn(reaper(state.store.clone(), config.lease, stop.clone()));
        background.spawn(crate::retention::run(state.clone(), stop.clone()));
        background.spawn(crate::webhooks::run(
            state.clone(),
            state.metrics.webhook_wake.clone(),
            stop.clone(),
        ));

        #[cfg(unix)]
        if let Some(tls) = &tls {
            background.spawn(crate::tls::reload_on_sighup(tls.clone(), stop.clone()));
        }

        let app = crate::router::router(state);
        tracing::info!(addr = %listener.local_addr()?, scheme = config.scheme(), workers = config.workers, "pipelet is serving");
        let stopping = stop.clone();
        let graceful = async move {
            shutdown.await;
            tracing::info!("shutting down: no new jobs; finishing the ones running");
            stopping.cancel();
        };
        match &tls {
            None => {
                axum::serve(
                    listener,
                    app.into_make_service_with_connect_info::<SocketAddr>(),
                )
                .with_graceful_shutdown(graceful)
                .await?
            }
            Some(tls) => crate::tls::serve(listener, tls, app, graceful).await?,
        }

        stop.cancel();
        let grace = config.shutdown_grace;
        if tokio::time::timeout(grace, async {
            while background.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                ?grace,
                "jobs still running after the grace period; handing them back"
            );
            abort.cancel();
            while background.join_next().await.is_some() {}
        }
        tracing::info!("stopped");
        drop(lock);
        if let Some(server_lock) = server_lock
            && let Err(e) = server_lock.release().await
        {
            tracing::debug!(error = %e, "releasing the server lock");
        }
        Ok(())
    }
}

fn spawn_workers(
    state: &AppState,
    stop: &CancellationToken,
    abort: &CancellationToken,
    tasks: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    let config = &state.config;
    if config.workers == 0 {
        return Ok(());
    }
    let scratch = config.data_dir.join("tmp");
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let instance = uuid::Uuid::new_v4().simple().to_string();
    let source = state.queue.clone();
    let runner = Arc::new(PreviewRunner::new());
    for n in 0..config.workers {
        let worker_id = format!("{LOCAL_WORKER_PREFIX}{}/{n}", &instance[..12]);
        // Their task count is the preview renderer's from the claim on.
        state
            .metrics
            .eta
            .set_backend(&worker_id, pipelet_runner::Runner::name(&*runner));
        let worker = Worker::new(
            source.clone(),
            runner.clone(),
            WorkerConfig {
                worker_id,
                pipelines: Pipeline::ALL.to_vec(),
                lease: config.lease,
                heartbeat: config.heartbeat,
                progress_interval: Duration::from_millis(250),
                max_wait_for_switch: config.max_wait_for_switch,
                poll_wait: Duration::from_secs(30),
                scratch_dir: scratch.clone(),
                delivery_timeout: Duration::from_secs(60),
                pipelined_delivery: true,
            },
        );
        let (stop, abort) = (stop.clone(), abort.clone());
        tasks.spawn(async move {
            // The store never refuses an in-process worker's key; log it should it ever.
            if let Err(e) = worker.run(stop, abort).await {
                tracing::error!(error = %e, "an in-process worker stopped");
            }
        });
    }
    Ok(())
}

/// Re-queues jobs whose workers stopped heartbeating. One per server; with SQLite there
/// is exactly one server per data dir.
///
/// Leases are judged only once the store has answered for a whole lease: while it was
/// unreachable (a database restart or failover) no heartbeat could be recorded, so a
/// lease that ran out meanwhile most likely belongs to a live worker whose heartbeats
/// the server kept refusing. They get one lease to get through, as after a server start.
async fn reaper(store: Arc<dyn Store>, lease: Duration, stop: CancellationToken) {
    let interval = (lease / 4).clamp(Duration::from_millis(50), MAX_REAP_INTERVAL);
    // Remote workers could not heartbeat while this server was down: give them one
    // lease to reach it again before their jobs are taken back.
    tokio::select! {
        () = tokio::time::sleep(lease) => {}
        () = stop.cancelled() => return,
    }
    // Since when the store has answered without a break; `None` while it does not.
    let mut answering_since = Instant::now().checked_sub(lease);
    let mut purged_at: Option<Instant> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        let leader = match store.try_reaper_lock().await {
            Ok(leader) => leader,
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the reaper lock");
                answering_since = None;
                continue;
            }
        };
        let since = *answering_since.get_or_insert_with(|| {
            tracing::info!(
                ?lease,
                "the store answers again; expired leases are reaped after one more lease"
            );
            Instant::now()
        });
        if !leader || since.elapsed() < lease {
            continue;
        }
        match store.reap_expired(now_ms()).await {
            Ok(reaped) => {
                for job in reaped {
                    tracing::warn!(id = %job.id, model = %job.model_id, outcome = ?job.outcome, "lease expired");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "reaper failed");
                answering_since = None;
            }
        }
        if purged_at.is_none_or(|at| at.elapsed() >= IDEMPOTENCY_PURGE_INTERVAL) {
            purged_at = Some(Instant::now());
            let cutoff = now_ms().saturating_sub(pipelet_store::IDEMPOTENCY_WINDOW_MS);
            match store.purge_idempotency_keys(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(keys = n, "expired idempotency keys deleted"),
                Err(e) => tracing::warn!(error = %e, "cannot delete expired idempotency keys"),
            }
        }
    }
}
