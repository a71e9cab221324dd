//! The preview runner through its public API: determinism, progress, cancellation,
//! bad input, and the output file contract.

use crate::{i2v, render, t2v};
use image::ImageFormat;
use pipelet_api::Pipeline;
use pipelet_runner::preview::PreviewRunner;
use pipelet_runner::{Progress, Runner, RunnerError};
use pipelet_testkit::images::picture;
use pipelet_testkit::media::top_level_boxes;
use tokio_util::sync::CancellationToken;

#[test]
fn names_itself_and_serves_both_pipelines() {
    let runner = PreviewRunner::new();
    assert_eq!(runner.name(), "preview");
    assert_eq!(runner.pipelines(), vec![Pipeline::T2v, Pipeline::I2v]);
}

#[tokio::test]
async fn t2v_is_deterministic_per_prompt_and_seed() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, (prompt, seed)) in [
        ("a red fox in snow", 1),
        ("a red fox in snow", 1),
        ("a red fox in snow", 2),
        ("a blue whale", 1),
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("{i}.mp4"));
        let (result, _) = render(
            &t2v(prompt, seed, 160, 96, 17),
            &out,
            CancellationToken::new(),
        )
        .await;
        let result = result.unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(result.bytes, bytes.len() as u64);
        files.push(bytes);
    }
    assert_eq!(
        files[0], files[1],
        "same prompt and seed must give the same bytes"
    );
    assert_ne!(files[0], files[2], "another seed must change the video");
    assert_ne!(files[0], files[3], "another prompt must change the video");
}

#[tokio::test]
async fn reports_every_frame_then_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let (result, seen) = render(
        &t2v("progress", 0, 64, 48, 21),
        &out,
        CancellationToken::new(),
    )
    .await;
    let result = result.unwrap();
    let expected: Vec<Progress> = (1..=22).map(|done| Progress { done, total: 22 }).collect();
    assert_eq!(seen, expected);
    assert_eq!(
        (
            result.width,
            result.height,
            result.frames,
            result.fps,
            result.backend
        ),
        (64, 48, 21, 16, "preview")
    );
    assert_eq!(result.path, out);
    let file = std::fs::read(&out).unwrap();
    assert_eq!(top_level_boxes(&file), ["ftyp", "moov", "mdat"]);
}

#[tokio::test]
async fn i2v_renders_the_exact_size_for_any_aspect() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (image, w, h)) in [
        (picture(400, 300, ImageFormat::Png), 640, 480),
        (picture(90, 160, ImageFormat::Jpeg), 272, 480),
        (picture(300, 40, ImageFormat::WebP), 128, 64),
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("{i}.mp4"));
        let (result, seen) = render(&i2v(image, w, h, 9), &out, CancellationToken::new()).await;
        let result = result.unwrap();
        assert_eq!((result.width, result.height, result.frames), (w, h, 9));
        assert_eq!(seen.len(), 10);
        assert_eq!(std::fs::metadata(&out).unwrap().len(), result.bytes);
    }
}

#[tokio::test]
async fn cancel_between_frames_stops_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    // A stale file at `out` must not survive a cancelled render either.
    std::fs::write(&out, b"old").unwrap();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let progress = std::sync::Arc::new(move |p: Progress| {
        if p.done == 3 {
            trigger.cancel();
        }
    });
    let result = PreviewRunner
        .run(&t2v("stop", 0, 64, 48, 40), &out, progress, cancel)
        .await;
    assert!(matches!(result, Err(RunnerError::Cancelled)), "{result:?}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary files left behind"
    );
}

#[tokio::test]
async fn an_already_cancelled_job_does_no_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let cancel = CancellationToken::new();
    cancel.cancel();
    let (result, seen) = render(&t2v("never", 0, 64, 48, 9), &out, cancel).await;
    assert!(matches!(result, Err(RunnerError::Cancelled)));
    assert!(seen.is_empty());
    assert!(!out.exists());
}

#[tokio::test]
async fn bad_images_fail_permanently() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    let jpeg = picture(64, 48, ImageFormat::Jpeg);
    // A real GIF header: recognised as an image, but not a format the API accepts.
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
    let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("garbage", Some(b"definitely not an image".to_vec())),
        ("truncated", Some(jpeg[..jpeg.len() / 3].to_vec())),
        ("too wide", Some(picture(8200, 2, ImageFormat::Png))),
        ("other format", Some(gif)),
        ("missing", None),
    ];
    for (name, image) in cases {
        let mut job = i2v(Vec::new(), 64, 48, 5);
        job.image = image.map(std::sync::Arc::new);
        let (result, seen) = render(&job, &out, CancellationToken::new()).await;
        match result {
            Err(RunnerError::Permanent(f)) => assert!(f.reason.contains("image"), "{name}: {f:?}"),
            other => panic!("{name}: expected a permanent error, got {other:?}"),
        }
        assert!(seen.is_empty(), "{name}");
        assert!(!out.exists(), "{name}");
    }
}

#[tokio::test]
async fn impossible_sizes_fail_permanently() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.mp4");
    for (w, h, frames) in [(65, 48, 5), (64, 0, 5), (4096, 2304, 5), (64, 48, 0)] {
        let (result, _) = render(&t2v("x", 0, w, h, frames), &out, CancellationToken::new()).await;
        assert!(
            matches!(result, Err(RunnerError::Permanent(_))),
            "{w}x{h}x{frames}: {result:?}"
        );
    }
}
