//! The worker fleet with real processes: remote `pipelet worker`s pulling from a
//! `pipelet serve --workers 0`, killed at random, never losing or doubling a job.

use std::time::{Duration, Instant};

use pipelet_store::JobState;
use pipelet_store::prelude::*;
use pipelet_store::sqlite::SqliteStore;
use pipelet_testkit::process::{kill9, sigterm};
use pipelet_testkit::{Server, free_port, temp_data_dir};
use serde_json::json;

const T2V: &str = "wan22-fast-t2v";

async fn metrics(client: &reqwest::Client, server: &Server) -> String {
    client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// The value of one sample line, e.g. `pipelet_jobs_finished_total{model="m",state="completed"}`.
fn sample(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_s_job_completes_on_another_worker_once() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    let (_dir, data) = temp_data_dir();
    let client = reqwest::Client::new();
    let server = crate::pipelet().start_server(
        &data,
        &[
            "--workers",
            "0",
            "--lease-secs",
            "2",
            "--heartbeat-secs",
            "1",
        ],
    );
    let key = crate::pipelet().create_key(&data, "gpu", "worker");
    let mut first = crate::pipelet().start_worker(&server.base, &key, "first", &[]);

    let body = json!({"prompt": "long", "width": 1280, "height": 720, "duration": 5});
    let id = crate::create_running(&server, &client, T2V, body).await;
    kill9(&mut first);

    let mut second = crate::pipelet().start_worker(&server.base, &key, "second", &[]);
    let done = server
        .wait_for(&client, T2V, &id, "COMPLETED", Duration::from_secs(120))
        .await;
    assert_eq!(done["statusMessages"]["message"], "COMPLETED");
    let text = metrics(&client, &server).await;
    let completed = format!("pipelet_jobs_finished_total{{model=\"{T2V}\",state=\"completed\"}}");
    assert_eq!(sample(&text, &completed), 1.0, "completed once:\n{text}");
    assert_eq!(sample(&text, "pipelet_lease_expiries_total"), 1.0, "{text}");
    assert_eq!(
        sample(
            &text,
            &format!("pipelet_job_retries_total{{model=\"{T2V}\"}}")
        ),
        1.0
    );
    kill9(&mut second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_kill_9_under_load_every_job_completes_exactly_once() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    const JOBS: usize = 200;
    let (_dir, data) = temp_data_dir();
    let client = reqwest::Client::new();
    let listen = format!("127.0.0.1:{}", free_port());
    let server = crate::pipelet().start_server_on(&data, &listen, &["--workers", "0"]);
    let key = crate::pipelet().create_key(&data, "gpu", "worker");
    let mut workers: Vec<_> = (0..2)
        .map(|n| {
            crate::pipelet().start_worker(
                &server.base,
                &key,
                &format!("w{n}"),
                &["--concurrency", "2"],
            )
        })
        .collect();

    let mut ids = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let body =
            json!({"prompt": format!("job {i}"), "width": 512, "height": 512, "duration": 1});
        ids.push(crate::create_id(&server, &client, T2V, body).await);
    }
    // Crash while jobs are queued, running and finishing.
    let first = &ids[0];
    server
        .wait_for(&client, T2V, first, "COMPLETED", Duration::from_secs(60))
        .await;
    let in_flight = server.status(&client, T2V, &ids[JOBS - 1]).await;
    assert_eq!(
        in_flight["status"], "IN_QUEUE",
        "the crash must hit a busy queue"
    );
    server.kill9();

    // Same address: the workers reconnect by themselves.
    let server = crate::pipelet().start_server_on(&data, &listen, &["--workers", "0"]);
    let deadline = Instant::now() + Duration::from_secs(240);
    for id in &ids {
        let left = deadline.saturating_duration_since(Instant::now());
        server.wait_for(&client, T2V, id, "COMPLETED", left).await;
    }
    for w in &mut workers {
        kill9(w);
    }
    server.kill9();

    let store = SqliteStore::open(&data.join("pipelet.db"))
        .await
        .expect("open store");
    let jobs = store.list_jobs(None, 10_000).await.expect("jobs");
    assert_eq!(jobs.len(), JOBS);
    for job in &jobs {
        assert_eq!(job.state, JobState::Completed, "{}", job.id);
        assert!(job.attempt <= 2, "job {} ran {} times", job.id, job.attempt);
        let result = job.result.as_ref().expect("result");
        assert_eq!(
            result.blob,
            format!("results/{}/{}.mp4", job.id, job.lease_token)
        );
        // One result file per job: no attempt's upload was duplicated.
        let files = std::fs::read_dir(data.join("blobs/results").join(job.id.to_string()))
            .expect("the job's results dir")
            .count();
        assert_eq!(files, 1, "job {}", job.id);
    }
    // The outage was shorter than a lease, so only a claim in flight at the crash can
    // run again: committed, but its answer never reached the worker, which cannot know
    // it holds the job; the lease expires and the job is re-queued. At most one per
    // worker slot (2 workers × 2).
    let reruns = jobs.iter().filter(|j| j.attempt > 1).count();
    assert!(reruns <= 4, "{reruns} jobs ran twice");
    let results = std::fs::read_dir(data.join("blobs/results"))
        .expect("results dir")
        .count();
    assert_eq!(results, JOBS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_sigterm_finishes_its_job_then_exits() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    let (_dir, data) = temp_data_dir();
    let client = reqwest::Client::new();
    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);
    let key = crate::pipelet().create_key(&data, "gpu", "worker");
    let mut worker = crate::pipelet().start_worker(&server.base, &key, "draining", &[]);
    let body = json!({"prompt": "drain", "width": 832, "height": 480, "duration": 3});
    let id = crate::create_running(&server, &client, T2V, body).await;
    // A second job must not be started by a stopping worker.
    let next = crate::create_id(
        &server,
        &client,
        T2V,
        json!({"prompt": "next", "width": 512, "height": 512, "duration": 1}),
    )
    .await;
    sigterm(&worker);
    let status = tokio::task::spawn_blocking(move || worker.wait().expect("wait"))
        .await
        .expect("join");
    assert!(status.success(), "clean exit: {status:?}");
    assert_eq!(
        server.status(&client, T2V, &id).await["status"],
        "COMPLETED"
    );
    assert_eq!(
        server.status(&client, T2V, &next).await["status"],
        "IN_QUEUE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_sigterm_exits_in_bounded_time_while_the_server_is_down() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    let (_dir, data) = temp_data_dir();
    let client = reqwest::Client::new();
    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);
    let key = crate::pipelet().create_key(&data, "gpu", "worker");
    let mut worker = crate::pipelet().start_worker(
        &server.base,
        &key,
        "stranded",
        &["--drain-secs", "1", "--shutdown-timeout-secs", "1"],
    );
    let body = json!({"prompt": "stranded", "width": 832, "height": 480, "duration": 3});
    crate::create_running(&server, &client, T2V, body).await;
    // The server is gone: the job can be neither handed back nor delivered.
    server.kill9();
    sigterm(&worker);
    // Drain (1 s) + shutdown deadline (1 s) + process slack; before, this took 20 min.
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = tokio::task::spawn_blocking(move || {
        loop {
            if let Some(status) = worker.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                kill9(&mut worker);
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("join");
    let status = status.expect("the worker must exit within drain + shutdown deadline");
    assert!(status.success(), "clean exit: {status:?}");
}

/// A worker whose key the server refuses (unknown, or not a worker key) stops at once
/// with a clear message and a failing exit status, instead of retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_refused_key_exits_with_an_error() {
    let (_dir, data) = temp_data_dir();
    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);
    let client_key = crate::pipelet().create_key(&data, "app", "client");
    for key in ["plt_not_a_key", client_key.as_str()] {
        let mut worker = crate::pipelet()
            .command()
            .args(["worker", "--server", &server.base, "--key", key])
            .args(["--name", "refused"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn pipelet worker");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = worker.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = worker.kill();
                panic!("a worker with a refused key must exit, not retry forever");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut worker.stderr.take().expect("stderr"), &mut stderr)
            .expect("read stderr");
        assert!(!status.success(), "{key}: {status:?}");
        assert!(
            stderr.contains("the worker key was refused"),
            "{key}: {stderr}"
        );
    }
}
