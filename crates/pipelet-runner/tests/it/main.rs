//! pipelet-runner's integration tests, one binary: the preview renderer, its output
//! checked by FFmpeg's own tools, and the supervision of the Wan runner's process.
//! Shared helpers come from `pipelet-testkit`; the render jobs here are this crate's.

// Test code: a panic is a test failure, and helpers need no API docs.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod ffprobe;
mod preview;
mod wan_supervision;

use std::path::Path;
use std::sync::{Arc, Mutex};

use pipelet_api::{JobSpec, Pipeline};
use pipelet_runner::preview::PreviewRunner;
use pipelet_runner::{Progress, RenderJob, RenderOutput, Runner, RunnerError};
use tokio_util::sync::CancellationToken;

pub fn t2v(prompt: &str, seed: u64, width: u32, height: u32, num_frames: u32) -> RenderJob {
    RenderJob {
        job_id: "test".into(),
        pipeline: Pipeline::T2v,
        spec: JobSpec {
            prompt: prompt.into(),
            negative_prompt: None,
            width,
            height,
            num_frames,
            fps: 16,
            steps: 4,
            ..JobSpec::sample("")
        },
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

/// Runs the preview runner, collecting every progress report.
pub async fn render(
    job: &RenderJob,
    out: &Path,
    cancel: CancellationToken,
) -> (Result<RenderOutput, RunnerError>, Vec<Progress>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let progress = Arc::new(move |p: Progress| {
        sink.lock().expect("progress list").push(p);
    });
    let result = PreviewRunner::new().run(job, out, progress, cancel).await;
    let seen = seen.lock().expect("progress list").clone();
    (result, seen)
}
