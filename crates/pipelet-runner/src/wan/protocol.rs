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
    High,
    Low,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoraSpec {
    pub path: String,
    pub expert: Expert,
    pub scale: f64,
}

/// worker → runner.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Command {
    Load {
        pipeline: String,
        model: String,
        loras: Vec<LoraSpec>,
    },
    Generate(Box<GenerateSpec>),
    Cancel {
        job_id: String,
    },
    Shutdown,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GenerateSpec {
    pub job_id: String,
    pub pipeline: String,
    pub prompt: String,
    pub negative_prompt: Option<String>,
    pub width: u32,
    pub height: u32,
    pub num_frames: u32,
    pub fps: u32,
    pub steps: u32,
    /// `None`: 1.0 for a pipeline loaded with LoRAs, else the pipeline's default.
    pub guidance: Option<f64>,
    pub seed: u64,
    pub image_path: Option<String>,
    pub output_path: String,
}

/// runner → worker.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    Ready(Ready),
    Loaded {
        pipeline: String,
        #[serde(default)]
        seconds: f64,
        #[serde(default)]
        resident: Vec<String>,
    },
    Progress {
        job_id: String,
        done: u32,
        total: u32,
    },
    Done(Done),
    Cancelled {
        job_id: String,
    },
    Error(ErrorEvent),
    /// A message type this worker does not know (from a newer runner): ignored.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Ready {
    pub protocol: u32,
    #[serde(default)]
    pub device: String,
    #[serde(default)]
    pub dtype: String,
    #[serde(default)]
    pub device_name: Option<String>,
    #[serde(default)]
    pub versions: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Done {
    pub job_id: String,
    pub path: String,
    pub frames: u32,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub bytes: u64,
    #[serde(default)]
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorEvent {
    /// `oom`, `bad_weights`, `invalid` or `internal`.
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub retryable: bool,
    #[serde(default)]
    pub job_id: Option<String>,
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
