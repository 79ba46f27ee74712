//! The store guard: is `mountPoint/nixStoreSubdir` safe to put over /nix?
//! And the marker step that runs after the bind.
//!
//! After the bind every new exec resolves in the new /nix, so the target
//! must already hold the whole closure of the booted system (and a Nix
//! database). The helper checks that before it writes the stamp that lets
//! the bind mount unit proceed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::{Config, OnMissing};
use crate::exit::{fail, Exit};
use crate::mountinfo::{self, MountEntry};
use crate::state;

pub mod bootview;

pub const BOOTED_SYSTEM: &str = "/run/booted-system";
const STORE_PREFIX: &str = "/nix/store/";
/// nix-store on a cold disk can be slow, but never this slow.
const NIX_STORE_TIMEOUT: Duration = Duration::from_secs(120);
/// How many missing paths the refusal names.
const SHOW_MISSING: usize = 5;

pub fn stamp_path() -> PathBuf {
    state::run_dir().join("bind-ok")
}

pub fn marker_path(cfg: &Config) -> PathBuf {
    Path::new(&cfg.bind_target).join(".mounted")
}

/// The closure of the booted system, as `nix-store --query --requisites`
/// prints it.
fn booted_closure(cfg: &Config) -> Result<Vec<String>> {
    let mut cmd = Command::new(&cfg.nix_store_command);
    cmd.args(["--query", "--requisites", BOOTED_SYSTEM]);
    let out = crate::proc::run(cmd, NIX_STORE_TIMEOUT)
        .map_err(|e| {
            fail(
                Exit::UnsafeStore,
                format!(
                    "cannot run nixStoreCommand \"{}\" to list the closure of {BOOTED_SYSTEM}: {e}; set nixStoreCommand to the nix-store binary",
                    cfg.nix_store_command
                ),
            )
        })?;
    if !out.success() {
        return Err(fail(
            Exit::UnsafeStore,
            format!(
                "`{} --query --requisites {BOOTED_SYSTEM}` failed ({}): {}; without the closure the store cannot be verified, so /nix stays as it is",
                cfg.nix_store_command,
                out.describe(NIX_STORE_TIMEOUT),
                out.stderr_text()
            ),
        ));
    }
    let paths: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if paths.is_empty() {
        return Err(fail(
            Exit::UnsafeStore,
            format!("nixStoreCommand printed an empty closure for {BOOTED_SYSTEM}; refusing to trust it"),
        ));
    }
    Ok(paths)
}

/// Verify the store and return the size of the closure that was found.
pub fn verify(cfg: &Config) -> Result<usize> {
    let Some(dir) = cfg.store_dir() else {
        return Err(fail(Exit::Config, "nixStoreSubdir is not set"));
    };
    let dir = Path::new(&dir);
    let migrate = format!(
        "copy this instance's store there first: `systemctl stop nix-daemon.socket nix-daemon.service && rsync -aHAX --numeric-ids /nix/ {}/`, then restart wsl-storage-mount (see README, \"Migrating the store\")",
        dir.display()
    );
    for sub in ["store", "var/nix/db"] {
        let p = dir.join(sub);
        let is_real_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        if !is_real_dir {
            return Err(fail(
                Exit::UnsafeStore,
                format!(
                    "{} is not a directory, so {} is not a Nix store; refusing to bind it over {}. Next: {migrate}",
                    p.display(),
                    dir.display(),
                    cfg.bind_target
                ),
            ));
        }
    }
    let closure = booted_closure(cfg)?;
    let mut missing = Vec::new();
    for path in &closure {
        let Some(name) = path
            .strip_prefix(STORE_PREFIX)
            .filter(|n| !n.contains('/') && !n.is_empty())
        else {
            return Err(fail(
                Exit::UnsafeStore,
                format!("nixStoreCommand printed \"{path}\", which is not a /nix/store path; refusing to trust its closure"),
            ));
        };
        if fs::symlink_metadata(dir.join("store").join(name)).is_err() {
            missing.push(path.as_str());
        }
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(SHOW_MISSING).copied().collect();
        return Err(fail(
            Exit::UnsafeStore,
            format!(
                "{} of {} paths in the closure of {BOOTED_SYSTEM} are missing from {}/store (first: {}); binding it over {} would break the running system. Next: {migrate}",
                missing.len(),
                closure.len(),
                dir.display(),
                shown.join(", "),
                cfg.bind_target
            ),
        ));
    }
    log::info!(
        "store {} holds all {} paths of the closure of {BOOTED_SYSTEM}",
        dir.display(),
        closure.len()
    );
    Ok(closure.len())
}

/// Is the system still booting? The /nix swap belongs to boot: a
/// `nixos-rebuild switch` that first enables the module starts the new
/// units too, and binding /nix under a running system would swap the store
/// under every running program. Without systemd as PID 1 (the helper used by
/// hand) there is no boot to wait for. Answers Err when systemd runs but its
/// state cannot be read.
pub fn system_is_booting() -> Result<bool, String> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Ok(true);
    }
    let mut cmd = Command::new("systemctl");
    cmd.arg("is-system-running");
    let out = crate::proc::run(cmd, Duration::from_secs(10))
        .map_err(|e| format!("cannot run `systemctl is-system-running`: {e}"))?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match state.as_str() {
        "initializing" | "starting" => Ok(true),
        "running" | "degraded" | "maintenance" | "stopping" => Ok(false),
        other => Err(format!(
            "`systemctl is-system-running` answered \"{other}\""
        )),
    }
}

pub fn write_stamp(cfg: &Config, closure: usize) -> Result<()> {
    let path = stamp_path();
    let body = serde_json::json!({
        "storeDir": cfg.store_dir(),
        "bindTarget": cfg.bind_target,
        "closurePaths": closure,
    });
    state::write_atomic(&path, &serde_json::to_vec_pretty(&body)?)
        .with_context(|| format!("writing stamp {}", path.display()))?;
    log::info!(
        "wrote {}: the {} bind may proceed",
        path.display(),
        cfg.bind_target
    );
    Ok(())
}

pub fn remove_stamp() -> Result<()> {
    let path = stamp_path();
    match fs::remove_file(&path) {
        Ok(()) => {
            log::debug!("removed old stamp {}", path.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing old stamp {}", path.display())),
    }
}

/// Is `bindTarget` the bind of `mountPoint/nixStoreSubdir`?
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BindState {
    pub is_bind: bool,
    /// What is mounted at bindTarget (None: nothing of its own).
    pub mounted: Option<MountEntry>,
}

pub fn bind_state(cfg: &Config, mounts: &[MountEntry]) -> BindState {
    let at_target = mountinfo::top_at(mounts, &cfg.bind_target).cloned();
    let storage = mountinfo::top_at(mounts, &cfg.mount_point);
    let is_bind = match (&at_target, storage, &cfg.nix_store_subdir) {
        (Some(t), Some(s), Some(sub)) => {
            let want_root = format!("{}/{}", s.root.trim_end_matches('/'), sub);
            t.major == s.major && t.minor == s.minor && t.root == want_root
        }
        _ => false,
    };
    BindState {
        is_bind,
        mounted: at_target,
    }
}

/// `mark`: after the bind mount unit, write the marker only when the bind
/// is real.
pub fn mark(cfg: &Config) -> Result<Exit> {
    let marker = marker_path(cfg);
    if !cfg.bind_mount_nix_store {
        log::info!("bindMountNixStore is off; nothing to mark");
        return Ok(Exit::Success);
    }
    let mounts = mountinfo::read().context("reading /proc/self/mountinfo")?;
    let bind = bind_state(cfg, &mounts);
    if bind.is_bind {
        let body = format!(
            "{} is the bind of {}\n",
            cfg.bind_target,
            cfg.store_dir().unwrap_or_default()
        );
        state::write_atomic(&marker, body.as_bytes())
            .with_context(|| format!("writing marker {}", marker.display()))?;
        log::info!(
            "{} is the bind of {}; wrote {}",
            cfg.bind_target,
            cfg.store_dir().unwrap_or_default(),
            marker.display()
        );
        return Ok(Exit::Success);
    }
    // A marker on a store that is not the bind would lie.
    match fs::remove_file(&marker) {
        Ok(()) => log::warn!(
            "removed stale marker {} ({} is not the bind)",
            marker.display(),
            cfg.bind_target
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("cannot remove stale marker {}: {e}", marker.display()),
    }
    let what = bind
        .mounted
        .as_ref()
        .map_or("nothing is mounted there".to_string(), |m| {
            format!("it is {} (root {})", m.source, m.root)
        });
    if state::read().is_some_and(|r| r.bind_deferred) {
        log::warn!(
            "{} is not the bind of {} yet ({what}): the store was verified after boot, so the bind waits for the next start of this instance (wsl --terminate <distro>, or reboot)",
            cfg.bind_target,
            cfg.store_dir().unwrap_or_default()
        );
        return Ok(Exit::Success);
    }
    match cfg.on_missing {
        OnMissing::Fallback => {
            log::warn!(
                "DEGRADED: {} is not the bind of {} ({what}); going on with the store that is there (onMissing = \"fallback\"). Check `wsl-storage-mount status` and `systemctl status wsl-storage-mount`",
                cfg.bind_target,
                cfg.store_dir().unwrap_or_default()
            );
            Ok(Exit::Success)
        }
        OnMissing::Block => Err(fail(
            Exit::Mount,
            format!(
                "{} is not the bind of {} ({what}); nix-daemon stays stopped (onMissing = \"block\"). See `systemctl status wsl-storage-mount` for why the bind did not happen",
                cfg.bind_target,
                cfg.store_dir().unwrap_or_default()
            ),
        )),
    }
}
