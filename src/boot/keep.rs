//! `keep`: put the storage mount back when it is taken away.
//!
//! The unmount of mountPoint by a peer distro's shutdown propagates
//! through /mnt/wsl, its parent, which is WSL's to set (see
//! boot::propagation): no propagation of ours keeps it. What is bound from
//! it (the /nix bind, its read-only store, the binds) stays, private; the
//! mount point itself is empty in every distro. So this service watches
//! this namespace's mount table (poll(2) on /proc/self/mountinfo wakes on
//! every change) and, when mountPoint is gone while the last `mount`
//! succeeded (its stamp is there), mounts the same device again through
//! the same steps as `mount` (the lock, "already mounted" as success, the
//! slave propagation). The new mount reaches every distro through the
//! shared parent. Stop the unit before unmounting the disk by hand.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::config::Config;
use crate::exit::Exit;
use crate::mountinfo;

/// How long to sleep after a failed re-mount before trying again, and the
/// longest wait between two looks when no change is signalled.
const RETRY: Duration = Duration::from_secs(2);

pub fn run(cfg: &Config) -> Result<Exit> {
    crate::log::open_file(Path::new(&cfg.log_file));
    log::info!(
        "keep: watching {} (a re-mount when it is taken away)",
        cfg.mount_point
    );
    let table = File::open("/proc/self/mountinfo").context("opening /proc/self/mountinfo")?;
    loop {
        if taken_away(cfg)? {
            log::warn!(
                "keep: {} was taken away (a peer distro's shutdown unmounts /mnt/wsl/* in every distro); mounting it again",
                cfg.mount_point
            );
            match crate::boot::ensure_disk(cfg) {
                Ok(()) => log::info!("keep: {} is mounted again", cfg.mount_point),
                Err(e) => {
                    log::error!("keep: mounting {} again: {e:#}", cfg.mount_point);
                    std::thread::sleep(RETRY);
                }
            }
            continue;
        }
        // The kernel flags the open table with POLLPRI (and POLLERR) when a
        // mount comes or goes in this namespace, once per change seen by
        // this poll; the timeout is a fallback.
        let mut fds = [PollFd::new(table.as_fd(), PollFlags::POLLPRI)];
        let timeout =
            PollTimeout::try_from(RETRY.as_millis() as u64 * 5).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e).context("waiting for a change of /proc/self/mountinfo"),
        }
    }
}

/// mountPoint has nothing mounted, and the last `mount` run mounted it.
fn taken_away(cfg: &Config) -> Result<bool> {
    let mounts = mountinfo::read().context("reading /proc/self/mountinfo")?;
    Ok(mountinfo::top_at(&mounts, &cfg.mount_point).is_none()
        && crate::boot::binds::stamp_path().exists())
}
