//! Mount the storage filesystem at `mountPoint`: fsck first, never stack a
//! second mount, never mount over something else.

use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{open, openat, AtFlags, Flock, FlockArg, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstatat, mkdirat, Mode};

use crate::boot::device::Found;
use crate::boot::mountopts;
use crate::boot::probe::{self, FsInfo};
use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::mountinfo;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mounted {
    /// This run mounted it.
    Now,
    /// The same device was already mounted there (another WSL instance
    /// through the shared /mnt/wsl, or an earlier run).
    Already,
}

/// Hold an exclusive lock on the mount point directory while deciding and
/// mounting, so that two runs (or two WSL instances, which share /mnt/wsl)
/// never both mount. A run that opens the directory after the mount locks
/// the mounted root instead, and then sees the mount: either way one mount.
type DirLock = Flock<File>;

fn lock_dir(dir: File, path: &Path) -> Result<DirLock> {
    let mut dir = dir;
    loop {
        match Flock::lock(dir, FlockArg::LockExclusive) {
            Ok(lock) => return Ok(lock),
            Err((back, Errno::EINTR)) => dir = back,
            Err((_, e)) => {
                return Err(e).with_context(|| format!("locking mount point {}", path.display()))
            }
        }
    }
}

/// Open the directory at an absolute, normalised `path` one component at a
/// time with O_NOFOLLOW, creating missing components (mode 0755) when
/// `create` is set. A symlink anywhere in the path is refused: mount(2)
/// would follow it and put the disk on the link's target (on /mnt/wsl, a
/// directory every distro of the VM shares). A file where a directory
/// should be is refused too. Both are exit 5, naming the component.
pub fn open_dir_no_symlinks(path: &Path, create: bool) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = open("/", flags, Mode::empty()).context("opening /")?;
    let mut walked = PathBuf::from("/");
    for comp in path.components() {
        let name = match comp {
            Component::RootDir => continue,
            Component::Normal(name) => name,
            // The config normalises paths; refuse rather than guess.
            _ => {
                return Err(fail(
                    Exit::Config,
                    format!("{} is not a normalised absolute path", path.display()),
                ))
            }
        };
        walked.push(name);
        let next = match openat(dir.as_fd(), name, flags, Mode::empty()) {
            Err(Errno::ENOENT) if create => {
                match mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(e)
                            .with_context(|| format!("creating mount point {}", walked.display()))
                    }
                }
                openat(dir.as_fd(), name, flags, Mode::empty())
            }
            other => other,
        };
        dir = match next {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                let what = match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => "a symlink",
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => "a regular file",
                    _ => "not a directory",
                };
                let real = fs::canonicalize(path)
                    .map(|r| format!(" (it resolves to {})", r.display()))
                    .unwrap_or_default();
                return Err(fail(
                    Exit::Mount,
                    format!(
                        "mountPoint {}: {} is {what}{real}; the helper mounts only on a path of real directories, so that the disk cannot land somewhere else. Set mountPoint to a real directory (or remove {})",
                        path.display(),
                        walked.display(),
                        walked.display()
                    ),
                ));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("opening mount point {}", walked.display()))
            }
        };
    }
    Ok(dir)
}

pub fn ensure_mounted(cfg: &Config, dev: &Found, fs_info: &FsInfo) -> Result<Mounted> {
    let target = Path::new(&cfg.mount_point);
    let dir = File::from(open_dir_no_symlinks(target, true)?);
    let lock = lock_dir(dir, target)?;
    // mount(2) on the directory this walk opened, through its /proc magic
    // link: no path is resolved again between the check and the mount.
    let target_fd = PathBuf::from(format!("/proc/self/fd/{}", lock.as_raw_fd()));

    let mounts = mountinfo::read().context("reading /proc/self/mountinfo")?;
    if let Some(top) = mountinfo::top_at(&mounts, &cfg.mount_point) {
        if top.is_device(dev.rdev) && top.root == Path::new("/") {
            log::info!(
                "{} is already mounted at {} ({} {}); not mounting again",
                dev.node.display(),
                cfg.mount_point,
                top.fs_type,
                top.options
            );
            return Ok(Mounted::Already);
        }
        return Err(fail(
            Exit::Mount,
            format!(
                "mount point {} is taken by {} ({}, root {}), not by {}; unmount it (umount {}) or choose another mountPoint",
                cfg.mount_point,
                top.source_text(),
                top.fs_type,
                top.root.display(),
                dev.node.display(),
                cfg.mount_point
            ),
        ));
    }

    let mounted_elsewhere: Vec<String> = mounts
        .iter()
        .filter(|m| m.is_device(dev.rdev))
        .map(|m| m.mount_point.display().to_string())
        .collect();
    if !mounted_elsewhere.is_empty() {
        log::info!(
            "{} is already mounted at {}; skipping fsck (it only runs on an unmounted filesystem)",
            dev.node.display(),
            mounted_elsewhere.join(", ")
        );
    } else if cfg.fsck {
        run_fsck(cfg, dev, fs_info)?;
    } else if fs_info.has_errors {
        log::warn!(
            "{} has recorded filesystem errors and fsck is off; run `fsck.{} -p {}` or set fsck = true",
            dev.node.display(),
            cfg.fs_type,
            dev.node.display()
        );
    }

    let opts = mountopts::parse(&cfg.mount_options)
        .map_err(|why| fail(Exit::Config, format!("mountOptions: {why}")))?;
    let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
    log::info!(
        "mounting {} at {} (type {}, options {})",
        dev.node.display(),
        cfg.mount_point,
        cfg.fs_type,
        cfg.mount_options.join(",")
    );
    // EBUSY can come from a probe that still holds the fresh device open.
    let result = retry::retry(
        retry::delay::Fixed::from(Duration::from_millis(100)).take(5),
        || match mount(
            Some(dev.node.as_path()),
            &target_fd,
            Some(cfg.fs_type.as_str()),
            opts.flags,
            data,
        ) {
            Err(Errno::EBUSY) => retry::OperationResult::Retry(Errno::EBUSY),
            Err(e) => retry::OperationResult::Err(e),
            Ok(()) => retry::OperationResult::Ok(()),
        },
    );
    if let Err(e) = result {
        let errno = e.error;
        let hint = match errno {
            Errno::EINVAL => "the kernel refused the options or the filesystem; check mountOptions and fsType, and `dmesg | tail`",
            Errno::ENODEV => "the kernel has no driver for this fsType",
            Errno::EACCES | Errno::EROFS => "the device is read-only; add \"ro\" to mountOptions or fix the disk's write protection",
            _ => "check `dmesg | tail` for the kernel's reason",
        };
        return Err(fail(
            Exit::Mount,
            format!(
                "mounting {} at {} failed: {errno}; {hint}",
                dev.node.display(),
                cfg.mount_point
            ),
        ));
    }
    // Verify rather than trust.
    let mounts = mountinfo::read().context("reading /proc/self/mountinfo")?;
    match mountinfo::top_at(&mounts, &cfg.mount_point) {
        Some(m) if m.is_device(dev.rdev) => {
            log::info!(
                "mounted {} at {} ({})",
                m.source_text(),
                cfg.mount_point,
                m.options
            );
            Ok(Mounted::Now)
        }
        _ => {
            // Never leave a mount behind that nobody asked for: the mount
            // just made is on the directory this run opened, whose root
            // a fresh walk reaches (no symlinks, so no other place).
            let undone = open_dir_no_symlinks(target, false)
                .ok()
                .map(|fd| {
                    umount2(
                        Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())),
                        MntFlags::MNT_DETACH,
                    )
                })
                .is_some_and(|r| r.is_ok());
            Err(fail(
                Exit::Mount,
                format!(
                    "mount(2) reported success but {} does not show {} in /proc/self/mountinfo ({}); check for a mount namespace or propagation problem",
                    cfg.mount_point,
                    dev.node.display(),
                    if undone { "the mount was undone" } else { "the mount could not be undone: check `findmnt` for it" }
                ),
            ))
        }
    }
}

/// `fsck.<type> -p`: repair what is safe to repair without questions.
fn run_fsck(cfg: &Config, dev: &Found, fs_info: &FsInfo) -> Result<()> {
    let tool = format!("fsck.{}", cfg.fs_type);
    log::info!(
        "running {tool} -p {}{}",
        dev.node.display(),
        if fs_info.has_errors {
            " (the superblock records errors)"
        } else {
            ""
        }
    );
    let mut cmd = Command::new(&tool);
    cmd.arg("-p").arg(&dev.node);
    let timeout = Duration::from_secs(cfg.fsck_timeout);
    let out = match crate::proc::run(cmd, timeout) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::warn!("{tool} is not on PATH; skipping fsck (install the filesystem's tools, e.g. e2fsprogs, or set fsck = false)");
            return Ok(());
        }
        Err(e) => return Err(e).with_context(|| format!("running {tool}")),
    };
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| !l.trim().is_empty())
    {
        log::info!("  {tool}: {line}");
    }
    if out.timed_out {
        // Killed mid-repair: the filesystem is left for a check by hand,
        // never mounted half-repaired.
        return Err(fail(
            Exit::Filesystem,
            format!(
                "{tool} -p {} did not finish within fsckTimeout ({} s) and was stopped; run `{tool} -p {}` by hand, or raise fsckTimeout for a large disk",
                dev.node.display(),
                cfg.fsck_timeout,
                dev.node.display()
            ),
        ));
    }
    // fsck's exit status is a bit mask.
    let code = out.code.unwrap_or(8);
    match code {
        0 => log::info!("{tool}: no errors"),
        1 => log::warn!("{tool}: errors were found and corrected"),
        2 | 3 => log::warn!("{tool}: errors were corrected; the system should be rebooted"),
        _ if code & 4 != 0 => {
            return Err(fail(
                Exit::Filesystem,
                format!(
                    "{tool} -p {} left errors it would not fix without questions (exit {code}); run `{tool} {}` by hand and answer its questions, then start the service again",
                    dev.node.display(),
                    dev.node.display()
                ),
            ))
        }
        _ => {
            return Err(fail(
                Exit::Filesystem,
                format!(
                    "{tool} -p {} failed (exit {code}); see its output above and run it by hand",
                    dev.node.display()
                ),
            ))
        }
    }
    if fs_info.has_errors {
        // Say what fsck achieved: the recorded error state must be gone.
        let after = probe::probe_path(&dev.node)
            .with_context(|| format!("reading the superblock of {}", dev.node.display()))?;
        if after.is_some_and(|a| a.has_errors) {
            return Err(fail(
                Exit::Filesystem,
                format!(
                    "{tool} -p {} finished but the filesystem still records errors; run `{tool} -f {}` by hand",
                    dev.node.display(),
                    dev.node.display()
                ),
            ));
        }
        log::info!("{tool}: the recorded errors were checked and cleared; the filesystem is clean");
    }
    Ok(())
}

/// Mount flags that can be checked in mountinfo's per-mount options.
pub fn expected_flag_words(cfg: &Config) -> Vec<&'static str> {
    let Ok(opts) = mountopts::parse(&cfg.mount_options) else {
        return Vec::new();
    };
    let mut words = Vec::new();
    for (flag, word) in [
        (MsFlags::MS_RDONLY, "ro"),
        (MsFlags::MS_NOSUID, "nosuid"),
        (MsFlags::MS_NODEV, "nodev"),
        (MsFlags::MS_NOEXEC, "noexec"),
        (MsFlags::MS_NOATIME, "noatime"),
        (MsFlags::MS_NODIRATIME, "nodiratime"),
    ] {
        if opts.flags.contains(flag) {
            words.push(word);
        }
    }
    words
}
