//! `pipelet worker --runner wan` flags: where the Wan 2.2 weights and LoRAs are, which
//! Python runs `runners/wan`, and its memory options. Each flag has an environment
//! fallback (`PIPELET_WAN_*`).

use std::path::{Path, PathBuf};

use pipelet_runner::wan::{self, PipelineSource, WanConfig};

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Wan runner (--runner wan)")]
pub struct WanArgs {
    /// Text-to-video weights: a diffusers folder or hub id
    /// (e.g. Wan-AI/Wan2.2-T2V-A14B-Diffusers). Serves t2v when given.
    #[arg(long, env = "PIPELET_WAN_T2V")]
    wan_t2v: Option<String>,
    /// Image-to-video weights: a diffusers folder or hub id
    /// (e.g. Wan-AI/Wan2.2-I2V-A14B-Diffusers). Serves i2v when given.
    #[arg(long, env = "PIPELET_WAN_I2V")]
    wan_i2v: Option<String>,
    /// LoRAs for t2v (the Wan2.2-Lightning 4-step pair): a folder with
    /// high_noise_model.safetensors and low_noise_model.safetensors, or HIGH,LOW files.
    /// With LoRAs jobs run at guidance 1.0; without, at the pipeline's default guidance.
    #[arg(long, env = "PIPELET_WAN_T2V_LORA")]
    wan_t2v_lora: Option<String>,
    /// LoRAs for i2v, as --wan-t2v-lora.
    #[arg(long, env = "PIPELET_WAN_I2V_LORA")]
    wan_i2v_lora: Option<String>,
    /// Guidance for every job, overriding the default (1.0 with LoRAs, else the model's).
    #[arg(long, env = "PIPELET_WAN_GUIDANCE")]
    wan_guidance: Option<f64>,
    /// The Python with runners/wan/requirements.txt installed.
    #[arg(long, env = "PIPELET_WAN_PYTHON", default_value = "python3")]
    python: PathBuf,
    /// The folder holding the pipelet_wan package (default: runners/wan under the
    /// current directory or beside the pipelet binary).
    #[arg(long, env = "PIPELET_WAN_RUNNER_DIR")]
    wan_runner_dir: Option<PathBuf>,
    /// Device for the runner: auto (CUDA if present), cuda, cuda:N or cpu. One worker
    /// per GPU: choose the GPU with CUDA_VISIBLE_DEVICES rather than cuda:N.
    #[arg(long, env = "PIPELET_WAN_DEVICE", default_value = "auto")]
    wan_device: String,
    /// GPU memory: none (everything on the GPU), model (enable_model_cpu_offload: one
    /// component on the GPU at a time) or sequential (layer by layer; slowest, least memory).
    #[arg(long, env = "PIPELET_WAN_OFFLOAD", value_enum, default_value = "none")]
    wan_offload: Offload,
    /// Store the transformers' weights in FP8 (computed in bf16): about half their memory.
    #[arg(long, env = "PIPELET_WAN_FP8")]
    wan_fp8: bool,
    /// Decode the VAE in tiles (less memory at 720p).
    #[arg(long, env = "PIPELET_WAN_VAE_TILING")]
    wan_vae_tiling: bool,
    /// Pipelines kept loaded at once (1: switching t2v/i2v reloads; 2 needs memory for both).
    #[arg(long, env = "PIPELET_WAN_MAX_LOADED", default_value_t = 1)]
    wan_max_loaded: u32,
    /// Attention kernel: sdpa (PyTorch's), flash (the flash-attn package) or auto (flash
    /// when installed).
    #[arg(
        long,
        env = "PIPELET_WAN_ATTENTION",
        value_enum,
        default_value = "sdpa"
    )]
    wan_attention: Attention,
    /// torch.compile the transformer blocks (once per loaded pipeline; later jobs reuse it).
    #[arg(long, env = "PIPELET_WAN_COMPILE")]
    wan_compile: bool,
    /// Check the memory plan against this many GiB instead of the GPU's free memory
    /// (a GPU shared with something else; also checks on CPU).
    #[arg(long, env = "PIPELET_WAN_GPU_MEMORY", value_name = "GIB")]
    wan_gpu_memory: Option<f64>,
    /// Start even when the memory plan of these options does not fit the GPU (the runner
    /// refuses to start otherwise, naming the options that fit).
    #[arg(long, env = "PIPELET_WAN_SKIP_MEMORY_CHECK")]
    wan_skip_memory_check: bool,
    /// Seconds the runner may take to import torch and diffusers and say it is ready.
    #[arg(long, env = "PIPELET_WAN_READY_SECS", default_value_t = 300)]
    wan_ready_secs: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Attention {
    Sdpa,
    Flash,
    Auto,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Offload {
    None,
    Model,
    Sequential,
}

/// The runner's folder (the `pipelet_wan` package) as an absolute path: `--wan-runner-dir`
/// when given, else found beside the binary or in the current directory.
pub fn runner_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let dir = match given {
        Some(dir) if wan::is_runner_dir(dir) => dir.to_path_buf(),
        Some(dir) => anyhow::bail!(
            "--wan-runner-dir {}: no pipelet_wan package there",
            dir.display()
        ),
        None => wan::find_runner_dir().ok_or_else(|| {
            anyhow::anyhow!(
                "cannot find runners/wan (the pipelet_wan package): pass --wan-runner-dir"
            )
        })?,
    };
    Ok(std::path::absolute(dir)?)
}

impl WanArgs {
    /// The runner's configuration, with every path checked.
    pub fn config(&self) -> anyhow::Result<WanConfig> {
        let runner_dir = runner_dir(self.wan_runner_dir.as_deref())?;
        let mut config = WanConfig::new(&self.python, runner_dir);
        config.t2v = source(&self.wan_t2v, &self.wan_t2v_lora, "t2v")?;
        config.i2v = source(&self.wan_i2v, &self.wan_i2v_lora, "i2v")?;
        if config.t2v.is_none() && config.i2v.is_none() {
            anyhow::bail!("--runner wan needs --wan-t2v and/or --wan-i2v (a folder or hub id)");
        }
        if let Some(g) = self.wan_guidance
            && !(0.0..=50.0).contains(&g)
        {
            anyhow::bail!("--wan-guidance {g} must be between 0 and 50");
        }
        if self.wan_max_loaded == 0 {
            anyhow::bail!("--wan-max-loaded must be at least 1");
        }
        config.guidance = self.wan_guidance;
        config.ready_timeout = std::time::Duration::from_secs(self.wan_ready_secs.max(1));
        let offload = match self.wan_offload {
            Offload::None => "none",
            Offload::Model => "model",
            Offload::Sequential => "sequential",
        };
        config.runner_args = vec![
            "--device".into(),
            self.wan_device.clone(),
            "--offload".into(),
            offload.into(),
            "--max-loaded".into(),
            self.wan_max_loaded.to_string(),
        ];
        if self.wan_fp8 {
            config.runner_args.push("--fp8".into());
        }
        if self.wan_vae_tiling {
            config.runner_args.push("--vae-tiling".into());
        }
        let attention = match self.wan_attention {
            Attention::Sdpa => "sdpa",
            Attention::Flash => "flash",
            Attention::Auto => "auto",
        };
        config
            .runner_args
            .extend(["--attention".into(), attention.into()]);
        if self.wan_compile {
            config.runner_args.push("--compile".into());
        }
        // The runner checks the memory plan of what it will serve before it says ready.
        for (name, source) in [("t2v", &config.t2v), ("i2v", &config.i2v)] {
            if let Some(source) = source {
                config.runner_args.push("--serve".into());
                config.runner_args.push(format!("{name}={}", source.model));
            }
        }
        if let Some(gib) = self.wan_gpu_memory {
            if !(gib.is_finite() && gib > 0.0 && gib <= 1e6) {
                anyhow::bail!("--wan-gpu-memory {gib} must be a positive number of GiB");
            }
            config
                .runner_args
                .extend(["--gpu-memory".into(), gib.to_string()]);
        }
        if self.wan_skip_memory_check {
            config.runner_args.push("--skip-memory-check".into());
        }
        Ok(config)
    }
}

fn source(
    model: &Option<String>,
    lora: &Option<String>,
    name: &str,
) -> anyhow::Result<Option<PipelineSource>> {
    let Some(model) = model.as_ref().filter(|m| !m.trim().is_empty()) else {
        if lora.is_some() {
            anyhow::bail!("--wan-{name}-lora needs --wan-{name}");
        }
        return Ok(None);
    };
    // A local folder is passed absolute, so the runner's working directory never matters.
    let path = std::path::Path::new(model);
    let model = if path.exists() {
        std::path::absolute(path)?.to_string_lossy().into_owned()
    } else {
        model.clone()
    };
    let loras = match lora {
        Some(value) => {
            wan::lora_pair(value).map_err(|e| anyhow::anyhow!("--wan-{name}-lora {e}"))?
        }
        None => Vec::new(),
    };
    Ok(Some(PipelineSource { model, loras }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        wan: WanArgs,
    }

    fn runner_args(extra: &[&str]) -> anyhow::Result<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../runners/wan");
        let mut argv = vec!["pipelet", "--wan-runner-dir", dir];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv)?;
        Ok(cli.wan.config()?.runner_args.join(" "))
    }

    #[test]
    fn memory_and_speed_flags_reach_the_runner() {
        let args = runner_args(&[
            "--wan-t2v",
            "Wan-AI/Wan2.2-T2V-A14B-Diffusers",
            "--wan-gpu-memory",
            "79.5",
            "--wan-attention",
            "auto",
            "--wan-compile",
            "--wan-skip-memory-check",
        ])
        .expect("config");
        // The runner checks the plan of exactly the pipelines this worker serves.
        assert!(
            args.contains("--serve t2v=Wan-AI/Wan2.2-T2V-A14B-Diffusers"),
            "{args}"
        );
        assert!(!args.contains("i2v="), "{args}");
        for flag in [
            "--gpu-memory 79.5",
            "--attention auto",
            "--compile",
            "--skip-memory-check",
        ] {
            assert!(args.contains(flag), "{flag} in {args}");
        }
        let plain =
            runner_args(&["--wan-i2v", "Wan-AI/Wan2.2-I2V-A14B-Diffusers"]).expect("config");
        assert!(plain.contains("--attention sdpa") && !plain.contains("--compile"));
        assert!(!plain.contains("--gpu-memory") && !plain.contains("--skip-memory-check"));
        let bad = runner_args(&["--wan-t2v", "x/y", "--wan-gpu-memory", "0"]);
        assert!(bad.is_err_and(|e| e.to_string().contains("positive number of GiB")));
    }
}
