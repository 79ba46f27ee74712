//! Find the storage device, and wait for it when it is not there yet.
//!
//! Identity, in order: `device` (a path), `deviceId` (/dev/disk/by-id),
//! `fsUuid` (/dev/disk/by-uuid), `fsLabel` (/dev/disk/by-label). When the
//! by-uuid/by-label links are missing (udev off, as NixOS-WSL has it by
//! default) the block devices themselves are probed for the UUID/LABEL.
//!
//! Waiting is event-driven: inotify on the directories that will hold the
//! links (or their nearest existing ancestor) and on /dev, plus kernel
//! uevents (a loop device being attached creates no node in /dev), with a
//! slow poll as a backstop.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use serde::Serialize;

use crate::boot::probe::{self, Contents};
use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::windows::trigger::TriggerRunner;

pub const BY_ID: &str = "/dev/disk/by-id";
pub const BY_UUID: &str = "/dev/disk/by-uuid";
pub const BY_LABEL: &str = "/dev/disk/by-label";

/// The slow backstop poll: events do the real work.
const SAFETY_POLL: Duration = Duration::from_millis(1000);

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    /// The device node, symlinks resolved (e.g. /dev/sdc).
    pub node: PathBuf,
    /// How it was found, e.g. "fsUuid via /dev/disk/by-uuid/...".
    pub via: String,
    #[serde(skip)]
    pub rdev: u64,
}

/// The link paths the config names, with the key that names each.
pub fn candidate_links(cfg: &Config) -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    if let Some(d) = &cfg.device {
        out.push(("device", PathBuf::from(d)));
    }
    if let Some(id) = &cfg.device_id {
        out.push(("deviceId", Path::new(BY_ID).join(id)));
    }
    if let Some(u) = &cfg.fs_uuid {
        out.push(("fsUuid", Path::new(BY_UUID).join(u.to_ascii_lowercase())));
        if u.chars().any(|c| c.is_ascii_uppercase()) {
            // vfat UUIDs are upper case in by-uuid.
            out.push(("fsUuid", Path::new(BY_UUID).join(u)));
        }
    }
    if let Some(l) = &cfg.fs_label {
        out.push(("fsLabel", Path::new(BY_LABEL).join(udev_encode(l))));
    }
    out
}

/// udev's encoding of a label in a link name: bytes outside a safe set
/// become `\xHH` (a space is `\x20`).
pub fn udev_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"#+-.:=@_".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// A path that resolves to a block device with something in it. A device
/// of size 0 (a loop device with nothing attached) is not there yet: its
/// disk may still come, and probing it would only find nothing. Neither is
/// a node whose device number the kernel does not know.
fn block_device(path: &Path) -> Option<(PathBuf, u64)> {
    let meta = fs::metadata(path).ok()?;
    if !meta.file_type().is_block_device() {
        return None;
    }
    match sys_size(meta.rdev()) {
        None | Some(0) => return None,
        Some(_) => {}
    }
    let node = fs::canonicalize(path).ok()?;
    Some((node, meta.rdev()))
}

/// The size in sectors the kernel reports for a block device number; None
/// when it has no such device.
fn sys_size(rdev: u64) -> Option<u64> {
    let sys = format!(
        "/sys/dev/block/{}:{}/size",
        libc::major(rdev),
        libc::minor(rdev)
    );
    fs::read_to_string(sys).ok()?.trim().parse().ok()
}

/// What is at a configured path that did not count as the device, for the
/// message after the wait ("not found" only when nothing is there).
pub fn describe_candidate(path: &Path) -> String {
    let Ok(lmeta) = fs::symlink_metadata(path) else {
        return "absent".to_string();
    };
    let Ok(meta) = fs::metadata(path) else {
        return format!(
            "a dangling symlink (to {})",
            fs::read_link(path).map_or("?".to_string(), |t| t.display().to_string())
        );
    };
    let ft = meta.file_type();
    let what = if ft.is_block_device() {
        let node = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let link = if lmeta.file_type().is_symlink() {
            format!("a link to {}, ", node.display())
        } else {
            String::new()
        };
        return match sys_size(meta.rdev()) {
            Some(0) => format!("{link}a block device of size 0: nothing is attached to it (a loop device without a backing file, or a detached disk)"),
            Some(_) => format!("{link}a block device"),
            None => format!(
                "{link}a block device node ({}:{}) with no device behind it in the kernel",
                libc::major(meta.rdev()),
                libc::minor(meta.rdev())
            ),
        };
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "something else"
    };
    format!("exists but is {what}, not a block device")
}

/// Look once, without waiting. An error means an ambiguity the helper will
/// not guess its way out of (two devices carry the configured UUID/LABEL).
pub fn find(cfg: &Config) -> Result<Option<Found>> {
    for (key, link) in candidate_links(cfg) {
        if let Some((node, rdev)) = block_device(&link) {
            let via = if link == node {
                format!("{key} {}", link.display())
            } else {
                format!("{key} via {}", link.display())
            };
            return Ok(Some(Found { node, via, rdev }));
        }
    }
    if cfg.fs_uuid.is_none() && cfg.fs_label.is_none() {
        return Ok(None);
    }
    probe_block_devices(cfg)
}

/// Read the superblock of every block device for the UUID/LABEL.
fn probe_block_devices(cfg: &Config) -> Result<Option<Found>> {
    let mut hits: Vec<Found> = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/class/block") else {
        return Ok(None);
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let sys = entry.path();
        // Empty devices (unattached loops, an empty card reader) have size 0.
        let size = fs::read_to_string(sys.join("size")).unwrap_or_default();
        if size.trim() == "0" || size.is_empty() {
            continue;
        }
        let node = Path::new("/dev").join(&name);
        let Some((node, rdev)) = block_device(&node) else {
            continue;
        };
        // A device with two signatures, one of them the configured one,
        // is a hit too: the filesystem check then refuses it and names both,
        // rather than the wait ending in "not found". So is a disk whose
        // partition holds it when the kernel made no node for that
        // partition: the check says how to get one.
        let candidates: Vec<(Option<String>, Option<String>)> = match probe::probe_contents(&node) {
            Ok(Contents::Filesystem(info)) => vec![(info.uuid, info.label)],
            Ok(Contents::Ambiguous { signatures }) => {
                signatures.into_iter().map(|s| (s.uuid, s.label)).collect()
            }
            Ok(Contents::Partitioned { partitions, .. }) => partitions
                .into_iter()
                .filter(|p| p.node.is_none())
                .filter_map(|p| p.fs.map(|f| (f.uuid, f.label)))
                .collect(),
            _ => continue,
        };
        let matching = |(uuid, label): &(Option<String>, Option<String>)| match (
            &cfg.fs_uuid,
            &cfg.fs_label,
        ) {
            (Some(u), _) => uuid.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(u)),
            (None, Some(l)) => label.as_deref() == Some(l.as_str()),
            (None, None) => false,
        };
        if !candidates.iter().any(matching) {
            continue;
        }
        let key = if cfg.fs_uuid.is_some() {
            "fsUuid"
        } else {
            "fsLabel"
        };
        hits.push(Found {
            via: format!("{key} by probing {}", node.display()),
            node,
            rdev,
        });
    }
    match hits.len() {
        0 => Ok(None),
        1 => Ok(hits.pop()),
        _ => Err(fail(
            Exit::Filesystem,
            format!(
                "{} devices carry {}: {}; the helper will not guess which to mount. Detach the copy (losetup -d / wsl --unmount) or set \"device\" to the right one",
                hits.len(),
                cfg.identity(),
                hits.iter().map(|h| h.node.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// The directories whose changes may mean the device arrived: each link's
/// directory, or its nearest existing ancestor, and /dev.
fn watch_dirs(cfg: &Config) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from("/dev")];
    for (_, link) in candidate_links(cfg) {
        let mut dir = link.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d.is_dir() {
                if !dirs.contains(&d) {
                    dirs.push(d);
                }
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
    }
    dirs
}

/// A socket for kernel uevents (block devices added or changed). Optional:
/// where it cannot be opened the inotify watches and the poll remain.
fn uevent_socket() -> Option<OwnedFd> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::NetlinkKObjectUEvent,
    )
    .ok()?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 1)).ok()?;
    Some(fd)
}

pub struct WaitResult {
    pub found: Option<Found>,
    pub waited: Duration,
    /// One line per Windows trigger attempt, for the final message.
    pub triggers: Vec<String>,
}

/// Wait up to `waitTimeout` for the device, starting the Windows trigger in
/// the background on the first misses.
pub fn wait_for_device(cfg: &Config) -> Result<WaitResult> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(cfg.wait_timeout);
    let mut trigger = TriggerRunner::new(&cfg.windows);

    if let Some(found) = find(cfg)? {
        return Ok(WaitResult {
            found: Some(found),
            waited: start.elapsed(),
            triggers: trigger.finish(),
        });
    }
    log::info!(
        "device not present yet ({}); waiting up to {} s for it",
        cfg.identity(),
        cfg.wait_timeout
    );
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    let uevents = uevent_socket();
    if uevents.is_none() {
        log::debug!(
            "kernel uevent socket unavailable; relying on inotify and a {SAFETY_POLL:?} poll"
        );
    }
    let mask = AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF;
    let mut watched: Vec<PathBuf> = Vec::new();
    loop {
        // (Re)arm: a directory that now exists replaces its ancestor.
        for dir in watch_dirs(cfg) {
            if !watched.contains(&dir) {
                match inotify.add_watch(&dir, mask) {
                    Ok(_) => {
                        log::debug!("watching {}", dir.display());
                        watched.push(dir);
                    }
                    Err(e) => log::debug!("cannot watch {}: {e}", dir.display()),
                }
            }
        }
        if let Some(found) = find(cfg)? {
            log::info!(
                "device appeared after {:.1} s: {} ({})",
                start.elapsed().as_secs_f64(),
                found.node.display(),
                found.via
            );
            return Ok(WaitResult {
                found: Some(found),
                waited: start.elapsed(),
                triggers: trigger.finish(),
            });
        }
        trigger.on_miss();
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = (deadline - now).min(SAFETY_POLL);
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::NONE);
        let mut fds = vec![PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        if let Some(sock) = &uevents {
            fds.push(PollFd::new(sock.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        // Drain both sources; what arrived does not matter, only that
        // something did: the next find() looks again.
        if let Ok(events) = inotify.read_events() {
            if events
                .iter()
                .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
            {
                watched.clear();
            }
        }
        if let Some(sock) = &uevents {
            let mut buf = [0u8; 8192];
            while recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).is_ok_and(|n| n > 0) {}
        }
    }
    Ok(WaitResult {
        found: None,
        waited: start.elapsed(),
        triggers: trigger.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_encoded_like_udev() {
        assert_eq!(udev_encode("wsl-storage"), "wsl-storage");
        assert_eq!(udev_encode("my disk/1"), "my\\x20disk\\x2f1");
    }

    #[test]
    fn links_follow_the_config_order() {
        let cfg = Config::parse(
            r#"{"device": "/dev/sdz", "deviceId": "nvme-X", "fsUuid": "ABCD-1234", "fsLabel": "L 1"}"#,
        )
        .unwrap();
        let links: Vec<String> = candidate_links(&cfg)
            .into_iter()
            .map(|(k, p)| format!("{k}={}", p.display()))
            .collect();
        assert_eq!(
            links,
            vec![
                "device=/dev/sdz",
                "deviceId=/dev/disk/by-id/nvme-X",
                "fsUuid=/dev/disk/by-uuid/abcd-1234",
                "fsUuid=/dev/disk/by-uuid/ABCD-1234",
                "fsLabel=/dev/disk/by-label/L\\x201",
            ]
        );
    }

    #[test]
    fn watch_dirs_fall_back_to_existing_ancestors() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("not/yet/there/dev0");
        let cfg = Config::parse(&format!(r#"{{"device": "{}"}}"#, link.display())).unwrap();
        let dirs = watch_dirs(&cfg);
        assert!(dirs.contains(&tmp.path().to_path_buf()), "{dirs:?}");
        assert!(dirs.contains(&PathBuf::from("/dev")));
    }

    #[test]
    fn a_regular_file_is_not_a_device() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let cfg = Config::parse(&format!(r#"{{"device": "{}"}}"#, tmp.path().display())).unwrap();
        assert!(find(&cfg).unwrap().is_none());
    }
}
