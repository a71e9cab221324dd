//! The shared engines with real processes: blobs in S3 (moto), two `pipelet serve` on
//! one PostgreSQL database and one bucket with remote workers on either, and PostgreSQL
//! stopped and started under load.
//!
//! Each test starts its own moto and makes its own bucket and database, so the tests run
//! in parallel; the restart test stops a PostgreSQL cluster of its own (initdb in a
//! temporary folder), so it disturbs no other test. Without moto or PostgreSQL the tests
//! fail, saying what to set up, unless `PIPELET_SKIP_S3=1` / `PIPELET_SKIP_POSTGRES=1`
//! (see `pipelet_testkit::engines`; `source scripts/s3-env.sh` sets up moto).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use pipelet_store::{JobRecord, JobState};
use pipelet_testkit::api::{Api, metric_sum};
use pipelet_testkit::engines::{Moto, PgCluster, PgDb, skipped};
use pipelet_testkit::images::png_base64;
use pipelet_testkit::{Children, Server};
use serde_json::{Value, json};

const T2V: &str = "wan22-fast-t2v";
const I2V: &str = "wan22-fast-i2v";

fn t2v_body(n: usize) -> Value {
    json!({"prompt": format!("job {n}"), "width": 512, "height": 512, "duration": 1})
}

fn i2v_body(n: usize, image: &str) -> Value {
    json!({"prompt": format!("job {n}"), "data_uri": image, "height": 480, "duration": 1})
}

/// The MP4 of a result answer; panics unless it is one.
fn mp4_of(answer: &Value) -> Vec<u8> {
    let data = answer["video"]["data_uri"]
        .as_str()
        .expect("video.data_uri");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64");
    assert_eq!(&bytes[4..8], b"ftyp", "not an MP4");
    bytes
}

fn job_of<'a>(rows: &'a [JobRecord], id: &str) -> &'a JobRecord {
    rows.iter()
        .find(|r| r.id.to_string() == id)
        .unwrap_or_else(|| panic!("job {id} is not in the jobs table"))
}

/// A `pipelet serve --workers 1` whose blobs go to a new moto bucket, under `prefix`.
struct S3Serve {
    moto: Moto,
    bucket: String,
    /// Holds the data dir until the test ends.
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    server: Server,
}

impl S3Serve {
    async fn start(prefix: &str) -> Self {
        let moto = Moto::start();
        let bucket = moto.create_bucket().await;
        let (_dir, data) = pipelet_testkit::temp_data_dir();
        let blob_url = format!("s3://{bucket}/{prefix}");
        let server = crate::pipelet().start_server_env(
            &data,
            &["--workers", "1", "--blob-url", &blob_url],
            &moto.env(),
            None,
        );
        Self {
            moto,
            bucket,
            _dir,
            data,
            server,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_round_trip_through_s3() {
    if skipped(true, false) {
        return;
    }
    let s3 = S3Serve::start("pipelet/test").await;
    let api = Api::new(&s3.server.base, &s3.server.key);

    let image = png_base64(160, 120);
    let image_bytes = base64::engine::general_purpose::STANDARD
        .decode(&image)
        .expect("png bytes");
    let (t2v, _) = api.create(T2V, &t2v_body(0)).await;
    let (i2v, _) = api.create(I2V, &i2v_body(1, &image)).await;
    let mut videos = BTreeMap::new();
    for (model, id) in [(T2V, &t2v), (I2V, &i2v)] {
        let done = api
            .wait_for(model, id, "COMPLETED", Duration::from_secs(120))
            .await;
        assert_eq!(done["statusMessages"]["backend"], "preview", "{done}");
        let (status, answer) = api.result(model, id).await;
        assert_eq!(status, 200, "{answer}");
        videos.insert(id.clone(), mp4_of(&answer).len() as u64);
    }

    // Everything is in the bucket under the prefix, nothing on local disk.
    let objects: BTreeMap<String, u64> = s3.moto.list(&s3.bucket, "").await.into_iter().collect();
    let expected: BTreeMap<String, u64> = [
        (
            format!("pipelet/test/inputs/{i2v}"),
            image_bytes.len() as u64,
        ),
        (format!("pipelet/test/results/{t2v}/1.mp4"), videos[&t2v]),
        (format!("pipelet/test/results/{i2v}/1.mp4"), videos[&i2v]),
    ]
    .into_iter()
    .collect();
    assert_eq!(objects, expected);
    assert!(
        !s3.data.join("blobs").exists(),
        "--blob-url must keep blobs off the data dir"
    );
}

/// An image of pseudo-random noise: it makes a video that compresses badly (several MB).
fn noise_png(width: u32, height: u32) -> String {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let img = image::RgbImage::from_fn(width, height, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let [r, g, b, ..] = state.to_le_bytes();
        image::Rgb([r, g, b])
    });
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png)
        .expect("png");
    base64::engine::general_purpose::STANDARD.encode(bytes.into_inner())
}

/// S3 refuses multipart parts under 5 MiB but the last: a result of several MiB must be
/// uploaded in parts S3 accepts (`pipelet-store`'s blob.rs uses 8 MiB parts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_one_mib_is_stored_in_s3() {
    if skipped(true, false) {
        return;
    }
    let s3 = S3Serve::start("big").await;
    let api = Api::new(&s3.server.base, &s3.server.key);
    let body =
        json!({"prompt": "noise", "data_uri": noise_png(1280, 720), "height": 720, "duration": 5});
    let (id, _) = api.create(I2V, &body).await;
    let start = Instant::now();
    let status = loop {
        let status = api.status(I2V, &id).await;
        let retried = status["statusMessages"]["attempt"].as_u64().unwrap_or(1) > 1;
        if status["status"] == "COMPLETED" || status["status"] == "FAILED" || retried {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "{status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status["status"], "COMPLETED", "{status}");
    let stored = s3
        .moto
        .list(&s3.bucket, &format!("big/results/{id}/"))
        .await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(
        stored[0].1 > 1 << 20,
        "the video is not over 1 MiB: {stored:?}"
    );
}

/// One request: where it was made and with which key.
struct Made {
    model: &'static str,
    id: String,
    /// 0 = server A, 1 = server B.
    server: usize,
    key: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_and_one_bucket_run_every_job_once() {
    const JOBS: usize = 60;
    const QUEUED_FIRST: usize = 8;
    if skipped(true, true) {
        return;
    }
    let moto = Moto::start();
    let db = PgDb::create();
    let bucket = moto.create_bucket().await;
    let blob_url = format!("s3://{bucket}/fleet");
    let dir = tempfile::tempdir().expect("tempdir");
    let args = [
        "--workers",
        "0",
        "--database-url",
        &db.url,
        "--blob-url",
        &blob_url,
        // Inputs would otherwise be deleted soon after each job ends; this test checks that
        // every i2v input reached the shared bucket exactly once.
        "--keep-inputs",
    ];
    let a = crate::pipelet().start_server_env(&dir.path().join("a"), &args, &moto.env(), None);
    let b =
        crate::pipelet().start_server_env(&dir.path().join("b"), &args, &moto.env(), Some(&a.key));
    assert!(
        !dir.path().join("b/admin.key").exists(),
        "only the first server on an empty store makes an admin key"
    );
    let client_key = crate::pipelet().create_key_pg(&db.url, "client", "client");
    let worker_key = crate::pipelet().create_key_pg(&db.url, "gpu", "worker");
    let servers = [&a, &b];
    let keys = [a.key.clone(), client_key.clone()];
    let api = |server: usize, key: &str| Api::new(&servers[server].base, key);
    let image = png_base64(160, 120);

    // With no worker: positions, cancel and visibility agree between the servers.
    let mut made = Vec::new();
    for n in 0..QUEUED_FIRST {
        // The keys take turns, so fair sharing between them keeps the order of creation
        // (each key's k-th job shares a start tag; the earlier one goes first).
        let (server, key) = ((n / 2) % 2, keys[n % 2].clone());
        let (id, answer) = api(server, &key).create(T2V, &t2v_body(n)).await;
        assert_eq!(answer["queue_position"], n, "create answer: {answer}");
        made.push(Made {
            model: T2V,
            id,
            server,
            key,
        });
    }
    let positions_agree = |made: &[Made], cancelled: Option<usize>| {
        let expected: Vec<(String, String, usize)> = made
            .iter()
            .enumerate()
            .filter(|(n, _)| Some(*n) != cancelled)
            .enumerate()
            .map(|(position, (_, m))| (m.id.clone(), m.key.clone(), position))
            .collect();
        let servers = servers.map(|s| s.base.clone());
        async move {
            for (id, key, position) in expected {
                for base in &servers {
                    let status = Api::new(base, &key).status(T2V, &id).await;
                    assert_eq!(status["status"], "IN_QUEUE", "{base}: {status}");
                    assert_eq!(status["queue_position"], position, "{base}: {status}");
                }
            }
        }
    };
    positions_agree(&made, None).await;
    // Made on B, cancelled on A, seen on B.
    let victim = 3;
    let m = &made[victim];
    assert_eq!(m.server, 1);
    let (status, body) = api(0, &m.key).cancel(T2V, &m.id).await;
    assert_eq!(status, 204, "{body}");
    let seen = api(1, &m.key).status(T2V, &m.id).await;
    assert_eq!(seen["status"], "CANCELLED", "{seen}");
    let (status, body) = api(1, &m.key).result(T2V, &m.id).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["status"], "CANCELLED", "{body}");
    let (status, _) = api(1, &m.key).cancel(T2V, &m.id).await;
    assert_eq!(status, 204, "cancelling twice is fine");
    positions_agree(&made, Some(victim)).await;
    // A client sees nothing of the admin's requests, on either server.
    let admins = &made[0];
    assert_eq!(admins.key, a.key);
    for server in 0..2 {
        let (status, _) = api(server, &client_key).result(T2V, &admins.id).await;
        assert_eq!(status, 404);
    }

    // Workers on both servers; clients keep creating on both.
    let workers = Children(vec![
        crate::pipelet().start_worker(&a.base, &worker_key, "gpu-a1", &[]),
        crate::pipelet().start_worker(&b.base, &worker_key, "gpu-b1", &[]),
        crate::pipelet().start_worker(&a.base, &worker_key, "gpu-a2", &[]),
    ]);
    for n in QUEUED_FIRST..JOBS {
        let (server, key) = (n % 2, keys[(n / 2) % 2].clone());
        let (model, body) = if n % 4 == 3 {
            (I2V, i2v_body(n, &image))
        } else {
            (T2V, t2v_body(n))
        };
        let (id, _) = api(server, &key).create(model, &body).await;
        made.push(Made {
            model,
            id,
            server,
            key,
        });
    }

    // Every job completes; status and result come through the other server.
    let deadline = Instant::now() + Duration::from_secs(240);
    for (n, m) in made.iter().enumerate() {
        if n == victim {
            continue;
        }
        let other = api(1 - m.server, &m.key);
        let left = deadline.saturating_duration_since(Instant::now());
        other.wait_for(m.model, &m.id, "COMPLETED", left).await;
        let (status, answer) = other.result(m.model, &m.id).await;
        assert_eq!(status, 200, "{answer}");
        mp4_of(&answer);
    }
    let done = &made[0];
    let (status, body) = api(1 - done.server, &done.key)
        .cancel(done.model, &done.id)
        .await;
    assert_eq!(status, 409, "a finished job cannot be cancelled: {body}");

    // /metrics and /ready answer on both; each counts what went through it.
    let mut texts = Vec::new();
    for s in servers {
        let (status, text) = Api::new(&s.base, "").get_open("/metrics").await;
        assert_eq!(status, 200, "{text}");
        texts.push(text);
        let (status, ready) = Api::new(&s.base, "").get_open("/ready").await;
        assert_eq!(status, 200, "{ready}");
    }
    let total = |metric: &str, labels: &[&str]| -> f64 {
        texts.iter().map(|t| metric_sum(t, metric, labels)).sum()
    };
    assert_eq!(total("pipelet_jobs_created_total", &[]), JOBS as f64);
    assert_eq!(
        total("pipelet_jobs_finished_total", &["state=\"completed\""]),
        (JOBS - 1) as f64
    );
    assert_eq!(
        total("pipelet_jobs_finished_total", &["state=\"cancelled\""]),
        1.0
    );
    assert_eq!(metric_sum(&texts[0], "pipelet_workers_active", &[]), 2.0);
    assert_eq!(metric_sum(&texts[1], "pipelet_workers_active", &[]), 1.0);

    drop(workers);
    drop((a, b));

    // The jobs table: every job ran exactly once, and its one video is in the bucket.
    let rows = db.jobs().await;
    assert_eq!(rows.len(), JOBS);
    let mut results = BTreeSet::new();
    for (n, m) in made.iter().enumerate() {
        let row = job_of(&rows, &m.id);
        if n == victim {
            assert_eq!(row.state, JobState::Cancelled, "{}", m.id);
            continue;
        }
        assert_eq!(row.state, JobState::Completed, "{}", m.id);
        assert_eq!(row.attempt, 1, "job {} ran {} times", m.id, row.attempt);
        let result = row.result.as_ref().expect("result");
        assert_eq!(
            result.blob,
            format!("results/{}/{}.mp4", m.id, row.lease_token)
        );
        results.insert(format!("fleet/{}", result.blob));
    }
    let stored: BTreeSet<String> = moto
        .list(&bucket, "fleet/results/")
        .await
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(stored, results, "one video per job, no more");
    let inputs: BTreeSet<String> = moto
        .list(&bucket, "fleet/inputs/")
        .await
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let i2v: BTreeSet<String> = made
        .iter()
        .filter(|m| m.model == I2V)
        .map(|m| format!("fleet/inputs/{}", m.id))
        .collect();
    assert_eq!(inputs, i2v);
}

/// What a client saw of one create.
enum Outcome {
    Accepted {
        id: String,
        server: usize,
    },
    Refused {
        status: u16,
        body: Value,
        took: Duration,
    },
}

/// Creates a job on `api` every `period` until `stop`, recording every answer. A
/// transport error (connection refused or reset: the server is gone) fails the test.
async fn keep_creating(
    api: Api,
    server: usize,
    period: Duration,
    log: Arc<Mutex<Vec<Outcome>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut n = 0;
    while !*stop.borrow() {
        let started = Instant::now();
        let (status, body) = api.try_create(T2V, &t2v_body(n)).await;
        let outcome = if status == 200 {
            Outcome::Accepted {
                id: body["request_id"].as_str().expect("id").to_string(),
                server,
            }
        } else {
            Outcome::Refused {
                status,
                body,
                took: started.elapsed(),
            }
        };
        log.lock().unwrap().push(outcome);
        n += 1;
        tokio::time::sleep(period).await;
    }
}

fn accepted(log: &Mutex<Vec<Outcome>>) -> Vec<(String, usize)> {
    log.lock()
        .unwrap()
        .iter()
        .filter_map(|o| match o {
            Outcome::Accepted { id, server } => Some((id.clone(), *server)),
            Outcome::Refused { .. } => None,
        })
        .collect()
}

fn alive(what: &str, child: &mut std::process::Child) {
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "{what} exited: {:?}",
        child.try_wait()
    );
}

/// How long PostgreSQL stays down in the restart test.
const OUTAGE: Duration = Duration::from_secs(45);

/// The longest a request may wait for the database before it is refused: the server's
/// pool waits up to 30 s for a connection (`PgOptions::acquire_timeout`), and a create
/// can queue behind the one create batch already waiting, so twice that, plus slack.
const MAX_REFUSAL: Duration = Duration::from_secs(75);

/// A refusal during the outage: a 5xx with a `detail`, in bounded time.
fn assert_clean_refusal(what: &str, status: u16, body: &Value, took: Duration) {
    assert!((500..600).contains(&status), "{what}: {status} {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.is_empty(),
        "{what}: {status} without a detail: {body}"
    );
    assert!(took < MAX_REFUSAL, "{what} took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load_loses_no_job() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    if skipped(true, true) {
        return;
    }
    let moto = Moto::start();
    let cluster = PgCluster::start();
    let db = cluster.create_db();
    let bucket = moto.create_bucket().await;
    let blob_url = format!("s3://{bucket}/restart");
    let dir = tempfile::tempdir().expect("tempdir");
    // Short leases: the outage below lasts several of them, and still no live worker
    // may lose its job to it.
    let args = [
        "--workers",
        "0",
        "--database-url",
        &db.url,
        "--blob-url",
        &blob_url,
        "--lease-secs",
        "10",
        "--heartbeat-secs",
        "2",
    ];
    let a = crate::pipelet().start_server_env(&dir.path().join("a"), &args, &moto.env(), None);
    let b =
        crate::pipelet().start_server_env(&dir.path().join("b"), &args, &moto.env(), Some(&a.key));
    let mut servers: [Server; 2] = [a, b];
    let key = servers[0].key.clone();
    let apis = [
        Api::new(&servers[0].base, &key),
        Api::new(&servers[1].base, &key),
    ];
    let worker_key = crate::pipelet().create_key_pg(&db.url, "gpu", "worker");
    let mut workers = Children(vec![
        crate::pipelet().start_worker(&servers[0].base, &worker_key, "gpu-a", &[]),
        crate::pipelet().start_worker(&servers[1].base, &worker_key, "gpu-b", &[]),
    ]);

    // Clients creating on both servers all along.
    let log = Arc::new(Mutex::new(Vec::new()));
    let (stop_load, stopped) = tokio::sync::watch::channel(false);
    let load: Vec<_> = (0..2)
        .map(|s| {
            tokio::spawn(keep_creating(
                apis[s].clone(),
                s,
                Duration::from_millis(700),
                log.clone(),
                stopped.clone(),
            ))
        })
        .collect();

    // Jobs flowing: some done, one running right now.
    let start = Instant::now();
    let completed_before = loop {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no job ran before the outage"
        );
        let made = accepted(&log);
        let mut running = false;
        let mut completed = 0;
        for (id, server) in &made {
            match apis[*server].status(T2V, id).await["status"].as_str() {
                Some("COMPLETED") => completed += 1,
                Some("IN_PROGRESS") => running = true,
                _ => {}
            }
        }
        if completed >= 3 && running {
            break completed;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // PostgreSQL goes away.
    cluster.stop_server();
    let outage = Instant::now();
    let accepted_before = accepted(&log).len();
    for (n, api) in apis.iter().enumerate() {
        let (status, body) = api.get_open("/health").await;
        assert_eq!(
            status, 200,
            "server {n} is alive without its database: {body}"
        );
    }
    // Creates and readiness get a clean 503/5xx with a detail, not a hang.
    let probes: Vec<_> = apis
        .iter()
        .cloned()
        .map(|api| {
            tokio::spawn(async move {
                let started = Instant::now();
                let create = async {
                    let answer = api.try_create(T2V, &t2v_body(9999)).await;
                    (answer, started.elapsed())
                };
                let ready = async {
                    let (status, text) = api.get_open("/ready").await;
                    (status, text, started.elapsed())
                };
                let ((create, took), (status, text, ready_took)) = tokio::join!(create, ready);
                (create, took, status, text, ready_took)
            })
        })
        .collect();
    for (n, probe) in probes.into_iter().enumerate() {
        let ((status, body), took, ready, text, ready_took) = probe.await.expect("probe");
        eprintln!(
            "server {n} without PostgreSQL: create {status} in {took:?}: {body}; /ready \
             {ready} in {ready_took:?}: {text}"
        );
        assert_clean_refusal(&format!("create on server {n}"), status, &body, took);
        assert_eq!(ready, 503, "/ready on server {n}: {text}");
        assert!(ready_took < MAX_REFUSAL, "/ready took {ready_took:?}");
    }
    // The outage lasts several leases, and longer than the workers' calls wait (30 s),
    // so they are backing off, not waiting inside a server, when PostgreSQL returns.
    tokio::time::sleep_until((outage + OUTAGE).into()).await;
    let outage_secs = outage.elapsed().as_secs_f64();
    for (n, s) in servers.iter_mut().enumerate() {
        alive(&format!("server {n}"), &mut s.child);
    }
    for (n, w) in workers.0.iter_mut().enumerate() {
        alive(&format!("worker {n}"), w);
    }

    // PostgreSQL is back: both servers take creates again by themselves.
    cluster.start_server();
    let back = Instant::now();
    for (n, api) in apis.iter().enumerate() {
        loop {
            let (status, body) = api.try_create(T2V, &t2v_body(10_000 + n)).await;
            if status == 200 {
                let id = body["request_id"].as_str().expect("id").to_string();
                log.lock()
                    .unwrap()
                    .push(Outcome::Accepted { id, server: n });
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(60),
                "server {n} still refuses creates a minute after PostgreSQL came back: \
                 {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (status, text) = api.get_open("/ready").await;
        assert_eq!(status, 200, "/ready on server {n}: {text}");
    }
    // A little more load after the restart, then every accepted job completes.
    let accepted_at_restart = accepted(&log).len();
    while accepted(&log).len() < accepted_at_restart + 4 {
        assert!(back.elapsed() < Duration::from_secs(90), "creates stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_load.send(true).expect("stop load");
    for task in load {
        task.await.expect("load task");
    }
    let made = accepted(&log);
    let deadline = Instant::now() + Duration::from_secs(180);
    for (id, server) in &made {
        let left = deadline.saturating_duration_since(Instant::now());
        apis[1 - server].wait_for(T2V, id, "COMPLETED", left).await;
    }
    let refused: Vec<(u16, Value, Duration)> = log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|o| match o {
            Outcome::Refused { status, body, took } => Some((*status, body.clone(), *took)),
            Outcome::Accepted { .. } => None,
        })
        .collect();
    for (status, body, took) in &refused {
        assert_clean_refusal("a create during the outage", *status, body, *took);
    }
    for (n, s) in servers.iter_mut().enumerate() {
        alive(&format!("server {n}"), &mut s.child);
    }
    for (n, w) in workers.0.iter_mut().enumerate() {
        alive(&format!("worker {n}"), w);
    }
    eprintln!(
        "outage {outage_secs:.1} s; {completed_before} jobs done before it, {accepted_before} \
         accepted before it, {} accepted in all, {} refused",
        made.len(),
        refused.len()
    );
    drop(workers);
    drop(servers);

    // Every accepted job ran once: the outage (several leases long) cost nobody a lease.
    let rows = db.jobs().await;
    for (id, _) in &made {
        let row = job_of(&rows, id);
        assert_eq!(row.state, JobState::Completed, "{id}");
        assert_eq!(row.attempt, 1, "job {id} ran {} times", row.attempt);
    }
    // A create refused with a 5xx may still have committed (the answer was lost, not the
    // job): such a job runs like any other.
    for row in &rows {
        assert_eq!(row.state, JobState::Completed, "{}", row.id);
    }
    let stored = moto.list(&bucket, "restart/results/").await.len();
    assert_eq!(stored, rows.len(), "one video per job");
}
