//! Output sizes: the text-to-video size table, and the image-to-video size that follows
//! the input image's aspect ratio.

use serde_json::{Map, Value};

use super::{InputError, fields};
use crate::catalog::{DEFAULT_T2V_SIZE, allowed_i2v_heights, allowed_t2v_sizes};
use crate::error_codes::ErrorCode;

fn t2v_sizes_text() -> String {
    let sizes: Vec<String> = allowed_t2v_sizes()
        .iter()
        .map(|(w, h)| format!("{w}x{h}"))
        .collect();
    sizes.join(", ")
}

/// The t2v output size from the body's optional `width` and `height`.
///
/// With only one given, the unique allowed size having it as that dimension is used
/// (height 720 gives 1280x720).
pub fn t2v_size(width: Option<u32>, height: Option<u32>) -> Result<(u32, u32), InputError> {
    let sizes = allowed_t2v_sizes();
    let (field, what, matches): (&str, String, Vec<(u32, u32)>) = match (width, height) {
        (None, None) => return Ok(DEFAULT_T2V_SIZE),
        (Some(w), Some(h)) => {
            let found = sizes.iter().copied().filter(|&s| s == (w, h)).collect();
            ("width", format!("width x height {w}x{h}"), found)
        }
        (Some(w), None) => {
            let found = sizes.iter().copied().filter(|s| s.0 == w).collect();
            ("width", format!("width {w}"), found)
        }
        (None, Some(h)) => {
            let found = sizes.iter().copied().filter(|s| s.1 == h).collect();
            ("height", format!("height {h}"), found)
        }
    };
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(InputError::field(
            field,
            format!(
                "{what} is not supported for text-to-video; use one of {}",
                t2v_sizes_text()
            ),
        )
        .with_code(ErrorCode::InvalidResolution)),
        several => {
            let list: Vec<String> = several.iter().map(|(w, h)| format!("{w}x{h}")).collect();
            Err(InputError::field(
                field,
                format!(
                    "{what} matches several sizes ({}); give both width and height",
                    list.join(", ")
                ),
            )
            .with_code(ErrorCode::InvalidResolution))
        }
    }
}

/// An i2v `height` or `min_height`: absent, or one of the allowed heights.
pub(crate) fn i2v_height_field(
    obj: &Map<String, Value>,
    name: &str,
) -> Result<Option<u32>, InputError> {
    let allowed = allowed_i2v_heights();
    let Some(h) = fields::opt_dimension(obj, name)? else {
        return Ok(None);
    };
    if allowed.contains(&h) {
        return Ok(Some(h));
    }
    let list: Vec<String> = allowed.iter().map(u32::to_string).collect();
    Err(InputError::field(
        name,
        format!(
            "{name} {h} is not supported for image-to-video; use {} (width is ignored: \
             it follows the image's aspect ratio)",
            list.join(" or ")
        ),
    )
    .with_code(ErrorCode::InvalidResolution))
}

/// The i2v output size for an `img_w` x `img_h` image at height class `target_h`.
///
/// The output keeps the image's aspect ratio and is `target_h` high; with `best`, the
/// image's shorter side becomes `target_h` instead. A longer side over `max_side` scales
/// both down. Each side is rounded to the nearest multiple of 16 (the VAE's and patch
/// grid's granularity), and is never below 16.
pub fn i2v_output_size(
    img_w: u32,
    img_h: u32,
    target_h: u32,
    best: bool,
    max_side: u32,
) -> (u32, u32) {
    let (w, h) = (f64::from(img_w.max(1)), f64::from(img_h.max(1)));
    let t = f64::from(target_h);
    let (mut out_w, mut out_h) = if best && h > w {
        (t, t * h / w)
    } else {
        (t * w / h, t)
    };
    let cap = f64::from(max_side.max(16));
    let long = out_w.max(out_h);
    if long > cap {
        out_w *= cap / long;
        out_h *= cap / long;
    }
    (round16(out_w, max_side), round16(out_h, max_side))
}

/// Nearest multiple of 16, at least 16 and at most `max_side` rounded down to 16.
fn round16(x: f64, max_side: u32) -> u32 {
    let top = (max_side / 16).max(1) * 16;
    let r = (x / 16.0).round().clamp(1.0, f64::from(top / 16));
    r as u32 * 16
}
