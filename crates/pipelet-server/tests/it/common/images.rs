//! Input images: the kit's encodes and hand-built PNGs, plus what only the input-rule
//! tests need (GNU-wrapped base64).

pub use pipelet_testkit::images::*;

/// Base64 wrapped at 76 columns, as GNU `base64` writes it.
pub fn b64_wrapped(bytes: &[u8]) -> String {
    let plain = b64(bytes);
    let lines: Vec<&str> = plain
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    lines.join("\n") + "\n"
}
