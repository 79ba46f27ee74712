//! The shared dirs of `binds`: made ready by `mount`, bound by the NixOS
//! module's mount units, which wait for the stamp written here.
//!
//! The mount units run mount(8), which follows a symlink: a link planted
//! at mountPoint/<subdir> would bind whatever it points to (anywhere on
//! this system) at the bind's path. So the helper checks each subdir with
//! O_NOFOLLOW and writes the stamp only when every one is a real directory;
//! without the stamp (the disk missing, the helper failed) the units are
//! skipped, not failed. An existing shared dir is never chowned or chmodded:
//! it is data, often shared by several instances; a missing one is created
//! root-owned, mode 0755.

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode};

use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::state;

/// Written by `mount` when the disk is mounted and every bind's subdir is
/// a real directory; the module's bind units have it as their condition.
pub fn stamp_path() -> PathBuf {
    state::run_dir().join("mounted")
}

pub fn remove_stamp() -> Result<()> {
    let path = stamp_path();
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing old stamp {}", path.display())),
    }
}

pub fn write_stamp(cfg: &Config) -> Result<()> {
    let path = stamp_path();
    let body = serde_json::json!({
        "mountPoint": cfg.mount_point,
        "binds": cfg.binds,
    });
    state::write_atomic(&path, &serde_json::to_vec_pretty(&body)?)
        .with_context(|| format!("writing stamp {}", path.display()))?;
    if !cfg.binds.is_empty() {
        log::info!(
            "wrote {}: the binds of {} may proceed",
            path.display(),
            cfg.binds.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// Create every missing bind subdir and refuse one that is not a real
/// directory. All are tried; the first failure is returned.
pub fn prepare_all(cfg: &Config) -> Result<()> {
    if cfg.binds.is_empty() {
        return Ok(());
    }
    let parent =
        crate::boot::mount::open_dir_no_symlinks(std::path::Path::new(&cfg.mount_point), false)?;
    let mut first = None;
    for (path, bind) in &cfg.binds {
        let dir = format!("{}/{}", cfg.mount_point, bind.subdir);
        let name = OsStr::new(&bind.subdir);
        let result = match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) => {
                log::info!("created {dir} for the bind at {path}");
                Ok(())
            }
            Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context(format!("creating {dir}"))),
        }
        .and_then(|()| {
            match openat(
                parent.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(_) => Ok(()),
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let what = match fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => "a symlink",
                        _ => "not a directory",
                    };
                    Err(fail(
                        Exit::Mount,
                        format!(
                            "binds.\"{path}\": {dir} is {what}; its mount unit would bind whatever that is at {path}, so no bind happens. Replace it with a directory (rm {dir}; mkdir {dir}) and start the service again"
                        ),
                    ))
                }
                Err(e) => Err(anyhow::Error::new(e).context(format!("opening {dir}"))),
            }
        });
        if let Err(e) = result {
            log::error!("{e:#}");
            first.get_or_insert(e);
        }
    }
    match first {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// One bind as `status` shows it.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BindStatus {
    pub subdir: String,
    pub want_read_only: bool,
    /// bindTarget-like: the path is the bind of mountPoint/subdir.
    pub is_bind: bool,
    pub read_only: Option<bool>,
    pub propagation: Option<String>,
    pub problem: Option<String>,
}

/// Each bind next to what is mounted at its path, and a problem line for
/// each one that is not as configured (only while the disk is mounted:
/// without it the units are skipped on purpose).
pub fn status(
    cfg: &Config,
    mounts: &[crate::mountinfo::MountEntry],
    rdev: Option<u64>,
    storage_mounted: bool,
) -> (std::collections::BTreeMap<String, BindStatus>, Vec<String>) {
    let mut out = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for (path, bind) in &cfg.binds {
        let top = crate::mountinfo::top_at(mounts, path);
        let root = std::path::Path::new("/").join(&bind.subdir);
        let is_bind = top.is_some_and(|m| rdev.is_some_and(|r| m.is_device(r)) && m.root == root);
        let read_only = top.map(|m| m.has_option("ro"));
        let problem = if !is_bind {
            storage_mounted.then(|| match top {
                None => format!(
                    "nothing is mounted at {path}; `systemctl status {path}` shows why its mount unit did not bind it, `systemctl start {path}` binds it"
                ),
                Some(m) => format!(
                    "{path} is {} (root {}), not the bind of {}/{}",
                    m.source_text(),
                    m.root.display(),
                    cfg.mount_point,
                    bind.subdir
                ),
            })
        } else if read_only != Some(bind.read_only) {
            Some(format!(
                "{path} is mounted {}, but readOnly is {}",
                if read_only == Some(true) {
                    "read-only"
                } else {
                    "writable"
                },
                bind.read_only
            ))
        } else {
            None
        };
        if let Some(p) = &problem {
            problems.push(format!("bind {path}: {p}"));
        }
        out.insert(
            path.clone(),
            BindStatus {
                subdir: bind.subdir.clone(),
                want_read_only: bind.read_only,
                is_bind,
                read_only,
                propagation: top.map(|m| m.propagation()),
                problem,
            },
        );
    }
    (out, problems)
}
