//! Deterministic randomness for the preview: a seed derived from the prompt and the
//! job seed, and a SplitMix64 stream. Both are defined here (not `std`'s hasher, whose
//! output may change between Rust releases) so a given prompt + seed always gives the
//! same video.

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, good enough for choosing looks.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeds from FNV-1a of the prompt's UTF-8 bytes, mixed with the job seed.
    pub fn from_prompt(prompt: &str, seed: u64) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in prompt.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut rng = Self(h ^ seed.rotate_left(32));
        // Discard one output so similar prompts diverge immediately.
        rng.next();
        rng
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        // 53 random bits → [0, 1) exactly representable.
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_stream_and_different_inputs_differ() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = SplitMix64::from_prompt("a cat", 7);
                move |_| r.next()
            })
            .collect();
        let mut b = SplitMix64::from_prompt("a cat", 7);
        assert_eq!(a, (0..4).map(|_| b.next()).collect::<Vec<_>>());
        assert_ne!(
            SplitMix64::from_prompt("a cat", 8).next(),
            SplitMix64::from_prompt("a cat", 7).next()
        );
        assert_ne!(
            SplitMix64::from_prompt("a dog", 7).next(),
            SplitMix64::from_prompt("a cat", 7).next()
        );
        let mut r = SplitMix64::from_prompt("", 0);
        for _ in 0..1000 {
            let v = r.range(2.0, 3.0);
            assert!((2.0..3.0).contains(&v));
        }
    }
}
