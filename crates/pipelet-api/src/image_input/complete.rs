//! Whether an image file is whole: its container structure runs to its end marker.
//!
//! Decoders are lenient on purpose (like browsers, they show what they can), so a JPEG
//! cut off mid-scan decodes "successfully" with the missing rows painted grey, and a
//! PNG or WebP missing its tail can too. These walks read only the container framing
//! (segment and chunk lengths, never pixels), in one linear pass, and say where the
//! file stops short.

/// Why a file is not whole: for a message that ends "...; send the complete file".
pub(super) type Incomplete = String;

/// A JPEG is whole when its markers lead, through every scan, to an EOI marker.
///
/// Anything after the EOI is ignored (phones append videos and vendor trailers there),
/// as are stray bytes between segments (libjpeg tolerates them too).
pub(super) fn jpeg(b: &[u8]) -> Result<(), Incomplete> {
    let ends_early = || {
        format!(
            "the JPEG data stops after {} bytes, before its end-of-image marker",
            b.len()
        )
    };
    let mut pos = 2; // after SOI (FF D8), which sniffing checked
    let mut scans = 0u32;
    loop {
        // Next marker: skip stray bytes, then the 0xFF fill bytes before its code.
        pos += b
            .get(pos..)
            .unwrap_or_default()
            .iter()
            .position(|&x| x == 0xFF)
            .ok_or_else(ends_early)?;
        while b.get(pos) == Some(&0xFF) {
            pos += 1;
        }
        let code = *b.get(pos).ok_or_else(ends_early)?;
        pos += 1;
        match code {
            0xD9 if scans == 0 => return Err("the JPEG has no image data (no scan)".to_owned()),
            0xD9 => return Ok(()),
            // Markers without a length: TEM, RST0-7, a repeated SOI, and a stuffed zero
            // out of place.
            0x00 | 0x01 | 0xD0..=0xD8 => continue,
            _ => {}
        }
        let len = b.get(pos..pos + 2).ok_or_else(ends_early)?;
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len < 2 {
            return Err(format!("the JPEG has a segment of impossible length {len}"));
        }
        pos += len;
        if pos > b.len() {
            return Err(ends_early());
        }
        if code == 0xDA {
            scans += 1;
            pos = end_of_scan(b, pos).ok_or_else(ends_early)?;
        }
    }
}

/// Where the entropy-coded data starting at `pos` ends: the first 0xFF that begins a
/// real marker (not a stuffed `FF 00` and not a restart marker), or `None` at the end of
/// the bytes.
fn end_of_scan(b: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        pos += b.get(pos..)?.iter().position(|&x| x == 0xFF)?;
        match *b.get(pos + 1)? {
            0x00 | 0xD0..=0xD7 => pos += 2,
            0xFF => pos += 1, // a fill byte; the marker code follows
            _ => return Some(pos),
        }
    }
}

/// A PNG is whole when its chunks, each fully present, lead to IEND.
pub(super) fn png(b: &[u8]) -> Result<(), Incomplete> {
    let ends_early = || {
        format!(
            "the PNG data stops after {} bytes, before its IEND chunk",
            b.len()
        )
    };
    let mut pos: usize = 8; // after the signature, which sniffing checked
    loop {
        let header = b.get(pos..pos + 8).ok_or_else(ends_early)?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = &header[4..8];
        // Length, type, data, CRC.
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| pos.checked_add(12)?.checked_add(len))
            .ok_or_else(ends_early)?;
        if end > b.len() {
            return Err(ends_early());
        }
        if kind == b"IEND" {
            return Ok(());
        }
        pos = end;
    }
}

/// A WebP is whole when the file holds all the bytes its RIFF header says it has.
///
/// libwebp refuses the same files as "not enough data".
pub(super) fn webp(b: &[u8]) -> Result<(), Incomplete> {
    let size = b
        .get(4..8)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .unwrap_or(0);
    let want = u64::from(size) + 8;
    if want > b.len() as u64 {
        return Err(format!(
            "the WebP data stops after {} bytes; its header says the file has {want}",
            b.len()
        ));
    }
    Ok(())
}
