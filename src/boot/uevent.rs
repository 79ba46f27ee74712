//! Kernel uevents: how the helper learns that a block device arrived
//! without udev and without /dev/disk links.
//!
//! The kernel multicasts one message per device event on
//! NETLINK_KOBJECT_UEVENT (group 1). A disk hot-added by `wsl --mount
//! --bare` sends `add` for the disk and each partition; attaching a loop
//! device sends `change` (its node exists from the start, empty). Only
//! `add` and `change` of the `block` subsystem are kept. The messages are
//! not namespaced by mount namespace: every event of the machine arrives,
//! so the caller must check each device's identity, never trust "the first
//! event".

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvfrom, setsockopt, socket, sockopt, AddressFamily, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};

/// The kernel's multicast group for uevents (udev re-broadcasts on 2).
const KERNEL_GROUP: u32 = 1;

/// Room for a burst of events (a few hundred bytes each) while the helper
/// is busy probing; an overflow is detected and answered with a full scan.
const RECV_BUFFER: usize = 1 << 20;

/// One block device event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockEvent {
    /// "add" or "change".
    pub action: String,
    /// The kernel's name, e.g. "sdc1" or "loop3" (DEVNAME).
    pub devname: String,
    pub major: u64,
    pub minor: u64,
}

impl BlockEvent {
    /// The device node, when DEVNAME is a plain name under /dev (never a
    /// path that climbs out of it).
    pub fn node(&self) -> Option<PathBuf> {
        let rel = Path::new(&self.devname);
        if self.devname.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return None;
        }
        Some(Path::new("/dev").join(rel))
    }

    /// The node, checked: a block device (not a symlink, FIFO or anything
    /// planted) whose device number is the one the kernel announced, with
    /// a non-zero size (a detached loop device sends `change` too).
    pub fn checked_node(&self) -> Option<(PathBuf, u64)> {
        let node = self.node()?;
        let meta = fs::symlink_metadata(&node).ok()?;
        let rdev = meta.rdev();
        if !meta.file_type().is_block_device()
            || nix::sys::stat::major(rdev) != self.major
            || nix::sys::stat::minor(rdev) != self.minor
        {
            return None;
        }
        let size = fs::read_to_string(
            Path::new("/sys/dev/block").join(format!("{}:{}/size", self.major, self.minor)),
        )
        .unwrap_or_default();
        if size.trim().is_empty() || size.trim() == "0" {
            return None;
        }
        Some((node, rdev))
    }
}

/// Parse one kernel uevent datagram ("ACTION@DEVPATH\0KEY=VALUE\0...").
/// Returns None for anything that is not a block add/change.
pub fn parse(buf: &[u8]) -> Option<BlockEvent> {
    let mut fields = buf.split(|&b| b == 0);
    let header = fields.next()?;
    // udev's own messages start with "libudev\0"; the kernel's with "action@".
    if !header.contains(&b'@') {
        return None;
    }
    let (mut action, mut subsystem, mut devname) = (None, None, None);
    let (mut major, mut minor) = (None, None);
    for field in fields {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "ACTION" => action = Some(value),
            "SUBSYSTEM" => subsystem = Some(value),
            "DEVNAME" => devname = Some(value),
            "MAJOR" => major = value.parse().ok(),
            "MINOR" => minor = value.parse().ok(),
            _ => {}
        }
    }
    let action = action?;
    if subsystem? != "block" || !matches!(action, "add" | "change") {
        return None;
    }
    Some(BlockEvent {
        action: action.to_string(),
        devname: devname?.to_string(),
        major: major?,
        minor: minor?,
    })
}

/// What one drain of the socket brought.
#[derive(Debug, Default)]
pub struct Drained {
    pub events: Vec<BlockEvent>,
    /// The socket's buffer overflowed: events were lost, look everywhere.
    pub overflowed: bool,
}

pub struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Open and bind the socket. From this moment every event is queued,
    /// so the caller opens it before its first look at the devices.
    pub fn open() -> io::Result<Listener> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        // Root may exceed rmem_max; a smaller buffer still works (overflow
        // is handled), so a refusal is not an error.
        if setsockopt(&fd, sockopt::RcvBufForce, &RECV_BUFFER).is_err() {
            let _ = setsockopt(&fd, sockopt::RcvBuf, &RECV_BUFFER);
        }
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))?;
        Ok(Listener { fd })
    }

    /// Read every queued message without blocking.
    pub fn drain(&self) -> Drained {
        let mut out = Drained::default();
        let mut buf = vec![0u8; 8192];
        loop {
            match recvfrom::<NetlinkAddr>(self.fd.as_raw_fd(), &mut buf) {
                Ok((n, from)) => {
                    // Only the kernel (port 0) speaks for devices; anything
                    // else on the group is ignored.
                    if from.is_some_and(|a| a.pid() != 0) {
                        continue;
                    }
                    if let Some(ev) = parse(&buf[..n]) {
                        out.events.push(ev);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => out.overflowed = true,
                Err(_) => break,
            }
        }
        out
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(fields: &[&str]) -> Vec<u8> {
        let mut v = Vec::new();
        for f in fields {
            v.extend_from_slice(f.as_bytes());
            v.push(0);
        }
        v
    }

    #[test]
    fn a_loop_attach_is_a_block_change() {
        let m = msg(&[
            "change@/devices/virtual/block/loop0",
            "ACTION=change",
            "DEVPATH=/devices/virtual/block/loop0",
            "SUBSYSTEM=block",
            "MAJOR=7",
            "MINOR=0",
            "DEVNAME=loop0",
            "DEVTYPE=disk",
            "SEQNUM=835",
        ]);
        let ev = parse(&m).unwrap();
        assert_eq!(ev.action, "change");
        assert_eq!(ev.devname, "loop0");
        assert_eq!((ev.major, ev.minor), (7, 0));
        assert_eq!(ev.node(), Some(PathBuf::from("/dev/loop0")));
    }

    #[test]
    fn other_subsystems_actions_and_udev_messages_are_skipped() {
        let remove = msg(&[
            "remove@/devices/virtual/block/loop0",
            "ACTION=remove",
            "SUBSYSTEM=block",
            "MAJOR=7",
            "MINOR=0",
            "DEVNAME=loop0",
        ]);
        assert_eq!(parse(&remove), None);
        let usb = msg(&[
            "add@/devices/usb1",
            "ACTION=add",
            "SUBSYSTEM=usb",
            "MAJOR=189",
            "MINOR=0",
            "DEVNAME=bus/usb/001/001",
        ]);
        assert_eq!(parse(&usb), None);
        let udev = msg(&["libudev", "ACTION=add", "SUBSYSTEM=block"]);
        assert_eq!(parse(&udev), None);
        assert_eq!(parse(b""), None);
    }

    #[test]
    fn devnames_cannot_leave_dev() {
        let ev = |name: &str| BlockEvent {
            action: "add".into(),
            devname: name.into(),
            major: 8,
            minor: 0,
        };
        assert_eq!(ev("../etc/passwd").node(), None);
        assert_eq!(ev("/etc/passwd").node(), None);
        assert_eq!(ev("").node(), None);
        assert_eq!(ev("sdc1").node(), Some(PathBuf::from("/dev/sdc1")));
    }
}
