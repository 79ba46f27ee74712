//! The store lifecycle: the guard (is the disk store safe to put over /nix,
//! healed from the VHDX when it lacks the booted system), the stamp that
//! lets the bind proceed, the marker after it, and `sync-boot`, which keeps
//! the VHDX's boot generation in step with what is deployed on the disk.

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
pub mod copy;
pub mod dedupe;
pub mod guard;
pub mod migrate;
pub mod nixcli;
pub mod nixdb;
pub mod sync;

pub fn stamp_path() -> PathBuf {
    state::run_dir().join("bind-ok")
}

pub fn marker_path(cfg: &Config) -> PathBuf {
    Path::new(&cfg.bind_target).join(".mounted")
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
    let state = out.stdout_text().trim().to_string();
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
            t.major == s.major && t.minor == s.minor && t.root == s.root.join(sub)
        }
        _ => false,
    };
    BindState {
        is_bind,
        mounted: at_target,
    }
}

/// Whether `bindTarget/store` is mounted read-only (as NixOS-WSL's shim
/// mounts the VHDX's /nix/store; the /nix bind hides that mount).
pub fn store_is_read_only(cfg: &Config, mounts: &[MountEntry]) -> bool {
    let store = format!("{}/store", cfg.bind_target.trim_end_matches('/'));
    mountinfo::top_at(mounts, &store).is_some_and(|m| m.has_option("ro"))
}

/// Bind `bindTarget/store` onto itself read-only, as the shim does: under
/// the bind, any root process could otherwise write into the store.
/// nix-daemon remounts it writable in a namespace of its own, as on every
/// NixOS with a read-only store.
fn ensure_store_read_only(cfg: &Config, mounts: &[MountEntry]) -> Result<()> {
    if store_is_read_only(cfg, mounts) {
        log::info!("{}/store is already read-only", cfg.bind_target);
        return Ok(());
    }
    let store = PathBuf::from(format!("{}/store", cfg.bind_target.trim_end_matches('/')));
    let meta = fs::symlink_metadata(&store)
        .with_context(|| format!("{} (the store under the bind)", store.display()))?;
    if !meta.is_dir() {
        return Err(fail(
            Exit::Mount,
            format!(
                "{} is not a directory; the bind is not a Nix store",
                store.display()
            ),
        ));
    }
    use nix::mount::{mount, MsFlags};
    mount(
        Some(&store),
        &store,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("binding {} onto itself", store.display()))?;
    mount(
        None::<&str>,
        &store,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .with_context(|| format!("making {} read-only", store.display()))?;
    log::info!(
        "{} is now read-only (nix-daemon writes in its own namespace)",
        store.display()
    );
    Ok(())
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
        // Private before the read-only bind, so that the bind is private
        // too, and after it for one left shared (boot::propagation says why).
        crate::boot::propagation::isolate_bind(cfg)?;
        ensure_store_read_only(cfg, &mounts)?;
        crate::boot::propagation::isolate_bind(cfg)?;
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
            format!("it is {} (root {})", m.source_text(), m.root.display())
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
