//! End to end with the default configuration (one in-process preview worker): t2v and
//! i2v requests go IN_QUEUE → IN_PROGRESS → COMPLETED, and the result decodes to an MP4
//! that FFmpeg accepts at exactly the size and frame count asked for.

use crate::common::AppExt as _;
use crate::common::images::{self, b64};
use crate::common::media::check_video;
use crate::common::{I2V, I2V_VIP, T2V, T2V_PRO, TestApp, spawn_app, str_field};
use serde_json::{Value, json};

/// Checks one status body seen while waiting: a known status, and in progress the
/// seed's `statusMessages` shape. Returns the `i` of `Progress: i/N Tasks done`, if any.
fn check_progress_shape(status: &Value) -> Option<u32> {
    let messages = &status["statusMessages"];
    assert!(
        messages.is_object(),
        "statusMessages is always an object: {status}"
    );
    match status["status"].as_str() {
        Some("IN_QUEUE") => {
            assert!(status["queue_position"].is_u64(), "{status}");
            None
        }
        Some("IN_PROGRESS") => {
            assert!(status.get("queue_position").is_none(), "{status}");
            assert_eq!(messages["message"], "PROCESSING", "{status}");
            let detail = messages["detail_message"].as_str().unwrap_or_default();
            // Always this form, from `0/N` right after the claim: clients parse it.
            let Some(rest) = detail
                .strip_prefix("Progress: ")
                .and_then(|r| r.strip_suffix(" Tasks done"))
            else {
                panic!("detail_message is not `Progress: i/N Tasks done`: {status}");
            };
            let (done, total) = rest.split_once('/').expect("Progress: i/N");
            let (done, total): (u32, u32) = (done.parse().unwrap(), total.parse().unwrap());
            assert!(done <= total && total > 0, "{status}");
            let estimate = status["estimated_total_time_seconds"].as_f64();
            if done > 0 {
                assert!(
                    estimate.is_some_and(|e| e >= 0.0),
                    "estimated_total_time_seconds is needed once work is done: {status}"
                );
            }
            Some(done)
        }
        Some("COMPLETED") => None,
        other => panic!("unexpected status {other:?}: {status}"),
    }
}

/// Runs one request to COMPLETED and checks the video; returns the progress seen.
async fn run_to_completion(
    app: &TestApp,
    model: &str,
    body: Value,
    (width, height, frames): (u32, u32, u32),
) -> Vec<u32> {
    let key = app.client_key().await;
    let created = app.create(&key, model, &body).await;
    let seen = app.wait_until_status(&created, &key, "COMPLETED").await;
    let progress: Vec<u32> = seen.iter().filter_map(check_progress_shape).collect();
    // Statuses only move forward.
    let rank = |s: &Value| match s["status"].as_str() {
        Some("IN_QUEUE") => 0,
        Some("IN_PROGRESS") => 1,
        _ => 2,
    };
    let ranks: Vec<i32> = seen.iter().map(rank).collect();
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
    let last = seen.last().unwrap();
    assert_eq!(last["statusMessages"]["message"], "COMPLETED", "{last}");
    assert_eq!(last["progress"], 1.0, "{last}");

    let (video, mp4) = app
        .fetch_video(str_field(&created, "response_url"), &key)
        .await;
    assert_eq!(video["content_type"], "video/mp4", "{video}");
    assert_eq!(video["width"], width, "{video}");
    assert_eq!(video["height"], height, "{video}");
    assert_eq!(video["num_frames"], frames, "{video}");
    assert_eq!(video["fps"], 16, "{video}");
    assert_eq!(video["backend"], "preview", "{video}");
    assert_eq!(video["file_size"], mp4.len(), "{video}");
    check_video(&mp4, width, height, frames);
    progress
}

#[tokio::test]
async fn t2v_request_completes_with_a_valid_h264_mp4() {
    let app = spawn_app().await;
    let body = json!({"prompt": "a paper boat on a rainy street", "width": 512, "height": 512,
                      "duration": 1});
    run_to_completion(&app, T2V, body, (512, 512, 17)).await;
    // Another tier, default size 832x480, with more steps asked for.
    let body = json!({"prompt": "northern lights", "duration": 1,
                      "higher_quality_with_more_steps": true});
    run_to_completion(&app, T2V_PRO, body, (832, 480, 17)).await;
}

#[tokio::test]
async fn i2v_request_completes_at_the_image_aspect_ratio() {
    let app = spawn_app().await;
    // A 4:3 JPEG at 480 gives 640x480.
    let body = json!({"prompt": "the camera pushes in", "duration": 1,
                      "data_uri": b64(&images::jpeg(128, 96))});
    run_to_completion(&app, I2V, body, (640, 480, 17)).await;
    // A 9:16 PNG at 480 gives 272x480 (270 rounded to a multiple of 16).
    let body = json!({"prompt": "a selfie waves", "duration": 1, "height": 480,
                      "data_uri": format!("data:image/png;base64,{}", b64(&images::png(90, 160)))});
    run_to_completion(&app, I2V_VIP, body, (272, 480, 17)).await;
}

#[tokio::test]
async fn i2v_best_resolution_and_min_height_change_the_output_size() {
    let app = spawn_app().await;
    let selfie = b64(&images::png(90, 160));
    // use_best_resolution: the shorter side becomes the height, 480x853 → 480x848.
    let body = json!({"prompt": "a selfie", "duration": 1, "data_uri": selfie,
                      "use_best_resolution": true});
    run_to_completion(&app, I2V, body, (480, 848, 17)).await;
    // min_height 720 raises height 480 to 720: a 4:3 image gives 960x720.
    let body = json!({"prompt": "a landscape", "duration": 1, "height": 480, "min_height": 720,
                      "data_uri": b64(&images::png(128, 96))});
    run_to_completion(&app, I2V, body, (960, 720, 17)).await;
}

#[tokio::test]
async fn a_longer_job_reports_progress_while_it_runs() {
    let app = spawn_app().await;
    // 5 s is 81 frames: long enough for several progress heartbeats (the worker
    // reports at most every 250 ms).
    let body = json!({"prompt": "waves on a beach at dusk", "width": 512, "height": 512,
                      "duration": 5});
    let progress = run_to_completion(&app, T2V, body, (512, 512, 81)).await;
    assert!(
        progress.iter().any(|&done| done > 0),
        "no 'Progress: i/N Tasks done' with i > 0 was seen while the job ran: {progress:?}"
    );
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
}
