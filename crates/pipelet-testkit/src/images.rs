//! Images made in memory for the tests: real encodes of a gradient (and of a picture
//! with visible motion cues), and hand-built PNG headers that lie about their size.

use std::io::Cursor;

use base64::Engine as _;
use image::{DynamicImage, ExtendedColorType, ImageEncoder, ImageFormat, Rgb, RgbImage};

fn gradient(w: u32, h: u32) -> DynamicImage {
    let img = RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, 128])
    });
    DynamicImage::ImageRgb8(img)
}

/// A `w`x`h` smooth gradient encoded as `format`: small and valid, for the happy paths.
pub fn encode(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    gradient(w, h)
        .write_to(&mut out, format)
        .expect("encode the test image");
    out.into_inner()
}

/// A `w`x`h` picture with fine pseudo-random texture, so it compresses poorly: a few
/// kilobytes even when small, like a photo (a truncated prefix then cuts into pixels).
pub fn photo(w: u32, h: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        let n =
            (x.wrapping_mul(73_856_093) ^ y.wrapping_mul(19_349_663)).wrapping_mul(2_654_435_761);
        image::Rgb([(n >> 24) as u8, (x * 255 / w.max(1)) as u8, (n >> 8) as u8])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .expect("encode the test image");
    out.into_inner()
}

/// [`encode`] as PNG.
pub fn png(w: u32, h: u32) -> Vec<u8> {
    encode(w, h, ImageFormat::Png)
}

/// [`encode`] as JPEG.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    encode(w, h, ImageFormat::Jpeg)
}

/// [`encode`] as WebP.
pub fn webp(w: u32, h: u32) -> Vec<u8> {
    encode(w, h, ImageFormat::WebP)
}

/// A JPEG stored `w`x`h` whose EXIF says "rotate 90° to display" (as phones write).
pub fn jpeg_rotated_90(w: u32, h: u32) -> Vec<u8> {
    // Big-endian TIFF header, one IFD entry: Orientation (0x0112), SHORT, 1, value 6.
    let exif = [
        b'M', b'M', 0, 42, 0, 0, 0, 8, 0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0,
    ]
    .to_vec();
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90);
    enc.set_exif_metadata(exif).expect("exif");
    let img = gradient(w, h).to_rgb8();
    enc.write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
        .expect("encode the test JPEG");
    out
}

/// A `width`x`height` gradient with a bright disc, so motion is visible in a video
/// made from it.
pub fn picture(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
    let img = RgbImage::from_fn(width, height, |x, y| {
        let (dx, dy) = (x as i64 - width as i64 / 3, y as i64 - height as i64 / 3);
        if dx * dx + dy * dy < (width as i64 / 8).pow(2) {
            Rgb([250, 220, 90])
        } else {
            Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 160])
        }
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format)
        .expect("encode the test picture");
    out.into_inner()
}

/// A gradient PNG, base64 as a request's `image_url` data carries it.
pub fn png_base64(w: u32, h: u32) -> String {
    b64(&png(w, h))
}

/// Standard base64.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// CRC-32 (IEEE), as PNG chunks need; bitwise is plenty for a few bytes.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A ~60-byte PNG whose valid IHDR claims `w`x`h` RGBA8, followed by a tiny IDAT (an
/// empty zlib stream) and IEND: the header parses, the pixels are not there.
pub fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // depth 8, RGBA, deflate, filter 0, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_matches_the_known_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
