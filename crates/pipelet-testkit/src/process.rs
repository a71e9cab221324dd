//! The real `pipelet` binary as child processes, so tests can kill -9 them: servers on a
//! free port (found from the "pipelet listening on" line), workers, and key creation.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `pipelet` binary under test; [`crate::pipelet!`] makes one for the package's own.
#[derive(Debug, Clone)]
pub struct Pipelet {
    /// Path of the executable.
    pub bin: PathBuf,
}

/// A `pipelet serve` child process; dropping it kills it.
pub struct Server {
    /// The child process, for tests that signal or wait on it themselves.
    pub child: Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// The admin key to act with.
    pub key: String,
}

impl Pipelet {
    /// The binary at `bin` (usually `CARGO_BIN_EXE_pipelet`, via [`crate::pipelet!`]).
    pub fn new(bin: impl Into<PathBuf>) -> Pipelet {
        Pipelet { bin: bin.into() }
    }

    /// `pipelet` with no arguments yet.
    pub fn command(&self) -> Command {
        Command::new(&self.bin)
    }

    /// Starts `pipelet serve` on a free port and waits until it listens.
    pub fn start_server(&self, data_dir: &Path, extra: &[&str]) -> Server {
        self.start_server_on(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts `pipelet serve` listening on `listen` and waits until it listens.
    pub fn start_server_on(&self, data_dir: &Path, listen: &str, extra: &[&str]) -> Server {
        self.spawn_server(data_dir, listen, extra, &[], None)
    }

    /// Starts `pipelet serve` on a free port with extra environment and waits until it
    /// listens. `key`: the admin key to act with; `None` reads `<data_dir>/admin.key`,
    /// which only the first server on an empty store writes.
    pub fn start_server_env(
        &self,
        data_dir: &Path,
        extra: &[&str],
        envs: &[(String, String)],
        key: Option<&str>,
    ) -> Server {
        self.spawn_server(data_dir, "127.0.0.1:0", extra, envs, key)
    }

    fn spawn_server(
        &self,
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        envs: &[(String, String)],
        key: Option<&str>,
    ) -> Server {
        let mut child = self
            .command()
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen])
            .args(extra)
            .envs(envs.iter().map(|(k, v)| (k, v)))
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
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("server did not report its address (exit: {status:?})");
            }
        };
        // The address is printed a moment before the server (and its SIGTERM handler)
        // runs: wait until it answers, so that a test's SIGTERM finds it serving.
        let address = base.trim_start_matches("http://").to_string();
        crate::wait_until(
            Duration::from_secs(60),
            "the server answers GET /health",
            || answers_health(&address),
        );
        let key = match key {
            Some(key) => key.to_string(),
            None => std::fs::read_to_string(data_dir.join("admin.key"))
                .expect("admin.key")
                .trim()
                .to_string(),
        };
        Server { child, base, key }
    }

    /// Creates a key with `pipelet keys create --data-dir …` and returns it.
    pub fn create_key(&self, data_dir: &Path, name: &str, role: &str) -> String {
        let mut command = self.command();
        command
            .args(["keys", "create", "--name", name, "--role", role])
            .arg("--data-dir")
            .arg(data_dir);
        key_from(command)
    }

    /// `pipelet keys create --database-url …`: a key in a PostgreSQL store.
    pub fn create_key_pg(&self, database_url: &str, name: &str, role: &str) -> String {
        let mut command = self.command();
        command
            .args(["keys", "create", "--name", name, "--role", role])
            .args(["--database-url", database_url]);
        key_from(command)
    }

    /// Starts `pipelet worker` against `server` with a worker key.
    pub fn start_worker(&self, server: &str, key: &str, name: &str, extra: &[&str]) -> Child {
        self.command()
            .args(["worker", "--server", server, "--key", key, "--name", name])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pipelet worker")
    }
}

/// Whether `GET /health` at `address` (`host:port`) gets an HTTP answer.
pub fn answers_health(address: &str) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = String::new();
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_ok()
        && stream.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.")
}

fn key_from(mut command: Command) -> String {
    let out = command.output().expect("keys create");
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

impl Server {
    /// kill -9: no chance to flush or clean up.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM: a graceful shutdown (drain, hand running jobs back); does not wait.
    pub fn sigterm(&mut self) {
        sigterm(&self.child);
    }

    /// Creates a request with the admin key (asserting 200); returns the create answer.
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

    /// The status body of `id` (asserting 200).
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

/// kill -9 of any child.
pub fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGTERM, as an operator's stop sends it.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
}

/// Child processes (workers) that are killed when this is dropped, also when the test
/// panics half-way: none may outlive the test holding its output pipes open.
#[derive(Default)]
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            kill9(child);
        }
    }
}
