//! `pipelet usage` against a real `pipelet serve`: after a request completes, the key's
//! table shows a row for today and the model with a totals line; `--json` prints the
//! server's report; an admin sees every key (`--all`, `--key-name`); a client key asking
//! for others' usage, or a bad date, gets the server's detail and a non-zero exit.

use std::process::Output;

use pipelet_api::clock::now_ms;
use pipelet_api::wire::usage::utc_day;
use pipelet_testkit::{Server, temp_data_dir};
use serde_json::Value;
use tokio::process::Command;

const T2V: &str = "wan22-fast-t2v";

async fn run(server: &Server, key: &str, args: &[&str]) -> Output {
    Command::new(&crate::pipelet().bin)
        .env("PIPELET_SERVER", &server.base)
        .env("PIPELET_KEY", key)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run pipelet")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[tokio::test]
async fn usage_shows_a_table_the_json_and_other_keys_for_admins() {
    let (dir, data) = temp_data_dir();
    let server = crate::pipelet().start_server(&data, &[]);
    let alice = crate::pipelet().create_key(&data, "alice", "client");
    let out = dir.path().join("fox.mp4");
    let out = out.to_str().expect("a UTF-8 path");
    let args = [
        "submit",
        T2V,
        "--prompt",
        "a fox",
        "--size",
        "512x512",
        "--duration",
        "1",
        "-o",
        out,
    ];
    let o = run(&server, &alice, &args).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let today = utc_day(now_ms());

    let o = run(&server, &alice, &["usage"]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(
        words(lines[0]),
        [
            "DAY",
            "KEY",
            "MODEL",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "VIDEO_S",
            "RUN_S"
        ]
    );
    let row = words(lines[1]);
    assert_eq!(
        row[..6],
        [today.as_str(), "alice", T2V, "1", "0", "0"],
        "{table}"
    );
    let total = words(lines[2]);
    assert!(total[0].ends_with(&format!("..{today}")), "{table}");
    assert_eq!(total[1..5], ["total", "1", "0", "0"], "{table}");

    let o = run(&server, &alice, &["usage", "--json", "--from", &today]).await;
    assert!(o.status.success(), "{}", text(&o.stderr));
    let report: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(report["from"], today.as_str());
    assert_eq!(report["totals"]["completed"], 1, "{report}");
    let video = report["rows"][0]["video_seconds"]
        .as_f64()
        .unwrap_or_default();
    assert!(video > 0.9 && video < 1.2, "{report}");

    // The admin's own key made nothing; --all and --key-name show alice's.
    let o = run(&server, &server.key, &["usage", "--json"]).await;
    let own: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(own["rows"], serde_json::json!([]), "{own}");
    for extra in [["--all", "--json"], ["--key-name", "alice"]] {
        let mut args = vec!["usage"];
        args.extend(extra);
        let o = run(&server, &server.key, &args).await;
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(text(&o.stdout).contains("alice"), "{}", text(&o.stdout));
    }

    // Refusals print the server's detail and exit non-zero.
    let o = run(&server, &alice, &["usage", "--all"]).await;
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("403"), "{}", text(&o.stderr));
    let o = run(&server, &alice, &["usage", "--from", "2026-02-30"]).await;
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("422") && err.contains("YYYY-MM-DD"), "{err}");
}
