//! The `wan` runner's supervision of its Python process, against a stand-in runner
//! (`tests/wan_fake`, standard library only) that misbehaves on request: crashes, error
//! kinds, protocol violations, cancellation and restarts.
//!
//! Needs `python3` on PATH (any version ≥ 3.8); without it the tests fail unless
//! `PIPELET_SKIP_WAN=1`. The real runner is tested end to end by `scripts/wan-test.sh`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipelet_api::{JobSpec, Pipeline};
use pipelet_runner::wan::{PipelineSource, WanConfig, WanRunner};
use pipelet_runner::{Progress, ProgressFn, RenderJob, Runner, RunnerError};
use tokio_util::sync::CancellationToken;

fn python_available() -> bool {
    let found = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert_eq!(
            std::env::var("PIPELET_SKIP_WAN").as_deref(),
            Ok("1"),
            "python3 is not on PATH: install it, or set PIPELET_SKIP_WAN=1 to skip the wan runner tests"
        );
    }
    found
}

fn fake_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wan_fake")
}

fn config() -> WanConfig {
    let mut config = WanConfig::new("python3", fake_dir());
    config.t2v = Some(PipelineSource {
        model: "/models/t2v".into(),
        loras: Vec::new(),
    });
    config.i2v = Some(PipelineSource {
        model: "missing".into(),
        loras: Vec::new(),
    });
    config.ready_timeout = Duration::from_secs(60);
    config
}

fn job(prompt: &str) -> RenderJob {
    RenderJob {
        job_id: format!("job-{prompt}"),
        pipeline: Pipeline::T2v,
        spec: JobSpec {
            prompt: prompt.into(),
            negative_prompt: None,
            width: 512,
            height: 512,
            num_frames: 17,
            fps: 16,
            steps: 4,
            ..JobSpec::sample("")
        },
        seed: 1,
        image: None,
    }
}

type Seen = Arc<Mutex<Vec<Progress>>>;

fn recorder() -> (ProgressFn, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    (
        Arc::new(move |p| s.lock().unwrap_or_else(|e| e.into_inner()).push(p)),
        seen,
    )
}

async fn run(
    runner: &WanRunner,
    job: &RenderJob,
    dir: &Path,
) -> (Result<pipelet_runner::RenderOutput, RunnerError>, Seen) {
    let (progress, seen) = recorder();
    let out = dir.join(format!("{}.mp4", job.job_id));
    let result = runner
        .run(job, &out, progress, CancellationToken::new())
        .await;
    if result.is_err() {
        assert!(!out.exists(), "a failed job leaves no file");
    }
    (result, seen)
}

#[tokio::test]
async fn a_job_reports_progress_and_its_output() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = WanRunner::new(config());
    assert_eq!(runner.pipelines(), vec![Pipeline::T2v, Pipeline::I2v]);
    let about = runner.start().await.expect("start");
    assert!(about.contains("cpu"), "{about}");
    let (result, seen) = run(&runner, &job("ok"), dir.path()).await;
    let output = result.expect("rendered");
    assert_eq!(
        (output.width, output.height, output.frames, output.backend),
        (512, 512, 17, "wan")
    );
    assert_eq!(output.bytes, 17);
    let seen = seen.lock().expect("progress").clone();
    assert_eq!(seen.first(), Some(&Progress { done: 0, total: 6 }));
    assert_eq!(seen.last(), Some(&Progress { done: 6, total: 6 }));
    // An i2v job whose weights cannot load fails for good, and the runner carries on.
    let mut i2v = job("ok");
    i2v.pipeline = Pipeline::I2v;
    i2v.image = Some(Arc::new(vec![1, 2, 3]));
    let (result, _) = run(&runner, &i2v, dir.path()).await;
    assert!(
        matches!(&result, Err(RunnerError::Permanent(f))
            if f.reason == "the image-to-video model could not be loaded"
            && f.detail.contains("cannot load the image-to-video model missing: no such model")),
        "{result:?}"
    );
    let before = runner.pid().await;
    assert!(run(&runner, &job("ok"), dir.path()).await.0.is_ok());
    assert_eq!(runner.pid().await, before, "same process throughout");
    runner.shutdown().await;
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".pipelet-wan-input"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "input images are removed: {leftovers:?}"
    );
}

#[tokio::test]
async fn a_crash_fails_the_job_transiently_with_the_last_words_and_the_next_job_restarts() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = WanRunner::new(config());
    let (result, _) = run(&runner, &job("crash"), dir.path()).await;
    let Err(RunnerError::Transient(failure)) = result else {
        panic!("expected a transient error, got {result:?}");
    };
    // The client reads what happened; the process's last words are the detail.
    assert_eq!(failure.reason, "the model runner stopped unexpectedly");
    let message = failure.detail;
    assert!(message.starts_with("wan runner crashed"), "{message}");
    assert!(message.contains("SIGKILL"), "{message}");
    assert!(message.contains("fake-wan: about to crash"), "{message}");
    assert_eq!(runner.pid().await, None, "the dead process is dropped");
    let (result, _) = run(&runner, &job("ok"), dir.path()).await;
    assert!(result.is_ok(), "restarted and reloaded: {result:?}");
}

#[tokio::test]
async fn error_kinds_and_protocol_violations() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = WanRunner::new(config());
    let (result, _) = run(&runner, &job("oom"), dir.path()).await;
    assert!(
        matches!(&result, Err(RunnerError::Permanent(f))
            if f.reason == "out of GPU memory at 512x512, 17 frames"
            && f.detail == "out of GPU memory at 512x512, 17 frames: oom happened"),
        "{result:?}"
    );
    let (result, _) = run(&runner, &job("internal"), dir.path()).await;
    assert!(
        matches!(&result, Err(RunnerError::Transient(f))
            if f.reason == "the model runner failed" && f.detail.contains("internal happened")),
        "{result:?}"
    );
    let pid = runner.pid().await;
    assert!(pid.is_some());
    let (result, _) = run(&runner, &job("fatal"), dir.path()).await;
    assert!(
        matches!(result, Err(RunnerError::Transient(_))),
        "{result:?}"
    );
    assert_eq!(
        runner.pid().await,
        None,
        "a fatal error replaces the process"
    );
    for prompt in ["garbage", "huge"] {
        let (result, _) = run(&runner, &job(prompt), dir.path()).await;
        assert!(
            matches!(&result, Err(RunnerError::Transient(f)) if f.detail.starts_with("wan runner")),
            "{prompt}: {result:?}"
        );
        assert_eq!(
            runner.pid().await,
            None,
            "{prompt}: the process is replaced"
        );
    }
    assert!(run(&runner, &job("ok"), dir.path()).await.0.is_ok());
}

#[tokio::test]
async fn cancel_stops_the_job_in_the_runner() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = WanRunner::new(config());
    let (progress, seen) = recorder();
    let cancel = CancellationToken::new();
    let out = dir.path().join("slow.mp4");
    let job = job("slow");
    let run = runner.run(&job, &out, progress, cancel.clone());
    tokio::pin!(run);
    // Cancel once the runner is really working on it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        tokio::select! {
            r = &mut run => panic!("finished before the cancel: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        if seen.lock().expect("seen").iter().any(|p| p.done >= 3) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no progress");
    }
    cancel.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("stops soon after the cancel");
    assert!(matches!(result, Err(RunnerError::Cancelled)), "{result:?}");
    assert!(!out.exists());
    let pid = runner.pid().await;
    assert!(pid.is_some(), "a cancel keeps the process");
}

#[tokio::test]
async fn a_protocol_mismatch_or_missing_python_fails_start_clearly() {
    if !python_available() {
        return;
    }
    let mut bad = config();
    bad.python = PathBuf::from("/nonexistent/python3");
    let err = WanRunner::new(bad).start().await.expect_err("no python");
    assert!(err.to_string().contains("cannot start"), "{err}");
    let mut other = config();
    other.runner_dir = std::env::temp_dir();
    let err = WanRunner::new(other).start().await.expect_err("no package");
    assert!(
        err.to_string().contains("No module named pipelet_wan"),
        "{err}"
    );
    // A runner speaking another protocol version (set by a wrapper script).
    let wrapper = tempfile::tempdir().expect("tempdir");
    let script = wrapper.path().join("python-v2");
    std::fs::write(&script, "#!/bin/sh\nFAKE_PROTOCOL=2 exec python3 \"$@\"\n").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let mut v2 = config();
    v2.python = script;
    let err = WanRunner::new(v2).start().await.expect_err("protocol 2");
    assert!(err.to_string().contains("speaks protocol 2"), "{err}");
}

#[tokio::test]
async fn a_runner_abandoned_mid_job_is_replaced_before_the_next_job() {
    if !python_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let runner = WanRunner::new(config());
    let (progress, _) = recorder();
    let out = dir.path().join("abandoned.mp4");
    // The caller stops waiting (its future is dropped) while the runner still works.
    let abandoned = tokio::time::timeout(
        Duration::from_millis(1500),
        runner.run(&job("slow"), &out, progress, CancellationToken::new()),
    )
    .await;
    assert!(abandoned.is_err(), "still running when dropped");
    let old = runner.pid().await;
    assert!(old.is_some());
    let (result, _) = run(&runner, &job("ok"), dir.path()).await;
    assert!(result.is_ok(), "{result:?}");
    assert_ne!(runner.pid().await, old, "a fresh process took the job");
}
