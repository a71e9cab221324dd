//! A full disk: with the data dir on a small tmpfs filled to the last byte, creates get
//! 507 with a `detail` that says why, while status, results and cancels keep working;
//! once space returns, creates succeed again and the database is intact.
//!
//! Mounting needs root (CI runs as root); elsewhere the test prints why it is skipped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Instant;

use crate::common::AppExt as _;
use crate::common::{I2V, T2V, expect_error, images, spawn_app_with, str_field};
use pipelet_server::disk::PROBE_EVERY;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::ConnectOptions;

/// A tmpfs mounted for the test's lifetime; unmounted (lazily, in case something still
/// holds a file) when dropped.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `40m`), or says why it cannot.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {path:?}: {e}"))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}; it needs root): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { path, _dir: dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes zeros to `path` until the file system refuses another byte.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 1] {
        let zeros = vec![0u8; chunk];
        loop {
            match file.write(&zeros) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {path:?}: {e}"),
            }
        }
    }
    written
}

#[tokio::test]
async fn a_full_disk_refuses_creates_with_507_and_the_rest_keeps_working() {
    let tmpfs = match Tmpfs::mount("40m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_refuses_creates_with_507: {why}");
            return;
        }
    };
    let data_dir = tmpfs.path.join("data");
    let app = spawn_app_with(|c| {
        c.workers = 0;
        c.data_dir = data_dir.clone();
    })
    .await;
    let key = app.client_key().await;
    let earlier = app.create_t2v(&key, T2V, 0).await;
    let earlier_i2v = app.create_i2v(&key, I2V, 0).await;

    let filler = tmpfs.path.join("filler");
    assert!(fill(&filler) > 0);

    let i2v = json!({"prompt": "a slow zoom", "data_uri": images::b64(&images::png(32, 24)),
                     "duration": 1});
    let t2v = json!({"prompt": "a paper boat", "width": 512, "height": 512, "duration": 1});
    for (model, body) in [(I2V, &i2v), (T2V, &t2v)] {
        let refused = expect_error(
            app.post_create(&key, model, body).await,
            StatusCode::INSUFFICIENT_STORAGE,
        )
        .await;
        let detail = str_field(&refused, "detail");
        assert!(detail.contains("disk is full"), "{model}: {detail}");
    }

    // Reads and cancels still work.
    let status = app.status(str_field(&earlier, "status_url"), &key).await;
    assert_eq!(status["status"], "IN_QUEUE", "{status}");
    let response = app.get(str_field(&earlier, "response_url"), &key).await;
    assert_eq!(response.status(), StatusCode::CONFLICT, "not ready yet");
    let cancelled = app.put(str_field(&earlier_i2v, "cancel_url"), &key).await;
    assert_eq!(cancelled.status(), StatusCode::NO_CONTENT);
    let status = app
        .status(str_field(&earlier_i2v, "status_url"), &key)
        .await;
    assert_eq!(status["status"], "CANCELLED", "{status}");

    // Space returns: creates succeed again (within the server's probe interval).
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + PROBE_EVERY * 10;
    let again = loop {
        let response = app.post_create(&key, I2V, &i2v).await;
        if response.status() == StatusCode::OK {
            break response.json::<serde_json::Value>().await.unwrap();
        }
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(
            Instant::now() < deadline,
            "creates still refused after space returned"
        );
        tokio::time::sleep(PROBE_EVERY / 10).await;
    };
    let status = app.status(str_field(&again, "status_url"), &key).await;
    assert_eq!(status["status"], "IN_QUEUE", "{status}");
    app.create_t2v(&key, T2V, 0).await;

    // Nothing was corrupted.
    let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str("sqlite://")
        .unwrap()
        .filename(data_dir.join("pipelet.db"))
        .connect()
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        jobs, 4,
        "the two before, the two after, none of the refused"
    );
    drop(conn);
    drop(app);
}
