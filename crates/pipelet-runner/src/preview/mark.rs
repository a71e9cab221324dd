//! The "PREVIEW" mark every preview frame carries, so nobody mistakes the CPU preview
//! for a model's output: white capitals from a built-in 5x7 bitmap font on a dark,
//! translucent box in the top-right corner (where video players put no controls).
//!
//! The glyphs are scaled with the frame's short side (1x below 480, 2x at 480, 3x at
//! 720), and the layout is computed once per job as a mask of the box, so a frame
//! costs one pass over a few thousand pixels (well under 1% of a 480p frame).

/// The text of the mark.
pub const TEXT: &str = "PREVIEW";

/// Glyph cells, in font pixels (before scaling).
const GLYPH_W: usize = 5;
const GLYPH_H: usize = 7;
/// Space between glyphs, around the text inside the box, and between box and frame edge.
const GAP: usize = 1;
const PADDING: usize = 2;
const MARGIN: usize = 4;
/// Frame short side per glyph scale step: 480 → 2x, 720 → 3x.
const SHORT_SIDE_PER_SCALE: usize = 240;
/// How much of the picture shows through the box: 90/256, about 35%.
const SHOW_THROUGH: u16 = 90;

/// 5x7 bitmaps of the letters of [`TEXT`], one row per byte, the leftmost pixel in bit 4.
fn glyph(c: char) -> [u8; GLYPH_H] {
    match c {
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        _ => [0; GLYPH_H],
    }
}

/// Where a frame's mark goes and which of its pixels are text. Pixels outside the box
/// are never touched.
#[derive(Debug, Clone)]
pub struct PreviewMark {
    frame_width: usize,
    /// The box, clipped to the frame: left, top, width, height in frame pixels.
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    /// `w * h` entries, row by row: whether the pixel is text (white) or box (dimmed).
    text: Vec<bool>,
}

impl PreviewMark {
    /// The layout for `width` x `height` frames.
    pub fn new(width: u32, height: u32) -> Self {
        let (fw, fh) = (width as usize, height as usize);
        let scale = (fw.min(fh) / SHORT_SIDE_PER_SCALE).max(1);
        let glyphs = TEXT.chars().count();
        let text_w = glyphs * GLYPH_W + (glyphs - 1) * GAP;
        let (box_w, box_h) = (
            (text_w + 2 * PADDING) * scale,
            (GLYPH_H + 2 * PADDING) * scale,
        );
        let margin = MARGIN * scale;
        // Top-right, on even coordinates so 4:2:0 chroma blocks do not straddle its edge;
        // clipped (never panicking) on frames too small to hold it.
        let x = fw.saturating_sub(box_w + margin) & !1;
        let y = margin.min(fh) & !1;
        let (w, h) = (box_w.min(fw - x), box_h.min(fh - y));
        let mut text = vec![false; w * h];
        for (i, c) in TEXT.chars().enumerate() {
            let left = PADDING + i * (GLYPH_W + GAP);
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..GLYPH_W {
                    if bits & (0x10 >> col) == 0 {
                        continue;
                    }
                    for dy in 0..scale {
                        let py = (PADDING + row) * scale + dy;
                        for dx in 0..scale {
                            let px = (left + col) * scale + dx;
                            if px < w && py < h {
                                text[py * w + px] = true;
                            }
                        }
                    }
                }
            }
        }
        Self {
            frame_width: fw,
            x,
            y,
            w,
            h,
            text,
        }
    }

    /// The box in frame pixels: `(left, top, width, height)`.
    pub fn rect(&self) -> (u32, u32, u32, u32) {
        (self.x as u32, self.y as u32, self.w as u32, self.h as u32)
    }

    /// Whether frame pixel (`x`, `y`) is a text pixel of the mark.
    pub fn is_text(&self, x: u32, y: u32) -> bool {
        let (x, y) = (x as usize, y as usize);
        x >= self.x
            && y >= self.y
            && x - self.x < self.w
            && y - self.y < self.h
            && self.text[(y - self.y) * self.w + (x - self.x)]
    }

    /// Draws the mark onto a frame of tightly packed RGB24 of this layout's size.
    pub fn apply(&self, rgb: &mut [u8]) {
        let stride = self.frame_width * 3;
        for (row, mask) in self.text.chunks_exact(self.w.max(1)).enumerate() {
            let start = (self.y + row) * stride + self.x * 3;
            let Some(line) = rgb.get_mut(start..start + self.w * 3) else {
                return;
            };
            for (px, &is_text) in line.chunks_exact_mut(3).zip(mask) {
                if is_text {
                    px.fill(255);
                } else {
                    for c in px {
                        *c = ((u16::from(*c) * SHOW_THROUGH) >> 8) as u8;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(w: u32, h: u32, fill: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(w as usize * h as usize * 3);
        for y in 0..h as usize {
            for x in 0..w as usize {
                rgb.extend_from_slice(&fill(x, y));
            }
        }
        rgb
    }

    #[test]
    fn scales_with_the_short_side_and_sits_top_right() {
        for (w, h, scale) in [(832, 480, 2), (1280, 720, 3), (480, 832, 2), (272, 480, 1)] {
            let mark = PreviewMark::new(w, h);
            let (x, y, bw, bh) = mark.rect();
            assert_eq!(bh, (GLYPH_H + 2 * PADDING) as u32 * scale, "{w}x{h}");
            assert_eq!(bw, 45 * scale, "{w}x{h}");
            // The margin, plus one pixel where the even alignment moved the box left.
            let right = w - (x + bw);
            assert!(
                (MARGIN as u32 * scale..=MARGIN as u32 * scale + 1).contains(&right),
                "{w}x{h}: right margin {right}"
            );
            assert_eq!(y, MARGIN as u32 * scale, "{w}x{h}: top margin");
            assert_eq!((x % 2, y % 2), (0, 0), "{w}x{h}: chroma-aligned");
            let text = (0..bh)
                .flat_map(|dy| (0..bw).map(move |dx| (x + dx, y + dy)))
                .filter(|&(px, py)| mark.is_text(px, py))
                .count() as u32;
            // Every lit font pixel becomes scale x scale frame pixels.
            let lit: u32 = TEXT
                .chars()
                .flat_map(glyph)
                .map(|row| row.count_ones())
                .sum();
            assert_eq!(text, lit * scale * scale, "{w}x{h}");
        }
    }

    #[test]
    fn draws_white_text_on_a_dimmed_box_and_nothing_else() {
        let (w, h) = (832, 480);
        let mark = PreviewMark::new(w, h);
        let (bx, by, bw, bh) = mark.rect();
        for background in [[255u8, 255, 255], [0, 0, 0], [200, 40, 90]] {
            let original = frame(w, h, |x, y| {
                // Some texture, so a misplaced copy would show.
                let v = ((x * 7 + y * 3) % 50) as u8;
                [
                    background[0].saturating_sub(v),
                    background[1].saturating_sub(v),
                    background[2].saturating_sub(v),
                ]
            });
            let mut marked = original.clone();
            mark.apply(&mut marked);
            for y in 0..h {
                for x in 0..w {
                    let i = (y as usize * w as usize + x as usize) * 3;
                    let (before, after) = (&original[i..i + 3], &marked[i..i + 3]);
                    let inside = x >= bx && x < bx + bw && y >= by && y < by + bh;
                    if !inside {
                        assert_eq!(before, after, "({x}, {y}) outside the box changed");
                    } else if mark.is_text(x, y) {
                        assert_eq!(after, [255, 255, 255], "({x}, {y}) text");
                    } else {
                        for c in 0..3 {
                            let want = ((u16::from(before[c]) * SHOW_THROUGH) >> 8) as u8;
                            assert_eq!(after[c], want, "({x}, {y}) box");
                            assert!(after[c] <= 90, "({x}, {y}) box is dark");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tiny_frames_are_clipped_not_overrun() {
        for (w, h) in [(2, 2), (16, 16), (64, 8), (90, 480)] {
            let mark = PreviewMark::new(w, h);
            let (x, y, bw, bh) = mark.rect();
            assert!(x + bw <= w && y + bh <= h, "{w}x{h}: {:?}", mark.rect());
            let mut rgb = vec![128u8; w as usize * h as usize * 3];
            mark.apply(&mut rgb);
            assert_eq!(rgb.len(), w as usize * h as usize * 3);
        }
    }
}
