//! `GET /favicon.ico`: the icon every browser asks a site for, so that opening the
//! playground does not log a 404. A 32x32 ICO (a white play sign on a rounded indigo
//! square) drawn once in code rather than shipped as a binary file.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;

/// Pixels a side.
const SIZE: usize = 32;
/// Sub-samples a side per pixel, for smooth edges.
const SAMPLES: usize = 4;
/// The square's colour (RGB) and corner radius.
const INDIGO: [f32; 3] = [79.0, 70.0, 229.0];
const RADIUS: f32 = 7.0;
/// The play sign's corners.
const TRIANGLE: [(f32, f32); 3] = [(12.0, 8.5), (12.0, 23.5), (24.0, 16.0)];

/// Favicon
///
/// The site icon browsers ask for. No key needed.
#[utoipa::path(
    get,
    path = "/favicon.ico",
    tag = "ops",
    operation_id = "favicon",
    responses((status = 200, description = "A 32x32 icon.", content_type = "image/x-icon",
        body = Vec<u8>)),
    security(()),
)]
pub async fn icon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/x-icon"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        ico(),
    )
}

/// The ICO file.
pub fn ico() -> &'static [u8] {
    static ICO: OnceLock<Vec<u8>> = OnceLock::new();
    ICO.get_or_init(|| encode(&draw()))
}

fn inside_square(x: f32, y: f32) -> bool {
    let half = SIZE as f32 / 2.0;
    let inner = half - 1.0 - RADIUS;
    let dx = ((x - half).abs() - inner).max(0.0);
    let dy = ((y - half).abs() - inner).max(0.0);
    dx * dx + dy * dy <= RADIUS * RADIUS
}

fn inside_triangle(x: f32, y: f32) -> bool {
    let side =
        |(ax, ay): (f32, f32), (bx, by): (f32, f32)| (bx - ax) * (y - ay) - (by - ay) * (x - ax);
    let [a, b, c] = TRIANGLE;
    let (d1, d2, d3) = (side(a, b), side(b, c), side(c, a));
    (d1 >= 0.0 && d2 >= 0.0 && d3 >= 0.0) || (d1 <= 0.0 && d2 <= 0.0 && d3 <= 0.0)
}

/// RGBA pixels, top row first.
fn draw() -> Vec<[u8; 4]> {
    let mut pixels = Vec::with_capacity(SIZE * SIZE);
    let n = (SAMPLES * SAMPLES) as f32;
    for py in 0..SIZE {
        for px in 0..SIZE {
            let (mut square, mut sign) = (0.0f32, 0.0f32);
            for sy in 0..SAMPLES {
                for sx in 0..SAMPLES {
                    let x = px as f32 + (sx as f32 + 0.5) / SAMPLES as f32;
                    let y = py as f32 + (sy as f32 + 0.5) / SAMPLES as f32;
                    if inside_square(x, y) {
                        square += 1.0;
                        if inside_triangle(x, y) {
                            sign += 1.0;
                        }
                    }
                }
            }
            let white = if square > 0.0 { sign / square } else { 0.0 };
            let [r, g, b] = INDIGO.map(|c| (c + (255.0 - c) * white).round() as u8);
            pixels.push([r, g, b, (square / n * 255.0).round() as u8]);
        }
    }
    pixels
}

/// One 32-bit image in an ICO: the directory, a BMP header of double height (colour
/// plus mask), BGRA rows bottom-up, and an all-zero mask (the alpha channel rules).
fn encode(rgba: &[[u8; 4]]) -> Vec<u8> {
    let mask_row = SIZE.div_ceil(32) * 4;
    let image_len = 40 + SIZE * SIZE * 4 + mask_row * SIZE;
    let mut out = Vec::with_capacity(6 + 16 + image_len);
    let side = SIZE as u8; // 32 fits; 0 would mean 256
    out.extend_from_slice(&[0, 0, 1, 0, 1, 0]); // reserved, type icon, one image
    out.extend_from_slice(&[side, side, 0, 0, 1, 0, 32, 0]); // size, no palette, 1 plane, 32 bpp
    out.extend_from_slice(&(image_len as u32).to_le_bytes());
    out.extend_from_slice(&22u32.to_le_bytes()); // the image follows the directory
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&(SIZE as i32).to_le_bytes());
    out.extend_from_slice(&(2 * SIZE as i32).to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&32u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes()); // no compression
    out.extend_from_slice(&((image_len - 40) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 16]); // resolution and palette counts
    for row in rgba.chunks(SIZE).rev() {
        for [r, g, b, a] in row {
            out.extend_from_slice(&[*b, *g, *r, *a]);
        }
    }
    out.resize(out.len() + mask_row * SIZE, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_icon_is_a_well_formed_32_bit_ico() {
        let ico = ico();
        assert_eq!(&ico[..6], &[0, 0, 1, 0, 1, 0]);
        let len = u32::from_le_bytes([ico[14], ico[15], ico[16], ico[17]]) as usize;
        let offset = u32::from_le_bytes([ico[18], ico[19], ico[20], ico[21]]) as usize;
        assert_eq!(offset + len, ico.len());
        assert_eq!(&ico[offset..offset + 4], &40u32.to_le_bytes());
        // Corners are transparent, the middle of the play sign is opaque white, and the
        // square beside it opaque indigo (rows are stored bottom-up, as BGRA).
        let pixel = |x: usize, y: usize| {
            let at = offset + 40 + ((SIZE - 1 - y) * SIZE + x) * 4;
            [ico[at], ico[at + 1], ico[at + 2], ico[at + 3]]
        };
        assert_eq!(pixel(0, 0)[3], 0);
        assert_eq!(pixel(16, 16), [255, 255, 255, 255]);
        assert_eq!(pixel(5, 16), [229, 70, 79, 255]);
    }
}
