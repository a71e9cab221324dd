//! Image-to-video preview: decodes the input image (JPEG/PNG/WebP, under pixel and
//! allocation limits) and animates it with a slow Ken Burns zoom and pan.
//!
//! The image is resized once to cover the frame (cropped to its aspect) with headroom
//! for the zoom; frame 0 shows exactly that cover, later frames zoom in towards a point
//! chosen from the prompt and seed. Each frame is then a fixed-point bilinear resample
//! of a window of that base image, with per-column tables reused across rows.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use super::rng::SplitMix64;
use crate::RunnerError;

/// Largest accepted input side, in pixels.
const MAX_SIDE: u32 = 8192;
/// Most memory the decoder may allocate.
const MAX_ALLOC: u64 = 256 * 1024 * 1024;
/// Zoom at the last frame; the base image is this much larger than the frame so the
/// most zoomed-in frame still samples at 1:1 and stays sharp.
const MAX_ZOOM: f64 = 1.15;

pub(crate) struct KenBurns {
    width: usize,
    height: usize,
    base: RgbImage,
    /// Where the zoom heads: the window centre at the last frame, in base pixels.
    target: (f64, f64),
    num_frames: u32,
    /// Scratch, per output column: left source pixel offset (bytes) and right weight.
    cols: Vec<(u32, u32)>,
}

impl KenBurns {
    /// Decodes `image` and prepares the zoom. Fails with [`RunnerError::Permanent`]
    /// when the bytes are not an acceptable image.
    pub fn new(
        image: &[u8],
        width: u32,
        height: u32,
        num_frames: u32,
        prompt: &str,
        seed: u64,
    ) -> Result<Self, RunnerError> {
        let decoded = decode(image)?;
        let (bw, bh) = (
            (f64::from(width) * MAX_ZOOM).ceil() as u32,
            (f64::from(height) * MAX_ZOOM).ceil() as u32,
        );
        let base = flatten(decoded.resize_to_fill(bw, bh, FilterType::Triangle));
        let mut rng = SplitMix64::from_prompt(prompt, seed);
        // Head somewhere in the outer part of the range, so the pan is noticeable.
        let angle = rng.range(0.0, std::f64::consts::TAU);
        let reach = rng.range(0.6, 1.0);
        // At full zoom the window is width × height, so its centre can move this far.
        let (slack_x, slack_y) = (f64::from(bw - width) / 2.0, f64::from(bh - height) / 2.0);
        let target = (
            f64::from(bw) / 2.0 + reach * angle.cos() * slack_x,
            f64::from(bh) / 2.0 + reach * angle.sin() * slack_y,
        );
        Ok(Self {
            width: width as usize,
            height: height as usize,
            base,
            target,
            num_frames,
            cols: vec![(0, 0); width as usize],
        })
    }

    /// Draws frame `index` into `rgb` (tightly packed RGB24, width × height).
    pub fn render(&mut self, index: u32, rgb: &mut [u8]) {
        let (bw, bh) = (self.base.width() as usize, self.base.height() as usize);
        let t = f64::from(index) / f64::from(self.num_frames.saturating_sub(1).max(1));
        let e = t * t * (3.0 - 2.0 * t); // ease in and out
        let zoom = 1.0 + (MAX_ZOOM - 1.0) * e;
        // Window in base pixels: the whole base at zoom 1, width × height at MAX_ZOOM.
        let (ww, wh) = (bw as f64 / zoom, bh as f64 / zoom);
        let cx = bw as f64 / 2.0 + (self.target.0 - bw as f64 / 2.0) * e;
        let cy = bh as f64 / 2.0 + (self.target.1 - bh as f64 / 2.0) * e;
        let x0 = (cx - ww / 2.0).clamp(0.0, bw as f64 - ww);
        let y0 = (cy - wh / 2.0).clamp(0.0, bh as f64 - wh);
        let (sx, sy) = (ww / self.width as f64, wh / self.height as f64);

        // 16.16 fixed-point source positions of pixel centres.
        let fixed = |origin: f64, scale: f64, i: usize| {
            (((origin + (i as f64 + 0.5) * scale - 0.5).max(0.0)) * 65536.0) as u64
        };
        for (x, col) in self.cols.iter_mut().enumerate() {
            let p = fixed(x0, sx, x);
            let left = ((p >> 16) as usize).min(bw - 1);
            let frac = if left + 1 < bw {
                ((p >> 8) & 0xFF) as u32
            } else {
                0
            };
            *col = ((left * 3) as u32, frac);
        }
        let src = self.base.as_raw();
        let stride = bw * 3;
        for (y, row) in rgb
            .chunks_exact_mut(self.width * 3)
            .take(self.height)
            .enumerate()
        {
            let p = fixed(y0, sy, y);
            let top = ((p >> 16) as usize).min(bh - 1);
            let fy = if top + 1 < bh {
                ((p >> 8) & 0xFF) as u32
            } else {
                0
            };
            let r0 = &src[top * stride..][..stride];
            let r1 = &src[(top + 1).min(bh - 1) * stride..][..stride];
            for (px, &(off, fx)) in row.chunks_exact_mut(3).zip(&self.cols) {
                let off = off as usize;
                // When fx is 0 the right neighbour may not exist; read the left twice.
                let right = if fx == 0 { off } else { off + 3 };
                for c in 0..3 {
                    let top = u32::from(r0[off + c]) * (256 - fx) + u32::from(r0[right + c]) * fx;
                    let bottom =
                        u32::from(r1[off + c]) * (256 - fx) + u32::from(r1[right + c]) * fx;
                    px[c] = ((top * (256 - fy) + bottom * fy + (1 << 15)) >> 16) as u8;
                }
            }
        }
    }
}

/// Decodes JPEG, PNG or WebP under [`MAX_SIDE`] and [`MAX_ALLOC`], applying the EXIF
/// orientation so phone photos come out upright.
fn decode(bytes: &[u8]) -> Result<DynamicImage, RunnerError> {
    let bad = |e: &dyn std::fmt::Display| {
        // Decoded from memory: the decoder's words name no path, and help the client.
        RunnerError::Permanent(format!("the input image cannot be decoded: {e}").into())
    };
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(&e))?;
    match reader.format() {
        Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) => {}
        Some(other) => {
            return Err(RunnerError::Permanent(
                format!("the input image is {other:?}; only JPEG, PNG and WebP are accepted")
                    .into(),
            ));
        }
        None => {
            return Err(RunnerError::Permanent(
                "the input is not a JPEG, PNG or WebP image".into(),
            ));
        }
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(|e| bad(&e))?;
    // `into_decoder` does not count the output buffer against the limit; do it here.
    limits.reserve(decoder.total_bytes()).map_err(|e| bad(&e))?;
    let orientation = decoder.orientation().map_err(|e| bad(&e))?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| bad(&e))?;
    image.apply_orientation(orientation);
    if image.width() == 0 || image.height() == 0 {
        return Err(RunnerError::Permanent("the input image is empty".into()));
    }
    Ok(image)
}

/// RGB8 with any transparency composited over black (dropping alpha would expose
/// whatever colour the transparent pixels happen to store).
fn flatten(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for px in rgba.pixels() {
        let a = u32::from(px[3]);
        for c in 0..3 {
            out.push(((u32::from(px[c]) * a + 127) / 255) as u8);
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| RgbImage::new(w, h))
}
