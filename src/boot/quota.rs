//! Quotas per instance dir (`instanceDirs.<name>.quota`, `inodeQuota`),
//! with the filesystem's project quotas: one project ID per instance dir,
//! inherited by everything created below it (FS_XFLAG_PROJINHERIT), limits
//! set with quotactl(2). Several instances share one disk; a quota keeps one
//! from filling it for all.
//!
//! The helper never changes filesystem features: without project quota
//! support (ext4 made without `-O quota,project`, xfs mounted without
//! `prjquota`) `mount` goes on with a warning that names the command to run
//! on the unmounted disk. Turning enforcement on (Q_QUOTAON) is runtime
//! state, not a feature, and is done here, as `quotaon -P` would.
//!
//! The kernel lets a process with CAP_SYS_RESOURCE (root) past any hard
//! limit of ext4's quotas: builds (nixbld users) and users are stopped,
//! nix-daemon's own writes as root (substitutes, imports) are not.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode};
use serde::Serialize;

use crate::config::Config;

/// "500G", "1T", "64M", "4096": bytes (powers of 1024), at least 1 MiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bytes = crate::space::parse_bytes(text, "\"500G\" or \"1T\"")?;
    if bytes < (1 << 20) {
        return Err(format!("\"{text}\" is below 1M; a store needs far more"));
    }
    Ok(bytes)
}

// linux/fs.h: struct fsxattr and its ioctls (_IOR/_IOW('X', 31/32, 28 bytes)).
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;

// linux/quota.h
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}
const Q_QUOTAON: i32 = 0x80_0002;
const Q_GETQUOTA: i32 = 0x80_0007;
const Q_SETQUOTA: i32 = 0x80_0008;
const PRJQUOTA: i32 = 2;
const QFMT_VFS_V1: i32 = 4;
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
/// if_dqblk's block limits count 1 KiB blocks.
const QIF_DQBLKSIZE: u64 = 1024;

fn qcmd(cmd: i32, kind: i32) -> i32 {
    (cmd << 8) | (kind & 0xff)
}

fn get_xattr(fd: BorrowedFd) -> nix::Result<FsXattr> {
    let mut x = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills a struct fsxattr, which `x` is.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSGETXATTR as _, &mut x) };
    Errno::result(r).map(|_| x)
}

fn set_project(fd: BorrowedFd, id: u32, inherit: bool) -> nix::Result<()> {
    let mut x = get_xattr(fd)?;
    if x.projid == id && (!inherit || x.xflags & FS_XFLAG_PROJINHERIT != 0) {
        return Ok(());
    }
    x.projid = id;
    if inherit {
        x.xflags |= FS_XFLAG_PROJINHERIT;
    }
    // SAFETY: FS_IOC_FSSETXATTR reads a struct fsxattr, which `x` is.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), FS_IOC_FSSETXATTR as _, &x) };
    Errno::result(r).map(|_| ())
}

fn device_c(device: &Path) -> Result<CString> {
    CString::new(device.as_os_str().as_bytes())
        .with_context(|| format!("device path {}", device.display()))
}

fn get_quota(device: &Path, id: u32) -> Result<IfDqblk, Errno> {
    let dev = device_c(device).map_err(|_| Errno::EINVAL)?;
    let mut q = IfDqblk::default();
    // SAFETY: Q_GETQUOTA fills a struct if_dqblk, which `q` is.
    let r = unsafe {
        libc::quotactl(
            qcmd(Q_GETQUOTA, PRJQUOTA),
            dev.as_ptr(),
            id as i32,
            (&mut q as *mut IfDqblk).cast(),
        )
    };
    Errno::result(r).map(|_| q)
}

fn set_limits(device: &Path, id: u32, bytes: Option<u64>, inodes: Option<u64>) -> Result<()> {
    let dev = device_c(device)?;
    let mut q = IfDqblk {
        // 0 is "no limit" to the kernel.
        bhardlimit: bytes.map_or(0, |b| b.div_ceil(QIF_DQBLKSIZE)),
        ihardlimit: inodes.unwrap_or(0),
        valid: QIF_BLIMITS | QIF_ILIMITS,
        ..IfDqblk::default()
    };
    // SAFETY: Q_SETQUOTA reads a struct if_dqblk, which `q` is.
    let r = unsafe {
        libc::quotactl(
            qcmd(Q_SETQUOTA, PRJQUOTA),
            dev.as_ptr(),
            id as i32,
            (&mut q as *mut IfDqblk).cast(),
        )
    };
    Errno::result(r)
        .map(|_| ())
        .with_context(|| format!("setting the limits of project {id} on {}", device.display()))
}

/// Turn enforcement of project quotas on (accounting runs from the mount
/// on, with the feature). Already on is fine.
fn enforce(device: &Path) -> Result<()> {
    let dev = device_c(device)?;
    // SAFETY: Q_QUOTAON with a NULL path: the filesystem's own quota inodes.
    let r = unsafe {
        libc::quotactl(
            qcmd(Q_QUOTAON, PRJQUOTA),
            dev.as_ptr(),
            QFMT_VFS_V1,
            std::ptr::null_mut(),
        )
    };
    match Errno::result(r) {
        Ok(_) => {
            log::info!("project quotas are enforced on {} now", device.display());
            Ok(())
        }
        Err(Errno::EBUSY | Errno::EEXIST) => Ok(()),
        Err(e) => Err(e).with_context(|| {
            format!(
                "turning project quota enforcement on for {}",
                device.display()
            )
        }),
    }
}

/// The command that gives the unmounted disk project quotas.
pub fn enable_command(cfg: &Config, device: &Path) -> String {
    match cfg.fs_type.as_str() {
        "xfs" => "add \"prjquota\" to mountOptions (xfs turns project quotas on at mount)".into(),
        _ => format!(
            "on the unmounted disk (stop every instance that uses it): tune2fs -O quota,project {}",
            device.display()
        ),
    }
}

/// Whether the mounted filesystem keeps project quotas.
pub fn supported(device: &Path) -> bool {
    get_quota(device, 0).is_ok()
}

/// A project ID for instance dir `name`: stable (a hash of the name, so the
/// same dir keeps its ID whichever instance sets it), never 0, and not one
/// another top-level dir of the disk already uses.
fn choose_id(mp: &OwnedFd, name: &str) -> Result<u32> {
    let taken: BTreeMap<u32, String> = projects(mp)?.into_iter().map(|(n, id)| (id, n)).collect();
    // FNV-1a, folded into 1..2^31 (quotactl takes the ID as an int).
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let mut id = (h & 0x7fff_ffff).max(1);
    while taken.get(&id).is_some_and(|other| other != name) {
        id = (id % 0x7fff_fffe) + 1;
    }
    Ok(id)
}

fn open_child(parent: BorrowedFd, name: &OsStr, dir: bool) -> nix::Result<OwnedFd> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    openat(parent, name, flags, Mode::empty())
}

/// The top-level dirs of the disk with a project ID, and their IDs.
fn projects(mp: &OwnedFd) -> Result<Vec<(String, u32)>> {
    let mut out = Vec::new();
    let dir = nix::dir::Dir::from_fd(nix::unistd::dup(mp).context("dup of the mount point")?)
        .context("listing the mount point")?;
    let mut dir = dir;
    for entry in dir.iter() {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let Ok(fd) = open_child(mp.as_fd(), name, true) else {
            continue;
        };
        if let Ok(x) = get_xattr(fd.as_fd()) {
            if x.projid != 0 {
                out.push((name.to_string_lossy().into_owned(), x.projid));
            }
        }
    }
    Ok(out)
}

/// Give everything below `dir` project `id` (what existed before the dir
/// had one): directories with inheritance, regular files as they are.
/// Symlinks, FIFOs, sockets and devices are never opened (their usage stays
/// with project 0); nothing on another filesystem is touched.
fn tag_tree(dir: OwnedFd, id: u32) -> Result<u64> {
    let dev = fstat(dir.as_fd())
        .context("inspecting an instance dir")?
        .st_dev;
    let mut stack = vec![dir];
    let mut tagged = 0u64;
    while let Some(fd) = stack.pop() {
        let mut listing = nix::dir::Dir::from_fd(nix::unistd::dup(&fd).context("dup")?)
            .context("listing a directory of an instance dir")?;
        let mut names = Vec::new();
        for entry in listing.iter() {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        for name in names {
            let name = OsStr::from_bytes(&name);
            let Ok(st) = fstatat(fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            let kind = st.st_mode & libc::S_IFMT;
            if st.st_dev != dev || (kind != libc::S_IFDIR && kind != libc::S_IFREG) {
                continue;
            }
            let Ok(child) = open_child(fd.as_fd(), name, kind == libc::S_IFDIR) else {
                continue;
            };
            // Opened without following: check it is still what was seen.
            match fstat(child.as_fd()) {
                Ok(now) if now.st_ino == st.st_ino && now.st_dev == dev => {}
                _ => continue,
            }
            set_project(child.as_fd(), id, kind == libc::S_IFDIR)
                .context("setting the project ID of a file in an instance dir")?;
            tagged += 1;
            if kind == libc::S_IFDIR {
                stack.push(child);
            }
        }
    }
    Ok(tagged)
}

/// `mount`: a project per instance dir with a quota, and its limits.
pub fn apply_all(cfg: &Config, device: &Path) -> Result<()> {
    let wanted: Vec<_> = cfg
        .instance_dirs
        .iter()
        .filter(|(_, d)| d.quota.is_some() || d.inode_quota.is_some())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    if !supported(device) {
        log::warn!(
            "instanceDirs have quotas, but {} ({}) keeps no project quotas, so none is enforced; to enable them, {}",
            cfg.mount_point,
            device.display(),
            enable_command(cfg, device)
        );
        return Ok(());
    }
    enforce(device)?;
    let mp = crate::boot::mount::open_dir_no_symlinks(Path::new(&cfg.mount_point), false)?;
    for (name, spec) in wanted {
        let path = format!("{}/{name}", cfg.mount_point);
        let dir = open_child(mp.as_fd(), OsStr::new(name), true)
            .with_context(|| format!("opening {path}"))?;
        let x = get_xattr(dir.as_fd()).with_context(|| format!("reading the project of {path}"))?;
        let id = if x.projid != 0 {
            x.projid
        } else {
            choose_id(&mp, name)?
        };
        let first = x.projid == 0 || x.xflags & FS_XFLAG_PROJINHERIT == 0;
        set_project(dir.as_fd(), id, true)
            .with_context(|| format!("setting project {id} on {path}"))?;
        if first {
            let n =
                tag_tree(dir, id).with_context(|| format!("tagging {path} with project {id}"))?;
            log::info!("{path}: project {id} (and the {n} entries already in it)");
        }
        set_limits(device, id, spec.quota, spec.inode_quota)?;
        log::info!(
            "{path}: quota {}{}",
            spec.quota
                .map_or("no byte limit".into(), crate::space::human_bytes),
            spec.inode_quota
                .map_or(String::new(), |n| format!(", {n} inodes"))
        );
    }
    Ok(())
}

/// One instance dir's project, use and limits, for `status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub project: u32,
    pub used_bytes: u64,
    /// None: no limit.
    pub limit_bytes: Option<u64>,
    pub used_inodes: u64,
    pub limit_inodes: Option<u64>,
}

/// Every top-level dir of the disk with a project (this instance's and the
/// others'), with its use and limits. Empty without project quotas.
pub fn usage(cfg: &Config, device: &Path) -> BTreeMap<String, Usage> {
    let mut out = BTreeMap::new();
    if !supported(device) {
        return out;
    }
    let Ok(mp) = crate::boot::mount::open_dir_no_symlinks(Path::new(&cfg.mount_point), false)
    else {
        return out;
    };
    for (name, id) in projects(&mp).unwrap_or_default() {
        if let Ok(q) = get_quota(device, id) {
            out.insert(
                name,
                Usage {
                    project: id,
                    used_bytes: q.curspace,
                    limit_bytes: (q.bhardlimit != 0).then(|| q.bhardlimit * QIF_DQBLKSIZE),
                    used_inodes: q.curinodes,
                    limit_inodes: (q.ihardlimit != 0).then_some(q.ihardlimit),
                },
            );
        }
    }
    out
}
