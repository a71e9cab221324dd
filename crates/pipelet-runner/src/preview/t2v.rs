//! Text-to-video preview: a soft, slowly drifting "plasma" of colour whose palette,
//! frequencies, directions and speeds all derive from a hash of the prompt and seed.
//!
//! Same prompt + seed → same frames (only integer math per pixel, and a hash that is
//! defined here, not `std`'s unstable `DefaultHasher`). Per pixel it is a few table
//! lookups and adds: four sine waves (two axis-aligned, one diagonal, one set of rings
//! around a wandering centre) summed into an index into a 256-colour cyclic palette,
//! then a separable vignette.

use super::rng::SplitMix64;

/// One sine period, in table steps. Phases are kept in 16.16 fixed point of these steps.
const SIN_LEN: usize = 1024;
const SIN_MASK: u32 = SIN_LEN as u32 - 1;
/// Each wave spans ±64, so the sum of four spans ±256 (palette index after `>> 1`).
const AMPLITUDE: f64 = 64.0;

pub(crate) struct Plasma {
    width: usize,
    height: usize,
    sin: Vec<i16>,
    palette: [[u8; 3]; 256],
    /// Ring phase (already in table steps) for every pixel of a 2w × 2h field, so a
    /// moving centre is just a moving window into it.
    rings: Vec<u16>,
    /// Vignette weights per column and row, 0..=256.
    vig_x: Vec<u16>,
    vig_y: Vec<u16>,
    /// Scratch: the per-column wave for the current frame.
    col: Vec<i16>,
    p: Params,
}

/// The prompt-derived look. Frequencies are 16.16 phase steps per pixel; speeds are
/// phase steps per frame.
struct Params {
    kx: u32,
    ky: u32,
    dx: u32,
    dy: u32,
    speed: [u32; 4],
    palette_speed: u32,
    /// Lissajous path of the ring centre: frequencies and phases (radians per frame).
    orbit: [f64; 4],
}

impl Plasma {
    pub fn new(width: u32, height: u32, prompt: &str, seed: u64) -> Self {
        let (width, height) = (width as usize, height as usize);
        let mut rng = SplitMix64::from_prompt(prompt, seed);
        let sin = (0..SIN_LEN)
            .map(|i| {
                ((i as f64 * std::f64::consts::TAU / SIN_LEN as f64).sin() * AMPLITUDE).round()
                    as i16
            })
            .collect();
        // Wave counts relative to the frame, so every resolution shows the same picture.
        // Via i64 so negative (leftward/upward) waves wrap instead of saturating to 0.
        let per_px =
            |cycles: f64, px: usize| (cycles * SIN_LEN as f64 * 65536.0 / px as f64) as i64 as u32;
        let angle = rng.range(0.0, std::f64::consts::TAU);
        let diag = rng.range(0.8, 1.8);
        let mut speed = || {
            let s = rng.range(3.0, 9.0) as u32;
            if rng.next() & 1 == 0 {
                s
            } else {
                s.wrapping_neg()
            }
        };
        let speed = [speed(), speed(), speed(), speed()];
        let p = Params {
            kx: per_px(rng.range(0.5, 1.3), width),
            ky: per_px(rng.range(0.4, 1.1), height),
            dx: per_px(diag * angle.cos(), width),
            dy: per_px(diag * angle.sin(), height),
            speed,
            palette_speed: rng.range(1.0, 3.0) as u32,
            orbit: [
                rng.range(0.02, 0.05),
                rng.range(0.0, 6.3),
                rng.range(0.015, 0.04),
                rng.range(0.0, 6.3),
            ],
        };
        let palette = palette(&mut rng);
        let rings = ring_field(width, height, rng.range(1.5, 3.0));
        let vignette = |n: usize| -> Vec<u16> {
            (0..n)
                .map(|i| {
                    let t = (2.0 * i as f64 + 1.0) / n as f64 - 1.0;
                    (256.0 * (1.0 - 0.28 * t * t)) as u16
                })
                .collect()
        };
        Self {
            width,
            height,
            sin,
            palette,
            rings,
            vig_x: vignette(width),
            vig_y: vignette(height),
            col: vec![0; width],
            p,
        }
    }

    /// Draws frame `index` into `rgb` (tightly packed RGB24, width × height).
    pub fn render(&mut self, index: u32, rgb: &mut [u8]) {
        let (w, p) = (self.width, &self.p);
        let t = |s: u32| index.wrapping_mul(s) << 16;
        let phase = |acc: u32| self.sin[((acc >> 16) & SIN_MASK) as usize];
        let (t0, t1, t2, t3) = (
            t(p.speed[0]),
            t(p.speed[1]),
            t(p.speed[2]),
            (index.wrapping_mul(p.speed[3])) & SIN_MASK,
        );
        for (x, c) in self.col.iter_mut().enumerate() {
            *c = phase((x as u32).wrapping_mul(p.kx).wrapping_add(t0));
        }
        // The ring centre wanders inside the middle half of the frame: the window
        // origin moves within [n/4, 3n/4] of the 2n-wide field, whose centre is at n.
        let f = f64::from(index);
        let wander = |n: usize, freq: f64, ph: f64| {
            let o = (0.25 + 0.25 * (1.0 + (f * freq + ph).sin())) * n as f64;
            (o as usize).min(n)
        };
        let (ox, oy) = (
            wander(w, p.orbit[0], p.orbit[1]),
            wander(self.height, p.orbit[2], p.orbit[3]),
        );
        let shift = index.wrapping_mul(p.palette_speed) as i32;

        for (y, row) in rgb.chunks_exact_mut(w * 3).take(self.height).enumerate() {
            let row_wave = phase((y as u32).wrapping_mul(p.ky).wrapping_add(t1));
            let mut diag = (y as u32).wrapping_mul(p.dy).wrapping_add(t2);
            let ring_row = &self.rings[(y + oy) * 2 * w + ox..][..w];
            let vy = u32::from(self.vig_y[y]);
            for (((px, &col), &ring), &vx) in row
                .chunks_exact_mut(3)
                .zip(&self.col)
                .zip(ring_row)
                .zip(&self.vig_x)
            {
                let d = phase(diag);
                diag = diag.wrapping_add(p.dx);
                let r = self.sin[((u32::from(ring) + t3) & SIN_MASK) as usize];
                let sum = i32::from(col) + i32::from(row_wave) + i32::from(d) + i32::from(r);
                let c = &self.palette[(((sum >> 1) + shift) & 255) as usize];
                let v = u32::from(vx) * vy;
                px[0] = ((u32::from(c[0]) * v) >> 16) as u8;
                px[1] = ((u32::from(c[1]) * v) >> 16) as u8;
                px[2] = ((u32::from(c[2]) * v) >> 16) as u8;
            }
        }
    }
}

/// Distance-based phases for a 2w × 2h field centred in the middle, `cycles` rings
/// across the frame diagonal.
fn ring_field(width: usize, height: usize, cycles: f64) -> Vec<u16> {
    let (fw, fh) = (2 * width, 2 * height);
    let diag = ((width * width + height * height) as f64).sqrt().max(1.0);
    let k = cycles * SIN_LEN as f64 / diag;
    let mut out = Vec::with_capacity(fw * fh);
    for y in 0..fh {
        let dy = y as f64 - height as f64;
        for x in 0..fw {
            let dx = x as f64 - width as f64;
            out.push(((dx * dx + dy * dy).sqrt() * k) as u32 as u16 & SIN_MASK as u16);
        }
    }
    out
}

/// A cyclic 256-entry gradient through four colours around a prompt-chosen hue: deep,
/// saturated, light, and a neighbouring accent, so any prompt gets a harmonious scheme.
fn palette(rng: &mut SplitMix64) -> [[u8; 3]; 256] {
    let hue = rng.range(0.0, 1.0);
    let spread = rng.range(0.06, 0.2);
    let keys = [
        hsv(hue, 0.75, 0.22),
        hsv(hue + spread, 0.7, 0.7),
        hsv(hue + 2.0 * spread, 0.35, 0.97),
        hsv(hue + 0.5 + spread, 0.55, 0.6),
    ];
    let mut out = [[0u8; 3]; 256];
    for (i, px) in out.iter_mut().enumerate() {
        let pos = i as f64 / 64.0;
        let (a, b) = (keys[(pos as usize) % 4], keys[(pos as usize + 1) % 4]);
        let t = pos.fract();
        let t = t * t * (3.0 - 2.0 * t); // smoothstep: no visible seams between keys
        for ch in 0..3 {
            px[ch] = (a[ch] + (b[ch] - a[ch]) * t).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

fn hsv(h: f64, s: f64, v: f64) -> [f64; 3] {
    let h = h.rem_euclid(1.0) * 6.0;
    let c = v * s;
    let x = c * (1.0 - (h % 2.0 - 1.0).abs());
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}
