//! Key management end to end on the real binary: `pipelet keys list/revoke/rotate/update`
//! and `create --expires-in`; a revoke or rotation is refused (401) within a second by a
//! running server, whether made by the CLI on its SQLite file or through another server
//! on a shared PostgreSQL database; and no key, good or bad, ever reaches the log.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipelet_testkit::engines::{PgDb, skipped};
use pipelet_testkit::temp_data_dir;
use serde_json::{Value, json};

/// `pipelet keys <args> --data-dir <data>`.
fn keys(data: &Path, args: &[&str]) -> Output {
    crate::pipelet()
        .command()
        .arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .expect("run pipelet keys")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Runs a successful `pipelet keys` and returns its stdout.
fn ok(data: &Path, args: &[&str]) -> String {
    let o = keys(data, args);
    assert!(o.status.success(), "keys {args:?}: {}", stderr(&o));
    stdout(&o)
}

/// The listed key named `name` (`keys list --json`).
fn listed(data: &Path, name: &str) -> Value {
    let list: Value = serde_json::from_str(&ok(data, &["list", "--json"])).expect("list JSON");
    list.as_array()
        .expect("an array")
        .iter()
        .rev()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no key {name} in {list}"))
        .clone()
}

#[test]
fn keys_are_listed_rotated_updated_and_revoked_by_name() {
    let (_dir, data) = temp_data_dir();
    let secret = ok(&data, &["create", "--name", "ci", "--expires-in", "30d"]);
    assert!(
        secret.starts_with("plt_") && !secret.contains('\n'),
        "{secret}"
    );

    // A live name is refused a second time.
    let taken = keys(&data, &["create", "--name", "ci"]);
    assert!(!taken.status.success());
    assert!(
        stderr(&taken).contains("already named 'ci'"),
        "{}",
        stderr(&taken)
    );

    // The list: prefix, expiry, no secret.
    let table = ok(&data, &["list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains(&secret[..12]),
        "the prefix is shown: {table}"
    );
    assert!(!table.contains(&secret), "never the secret: {table}");
    let json = ok(&data, &["list", "--json"]);
    assert!(!json.contains(&secret), "never the secret: {json}");
    let ci = listed(&data, "ci");
    assert_eq!(ci["role"], "client");
    assert_eq!(ci["prefix"], secret[4..12]);
    assert!(ci["expires_at"].is_string(), "{ci}");
    assert!(ci["revoked_at"].is_null(), "{ci}");

    // Rotate: one new secret alone on stdout.
    let rotated = ok(&data, &["rotate", "ci"]);
    assert!(
        rotated.starts_with("plt_") && rotated != secret,
        "{rotated}"
    );
    assert_eq!(listed(&data, "ci")["id"], ci["id"], "same key");
    assert_eq!(listed(&data, "ci")["prefix"], rotated[4..12]);

    // Update: the cap and no expiry.
    ok(
        &data,
        &["update", "ci", "--max-priority", "7", "--no-expiry"],
    );
    let ci = listed(&data, "ci");
    assert_eq!(ci["max_priority"], 7);
    assert!(ci["expires_at"].is_null(), "{ci}");
    ok(
        &data,
        &["update", "ci", "--max-priority", "2", "--expires-in", "12h"],
    );
    assert!(listed(&data, "ci")["expires_at"].is_string());

    // Revoke; then nothing addresses it, and the name is free again.
    ok(&data, &["revoke", "ci"]);
    assert!(listed(&data, "ci")["revoked_at"].is_string());
    for args in [
        &["revoke", "ci"][..],
        &["rotate", "ci"],
        &["update", "ci", "--max-priority", "1"],
    ] {
        let o = keys(&data, args);
        assert!(!o.status.success(), "{args:?}");
        assert!(
            stderr(&o).contains("no live key is named 'ci'"),
            "{}",
            stderr(&o)
        );
    }
    ok(&data, &["create", "--name", "ci", "--role", "worker"]);
    let bad = keys(&data, &["create", "--name", "x", "--expires-in", "soon"]);
    assert!(!bad.status.success(), "a bad duration is refused");
}

#[test]
fn keys_get_quotas_on_create_and_update_and_list_them() {
    let (_dir, data) = temp_data_dir();
    ok(
        &data,
        &[
            "create",
            "--name",
            "tenant",
            "--max-queued",
            "50",
            "--max-running",
            "2",
            "--creates-per-minute",
            "120",
        ],
    );
    let key = listed(&data, "tenant");
    assert_eq!(
        (
            &key["max_queued"],
            &key["max_running"],
            &key["creates_per_minute"]
        ),
        (&json!(50), &json!(2), &json!(120)),
        "{key}"
    );
    let table = ok(&data, &["list"]);
    assert!(table.contains("MAX_QUEUED"), "{table}");
    assert!(table.contains("CREATES/MIN"), "{table}");

    // `default` goes back to the server's flag, 0 is no limit, the rest stay.
    let o = keys(
        &data,
        &[
            "update",
            "tenant",
            "--max-queued",
            "default",
            "--max-running",
            "0",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("max queued default"), "{}", stderr(&o));
    let key = listed(&data, "tenant");
    assert_eq!(key["max_queued"], Value::Null, "{key}");
    assert_eq!(key["max_running"], 0, "{key}");
    assert_eq!(key["creates_per_minute"], 120, "{key}");
    let table = ok(&data, &["list"]);
    assert!(table.contains("default"), "{table}");

    // Keys made without quotas take the server's defaults.
    ok(&data, &["create", "--name", "plain"]);
    assert_eq!(listed(&data, "plain")["max_queued"], Value::Null);

    let bad = keys(&data, &["update", "tenant", "--max-queued", "lots"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("default"), "{}", stderr(&bad));
}

#[test]
fn keys_get_a_fair_sharing_weight_on_create_and_update() {
    let (_dir, data) = temp_data_dir();
    ok(&data, &["create", "--name", "heavy", "--weight", "3"]);
    assert_eq!(listed(&data, "heavy")["weight"], 3);
    ok(&data, &["create", "--name", "plain"]);
    assert_eq!(listed(&data, "plain")["weight"], 1);
    let table = ok(&data, &["list"]);
    assert!(table.contains("WEIGHT"), "{table}");
    let o = keys(&data, &["update", "plain", "--weight", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("weight 5"), "{}", stderr(&o));
    assert_eq!(listed(&data, "plain")["weight"], 5);
    for bad in ["0", "101"] {
        let o = keys(&data, &["update", "plain", "--weight", bad]);
        assert!(!o.status.success(), "--weight {bad}");
    }
    assert_eq!(listed(&data, "plain")["weight"], 5);
}

/// Polls `GET /requests` on `base` with `key` until it answers 401; fails past `within`
/// (measured from `since`).
async fn refused_within(base: &str, key: &str, since: Instant, within: Duration) {
    let client = reqwest::Client::new();
    loop {
        let r = client
            .get(format!("{base}/requests"))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET /requests");
        if r.status() == 401 {
            return;
        }
        assert_eq!(r.status(), 200, "{base}");
        assert!(
            since.elapsed() < within,
            "{base} still accepts the key {:?} after the change",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_of(base: &str, key: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/requests"))
        .bearer_auth(key)
        .send()
        .await
        .expect("GET /requests")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_cli_revoke_is_refused_by_the_running_server_within_a_second() {
    let (_dir, data) = temp_data_dir();
    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);
    let key = ok(&data, &["create", "--name", "app"]);
    assert_eq!(status_of(&server.base, &key).await, 200, "cached now");
    ok(&data, &["revoke", "app"]);
    refused_within(&server.base, &key, Instant::now(), Duration::from_secs(1)).await;

    let key = ok(&data, &["create", "--name", "app2"]);
    assert_eq!(status_of(&server.base, &key).await, 200);
    let rotated = ok(&data, &["rotate", "app2"]);
    refused_within(&server.base, &key, Instant::now(), Duration::from_secs(1)).await;
    assert_eq!(status_of(&server.base, &rotated).await, 200);
}

async fn admin(
    base: &str,
    admin_key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(admin_key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await.expect("admin call");
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_revoke_through_one_server_is_refused_by_another_within_a_second() {
    if skipped(false, true) {
        return;
    }
    let db = PgDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let shared = format!("file://{}", dir.path().join("shared").display());
    let env = vec![("PIPELET_DATABASE_URL".to_string(), db.url.clone())];
    let args = ["--workers", "0", "--blob-url", shared.as_str()];
    let a = crate::pipelet().start_server_env(&dir.path().join("a"), &args, &env, None);
    let b = crate::pipelet().start_server_env(&dir.path().join("b"), &args, &env, Some(&a.key));

    let post = reqwest::Method::POST;
    let created = admin(
        &a.base,
        &a.key,
        post.clone(),
        "/admin/v1/keys",
        Some(json!({"name": "app", "role": "client"})),
    )
    .await;
    let key = created["secret"].as_str().expect("secret").to_string();
    assert_eq!(status_of(&b.base, &key).await, 200, "B has it cached now");
    admin(
        &a.base,
        &a.key,
        reqwest::Method::DELETE,
        "/admin/v1/keys/app",
        None,
    )
    .await;
    let revoked = Instant::now();
    assert_eq!(status_of(&a.base, &key).await, 401, "A refuses at once");
    refused_within(&b.base, &key, revoked, Duration::from_secs(1)).await;

    // A rotation likewise: the old secret is refused on B, the new one accepted.
    let created = admin(
        &a.base,
        &a.key,
        post.clone(),
        "/admin/v1/keys",
        Some(json!({"name": "app2", "role": "client"})),
    )
    .await;
    let old = created["secret"].as_str().expect("secret").to_string();
    assert_eq!(status_of(&b.base, &old).await, 200);
    let rotated = admin(&a.base, &a.key, post, "/admin/v1/keys/app2/rotate", None).await;
    let rotated_at = Instant::now();
    refused_within(&b.base, &old, rotated_at, Duration::from_secs(1)).await;
    let new = rotated["secret"].as_str().expect("secret");
    assert_eq!(status_of(&b.base, new).await, 200);
}

/// A `pipelet serve` whose log (stderr, at debug level) is kept.
struct LoggedServer {
    child: std::process::Child,
    base: String,
    log: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl LoggedServer {
    /// Kills the server and returns its whole log.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.log.lock().unwrap().clone()
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_logged(data: &Path) -> LoggedServer {
    let mut child = Command::new(&crate::pipelet().bin)
        .args([
            "serve",
            "--workers",
            "0",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pipelet serve");
    let log = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    for (stream, tx) in [
        (Box::new(out) as Box<dyn std::io::Read + Send>, Some(tx)),
        (Box::new(err), None),
    ] {
        let log = log.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                // stdout carries what the command prints (the first admin key, shown
                // once by design, and the address); the log is stderr.
                if let Some(tx) = &tx {
                    if let Some(url) = line.strip_prefix("pipelet listening on ") {
                        let _ = tx.send(url.trim().to_string());
                    }
                    continue;
                }
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        }));
    }
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server reports its address");
    LoggedServer {
        child,
        base,
        log,
        readers,
    }
}

#[tokio::test]
async fn no_key_good_or_bad_is_ever_logged() {
    let (_dir, data) = temp_data_dir();
    let server = start_logged(&data);
    let admin_key = std::fs::read_to_string(data.join("admin.key")).expect("admin.key");
    let admin_key = admin_key.trim().to_string();
    let created = admin(
        &server.base,
        &admin_key,
        reqwest::Method::POST,
        "/admin/v1/keys",
        Some(json!({"name": "app", "role": "client"})),
    )
    .await;
    let good = created["secret"].as_str().expect("secret").to_string();
    let worker = ok(&data, &["create", "--name", "gpu", "--role", "worker"]);
    let bad = [
        "plt_not-a-real-key-0123456789abcdef",
        "guessed-secret-value-42",
    ];
    let client = reqwest::Client::new();
    let paths = [
        "/requests",
        "/admin/v1/keys",
        "/queue/fal-ai/wan/v2.2-a14b/text-to-video/requests/6f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f/status",
    ];
    // Good keys first (the failures below end in 429s for this address).
    for key in [good.as_str(), admin_key.as_str(), worker.as_str()]
        .into_iter()
        .chain(bad)
    {
        for scheme in ["Bearer", "Key"] {
            for path in paths {
                client
                    .get(format!("{}{path}", server.base))
                    .header("authorization", format!("{scheme} {key}"))
                    .send()
                    .await
                    .expect("request");
            }
            client
                .post(format!("{}/worker/v1/claim", server.base))
                .header("authorization", format!("{scheme} {key}"))
                .json(&json!({"worker_id": "w", "pipelines": ["t2v"], "wait_ms": 0}))
                .send()
                .await
                .expect("claim");
        }
    }
    // No route takes a key in the query string, but one sent there is not logged either.
    for key in [good.as_str(), bad[0]] {
        client
            .get(format!("{}/requests?key={key}&fal_key={key}", server.base))
            .send()
            .await
            .expect("request");
    }
    // More failures, past the limit (20 a minute); then even the good key gets 429.
    for n in 0..10 {
        client
            .get(format!("{}/requests", server.base))
            .bearer_auth(bad[n % 2])
            .send()
            .await
            .expect("request");
    }
    let r = client
        .get(format!("{}/requests", server.base))
        .bearer_auth(&good)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let log = server.stop();
    assert!(
        log.contains("pipelet is serving"),
        "the log was captured: {log}"
    );
    assert!(
        log.contains("path=/requests"),
        "requests were logged: {log}"
    );
    for secret in [good.as_str(), admin_key.as_str(), worker.as_str()]
        .into_iter()
        .chain(bad)
    {
        assert!(
            !log.contains(secret),
            "a key reached the log: {secret}\n{log}"
        );
    }
}
