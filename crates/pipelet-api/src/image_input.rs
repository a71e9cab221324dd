//! The i2v input image: turning the `data_uri` text into file bytes, and proving those
//! bytes are a real PNG, JPEG or WebP within the size and pixel limits.
//!
//! Every bound is checked before the work it protects: the base64 length before decoding
//! it, and the header's dimensions before decoding any pixels, so a small body that
//! claims a gigantic image costs nothing. A file cut short (a truncated upload) is
//! refused even where the decoder would paint the missing part grey.

mod complete;

use std::io::Cursor;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use image::{ImageDecoder as _, ImageFormat, ImageReader, metadata::Orientation};
use serde::{Deserialize, Serialize};

use crate::error_codes::ErrorCode;
use crate::spec::{InputError, Limits};

const FIELD: &str = "data_uri";

/// What validation learnt about the input image; stored in the job's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InputImageInfo {
    /// `"png"`, `"jpeg"` or `"webp"`, sniffed from the bytes (not the declared type).
    pub format: String,
    /// Size as displayed, after the EXIF orientation (a phone's portrait photo stored
    /// sideways reports portrait); runners should apply the orientation when decoding.
    pub width: u32,
    /// Height in pixels as displayed (after the EXIF orientation, like `width`).
    pub height: u32,
    /// File size in bytes.
    pub bytes: u64,
}

impl InputImageInfo {
    /// The MIME type of the file, for the blob store.
    pub fn content_type(&self) -> &'static str {
        match self.format.as_str() {
            "png" => "image/png",
            "jpeg" => "image/jpeg",
            "webp" => "image/webp",
            _ => "application/octet-stream",
        }
    }
}

/// Base64 as people produce it: padding optional, trailing bits tolerated.
fn lenient(alphabet: &alphabet::Alphabet) -> GeneralPurpose {
    let config = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    GeneralPurpose::new(alphabet, config)
}

/// Decodes `data_uri` (plain base64 or `data:<mime>;base64,<b64>`) into the file bytes.
///
/// ASCII whitespace is dropped first, since `base64` on Linux wraps its output.
pub fn decode_data_uri(s: &str, limits: &Limits) -> Result<Vec<u8>, InputError> {
    let trimmed = s.trim_ascii_start();
    if looks_like_url(trimmed) {
        return Err(InputError::field(
            FIELD,
            "data_uri must be base64, not a URL: pipelet does not fetch remote images. Send \
             the image file itself as base64 (plain, or as data:image/jpeg;base64,...)",
        )
        .with_code(ErrorCode::RemoteImageUrl));
    }
    let is_data_url = trimmed
        .as_bytes()
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"data:"));
    let payload = if is_data_url {
        let Some((header, data)) = trimmed.split_once(',') else {
            return Err(InputError::field(
                FIELD,
                "data_uri starts with \"data:\" but has no comma; use data:image/png;base64,<base64>",
            )
            .with_code(ErrorCode::InvalidImage));
        };
        let header: String = header
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        if !header.to_ascii_lowercase().ends_with(";base64") {
            return Err(InputError::field(
                FIELD,
                format!(
                    "data_uri header {header:?} is not base64; use data:image/png;base64,<base64> \
                     or plain base64"
                ),
            )
            .with_code(ErrorCode::InvalidImage));
        }
        data
    } else {
        trimmed
    };
    let compact: Vec<u8> = payload
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(
            InputError::field(FIELD, "data_uri is empty; send the image as base64")
                .with_code(ErrorCode::InvalidImage),
        );
    }
    // Refuse oversize input by its encoded length, before spending memory on decoding.
    let max_encoded = limits.max_image_bytes.div_ceil(3).saturating_mul(4) + 4;
    if compact.len() > max_encoded {
        return Err(too_large(compact.len() / 4 * 3, limits));
    }
    let bytes = lenient(&alphabet::STANDARD)
        .decode(&compact)
        .or_else(|e| {
            // URL-safe base64 (with - and _) is common from browsers and Python.
            lenient(&alphabet::URL_SAFE).decode(&compact).map_err(|_| e)
        })
        .map_err(|e| {
            InputError::field(
                FIELD,
                format!(
                    "data_uri is not valid base64 ({e}); encode the file with `base64 -i image.jpg`"
                ),
            )
            .with_code(ErrorCode::InvalidImage)
        })?;
    if bytes.len() > limits.max_image_bytes {
        return Err(too_large(bytes.len(), limits));
    }
    Ok(bytes)
}

/// `scheme://...` (http, https, ftp, s3, file...): an address where base64 should be.
///
/// A scheme cannot contain `/`, so this never matches base64, whose alphabet has no `:`.
fn looks_like_url(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn too_large(got: usize, limits: &Limits) -> InputError {
    let mib = |n: usize| n as f64 / (1024.0 * 1024.0);
    InputError::field(
        FIELD,
        format!(
            "data_uri image is too large: about {:.1} MiB; at most {:.1} MiB ({} bytes) once \
             decoded. Send a smaller or more compressed image",
            mib(got),
            mib(limits.max_image_bytes),
            limits.max_image_bytes
        ),
    )
    .with_code(ErrorCode::ImageTooLarge)
}

/// The image format from the file's magic bytes; only the three we accept.
pub fn sniff_format(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(ImageFormat::WebP)
    } else {
        None
    }
}

/// Names a few formats people commonly send by mistake, for a better message.
fn other_format_name(bytes: &[u8]) -> Option<&'static str> {
    let ftyp = bytes.get(4..12);
    if bytes.starts_with(b"GIF8") {
        Some("GIF")
    } else if bytes.starts_with(b"BM") {
        Some("BMP")
    } else if bytes.starts_with(b"II*\0") || bytes.starts_with(b"MM\0*") {
        Some("TIFF")
    } else if matches!(ftyp, Some(b"ftypavif")) {
        Some("AVIF")
    } else if matches!(ftyp, Some(b"ftypheic" | b"ftypheix" | b"ftypmif1")) {
        Some("HEIC")
    } else {
        None
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        _ => "WebP",
    }
}

/// The file has the signature of `format` but is cut short or damaged.
fn corrupt(format: ImageFormat, why: impl std::fmt::Display) -> InputError {
    InputError::field(
        FIELD,
        format!(
            "data_uri image is truncated or corrupt ({why}); send the complete {} file, \
             base64-encoded",
            format_name(format)
        ),
    )
    .with_code(ErrorCode::InvalidImage)
}

/// Whether the file's container runs to its end marker (see [`complete`]).
fn check_complete(bytes: &[u8], format: ImageFormat) -> Result<(), InputError> {
    let walk = match format {
        ImageFormat::Png => complete::png,
        ImageFormat::Jpeg => complete::jpeg,
        _ => complete::webp,
    };
    walk(bytes).map_err(|why| corrupt(format, why))
}

/// Checks that `bytes` are a real PNG, JPEG or WebP within `limits`, and describes it.
///
/// Dimensions come from the header first; only an image within the side and pixel
/// limits is then checked to be complete and fully decoded (under `image::Limits`) to
/// prove it is not corrupt.
pub fn probe_image(bytes: &[u8], limits: &Limits) -> Result<InputImageInfo, InputError> {
    let Some(format) = sniff_format(bytes) else {
        let detail = match other_format_name(bytes) {
            Some(name) => {
                format!("data_uri is a {name} image; only PNG, JPEG and WebP are supported")
            }
            None => "data_uri is not a PNG, JPEG or WebP image (its bytes have none of their \
                     signatures); send the base64 of the image file itself"
                .to_owned(),
        };
        return Err(InputError::field(FIELD, detail).with_code(ErrorCode::UnsupportedImageFormat));
    };
    let (w, h) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| corrupt(format, format!("its header cannot be read: {e}")))?;
    let max_side = limits.max_image_side;
    if w > max_side || h > max_side {
        return Err(InputError::field(
            FIELD,
            format!("data_uri image is {w}x{h}; each side may be at most {max_side} pixels"),
        )
        .with_code(ErrorCode::ImageTooLarge));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_image_pixels {
        return Err(InputError::field(
            FIELD,
            format!(
                "data_uri image is {w}x{h} ({pixels} pixels); at most {} pixels are allowed",
                limits.max_image_pixels
            ),
        )
        .with_code(ErrorCode::ImageTooLarge));
    }
    if w == 0 || h == 0 {
        return Err(corrupt(format, format!("it claims a size of {w}x{h}")));
    }
    check_complete(bytes, format)?;

    // Full decode; 8 bytes a pixel covers 16-bit RGBA, the widest these formats produce.
    let max_alloc = limits.max_image_pixels.saturating_mul(8) + (16 << 20);
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(max_side);
    decode_limits.max_image_height = Some(max_side);
    decode_limits.max_alloc = Some(max_alloc);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decode_limits);
    let undecodable = |e: image::ImageError| match e {
        image::ImageError::Limits(e) => InputError::field(
            FIELD,
            format!("data_uri image would need too much memory to decode ({e})"),
        )
        .with_code(ErrorCode::ImageTooLarge),
        e => corrupt(format, e),
    };
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    if decoder.total_bytes() > max_alloc {
        return Err(InputError::field(
            FIELD,
            format!("data_uri image is {w}x{h} but would need too much memory to decode"),
        )
        .with_code(ErrorCode::ImageTooLarge));
    }
    // A broken EXIF block only loses the rotation; the pixels are what must be real.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    image::DynamicImage::from_decoder(decoder).map_err(undecodable)?;

    let swapped = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (width, height) = if swapped { (h, w) } else { (w, h) };
    let format = match format {
        ImageFormat::Png => "png",
        ImageFormat::Jpeg => "jpeg",
        _ => "webp",
    };
    Ok(InputImageInfo {
        format: format.to_owned(),
        width,
        height,
        bytes: bytes.len() as u64,
    })
}

#[cfg(test)]
#[path = "image_input_tests.rs"]
mod tests;
