//! Helpers shared by the preview runner's integration tests.

#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use image::{ImageFormat, Rgb, RgbImage};
use pipelet_api::Pipeline;
use pipelet_runner::preview::PreviewRunner;
use pipelet_runner::{Progress, RenderJob, RenderOutput, Runner, RunnerError};
use tokio_util::sync::CancellationToken;

pub fn t2v(prompt: &str, seed: u64, width: u32, height: u32, num_frames: u32) -> RenderJob {
    RenderJob {
        job_id: "test".into(),
        pipeline: Pipeline::T2v,
        prompt: prompt.into(),
        negative_prompt: None,
        width,
        height,
        num_frames,
        fps: 16,
        steps: 4,
        seed,
        image: None,
    }
}

pub fn i2v(image: Vec<u8>, width: u32, height: u32, num_frames: u32) -> RenderJob {
    RenderJob {
        pipeline: Pipeline::I2v,
        image: Some(Arc::new(image)),
        ..t2v("the camera slowly pushes in", 3, width, height, num_frames)
    }
}

/// An encoded test picture: a gradient with a bright disc, so motion is visible.
pub fn picture(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        let (dx, dy) = (x as i64 - width as i64 / 3, y as i64 - height as i64 / 3);
        if dx * dx + dy * dy < (width as i64 / 8).pow(2) {
            Rgb([250, 220, 90])
        } else {
            Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 160])
        }
    });
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .unwrap();
    bytes
}

/// Runs the preview runner, collecting every progress report.
pub async fn render(
    job: &RenderJob,
    out: &Path,
    cancel: CancellationToken,
) -> (Result<RenderOutput, RunnerError>, Vec<Progress>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let progress = Arc::new(move |p: Progress| sink.lock().unwrap().push(p));
    let result = PreviewRunner::new().run(job, out, progress, cancel).await;
    let seen = seen.lock().unwrap().clone();
    (result, seen)
}

/// The fourccs of the top-level boxes of an MP4 file.
pub fn top_level_boxes(file: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= file.len() {
        let size = u32::from_be_bytes(file[pos..pos + 4].try_into().unwrap()) as usize;
        names.push(String::from_utf8_lossy(&file[pos + 4..pos + 8]).into_owned());
        assert!(size >= 8, "box {} has size {size}", names.last().unwrap());
        pos += size;
    }
    assert_eq!(pos, file.len(), "boxes do not add up to the file size");
    names
}
