//! Checks a result video with FFmpeg's own tools: H.264 yuv420p at the exact size,
//! 16 fps, the frame count, an error-free decode, and `moov` before `mdat`.
//!
//! A missing ffprobe fails the test unless `PIPELET_SKIP_FFPROBE=1` is set, so a machine
//! without FFmpeg cannot pass these tests without checking anything.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// Whether ffprobe and ffmpeg can run; panics when they cannot and skipping was not asked.
pub fn ffmpeg_available() -> bool {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let found = runs("ffprobe") && runs("ffmpeg");
    if !found {
        assert_eq!(
            std::env::var("PIPELET_SKIP_FFPROBE").as_deref(),
            Ok("1"),
            "ffprobe/ffmpeg are not on PATH: install ffmpeg, or set PIPELET_SKIP_FFPROBE=1 to skip the video checks"
        );
        eprintln!("ffprobe not found; video checks skipped because PIPELET_SKIP_FFPROBE=1");
    }
    found
}

/// The first video stream's fields, counting frames by decoding them all.
pub fn probe(path: &Path) -> HashMap<String, String> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,pix_fmt,width,height,r_frame_rate,nb_read_frames,nb_frames",
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffprobe failed: {stderr}");
    assert!(stderr.trim().is_empty(), "ffprobe complained: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Decodes the whole file; ffmpeg must print nothing at level "error".
pub fn decode_cleanly(path: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ffmpeg failed: {stderr}");
    assert!(stderr.trim().is_empty(), "ffmpeg reported: {stderr}");
}

/// The fourccs of an MP4's top-level boxes, checking that their sizes add up.
pub fn top_level_boxes(file: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= file.len() {
        let size =
            u32::from_be_bytes([file[pos], file[pos + 1], file[pos + 2], file[pos + 3]]) as usize;
        let name = String::from_utf8_lossy(&file[pos + 4..pos + 8]).into_owned();
        assert!(size >= 8, "box {name} at {pos} has size {size}");
        names.push(name);
        pos += size;
    }
    assert_eq!(
        pos,
        file.len(),
        "top-level boxes do not add up to the file size"
    );
    names
}

/// Asserts `mp4` is a browser-playable H.264 video of `width`x`height` with `frames`
/// frames at 16 fps. Does nothing (after saying so) when FFmpeg is absent and skipping
/// was asked for.
pub fn check_video(mp4: &[u8], width: u32, height: u32, frames: u32) {
    let boxes = top_level_boxes(mp4);
    let at = |name: &str| boxes.iter().position(|b| b == name);
    let (moov, mdat) = (at("moov"), at("mdat"));
    assert!(
        moov.is_some() && mdat.is_some() && moov < mdat,
        "moov must come before mdat (fast start): {boxes:?}"
    );
    if !ffmpeg_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("result.mp4");
    std::fs::write(&path, mp4).expect("write the result");
    let info = probe(&path);
    let want = [
        ("codec_name", "h264".to_string()),
        ("pix_fmt", "yuv420p".to_string()),
        ("width", width.to_string()),
        ("height", height.to_string()),
        ("r_frame_rate", "16/1".to_string()),
        ("nb_read_frames", frames.to_string()),
    ];
    for (key, value) in want {
        assert_eq!(info.get(key), Some(&value), "ffprobe {key} (all: {info:?})");
    }
    decode_cleanly(&path);
}
