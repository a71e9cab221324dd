//! `pipelet models pull|check`: getting the Wan 2.2 weights onto a GPU host and checking
//! them before a worker loads them. Both run `python -m pipelet_wan.models` in the Wan
//! runner's Python environment (the one `pipelet worker --runner wan --python` uses),
//! where huggingface_hub does the downloading and resuming.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Subcommand)]
pub enum ModelsCommand {
    /// Download t2v, i2v (Wan-AI/Wan2.2-*-A14B-Diffusers) or the lightning LoRAs
    /// (lightx2v/Wan2.2-Lightning) into DIR, only the files a worker needs; run it again
    /// to resume after an interruption. With HF_HUB_OFFLINE=1 the files come from the
    /// local Hugging Face cache. The folder is checked at the end.
    Pull {
        /// Which weights: t2v, i2v or lightning.
        what: What,
        /// Where the files go (the folder to pass to --wan-t2v, --wan-i2v or --wan-*-lora).
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        python: PythonArgs,
    },
    /// Check a model or LoRA folder: every file there and whole, the right model (Wan 2.2
    /// A14B, not TI2V-5B or Wan 2.1). Exits 1 with what to do when it is not usable.
    Check {
        /// The model or LoRA folder to check.
        dir: PathBuf,
        /// What the folder must hold.
        #[arg(long)]
        expect: Option<What>,
        #[command(flatten)]
        python: PythonArgs,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    T2v,
    I2v,
    Lightning,
}

impl What {
    fn as_str(self) -> &'static str {
        match self {
            What::T2v => "t2v",
            What::I2v => "i2v",
            What::Lightning => "lightning",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct PythonArgs {
    /// The Python with runners/wan/requirements.txt installed.
    #[arg(long, env = "PIPELET_WAN_PYTHON", default_value = "python3")]
    python: PathBuf,
    /// The folder holding the pipelet_wan package (default: runners/wan under the
    /// current directory or beside the pipelet binary).
    #[arg(long, env = "PIPELET_WAN_RUNNER_DIR")]
    wan_runner_dir: Option<PathBuf>,
}

pub async fn run(command: ModelsCommand) -> anyhow::Result<()> {
    let (python, args): (PythonArgs, Vec<OsString>) = match command {
        ModelsCommand::Pull { what, dir, python } => (
            python,
            vec![
                "pull".into(),
                what.as_str().into(),
                "--dir".into(),
                std::path::absolute(&dir)?.into_os_string(),
            ],
        ),
        ModelsCommand::Check {
            dir,
            expect,
            python,
        } => {
            let mut args = vec!["check".into(), std::path::absolute(&dir)?.into_os_string()];
            if let Some(what) = expect {
                args.extend(["--expect".into(), what.as_str().into()]);
            }
            (python, args)
        }
    };
    let runner_dir = crate::wan_args::runner_dir(python.wan_runner_dir.as_deref())?;
    let status = tokio::process::Command::new(&python.python)
        .arg("-m")
        .arg("pipelet_wan.models")
        .args(&args)
        .env("PYTHONPATH", python_path(&runner_dir))
        .env("PYTHONUNBUFFERED", "1")
        .status()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run {} -m pipelet_wan.models: {e} (set --python to a Python with runners/wan/requirements.txt installed)",
                python.python.display()
            )
        })?;
    if !status.success() {
        // The runner printed what is wrong; this only sets the exit status.
        anyhow::bail!(
            "pipelet models {} failed ({status})",
            args[0].to_string_lossy()
        );
    }
    Ok(())
}

/// `PYTHONPATH` with the runner's folder first, keeping any the operator set.
fn python_path(runner_dir: &Path) -> OsString {
    let mut paths = vec![runner_dir.to_path_buf()];
    if let Some(existing) = std::env::var_os("PYTHONPATH") {
        paths.extend(std::env::split_paths(&existing));
    }
    std::env::join_paths(paths).unwrap_or_else(|_| runner_dir.as_os_str().to_os_string())
}
