//! The bound on concurrent live streams: the stream route alone, with a limit of one,
//! next to a real application that makes the request.

use std::time::{Duration, Instant};

use axum::Router;
use pipelet_store::{NewKey, Role};
use reqwest::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;

use crate::{Application, Config};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn streams_beyond_the_limit_get_429_until_one_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_data_dir(dir.path().join("data"));
    config.workers = 0;
    let app = Application::build(config).await.expect("build");
    let port = app.port();
    let state = app.state().clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));

    // The stream route on its own listener, bounded to one stream.
    let limited = Router::new()
        .route(
            "/queue/{model_id}/requests/{id}/status/stream",
            super::route_with_limit(1),
        )
        .with_state(state.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let limited_addr = listener.local_addr().expect("addr");
    let limited_server = tokio::spawn(async move { axum::serve(listener, limited).await });

    let (_, key) = state
        .store
        .create_key(NewKey {
            name: "stream-limit".into(),
            role: Role::Client,
            max_priority: 0,
            expires_at_ms: None,
        })
        .await
        .expect("key");
    let client = reqwest::Client::new();
    let created: serde_json::Value = client
        .post(format!("http://127.0.0.1:{port}/queue/wan22-fast-t2v"))
        .bearer_auth(&key)
        .json(&json!({"prompt": "a kite", "width": 512, "height": 512, "duration": 1}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("create body");
    let id = created["request_id"].as_str().expect("request_id");
    let url = format!("http://{limited_addr}/queue/wan22-fast-t2v/requests/{id}/status/stream");

    let mut first = client
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .expect("first stream");
    assert_eq!(first.status(), StatusCode::OK);
    let chunk = first.chunk().await.expect("read").expect("a first event");
    assert!(String::from_utf8_lossy(&chunk).contains("IN_QUEUE"));

    let second = client
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .expect("second");
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(second.headers().contains_key("retry-after"));
    let body: serde_json::Value = second.json().await.expect("429 body");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("status URL"), "{body}");

    // Closing the first stream frees its slot.
    drop(first);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let again = client
            .get(&url)
            .bearer_auth(&key)
            .send()
            .await
            .expect("again");
        if again.status() == StatusCode::OK {
            break;
        }
        assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            Instant::now() < deadline,
            "the slot of a closed stream was not freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let _ = stop_tx.send(());
    server.abort();
    limited_server.abort();
}
