//! Webhooks survive a crash: the server is killed with `kill -9` after a job completed
//! but before its `completed` event could be delivered (the receiver was down); after a
//! restart, with the receiver up, the events still arrive, in order. And two servers on
//! one PostgreSQL database deliver each event once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pipelet_testkit::engines::{PgDb, skipped};
use pipelet_testkit::{free_port, temp_data_dir};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T2V: &str = "wan22-fast-t2v";

/// Longest request the receiver reads.
const MAX_REQUEST: usize = 1 << 20;

/// Reads one HTTP/1.1 request and returns its body (by `content-length`).
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let start = end + 4;
            while buf.len() < start + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf[start..start + length].to_vec());
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A minimal webhook receiver on `port`: answers 200 to everything, keeps the bodies.
async fn receiver(port: u16) -> Arc<Mutex<Vec<Value>>> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the receiver's port");
    let got = Arc::new(Mutex::new(Vec::new()));
    let bodies = got.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let bodies = bodies.clone();
            tokio::spawn(async move {
                if let Some(body) = read_request(&mut stream).await {
                    if let Ok(value) = serde_json::from_slice::<Value>(&body) {
                        bodies.lock().expect("bodies").push(value);
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                }
            });
        }
    });
    got
}

async fn webhook_events(client: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    let response = client
        .get(format!("{base}/queue/{T2V}/requests/{id}/webhooks"))
        .bearer_auth(key)
        .send()
        .await
        .expect("list webhook events");
    assert_eq!(response.status(), 200);
    response.json().await.expect("events json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_event_is_delivered_after_kill_9_and_a_restart() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    let (_dir, data) = temp_data_dir();
    let client = reqwest::Client::new();
    // Nothing listens on the receiver's port until after the crash.
    let port = free_port();
    let hook = format!("http://127.0.0.1:{port}/hook");
    let flags = ["--workers", "1", "--webhook-allow-private"];
    let server = crate::pipelet().start_server(&data, &flags);
    let response = client
        .post(format!("{}/queue/{T2V}", server.base))
        .query(&[("fal_webhook", hook.as_str())])
        .bearer_auth(&server.key)
        .json(&json!({"prompt": "a crash", "width": 512, "height": 512, "duration": 1}))
        .send()
        .await
        .expect("create");
    assert_eq!(response.status(), 200);
    let created: Value = response.json().await.expect("create json");
    let id = created["request_id"].as_str().expect("id").to_string();
    server
        .wait_for(&client, T2V, &id, "COMPLETED", Duration::from_secs(60))
        .await;
    // Both events are in the outbox and the first was tried (and failed): not delivered.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = webhook_events(&client, &server.base, &server.key, &id).await;
        let list = events["events"].as_array().cloned().unwrap_or_default();
        let kinds: Vec<&str> = list
            .iter()
            .filter_map(|e| e["event_type"].as_str())
            .collect();
        if kinds == ["acquired", "completed"] && list[0]["attempts"].as_u64() >= Some(1) {
            assert!(
                list.iter().all(|e| e["state"] == "pending"),
                "nothing can be delivered yet: {events}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events not written or tried: {events}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill9();

    let got = receiver(port).await;
    let server = crate::pipelet().start_server(&data, &flags);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let kinds: Vec<String> = got
            .lock()
            .expect("bodies")
            .iter()
            .filter(|b| b["jobId"] == id.as_str())
            .map(|b| b["eventType"].as_str().unwrap_or("?").to_string())
            .collect();
        if kinds.len() >= 2 {
            assert_eq!(kinds, ["acquired", "completed"], "in order, each once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart the receiver got only {kinds:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let completed = got
        .lock()
        .expect("bodies")
        .iter()
        .find(|b| b["eventType"] == "completed")
        .cloned()
        .expect("completed");
    let link = completed["video"]["data_url"].as_str().expect("data_url");
    assert!(
        link.starts_with(&server.base),
        "{link} is under {}",
        server.base
    );
    let video = client.get(link).send().await.expect("download");
    assert_eq!(video.status(), 200);
}

/// Deliveries per `webhook-id`: (2xx answers, tries).
type Tally = Arc<Mutex<HashMap<String, (u32, u32)>>>;

/// A receiver that answers 500 to the first try of each event and 200 to the next ones,
/// counting both per `webhook-id`.
async fn tallying_receiver() -> (String, Tally) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let tally: Tally = Arc::default();
    let counts = tally.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut head = Vec::new();
                // The headers are enough here: the id is in `webhook-id`.
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let Some(id) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("webhook-id:"))
                    .map(|v| v.trim().to_string())
                else {
                    return;
                };
                let first = {
                    let mut counts = counts.lock().expect("tally");
                    let entry = counts.entry(id).or_default();
                    entry.1 += 1;
                    let first = entry.1 == 1;
                    if !first {
                        entry.0 += 1;
                    }
                    first
                };
                let answer: &[u8] = if first {
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                };
                let _ = stream.write_all(answer).await;
            });
        }
    });
    (url, tally)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_postgresql_deliver_each_event_once() {
    if !pipelet_testkit::slow_tests_enabled() {
        return;
    }
    if skipped(false, true) {
        return;
    }
    let db = PgDb::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = dir.path().join("blobs");
    std::fs::create_dir_all(&blobs).expect("blob dir");
    let blob_url = format!("file://{}", blobs.display());
    let args = [
        "--workers",
        "0",
        "--webhook-allow-private",
        "--database-url",
        &db.url,
        "--blob-url",
        &blob_url,
    ];
    let a = crate::pipelet().start_server_env(&dir.path().join("a"), &args, &[], None);
    let b = crate::pipelet().start_server_env(&dir.path().join("b"), &args, &[], Some(&a.key));
    let (hook, tally) = tallying_receiver().await;
    let client = reqwest::Client::new();

    // Queued jobs cancelled through both servers: one `cancelled` event each.
    const JOBS: usize = 40;
    for n in 0..JOBS {
        let server = if n % 2 == 0 { &a } else { &b };
        let response = client
            .post(format!("{}/queue/{T2V}", server.base))
            .query(&[("fal_webhook", hook.as_str())])
            .bearer_auth(&server.key)
            .json(&json!({"prompt": format!("twice {n}"), "width": 512, "height": 512, "duration": 1}))
            .send()
            .await
            .expect("create");
        assert_eq!(response.status(), 200);
        let created: Value = response.json().await.expect("create json");
        let id = created["request_id"].as_str().expect("id");
        let cancel = client
            .put(format!("{}/queue/{T2V}/requests/{id}/cancel", server.base))
            .bearer_auth(&server.key)
            .send()
            .await
            .expect("cancel");
        assert!(cancel.status().is_success(), "cancel: {}", cancel.status());
    }

    // Each event: one failed try (500), then one 2xx, whichever server retries it.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = {
            let counts = tally.lock().expect("tally");
            counts.len() == JOBS && counts.values().all(|(ok, _)| *ok >= 1)
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every event was delivered: {:?}",
            tally.lock().expect("tally")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A duplicate would come right after the 2xx it duplicates (or after a hold): give it
    // a moment to show, then check every event got exactly one 2xx and two tries.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let counts = tally.lock().expect("tally").clone();
    for (id, (ok, tries)) in &counts {
        assert_eq!(
            (*ok, *tries),
            (1, 2),
            "event {id} was delivered more than once"
        );
    }
}
