//! Raw result downloads: the signed `video.url` of a result (no key, expiring, `Range`
//! → 206, tampered or expired → 403), `GET .../video.mp4` with key auth, and
//! `--result-data-uri url`.

use crate::common::AppExt as _;
use crate::common::preview_result;
use crate::common::{
    JOB_TIMEOUT, T2V, TestApp, expect_error, spawn_app, spawn_app_with, spawn_queue_only, str_field,
};
use pipelet_server::config::ResultDataUri;
use pipelet_server::result_links::{link_expiring, now_secs};
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH, RANGE,
};
use serde_json::Value;
use uuid::Uuid;

/// Creates a t2v request, waits until COMPLETED; returns the create body, the result's
/// `video` (without `data_uri`) and the MP4 bytes.
async fn completed(app: &TestApp, key: &str) -> (Value, Value, Vec<u8>) {
    let created = app.create_t2v(key, T2V, 0).await;
    app.wait_for_status(
        str_field(&created, "status_url"),
        key,
        "COMPLETED",
        JOB_TIMEOUT,
    )
    .await;
    let (video, mp4) = app
        .fetch_video(str_field(&created, "response_url"), key)
        .await;
    assert!(mp4.len() > 1000, "a real MP4: {} bytes", mp4.len());
    (created, video, mp4)
}

fn header(response: &reqwest::Response, name: impl reqwest::header::AsHeaderName) -> &str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// GETs `url` with no key and the given `Range`.
async fn ranged(app: &TestApp, url: &str, range: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(url);
    if let Some(range) = range {
        request = request.header(RANGE, range);
    }
    request.send().await.expect("GET")
}

/// Asserts a 206 of `mp4[start..=end]`.
async fn expect_part(response: reqwest::Response, mp4: &[u8], start: usize, end: usize) {
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&response, CONTENT_RANGE),
        format!("bytes {start}-{end}/{}", mp4.len())
    );
    assert_eq!(
        header(&response, CONTENT_LENGTH),
        (end - start + 1).to_string()
    );
    assert_eq!(header(&response, CONTENT_TYPE), "video/mp4");
    let body = response.bytes().await.expect("body");
    assert_eq!(&body[..], &mp4[start..=end]);
}

/// Checks the whole-file answer, ranges and conditional GETs of a download URL; `key`
/// authenticates when given.
async fn check_download(app: &TestApp, url: &str, key: Option<&str>, mp4: &[u8]) {
    let get = |range: Option<String>| {
        let mut request = app.client.get(url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(range) = range {
            request = request.header(RANGE, range);
        }
        async move { request.send().await.expect("GET") }
    };
    let whole = get(None).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(header(&whole, CONTENT_TYPE), "video/mp4");
    assert_eq!(header(&whole, CONTENT_LENGTH), mp4.len().to_string());
    assert_eq!(header(&whole, ACCEPT_RANGES), "bytes");
    let etag = header(&whole, ETAG).to_string();
    assert!(etag.starts_with('"') && etag.len() > 4, "{etag}");
    assert_eq!(&whole.bytes().await.expect("body")[..], mp4);

    let n = mp4.len();
    expect_part(get(Some("bytes=0-99".into())).await, mp4, 0, 99).await;
    let mid = n / 2;
    expect_part(
        get(Some(format!("bytes={mid}-{}", mid + 499))).await,
        mp4,
        mid,
        mid + 499,
    )
    .await;
    expect_part(get(Some("bytes=-100".into())).await, mp4, n - 100, n - 1).await;
    expect_part(
        get(Some(format!("bytes={}-", n - 10))).await,
        mp4,
        n - 10,
        n - 1,
    )
    .await;
    // An end past the file is cut to it.
    expect_part(
        get(Some(format!("bytes={}-{}", n - 5, n + 1000))).await,
        mp4,
        n - 5,
        n - 1,
    )
    .await;

    let unsatisfiable = get(Some(format!("bytes={n}-"))).await;
    assert_eq!(unsatisfiable.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        header(&unsatisfiable, CONTENT_RANGE),
        format!("bytes */{n}")
    );
    let body: Value = unsatisfiable.json().await.expect("416 is JSON");
    assert!(
        body["detail"].as_str().is_some_and(|d| d.contains("bytes")),
        "{body}"
    );

    // Several ranges get the whole file.
    let several = get(Some("bytes=0-1,5-6".into())).await;
    assert_eq!(several.status(), StatusCode::OK);
    assert_eq!(several.bytes().await.expect("body").len(), n);

    let mut again = app.client.get(url).header(IF_NONE_MATCH, &etag);
    if let Some(key) = key {
        again = again.bearer_auth(key);
    }
    let again = again.send().await.expect("GET");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&again, ETAG), etag);
}

#[tokio::test]
async fn video_url_downloads_without_a_key_and_seeks_with_ranges() {
    let app = spawn_app().await;
    let key = app.client_key().await;
    let (created, video, mp4) = completed(&app, &key).await;
    let url = str_field(&video, "url");
    let id = str_field(&created, "request_id");
    assert!(
        url.starts_with(&format!("{}/files/{id}.mp4?expires=", app.address)),
        "{url}"
    );
    check_download(&app, url, None, &mp4).await;
    // The same link works again (it is not single-use) and for HEAD.
    let head = app.client.head(url).send().await.expect("HEAD");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, CONTENT_LENGTH), mp4.len().to_string());
}

#[tokio::test]
async fn tampered_and_expired_links_are_403_with_a_detail() {
    let app = spawn_app().await;
    let key = app.client_key().await;
    let (created, video, _) = completed(&app, &key).await;
    let url = str_field(&video, "url").to_string();
    let id = Uuid::parse_str(str_field(&created, "request_id")).unwrap();
    assert_eq!(ranged(&app, &url, None).await.status(), StatusCode::OK);

    let (path, query) = url.split_once('?').unwrap();
    let (expires, sig) = query.split_once("&sig=").unwrap();
    let expires: u64 = expires.trim_start_matches("expires=").parse().unwrap();
    // One character of the signature changed.
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let other = Uuid::new_v4();
    let tampered = [
        format!("{path}?expires={expires}&sig={flipped}{}", &sig[1..]),
        format!("{path}?expires={}&sig={sig}", expires + 3600),
        format!(
            "{}/files/{other}.mp4?expires={expires}&sig={sig}",
            app.address
        ),
        format!("{path}?expires={expires}&sig="),
        format!("{path}?expires={expires}"),
        path.to_string(),
    ];
    for link in tampered {
        let refused = expect_error(ranged(&app, &link, None).await, StatusCode::FORBIDDEN).await;
        let detail = str_field(&refused, "detail");
        assert!(
            detail.contains("signature") || detail.contains("incomplete"),
            "{link}: {detail}"
        );
    }

    // A correctly signed link whose time is up.
    let expired = link_expiring(&app.state, &app.address, id, now_secs() - 5);
    let refused = expect_error(ranged(&app, &expired, None).await, StatusCode::FORBIDDEN).await;
    let detail = str_field(&refused, "detail");
    assert!(detail.contains("expired"), "{detail}");
    // The same hook makes working links, so the 403 above is the expiry alone.
    let fresh = link_expiring(&app.state, &app.address, id, now_secs() + 60);
    assert_eq!(ranged(&app, &fresh, None).await.status(), StatusCode::OK);

    // Not a result link at all.
    let bad = format!("{}/files/nothing.txt?expires=1&sig=x", app.address);
    expect_error(ranged(&app, &bad, None).await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn video_mp4_needs_the_key_and_a_completed_request() {
    let app = spawn_app().await;
    let key = app.client_key().await;
    let (created, _, mp4) = completed(&app, &key).await;
    let video_url = format!("{}/video.mp4", str_field(&created, "response_url"));
    check_download(&app, &video_url, Some(&key), &mp4).await;

    expect_error(
        app.client.get(&video_url).send().await.expect("GET"),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let stranger = app.client_key().await;
    expect_error(app.get(&video_url, &stranger).await, StatusCode::NOT_FOUND).await;
    // An admin sees every request.
    let admin = app.get(&video_url, &app.admin_key).await;
    assert_eq!(admin.status(), StatusCode::OK);

    // Not COMPLETED yet: 409 with the status.
    let queued = spawn_queue_only().await;
    let key = queued.client_key().await;
    let created = queued.create_t2v(&key, T2V, 0).await;
    let video_url = format!("{}/video.mp4", str_field(&created, "response_url"));
    let conflict = expect_error(queued.get(&video_url, &key).await, StatusCode::CONFLICT).await;
    assert_eq!(conflict["status"], "IN_QUEUE", "{conflict}");
}

#[tokio::test]
async fn result_data_uri_url_puts_the_link_in_data_uri() {
    let app = spawn_app_with(|c| c.result_data_uri = ResultDataUri::Url).await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    app.wait_until_status(&created, &key, "COMPLETED").await;
    let body = crate::common::json_body(
        app.get(str_field(&created, "response_url"), &key).await,
        StatusCode::OK,
    )
    .await;
    let video = &body["video"];
    let url = str_field(video, "url");
    assert_eq!(video["data_uri"], url, "{video}");
    assert!(url.contains("/files/"), "{url}");
    let download = ranged(&app, url, None).await;
    assert_eq!(download.status(), StatusCode::OK);
    let mp4 = download.bytes().await.expect("body");
    assert_eq!(video["file_size"], mp4.len(), "{video}");
    assert_eq!(&mp4[4..8], b"ftyp");
}

#[tokio::test]
async fn expired_results_are_410_by_link_and_by_video_mp4() {
    let app = spawn_app().await;
    let key = app.client_key().await;
    let (created, video, _) = completed(&app, &key).await;
    let url = str_field(&video, "url");
    let id = Uuid::parse_str(str_field(&created, "request_id")).unwrap();
    let job = app.job(id).await;
    let finished = job.finished_at_ms.expect("finished");
    let ttl = app.state.config.result_ttl.expect("a result ttl");
    let later = finished + i64::try_from(ttl.as_millis()).unwrap() + 1;
    let removed = pipelet_server::retention::run_once(&app.state, later)
        .await
        .unwrap();
    assert_eq!(removed.results, 1, "{removed:?}");

    let gone = expect_error(ranged(&app, url, None).await, StatusCode::GONE).await;
    assert!(str_field(&gone, "detail").contains("expired"), "{gone}");
    let video_url = format!("{}/video.mp4", str_field(&created, "response_url"));
    expect_error(app.get(&video_url, &key).await, StatusCode::GONE).await;
}

/// The process's resident memory in bytes (Linux), or `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[tokio::test]
async fn fifty_concurrent_20_mb_downloads_stream_with_flat_memory() {
    const SIZE: usize = 20 << 20;
    const DOWNLOADS: usize = 50;
    let app = spawn_queue_only().await;
    let key = app.client_key().await;
    let created = app.create_t2v(&key, T2V, 0).await;
    // Plays the worker: a 20 MB "video" stored as the result.
    let lease = app.claim(pipelet_api::Pipeline::T2v).await;
    let blob = pipelet_store::blob::Blobs::result_key(lease.lease.job_id, lease.lease.token);
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    app.state
        .blobs
        .put(&blob, bytes::Bytes::from(data))
        .await
        .expect("store the video");
    let result = preview_result(blob, SIZE as u64);
    app.state
        .store
        .complete(&lease.lease, &result)
        .await
        .expect("complete");
    let video_url = format!("{}/video.mp4", str_field(&created, "response_url"));

    let Some(before) = rss_bytes() else {
        eprintln!("no /proc/self/status: skipping the memory check");
        return;
    };
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = tokio::spawn({
        let (peak, stop) = (peak.clone(), sampling.clone());
        async move {
            while !stop.is_cancelled() {
                if let Some(now) = rss_bytes() {
                    peak.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    });
    let downloads = (0..DOWNLOADS).map(|_| {
        let request = app.client.get(&video_url).bearer_auth(&key);
        tokio::spawn(async move {
            let mut response = request.send().await.expect("GET");
            assert_eq!(response.status(), StatusCode::OK);
            // Read and drop chunk by chunk: the client holds nothing either.
            let mut total = 0usize;
            while let Some(chunk) = response.chunk().await.expect("chunk") {
                total += chunk.len();
            }
            total
        })
    });
    for download in downloads.collect::<Vec<_>>() {
        assert_eq!(download.await.expect("download"), SIZE);
    }
    sampling.cancel();
    sampler.await.expect("sampler");
    let grown = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    // Buffering each file would take 50 x 20 MB = 1000 MB; streaming a few MB each.
    let limit = (DOWNLOADS as u64) * (3 << 20);
    assert!(
        grown < limit,
        "RSS grew {} MB during {DOWNLOADS} downloads (limit {} MB)",
        grown >> 20,
        limit >> 20
    );
}
