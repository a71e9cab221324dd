//! How `pipelet serve` starts, run as the real binary: servers on one PostgreSQL
//! database without shared blob storage refuse to start (unless one says
//! `--single-server`, and then it must be alone), logs carry no colour codes when
//! stderr is not a terminal, and a first start that fails on a busy port still shows
//! the admin key on the next start.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::engines::{PgDb, psql, skipped, start_server_env};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `pipelet serve` with its stdout and stderr piped and no inherited `PIPELET_*`
/// settings (nor `NO_COLOR`, which would hide what the colour test looks for).
fn serve(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pipelet"));
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
                let listening = line.starts_with("pipelet listening on");
                lines.push(line);
                if listening {
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
    common::sigterm(&child);
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
    let single = start_server_env(
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
    let c = start_server_env(&data("c"), &args, &env, Some(&key));
    let d = start_server_env(&data("d"), &args, &env, Some(&key));
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
