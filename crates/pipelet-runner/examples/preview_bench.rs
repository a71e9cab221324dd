//! Times the `preview` runner end to end (render, H.264 encode, MP4 write) for 81
//! frames at 832x480 and 1280x720, text-to-video and image-to-video, and prints the wall
//! time and the process CPU time of each case.
//!
//! The target is 81 frames at 832x480 in under 2 s of one core, so measure on one core:
//!
//! ```text
//! cargo build --release -p pipelet-runner --example preview_bench
//! taskset -c 0 target/release/examples/preview_bench [OUT_DIR]
//! ```
//!
//! With `OUT_DIR` the MP4s are kept there for inspection; otherwise they go to a
//! temporary folder. CPU time is read from `/proc/self/stat` (Linux only, 10 ms steps).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{ImageFormat, Rgb, RgbImage};
use pipelet_api::Pipeline;
use pipelet_runner::preview::PreviewRunner;
use pipelet_runner::{Progress, RenderJob, Runner};
use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&out_dir)?;
    let image = Arc::new(sample_jpeg()?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "{:<6} {:>9} {:>7} {:>8} {:>8} {:>10}",
        "case", "size", "frames", "wall s", "cpu s", "bytes"
    );
    for (width, height) in [(832, 480), (1280, 720)] {
        for pipeline in [Pipeline::T2v, Pipeline::I2v] {
            let job = RenderJob {
                job_id: format!("bench-{}-{width}x{height}", pipeline.as_str()),
                pipeline,
                prompt: "a lighthouse on a cliff at dusk, waves crashing".into(),
                negative_prompt: None,
                width,
                height,
                num_frames: 81,
                fps: 16,
                steps: 4,
                seed: 42,
                image: (pipeline == Pipeline::I2v).then(|| image.clone()),
            };
            let out = out_dir.join(format!("{}.mp4", job.job_id));
            let (wall, cpu, bytes) = rt.block_on(time_one(&job, &out))?;
            println!(
                "{:<6} {:>9} {:>7} {:>8.3} {:>8} {:>10}",
                pipeline.as_str(),
                format!("{width}x{height}"),
                job.num_frames,
                wall.as_secs_f64(),
                cpu.map_or("n/a".to_string(), |c| format!("{:.2}", c.as_secs_f64())),
                bytes
            );
        }
    }
    Ok(())
}

async fn time_one(
    job: &RenderJob,
    out: &Path,
) -> Result<(Duration, Option<Duration>, u64), Box<dyn std::error::Error>> {
    let progress = Arc::new(|_: Progress| {});
    let cpu0 = process_cpu_time();
    let start = Instant::now();
    let result = PreviewRunner
        .run(job, out, progress, CancellationToken::new())
        .await?;
    let wall = start.elapsed();
    let cpu = process_cpu_time()
        .zip(cpu0)
        .map(|(b, a)| b.saturating_sub(a));
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

/// User + system CPU time of the whole process (all threads), from /proc/self/stat.
fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14, 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux ABI that matters.
    Some(Duration::from_millis(ticks * 10))
}
