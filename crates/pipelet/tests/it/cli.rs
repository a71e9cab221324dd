//! The client verbs against a real server: `submit` writes the MP4, `status`, `result`
//! and `cancel` find the request by id, and a refused request prints the server's
//! `detail` and exits non-zero.

use std::process::Output;

use pipelet_testkit::temp_data_dir;

fn pipelet(server: &pipelet_testkit::Server, args: &[&str]) -> Output {
    crate::pipelet()
        .command()
        .args(args)
        .env("PIPELET_SERVER", &server.base)
        .env("PIPELET_KEY", &server.key)
        .output()
        .expect("run pipelet")
}

/// `pipelet submit` of a one-second 512x512 text-to-video `prompt`, then `extra`.
fn submit(server: &pipelet_testkit::Server, prompt: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "submit",
        "wan22-fast-t2v",
        "--prompt",
        prompt,
        "--size",
        "512x512",
        "--duration",
        "1",
    ];
    args.extend_from_slice(extra);
    pipelet(server, &args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn submit_status_result_and_cancel() {
    let (dir, data) = temp_data_dir();
    let server = crate::pipelet().start_server(&data, &["--workers", "1"]);
    let out = dir.path().join("fox.mp4");
    let o = submit(&server, "a fox", &["-o"]);
    assert!(!o.status.success(), "-o needs a value");
    let o = submit(&server, "a fox", &["-o", out.to_str().expect("path")]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mp4 = std::fs::read(&out).expect("mp4 written");
    assert_eq!(&mp4[4..8], b"ftyp");

    let o = submit(&server, "later", &["--no-wait"]);
    assert!(o.status.success());
    let id = stdout(&o);
    let o = pipelet(&server, &["status", &id, "--json"]);
    assert!(o.status.success());
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status JSON");
    assert_eq!(status["request_id"], id.as_str());
    let second = dir.path().join("later.mp4");
    let o = pipelet(
        &server,
        &["result", &id, "-o", second.to_str().expect("path")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(second.exists());
    // Finished: cancel is refused with the server's reason.
    let o = pipelet(&server, &["cancel", &id, "--model", "wan22-fast-t2v"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("409"));
}

#[test]
fn a_refused_request_prints_the_detail() {
    let (_dir, data) = temp_data_dir();
    let server = crate::pipelet().start_server(&data, &["--workers", "0"]);
    let o = pipelet(
        &server,
        &[
            "submit",
            "wan22-fast-t2v",
            "--prompt",
            "x",
            "--size",
            "100x100",
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("422") && err.contains("512x512"), "{err}");
    let o = pipelet(&server, &["status", "00000000-0000-0000-0000-000000000000"]);
    assert!(!o.status.success());
}
