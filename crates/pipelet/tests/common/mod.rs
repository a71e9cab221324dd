//! Runs the real `pipelet` binary as a child process, so tests can kill -9 it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// S3 (moto) and PostgreSQL for the shared-engine tests.
pub mod engines;

pub struct Server {
    pub child: Child,
    pub base: String,
    pub key: String,
}

/// Starts `pipelet serve` on a free port and waits until it listens.
pub fn start_server(data_dir: &Path, extra: &[&str]) -> Server {
    start_server_on(data_dir, "127.0.0.1:0", extra)
}

/// A port that was free a moment ago, for a server that must come back on the same one.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts `pipelet serve` listening on `listen` and waits until it listens.
pub fn start_server_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pipelet"))
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", listen])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pipelet serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("pipelet listening on ") {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server did not report its address");
    let key = std::fs::read_to_string(data_dir.join("admin.key"))
        .expect("admin.key")
        .trim()
        .to_string();
    Server { child, base, key }
}

impl Server {
    /// kill -9: no chance to flush or clean up.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    pub fn sigterm(&mut self) {
        sigterm(&self.child);
    }

    pub async fn create(&self, client: &reqwest::Client, model: &str, body: Value) -> Value {
        let r = client
            .post(format!("{}/queue/{model}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 200, "create failed: {:?}", r.text().await);
        r.json().await.expect("create json")
    }

    pub async fn status(&self, client: &reqwest::Client, model: &str, id: &str) -> Value {
        let r = client
            .get(format!("{}/queue/{model}/requests/{id}/status", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("status");
        assert_eq!(r.status(), 200);
        r.json().await.expect("status json")
    }

    /// Polls until the status is `want` or `deadline` passes.
    pub async fn wait_for(
        &self,
        client: &reqwest::Client,
        model: &str,
        id: &str,
        want: &str,
        deadline: Duration,
    ) -> Value {
        let start = Instant::now();
        loop {
            let status = self.status(client, model, id).await;
            if status["status"] == want {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "{id} did not reach {want} within {deadline:?}: {status}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a key with `pipelet keys create` and returns it.
pub fn create_key(data_dir: &Path, name: &str, role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pipelet"))
        .args([
            "keys",
            "create",
            "--name",
            name,
            "--role",
            role,
            "--data-dir",
        ])
        .arg(data_dir)
        .output()
        .expect("keys create");
    assert!(
        out.status.success(),
        "keys create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// Starts `pipelet worker` against `server` with a worker key.
pub fn start_worker(server: &str, key: &str, name: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pipelet"))
        .args(["worker", "--server", server, "--key", key, "--name", name])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn pipelet worker")
}

/// kill -9 of any child.
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
}

pub fn temp_data_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    (dir, data)
}
