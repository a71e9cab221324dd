//! pipelet's test kit: the helpers every test binary used to copy, in one place. A
//! normal library, used only as a dev-dependency.
//!
//! - [`process`]: the real `pipelet` binary as child processes (servers, workers, keys),
//!   for tests that kill -9 or restart them.
//! - `app` (feature `server`): the real server in process on a free port, with its
//!   data in a temp dir.
//! - [`engines`]: moto's S3 server and PostgreSQL databases or private clusters.
//! - [`api`]: one key's view of a server's public API over HTTP.
//! - [`images`], [`media`]: test pictures and ffprobe/MP4 checks of result videos.
//! - Here: deadlines ([`wait_until`]), unique names, temp dirs, free ports and the
//!   switch for the slow real-process suites ([`slow_tests_enabled`]).

// Test-helper code: a panic is how a helper reports a broken test setup, so it may
// unwrap and expect like the tests that call it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod api;
#[cfg(feature = "server")]
pub mod app;
pub mod engines;
pub mod images;
pub mod media;
pub mod process;

use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use process::{Children, Pipelet, Server};

/// A [`Pipelet`] for the `pipelet` binary of the package under test (`CARGO_BIN_EXE_…`
/// exists only while an integration test of that package compiles, hence a macro).
#[macro_export]
macro_rules! pipelet {
    () => {
        $crate::Pipelet::new(env!("CARGO_BIN_EXE_pipelet"))
    };
}

/// Whether the environment variable `name` is exactly `1`.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// Whether the slow real-process suites (kill -9 durability, PostgreSQL restarts, ...)
/// run: `PIPELET_SLOW_TESTS=1` (scripts/test.sh sets it). When off, says so, and the
/// test returns early:
///
/// ```
/// if !pipelet_testkit::slow_tests_enabled() {
///     return;
/// }
/// ```
pub fn slow_tests_enabled() -> bool {
    let on = env_flag("PIPELET_SLOW_TESTS");
    if !on {
        eprintln!("skipped: set PIPELET_SLOW_TESTS=1 to run this slow real-process test");
    }
    on
}

/// Calls `done` until it is true, panicking with `what` once `deadline` has passed.
pub fn wait_until(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// [`wait_until`] for async conditions.
pub async fn wait_until_async<F, Fut>(deadline: Duration, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A name no other test (in this or another process) is using: `prefix` + 16 hex digits.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let hash = RandomState::new().hash_one((std::process::id(), n, SystemTime::now()));
    format!("{prefix}{hash:016x}")
}

/// A fresh temp dir and the (not yet existing) data dir inside it.
pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    (dir, data)
}

/// A port that was free a moment ago, for a server that must come back on the same one.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
