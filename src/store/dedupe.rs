//! `dedupe`: one copy of what the instance stores on the disk share.
//!
//! Instances built from one nixpkgs hold many identical store files. A file
//! of a valid store path is immutable (read-only, root-owned, mtime 1 since
//! Nix canonicalised it), so two such files with the same content, owner
//! and mode can be one inode: each store keeps its own names, a GC in one
//! store only drops names, and the inode lives while the other store uses
//! it. Nix's own optimiser keeps `store/.links/<hash>` per store and would
//! put its own inode back in place of ours; so `.links` entries take part
//! too, and every name of a content ends on one inode: `nix-store
//! --optimise` afterwards finds every file already linked to its .links
//! entry and changes nothing.
//!
//! Only regular files under `<mountPoint>/<dir>/store` are read (no
//! symlink is followed, no FIFO opened, no other filesystem entered); a
//! file is replaced by a link made beside it and renamed over it, so a name
//! is never missing. Files still being written (not mtime 1, or writable)
//! are left alone.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::exit::Exit;

/// One inode found in a store, with every name it has there.
struct Inode {
    dev: u64,
    ino: u64,
    size: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    names: Vec<PathBuf>,
}

/// What makes two files one: content (SHA-256), mode, owner, group, and
/// the filesystem (a link cannot cross one).
type Sameness = ([u8; 32], u32, u32, u32, u64);

/// What a run did (or, with --dry-run, would do).
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub stores: Vec<String>,
    pub files: u64,
    pub linked: u64,
    pub bytes_saved: u64,
    pub dry_run: bool,
}

fn open_nofollow(parent: &impl AsFd, name: &OsStr, dir: bool) -> nix::Result<OwnedFd> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    if dir {
        flags |= OFlag::O_DIRECTORY;
    }
    openat(parent.as_fd(), name, flags, Mode::empty())
}

/// The instance dirs on the disk that hold a Nix store (`<dir>/store`).
fn stores(cfg: &Config) -> Result<Vec<(String, OwnedFd)>> {
    let mp = crate::boot::mount::open_dir_no_symlinks(Path::new(&cfg.mount_point), false)?;
    let mut out = Vec::new();
    let mut listing = nix::dir::Dir::from_fd(nix::unistd::dup(&mp).context("dup")?)
        .with_context(|| format!("listing {}", cfg.mount_point))?;
    let mut names: Vec<OsString> = listing
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    for name in names {
        let Ok(dir) = open_nofollow(&mp, &name, true) else {
            continue;
        };
        if let Ok(store) = open_nofollow(&dir, OsStr::new("store"), true) {
            out.push((name.to_string_lossy().into_owned(), store));
        }
    }
    Ok(out)
}

/// Every immutable regular file under one store, by inode.
// stat's field types differ between targets (st_nlink is u32 on aarch64).
#[allow(clippy::unnecessary_cast)]
fn walk(root: OwnedFd, prefix: &Path, inodes: &mut HashMap<(u64, u64), Inode>) -> Result<()> {
    let dev = fstat(root.as_fd()).context("inspecting a store")?.st_dev;
    let mut stack = vec![(root, prefix.to_path_buf())];
    while let Some((fd, path)) = stack.pop() {
        let mut listing = nix::dir::Dir::from_fd(nix::unistd::dup(&fd).context("dup")?)
            .with_context(|| format!("listing {}", path.display()))?;
        let names: Vec<OsString> = listing
            .iter()
            .filter_map(|e| e.ok())
            .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
            .filter(|n| n != "." && n != "..")
            .collect();
        for name in names {
            let Ok(st) = fstatat(fd.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            let kind = st.st_mode & libc::S_IFMT;
            if st.st_dev != dev as libc::dev_t {
                continue;
            }
            if kind == libc::S_IFDIR {
                if let Ok(child) = open_nofollow(&fd, &name, true) {
                    stack.push((child, path.join(&name)));
                }
            } else if kind == libc::S_IFREG
                && st.st_mtime == 1
                && st.st_mode & 0o222 == 0
                && st.st_size > 0
            {
                let key = (st.st_dev as u64, st.st_ino as u64);
                inodes
                    .entry(key)
                    .or_insert_with(|| Inode {
                        dev: st.st_dev as u64,
                        ino: st.st_ino as u64,
                        size: st.st_size as u64,
                        mode: st.st_mode & 0o7777,
                        uid: st.st_uid,
                        gid: st.st_gid,
                        nlink: st.st_nlink as u64,
                        names: Vec::new(),
                    })
                    .names
                    .push(path.join(&name));
            }
        }
    }
    Ok(())
}

/// SHA-256 of a file, opened without following a link, and only when it
/// still is the inode that was listed.
fn hash(inode: &Inode) -> Option<[u8; 32]> {
    let path = inode.names.first()?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    use std::os::unix::fs::MetadataExt;
    if meta.ino() != inode.ino || meta.dev() != inode.dev {
        return None;
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut reader = std::io::BufReader::new(file);
    loop {
        let n = reader.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(h.finalize().into())
}

use std::os::unix::fs::OpenOptionsExt;

/// Put a link to `keep` (one of its names) in place of `name`: linked
/// beside it under a temporary name, then renamed over it.
fn relink(keep: &Path, name: &Path) -> Result<()> {
    let dir = name.parent().context("a store file has a parent")?;
    let tmp = dir.join(format!(
        ".wsm-dedupe-{}",
        name.file_name()
            .map_or(OsStr::new("f"), |n| n)
            .to_string_lossy()
    ));
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(keep, &tmp)
        .with_context(|| format!("linking {} to {}", tmp.display(), keep.display()))?;
    std::fs::rename(&tmp, name).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("renaming {} over {}", tmp.display(), name.display())
    })
}

pub fn run(cfg: &Config, dry_run: bool, json: bool) -> Result<Exit> {
    let mut summary = Summary {
        dry_run,
        ..Summary::default()
    };
    let mut inodes = HashMap::new();
    for (name, store) in stores(cfg)? {
        let prefix = PathBuf::from(format!("{}/{name}/store", cfg.mount_point));
        walk(store, &prefix, &mut inodes)?;
        summary.stores.push(prefix.display().to_string());
    }
    summary.files = inodes.values().map(|i| i.names.len() as u64).sum();

    // Only sizes seen more than once can have a twin: hash those.
    let mut by_size: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    for (key, inode) in &inodes {
        by_size.entry(inode.size).or_default().push(*key);
    }
    let candidates: Vec<(u64, u64)> = by_size
        .into_values()
        .filter(|keys| keys.len() > 1)
        .flatten()
        .collect();
    let bar = indicatif::ProgressBar::new(candidates.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("dedupe {bar:40} {pos}/{len} files {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // Files are one only with the same content, owner, group and mode.
    let mut groups: HashMap<Sameness, Vec<(u64, u64)>> = HashMap::new();
    for key in candidates {
        bar.inc(1);
        let inode = &inodes[&key];
        if let Some(h) = hash(inode) {
            groups
                .entry((h, inode.mode, inode.uid, inode.gid, inode.dev))
                .or_default()
                .push(key);
        }
    }
    bar.finish_and_clear();

    for keys in groups.into_values().filter(|k| k.len() > 1) {
        // Keep the inode with the most links: the fewest renames.
        let mut keys = keys;
        keys.sort_by_key(|k| std::cmp::Reverse(inodes[k].nlink));
        let keep = inodes[&keys[0]].names[0].clone();
        for key in &keys[1..] {
            let inode = &inodes[key];
            let mut all = true;
            for name in &inode.names {
                if dry_run {
                    summary.linked += 1;
                    continue;
                }
                match relink(&keep, name) {
                    Ok(()) => summary.linked += 1,
                    Err(e) => {
                        // EMLINK (a full link count) or a file gone since the walk.
                        log::warn!("{e:#}");
                        all = false;
                    }
                }
            }
            // Its space comes back once no name of it is left (names
            // outside the walked stores would keep it).
            if all && inode.nlink == inode.names.len() as u64 {
                summary.bytes_saved += inode.size;
            }
        }
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "dedupe{}: {} stores, {} files; {} names {}linked to one copy; {} {}",
            if dry_run { " (dry run)" } else { "" },
            summary.stores.len(),
            summary.files,
            summary.linked,
            if dry_run { "would be " } else { "" },
            crate::space::human_bytes(summary.bytes_saved),
            if dry_run { "would be saved" } else { "saved" }
        );
    }
    Ok(Exit::Success)
}
