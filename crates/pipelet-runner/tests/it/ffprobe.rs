//! Checks real preview output with FFmpeg's own tools: H.264 yuv420p, exact size, the
//! 16·duration+1 frame count at 16 fps, an error-free decode, and `moov` before `mdat`.
//!
//! ffprobe/ffmpeg must be on PATH. A missing ffprobe fails the test unless
//! `PIPELET_SKIP_FFPROBE=1` is set, so CI cannot pass without actually checking.

use std::path::Path;
use std::process::Command;

use crate::{i2v, render, t2v};
use image::ImageFormat;
use pipelet_runner::RenderJob;
use pipelet_runner::preview::PreviewMark;
use pipelet_testkit::images::picture;
use pipelet_testkit::media::{decode_cleanly, ffmpeg_available, probe, top_level_boxes};
use tokio_util::sync::CancellationToken;

async fn check(job: RenderJob, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{name}.mp4"));
    let (result, _) = render(&job, &out, CancellationToken::new()).await;
    result.unwrap_or_else(|e| panic!("{name}: {e}"));

    let info = probe(&out);
    let expect = [
        ("codec_name", "h264".to_string()),
        ("pix_fmt", "yuv420p".to_string()),
        ("width", job.spec.width.to_string()),
        ("height", job.spec.height.to_string()),
        ("r_frame_rate", "16/1".to_string()),
        ("nb_frames", job.spec.num_frames.to_string()),
        ("nb_read_frames", job.spec.num_frames.to_string()),
    ];
    for (key, want) in expect {
        assert_eq!(info.get(key), Some(&want), "{name}: {key} (all: {info:?})");
    }
    decode_cleanly(&out);
    let file = std::fs::read(&out).unwrap();
    assert_eq!(
        top_level_boxes(&file),
        ["ftyp", "moov", "mdat"],
        "{name}: not fast-start"
    );
}

#[tokio::test]
async fn t2v_5s_and_7s_at_832x480() {
    if !ffmpeg_available() {
        return;
    }
    check(
        t2v("a paper boat on a rainy street", 11, 832, 480, 81),
        "t2v-5s",
    )
    .await;
    check(
        t2v("a paper boat on a rainy street", 11, 832, 480, 113),
        "t2v-7s",
    )
    .await;
}

#[tokio::test]
async fn t2v_720p_and_portrait() {
    if !ffmpeg_available() {
        return;
    }
    check(t2v("northern lights", 5, 1280, 720, 81), "t2v-720p").await;
    check(t2v("a tall waterfall", 5, 480, 832, 81), "t2v-portrait").await;
}

#[tokio::test]
async fn i2v_landscape_and_selfie() {
    if !ffmpeg_available() {
        return;
    }
    check(
        i2v(picture(1024, 768, ImageFormat::Jpeg), 640, 480, 113),
        "i2v-4x3-7s",
    )
    .await;
    check(
        i2v(picture(720, 1280, ImageFormat::Png), 272, 480, 81),
        "i2v-9x16-5s",
    )
    .await;
}

/// Every frame of `path` decoded by ffmpeg, as RGB24.
fn decode_rgb(path: &Path, width: u32, height: u32) -> Vec<Vec<u8>> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let frame = width as usize * height as usize * 3;
    assert_eq!(out.stdout.len() % frame, 0, "partial frame");
    out.stdout.chunks_exact(frame).map(<[u8]>::to_vec).collect()
}

/// Every decoded frame shows the "PREVIEW" mark: inside its box, the text pixels are
/// white and the rest dark, whatever the picture underneath.
async fn check_mark(job: RenderJob, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("{name}.mp4"));
    let (result, _) = render(&job, &out, CancellationToken::new()).await;
    result.unwrap_or_else(|e| panic!("{name}: {e}"));
    let mark = PreviewMark::new(job.spec.width, job.spec.height);
    let (bx, by, bw, bh) = mark.rect();
    let frames = decode_rgb(&out, job.spec.width, job.spec.height);
    assert_eq!(frames.len(), job.spec.num_frames as usize, "{name}");
    for (index, rgb) in frames.iter().enumerate() {
        let (mut text, mut text_ok, mut back, mut back_ok) = (0, 0, 0, 0);
        for y in by..by + bh {
            for x in bx..bx + bw {
                let i = (y as usize * job.spec.width as usize + x as usize) * 3;
                let luma = (u32::from(rgb[i]) * 299
                    + u32::from(rgb[i + 1]) * 587
                    + u32::from(rgb[i + 2]) * 114)
                    / 1000;
                if mark.is_text(x, y) {
                    text += 1;
                    text_ok += u32::from(luma >= 170);
                } else {
                    back += 1;
                    back_ok += u32::from(luma <= 110);
                }
            }
        }
        // Lossy coding blurs a few edge pixels; the mark as a whole must be there.
        assert!(
            text_ok * 100 >= text * 90 && back_ok * 100 >= back * 95,
            "{name}: frame {index}: {text_ok}/{text} text pixels light, \
             {back_ok}/{back} box pixels dark"
        );
    }
}

#[tokio::test]
async fn every_frame_carries_the_preview_mark() {
    if !ffmpeg_available() {
        return;
    }
    check_mark(t2v("sunlit snow", 8, 832, 480, 33), "mark-t2v-480p").await;
    check_mark(t2v("a white room", 9, 1280, 720, 17), "mark-t2v-720p").await;
    // A white picture is the hardest background for white text.
    let white = {
        let img = image::RgbImage::from_pixel(640, 480, image::Rgb([255, 255, 255]));
        let mut bytes = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    };
    check_mark(i2v(white, 640, 480, 17), "mark-i2v-white").await;
    check_mark(
        i2v(picture(720, 1280, ImageFormat::Png), 272, 480, 17),
        "mark-i2v-small",
    )
    .await;
}
