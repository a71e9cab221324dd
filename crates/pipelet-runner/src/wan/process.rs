//! The runner's Python process: spawning `python -m pipelet_wan`, the `ready`
//! handshake, line I/O with a bound on every line read, and the stderr tail that
//! explains a crash.
//!
//! stdout carries protocol lines only; stderr (the runner's logs) is forwarded to
//! `tracing` and its last lines are kept for error messages.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::WanConfig;
use super::lines::{Line, LineReader};
use super::protocol::{self, Event, MAX_LINE_BYTES, PROTOCOL_VERSION, Ready};

/// Lines of stderr kept to explain a crash (the whole stderr is in the worker's log).
const STDERR_TAIL_LINES: usize = 8;
/// Most characters of that tail put into a job's error message.
const MAX_TAIL_CHARS: usize = 2000;
/// Longest stderr line kept whole (a longer one is cut).
const MAX_STDERR_LINE: usize = 16 * 1024;
/// How long a runner that is exiting by itself gets before it is killed.
pub const EXIT_GRACE: Duration = Duration::from_secs(5);

/// What went wrong talking to the process. Any of these means the process is out of
/// step or gone, and must be replaced.
#[derive(Debug)]
pub enum Broken {
    /// stdout closed: the process exited or crashed.
    Exited,
    /// Writing to stdin failed or reading stdout failed.
    Io(String),
    /// A line that breaks the protocol.
    Protocol(String),
    /// No answer in time.
    Timeout(String),
}

/// A started runner process.
pub struct RunnerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: LineReader<BufReader<ChildStdout>>,
    tail: Arc<Mutex<VecDeque<String>>>,
    stderr_task: tokio::task::JoinHandle<()>,
    pub ready: Ready,
    /// Pipelines the runner holds in memory, as its last `loaded` said.
    pub resident: Vec<String>,
    /// A job's exchange started and has not ended (its future was dropped midway): the
    /// process is out of step and must be replaced.
    pub in_flight: bool,
}

impl RunnerProcess {
    /// Starts the process and waits for its `ready`.
    pub async fn start(config: &WanConfig) -> Result<RunnerProcess, String> {
        let mut cmd = Command::new(&config.python);
        cmd.arg("-m")
            .arg("pipelet_wan")
            .args(&config.runner_args)
            .env("PYTHONPATH", python_path(config))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {} -m pipelet_wan: {e} (set --python to a Python with runners/wan/requirements.txt installed)",
                config.python.display()
            )
        })?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the runner process has no stdio pipes".into());
        };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_task = tokio::spawn(forward_stderr(stderr, tail.clone()));
        let mut process = RunnerProcess {
            child,
            stdin: Some(stdin),
            stdout: LineReader::new(BufReader::new(stdout), MAX_LINE_BYTES),
            tail,
            stderr_task,
            ready: Ready {
                protocol: 0,
                device: String::new(),
                dtype: String::new(),
                device_name: None,
                versions: Default::default(),
            },
            resident: Vec::new(),
            in_flight: false,
        };
        let first = tokio::time::timeout(config.ready_timeout, process.recv()).await;
        let ready = match first {
            Ok(Ok(Event::Ready(ready))) => ready,
            Ok(Ok(other)) => {
                let why = format!("sent {other:?} before `ready`");
                return Err(process.kill_and_describe(&why, Duration::ZERO).await);
            }
            Ok(Err(Broken::Exited)) => {
                let why = "exited before it was ready";
                return Err(process.kill_and_describe(why, EXIT_GRACE).await);
            }
            Ok(Err(broken)) => return Err(process.describe_broken(broken).await),
            Err(_) => {
                let why = format!("was not ready within {:?}", config.ready_timeout);
                return Err(process.kill_and_describe(&why, Duration::ZERO).await);
            }
        };
        if ready.protocol != PROTOCOL_VERSION {
            let why = format!(
                "speaks protocol {}, this worker speaks {PROTOCOL_VERSION} (update runners/wan or pipelet)",
                ready.protocol
            );
            return Err(process.kill_and_describe(&why, Duration::ZERO).await);
        }
        process.ready = ready;
        Ok(process)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends one command.
    pub async fn send(&mut self, command: &protocol::Command) -> Result<(), Broken> {
        let line = command.to_line().map_err(Broken::Protocol)?;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Broken::Io("the runner's stdin is closed".into()))?;
        stdin
            .write_all(&line)
            .await
            .map_err(|e| Broken::Io(format!("cannot write to the runner: {e}")))?;
        stdin
            .flush()
            .await
            .map_err(|e| Broken::Io(format!("cannot write to the runner: {e}")))
    }

    /// The next message from the runner. Cancel-safe (used in `select!`).
    pub async fn recv(&mut self) -> Result<Event, Broken> {
        loop {
            match self.stdout.next().await {
                Ok(Line::Full(line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Ok(Line::Full(line)) => return Event::parse(&line).map_err(Broken::Protocol),
                Ok(Line::TooLong) => {
                    return Err(Broken::Protocol(format!(
                        "the runner sent a line over {MAX_LINE_BYTES} bytes"
                    )));
                }
                Ok(Line::Eof) => return Err(Broken::Exited),
                Err(e) => return Err(Broken::Io(format!("cannot read from the runner: {e}"))),
            }
        }
    }

    /// Turns a failure into a message naming the cause and the runner's last words,
    /// stopping the process first.
    pub async fn describe_broken(self, broken: Broken) -> String {
        match broken {
            // It is exiting by itself: let it finish (and say why on stderr).
            Broken::Exited => self.kill_and_describe("crashed", EXIT_GRACE).await,
            Broken::Io(why) | Broken::Protocol(why) | Broken::Timeout(why) => {
                self.kill_and_describe(&why, Duration::ZERO).await
            }
        }
    }

    /// Stops the process (after `grace`, if it still runs) and says what happened.
    pub async fn kill_and_describe(mut self, what: &str, grace: Duration) -> String {
        let status = self.stop(grace).await;
        // The stderr reader ends when the process's stderr closes.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.stderr_task).await;
        let status = status.map_or_else(|| "still running; killed".to_string(), describe_status);
        let tail = self
            .tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        // Keep the end: the last lines say what went wrong.
        let skip = tail.chars().count().saturating_sub(MAX_TAIL_CHARS);
        let tail: String = tail.chars().skip(skip).collect();
        if tail.is_empty() {
            format!("wan runner {what} ({status})")
        } else {
            format!("wan runner {what} ({status}): {tail}")
        }
    }

    /// Closes stdin (the runner exits after its job) and waits up to `grace`, then kills.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        drop(self.stdin.take());
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                None
            }
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                9 => " (SIGKILL)",
                6 => " (SIGABRT)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            return format!("killed by signal {signal}{name}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "exited".into(),
    }
}

/// `PYTHONPATH` with the runner's folder first, keeping any the operator set.
fn python_path(config: &WanConfig) -> std::ffi::OsString {
    let mut paths = vec![config.runner_dir.clone()];
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(paths).unwrap_or_else(|_| config.runner_dir.clone().into_os_string())
}

/// Copies the runner's stderr to the log, keeping the last lines.
async fn forward_stderr(stderr: tokio::process::ChildStderr, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut reader = LineReader::new(BufReader::new(stderr), MAX_STDERR_LINE);
    loop {
        let text = match reader.next().await {
            Ok(Line::Full(line)) => String::from_utf8_lossy(&line).trim_end().to_string(),
            Ok(Line::TooLong) => "[a very long line]".to_string(),
            Ok(Line::Eof) | Err(_) => return,
        };
        // tqdm-style bars redraw with \r; keep what a person would see last.
        let text = text.rsplit('\r').next().unwrap_or_default().to_string();
        if text.is_empty() {
            continue;
        }
        tracing::info!(target: "pipelet::wan_runner", "{text}");
        if let Ok(mut t) = tail.lock() {
            if t.len() == STDERR_TAIL_LINES {
                t.pop_front();
            }
            t.push_back(text);
        }
    }
}
