//! Preview render timings, in process: the `preview` runner end to end (render, H.264
//! encode, MP4 write) through the [`Runner`] trait, as a worker calls it.
//!
//! The target is 81 frames at 832x480 in under 2 s of one core; to measure on one core,
//! run this phase alone pinned to it (`--keep-tmp` keeps the MP4s for inspection):
//!
//! ```text
//! cargo build --release -p pipelet-bench
//! taskset -c 0 target/release/pipelet-bench --no-server --render-reps 1
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use image::{ImageFormat, Rgb, RgbImage};
use pipelet_api::{JobSpec, Pipeline};
use pipelet_runner::preview::PreviewRunner;
use pipelet_runner::{Progress, RenderJob, Runner};
use tokio_util::sync::CancellationToken;

use crate::stats::self_cpu_time;

pub const FRAMES: u32 = 81;
pub const SIZES: [(u32, u32); 2] = [(832, 480), (1280, 720)];

#[derive(Debug, Clone)]
pub struct RenderCase {
    pub pipeline: Pipeline,
    pub width: u32,
    pub height: u32,
    pub frames: u32,
    /// Best (lowest) of the repetitions, for wall and CPU time separately.
    pub wall: Duration,
    pub cpu: Duration,
    pub bytes: u64,
}

/// Renders each case `reps` times in `out_dir` and keeps the best times. Runs on a
/// current-thread runtime: the render itself is one blocking task.
pub fn run_all(out_dir: &Path, reps: u32) -> anyhow::Result<Vec<RenderCase>> {
    let image = Arc::new(sample_jpeg().context("cannot make the i2v input image")?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a tokio runtime")?;
    let mut cases = Vec::new();
    for (width, height) in SIZES {
        for pipeline in [Pipeline::T2v, Pipeline::I2v] {
            let job = RenderJob {
                job_id: format!("bench-{}-{width}x{height}", pipeline.as_str()),
                pipeline,
                spec: JobSpec {
                    prompt: "a lighthouse on a cliff at dusk, waves crashing".into(),
                    negative_prompt: None,
                    width,
                    height,
                    num_frames: FRAMES,
                    fps: 16,
                    steps: 4,
                    ..JobSpec::sample("")
                },
                seed: 42,
                image: (pipeline == Pipeline::I2v).then(|| image.clone()),
            };
            let out = out_dir.join(format!("{}.mp4", job.job_id));
            let mut best: Option<RenderCase> = None;
            for _ in 0..reps.max(1) {
                let (wall, cpu, bytes) = rt.block_on(time_one(&job, &out))?;
                let case = best.get_or_insert(RenderCase {
                    pipeline,
                    width,
                    height,
                    frames: FRAMES,
                    wall,
                    cpu,
                    bytes,
                });
                case.wall = case.wall.min(wall);
                case.cpu = case.cpu.min(cpu);
            }
            cases.extend(best);
        }
    }
    Ok(cases)
}

async fn time_one(job: &RenderJob, out: &Path) -> anyhow::Result<(Duration, Duration, u64)> {
    let progress = Arc::new(|_: Progress| {});
    let cpu0 = self_cpu_time();
    let start = Instant::now();
    let result = PreviewRunner::new()
        .run(job, out, progress, CancellationToken::new())
        .await
        .with_context(|| format!("preview render of {} failed", job.job_id))?;
    let wall = start.elapsed();
    let cpu = self_cpu_time().saturating_sub(cpu0);
    Ok((wall, cpu, result.bytes))
}

/// A 1920x1080 JPEG with gradients and shapes, like a photo the API might receive.
fn sample_jpeg() -> Result<Vec<u8>, image::ImageError> {
    let img = RgbImage::from_fn(1920, 1080, |x, y| {
        let (cx, cy) = (x as i32 - 1200, y as i32 - 400);
        let sun = cx * cx + cy * cy < 150 * 150;
        let hill = (y as i32) > 700 + ((x as f32 / 180.0).sin() * 60.0) as i32;
        match (sun, hill) {
            (true, _) => Rgb([255, 210, 120]),
            (_, true) => Rgb([30 + (x % 40) as u8, 90 + (y / 12) as u8, 40]),
            _ => Rgb([(60 + y / 8) as u8, (80 + y / 10) as u8, (200 - y / 8) as u8]),
        }
    });
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Jpeg)?;
    Ok(bytes)
}
