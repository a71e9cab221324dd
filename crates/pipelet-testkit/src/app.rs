//! The real server in process: an [`Application`] built from [`Config::for_data_dir`]
//! (free loopback port, fresh temp dir) as a test changes it, served in a task until the
//! [`TestApp`] is dropped; its state is at hand for what no HTTP call can do on demand.

use std::time::Duration;

use pipelet_server::state::AppState;
use pipelet_server::{Application, Config};
use pipelet_store::{NewKey, Role};
use reqwest::Client;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server. Dropping it asks the server to stop.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub address: String,
    /// The port it listens on (a free one, picked by the OS).
    pub port: u16,
    /// The admin key the first start of the data dir created.
    pub admin_key: String,
    /// A plain HTTP client for the test's requests.
    pub client: Client,
    /// The server's shared state: the store, blobs and config, to seed or inspect
    /// jobs behind the API's back.
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<anyhow::Result<()>>,
    _dir: TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // Jobs still rendering are not worth waiting for once the test is over.
        self.server.abort();
    }
}

/// The default configuration: one in-process preview worker.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A pure API server (`workers: 0`): every job stays queued until a test moves it.
pub async fn spawn_queue_only() -> TestApp {
    spawn_app_with(|c| c.workers = 0).await
}

/// Builds the real application from [`Config::for_data_dir`] (port 0, fresh temp dir),
/// changed by `tweak`, and serves it in a task until the [`TestApp`] is dropped.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let mut config = Config::for_data_dir(dir.path().join("data"));
    tweak(&mut config);
    let app = Application::build(config)
        .await
        .expect("the application builds");
    let port = app.port();
    assert_ne!(port, 0, "the listener has a real port");
    let admin_key = app
        .admin_key()
        .expect("the first start of a data dir creates an admin key")
        .to_string();
    let state = app.state().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("build the HTTP client");
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        admin_key,
        client,
        state,
        shutdown: Some(tx),
        server,
        _dir: dir,
    }
}

/// Numbers the keys [`TestApp::key`] makes, so their names differ.
static KEY_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl TestApp {
    /// The absolute URL of `path` (which starts with `/`) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A new key with `role` and the given priority cap.
    pub async fn key(&self, role: Role, max_priority: i64) -> String {
        let (_, secret) = self
            .state
            .store
            .create_key(NewKey {
                // Live key names are unique; tests make several keys alike.
                name: format!(
                    "test-{role}-{max_priority}-{}",
                    KEY_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ),
                role,
                max_priority,
                expires_at_ms: None,
            })
            .await
            .expect("create a key");
        secret
    }

    /// A client key that may add up to 100 to its requests' priority.
    pub async fn client_key(&self) -> String {
        self.key(Role::Client, 100).await
    }
}
