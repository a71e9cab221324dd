//! `pipelet serve --blob-url s3://… --presign` against a real S3 API (moto): a finished
//! result's `video.url` is an S3 presigned URL, and it downloads the MP4 straight from the
//! bucket with no pipelet key and no Authorization header.
//!
//! Without moto the test fails, saying what to set up, unless `PIPELET_SKIP_S3=1` (see
//! `pipelet_testkit::engines`; `source scripts/s3-env.sh` sets up moto).

use std::time::Duration;

use base64::Engine;
use pipelet_testkit::api::Api;
use pipelet_testkit::engines::{Moto, skipped};
use serde_json::json;

const T2V: &str = "wan22-fast-t2v";

/// The value of query parameter `name` in `url` (still percent-encoded).
fn query_param<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_video_url_downloads_the_result_from_s3() {
    if skipped(true, false) {
        return;
    }
    let moto = Moto::start();
    let bucket = moto.create_bucket().await;
    let (_dir, data) = pipelet_testkit::temp_data_dir();
    let blob_url = format!("s3://{bucket}/p");
    let server = crate::pipelet().start_server_env(
        &data,
        &["--workers", "1", "--blob-url", &blob_url, "--presign"],
        &moto.env(),
        None,
    );
    let api = Api::new(&server.base, &server.key);

    let body = json!({"prompt": "presign", "width": 512, "height": 512, "duration": 1});
    let (id, _) = api.create(T2V, &body).await;
    api.wait_for(T2V, &id, "COMPLETED", Duration::from_secs(120))
        .await;
    let (status, answer) = api.result(T2V, &id).await;
    assert_eq!(status, 200, "{answer}");
    let mp4 = base64::engine::general_purpose::STANDARD
        .decode(
            answer["video"]["data_uri"]
                .as_str()
                .expect("video.data_uri"),
        )
        .expect("base64 video.data_uri");
    assert_eq!(&mp4[4..8], b"ftyp", "video.data_uri is not an MP4");

    // The link points at the bucket on moto, not at pipelet's /files/.
    let url = answer["video"]["url"].as_str().expect("video.url");
    let object = format!("{}/{bucket}/p/results/{id}/", moto.endpoint);
    assert!(
        url.starts_with(&object),
        "video.url is not a link into {object}: {url}"
    );
    assert!(
        !url.starts_with(&server.base) && !url.contains("/files/"),
        "video.url still goes through pipelet: {url}"
    );
    // A SigV4 presigned URL for the server's credentials, expiring with --result-url-ttl
    // (2 h by default). moto does not check query-string signatures (a tampered
    // X-Amz-Signature still gets 200), so the signature's shape is all we can check here.
    assert_eq!(
        query_param(url, "X-Amz-Algorithm"),
        Some("AWS4-HMAC-SHA256"),
        "{url}"
    );
    let credential = query_param(url, "X-Amz-Credential").expect("X-Amz-Credential");
    assert!(
        credential.starts_with("pipelet-test%2F"),
        "signed with another key: {url}"
    );
    assert_eq!(query_param(url, "X-Amz-Expires"), Some("7200"), "{url}");
    let signature = query_param(url, "X-Amz-Signature").expect("X-Amz-Signature");
    assert!(
        signature.len() == 64 && signature.bytes().all(|b| b.is_ascii_hexdigit()),
        "not a SigV4 signature: {url}"
    );

    // Downloaded with nothing but the URL: no pipelet key, no Authorization header.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let r = http.get(url).send().await.expect("GET video.url");
    assert_eq!(r.status().as_u16(), 200, "GET {url}");
    let downloaded = r.bytes().await.expect("video body");
    assert!(
        downloaded.as_ref() == mp4.as_slice(),
        "video.url served {} bytes, not the {} of video.data_uri",
        downloaded.len(),
        mp4.len()
    );
}
