//! The server under test: a real `pipelet serve` process (the release binary), started
//! on a free loopback port in a temporary data dir (with `--workers 0` unless asked
//! otherwise), and stopped (or killed) when the [`Server`] is dropped. Also the helpers
//! the dispatch phase uses for its other `pipelet` processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long the server may take to print its listening address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a SIGTERM'd server may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const LISTENING_PREFIX: &str = "pipelet listening on http://";

/// The workspace root, where `cargo build -p pipelet` must run.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where the release `pipelet` binary is expected: beside this benchmark's own binary
/// when that is a release build (so `CARGO_TARGET_DIR` is respected), else
/// `<target>/release/pipelet`.
fn expected_binary() -> PathBuf {
    let name = format!("pipelet{}", std::env::consts::EXE_SUFFIX);
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        if dir.file_name().is_some_and(|n| n == "release") {
            return dir.join(name);
        }
        // A debug build of the bench: target/debug/pipelet-bench -> target/release.
        if let Some(target) = dir.parent() {
            return target.join("release").join(name);
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("release").join(name)
}

/// Finds the server binary: `explicit` as given, otherwise builds it with
/// `cargo build --release -p pipelet` (a no-op when it is up to date, so a stale binary
/// is never measured) unless `no_build`, and fails with a clear message when there is
/// none.
pub fn find_or_build(explicit: Option<&Path>, no_build: bool) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!("--server-bin {}: no such file", path.display());
    }
    let binary = expected_binary();
    let how = "build it with `cargo build --release -p pipelet`, or pass --server-bin PATH";
    if no_build {
        if binary.is_file() {
            return Ok(binary);
        }
        bail!(
            "the pipelet server binary is not at {} (and --no-build was given); {how}",
            binary.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the server: cargo build --release -p pipelet");
    let built = Command::new(&cargo)
        .args(["build", "--release", "-p", "pipelet"])
        .current_dir(workspace_root())
        .stdout(Stdio::null())
        .status();
    match built {
        Ok(status) if status.success() && binary.is_file() => Ok(binary),
        Ok(status) if status.success() => bail!(
            "`cargo build --release -p pipelet` succeeded but there is no binary at {}; \
             pass --server-bin PATH",
            binary.display()
        ),
        outcome => {
            let why = match outcome {
                Ok(status) => format!("`cargo build --release -p pipelet` failed ({status})"),
                Err(e) => format!("cannot run {}: {e}", Path::new(&cargo).display()),
            };
            if binary.is_file() {
                eprintln!(
                    "warning: {why}; using the existing (possibly stale) {}",
                    binary.display()
                );
                Ok(binary)
            } else {
                bail!(
                    "no pipelet server binary at {} and {why}; {how}",
                    binary.display()
                )
            }
        }
    }
}

/// Keeps the caller's environment from changing what is measured: no `PIPELET_*`
/// settings and no `RUST_LOG` reach the child, except `rust_log` when given.
pub fn clean_env(command: &mut Command, rust_log: Option<&str>) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PIPELET_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    if let Some(filter) = rust_log {
        command.env("RUST_LOG", filter);
    }
}

/// Stops a child process with SIGTERM (graceful), killing it if it lingers past
/// [`STOP_TIMEOUT`]. `what` names it in the error.
pub fn stop_child(child: &mut Child, what: &str) -> anyhow::Result<()> {
    if child.try_wait()?.is_some() {
        return Ok(());
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's,
        // which cannot have been reaped (and its pid reused) before we wait on it.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    child.wait()?;
    bail!("{what} did not stop within {STOP_TIMEOUT:?} of SIGTERM; killed it")
}

/// `pipelet keys create --role <role> --name <name>` on the server's store (the SQLite
/// file in `data_dir`, or the PostgreSQL database `database_url`); returns the key.
pub fn create_key(
    bin: &Path,
    data_dir: &Path,
    role: &str,
    name: &str,
    database_url: Option<&str>,
) -> anyhow::Result<String> {
    let mut command = Command::new(bin);
    command
        .args(["keys", "create", "--role", role, "--name", name])
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null());
    clean_env(&mut command, None);
    if let Some(url) = database_url {
        command.env("PIPELET_DATABASE_URL", url);
    }
    let out = command
        .output()
        .with_context(|| format!("cannot run {} keys create", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`pipelet keys create --role {role}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if key.is_empty() || key.contains(char::is_whitespace) {
        bail!("`pipelet keys create` printed {key:?}, not a key");
    }
    Ok(key)
}

/// The last `n` lines of a log file, for error messages.
pub fn file_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running `pipelet serve`.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub admin_key: String,
    log: PathBuf,
}

impl Server {
    /// Starts `binary serve --workers 0` on 127.0.0.1 (port chosen by the OS) with its
    /// data in `data_dir`, waits until it listens, and reads `<data-dir>/admin.key`.
    /// The server's stderr (its logs, at its default level unless `rust_log`) goes to
    /// `<data-dir>/../server.log`.
    pub fn start(binary: &Path, data_dir: &Path, rust_log: Option<&str>) -> anyhow::Result<Server> {
        Self::start_with(binary, data_dir, rust_log, 0, false, None)
    }

    /// [`Server::start`] with `workers` in-process preview workers, logs as JSON lines
    /// (`--log-format json`, microsecond timestamps) when `json_logs`, and its jobs and
    /// keys in the PostgreSQL database `database_url` (`--database-url`, passed in the
    /// environment) instead of `<data-dir>/pipelet.db` when given. The admin key is
    /// still written to `<data-dir>/admin.key` (the database must have no keys yet).
    pub fn start_with(
        binary: &Path,
        data_dir: &Path,
        rust_log: Option<&str>,
        workers: u32,
        json_logs: bool,
        database_url: Option<&str>,
    ) -> anyhow::Result<Server> {
        Self::start_extra(
            binary,
            data_dir,
            rust_log,
            workers,
            json_logs,
            database_url,
            &[],
        )
    }

    /// [`Server::start_with`] plus `extra` arguments after `serve`'s own (e.g.
    /// `--webhook-allow-private`).
    pub fn start_extra(
        binary: &Path,
        data_dir: &Path,
        rust_log: Option<&str>,
        workers: u32,
        json_logs: bool,
        database_url: Option<&str>,
        extra: &[&str],
    ) -> anyhow::Result<Server> {
        let log = data_dir.with_file_name("server.log");
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(binary);
        if json_logs {
            command.args(["--log-format", "json"]);
        }
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--workers")
            .arg(workers.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        clean_env(&mut command, rust_log);
        if let Some(url) = database_url {
            // In the environment rather than on the command line, where `ps` shows it.
            // The bench runs one server, its blobs in its data dir.
            command
                .env("PIPELET_DATABASE_URL", url)
                .env("PIPELET_SINGLE_SERVER", "1");
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("no stdout pipe to the server")?;

        // Read stdout on a thread (it is drained to the end so the server never blocks).
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep draining.
                    continue;
                }
            }
        });

        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_key: String::new(),
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if let Some(addr) = line.trim().strip_prefix(LISTENING_PREFIX) {
                        break addr
                            .parse::<SocketAddr>()
                            .with_context(|| format!("unexpected listening line {line:?}"))?;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "the server exited before listening ({status}); its log:\n{}",
                    server.log_tail()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the server did not print its address within {START_TIMEOUT:?}; its log:\n{}",
                    server.log_tail()
                );
            }
        };
        server.addr = addr;
        let key_path = data_dir.join("admin.key");
        server.admin_key = std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read the admin key at {}", key_path.display()))?
            .trim()
            .to_string();
        if server.admin_key.is_empty() {
            bail!("{} is empty", key_path.display());
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        file_tail(&self.log, 20)
    }

    /// The server's log file (its stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the server with SIGTERM (graceful), killing it if it lingers.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.terminate()
    }

    /// Ends a phase run against this server: on success stops it (an error stopping is
    /// the phase's error); on failure adds the server's log tail to the error (the
    /// server is stopped when dropped).
    pub fn finish<T>(self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        match result {
            Ok(value) => {
                self.stop()?;
                Ok(value)
            }
            Err(e) => Err(e.context(format!("server log tail:\n{}", self.log_tail()))),
        }
    }

    fn terminate(&mut self) -> anyhow::Result<()> {
        stop_child(&mut self.child, "the server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Err(e) = self.terminate() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Runs a phase's async part on a multi-thread runtime of its own, giving up after
/// `limit`.
pub fn block_on_phase<T>(
    phase: &str,
    limit: Duration,
    measure: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    rt.block_on(async {
        tokio::time::timeout(limit, measure)
            .await
            .map_err(|_| anyhow::anyhow!("the {phase} phase took longer than {limit:?}"))?
    })
}
