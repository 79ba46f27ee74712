//! The per-instance directories under the mount point.
//!
//! Everything goes through a directory fd of the mount point and
//! `O_NOFOLLOW`: a symlink (or a file) planted where an instance dir should
//! be is refused and left alone, and chown/chmod act on the opened
//! directory itself, never on a path that could be swapped in between.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, Mode};
use nix::unistd::{fchown, Gid, Group, Uid, User};
use serde::Serialize;

use crate::config::{Config, InstanceDir, Principal};
use crate::exit::{fail, Exit};

/// Resolve a user to a uid (names through NSS, /etc/passwd on NixOS).
pub fn resolve_user(p: &Principal) -> Result<u32, String> {
    match p {
        Principal::Id(id) => Ok(*id),
        Principal::Name(name) => match User::from_name(name) {
            Ok(Some(u)) => Ok(u.uid.as_raw()),
            Ok(None) => Err(format!("user \"{name}\" does not exist on this system")),
            Err(e) => Err(format!("looking up user \"{name}\": {e}")),
        },
    }
}

pub fn resolve_group(p: &Principal) -> Result<u32, String> {
    match p {
        Principal::Id(id) => Ok(*id),
        Principal::Name(name) => match Group::from_name(name) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            Ok(None) => Err(format!("group \"{name}\" does not exist on this system")),
            Err(e) => Err(format!("looking up group \"{name}\": {e}")),
        },
    }
}

/// What an instance dir looks like now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirState {
    pub uid: u32,
    pub gid: u32,
    #[serde(serialize_with = "crate::boot::instances::ser_mode")]
    pub mode: u32,
}

pub fn ser_mode<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// Open `name` under `parent` as a directory without following a symlink.
fn open_dir_nofollow<Fd: AsFd>(parent: &Fd, name: &str) -> nix::Result<OwnedFd> {
    openat(
        parent.as_fd(),
        OsStr::new(name),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// O_DIRECTORY|O_NOFOLLOW reports a symlink as ENOTDIR (or ELOOP): look
/// at the entry itself to tell the user which it is.
fn is_symlink<Fd: AsFd>(parent: &Fd, name: &str) -> bool {
    fstatat(
        parent.as_fd(),
        OsStr::new(name),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

/// The mount point, reached without following a symlink (as it was mounted).
fn open_mount_point(cfg: &Config) -> Result<OwnedFd> {
    crate::boot::mount::open_dir_no_symlinks(std::path::Path::new(&cfg.mount_point), false)
}

/// Inspect an instance dir without changing it. `Ok(None)`: absent.
pub fn inspect(cfg: &Config, name: &str) -> Result<Option<DirState>, String> {
    let parent = open_mount_point(cfg).map_err(|e| format!("{e:#}"))?;
    match open_dir_nofollow(&parent, name) {
        Ok(fd) => {
            let st = fstat(fd.as_fd()).map_err(|e| e.to_string())?;
            Ok(Some(DirState {
                uid: st.st_uid,
                gid: st.st_gid,
                mode: st.st_mode & 0o7777,
            }))
        }
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP | Errno::ENOTDIR) if is_symlink(&parent, name) => {
            Err("is a symlink".into())
        }
        Err(Errno::ELOOP | Errno::ENOTDIR) => Err("is not a directory".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Create or fix every instance dir. All are tried; the first failure is
/// returned after the others were done.
pub fn prepare_all(cfg: &Config) -> Result<()> {
    let parent = open_mount_point(cfg)?;
    let mut failures = Vec::new();
    for (name, spec) in &cfg.instance_dirs {
        if let Err(e) = prepare(cfg, &parent, name, spec) {
            log::error!("{e:#}");
            failures.push(e);
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        n => {
            let first = failures.remove(0);
            Err(first.context(format!("{n} instance dirs could not be prepared")))
        }
    }
}

fn prepare(cfg: &Config, parent: &OwnedFd, name: &str, spec: &InstanceDir) -> Result<()> {
    let path = format!("{}/{}", cfg.mount_point, name);
    let key = format!("instanceDirs.{name}");
    let uid = resolve_user(&spec.owner).map_err(|why| {
        fail(
            Exit::Config,
            format!("{key}.owner: {why}; create it or use a numeric id"),
        )
    })?;
    let gid = resolve_group(&spec.group).map_err(|why| {
        fail(
            Exit::Config,
            format!("{key}.group: {why}; create it or use a numeric id"),
        )
    })?;

    match mkdirat(
        parent.as_fd(),
        OsStr::new(name),
        Mode::from_bits_truncate(0o700),
    ) {
        Ok(()) => log::info!("created {path}"),
        Err(Errno::EEXIST) => {}
        Err(e) => return Err(e).with_context(|| format!("creating {path}")),
    }
    let dir = match open_dir_nofollow(parent, name) {
        Ok(fd) => fd,
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            let what = if is_symlink(parent, name) {
                format!("{path} is a symlink; refusing to use it or change what it points to. Remove the link (rm {path}) and start the service again")
            } else {
                format!("{path} exists and is not a directory; move it away and start the service again")
            };
            return Err(fail(Exit::Mount, what));
        }
        Err(e) => return Err(e).with_context(|| format!("opening {path}")),
    };
    let st = fstat(dir.as_fd()).with_context(|| format!("inspecting {path}"))?;
    if st.st_uid != uid || st.st_gid != gid {
        fchown(
            dir.as_fd(),
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
        )
        .with_context(|| format!("setting owner of {path}"))?;
        log::info!("{path}: owner {}:{} -> {uid}:{gid}", st.st_uid, st.st_gid);
    }
    // chown may clear setuid/setgid bits, so the mode comes after it.
    let st = fstat(dir.as_fd()).with_context(|| format!("inspecting {path}"))?;
    if st.st_mode & 0o7777 != spec.mode {
        fchmod(dir.as_fd(), Mode::from_bits_truncate(spec.mode))
            .with_context(|| format!("setting mode of {path}"))?;
        log::info!(
            "{path}: mode {:04o} -> {:04o}",
            st.st_mode & 0o7777,
            spec.mode
        );
    }
    let file = File::from(dir);
    let meta = file.metadata()?;
    log::info!(
        "instance dir {path}: owner {} group {} mode {:04o}",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777
    );
    Ok(())
}
