//! Mount propagation of the storage mount and of what is bound from it:
//! a peer distro's shutdown must cost this instance nothing.
//!
//! `/mnt/wsl` is one tmpfs mounted shared across every distro of the WSL VM
//! (WSL's init). A mount made under it joins a peer group that spans all
//! distros, and a bind of a shared mount joins its source's group. Left
//! alone, nix.mount's /nix (a bind of mountPoint/nixStoreSubdir, made by
//! mount(8)) is a peer of every distro's mountPoint, and `mark`'s read-only
//! /nix/store bind on top of it propagates to mountPoint/<subdir>/store in
//! every distro (writable there). When a peer distro shuts down, its systemd
//! unmounts /mnt/wsl/* (microsoft/WSL#41084, until WSL's wsl-mnt-guard);
//! the unmount of that copy comes back through the same peer group and
//! removes our read-only bind: the store turns writable under the running
//! system. So:
//!
//! - `mount` makes this distro's copy of the storage mount a slave: it still
//!   receives what other distros mount (the mount is theirs too), but
//!   nothing this instance mounts under it or binds from it reaches them, so
//!   their unmounts find nothing of ours to take. nix.mount's bind, made from
//!   a slave, starts as a slave.
//! - `mark` makes bindTarget and its read-only store bind private: no event
//!   of the VM-wide group reaches them, neither an unmount nor a writable
//!   bind stacked over the store by another instance with the same subdir.
//!   /nix holds the filesystem by itself, so it outlives the storage mount.
//!
//! The storage mount itself can still be taken away: the unmount of
//! mountPoint propagates through /mnt/wsl, its parent, whose propagation is
//! WSL's to set, not ours (making it a slave would cut this distro off from
//! every other distro's /mnt/wsl). `status` says when that happened, and
//! `mount` (`systemctl restart wsl-storage-mount`) puts it back for every
//! distro, as the same device is mounted again through the shared parent.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};
use std::os::fd::AsRawFd;

use crate::config::Config;
use crate::mountinfo::{self, MountEntry};

/// Change the propagation of the mount whose root is `path` (reached
/// without following a symlink, as it was mounted).
fn set_propagation(path: &Path, flag: MsFlags) -> Result<()> {
    let dir = crate::boot::mount::open_dir_no_symlinks(path, false)?;
    // The walk crossed into the top mount at `path`: its fd names that
    // mount's root, so no path is resolved again for the change.
    let fd_path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    mount(
        None::<&str>,
        Path::new(&fd_path),
        None::<&str>,
        flag,
        None::<&str>,
    )
    .with_context(|| format!("changing the mount propagation of {}", path.display()))
}

fn top<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mountinfo::top_at(mounts, path)
}

/// After `mount`: this distro's copy of the storage mount stops sending
/// mount events to the VM-wide peer group (see the module comment).
pub fn storage_as_slave(cfg: &Config) -> Result<()> {
    let mp = Path::new(&cfg.mount_point);
    let mounts = mountinfo::read().context("reading /proc/self/mountinfo")?;
    let Some(m) = top(&mounts, mp) else {
        return Ok(());
    };
    let Some(group) = m.peer_group() else {
        log::debug!("{} is {} already", cfg.mount_point, m.propagation());
        return Ok(());
    };
    set_propagation(mp, MsFlags::MS_SLAVE)?;
    // With no other distro's copy in the group, the kernel makes it
    // private instead: say what it is now.
    let now = mountinfo::read()
        .ok()
        .and_then(|m| top(&m, mp).map(|t| t.propagation()))
        .unwrap_or_else(|| "?".into());
    log::info!(
        "{}: {now} now (was shared:{group}): it receives other distros' mounts and sends none of ours, so that a peer distro's unmount of /mnt/wsl/* cannot reach what is bound from it",
        cfg.mount_point
    );
    Ok(())
}

/// Make the top mount at `path` private, when there is one and it is not.
/// Answers whether it changed anything.
pub fn make_private(path: &Path) -> Result<bool> {
    let mounts = mountinfo::read().context("reading /proc/self/mountinfo")?;
    let Some(m) = top(&mounts, path) else {
        return Ok(false);
    };
    if m.peer_group().is_none() && m.master().is_none() {
        return Ok(false);
    }
    let was = m.propagation();
    set_propagation(path, MsFlags::MS_PRIVATE)?;
    log::info!(
        "{}: private now (was {was}): nothing another distro does to its /mnt/wsl reaches it",
        path.display()
    );
    Ok(true)
}

/// The store bind under bindTarget.
pub fn store_path(cfg: &Config) -> std::path::PathBuf {
    Path::new(&format!("{}/store", cfg.bind_target.trim_end_matches('/'))).to_path_buf()
}

/// `mark` (and `mount` when /nix already is the bind): bindTarget and its
/// read-only store bind private. Call before binding the store read-only
/// (a bind under a private mount is private) and after it (a read-only
/// bind left shared by an older helper).
pub fn isolate_bind(cfg: &Config) -> Result<()> {
    make_private(Path::new(&cfg.bind_target))?;
    make_private(&store_path(cfg))?;
    Ok(())
}

/// A mount that takes part in the VM-wide peer group of the storage mount
/// (shared, or a slave of it) where the helper wants it private: one line
/// for `status`, or None.
pub fn exposed(what: &str, m: &MountEntry) -> Option<String> {
    if m.peer_group().is_none() && m.master().is_none() {
        return None;
    }
    Some(format!(
        "{what} {} is {}, not private: a peer distro's shutdown (its unmount of /mnt/wsl/*) can take it away; `sudo wsl-storage-mount mark` makes it private",
        m.mount_point.display(),
        m.propagation()
    ))
}

/// Whether bindTarget still is the bind of nixStoreSubdir on the device
/// `rdev` while nothing is mounted at mountPoint: the storage mount was
/// taken away under it (it holds the filesystem by itself).
pub fn bind_outlived_storage(cfg: &Config, mounts: &[MountEntry], rdev: u64) -> bool {
    let Some(sub) = &cfg.nix_store_subdir else {
        return false;
    };
    cfg.bind_mount_nix_store
        && top(mounts, Path::new(&cfg.mount_point)).is_none()
        && top(mounts, Path::new(&cfg.bind_target))
            .is_some_and(|t| t.is_device(rdev) && t.root == Path::new("/").join(sub))
}
