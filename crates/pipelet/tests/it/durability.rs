//! Crash tests with a real process: a 200 from create means committed, and kill -9 loses
//! nothing — queued jobs stay queued, cancelled stay cancelled, running ones are
//! re-queued and finish.

use std::time::Duration;

use pipelet_testkit::temp_data_dir;
use serde_json::json;

const T2V: &str = "wan22-fast-t2v";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_accepted_job() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    let (_dir, data) = temp_data_dir();
    let client = reqwest::Client::new();
    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);

    let mut ids = Vec::new();
    for i in 0..40 {
        let body =
            json!({"prompt": format!("durable {i}"), "width": 512, "height": 512, "duration": 1});
        let created = server.create(&client, T2V, body).await;
        ids.push(created["request_id"].as_str().expect("id").to_string());
    }
    let cancelled: Vec<String> = ids.iter().step_by(8).cloned().collect();
    for id in &cancelled {
        let r = client
            .put(format!("{}/queue/{T2V}/requests/{id}/cancel", server.base))
            .bearer_auth(&server.key)
            .send()
            .await
            .expect("cancel");
        assert_eq!(r.status(), 204);
    }
    // The last 200 has been received: crash right now.
    let key = server.key.clone();
    server.kill9();

    let server = crate::pipelet().start_server(&data, &["--workers", "1"]);
    assert_eq!(server.key, key, "the admin key survives");
    for id in &ids {
        let want = if cancelled.contains(id) {
            "CANCELLED"
        } else {
            "COMPLETED"
        };
        let status = server
            .wait_for(&client, T2V, id, want, Duration::from_secs(120))
            .await;
        assert_eq!(status["status"], want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_running_at_kill_9_is_requeued_and_finishes() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    let (_dir, data) = temp_data_dir();
    let client = reqwest::Client::new();
    let server = crate::pipelet().start_server(&data, &["--workers", "1"]);
    // Long enough to still be running when we kill.
    let body = json!({"prompt": "long", "width": 1280, "height": 720, "duration": 5});
    let id = crate::create_running(&server, &client, T2V, body).await;
    server.kill9();

    let server = crate::pipelet().start_server(&data, &["--workers", "1"]);
    let done = server
        .wait_for(&client, T2V, &id, "COMPLETED", Duration::from_secs(180))
        .await;
    assert_eq!(done["statusMessages"]["message"], "COMPLETED");
    let logs = client
        .get(format!(
            "{}/queue/{T2V}/requests/{id}/status?logs=1",
            server.base
        ))
        .bearer_auth(&server.key)
        .send()
        .await
        .expect("status")
        .text()
        .await
        .expect("body");
    assert!(logs.contains("attempt 2 started"), "second attempt: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_running_job_then_exits() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    let (_dir, data) = temp_data_dir();
    let client = reqwest::Client::new();
    let mut server = crate::pipelet().start_server(&data, &["--workers", "1"]);
    let body = json!({"prompt": "drain", "width": 512, "height": 512, "duration": 2});
    let id = crate::create_running(&server, &client, T2V, body).await;
    server.sigterm();
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().expect("wait");
        (status, server)
    })
    .await
    .expect("join");
    assert!(exit.0.success(), "clean exit: {:?}", exit.0);
    drop(exit.1);

    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);
    let status = server.status(&client, T2V, &id).await;
    assert_eq!(
        status["status"], "COMPLETED",
        "drained before exit: {status}"
    );
}
