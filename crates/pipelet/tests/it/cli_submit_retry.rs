//! `pipelet submit` sends an `Idempotency-Key`, fresh per submit, and retries a create
//! answered with a 5xx under the same key (the server then replays a create that was
//! committed although its answer failed). A scripted HTTP listener plays the server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::thread;

/// Answers one request per script entry (status line and JSON body), closing each
/// connection, and returns the `Idempotency-Key` header each request carried.
fn scripted_server(
    script: Vec<(&'static str, &'static str)>,
) -> (String, thread::JoinHandle<Vec<Option<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let handle = thread::spawn(move || {
        let mut keys = Vec::new();
        for (status, body) in script {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let (mut length, mut key) = (0usize, None);
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("read a header");
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().expect("length"),
                        "idempotency-key" => key = Some(value.trim().to_string()),
                        _ => {}
                    }
                }
            }
            let mut body_in = vec![0; length];
            reader.read_exact(&mut body_in).expect("read the body");
            keys.push(key);
            let mut stream = stream;
            write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("answer");
        }
        keys
    });
    (base, handle)
}

fn submit(base: &str) -> std::process::Output {
    crate::pipelet()
        .command()
        .args(["submit", "wan22-fast-t2v", "--prompt", "a fox", "--no-wait"])
        .env("PIPELET_SERVER", base)
        .env("PIPELET_KEY", "plt_test")
        .output()
        .expect("run pipelet submit")
}

const CREATED: &str = r#"{"request_id":"req-1","response_url":"u","status_url":"u","cancel_url":"u","queue_position":0,"priority":0}"#;
const UNAVAILABLE: &str = r#"{"detail":"the database is unavailable right now"}"#;

#[test]
fn submit_retries_a_5xx_under_one_idempotency_key_and_each_submit_has_its_own() {
    let (base, server) = scripted_server(vec![
        ("503 Service Unavailable", UNAVAILABLE),
        ("200 OK", CREATED),
    ]);
    let out = submit(&base);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "req-1");
    let keys = server.join().expect("server thread");
    assert_eq!(keys.len(), 2);
    let first = keys[0]
        .clone()
        .expect("the create carries an Idempotency-Key");
    assert_eq!(first.len(), 36, "a UUID: {first}");
    assert_eq!(
        keys[1].as_deref(),
        Some(first.as_str()),
        "the retry reuses the key"
    );

    let (base, server) = scripted_server(vec![("200 OK", CREATED)]);
    assert!(submit(&base).status.success());
    let keys = server.join().expect("server thread");
    assert_ne!(
        keys[0].as_deref(),
        Some(first.as_str()),
        "a new submit, a new key"
    );
}

#[test]
fn submit_does_not_retry_a_4xx() {
    let (base, server) = scripted_server(vec![(
        "422 Unprocessable Entity",
        r#"{"detail":"prompt is empty"}"#,
    )]);
    let out = submit(&base);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("prompt is empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.join().expect("server thread").len(), 1);
}
