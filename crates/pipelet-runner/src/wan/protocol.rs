//! The messages of the runner protocol, version 1 (`runners/wan/PROTOCOL.md` is the
//! reference; `runners/wan/pipelet_wan/protocol.py` the other end).
//!
//! One JSON object per line, at most [`MAX_LINE_BYTES`] per line. Unknown fields are
//! ignored on both sides, so fields can be added without a version change; anything
//! else bumps [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

/// The protocol version this worker speaks; `ready` must name the same.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest line accepted from the runner (and ever sent to it).
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Which expert a LoRA file goes into: Wan 2.2 A14B's high-noise `transformer` or its
/// low-noise `transformer_2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expert {
    /// `transformer`: the early, high-noise denoising steps.
    High,
    /// `transformer_2`: the late, low-noise denoising steps.
    Low,
}

/// One LoRA file to merge into an expert's weights at `load`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoraSpec {
    /// A local `.safetensors` file, as the runner process sees it.
    pub path: String,
    /// The expert whose weights it modifies.
    pub expert: Expert,
    /// Strength of the merge (1.0 is the LoRA as trained).
    pub scale: f64,
}

/// worker → runner.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Command {
    /// Make a pipeline resident (a no-op if it already is with the same weights).
    Load {
        /// `t2v` or `i2v`.
        pipeline: String,
        /// A local diffusers folder or a Hugging Face hub id.
        model: String,
        /// LoRAs merged at load; empty for none.
        loras: Vec<LoraSpec>,
    },
    /// Render one job; answered by `done`, `cancelled` or `error`.
    Generate(Box<GenerateSpec>),
    /// Stop the named job soon; sent at any time, never answered by itself.
    Cancel {
        /// The `job_id` of the `generate` to stop.
        job_id: String,
    },
    /// Exit after the command in hand.
    Shutdown,
}

/// The fields of a `generate` command (see `PROTOCOL.md` for each one's bounds).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateSpec {
    /// Echoed in every message about the job.
    pub job_id: String,
    /// `t2v` or `i2v`; must be loaded.
    pub pipeline: String,
    /// What the video should show.
    pub prompt: String,
    /// `None` uses the pipeline's default negative prompt.
    pub negative_prompt: Option<String>,
    /// Output width in pixels (a multiple of 16).
    pub width: u32,
    /// Output height in pixels (a multiple of 16).
    pub height: u32,
    /// Frames to generate, of the form 4k+1.
    pub num_frames: u32,
    /// Frame rate written into the MP4.
    pub fps: u32,
    /// Denoising steps.
    pub steps: u32,
    /// `None`: 1.0 for a pipeline loaded with LoRAs, else the pipeline's default.
    pub guidance: Option<f64>,
    /// Same seed, inputs and weights give the same video on a given device.
    pub seed: u64,
    /// i2v only: the input image file (JPEG/PNG/WebP).
    pub image_path: Option<String>,
    /// Where the MP4 goes; its folder must exist.
    pub output_path: String,
}

/// runner → worker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// The first line: the process is up and speaks this protocol.
    Ready(Ready),
    /// Answer to `load`: the pipeline is resident.
    Loaded {
        /// `t2v` or `i2v`.
        pipeline: String,
        /// How long the load took.
        #[serde(default)]
        seconds: f64,
        /// Every pipeline now in memory (others may have been evicted).
        #[serde(default)]
        resident: Vec<String>,
    },
    /// A task of a `generate` finished (a job is `steps + 2` tasks).
    Progress {
        /// The job this is about.
        job_id: String,
        /// Tasks finished so far.
        done: u32,
        /// Tasks of the whole job.
        total: u32,
    },
    /// Answer to `generate`: the MP4 is complete.
    Done(Done),
    /// Answer to `generate` after a `cancel`: nothing was left at `output_path`.
    Cancelled {
        /// The job that stopped.
        job_id: String,
    },
    /// Answer to `load` or `generate` (or an unparsable line) that failed.
    Error(ErrorEvent),
    /// A message type this worker does not know (from a newer runner): ignored.
    #[serde(other)]
    Unknown,
}

/// The `ready` message: what the process runs on.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ready {
    /// Must equal [`PROTOCOL_VERSION`], or the worker refuses the runner.
    pub protocol: u32,
    /// Torch device, e.g. `cuda` or `cpu`.
    #[serde(default)]
    pub device: String,
    /// Weight dtype, e.g. `bfloat16`.
    #[serde(default)]
    pub dtype: String,
    /// The GPU's name (CUDA only).
    #[serde(default)]
    pub device_name: Option<String>,
    /// Versions of Python and the main packages, for the log.
    #[serde(default)]
    pub versions: std::collections::BTreeMap<String, String>,
}

/// The `done` message: the finished MP4 and what it holds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Done {
    /// The job this answers.
    pub job_id: String,
    /// The MP4 (the command's `output_path`), renamed into place whole.
    pub path: String,
    /// Frames in the file.
    pub frames: u32,
    /// Video width in pixels.
    pub width: u32,
    /// Video height in pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// File size in bytes.
    pub bytes: u64,
    /// How long the job took in the runner.
    #[serde(default)]
    pub seconds: f64,
}

/// The `error` message.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorEvent {
    /// `oom`, `bad_weights`, `invalid` or `internal`.
    pub kind: String,
    /// The raw error, for operators (it may name paths and devices).
    pub message: String,
    /// Whether the job may succeed on another attempt (only `internal` is).
    #[serde(default)]
    pub retryable: bool,
    /// Set for errors about a `generate`.
    #[serde(default)]
    pub job_id: Option<String>,
    /// Set for errors about a `load`.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// The runner exits after this message (its device is unusable).
    #[serde(default)]
    pub fatal: bool,
}

impl Command {
    /// The command as one protocol line, newline included.
    pub fn to_line(&self) -> Result<Vec<u8>, String> {
        let mut line =
            serde_json::to_vec(self).map_err(|e| format!("cannot encode a command: {e}"))?;
        if line.len() >= MAX_LINE_BYTES {
            return Err(format!(
                "a command of {} bytes exceeds the protocol's {MAX_LINE_BYTES}-byte lines",
                line.len()
            ));
        }
        line.push(b'\n');
        Ok(line)
    }
}

impl Event {
    /// Decodes one line from the runner; the error quotes its first 200 bytes.
    pub fn parse(line: &[u8]) -> Result<Event, String> {
        serde_json::from_slice(line).map_err(|e| {
            let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
            format!("unreadable message from the wan runner ({e}): {shown}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_tagged_json_lines() {
        let load = Command::Load {
            pipeline: "t2v".into(),
            model: "/m".into(),
            loras: vec![LoraSpec {
                path: "/l/high.safetensors".into(),
                expert: Expert::High,
                scale: 1.0,
            }],
        };
        let line = load.to_line().expect("encode");
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).expect("json");
        assert_eq!(v["type"], "load");
        assert_eq!(v["loras"][0]["expert"], "high");
        let cancel = Command::Cancel { job_id: "j".into() }
            .to_line()
            .expect("encode");
        assert_eq!(cancel, b"{\"type\":\"cancel\",\"job_id\":\"j\"}\n");
    }

    #[test]
    fn events_parse_and_unknown_ones_are_tolerated() {
        let e = Event::parse(
            br#"{"type":"progress","job_id":"j","done":2,"total":6,"stage":"denoise"}"#,
        );
        assert_eq!(
            e,
            Ok(Event::Progress {
                job_id: "j".into(),
                done: 2,
                total: 6
            })
        );
        assert_eq!(
            Event::parse(br#"{"type":"telemetry","x":1}"#),
            Ok(Event::Unknown)
        );
        let err = Event::parse(
            br#"{"type":"error","kind":"oom","message":"m","retryable":false,"job_id":"j"}"#,
        );
        assert!(matches!(err, Ok(Event::Error(ErrorEvent { ref kind, .. })) if kind == "oom"));
        assert!(Event::parse(b"not json").is_err());
        assert!(Event::parse(br#"{"type":"done","job_id":"j"}"#).is_err());
    }
}
