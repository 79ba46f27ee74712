//! The record of the last `mount` run: /run/wsl-storage-mount/state.json.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const RUNTIME_DIR: &str = "/run/wsl-storage-mount";

/// Set once by main from `--run-dir` (env WSL_STORAGE_MOUNT_RUN_DIR), so the
/// tests and the demo can keep their state out of the host's /run.
static RUN_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Use `dir` as the run directory for the rest of the process (first call wins).
pub fn set_run_dir(dir: std::path::PathBuf) {
    let _ = RUN_DIR.set(dir);
}

/// The run directory: state, stamp, boot view. `RUNTIME_DIR` unless
/// `--run-dir` said otherwise; the NixOS module's units rely on the default.
pub fn run_dir() -> std::path::PathBuf {
    RUN_DIR
        .get()
        .cloned()
        .unwrap_or_else(|| std::path::PathBuf::from(RUNTIME_DIR))
}

pub fn state_path() -> std::path::PathBuf {
    run_dir().join("state.json")
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunState {
    /// "mounted", "degraded", "failed", or "interrupted" (a signal stopped the run).
    pub outcome: String,
    pub exit_code: i32,
    pub message: String,
    pub device: Option<String>,
    pub found_via: Option<String>,
    pub mount_point: String,
    /// Whether this run did the mount (false: it was already mounted).
    pub mounted_now: bool,
    pub store_verified: bool,
    /// The store was verified but the system was already up (a switch or a
    /// manual restart), so the bind was left for the next boot.
    #[serde(default)]
    pub bind_deferred: bool,
    /// Paths the heal copied from the VHDX into the disk store.
    #[serde(default)]
    pub healed_paths: usize,
    pub waited_ms: u64,
    pub duration_ms: u64,
    pub finished_at: String,
    pub windows_triggers: Vec<String>,
}

/// Write a file so that readers see the old or the new content, never half.
pub fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        // A new file of our own: whatever sits at the temporary name (a
        // link, a FIFO planted there) is removed, never followed or opened.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

pub fn write(state: &RunState) -> Result<()> {
    let path = state_path();
    write_atomic(&path, &serde_json::to_vec_pretty(state)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// The last run, if any was recorded since boot.
/// Read without following a link or blocking on a FIFO (status and doctor
/// must end on their own): anything but a regular file is no record.
pub fn read() -> Option<RunState> {
    use std::io::Read;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(state_path())
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        log::warn!(
            "{} is not a regular file; ignoring it (remove it: the next `mount` writes a new one)",
            state_path().display()
        );
        return None;
    }
    let mut text = String::new();
    f.take(1 << 20).read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}
