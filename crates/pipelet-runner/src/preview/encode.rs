//! H.264 encoding of RGB frames with OpenH264, producing MP4-ready samples.
//!
//! Owns the encoder settings (constant 16 fps, single-threaded, bitrate scaled to the
//! frame size, BT.601 limited range, which is what OpenH264's RGB→YUV conversion
//! produces) and the Annex-B → AVCC conversion: OpenH264 emits start-code-delimited NAL
//! units, while MP4 wants 4-byte length prefixes, with SPS/PPS kept out of the samples
//! and stored once in the `avcC` box.

use std::os::raw::c_int;

use openh264::OpenH264API;
use openh264::Timestamp;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode,
    UsageType, VuiConfig,
};
use openh264::formats::{RgbSliceU8, YUVBuffer};

use crate::RunnerError;

/// Target bits per pixel per frame: enough for smooth gradients, small files.
const BITS_PER_PIXEL: f64 = 0.1;
/// Floor for tiny frames, where a pure bits-per-pixel budget starves the encoder.
const MIN_BITRATE: u32 = 200_000;

/// What the client reads when encoding fails; the encoder's own words are the detail.
const ENCODE_FAILED: &str = "the video could not be encoded";

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// The encoded stream, ready for [`crate::mp4`].
#[derive(Debug, Default)]
pub(crate) struct EncodedVideo {
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    /// All samples back to back, each NAL unit prefixed by its 4-byte big-endian length.
    pub data: Vec<u8>,
    pub sample_sizes: Vec<u32>,
    pub keyframes: Vec<bool>,
}

/// Encodes same-sized RGB24 frames one at a time.
pub(crate) struct H264Encoder {
    encoder: Encoder,
    yuv: YUVBuffer,
    width: usize,
    height: usize,
    fps: u32,
    out: EncodedVideo,
}

impl H264Encoder {
    /// `width` and `height` must be even (4:2:0 chroma); the caller validates them.
    pub fn new(width: u32, height: u32, fps: u32) -> Result<Self, RunnerError> {
        let pixels_per_second = f64::from(width) * f64::from(height) * f64::from(fps);
        let bitrate = ((pixels_per_second * BITS_PER_PIXEL) as u32).max(MIN_BITRATE);
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate))
            .max_frame_rate(FrameRate::from_hz(fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            // A skipped frame would leave a hole in a constant-frame-rate file. (Without
            // skipping, the bitrate is a target the QP steers towards, not a cap.)
            .skip_frames(false)
            // One thread: the worker already runs jobs in parallel, and it keeps the
            // output byte-for-byte reproducible.
            .num_threads(1)
            // (OpenH264 rejects the non-real-time usage types at init.)
            .usage_type(UsageType::CameraVideoRealTime)
            // Low: about 30% less CPU than Medium at the same size, and no visible
            // difference on these smooth scenes (the encoder is most of the job's time).
            .complexity(Complexity::Low)
            // A keyframe every 2 s keeps seeking in a browser cheap.
            .intra_frame_period(IntraFramePeriod::from_num_frames(fps * 2))
            .vui(VuiConfig::bt601());
        let mut encoder =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| {
                RunnerError::transient(
                    ENCODE_FAILED,
                    format!("cannot start the H.264 encoder: {e}"),
                )
            })?;
        silence(&mut encoder);
        Ok(Self {
            encoder,
            yuv: YUVBuffer::new(width as usize, height as usize),
            width: width as usize,
            height: height as usize,
            fps,
            out: EncodedVideo::default(),
        })
    }

    /// Encodes one frame of tightly packed RGB24 (`width * height * 3` bytes).
    pub fn encode_rgb(&mut self, rgb: &[u8]) -> Result<(), RunnerError> {
        if rgb.len() != self.width * self.height * 3 {
            return Err(RunnerError::transient(
                ENCODE_FAILED,
                format!(
                    "frame buffer has {} bytes, expected {}",
                    rgb.len(),
                    self.width * self.height * 3
                ),
            ));
        }
        self.yuv
            .read_rgb8(RgbSliceU8::new(rgb, (self.width, self.height)));
        let index = self.out.sample_sizes.len() as u64;
        let millis = index * 1000 / u64::from(self.fps);
        let stream = self
            .encoder
            .encode_at(&self.yuv, Timestamp::from_millis(millis))
            .map_err(|e| {
                RunnerError::transient(
                    ENCODE_FAILED,
                    format!("H.264 encoding failed at frame {index}: {e}"),
                )
            })?;

        let start = self.out.data.len();
        let mut keyframe = false;
        for l in 0..stream.num_layers() {
            let Some(layer) = stream.layer(l) else {
                continue;
            };
            for n in 0..layer.nal_count() {
                let Some(nal) = layer.nal_unit(n) else {
                    continue;
                };
                keyframe |= push_nal(&mut self.out, strip_start_code(nal))?;
            }
        }
        let size = self.out.data.len() - start;
        if size == 0 {
            return Err(RunnerError::transient(
                ENCODE_FAILED,
                format!("the H.264 encoder produced no data for frame {index}"),
            ));
        }
        self.out.sample_sizes.push(size as u32);
        self.out.keyframes.push(keyframe);
        Ok(())
    }

    pub fn finish(self) -> Result<EncodedVideo, RunnerError> {
        if self.out.sps.is_empty() || self.out.pps.is_empty() {
            return Err(RunnerError::transient(
                ENCODE_FAILED,
                "the H.264 encoder emitted no SPS/PPS",
            ));
        }
        Ok(self.out)
    }
}

/// Turns off OpenH264's own logging to stderr before its lazy initialisation (the
/// wrapper only does so after), where its default level warns about `skip_frames(false)`
/// on every job.
fn silence(encoder: &mut Encoder) {
    let mut level = openh264_sys2::WELS_LOG_QUIET as c_int;
    // SAFETY: the raw API belongs to a live encoder; TRACE_LEVEL is the one option OpenH264
    // accepts before initialisation, and it only reads an int through the pointer during
    // the call.
    let rc = unsafe {
        encoder.raw_api().set_option(
            openh264_sys2::ENCODER_OPTION_TRACE_LEVEL,
            (&raw mut level).cast(),
        )
    };
    if rc != 0 {
        tracing::debug!(rc, "cannot lower OpenH264's log level");
    }
}

/// Routes one NAL unit: parameter sets to the side (the first of each kind is kept;
/// OpenH264 repeats identical ones before every IDR), delimiters dropped, everything
/// else appended length-prefixed. Returns whether it is an IDR slice.
fn push_nal(out: &mut EncodedVideo, nal: &[u8]) -> Result<bool, RunnerError> {
    let Some(&header) = nal.first() else {
        return Ok(false);
    };
    match header & 0x1F {
        kind @ (NAL_SPS | NAL_PPS) => {
            let slot = if kind == NAL_SPS {
                &mut out.sps
            } else {
                &mut out.pps
            };
            if slot.is_empty() {
                slot.extend_from_slice(nal);
            } else if slot.as_slice() != nal {
                // One avcC holds one SPS/PPS pair: a changed one would be misdecoded.
                return Err(RunnerError::transient(
                    ENCODE_FAILED,
                    "the H.264 encoder changed its parameter sets mid-stream",
                ));
            }
            Ok(false)
        }
        NAL_AUD => Ok(false),
        kind => {
            let len = u32::try_from(nal.len()).map_err(|_| {
                RunnerError::transient(ENCODE_FAILED, "an H.264 NAL unit exceeds 4 GiB")
            })?;
            out.data.extend_from_slice(&len.to_be_bytes());
            out.data.extend_from_slice(nal);
            Ok(kind == NAL_IDR)
        }
    }
}

/// Removes a leading Annex-B start code (3 or 4 bytes) if there is one.
fn strip_start_code(nal: &[u8]) -> &[u8] {
    if let Some(rest) = nal.strip_prefix(&[0, 0, 0, 1]) {
        rest
    } else if let Some(rest) = nal.strip_prefix(&[0, 0, 1]) {
        rest
    } else {
        nal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_both_start_code_forms() {
        assert_eq!(strip_start_code(&[0, 0, 0, 1, 0x67, 1]), &[0x67, 1]);
        assert_eq!(strip_start_code(&[0, 0, 1, 0x68, 2]), &[0x68, 2]);
        assert_eq!(strip_start_code(&[0x65, 3]), &[0x65, 3]);
    }

    #[test]
    fn parameter_sets_go_to_the_side_and_slices_get_lengths() {
        let mut out = EncodedVideo::default();
        assert!(!push_nal(&mut out, &[0x67, 0x42, 0xC0, 0x1E]).unwrap());
        assert!(!push_nal(&mut out, &[0x68, 0xCE]).unwrap());
        assert!(!push_nal(&mut out, &[0x09, 0xF0]).unwrap());
        assert!(push_nal(&mut out, &[0x65, 0xAA, 0xBB]).unwrap());
        assert!(!push_nal(&mut out, &[0x41, 0xCC]).unwrap());
        // An identical repeat is accepted, a different one refused.
        assert!(push_nal(&mut out, &[0x67, 0x42, 0xC0, 0x1E]).is_ok());
        assert!(push_nal(&mut out, &[0x67, 0x4D, 0xC0, 0x1E]).is_err());
        assert_eq!(out.sps, [0x67, 0x42, 0xC0, 0x1E]);
        assert_eq!(out.pps, [0x68, 0xCE]);
        assert_eq!(
            out.data,
            [0, 0, 0, 3, 0x65, 0xAA, 0xBB, 0, 0, 0, 2, 0x41, 0xCC]
        );
    }

    #[test]
    fn encodes_frames_into_samples_with_a_leading_keyframe() {
        let (w, h) = (64u32, 48u32);
        let mut enc = H264Encoder::new(w, h, 16).unwrap();
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        for f in 0..20u8 {
            for (i, px) in rgb.iter_mut().enumerate() {
                *px = (i as u8).wrapping_add(f * 3);
            }
            enc.encode_rgb(&rgb).unwrap();
        }
        assert!(enc.encode_rgb(&rgb[1..]).is_err());
        let video = enc.finish().unwrap();
        assert_eq!(video.sample_sizes.len(), 20);
        assert!(video.keyframes[0]);
        assert_eq!(video.sps[0] & 0x1F, NAL_SPS);
        assert_eq!(video.pps[0] & 0x1F, NAL_PPS);
        let total: u64 = video.sample_sizes.iter().map(|&s| u64::from(s)).sum();
        assert_eq!(total, video.data.len() as u64);
    }
}
