//! A minimal MP4 (ISO BMFF) muxer for one H.264 video track, written "fast start":
//! `ftyp`, then `moov`, then `mdat`, so a browser can start playing while downloading.
//!
//! It owns the box layout only. Samples arrive already encoded and length-prefixed
//! (AVCC form, 4-byte lengths) with SPS/PPS passed separately for the `avcC` box;
//! because every sample is known before writing, the sample tables (and the one chunk
//! offset) can be computed up front and `moov` written first without any relocation.

use std::io::{self, Write};

#[cfg(test)]
mod tests;

/// Upper bound on samples, so every table and box size provably fits its 32-bit field.
const MAX_SAMPLES: usize = 1_000_000;

/// One video track ready to be muxed.
#[derive(Debug, Clone)]
pub(crate) struct Mp4Video<'a> {
    pub width: u32,
    pub height: u32,
    /// Media time units per second (e.g. 16000 for 16 fps with a delta of 1000).
    pub timescale: u32,
    /// Duration of every sample, in `timescale` units (constant frame rate).
    pub sample_delta: u32,
    /// One SPS and one PPS NAL unit, without start codes or length prefixes.
    pub sps: &'a [u8],
    pub pps: &'a [u8],
    /// Size in bytes of each sample, in decode order; their sum is the `mdat` payload.
    pub sample_sizes: &'a [u32],
    /// Whether each sample is a sync sample (an IDR picture), in decode order.
    pub keyframes: &'a [bool],
}

/// Writes a complete MP4 (`ftyp`, `moov`, `mdat`) whose `mdat` holds `payload`, the
/// concatenated samples. Returns the number of bytes written.
pub(crate) fn write_mp4<W: Write>(
    w: &mut W,
    video: &Mp4Video<'_>,
    payload: &[u8],
) -> io::Result<u64> {
    let header = header(video, payload.len() as u64)?;
    w.write_all(&header)?;
    w.write_all(payload)?;
    Ok(header.len() as u64 + payload.len() as u64)
}

/// Everything before the `mdat` payload: `ftyp`, `moov` and the `mdat` box header.
pub(crate) fn header(video: &Mp4Video<'_>, payload_len: u64) -> io::Result<Vec<u8>> {
    validate(video, payload_len)?;
    let mut out = Vec::with_capacity(1024 + video.sample_sizes.len() * 4);
    ftyp(&mut out);
    // The chunk offset is a fixed-width field, so moov's size does not depend on its
    // value: build once with a placeholder to learn the size, then for real.
    let moov_len = moov(video, 0).len() as u64;
    let data_start = out.len() as u64 + moov_len + 8;
    let mdat_size = payload_len + 8;
    let offset = u32::try_from(data_start)
        .ok()
        .filter(|_| data_start + payload_len <= u64::from(u32::MAX))
        .ok_or_else(|| invalid("MP4 larger than 4 GiB is not supported"))?;
    out.extend_from_slice(&moov(video, offset));
    out.extend_from_slice(&(mdat_size as u32).to_be_bytes());
    out.extend_from_slice(b"mdat");
    Ok(out)
}

fn validate(v: &Mp4Video<'_>, payload_len: u64) -> io::Result<()> {
    let n = v.sample_sizes.len();
    if n == 0 || n > MAX_SAMPLES {
        return Err(invalid(format!(
            "sample count {n} out of range 1..={MAX_SAMPLES}"
        )));
    }
    if v.keyframes.len() != n {
        return Err(invalid("keyframe flags do not match the sample count"));
    }
    if !v.keyframes[0] {
        return Err(invalid("the first sample must be a keyframe"));
    }
    let total: u64 = v.sample_sizes.iter().map(|&s| u64::from(s)).sum();
    if total != payload_len {
        return Err(invalid(format!(
            "sample sizes sum to {total} but the payload has {payload_len} bytes"
        )));
    }
    if v.sps.len() < 4 || v.pps.is_empty() || v.sps.len() > 0xFFFF || v.pps.len() > 0xFFFF {
        return Err(invalid("missing or oversized SPS/PPS"));
    }
    if v.width == 0 || v.height == 0 || v.width > 0xFFFF || v.height > 0xFFFF {
        return Err(invalid(format!("bad dimensions {}x{}", v.width, v.height)));
    }
    if v.timescale == 0 || v.sample_delta == 0 {
        return Err(invalid("timescale and sample delta must be positive"));
    }
    Ok(())
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.into())
}

/// Appends a box: 32-bit size, fourcc, then whatever `body` writes.
fn bx(out: &mut Vec<u8>, fourcc: &[u8; 4], body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(fourcc);
    body(out);
    // Sizes are bounded by MAX_SAMPLES (checked in `validate`), so this cannot truncate.
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends a "full box": a box whose body starts with version (8 bits) and flags (24).
fn full(
    out: &mut Vec<u8>,
    fourcc: &[u8; 4],
    version: u8,
    flags: u32,
    body: impl FnOnce(&mut Vec<u8>),
) {
    bx(out, fourcc, |out| {
        out.extend_from_slice(&((u32::from(version) << 24) | (flags & 0x00FF_FFFF)).to_be_bytes());
        body(out);
    });
}

fn u16be(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn u32be(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// The identity transformation matrix used by mvhd and tkhd.
fn matrix(out: &mut Vec<u8>) {
    for v in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000u32] {
        u32be(out, v);
    }
}

fn ftyp(out: &mut Vec<u8>) {
    bx(out, b"ftyp", |out| {
        out.extend_from_slice(b"isom");
        u32be(out, 0x200);
        for brand in [b"isom", b"iso2", b"avc1", b"mp41"] {
            out.extend_from_slice(brand);
        }
    });
}

/// Movie-level duration in milliseconds (mvhd/tkhd use a 1000 Hz movie timescale).
const MOVIE_TIMESCALE: u32 = 1000;

fn moov(v: &Mp4Video<'_>, chunk_offset: u32) -> Vec<u8> {
    let n = v.sample_sizes.len() as u64;
    let media_duration = n * u64::from(v.sample_delta);
    let movie_duration = media_duration * u64::from(MOVIE_TIMESCALE) / u64::from(v.timescale);
    // Durations of a preview are tiny; saturate rather than fail for absurd inputs.
    let media_duration = u32::try_from(media_duration).unwrap_or(u32::MAX);
    let movie_duration = u32::try_from(movie_duration).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(1024 + v.sample_sizes.len() * 4);
    bx(&mut out, b"moov", |out| {
        // Creation/modification times stay 0 so identical jobs give identical bytes.
        full(out, b"mvhd", 0, 0, |out| {
            u32be(out, 0);
            u32be(out, 0);
            u32be(out, MOVIE_TIMESCALE);
            u32be(out, movie_duration);
            u32be(out, 0x0001_0000); // rate 1.0
            u16be(out, 0x0100); // volume 1.0
            out.extend_from_slice(&[0; 10]);
            matrix(out);
            out.extend_from_slice(&[0; 24]); // pre_defined
            u32be(out, 2); // next_track_ID
        });
        bx(out, b"trak", |out| {
            trak(out, v, movie_duration, media_duration, chunk_offset)
        });
    });
    out
}

fn trak(
    out: &mut Vec<u8>,
    v: &Mp4Video<'_>,
    movie_duration: u32,
    media_duration: u32,
    chunk_offset: u32,
) {
    // flags 3: track enabled and used in the presentation.
    full(out, b"tkhd", 0, 3, |out| {
        u32be(out, 0);
        u32be(out, 0);
        u32be(out, 1); // track_ID
        u32be(out, 0);
        u32be(out, movie_duration);
        out.extend_from_slice(&[0; 8]);
        u16be(out, 0); // layer
        u16be(out, 0); // alternate_group
        u16be(out, 0); // volume: 0 for video
        u16be(out, 0);
        matrix(out);
        u32be(out, v.width << 16);
        u32be(out, v.height << 16);
    });
    bx(out, b"mdia", |out| {
        full(out, b"mdhd", 0, 0, |out| {
            u32be(out, 0);
            u32be(out, 0);
            u32be(out, v.timescale);
            u32be(out, media_duration);
            u16be(out, 0x55C4); // language "und", packed ISO-639-2/T
            u16be(out, 0);
        });
        full(out, b"hdlr", 0, 0, |out| {
            u32be(out, 0);
            out.extend_from_slice(b"vide");
            out.extend_from_slice(&[0; 12]);
            out.extend_from_slice(b"VideoHandler\0");
        });
        bx(out, b"minf", |out| {
            full(out, b"vmhd", 0, 1, |out| out.extend_from_slice(&[0; 8]));
            bx(out, b"dinf", |out| {
                full(out, b"dref", 0, 0, |out| {
                    u32be(out, 1);
                    // flags 1: the media data is in this file.
                    full(out, b"url ", 0, 1, |_| {});
                });
            });
            bx(out, b"stbl", |out| stbl(out, v, chunk_offset));
        });
    });
}

fn stbl(out: &mut Vec<u8>, v: &Mp4Video<'_>, chunk_offset: u32) {
    let n = v.sample_sizes.len() as u32;
    full(out, b"stsd", 0, 0, |out| {
        u32be(out, 1);
        bx(out, b"avc1", |out| avc1(out, v));
    });
    // Constant frame rate: one run of n samples, all with the same duration.
    full(out, b"stts", 0, 0, |out| {
        u32be(out, 1);
        u32be(out, n);
        u32be(out, v.sample_delta);
    });
    full(out, b"stss", 0, 0, |out| {
        let syncs: Vec<u32> = (1..=n)
            .zip(v.keyframes)
            .filter(|(_, k)| **k)
            .map(|(i, _)| i)
            .collect();
        u32be(out, syncs.len() as u32);
        for i in syncs {
            u32be(out, i);
        }
    });
    // Every sample lives in one chunk: the whole mdat payload.
    full(out, b"stsc", 0, 0, |out| {
        u32be(out, 1);
        u32be(out, 1);
        u32be(out, n);
        u32be(out, 1);
    });
    full(out, b"stsz", 0, 0, |out| {
        u32be(out, 0);
        u32be(out, n);
        for &s in v.sample_sizes {
            u32be(out, s);
        }
    });
    full(out, b"stco", 0, 0, |out| {
        u32be(out, 1);
        u32be(out, chunk_offset);
    });
}

fn avc1(out: &mut Vec<u8>, v: &Mp4Video<'_>) {
    out.extend_from_slice(&[0; 6]);
    u16be(out, 1); // data_reference_index
    out.extend_from_slice(&[0; 16]); // pre_defined + reserved
    u16be(out, v.width as u16);
    u16be(out, v.height as u16);
    u32be(out, 0x0048_0000); // 72 dpi
    u32be(out, 0x0048_0000);
    u32be(out, 0);
    u16be(out, 1); // frame_count
    out.extend_from_slice(&[0; 32]); // compressorname
    u16be(out, 0x0018); // depth
    u16be(out, 0xFFFF); // pre_defined = -1
    bx(out, b"avcC", |out| {
        let (profile, compat, level) = (v.sps[1], v.sps[2], v.sps[3]);
        out.extend_from_slice(&[1, profile, compat, level]);
        out.push(0xFF); // 4-byte NAL length prefixes
        out.push(0xE1); // one SPS
        u16be(out, v.sps.len() as u16);
        out.extend_from_slice(v.sps);
        out.push(1); // one PPS
        u16be(out, v.pps.len() as u16);
        out.extend_from_slice(v.pps);
        if matches!(profile, 100 | 110 | 122 | 144) {
            // High profiles carry chroma format and bit depths: 4:2:0, 8 bit, no SPS ext.
            out.extend_from_slice(&[0xFC | 1, 0xF8, 0xF8, 0]);
        }
    });
}
