//! How `pipelet serve` starts, run as the real binary: servers on one PostgreSQL
//! database without shared blob storage refuse to start (unless one says
//! `--single-server`, and then it must be alone), logs carry no colour codes when
//! stderr is not a terminal, and a first start that fails on a busy port still shows
//! the admin key on the next start. With `--tls-cert`/`--tls-key` it serves https,
//! reloads the certificate on SIGHUP (keeping the old one when the new files are bad)
//! and refuses to start on a bad PEM file, naming it.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pipelet_testkit::engines::{PgDb, psql, skipped};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `pipelet serve` with its stdout and stderr piped and no inherited `PIPELET_*`
/// settings (nor `NO_COLOR`, which would hide what the colour test looks for).
fn serve(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut command = crate::pipelet().command();
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PIPELET_") {
            command.env_remove(name);
        }
    }
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--workers", "0"])
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pipelet serve")
}

/// A child's output, read on threads so that it never blocks on a full pipe: stdout
/// line by line as it comes, stderr whole once the child exits.
struct Output {
    stdout: mpsc::Receiver<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn read_output(child: &mut Child) -> Output {
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    Output { stdout: rx, stderr }
}

/// Runs `pipelet serve` that must refuse to start: returns its exit status, stdout and
/// stderr. Fails at once if it starts listening instead.
fn refused(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut child = serve(data_dir, args, envs);
    let output = read_output(&mut child);
    let deadline = Instant::now() + START_TIMEOUT;
    let mut stdout = String::new();
    loop {
        while let Ok(line) = output.stdout.try_recv() {
            if line.starts_with("pipelet listening on") {
                let _ = child.kill();
                let _ = child.wait();
                panic!("`serve {args:?}` started ({line}) but must refuse to");
            }
            stdout.push_str(&line);
            stdout.push('\n');
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            let stderr = output.stderr.join().expect("stderr thread");
            // Lines written just before the exit.
            while let Ok(line) = output.stdout.recv_timeout(Duration::from_secs(5)) {
                stdout.push_str(&line);
                stdout.push('\n');
            }
            assert!(!status.success(), "`serve {args:?}` exited 0: {stderr}");
            return (status, stdout, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`serve {args:?}` neither started nor exited within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `child` prints its address; returns what it printed up to then.
fn wait_until_listening(child: &mut Child, output: &Output) -> Vec<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut lines = Vec::new();
    loop {
        match output.stdout.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                let address = line
                    .strip_prefix("pipelet listening on http://")
                    .map(|a| a.trim().to_string());
                lines.push(line);
                if let Some(address) = address {
                    // The address is printed a moment before the server (and its SIGTERM
                    // handler) runs: a SIGTERM in between would kill it unlogged.
                    pipelet_testkit::wait_until(START_TIMEOUT, "GET /health answers", || {
                        pipelet_testkit::process::answers_health(&address)
                    });
                    return lines;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait();
                panic!("the server exited before listening ({status:?}): {lines:?}");
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server did not listen: {lines:?}"
        );
    }
}

/// Ends `child` with SIGTERM and waits for it.
fn stop(mut child: Child) {
    pipelet_testkit::process::sigterm(&child);
    child.wait().expect("wait for the server");
}

fn assert_mentions(what: &str, text: &str, words: &[&str]) {
    for word in words {
        assert!(
            text.contains(word),
            "{what} does not mention {word:?}: {text}"
        );
    }
}

#[test]
fn servers_on_postgres_without_shared_blobs_refuse_to_start() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    if skipped(false, true) {
        return;
    }
    let db = PgDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = |name: &str| dir.path().join(name);
    let on_db = [("PIPELET_DATABASE_URL", db.url.as_str())];

    // Blobs in the data dir on a shared database: refused, saying what to do.
    let (_, stdout, stderr) = refused(&data("a"), &[], &on_db);
    assert_mentions(
        "the refusal",
        &stderr,
        &["--blob-url s3://", "file:///", "--single-server"],
    );
    assert!(
        !stdout.contains("plt_"),
        "no key is made by a refused start: {stdout}"
    );

    // `--single-server` says it is alone: it starts...
    let env: Vec<(String, String)> = vec![("PIPELET_DATABASE_URL".into(), db.url.clone())];
    let single = crate::pipelet().start_server_env(
        &data("a"),
        &["--workers", "0", "--single-server"],
        &env,
        None,
    );
    // ...and then no other server may start on its database, single or shared.
    let single_env = [on_db[0], ("PIPELET_SINGLE_SERVER", "1")];
    let (_, _, stderr) = refused(&data("b"), &[], &single_env);
    assert_mentions(
        "a second single server's refusal",
        &stderr,
        &[
            "another pipelet server is running on this database",
            "--blob-url",
        ],
    );
    let shared_dir = dir.path().join("shared");
    let shared_url = format!("file://{}", shared_dir.display());
    let shared = ["--blob-url", shared_url.as_str()];
    let (_, _, stderr) = refused(&data("c"), &shared, &on_db);
    assert_mentions(
        "a shared server's refusal",
        &stderr,
        &["--single-server is running on this database", "Stop it"],
    );

    // Once it has stopped, servers with one shared folder (`--blob-url file:///…`, a
    // mount the operator vouches for) run together; a single server cannot join them.
    let key = single.key.clone();
    drop(single);
    wait_for_no_sessions(&db.url);
    let args = ["--workers", "0", "--blob-url", shared_url.as_str()];
    let c = crate::pipelet().start_server_env(&data("c"), &args, &env, Some(&key));
    let d = crate::pipelet().start_server_env(&data("d"), &args, &env, Some(&key));
    let (_, _, stderr) = refused(&data("e"), &["--single-server"], &on_db);
    assert_mentions(
        "a single server's refusal beside shared ones",
        &stderr,
        &["another pipelet server is running on this database"],
    );
    drop((c, d));
}

/// Waits until no other session is connected to the database at `url`: a killed
/// server's session (and its lock) ends a moment after the process.
fn wait_for_no_sessions(url: &str) {
    let deadline = Instant::now() + START_TIMEOUT;
    let sql = "SELECT count(*) FROM pg_stat_activity \
               WHERE datname = current_database() AND pid <> pg_backend_pid()";
    loop {
        match psql(url, sql) {
            Ok(n) if n == "0" => return,
            Ok(_) => {}
            Err(e) => panic!("psql: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the stopped server's sessions linger"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = serve(&dir.path().join("data"), &["--listen", "127.0.0.1:0"], &[]);
    let output = read_output(&mut child);
    wait_until_listening(&mut child, &output);
    stop(child);
    let stderr = output.stderr.join().expect("stderr thread");
    assert!(stderr.contains("pipelet is serving"), "the log: {stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "colour codes in a piped log: {stderr:?}"
    );
}

#[test]
fn the_admin_key_is_shown_on_the_start_after_a_busy_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("take a port");
    let busy_addr = busy.local_addr().expect("address").to_string();
    let (_, stdout, stderr) = refused(&data, &["--listen", &busy_addr], &[]);
    assert_mentions("the busy-port error", &stderr, &["cannot listen"]);
    assert!(!stdout.contains("plt_"), "{stdout}");

    let mut child = serve(&data, &["--listen", "127.0.0.1:0"], &[]);
    let output = read_output(&mut child);
    let printed = wait_until_listening(&mut child, &output);
    stop(child);
    let saved = std::fs::read_to_string(data.join("admin.key")).expect("admin.key");
    let at = printed
        .iter()
        .position(|l| l.starts_with("Created the admin API key"))
        .unwrap_or_else(|| panic!("the admin key is not shown: {printed:?}"));
    assert_eq!(printed.get(at + 1).map(String::as_str), Some(saved.trim()));
}

/// A fresh self-signed certificate for 127.0.0.1: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
            .expect("generate a certificate");
    (cert.pem(), key_pair.serialize_pem())
}

/// Whether `GET https://{address}/health` answers 200 on a new connection that trusts
/// only `cert_pem`.
fn https_health(address: &str, cert_pem: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client");
        client
            .get(format!("https://{address}/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
}

fn sighup(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

#[test]
fn tls_certificate_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let write = |pem: &(String, String)| {
        std::fs::write(&cert, &pem.0).expect("write cert");
        std::fs::write(&key, &pem.1).expect("write key");
    };
    let first = self_signed();
    write(&first);
    let tls = [
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
    ];
    let mut child = serve(&dir.path().join("data"), &tls, &[]);
    let output = read_output(&mut child);
    let deadline = Instant::now() + START_TIMEOUT;
    let address = loop {
        match output.stdout.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => {
                assert!(
                    !line.starts_with("pipelet listening on http://"),
                    "says http with TLS: {line}"
                );
                if let Some(a) = line.strip_prefix("pipelet listening on https://") {
                    break a.trim().to_string();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the server exited before listening: {:?}", child.wait())
            }
        }
        assert!(Instant::now() < deadline, "the server did not listen");
    };
    pipelet_testkit::wait_until(START_TIMEOUT, "https /health answers", || {
        https_health(&address, &first.0)
    });

    // New files, then SIGHUP: new connections get the new certificate.
    let second = self_signed();
    write(&second);
    assert!(!https_health(&address, &second.0), "not before the SIGHUP");
    sighup(&child);
    pipelet_testkit::wait_until(Duration::from_secs(20), "the new certificate", || {
        https_health(&address, &second.0)
    });
    assert!(!https_health(&address, &first.0), "the old one is gone");

    // A broken file and SIGHUP: logged, and the last good certificate stays.
    std::fs::write(&cert, "not a certificate").expect("write cert");
    sighup(&child);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "SIGHUP ended the server"
    );
    assert!(
        https_health(&address, &second.0),
        "still the last good certificate"
    );

    stop(child);
    let stderr = output.stderr.join().expect("stderr thread");
    assert_mentions(
        "the log",
        &stderr,
        &[
            "TLS certificate reloaded",
            "cannot reload the TLS certificate",
            "cert.pem",
        ],
    );
}

#[test]
fn bad_tls_files_refuse_the_start_naming_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let good = self_signed();
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    )
    .expect("write cert");
    std::fs::write(&key, &good.1).expect("write key");
    let (cert_arg, key_arg) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));

    let (_, _, stderr) = refused(&data, &["--tls-cert", cert_arg, "--tls-key", key_arg], &[]);
    assert_mentions(
        "the bad certificate error",
        &stderr,
        &["--tls-cert", cert_arg],
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    let missing = dir.path().join("missing.pem");
    std::fs::write(&cert, &good.0).expect("write cert");
    let missing_arg = missing.to_str().expect("utf-8");
    let (_, _, stderr) = refused(
        &data,
        &["--tls-cert", cert_arg, "--tls-key", missing_arg],
        &[],
    );
    assert_mentions(
        "the missing key error",
        &stderr,
        &["--tls-key", missing_arg],
    );

    // One without the other, from the environment too.
    let (_, _, stderr) = refused(&data, &[], &[("PIPELET_TLS_CERT", cert_arg)]);
    assert_mentions(
        "the lone --tls-cert error",
        &stderr,
        &["--tls-cert and --tls-key"],
    );
}
