//! What a [`super::WanRunner`] runs: the Python interpreter and package, each
//! pipeline's weights and LoRAs, and the runner's options; plus the helpers that find
//! `runners/wan` and resolve LoRA arguments.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pipelet_api::Pipeline;

use super::protocol::{Expert, LoraSpec};

/// Where one pipeline's weights come from.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSource {
    /// A local diffusers folder or a Hugging Face hub id
    /// (e.g. `Wan-AI/Wan2.2-T2V-A14B-Diffusers`).
    pub model: String,
    /// LoRA files fused into the experts at load (the Wan2.2-Lightning pair); empty for
    /// none, in which case jobs use the pipeline's default guidance.
    pub loras: Vec<LoraSpec>,
}

/// How to start and configure the Wan runner's Python process.
#[derive(Debug, Clone)]
pub struct WanConfig {
    /// The Python interpreter with `runners/wan/requirements.txt` installed.
    pub python: PathBuf,
    /// The folder holding the `pipelet_wan` package (put on `PYTHONPATH`).
    pub runner_dir: PathBuf,
    /// Text-to-video weights; `None`: this runner does not serve t2v.
    pub t2v: Option<PipelineSource>,
    /// Image-to-video weights; `None`: this runner does not serve i2v.
    pub i2v: Option<PipelineSource>,
    /// Extra arguments for `python -m pipelet_wan` (`--offload model`, `--fp8`, ...).
    pub runner_args: Vec<String>,
    /// Guidance for every job; `None` lets the runner choose (1.0 with LoRAs, else the
    /// pipeline's default).
    pub guidance: Option<f64>,
    /// How long the process may take to import torch and diffusers and say `ready`.
    pub ready_timeout: Duration,
}

impl WanConfig {
    /// A config with no pipelines yet (set `t2v`/`i2v`), no extra arguments and a
    /// 300 s ready timeout.
    pub fn new(python: impl Into<PathBuf>, runner_dir: impl Into<PathBuf>) -> Self {
        Self {
            python: python.into(),
            runner_dir: runner_dir.into(),
            t2v: None,
            i2v: None,
            runner_args: Vec::new(),
            guidance: None,
            ready_timeout: Duration::from_secs(300),
        }
    }

    pub(super) fn source(&self, pipeline: Pipeline) -> Option<&PipelineSource> {
        match pipeline {
            Pipeline::T2v => self.t2v.as_ref(),
            Pipeline::I2v => self.i2v.as_ref(),
        }
    }
}

/// Finds the folder holding `pipelet_wan`: `runners/wan` under the current directory, or
/// beside the binary or above it (a `target/<profile>/pipelet` in a checkout).
pub fn find_runner_dir() -> Option<PathBuf> {
    let mut bases = vec![std::env::current_dir().ok()];
    if let Ok(exe) = std::env::current_exe() {
        bases.extend(
            exe.ancestors()
                .skip(1)
                .take(4)
                .map(|p| Some(p.to_path_buf())),
        );
    }
    bases
        .into_iter()
        .flatten()
        .map(|base| base.join("runners").join("wan"))
        .find(|dir| is_runner_dir(dir))
}

/// Whether `dir` holds the `pipelet_wan` package.
pub fn is_runner_dir(dir: &Path) -> bool {
    dir.join("pipelet_wan").join("__main__.py").is_file()
}

/// LoRA files from one command-line value: a folder with the Wan2.2-Lightning layout
/// (`high_noise_model.safetensors` and `low_noise_model.safetensors`), or `HIGH,LOW`.
pub fn lora_pair(value: &str) -> Result<Vec<LoraSpec>, String> {
    let (high, low) = match value.split_once(',') {
        Some((high, low)) => (PathBuf::from(high.trim()), PathBuf::from(low.trim())),
        None => {
            let dir = Path::new(value);
            if !dir.is_dir() {
                return Err(format!(
                    "{value}: expected a folder with high_noise_model.safetensors and low_noise_model.safetensors, or HIGH.safetensors,LOW.safetensors"
                ));
            }
            (
                dir.join("high_noise_model.safetensors"),
                dir.join("low_noise_model.safetensors"),
            )
        }
    };
    [(high, Expert::High), (low, Expert::Low)]
        .into_iter()
        .map(|(path, expert)| {
            if !path.is_file() {
                return Err(format!("LoRA file {} does not exist", path.display()));
            }
            let path = std::path::absolute(&path)
                .map_err(|e| format!("LoRA file {}: {e}", path.display()))?;
            Ok(LoraSpec {
                path: path.to_string_lossy().into_owned(),
                expert,
                scale: 1.0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_pairs_from_a_lightning_folder_or_two_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let high = dir.path().join("high_noise_model.safetensors");
        let low = dir.path().join("low_noise_model.safetensors");
        let folder = dir.path().to_string_lossy().into_owned();
        assert!(lora_pair(&folder).is_err_and(|e| e.contains("does not exist")));
        std::fs::write(&high, b"x").expect("write");
        std::fs::write(&low, b"x").expect("write");
        let pair = lora_pair(&folder).expect("folder");
        assert_eq!(pair.len(), 2);
        assert_eq!(
            (pair[0].expert, pair[1].expert),
            (Expert::High, Expert::Low)
        );
        assert!(pair[0].path.ends_with("high_noise_model.safetensors"));
        let files = format!("{},{}", low.display(), high.display());
        let swapped = lora_pair(&files).expect("files");
        assert!(swapped[0].path.ends_with("low_noise_model.safetensors"));
        assert_eq!(
            swapped[0].expert,
            Expert::High,
            "the first file is the high-noise one"
        );
        assert!(lora_pair("/nonexistent/folder").is_err());
    }

    #[test]
    fn the_runner_dir_of_this_checkout_is_recognised() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runners/wan");
        assert!(is_runner_dir(&dir));
        assert!(!is_runner_dir(Path::new(env!("CARGO_MANIFEST_DIR"))));
    }
}
