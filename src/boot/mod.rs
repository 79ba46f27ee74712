//! The boot chain: `mount`, the boot step, from waiting for the device to
//! the stamp that lets the /nix bind proceed.

pub mod binds;
pub mod device;
pub mod instances;
pub mod keep;
pub mod mount;
pub mod mountopts;
pub mod probe;
pub mod propagation;
pub mod quota;
pub mod uevent;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use self::device::Found;
use self::mount::Mounted;
use self::probe::{Contents, FsInfo};
use crate::config::{Config, OnMissing, Trigger};
use crate::exit::{exit_of, fail, Exit};
use crate::mountinfo;
use crate::state::{self, RunState};
use crate::store;

pub fn run(cfg: &Config, config_path: &Path, boot_root: &Path) -> Result<Exit> {
    crate::log::open_file(Path::new(&cfg.log_file));
    log::info!(
        "mount: starting (config {}, {}, mount point {})",
        config_path.display(),
        cfg.identity(),
        cfg.mount_point
    );
    let started = Instant::now();
    record_interruptions(&cfg.mount_point, started);
    // A stamp from an earlier run must not outlive a failure of this one.
    store::remove_stamp()?;
    binds::remove_stamp()?;
    let mut record = RunState {
        mount_point: cfg.mount_point.clone(),
        ..RunState::default()
    };
    let result = steps(cfg, &mut record, boot_root);
    record.duration_ms = started.elapsed().as_millis() as u64;
    record.finished_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    match &result {
        Ok(exit) => {
            record.exit_code = exit.code();
        }
        Err(err) => {
            record.outcome = "failed".into();
            record.exit_code = exit_of(err).code();
            record.message = format!("{err:#}");
        }
    }
    {
        // From here on a signal must not overwrite this run's own record.
        let mut finished = FINISHED.lock().unwrap_or_else(|e| e.into_inner());
        *finished = true;
        if let Err(e) = state::write(&record) {
            log::warn!("{e:#}");
        }
    }
    if result.is_ok() {
        log::info!("mount: {} in {} ms", record.outcome, record.duration_ms);
    }
    result
}

/// Whether `run` has written its final record (guarded, so that the record
/// and a signal's "interrupted" never both land).
static FINISHED: Mutex<bool> = Mutex::new(false);

/// On SIGTERM (systemd stopping the unit, a shutdown), SIGINT or SIGHUP:
/// record "interrupted" in the state file, so that the previous run's
/// "mounted" does not stand for this one, then die of the signal as before.
/// A thread waits for it (signal-hook's self-pipe): the steps themselves
/// need no signal checks, and children get default dispositions at exec.
fn record_interruptions(mount_point: &str, started: Instant) {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            log::debug!("cannot watch for SIGTERM ({e}); an interrupted run will not be recorded");
            return;
        }
    };
    let mount_point = mount_point.to_string();
    std::thread::spawn(move || {
        let Some(sig) = signals.forever().next() else {
            return;
        };
        let name = match sig {
            SIGTERM => "SIGTERM",
            SIGINT => "SIGINT",
            _ => "SIGHUP",
        };
        let finished = FINISHED.lock().unwrap_or_else(|e| e.into_inner());
        if !*finished {
            let record = RunState {
                outcome: "interrupted".into(),
                exit_code: 128 + sig,
                message: format!(
                    "stopped by {name} before the run finished; nothing of this run is confirmed: `systemctl restart wsl-storage-mount`"
                ),
                mount_point,
                duration_ms: started.elapsed().as_millis() as u64,
                finished_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                ..RunState::default()
            };
            if let Err(e) = state::write(&record) {
                log::warn!("{e:#}");
            }
            log::warn!(
                "mount: interrupted by {name}; recorded in {}",
                state::state_path().display()
            );
        }
        // fsck or nix-store, each in a process group of its own, go too.
        crate::proc::kill_all();
        // Die of the signal, as without this thread (systemd counts a
        // stop by SIGTERM as clean); the lock is held until then.
        let _ = signal_hook::low_level::emulate_default_handler(sig);
        std::process::exit(128 + sig);
    });
}

fn steps(cfg: &Config, record: &mut RunState, boot_root: &Path) -> Result<Exit> {
    // 1. The device.
    let waited = device::wait_for_device(cfg)?;
    record.waited_ms = waited.waited.as_millis() as u64;
    record.windows_triggers = waited.triggers.clone();
    let Some(dev) = waited.found else {
        return missing(cfg, record, &waited.triggers);
    };
    log::info!("device {} found ({})", dev.node.display(), dev.via);
    record.device = Some(dev.node.display().to_string());
    record.found_via = Some(dev.via.clone());

    // 2. Its filesystem.
    let fs_info = check_filesystem(cfg, &dev)?;

    // 3 and 4. fsck and mount.
    record.mounted_now = mount::ensure_mounted(cfg, &dev, &fs_info)? == Mounted::Now;
    propagation::storage_as_slave(cfg)?;

    // 5. Instance dirs.
    instances::prepare_all(cfg)?;
    binds::prepare_all(cfg)?;
    // A quota is a limit, not a safety property: never a reason to leave
    // the store unbound. `status` shows a quota that did not take.
    if let Err(e) = quota::apply_all(cfg, &dev.node) {
        log::warn!("quotas were not applied: {e:#}");
    }

    // 6. The store guard.
    if cfg.bind_mount_nix_store {
        let verified = store::guard::verify(cfg, boot_root)?;
        let closure = verified.closure;
        record.store_verified = true;
        record.healed_paths = verified.healed;
        let mounts = mountinfo::read().context("reading /proc/self/mountinfo")?;
        if store::bind_state(cfg, &mounts).is_bind {
            log::info!(
                "{} already is the bind of the verified store",
                cfg.bind_target
            );
            propagation::isolate_bind(cfg)?;
            store::write_stamp(cfg, closure)?;
        } else {
            match store::system_is_booting() {
                Ok(true) => store::write_stamp(cfg, closure)?,
                Ok(false) => {
                    record.bind_deferred = true;
                    log::warn!(
                        "the system is already up, so {} is not swapped under it now: the bind happens at the next start of this instance (wsl --terminate <distro>, or reboot)",
                        cfg.bind_target
                    );
                }
                Err(why) => {
                    record.bind_deferred = true;
                    log::warn!(
                        "cannot tell whether the system is booting ({why}); leaving {} as it is until the next start",
                        cfg.bind_target
                    );
                }
            }
        }
    }
    binds::write_stamp(cfg)?;
    record.outcome = "mounted".into();
    record.message = format!("{} mounted at {}", dev.node.display(), cfg.mount_point);
    Ok(Exit::Success)
}

/// The steps of `mount` up to the mount itself, for commands that need the
/// disk (migrate): find the device, check its filesystem, fsck and mount it
/// (the same device already mounted is success). The caller prepares the
/// instance dirs when it is ready to. A missing device is an error here
/// whatever `onMissing` says.
pub fn ensure_disk(cfg: &Config) -> Result<()> {
    let waited = device::wait_for_device(cfg)?;
    let Some(dev) = waited.found else {
        return Err(fail(
            Exit::DeviceMissing,
            format!(
                "device not found after {} s ({}); attach the disk (the Windows task, or `wsl --mount \\\\.\\PHYSICALDRIVE<n> --bare` in an elevated PowerShell) and run the command again",
                cfg.wait_timeout,
                cfg.identity()
            ),
        ));
    };
    log::info!("device {} found ({})", dev.node.display(), dev.via);
    let fs_info = check_filesystem(cfg, &dev)?;
    mount::ensure_mounted(cfg, &dev, &fs_info)?;
    propagation::storage_as_slave(cfg)?;
    Ok(())
}

fn check_filesystem(cfg: &Config, dev: &Found) -> Result<FsInfo> {
    let node = dev.node.display();
    // Found by probing: what that probe saw, a moment ago, on this device.
    let contents = match &dev.contents {
        Some(contents) => contents.clone(),
        None => probe::probe_contents(&dev.node)
            .with_context(|| format!("probing {node} with libblkid"))?,
    };
    let info = match contents {
        Contents::Filesystem(info) => info,
        other => {
            let (what, fix) = unusable(cfg, &dev.node, &other);
            return Err(fail(
                Exit::Filesystem,
                format!("{node} ({}) {what}; {fix}", dev.via),
            ));
        }
    };
    if !info.matches_type(&cfg.fs_type) {
        return Err(fail(
            Exit::Filesystem,
            format!(
                "{node} ({}) holds {}, but fsType is {}; {}",
                dev.via,
                info.fs_type,
                cfg.fs_type,
                wrong_type_fix(&info.fs_type)
            ),
        ));
    }
    if let Some(uuid) = &cfg.fs_uuid {
        if !info.uuid_is(uuid) {
            return Err(fail(
                Exit::Filesystem,
                format!(
                    "{node} ({}) has filesystem UUID {}, not the configured fsUuid {uuid}; it is not the storage disk (or fsUuid is wrong: `blkid {node}` prints it)",
                    dev.via,
                    info.uuid.as_deref().unwrap_or("(none)")
                ),
            ));
        }
    }
    if let Some(label) = &cfg.fs_label {
        if !info.label_is(label) {
            return Err(fail(
                Exit::Filesystem,
                format!(
                    "{node} ({}) has label {}, not the configured fsLabel {label}; it is not the storage disk (or fsLabel is wrong: `blkid {node}` prints it)",
                    dev.via,
                    info.label.as_deref().unwrap_or("(none)")
                ),
            ));
        }
    }
    log::info!(
        "{node}: {} filesystem, UUID {}, label {}",
        info.fs_type,
        info.uuid.as_deref().unwrap_or("(none)"),
        info.label.as_deref().unwrap_or("(none)")
    );
    Ok(info)
}

/// What to do about a device whose signature is not `fsType`: another
/// supported filesystem may be meant (set fsType); anything else (swap,
/// LUKS, an LVM or RAID member ...) is not something the helper mounts.
pub fn wrong_type_fix(found: &str) -> String {
    if crate::config::SUPPORTED_FS.contains(&found) {
        format!("set fsType = \"{found}\" if this is the storage disk, or fix the device identity (`lsblk -f`)")
    } else {
        format!(
            "{found} is not a filesystem the helper mounts ({}): point the identity at the storage filesystem (`lsblk -f`); an encrypted or LVM/RAID disk must be opened first and the identity set to the device that holds the filesystem",
            crate::config::SUPPORTED_FS.join(", ")
        )
    }
}

/// Why a device without exactly one filesystem cannot be mounted, and what
/// to do: (what it holds, the fix). Creating a filesystem is suggested only
/// for a device with no signature at all and a non-zero size; a partitioned
/// disk is described partition by partition, with the identity to set.
pub fn unusable(cfg: &Config, node: &Path, contents: &Contents) -> (String, String) {
    let node = node.display();
    match contents {
        Contents::Filesystem(fs) => (
            format!("holds {}", fs.describe()),
            "nothing to fix here".to_string(),
        ),
        Contents::NoMedium => (
            "has size 0: nothing is attached to it (a loop device without a backing file, or a disk that went away)".to_string(),
            "attach the disk (`wsl --mount \\\\.\\PHYSICALDRIVE<n> --bare` in an elevated PowerShell) or point the identity at the storage disk (`lsblk -f`)".to_string(),
        ),
        Contents::Empty => (
            "holds no filesystem and no partition table".to_string(),
            format!(
                "the helper never formats a disk. If this is the right disk and it is empty, create the filesystem yourself: mkfs.{} -L wsl-storage {node}",
                cfg.fs_type
            ),
        ),
        Contents::Ambiguous { signatures } => (
            format!(
                "carries more than one signature ({}): libblkid will not say which one is real, and neither will the helper",
                signatures
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("list them with `wipefs {node}` (without -a it changes nothing), decide which one is stale, and remove only that one by hand (`wipefs -o <offset> {node}`)"),
        ),
        Contents::Partitioned { table, partitions } => {
            let parts: Vec<String> = partitions
                .iter()
                .map(|p| {
                    let name = p
                        .node
                        .as_ref()
                        .map(|n| format!(" ({})", n.display()))
                        .unwrap_or_default();
                    let fs = p
                        .fs
                        .as_ref()
                        .map_or("no filesystem".to_string(), |f| f.describe());
                    format!("partition {}{name}: {fs}", p.number)
                })
                .collect();
            let what = format!(
                "is a partitioned disk ({table} table{}{})",
                if parts.is_empty() { "" } else { "; " },
                parts.join("; ")
            );
            // The partition to name: the one with the configured UUID or
            // LABEL, else the only one of the configured type.
            let wanted = partitions.iter().find(|p| {
                p.fs.as_ref().is_some_and(|f| {
                    cfg.fs_uuid.as_deref().is_some_and(|u| f.uuid_is(u))
                        || cfg.fs_label.as_deref().is_some_and(|l| f.label_is(l))
                })
            });
            let of_type: Vec<_> = partitions
                .iter()
                .filter(|p| p.fs.as_ref().is_some_and(|f| f.matches_type(&cfg.fs_type)))
                .collect();
            let pick = wanted.or(if of_type.len() == 1 { Some(of_type[0]) } else { None });
            let fix = match pick.and_then(|p| p.fs.as_ref().map(|f| (p, f))) {
                Some((p, f)) => {
                    let mut fix = String::from("the filesystem is in a partition, not on the whole disk: ");
                    match &f.uuid {
                        Some(u) => fix.push_str(&format!("identify it by fsUuid = \"{u}\"")),
                        None => fix.push_str("identify the partition"),
                    }
                    match &p.node {
                        Some(n) => fix.push_str(&format!(" (or device = \"{}\")", n.display())),
                        None => fix.push_str(&format!(
                            " once partition {} has a device node: the kernel made none (it did not read the table); `partx -a {node}` or `partprobe {node}` asks it to",
                            p.number
                        )),
                    }
                    fix.push_str(" instead of the whole disk; the helper never formats a disk with a partition table");
                    fix
                }
                None => "the helper never formats a disk with a partition table: identify the partition that holds the storage filesystem (fsUuid from `lsblk -f`)".to_string(),
            };
            (what, fix)
        }
    }
}

fn missing(cfg: &Config, record: &mut RunState, triggers: &[String]) -> Result<Exit> {
    let looked: Vec<String> = device::candidate_links(cfg)
        .into_iter()
        .map(|(_, p)| match device::describe_candidate(&p) {
            what if what == "absent" => p.display().to_string(),
            what => format!("{} ({what})", p.display()),
        })
        .collect();
    let mut tried = format!("looked for {}", looked.join(", "));
    if cfg.fs_uuid.is_some() || cfg.fs_label.is_some() {
        tried.push_str(", and probed every block device for the UUID/LABEL");
    }
    let trigger = match cfg.windows.trigger {
        Trigger::None => {
            "no Windows trigger is configured (windows.trigger = \"none\")".to_string()
        }
        _ if triggers.is_empty() => "the Windows trigger was not started".to_string(),
        _ => format!("Windows trigger: {}", triggers.join("; ")),
    };
    let next = match cfg.windows.trigger {
        Trigger::Task => format!(
            "check the scheduled task in Windows (`schtasks /Query /TN \"{}\"`, its log) or attach the disk by hand in an elevated PowerShell: `wsl --mount \\\\.\\PHYSICALDRIVE<n> --bare`; then `systemctl restart wsl-storage-mount`",
            crate::windows::script::task_name(&cfg.windows)
        ),
        _ => "attach the disk in an elevated PowerShell: `wsl --mount \\\\.\\PHYSICALDRIVE<n> --bare` (register-task.ps1 automates this at logon); then `systemctl restart wsl-storage-mount`".to_string(),
    };
    let message = format!(
        "device not found after {} s ({}): {tried}; {trigger}. Next: {next}",
        cfg.wait_timeout,
        cfg.identity()
    );
    match cfg.on_missing {
        OnMissing::Fallback => {
            log::warn!("{message}");
            log::warn!(
                "DEGRADED: onMissing = \"fallback\": {} stays on the store it has (the VHDX), nothing is mounted at {}",
                cfg.bind_target,
                cfg.mount_point
            );
            record.outcome = "degraded".into();
            record.message = message;
            Ok(Exit::Success)
        }
        OnMissing::Block => Err(fail(Exit::DeviceMissing, message)),
    }
}
