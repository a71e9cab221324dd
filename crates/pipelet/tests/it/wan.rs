//! `pipelet worker --runner wan` end to end with real processes: `pipelet serve
//! --workers 0`, a remote worker running the real Python runner (runners/wan) on CPU
//! with tiny random-weight Wan 2.2 models, MP4s checked with ffprobe, progress in the
//! status, a forced cancel, and a SIGKILLed runner whose job is retried and completes.
//!
//! These tests are `#[ignore]`d in a plain `cargo test`; `scripts/wan-test.sh` builds the
//! Python environment and the tiny models and runs them with `--include-ignored`. Run
//! without `PIPELET_WAN_PYTHON` (the runner's Python), they fail unless
//! `PIPELET_SKIP_WAN=1`. `PIPELET_WAN_TINY_MODELS` names prebuilt tiny models; without
//! it they are built once under Cargo's test temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use pipelet_testkit::images::png_base64;
use pipelet_testkit::media::{probe, top_level_boxes};
use pipelet_testkit::process::kill9;
use pipelet_testkit::{Server, temp_data_dir};
use serde_json::{Value, json};

const T2V: &str = "wan22-fast-t2v";
const I2V: &str = "wan22-fast-i2v";
/// Generous: two cores shared with compilers, fp32 on CPU.
const JOB_DEADLINE: Duration = Duration::from_secs(300);

struct Wan {
    python: PathBuf,
    models: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The runner's Python and tiny models, or `None` when skipped on purpose.
fn wan_env() -> Option<Wan> {
    let Some(python) = std::env::var_os("PIPELET_WAN_PYTHON") else {
        assert_eq!(
            std::env::var("PIPELET_SKIP_WAN").as_deref(),
            Ok("1"),
            "PIPELET_WAN_PYTHON is not set: run scripts/wan-test.sh (it builds the runner's \
             Python environment and sets it), or set PIPELET_SKIP_WAN=1 to skip the wan tests"
        );
        eprintln!("wan tests skipped: PIPELET_SKIP_WAN=1");
        return None;
    };
    let python = PathBuf::from(python);
    let models = match std::env::var_os("PIPELET_WAN_TINY_MODELS") {
        Some(dir) => PathBuf::from(dir),
        None => build_tiny_models(&python),
    };
    assert!(
        models.join("t2v/model_index.json").is_file(),
        "no tiny models in {}",
        models.display()
    );
    Some(Wan { python, models })
}

/// Builds the tiny models once per target dir (atomically, so parallel tests agree).
fn build_tiny_models(python: &Path) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wan-tiny-models");
    if dir.join("i2v/model_index.json").is_file() {
        return dir;
    }
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let status = Command::new(python)
        .arg(repo_root().join("runners/wan/make_tiny_model.py"))
        .arg(tmp.path())
        .status()
        .expect("run make_tiny_model.py");
    assert!(status.success(), "make_tiny_model.py failed");
    // Another test may have won the race; either copy is good.
    let _ = std::fs::rename(tmp.keep(), &dir);
    dir
}

/// A server with no in-process workers and one `pipelet worker --runner wan`.
struct Setup {
    _dir: tempfile::TempDir,
    server: Server,
    worker: std::process::Child,
    client: reqwest::Client,
}

impl Drop for Setup {
    fn drop(&mut self) {
        kill9(&mut self.worker);
    }
}

fn start(wan: &Wan, name: &str) -> Setup {
    let (dir, data) = temp_data_dir();
    let server = crate::pipelet().start_server(&data, &["--workers", "0", "--heartbeat-secs", "1"]);
    let key = crate::pipelet().create_key(&data, name, "worker");
    let models = &wan.models;
    let path = |p: &str| models.join(p).to_string_lossy().into_owned();
    let runner_dir = repo_root().join("runners/wan");
    let python = wan.python.to_string_lossy().into_owned();
    // scripts/gpu-check.sh runs these on CUDA.
    let device = std::env::var("PIPELET_WAN_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let args = [
        "--runner",
        "wan",
        "--python",
        &python,
        "--wan-runner-dir",
        &runner_dir.to_string_lossy(),
        "--wan-t2v",
        &path("t2v"),
        "--wan-i2v",
        &path("i2v"),
        "--wan-t2v-lora",
        &path("lora"),
        "--wan-i2v-lora",
        &path("lora"),
        "--wan-device",
        &device,
        "--poll-secs",
        "1",
    ];
    let worker = crate::pipelet().start_worker(&server.base, &key, name, &args);
    Setup {
        _dir: dir,
        server,
        worker,
        client: reqwest::Client::new(),
    }
}

impl Setup {
    async fn create(&self, model: &str, body: Value) -> String {
        self.server.create(&self.client, model, body).await["request_id"]
            .as_str()
            .expect("request_id")
            .to_string()
    }

    /// Polls until `id` reaches `want`, returning every distinct progress text seen.
    async fn follow(&self, model: &str, id: &str, want: &str) -> (Value, Vec<String>) {
        let start = Instant::now();
        let mut details = Vec::new();
        loop {
            let status = self.server.status(&self.client, model, id).await;
            if let Some(d) = status["statusMessages"]["detail_message"].as_str()
                && details.last().map(String::as_str) != Some(d)
            {
                details.push(d.to_string());
            }
            if status["status"] == want {
                return (status, details);
            }
            assert!(
                !matches!(
                    status["status"].as_str(),
                    Some("FAILED" | "CANCELLED" | "COMPLETED")
                ),
                "{id} ended as {} while waiting for {want}: {status}",
                status["status"]
            );
            assert!(
                start.elapsed() < JOB_DEADLINE,
                "{id} not {want} within {JOB_DEADLINE:?}: {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the job shows `Progress: k/total` with `k` at least `at_least`.
    async fn wait_for_progress(&self, model: &str, id: &str, at_least: u32) -> (u32, u32) {
        let start = Instant::now();
        loop {
            let status = self.server.status(&self.client, model, id).await;
            let detail = status["statusMessages"]["detail_message"].as_str();
            if let Some((done, total)) = detail.and_then(parse_progress)
                && done >= at_least
            {
                return (done, total);
            }
            assert!(
                status["status"] != "COMPLETED",
                "finished too soon: {status}"
            );
            assert!(start.elapsed() < JOB_DEADLINE, "no progress: {status}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn video(&self, model: &str, id: &str, dir: &Path) -> PathBuf {
        let r = self
            .client
            .get(format!("{}/queue/{model}/requests/{id}", self.server.base))
            .bearer_auth(&self.server.key)
            .send()
            .await
            .expect("result");
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.expect("result json");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body["video"]["data_uri"].as_str().expect("data_uri"))
            .expect("base64");
        let path = dir.join(format!("{id}.mp4"));
        std::fs::write(&path, bytes).expect("write mp4");
        path
    }
}

/// `"Progress: 3/6 Tasks done"` → (3, 6).
fn parse_progress(detail: &str) -> Option<(u32, u32)> {
    let rest = detail
        .strip_prefix("Progress: ")?
        .strip_suffix(" Tasks done")?;
    let (done, total) = rest.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?))
}

fn assert_video(path: &Path, width: u32, height: u32, frames: u32) {
    let got = probe(path);
    let want = [
        ("codec_name", "h264".to_string()),
        ("width", width.to_string()),
        ("height", height.to_string()),
        ("pix_fmt", "yuv420p".to_string()),
        ("r_frame_rate", "16/1".to_string()),
        ("nb_read_frames", frames.to_string()),
    ];
    for (key, value) in want {
        assert_eq!(
            got.get(key),
            Some(&value),
            "{} {key}: {got:?}",
            path.display()
        );
    }
    let data = std::fs::read(path).expect("read mp4");
    let boxes = top_level_boxes(&data);
    let pos = |b: &str| boxes.iter().position(|x| x == b);
    assert!(
        pos("moov") < pos("mdat") && pos("moov").is_some(),
        "moov first: {boxes:?}"
    );
}

/// The worker's runner process (its only child running pipelet_wan).
fn runner_pid(worker: &std::process::Child) -> Option<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &worker.id().to_string(), "-f", "pipelet_wan"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wan runner's Python environment: scripts/wan-test.sh"]
async fn t2v_and_i2v_videos_from_the_wan_runner() {
    let Some(wan) = wan_env() else { return };
    let setup = start(&wan, "wan-videos");
    let out = tempfile::tempdir().expect("tempdir");

    let body = json!({"prompt": "a red fox running in the forest", "width": 512, "height": 512, "duration": 1});
    let id = setup.create(T2V, body).await;
    let (done, details) = setup.follow(T2V, &id, "COMPLETED").await;
    // 4 Lightning steps, the VAE decode and the encode: 6 tasks.
    let progress: Vec<_> = details.iter().filter_map(|d| parse_progress(d)).collect();
    assert!(
        !progress.is_empty() && progress.iter().all(|&(k, n)| n == 6 && k <= 6),
        "progress in the status: {details:?}"
    );
    assert_eq!(done["statusMessages"]["message"], "COMPLETED");
    assert_video(&setup.video(T2V, &id, out.path()).await, 512, 512, 17);

    // A 4:3 image at the default 480p gives 640x480.
    let body = json!({"prompt": "the camera pans over a city at night", "data_uri": png_base64(160, 120), "duration": 1});
    let id = setup.create(I2V, body).await;
    setup.follow(I2V, &id, "COMPLETED").await;
    assert_video(&setup.video(I2V, &id, out.path()).await, 640, 480, 17);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wan runner's Python environment: scripts/wan-test.sh"]
async fn a_forced_cancel_stops_a_running_wan_job() {
    let Some(wan) = wan_env() else { return };
    let setup = start(&wan, "wan-cancel");
    // 8 steps at 832x480, 81 frames: long enough on CPU that the cancel lands mid-job.
    let body = json!({"prompt": "a slow sunset over the sea", "width": 832, "height": 480,
                      "duration": 5, "higher_quality_with_more_steps": true});
    let id = setup.create(T2V, body).await;
    let (done, total) = setup.wait_for_progress(T2V, &id, 1).await;
    assert_eq!(total, 10, "8 steps, decode, encode");
    assert!(done < total);
    let r = setup
        .client
        .put(format!(
            "{}/queue/{T2V}/requests/{id}/cancel?force=true",
            setup.server.base
        ))
        .bearer_auth(&setup.server.key)
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), 202);
    let (status, _) = setup.follow(T2V, &id, "CANCELLED").await;
    assert_eq!(status["status"], "CANCELLED");
    let r = setup
        .client
        .get(format!("{}/queue/{T2V}/requests/{id}", setup.server.base))
        .bearer_auth(&setup.server.key)
        .send()
        .await
        .expect("result");
    assert_eq!(r.status(), 409, "a cancelled job has no video");
    // The runner survived the cancel and takes the next job.
    let pid = runner_pid(&setup.worker);
    let next = setup
        .create(
            T2V,
            json!({"prompt": "a blue bird", "width": 512, "height": 512, "duration": 1}),
        )
        .await;
    setup.follow(T2V, &next, "COMPLETED").await;
    assert_eq!(runner_pid(&setup.worker), pid, "same runner process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the wan runner's Python environment: scripts/wan-test.sh"]
async fn a_killed_runner_is_restarted_and_its_job_retried() {
    let Some(wan) = wan_env() else { return };
    let setup = start(&wan, "wan-crash");
    let body =
        json!({"prompt": "a dog swimming in a river", "width": 832, "height": 480, "duration": 2});
    let id = setup.create(T2V, body).await;
    setup.wait_for_progress(T2V, &id, 1).await;
    let pid = runner_pid(&setup.worker).expect("the worker's python runner");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let (done, _) = setup.follow(T2V, &id, "COMPLETED").await;
    assert_eq!(done["statusMessages"]["message"], "COMPLETED");
    let new_pid = runner_pid(&setup.worker).expect("a new runner");
    assert_ne!(new_pid, pid, "the worker started a new runner");
    let metrics = setup
        .client
        .get(format!("{}/metrics", setup.server.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let retries = format!("pipelet_job_retries_total{{model=\"{T2V}\"}} 1");
    assert!(
        metrics.lines().any(|l| l == retries),
        "retried once:\n{metrics}"
    );
}

/// Runs `pipelet ARGS` with `envs`; returns (success, stdout, stderr).
fn pipelet(args: &[&std::ffi::OsStr], envs: &[(&str, &Path)]) -> (bool, String, String) {
    let mut cmd = crate::pipelet().command();
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pipelet");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Puts every file under `from` into a Hugging Face hub cache at `cache` as `repo`
/// (models--ORG--NAME/{blobs,refs/main,snapshots/COMMIT/...}, snapshots linking to blobs).
fn add_to_hub_cache(cache: &Path, repo: &str, from: &Path) {
    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(root.join("refs")).expect("refs");
    std::fs::create_dir_all(root.join("blobs")).expect("blobs");
    std::fs::write(root.join("refs/main"), COMMIT).expect("ref");
    let mut stack = vec![from.to_path_buf()];
    let mut n = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            n += 1;
            let blob = root.join(format!("blobs/blob{n}"));
            std::fs::copy(&path, &blob).expect("blob");
            let rel = path.strip_prefix(from).expect("relative");
            let link = root.join("snapshots").join(COMMIT).join(rel);
            std::fs::create_dir_all(link.parent().expect("parent")).expect("snapshot dir");
            std::os::unix::fs::symlink(&blob, &link).expect("symlink");
        }
    }
}

#[test]
#[ignore = "needs the wan runner's Python environment: scripts/wan-test.sh"]
fn models_pull_and_check_work_offline_from_a_hub_cache() {
    let Some(wan) = wan_env() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("hub");
    let staging = dir.path().join("staging");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(wan.models.join("t2v"))
        .arg(&staging)
        .status()
        .expect("cp");
    assert!(copied.success());
    std::fs::write(staging.join("README.md"), "model card").expect("readme");
    add_to_hub_cache(&cache, "Wan-AI/Wan2.2-T2V-A14B-Diffusers", &staging);
    let target = dir.path().join("t2v");
    let runner_dir = repo_root().join("runners/wan");
    let python = wan.python.as_os_str();
    let common = |args: &[&std::ffi::OsStr]| {
        let mut all: Vec<&std::ffi::OsStr> = args.to_vec();
        all.extend([
            "--python".as_ref(),
            python,
            "--wan-runner-dir".as_ref(),
            runner_dir.as_os_str(),
        ]);
        pipelet(
            &all,
            &[("HF_HUB_CACHE", &cache), ("HF_HUB_OFFLINE", Path::new("1"))],
        )
    };
    let pull = |target: &Path| {
        common(&[
            "models".as_ref(),
            "pull".as_ref(),
            "t2v".as_ref(),
            "--dir".as_ref(),
            target.as_os_str(),
        ])
    };
    let check = |target: &Path| common(&["models".as_ref(), "check".as_ref(), target.as_os_str()]);

    let (ok, stdout, stderr) = pull(&target);
    assert!(ok, "pull: {stdout}\n{stderr}");
    assert!(stdout.contains("OK (t2v)"), "{stdout}");
    assert!(target.join("transformer_2/config.json").is_file());
    assert!(
        !target.join("README.md").exists(),
        "only what a worker needs"
    );
    let (ok, stdout, _) = check(&target);
    assert!(ok && stdout.contains("OK (t2v)"), "{stdout}");

    // A missing expert: check says so and fails; pulling again restores it.
    std::fs::remove_file(target.join("transformer_2/diffusion_pytorch_model.safetensors"))
        .expect("remove");
    let (ok, stdout, stderr) = check(&target);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("transformer_2/ has no diffusion_pytorch_model.safetensors"),
        "{stdout}"
    );
    assert!(stderr.contains("pipelet models check failed"), "{stderr}");
    let (ok, stdout, stderr) = pull(&target);
    assert!(ok, "resumed pull: {stdout}\n{stderr}");
    assert!(check(&target).0);
}

#[test]
#[ignore = "needs the wan runner's Python environment: scripts/wan-test.sh"]
fn the_worker_refuses_to_start_when_the_memory_plan_does_not_fit() {
    let Some(wan) = wan_env() else { return };
    let runner_dir = repo_root().join("runners/wan");
    let t2v = wan.models.join("t2v");
    let mut worker = crate::pipelet()
        .command()
        .args([
            "worker",
            "--server",
            "http://127.0.0.1:9",
            "--key",
            "plt_unused",
        ])
        .args([
            "--runner",
            "wan",
            "--wan-device",
            "cpu",
            "--wan-gpu-memory",
            "0.5",
        ])
        .arg("--python")
        .arg(&wan.python)
        .arg("--wan-runner-dir")
        .arg(&runner_dir)
        .arg("--wan-t2v")
        .arg(&t2v)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn pipelet worker");
    // It must exit by itself (a worker that started would poll the server forever).
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(status) = worker.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            kill9(&mut worker);
            panic!("the worker started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut worker.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert!(!status.success());
    assert!(
        stderr.contains("cannot start the wan runner")
            && stderr.contains("refusing to start: --wan-offload none needs ~")
            && stderr.contains("--wan-gpu-memory 0.5 has 0.5 GiB free")
            && stderr.contains("--wan-skip-memory-check"),
        "{stderr}"
    );
}
