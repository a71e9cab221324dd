//! [`Limits`]: the operator-tunable bounds on one create body, and their defaults.

use serde::{Deserialize, Serialize};

/// Longest `prompt` / `negative_prompt`, in characters (not bytes).
pub const DEFAULT_MAX_PROMPT_CHARS: usize = 4000;
/// Largest input image file, once base64-decoded.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// Most pixels an input image may have (a decode holds them all in memory).
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 40_000_000;
/// Longest side of an input image.
pub const DEFAULT_MAX_IMAGE_SIDE: u32 = 8192;
/// Longest side of an image-to-video output; larger outputs are scaled down to fit.
pub const DEFAULT_MAX_OUTPUT_SIDE: u32 = 2048;
/// Most elongated input image accepted (long side / short side).
pub const DEFAULT_MAX_ASPECT_RATIO: f64 = 4.0;
/// Bounds of the request's own `priority` (the server then clamps it per key).
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -1000..=1000;

/// Bounds on what one create body may ask for. Operators may tune them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Longest `prompt` / `negative_prompt`, in characters (not bytes).
    pub max_prompt_chars: usize,
    /// Largest input image file in bytes, once base64-decoded.
    pub max_image_bytes: usize,
    /// Most pixels (width x height) an input image may have.
    pub max_image_pixels: u64,
    /// Longest side of an input image, in pixels.
    pub max_image_side: u32,
    /// Longest side of an i2v output, in pixels; larger outputs are scaled down.
    pub max_output_side: u32,
    /// Most elongated input image accepted (long side / short side).
    pub max_aspect_ratio: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_prompt_chars: DEFAULT_MAX_PROMPT_CHARS,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            max_image_pixels: DEFAULT_MAX_IMAGE_PIXELS,
            max_image_side: DEFAULT_MAX_IMAGE_SIDE,
            max_output_side: DEFAULT_MAX_OUTPUT_SIDE,
            max_aspect_ratio: DEFAULT_MAX_ASPECT_RATIO,
        }
    }
}
