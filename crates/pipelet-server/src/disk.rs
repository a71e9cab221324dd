//! A full data-dir disk. Creates are what fill the disk (input images, then videos),
//! and when it is full they get 507 Insufficient Storage, while everything else must go
//! on: status and result reads need no space, but a cancel, a heartbeat or a job's
//! completion is a small SQLite write that needs a few pages. So the server keeps a
//! reserve file ([`RESERVE_FILE`], [`RESERVE_BYTES`]) in the data dir. The first create
//! that meets a full disk (`ENOSPC`, `SQLITE_FULL`) deletes the reserve, which gives
//! those small writes room, and from then on creates are refused at once. Every
//! [`PROBE_EVERY`] a create tries to write the reserve back: once that succeeds there
//! is space again, and creates are accepted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pipelet_store::StoreError;

use crate::error::ApiError;

/// The reserve's name in the data dir.
pub const RESERVE_FILE: &str = "disk-reserve";
/// Room for cancels, heartbeats and completions while creates are refused.
pub const RESERVE_BYTES: usize = 8 << 20;
/// How often a refused create checks whether space returned.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Refuses creates (507) while the data dir's disk is full, keeping an 8 MiB reserve
/// file it gives up then, so cancels and running jobs can still write.
pub struct DiskGuard {
    reserve: PathBuf,
    full: AtomicBool,
    last_probe: Mutex<Option<Instant>>,
}

/// Writes the reserve (real blocks, not a sparse file) through a temporary name, so a
/// half-written one never counts.
fn write_reserve(path: &Path) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == RESERVE_BYTES as u64) {
        return Ok(());
    }
    let partial = path.with_extension("partial");
    let written = (|| {
        let mut file = std::fs::File::create(&partial)?;
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..RESERVE_BYTES / zeros.len() {
            file.write_all(&zeros)?;
        }
        file.sync_all()?;
        std::fs::rename(&partial, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

impl DiskGuard {
    /// Keeps a reserve in `data_dir`; without room for it the disk counts as full.
    pub fn new(data_dir: &Path) -> DiskGuard {
        let reserve = data_dir.join(RESERVE_FILE);
        let full = match write_reserve(&reserve) {
            Ok(()) => false,
            Err(e) => {
                tracing::warn!(error = %e, path = %reserve.display(), "cannot write the disk reserve; creates are refused until it can be");
                true
            }
        };
        DiskGuard {
            reserve,
            full: AtomicBool::new(full),
            last_probe: Mutex::new(None),
        }
    }

    /// `Err(507)` while the disk is full; at most every [`PROBE_EVERY`] it checks (by
    /// writing the reserve back) whether space returned.
    pub async fn admit_create(&self) -> Result<(), ApiError> {
        if !self.full.load(Ordering::Acquire) {
            return Ok(());
        }
        {
            let mut last = self.last_probe.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < PROBE_EVERY) {
                return Err(ApiError::disk_full_on_create());
            }
            *last = Some(Instant::now());
        }
        let path = self.reserve.clone();
        match tokio::task::spawn_blocking(move || write_reserve(&path)).await {
            Ok(Ok(())) => {
                tracing::info!("the data dir has space again; accepting creates");
                self.full.store(false, Ordering::Release);
                Ok(())
            }
            _ => Err(ApiError::disk_full_on_create()),
        }
    }

    /// What a failed create answers: on a full disk 507, and the reserve is given up so
    /// that cancels and workers' writes still fit.
    pub fn create_failed(&self, e: StoreError) -> ApiError {
        if !e.is_disk_full() {
            return e.into();
        }
        if !self.full.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %e, "the data dir's disk is full: refusing creates and releasing the reserve");
            if let Err(e) = std::fs::remove_file(&self.reserve)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, "cannot release the disk reserve");
            }
        }
        ApiError::disk_full_on_create()
    }
}
