//! Find the storage device, and wait for it when it is not there yet.
//!
//! Identity, in order: `device` (a path), `deviceId` (/dev/disk/by-id),
//! `fsUuid` (/dev/disk/by-uuid), `fsLabel` (/dev/disk/by-label). When the
//! by-uuid/by-label links are missing (udev off, as NixOS-WSL has it by
//! default) the block devices themselves are probed for the UUID/LABEL.
//!
//! Waiting is event-driven: kernel uevents name each block device that
//! arrives (a hot-added disk, a loop device being attached), and that
//! device alone is probed; inotify watches for links only when the identity
//! is a link (`deviceId`, a `device` other than a node straight under /dev);
//! a full scan every second is the backstop.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
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
use crate::boot::uevent;
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
    /// What probing it found, when the device was found by probing: the
    /// filesystem check uses it instead of reading the device again (on a
    /// freshly attached disk each libblkid probe costs about a millisecond).
    #[serde(skip)]
    pub contents: Option<Contents>,
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
    if let Some(found) = find_link(cfg) {
        return Ok(Some(found));
    }
    if cfg.fs_uuid.is_none() && cfg.fs_label.is_none() {
        return Ok(None);
    }
    probe_block_devices(cfg)
}

/// The configured identity key ("fsUuid"/"fsLabel") when what a device
/// holds carries it. A device with two signatures, one of them the
/// configured one, is a hit too: the filesystem check then refuses it and
/// names both, rather than the wait ending in "not found". So is a disk
/// whose partition holds it when the kernel made no node for that
/// partition: the check says how to get one.
fn identity_key(cfg: &Config, contents: &Contents) -> Option<&'static str> {
    let candidates: Vec<(Option<&str>, Option<&str>)> = match contents {
        Contents::Filesystem(info) => vec![(info.uuid.as_deref(), info.label.as_deref())],
        Contents::Ambiguous { signatures } => signatures
            .iter()
            .map(|s| (s.uuid.as_deref(), s.label.as_deref()))
            .collect(),
        Contents::Partitioned { partitions, .. } => partitions
            .iter()
            .filter(|p| p.node.is_none())
            .filter_map(|p| p.fs.as_ref())
            .map(|f| (f.uuid.as_deref(), f.label.as_deref()))
            .collect(),
        _ => return None,
    };
    let matching =
        |(uuid, label): &(Option<&str>, Option<&str>)| match (&cfg.fs_uuid, &cfg.fs_label) {
            (Some(u), _) => uuid.is_some_and(|x| x.eq_ignore_ascii_case(u)),
            (None, Some(l)) => *label == Some(l.as_str()),
            (None, None) => false,
        };
    if !candidates.iter().any(matching) {
        return None;
    }
    Some(if cfg.fs_uuid.is_some() {
        "fsUuid"
    } else {
        "fsLabel"
    })
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
        let Ok(contents) = probe::probe_contents(&node) else {
            continue;
        };
        let Some(key) = identity_key(cfg, &contents) else {
            continue;
        };
        hits.push(Found {
            via: format!("{key} by probing {}", node.display()),
            node,
            rdev,
            contents: Some(contents),
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

/// Test hook: stay this many milliseconds after the first look, before the
/// wait loop, so a test can make a device arrive exactly in the gap the
/// listener must cover.
const HOLD_ENV: &str = "WSL_STORAGE_MOUNT_HOLD_AFTER_FIRST_LOOK_MS";
/// `inotify` selects the previous wait (for the benchmark's comparison).
const WAIT_ENV: &str = "WSL_STORAGE_MOUNT_WAIT";

/// Does the identity need links someone else makes (udev's /dev/disk,
/// /dev/mapper, a directory of the user's), so inotify must watch for them?
/// A kernel node straight under /dev (`/dev/sdc`) arrives as a uevent.
fn needs_link_watch(cfg: &Config) -> bool {
    let kernel_node = |d: &str| {
        Path::new(d)
            .strip_prefix("/dev")
            .is_ok_and(|rest| rest.components().count() == 1)
    };
    cfg.device_id.is_some() || cfg.device.as_deref().is_some_and(|d| !kernel_node(d))
}

/// Wait up to `waitTimeout` for the device, starting the Windows trigger in
/// the background on the first misses.
///
/// Kernel uevents do the work: each block device that is added or changes
/// is probed at once for the configured UUID/LABEL (no udev, no links
/// needed). inotify watches for links only when the identity is a link. A
/// full scan every `SAFETY_POLL` is the backstop.
pub fn wait_for_device(cfg: &Config) -> Result<WaitResult> {
    if std::env::var_os(WAIT_ENV).is_some_and(|v| v == "inotify") {
        return wait_inotify(cfg);
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs(cfg.wait_timeout);
    let mut trigger = TriggerRunner::new(&cfg.windows);

    // The listener before the first look: a device that arrives after the
    // look has queued its event by then.
    let uevents = match uevent::Listener::open() {
        Ok(l) => Some(l),
        Err(e) => {
            log::warn!("cannot listen to kernel uevents ({e}); falling back to a scan every {SAFETY_POLL:?}");
            None
        }
    };
    if let Some(found) = find(cfg)? {
        return Ok(WaitResult {
            found: Some(found),
            waited: start.elapsed(),
            triggers: trigger.finish(),
        });
    }
    let mut last_scan = Instant::now();
    log::info!(
        "device not present yet ({}); waiting up to {} s for it",
        cfg.identity(),
        cfg.wait_timeout
    );
    if let Some(ms) = std::env::var(HOLD_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        log::info!("holding {ms} ms after the first look ({HOLD_ENV})");
        std::thread::sleep(Duration::from_millis(ms));
    }
    let mut links = if needs_link_watch(cfg) {
        LinkWatch::new(cfg)
    } else {
        None
    };
    // After the holder's fork, so that these pages are not shared with it
    // (a write to a shared page is a copy).
    probe::prepare_for_arrival();
    let probe_events = cfg.fs_uuid.is_some() || cfg.fs_label.is_some();
    let found = loop {
        // Events first (what queued while we looked or held is not lost),
        // then links, then the backstop scan when it is due.
        if let Some(l) = &uevents {
            let drained = l.drain();
            if drained.overflowed {
                log::debug!("uevent buffer overflowed; scanning all block devices");
                last_scan = start;
            }
            if probe_events {
                if let Some(found) = probe_events_for(cfg, &drained.events)? {
                    break Some(found);
                }
            }
        }
        if let Some(w) = &mut links {
            // Drained before the look and re-armed: a link made since is
            // either seen by find_link or wakes the poll.
            w.drain();
            w.arm(cfg);
        }
        if let Some(found) = find_link(cfg) {
            break Some(found);
        }
        if last_scan.elapsed() >= SAFETY_POLL {
            last_scan = Instant::now();
            if let Some(found) = find(cfg)? {
                break Some(found);
            }
        }
        trigger.on_miss();
        let now = Instant::now();
        if now >= deadline {
            break None;
        }
        let wait = (deadline - now).min(SAFETY_POLL.saturating_sub(last_scan.elapsed()));
        // Whole milliseconds, rounded up: a sub-millisecond rest must not
        // become a zero timeout that spins.
        let wait = Duration::from_millis(wait.as_micros().div_ceil(1000) as u64);
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::NONE);
        let mut fds = Vec::with_capacity(2);
        if let Some(l) = &uevents {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        if let Some(w) = &links {
            fds.push(PollFd::new(w.inotify.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    };
    if let Some(found) = &found {
        log::info!(
            "device appeared after {:.1} s: {} ({})",
            start.elapsed().as_secs_f64(),
            found.node.display(),
            found.via
        );
    }
    // A mere count drop: the holder keeps the descriptor until our exit.
    drop(links);
    Ok(WaitResult {
        found,
        waited: start.elapsed(),
        triggers: trigger.finish(),
    })
}

/// Probe the devices one drain of uevents named. All of them, not just up
/// to the first hit: two copies of the disk arriving together are the same
/// ambiguity `find` refuses. (Copies present before the wait were seen by
/// the first look, and every arrival since has an event.)
fn probe_events_for(cfg: &Config, events: &[uevent::BlockEvent]) -> Result<Option<Found>> {
    let mut hits: Vec<Found> = Vec::new();
    for ev in events {
        let Some((node, rdev)) = ev.checked_node() else {
            continue;
        };
        if hits.iter().any(|h| h.rdev == rdev) {
            continue;
        }
        let contents = match probe::probe_contents(&node) {
            Ok(c) => c,
            Err(e) => {
                log::debug!(
                    "uevent {} {}: cannot read it ({e}); ignored",
                    ev.action,
                    node.display()
                );
                continue;
            }
        };
        let Some(key) = identity_key(cfg, &contents) else {
            let what = match &contents {
                Contents::Filesystem(info) => format!(
                    "{} UUID={} LABEL={}",
                    info.fs_type,
                    info.uuid.as_deref().unwrap_or("-"),
                    info.label.as_deref().unwrap_or("-")
                ),
                Contents::NoMedium => "no medium".to_string(),
                Contents::Empty => "no signature".to_string(),
                Contents::Partitioned { table, .. } => format!("a {table} partition table"),
                Contents::Ambiguous { .. } => "several signatures".to_string(),
            };
            log::debug!(
                "uevent {} {}: {what} is not {}; ignored",
                ev.action,
                node.display(),
                cfg.identity()
            );
            continue;
        };
        hits.push(Found {
            via: format!("{key} by probing {} (uevent {})", node.display(), ev.action),
            node,
            rdev,
            contents: Some(contents),
        });
    }
    match hits.len() {
        0 => Ok(None),
        1 => Ok(hits.pop()),
        // The full scan names every copy in its refusal.
        _ => find(cfg),
    }
}

/// inotify on the directories that will hold the configured links.
struct LinkWatch {
    inotify: Inotify,
    watched: Vec<PathBuf>,
}

impl LinkWatch {
    fn new(cfg: &Config) -> Option<LinkWatch> {
        match Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK) {
            Ok(inotify) => {
                // Now, while nothing is timed: the holder's fork copies the
                // page tables, and that is a cost for the wait, not for the
                // reaction.
                hold_off_the_clock(inotify.as_fd());
                let mut w = LinkWatch {
                    inotify,
                    watched: Vec::new(),
                };
                w.arm(cfg);
                Some(w)
            }
            Err(e) => {
                log::warn!(
                    "cannot watch for device links ({e}); relying on the {SAFETY_POLL:?} scan"
                );
                None
            }
        }
    }

    /// Watch each link's directory, or its nearest existing ancestor; a
    /// directory that now exists replaces its ancestor.
    fn arm(&mut self, cfg: &Config) {
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF;
        for dir in link_dirs(cfg) {
            if !self.watched.contains(&dir) {
                match self.inotify.add_watch(&dir, mask) {
                    Ok(_) => {
                        log::debug!("watching {}", dir.display());
                        self.watched.push(dir);
                    }
                    Err(e) => log::debug!("cannot watch {}: {e}", dir.display()),
                }
            }
        }
    }

    /// What arrived does not matter, only that something did.
    fn drain(&mut self) {
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            if events
                .iter()
                .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
            {
                self.watched.clear();
            }
        }
    }
}

/// The directories of the configured links (or their nearest existing
/// ancestors), without /dev itself: kernel nodes come as uevents.
fn link_dirs(cfg: &Config) -> Vec<PathBuf> {
    watch_dirs(cfg)
        .into_iter()
        .filter(|d| d != Path::new("/dev"))
        .collect()
}

/// Let our close of an inotify descriptor be free.
///
/// The last close of an inotify descriptor with watches waits in the
/// kernel for the watches' teardown (an SRCU grace period: 0-16 ms
/// measured, most of the helper's reaction time). Leaking it would not
/// help: the process's exit closes it before the parent learns of the
/// exit. So a child forked when the watch is made keeps a reference, and
/// our close, after the device arrived, is a mere count drop; the child
/// sleeps until our exit (EOF on a pipe only we hold the write end of) and
/// then pays for the teardown on nobody's clock.
fn hold_off_the_clock(fd: BorrowedFd<'_>) {
    let Ok((read_end, write_end)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return;
    };
    // SAFETY: the child makes only raw system calls (sched_setscheduler,
    // sigaction, close_range, close, read, _exit) before it ends, as required after
    // fork in a process that may have threads (the Windows trigger).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            // The parent will mount while the child lives: on a busy
            // 2-core machine the child must not take the CPU from it.
            let idle = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle);
            // The parent's handlers write to a self-pipe closed below: a
            // stop signal must end the child as it would any process.
            for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::signal(sig, libc::SIG_DFL);
            }
            let (keep_fd, keep_pipe) = (fd.as_raw_fd(), read_end.as_raw_fd());
            let (a, b) = (keep_fd.min(keep_pipe) as u32, keep_fd.max(keep_pipe) as u32);
            // Everything else closed (the parent's stdout/stderr above all,
            // whose readers wait for EOF): one call where the kernel has
            // close_range (5.9+), else one by one.
            let close_range =
                |lo: u32, hi: u32| libc::syscall(libc::SYS_close_range, lo, hi, 0) == 0;
            let ranged = (a == 0 || close_range(0, a - 1))
                && (b == a + 1 || close_range(a + 1, b - 1))
                && close_range(b + 1, u32::MAX);
            if !ranged {
                for n in 0..1024 {
                    if n != keep_fd && n != keep_pipe {
                        libc::close(n);
                    }
                }
            }
            let mut byte = 0u8;
            while libc::read(keep_pipe, (&raw mut byte).cast(), 1) < 0 {}
            libc::_exit(0)
        },
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            // The write end stays open (leaked) until our exit: that is the
            // child's signal.
            std::mem::forget(write_end);
        }
        Err(e) => log::debug!("cannot fork a holder for the inotify descriptor: {e}"),
    }
    drop(read_end);
}

/// Look for the configured links only (a few stat() calls).
pub fn find_link(cfg: &Config) -> Option<Found> {
    for (key, link) in candidate_links(cfg) {
        if let Some((node, rdev)) = block_device(&link) {
            let via = if link == node {
                format!("{key} {}", link.display())
            } else {
                format!("{key} via {}", link.display())
            };
            return Some(Found {
                node,
                via,
                rdev,
                contents: None,
            });
        }
    }
    None
}

/// The previous wait, kept for `bench/bench.py` to compare against
/// (`WSL_STORAGE_MOUNT_WAIT=inotify`): inotify on /dev and the link
/// directories, uevents only as a wake-up, a full scan of every block
/// device on each wake, and the inotify descriptor closed on the way out.
fn wait_inotify(cfg: &Config) -> Result<WaitResult> {
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
    fn only_link_identities_are_watched_with_inotify() {
        let watched = |json: &str| needs_link_watch(&Config::parse(json).unwrap());
        assert!(watched(r#"{"deviceId": "nvme-X"}"#));
        assert!(watched(r#"{"device": "/dev/disk/by-id/nvme-X"}"#));
        assert!(watched(r#"{"device": "/srv/links/disk"}"#));
        assert!(watched(r#"{"device": "/dev/mapper/storage"}"#));
        // Kernel nodes and filesystem identities arrive as uevents.
        assert!(!watched(r#"{"device": "/dev/sdc"}"#));
        assert!(!watched(
            r#"{"fsUuid": "0b3e6f6c-5d1c-4c59-9d0e-8f2a3c1b7e10"}"#
        ));
        assert!(!watched(r#"{"fsLabel": "wsl-storage"}"#));
    }

    #[test]
    fn a_regular_file_is_not_a_device() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let cfg = Config::parse(&format!(r#"{{"device": "{}"}}"#, tmp.path().display())).unwrap();
        assert!(find(&cfg).unwrap().is_none());
    }
}
