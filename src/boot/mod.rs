//! The boot chain: `mount`, the boot step, from waiting for the device to
//! the stamp that lets the /nix bind proceed.

pub mod device;
pub mod instances;
pub mod mount;
pub mod mountopts;
pub mod probe;

use std::path::Path;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use self::device::Found;
use self::mount::Mounted;
use self::probe::FsInfo;
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
    // A stamp from an earlier run must not outlive a failure of this one.
    store::remove_stamp()?;
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
    if let Err(e) = state::write(&record) {
        log::warn!("{e:#}");
    }
    if result.is_ok() {
        log::info!("mount: {} in {} ms", record.outcome, record.duration_ms);
    }
    result
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

    // 5. Instance dirs.
    instances::prepare_all(cfg)?;

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
    record.outcome = "mounted".into();
    record.message = format!("{} mounted at {}", dev.node.display(), cfg.mount_point);
    Ok(Exit::Success)
}

fn check_filesystem(cfg: &Config, dev: &Found) -> Result<FsInfo> {
    let node = dev.node.display();
    let info = probe::probe_path(&dev.node)
        .with_context(|| format!("reading the superblock of {node}"))?;
    let Some(info) = info else {
        return Err(fail(
            Exit::Filesystem,
            format!(
                "{node} ({}) holds no filesystem the helper recognises; it never formats a disk. If this is the right disk and it is empty, create one yourself: mkfs.{} -L wsl-storage {node}",
                dev.via, cfg.fs_type
            ),
        ));
    };
    if !info.matches_type(&cfg.fs_type) {
        return Err(fail(
            Exit::Filesystem,
            format!(
                "{node} ({}) holds {}, but fsType is {}; set fsType = \"{}\" if this is the right disk, or fix the device identity",
                dev.via, info.fs_type, cfg.fs_type, info.fs_type
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

fn missing(cfg: &Config, record: &mut RunState, triggers: &[String]) -> Result<Exit> {
    let looked: Vec<String> = device::candidate_links(cfg)
        .into_iter()
        .map(|(_, p)| p.display().to_string())
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
