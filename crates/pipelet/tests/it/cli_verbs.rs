//! The client verbs as a person meets them, against a real `pipelet serve`: `submit`
//! into a pipe prints one plain line per change and ends at N/N and COMPLETED; `status`
//! prints one line (or the JSON with `--json`); `cancel --force` stops a running
//! request; `--image` misuse is refused before any request; every flag has a help text.
//!
//! Where a test needs a request held in a given state, a hand-driven worker (the worker
//! API over HTTP) claims it and reports progress, so nothing depends on timing.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::process::{Output, Stdio};
use std::time::Duration;

use pipelet_testkit::{Server, temp_data_dir};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

const T2V: &str = "wan22-fast-t2v";
const DEADLINE: Duration = Duration::from_secs(120);

fn cli(server: &Server) -> Command {
    let mut command = Command::new(&crate::pipelet().bin);
    command
        .env("PIPELET_SERVER", &server.base)
        .env("PIPELET_KEY", &server.key)
        .kill_on_drop(true);
    command
}

async fn run(server: &Server, args: &[&str]) -> Output {
    cli(server).args(args).output().await.expect("run pipelet")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

/// `pipelet submit --no-wait` of a small text-to-video request; returns its id.
async fn submit_no_wait(server: &Server, extra: &[&str]) -> String {
    let mut args = vec!["submit", T2V, "--prompt", "a fox", "--no-wait"];
    args.extend_from_slice(extra);
    let o = run(server, &args).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

/// A worker driven by hand through the worker API.
struct HandWorker {
    http: reqwest::Client,
    base: String,
    key: String,
}

struct Lease {
    id: String,
    token: i64,
}

impl HandWorker {
    fn new(server: &Server, data: &std::path::Path) -> HandWorker {
        HandWorker {
            http: reqwest::Client::new(),
            base: server.base.clone(),
            key: crate::pipelet().create_key(data, "hand", "worker"),
        }
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/worker/v1/{path}", self.base))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .expect("worker call")
    }

    /// Claims the one queued job.
    async fn claim(&self) -> Lease {
        let r = self
            .post(
                "claim",
                json!({"worker_id": "hand", "pipelines": ["t2v", "i2v"], "wait_ms": 10_000}),
            )
            .await;
        assert_eq!(r.status(), 200, "claim");
        let job: Value = r.json().await.expect("claim json");
        Lease {
            id: job["job_id"].as_str().expect("job_id").to_string(),
            token: job["lease_token"].as_i64().expect("lease_token"),
        }
    }

    /// Reports progress; returns whether a cancel was requested.
    async fn heartbeat(&self, lease: &Lease, done: u32, total: u32) -> bool {
        let r = self
            .post(
                &format!("jobs/{}/heartbeat", lease.id),
                json!({"lease_token": lease.token, "progress": {"done": done, "total": total}}),
            )
            .await;
        assert_eq!(r.status(), 200, "heartbeat");
        let answer: Value = r.json().await.expect("heartbeat json");
        answer["cancel_requested"]
            .as_bool()
            .expect("cancel_requested")
    }

    async fn complete(&self, lease: &Lease, video: &[u8]) {
        let r = self
            .http
            .put(format!(
                "{}/worker/v1/jobs/{}/result?lease_token={}",
                self.base, lease.id, lease.token
            ))
            .bearer_auth(&self.key)
            .body(video.to_vec())
            .send()
            .await
            .expect("upload");
        assert_eq!(r.status(), 200, "upload");
        let r = self
            .post(
                &format!("jobs/{}/complete", lease.id),
                json!({"lease_token": lease.token, "width": 832, "height": 480, "frames": 81,
                    "fps": 16, "backend": "preview", "run_seconds": 2.5}),
            )
            .await;
        assert_eq!(r.status(), 204, "complete");
    }

    async fn fail(&self, lease: &Lease, error: &str) {
        let r = self
            .post(
                &format!("jobs/{}/fail", lease.id),
                json!({"lease_token": lease.token, "error": error, "retryable": false}),
            )
            .await;
        assert_eq!(r.status(), 204, "fail");
    }
}

/// Lines a child writes to stderr, as they come.
struct Lines {
    rx: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn of(stderr: tokio::process::ChildStderr) -> Lines {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line that satisfies `want` and returns it.
    async fn until(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let wait = async {
            while let Some(line) = self.rx.recv().await {
                self.seen.push(line.clone());
                if want(&line) {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(DEADLINE, wait).await {
            Ok(Some(line)) => line,
            _ => panic!("no line {what}; got {:#?}", self.seen),
        }
    }

    /// Every remaining line, once the child has closed stderr.
    async fn rest(&mut self) -> Vec<String> {
        while let Ok(Some(line)) = tokio::time::timeout(DEADLINE, self.rx.recv()).await {
            self.seen.push(line);
        }
        self.seen.clone()
    }
}

#[tokio::test]
async fn submit_into_a_pipe_prints_plain_lines_ending_at_n_of_n() {
    let (dir, data) = temp_data_dir();
    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);
    let worker = HandWorker::new(&server, &data);
    let out = dir.path().join("fox.mp4");
    let mut child = cli(&server)
        .args(["submit", T2V, "--prompt", "a fox", "-o"])
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn submit");
    let mut lines = Lines::of(child.stderr.take().expect("stderr"));

    let queued = lines.until("queued", |l| l.starts_with("IN_QUEUE")).await;
    assert_eq!(queued, "IN_QUEUE, position 0 (next)");
    let lease = worker.claim().await;
    // Claimed, no progress reported yet: the status already says 0 of the expected tasks.
    lines
        .until("starting", |l| l.starts_with("IN_PROGRESS 0/"))
        .await;
    assert!(!worker.heartbeat(&lease, 3, 10).await);
    let running = lines.until("at 3/10", |l| l.contains("3/10")).await;
    assert!(
        running.starts_with("IN_PROGRESS 3/10 (30%), about ") && running.ends_with(" s in total"),
        "{running}"
    );
    // The last progress the client saw is 3/10: it must still end at 10/10.
    worker.complete(&lease, b"not really an mp4").await;
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("submit ended")
        .expect("wait");
    let all = lines.rest().await;
    assert!(status.success(), "{all:#?}");
    let joined = all.join("\n");
    assert!(
        !joined.contains('\r') && !joined.contains('\x1b'),
        "plain output only: {joined:?}"
    );
    let tail: Vec<&str> = all.iter().map(String::as_str).rev().take(3).collect();
    assert_eq!(tail[2], "IN_PROGRESS 10/10 (100%)", "{all:#?}");
    assert!(
        tail[1].starts_with("COMPLETED in ") && tail[1].ends_with(" s"),
        "{all:#?}"
    );
    assert!(tail[0].starts_with("wrote "), "{all:#?}");
    // Each state was printed once, not once per poll.
    assert_eq!(all.iter().filter(|l| l.contains("3/10")).count(), 1);
    assert_eq!(std::fs::read(&out).expect("written"), b"not really an mp4");
    let mut stdout = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stdout.take().expect("stdout"), &mut stdout)
        .await
        .expect("stdout");
    assert_eq!(stdout.trim(), out.display().to_string());
}

/// `submit --webhook URL` sends `?fal_webhook=`: a server refuses a loopback URL naming
/// that parameter, and one started with `--webhook-allow-private` takes it (its event
/// list then shows the claim).
#[tokio::test]
async fn submit_webhook_sends_fal_webhook() {
    let (_dir, data) = temp_data_dir();
    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);
    let hook = "http://127.0.0.1:9/hook";
    let o = run(
        &server,
        &[
            "submit",
            T2V,
            "--prompt",
            "a fox",
            "--no-wait",
            "--webhook",
            hook,
        ],
    )
    .await;
    assert!(!o.status.success());
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains("fal_webhook") && stderr.contains("127.0.0.1"),
        "{stderr}"
    );
    drop(server);

    let (_dir, data) = temp_data_dir();
    let server =
        crate::pipelet().start_server(&data, &["--workers", "0", "--webhook-allow-private"]);
    let worker = HandWorker::new(&server, &data);
    let id = submit_no_wait(&server, &["--webhook", hook]).await;
    worker.claim().await;
    let events: Value = reqwest::Client::new()
        .get(format!(
            "{}/queue/{T2V}/requests/{id}/webhooks",
            server.base
        ))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("list events")
        .json()
        .await
        .expect("events JSON");
    assert_eq!(events["events"][0]["event_type"], "acquired", "{events}");
}

#[tokio::test]
async fn status_prints_one_line_or_the_json() {
    let (_dir, data) = temp_data_dir();
    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);
    let worker = HandWorker::new(&server, &data);
    let id = submit_no_wait(&server, &[]).await;

    let o = run(&server, &["status", &id]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "IN_QUEUE, position 0 (next)");
    let o = run(&server, &["status", &id, "--json"]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let body: Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    assert_eq!(body["status"], "IN_QUEUE");
    assert_eq!(body["request_id"], id.as_str());

    let lease = worker.claim().await;
    worker.heartbeat(&lease, 40, 82).await;
    let o = run(&server, &["status", &id, "--model", T2V]).await;
    let line = text(&o.stdout);
    assert!(
        line.starts_with("IN_PROGRESS 40/82 (49%), about ") && line.ends_with(" s in total"),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);

    worker.fail(&lease, "the GPU ran out of memory").await;
    let o = run(&server, &["status", &id]).await;
    assert!(
        text(&o.stdout).starts_with("FAILED: "),
        "{}",
        text(&o.stdout)
    );
    assert!(text(&o.stdout).contains("the GPU ran out of memory"));
    // A request that ended badly is still a successful `status`.
    assert!(o.status.success());
}

#[tokio::test]
async fn cancel_force_stops_a_running_request() {
    let (_dir, data) = temp_data_dir();
    // A real in-process worker: the forced cancel goes all the way to the render.
    let server = crate::pipelet().start_server(&data, &["--workers", "1"]);
    let http = reqwest::Client::new();
    // 82 tasks at 1280x720: long enough to be caught running.
    let id = submit_no_wait(&server, &["--size", "1280x720", "--duration", "5"]).await;
    server
        .wait_for(&http, T2V, &id, "IN_PROGRESS", DEADLINE)
        .await;

    let o = run(&server, &["cancel", &id]).await;
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("--force") && !err.contains("?force"), "{err}");

    let o = run(&server, &["cancel", "--force", &id]).await;
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("will end CANCELLED"), "{err}");
    server
        .wait_for(&http, T2V, &id, "CANCELLED", DEADLINE)
        .await;
    let o = run(&server, &["status", &id]).await;
    assert!(
        text(&o.stdout).starts_with("CANCELLED"),
        "{}",
        text(&o.stdout)
    );
}

/// `pipelet submit` against a listener that must see no connection.
async fn submit_offline(args: &[&str]) -> Output {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let run = Command::new(&crate::pipelet().bin)
        .arg("submit")
        .args(args)
        .env("PIPELET_SERVER", &base)
        .env("PIPELET_KEY", "unused")
        .kill_on_drop(true)
        .output();
    // A client that sent its request waits for an answer this listener never gives.
    let o = tokio::time::timeout(DEADLINE, run)
        .await
        .expect("submit waited on the server: it was contacted")
        .expect("run pipelet");
    listener.set_nonblocking(true).expect("nonblocking");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the server was contacted: {other:?}"),
    }
    o
}

#[tokio::test]
async fn image_misuse_is_refused_before_any_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("cat.png");
    std::fs::write(&image, b"\x89PNG\r\n\x1a\n").expect("image");
    let image = image.to_str().expect("path");

    let o = submit_offline(&[T2V, "--prompt", "x", "--image", image]).await;
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("wan22-fast-t2v is a text-to-video model and takes no --image"),
        "{err}"
    );

    let o = submit_offline(&["wan22-fast-i2v-pro", "--prompt", "x"]).await;
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("wan22-fast-i2v-pro is an image-to-video model") && err.contains("--image"),
        "{err}"
    );
}

/// Help text with clap's `[default: …]`, `[env: …]` and `[possible values: …]` removed.
fn words(help: &str) -> String {
    let mut out = String::new();
    let mut depth = 0u32;
    for c in help.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.trim().to_string()
}

/// The option and argument lines of one `-h` page that have no help text. clap puts
/// the help two spaces after the name, or (on long pages) on the next, deeper line.
fn undocumented(page: &str) -> Vec<String> {
    let lines: Vec<&str> = page.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut in_list = false;
    let mut missing = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.starts_with(' ') {
            // A section heading: "Options:", "Arguments:", "Wan runner (--runner wan):".
            in_list = line.ends_with(':') && *line != "Commands:" && *line != "Usage:";
            continue;
        }
        let item = line.trim();
        if !in_list || !(item.starts_with('-') || item.starts_with('<')) {
            continue;
        }
        let same_line = item
            .split_once("  ")
            .map(|(_, h)| words(h))
            .unwrap_or_default();
        let next_line = lines
            .get(i + 1)
            .filter(|next| indent(next) > indent(line) && !next.trim().is_empty())
            .map(|next| words(next))
            .unwrap_or_default();
        if same_line.is_empty() && next_line.is_empty() {
            missing.push(item.to_string());
        }
    }
    missing
}

/// The subcommand names listed on a help page.
fn subcommands(page: &str) -> Vec<String> {
    let mut in_list = false;
    let mut names = Vec::new();
    for line in page.lines() {
        if !line.starts_with(' ') {
            in_list = line == "Commands:";
            continue;
        }
        if in_list
            && let Some(name) = line.split_whitespace().next()
            && name != "help"
        {
            names.push(name.to_string());
        }
    }
    names
}

#[tokio::test]
async fn every_flag_of_every_verb_has_a_help_text() {
    let mut pending = vec![Vec::<String>::new()];
    let mut missing = Vec::new();
    let mut pages = 0;
    while let Some(path) = pending.pop() {
        let o = Command::new(&crate::pipelet().bin)
            .args(&path)
            .arg("-h")
            .output()
            .await
            .expect("help");
        assert!(o.status.success(), "{path:?} -h");
        let page = String::from_utf8_lossy(&o.stdout).to_string();
        pages += 1;
        for item in undocumented(&page) {
            missing.push(format!("pipelet {} {item}", path.join(" ")));
        }
        for sub in subcommands(&page) {
            let mut next = path.clone();
            next.push(sub);
            pending.push(next);
        }
    }
    assert!(pages >= 8, "walked only {pages} help pages");
    assert!(missing.is_empty(), "flags without help: {missing:#?}");
}

#[tokio::test]
async fn list_prints_one_line_per_request_newest_first() {
    let (_dir, data) = temp_data_dir();
    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);
    let first = submit_no_wait(&server, &[]).await;
    let second = submit_no_wait(&server, &[]).await;

    let o = run(&server, &["list"]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0][..3], [second.as_str(), T2V, "IN_QUEUE"], "{out}");
    assert_eq!(lines[1][..3], [first.as_str(), T2V, "IN_QUEUE"], "{out}");
    assert!(lines[0][3].ends_with('Z'), "created, RFC 3339: {out}");

    let o = run(&server, &["cancel", &first]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(&server, &["list", "--status", "CANCELLED", "--model", T2V]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).lines().count(), 1);
    assert!(text(&o.stdout).starts_with(&first), "{}", text(&o.stdout));

    // A short page says how to get the next one.
    let o = run(&server, &["list", "--limit", "1"]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).starts_with(&second));
    let err = text(&o.stderr);
    let cursor = err
        .split_whitespace()
        .skip_while(|w| *w != "--cursor")
        .nth(1)
        .unwrap_or_else(|| panic!("no --cursor hint: {err}"))
        .to_string();
    let o = run(
        &server,
        &["list", "--limit", "1", "--cursor", &cursor, "--json"],
    )
    .await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let page: Value = serde_json::from_slice(&o.stdout).expect("list JSON");
    assert_eq!(page["requests"][0]["request_id"], first.as_str(), "{page}");
    assert_eq!(page["requests"][0]["status"], "CANCELLED", "{page}");
    assert!(page["next_cursor"].is_null(), "{page}");

    // The server's refusal names the flag's parameter.
    let o = run(&server, &["list", "--limit", "0"]).await;
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("limit"), "{}", text(&o.stderr));
}
