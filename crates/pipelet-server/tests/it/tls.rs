//! HTTPS served by pipelet itself (`--tls-cert`/`--tls-key`): a create and its status
//! over https with links that say `https://`, HTTP/2 negotiated by ALPN (HTTP/1.1 still
//! offered), a reload that new connections see while a failed one keeps the certificate
//! served, a graceful stop, and clear start errors for bad PEM files.
//!
//! The reload is called directly: SIGHUP is process-wide, so the signal's wiring is
//! tested with a real `pipelet serve` (crates/pipelet/tests/it/serve_start.rs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use pipelet_server::{Application, Config};
use reqwest::{Client, StatusCode, Version};
use serde_json::{Value, json};

use crate::common::T2V;

/// A fresh self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(names).expect("generate a certificate");
    (cert.pem(), key_pair.serialize_pem())
}

/// Writes `pem` to the pair of files the server is configured with.
fn write_pair(files: &(PathBuf, PathBuf), pem: &(String, String)) {
    std::fs::write(&files.0, &pem.0).expect("write the certificate");
    std::fs::write(&files.1, &pem.1).expect("write the key");
}

/// A client that trusts only `cert_pem`, on a new connection (no pool shared with
/// another client), negotiating as `tweak` says.
fn client_trusting(
    cert_pem: &str,
    tweak: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
) -> Client {
    let cert = reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("parse the certificate");
    tweak(
        Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .timeout(Duration::from_secs(30)),
    )
    .build()
    .expect("build the client")
}

fn tls_config(data: &Path, files: &(PathBuf, PathBuf)) -> Config {
    let mut config = Config::for_data_dir(data);
    config.workers = 0;
    config.tls_cert = Some(files.0.clone());
    config.tls_key = Some(files.1.clone());
    config
}

/// `GET /health` on a new connection trusting only `cert_pem`: whether the handshake
/// (and so the certificate) was accepted.
async fn accepts(base: &str, cert_pem: &str) -> bool {
    client_trusting(cert_pem, |b| b)
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
}

#[tokio::test]
async fn serves_https_with_http2_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let files = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = self_signed();
    write_pair(&files, &first);
    let app = Application::build(tls_config(&dir.path().join("data"), &files))
        .await
        .expect("the application builds with TLS");
    let base = format!("https://127.0.0.1:{}", app.port());
    let admin = app.admin_key().expect("an admin key").to_string();
    let tls = app.tls().expect("TLS is on").clone();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stop_rx.await;
    }));

    // A create and its status over https; HTTP/2 is what ALPN picks.
    let client = client_trusting(&first.0, |b| b);
    let body = json!({"prompt": "a paper boat", "width": 512, "height": 512, "duration": 1});
    let response = client
        .post(format!("{base}/queue/{T2V}"))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .expect("create over https");
    assert_eq!(response.version(), Version::HTTP_2, "ALPN negotiates h2");
    assert_eq!(response.status(), StatusCode::OK);
    let created: Value = response.json().await.unwrap();
    for field in ["status_url", "response_url", "cancel_url"] {
        let url = created[field].as_str().unwrap_or_default();
        assert!(url.starts_with(&format!("{base}/")), "{field}: {created}");
    }
    let status_url = created["status_url"].as_str().unwrap();
    let response = client
        .get(status_url)
        .bearer_auth(&admin)
        .send()
        .await
        .expect("status over https");
    assert_eq!(response.status(), StatusCode::OK);
    let status: Value = response.json().await.unwrap();
    assert_eq!(status["status"], "IN_QUEUE", "{status}");
    assert!(
        status["response_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{status}"
    );

    // HTTP/2 with prior knowledge, and HTTP/1.1 for clients that only speak it.
    let h2 = client_trusting(&first.0, |b| b.http2_prior_knowledge());
    let response = h2.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(
        (response.status(), response.version()),
        (StatusCode::OK, Version::HTTP_2)
    );
    let h1 = client_trusting(&first.0, |b| b.http1_only());
    let response = h1.get(status_url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(
        (response.status(), response.version()),
        (StatusCode::OK, Version::HTTP_11)
    );
    let status: Value = response.json().await.unwrap();
    assert!(
        status["response_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "over HTTP/1.1 too: {status}"
    );

    // A second certificate in the same files: new connections get it after the reload.
    let second = self_signed();
    write_pair(&files, &second);
    assert!(accepts(&base, &first.0).await, "no reload yet");
    assert!(!accepts(&base, &second.0).await, "no reload yet");
    tls.reload().expect("reload the new certificate");
    assert!(
        accepts(&base, &second.0).await,
        "the new certificate is served"
    );
    assert!(
        !accepts(&base, &first.0).await,
        "the old one is not any more"
    );

    // A reload that fails (half-written files) keeps the certificate served.
    std::fs::write(&files.0, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let error = format!("{:#}", tls.reload().expect_err("a broken certificate"));
    assert!(
        error.contains("--tls-cert") && error.contains("cert.pem"),
        "{error}"
    );
    assert!(accepts(&base, &second.0).await, "still the last good one");

    // Plain http on the TLS port is not served.
    let plain = Client::new()
        .get(format!(
            "http://127.0.0.1:{}/health",
            base.rsplit(':').next().unwrap()
        ))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true));

    // The graceful stop works as without TLS: an idle server returns at once.
    stop_tx.send(()).unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the server stops")
        .expect("the server task");
    stopped.expect("a clean stop");
}

#[tokio::test]
async fn bad_pem_files_are_start_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let start_error = |files: (PathBuf, PathBuf)| {
        let data = dir.path().join("data");
        async move {
            match Application::build(tls_config(&data, &files)).await {
                Ok(_) => panic!("the server started with {files:?}"),
                Err(e) => format!("{e:#}"),
            }
        }
    };
    let good = self_signed();
    let other = self_signed();

    // No certificate file at all.
    std::fs::write(&files.1, &good.1).unwrap();
    let error = start_error(files.clone()).await;
    assert!(
        error.contains("--tls-cert") && error.contains("cert.pem"),
        "{error}"
    );

    // Not PEM.
    std::fs::write(&files.0, "hello").unwrap();
    let error = start_error(files.clone()).await;
    assert!(
        error.contains("--tls-cert") && error.contains("cert.pem"),
        "{error}"
    );
    assert!(error.contains("no certificate"), "{error}");

    // A certificate, but a key file holding no key.
    std::fs::write(&files.0, &good.0).unwrap();
    std::fs::write(&files.1, &good.0).unwrap();
    let error = start_error(files.clone()).await;
    assert!(
        error.contains("--tls-key") && error.contains("key.pem"),
        "{error}"
    );

    // Another certificate's key.
    std::fs::write(&files.1, &other.1).unwrap();
    let error = start_error(files.clone()).await;
    assert!(error.contains("is not the private key"), "{error}");

    // Both right: it starts.
    write_pair(&files, &good);
    let app = Application::build(tls_config(&dir.path().join("data"), &files)).await;
    assert!(app.is_ok(), "{:?}", app.err());
}
