//! The shared engines for tests: moto's S3 server (one per test, on a free
//! port), a fresh PostgreSQL database per test on the shared server, and a private
//! PostgreSQL cluster a test may stop and start without disturbing anyone else.
//!
//! Prerequisites fail the test loudly unless explicitly skipped:
//! - S3: `PIPELET_TEST_MOTO` names a `moto_server` executable (`source scripts/s3-env.sh`
//!   installs one and sets it) or the URL of a running moto; `PIPELET_SKIP_S3=1` skips.
//! - PostgreSQL: `PIPELET_TEST_DATABASE_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/postgres`) and `psql`; the private cluster needs
//!   the server binaries (`pg_config --bindir`, or `PIPELET_TEST_PG_BINDIR`).
//!   `PIPELET_SKIP_POSTGRES=1` skips.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{env_flag, unique};

/// The shared PostgreSQL server's maintenance database, used unless
/// `PIPELET_TEST_DATABASE_URL` names another.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Whether `PIPELET_SKIP_S3=1` switches off the tests that need moto's S3.
pub fn skip_s3() -> bool {
    env_flag("PIPELET_SKIP_S3")
}

/// Whether `PIPELET_SKIP_POSTGRES=1` switches off the tests that need PostgreSQL.
pub fn skip_postgres() -> bool {
    env_flag("PIPELET_SKIP_POSTGRES")
}

/// True (after saying so) when the test must be skipped because an engine it needs is
/// switched off with `PIPELET_SKIP_S3=1` / `PIPELET_SKIP_POSTGRES=1`.
pub fn skipped(needs_s3: bool, needs_postgres: bool) -> bool {
    if needs_s3 && skip_s3() {
        eprintln!("PIPELET_SKIP_S3=1: skipping an S3 test");
        return true;
    }
    if needs_postgres && skip_postgres() {
        eprintln!("PIPELET_SKIP_POSTGRES=1: skipping a PostgreSQL test");
        return true;
    }
    false
}

// ---------------------------------------------------------------------------------------
// S3: moto

/// moto's S3 server for one test. Dropping it stops the process it started.
pub struct Moto {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    http: reqwest::Client,
}

impl Moto {
    /// Starts `$PIPELET_TEST_MOTO` on a free loopback port (or uses the running moto that
    /// it names by URL). Panics with what to do when it is not set up.
    pub fn start() -> Moto {
        let moto = std::env::var("PIPELET_TEST_MOTO")
            .ok()
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "PIPELET_TEST_MOTO is not set: the S3 tests need moto's S3 server. Run \
                     `source scripts/s3-env.sh` before `cargo test` (it installs moto into \
                     ~/.cache/pipelet and sets PIPELET_TEST_MOTO), point PIPELET_TEST_MOTO at \
                     a moto_server or a running moto's URL, or set PIPELET_SKIP_S3=1 to skip \
                     the S3 tests"
                )
            });
        let http = reqwest::Client::new();
        if moto.starts_with("http://") || moto.starts_with("https://") {
            return Moto {
                child: None,
                endpoint: moto.trim_end_matches('/').to_string(),
                http,
            };
        }
        let mut child = Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start PIPELET_TEST_MOTO={moto}: {e}. `source scripts/s3-env.sh` \
                     installs it; PIPELET_SKIP_S3=1 skips the S3 tests"
                )
            });
        // Werkzeug says " * Running on http://127.0.0.1:<port>" on stderr, then logs a
        // line per request there: keep reading it so moto never blocks on the pipe.
        let stderr = child.stderr.take().expect("moto stderr");
        let verbose = env_flag("PIPELET_TEST_MOTO_LOG");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if verbose {
                    eprintln!("moto: {line}");
                }
                if let Some(at) = line.find("Running on ")
                    && let Some(sender) = tx.take()
                {
                    let url = line[at + "Running on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                        .to_string();
                    let _ = sender.send(url);
                }
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{moto} did not report its address within 60 s");
            }
        };
        Moto {
            child: Some(child),
            endpoint,
            http,
        }
    }

    /// Creates a bucket with a fresh name (moto needs no signature for this) and returns
    /// the name.
    pub async fn create_bucket(&self) -> String {
        let name = unique("pipelet-");
        let r = self
            .http
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .await
            .expect("PUT bucket");
        let status = r.status();
        assert!(
            status.is_success(),
            "creating bucket {name}: {status} {:?}",
            r.text().await
        );
        name
    }

    /// Key and size of every object under `prefix` in `bucket` (ListObjectsV2).
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type", "2".to_string()), ("prefix", prefix.into())];
            if let Some(t) = &token {
                query.push(("continuation-token", t.clone()));
            }
            let r = self
                .http
                .get(format!("{}/{bucket}", self.endpoint))
                .query(&query)
                .send()
                .await
                .expect("list objects");
            assert!(r.status().is_success(), "list {bucket}: {}", r.status());
            let xml = r.text().await.expect("list body");
            for entry in xml.split("<Contents>").skip(1) {
                let key = between(entry, "<Key>", "</Key>").expect("Key").to_string();
                let size = between(entry, "<Size>", "</Size>")
                    .and_then(|s| s.parse().ok())
                    .expect("Size");
                objects.push((key, size));
            }
            if xml.contains("<IsTruncated>true</IsTruncated>") {
                token = between(&xml, "<NextContinuationToken>", "</NextContinuationToken>")
                    .map(str::to_string);
                assert!(token.is_some(), "truncated listing without a token: {xml}");
            } else {
                return objects;
            }
        }
    }

    /// The environment a `pipelet serve` needs for `--blob-url s3://…` against this moto:
    /// dummy credentials, the endpoint, and plain HTTP allowed. (object_store 0.12's
    /// `AmazonS3Builder::from_env` reads `AWS_ENDPOINT_URL` as well as `AWS_ENDPOINT`.)
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "pipelet-test"),
            ("AWS_SECRET_ACCESS_KEY", "pipelet-test-secret"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

/// `url` with its database replaced by `db` (query parameters kept).
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_at = base.find("://").map(|i| i + 3).unwrap_or(0);
    let root = match base[authority_at..].find('/') {
        Some(slash) => &base[..authority_at + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// Runs one SQL statement with `psql` against `url`.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "15")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// A fresh database on the shared PostgreSQL server, dropped when this is dropped (kept
/// for inspection when the test failed).
pub struct PgDb {
    /// A `postgres://` URL of the new database, for the store under test.
    pub url: String,
    name: String,
    admin_url: String,
}

impl PgDb {
    /// A fresh database on `PIPELET_TEST_DATABASE_URL`'s server, else on
    /// [`DEFAULT_ADMIN_URL`]'s.
    pub fn create() -> PgDb {
        let admin_url = std::env::var("PIPELET_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_string());
        Self::create_on(&admin_url)
    }

    /// A fresh database on the server that `admin_url` connects to.
    pub fn create_on(admin_url: &str) -> PgDb {
        let name = unique("pipelet_test_");
        if let Err(e) = psql(admin_url, &format!("CREATE DATABASE \"{name}\"")) {
            panic!(
                "cannot create a test database on {admin_url}: {e}. Start PostgreSQL, point \
                 PIPELET_TEST_DATABASE_URL at one, or set PIPELET_SKIP_POSTGRES=1 to skip the \
                 PostgreSQL tests"
            );
        }
        PgDb {
            url: with_database(admin_url, &name),
            name,
            admin_url: admin_url.to_string(),
        }
    }

    /// Every job row, read through the PostgreSQL store.
    #[cfg(feature = "server")]
    pub async fn jobs(&self) -> Vec<pipelet_store::JobRecord> {
        use pipelet_store::postgres::PgStore;
        use pipelet_store::prelude::*;

        let store = PgStore::connect(&self.url).await.expect("connect");
        let jobs = store.list_jobs(None, 1_000_000).await.expect("list jobs");
        store.close().await;
        jobs
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: kept its database {} for inspection", self.url);
            return;
        }
        let drop = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.admin_url, &drop) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// A PostgreSQL cluster of one test's own (initdb in a temporary folder, on a free
/// loopback port), so that the test can stop and start it under load without touching
/// the shared server other tests use. Run as the `postgres` user when we are root.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    as_postgres: bool,
}

fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("PIPELET_TEST_PG_BINDIR")
        && !dir.trim().is_empty()
    {
        return PathBuf::from(dir);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    // Debian's /usr/bin/pg_config (libpq) may not know the server; the server's own
    // binaries live in /usr/lib/postgresql/<version>/bin.
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file())
        .max();
    from_pg_config
        .filter(|p| p.join("initdb").is_file())
        .or(debian)
        .unwrap_or_else(|| {
            panic!(
                "no PostgreSQL server binaries (initdb, pg_ctl) found: install the server, set \
                 PIPELET_TEST_PG_BINDIR, or set PIPELET_SKIP_POSTGRES=1 to skip the PostgreSQL \
                 tests"
            )
        })
}

impl PgCluster {
    /// Initialises and starts a cluster (panicking if PostgreSQL's server binaries are
    /// missing); it is stopped and deleted on drop.
    pub fn start() -> PgCluster {
        let bindir = pg_bindir();
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = id(&["-u"]) == Some(0);
        if as_postgres {
            // initdb refuses to run as root: the cluster belongs to `postgres`.
            let uid = id(&["-u", "postgres"]).expect("a `postgres` user (to run initdb as)");
            let gid = id(&["-g", "postgres"]).expect("the `postgres` group");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let cluster = PgCluster {
            dir,
            bindir,
            port: crate::free_port(),
            as_postgres,
        };
        let data = cluster.data();
        let out = cluster.tool("initdb", |c| {
            c.arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]);
        });
        assert!(out.status.success(), "initdb failed: {}", text(&out));
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn tool(&self, name: &str, args: impl FnOnce(&mut Command)) -> Output {
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bindir.join(name));
            c
        } else {
            Command::new(self.bindir.join(name))
        };
        args(&mut cmd);
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let (data, log) = (self.data(), self.dir.path().join("postgres.log"));
        let out = self.tool("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-o", &options, "-l"])
                .arg(&log)
                .args(["-w", "-t", "60", "start"]);
        });
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server the way an operator's restart does (`-m fast`: sessions are
    /// ended, a checkpoint is written) and waits until it is down.
    pub fn stop_server(&self) {
        let data = self.data();
        let out = self.tool("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "-t", "60", "stop"]);
        });
        assert!(out.status.success(), "pg_ctl stop failed: {}", text(&out));
    }

    /// URL of database `db` on this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A fresh database on this cluster.
    pub fn create_db(&self) -> PgDb {
        PgDb::create_on(&self.url("postgres"))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self.tool("pg_ctl", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "stop"]);
        });
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn with_database_replaces_only_the_database() {
        let cases = [
            ("postgres://u@h:5432/postgres", "postgres://u@h:5432/t1"),
            (
                "postgres://u@h/postgres?sslmode=disable",
                "postgres://u@h/t1?sslmode=disable",
            ),
            ("postgres://u@h:5432", "postgres://u@h:5432/t1"),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "t1"), want, "{url}");
        }
    }
}
