//! `doctor`: the troubleshooting guide as a command. Each check says ok,
//! warn, fail (or skip, when it does not apply) and, when not ok, the exact
//! fix. The state of the disk, the mount, the instance dirs, the bind and
//! the last run comes from `status::gather`; doctor adds the checks of the
//! surroundings (udev, interop, the scheduled task, nix-daemon) and the
//! fixes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::boot::device::{self, BY_ID};
use crate::boot::mount;
use crate::config::{Config, Trigger};
use crate::exit::Exit;
use crate::status::{self, Status};
use crate::store;
use crate::windows::trigger::{self, run_program, TaskVerdict, TriggerOutcome};
use crate::windows::{install, script};

/// The marker unit of the NixOS module, which nix-daemon is ordered after.
pub const MARKER_UNIT: &str = "nix-mount-marker.service";
const UDEV_CONTROL: &str = "/run/udev/control";
/// How much of the log file doctor shows.
const LOG_TAIL_LINES: usize = 20;
/// For the local tools (udevadm, systemctl); Windows tools get triggerTimeout.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
    /// Does not apply to this config or this system.
    Skip,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
            Level::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: String,
    pub level: Level,
    pub message: String,
    /// What to do, when the level is warn or fail.
    pub fix: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// No check failed (warnings allowed).
    pub ok: bool,
    pub checks: Vec<Check>,
    pub log_file: Option<String>,
    pub log_tail: Vec<String>,
    /// What `status --json` prints, when the config could be read.
    pub status: Option<Status>,
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn add(&mut self, id: &str, level: Level, message: impl Into<String>, fix: Option<String>) {
        self.0.push(Check {
            id: id.to_string(),
            level,
            message: message.into(),
            fix: if matches!(level, Level::Warn | Level::Fail) {
                fix
            } else {
                None
            },
        });
    }
    fn ok(&mut self, id: &str, message: impl Into<String>) {
        self.add(id, Level::Ok, message, None);
    }
    fn skip(&mut self, id: &str, message: impl Into<String>) {
        self.add(id, Level::Skip, message, None);
    }
    fn warn(&mut self, id: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.add(id, Level::Warn, message, Some(fix.into()));
    }
    fn fail(&mut self, id: &str, message: impl Into<String>, fix: impl Into<String>) {
        self.add(id, Level::Fail, message, Some(fix.into()));
    }
}

pub fn run(config_path: &Path, json: bool, boot_root: &Path) -> Result<Exit> {
    let report = diagnose(config_path, boot_root);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)
    } else {
        write!(out, "{}", render(&report))
    }
    .context("writing the report to stdout")?;
    Ok(if report.ok {
        Exit::Success
    } else {
        Exit::Unexpected
    })
}

pub fn diagnose(config_path: &Path, boot_root: &Path) -> Report {
    let mut checks = Checks::default();
    let cfg = match crate::load_config(config_path) {
        Ok(cfg) => {
            checks.ok("config", format!("{} is valid", config_path.display()));
            Some(cfg)
        }
        Err(e) => {
            checks.fail(
                "config",
                format!("{e:#}"),
                "fix each key listed (`wsl-storage-mount --config FILE check` lists them; the NixOS module runs the same check when it builds the config, so `nixos-rebuild build` shows them too)",
            );
            None
        }
    };
    let Some(cfg) = cfg else {
        // What can be said without a config.
        check_udev(&mut checks, false);
        check_dev_disk(&mut checks, false);
        return Report {
            ok: false,
            checks: checks.0,
            log_file: None,
            log_tail: Vec::new(),
            status: None,
        };
    };

    let st = status::gather(&cfg, boot_root);
    // Without fsUuid, fsLabel or device, only the udev links find the disk.
    let links_needed = cfg.fs_uuid.is_none() && cfg.fs_label.is_none() && cfg.device.is_none();

    check_device(&mut checks, &cfg, &st);
    check_links(&mut checks, &cfg, &st);
    check_udev(&mut checks, links_needed);
    check_dev_disk(&mut checks, links_needed);
    let task_run = check_windows(&mut checks, &cfg);
    check_installed_script(&mut checks, &cfg, task_run.as_ref());
    check_execution_policy(&mut checks, &cfg);
    check_wsl_version(&mut checks, &cfg);
    check_mnt_guard(&mut checks);
    check_mount(&mut checks, &cfg, &st);
    check_instance_dirs(&mut checks, &cfg, &st);
    check_quotas(&mut checks, &cfg, &st);
    check_bind(&mut checks, &cfg, &st);
    check_boot_generation(&mut checks, &st);
    check_nix_daemon(&mut checks, &cfg);
    check_last_run(&mut checks, &st);
    let log_tail = check_log(&mut checks, &cfg);

    Report {
        ok: !checks.0.iter().any(|c| c.level == Level::Fail),
        checks: checks.0,
        log_file: Some(cfg.log_file.clone()),
        log_tail,
        status: Some(st),
    }
}

/// How to get the disk attached, for this config's trigger.
fn attach_fix(cfg: &Config) -> String {
    let by_hand = "in an elevated PowerShell: `wsl --mount \\\\.\\PHYSICALDRIVE<n> --bare` (<n> from `Get-Disk`), or run attach.ps1 there";
    let then = "then `systemctl restart wsl-storage-mount`";
    match cfg.windows.trigger {
        Trigger::Task => format!(
            "attach the disk: `{} /Run /TN \"{}\"` starts the elevated task (its transcript tells why it did not attach: windows.logPath, default %ProgramData%\\wsl-storage-mount\\attach.log); or {by_hand}; {then}",
            cfg.windows.schtasks_path,
            script::task_name(&cfg.windows)
        ),
        _ => format!(
            "attach the disk {by_hand} (register-task.ps1 makes a logon task that does it, and windows.trigger = \"task\" lets the boot start it); {then}"
        ),
    }
}

fn check_device(checks: &mut Checks, cfg: &Config, st: &Status) {
    let Some(dev) = &st.device else {
        let message = st
            .problems
            .first()
            .cloned()
            .unwrap_or_else(|| format!("device not present ({})", cfg.identity()));
        let fix = if message.starts_with("device not present") {
            attach_fix(cfg)
        } else {
            // An ambiguity: the message says what to do.
            "see the message: make the identity point at exactly one device".to_string()
        };
        checks.fail("device", message, fix);
        return;
    };
    let node = &dev.node;
    let Some(fs) = &dev.filesystem else {
        // Described by what libblkid sees: a partitioned disk names its
        // partitions, and only a blank device gets the mkfs hint.
        let path = std::path::Path::new(node);
        let (what, fix) = match crate::boot::probe::probe_contents(path) {
            Ok(contents) => crate::boot::unusable(cfg, path, &contents),
            Err(e) => (
                format!("cannot be probed: {e}"),
                "check that the identity points at the storage disk (`lsblk -f`)".to_string(),
            ),
        };
        checks.fail("device", format!("{node} ({}) {what}", dev.via), fix);
        return;
    };
    if !fs.matches_type(&cfg.fs_type) {
        checks.fail(
            "device",
            format!(
                "{node} ({}) holds {}, not fsType {}",
                dev.via, fs.fs_type, cfg.fs_type
            ),
            crate::boot::wrong_type_fix(&fs.fs_type),
        );
        return;
    }
    if let Some(uuid) = &cfg.fs_uuid {
        if !fs.uuid_is(uuid) {
            checks.fail(
                "device",
                format!(
                    "{node} ({}) has filesystem UUID {}, not fsUuid {uuid}",
                    dev.via,
                    fs.uuid.as_deref().unwrap_or("(none)")
                ),
                format!("the identity points at another disk: fix deviceId/device, or fsUuid (`blkid {node}` prints it)"),
            );
            return;
        }
    }
    if let Some(label) = &cfg.fs_label {
        if !fs.label_is(label) {
            checks.fail(
                "device",
                format!(
                    "{node} ({}) has label {}, not fsLabel {label}",
                    dev.via,
                    fs.label.as_deref().unwrap_or("(none)")
                ),
                format!("the identity points at another disk: fix deviceId/device, or fsLabel (`blkid {node}` prints it)"),
            );
            return;
        }
    }
    checks.ok(
        "device",
        format!(
            "{node} ({}): {} UUID={} LABEL={}",
            dev.via,
            fs.fs_type,
            fs.uuid.as_deref().unwrap_or("-"),
            fs.label.as_deref().unwrap_or("-")
        ),
    );
}

/// The names in /dev/disk/by-id, with the device node each resolves to.
fn by_id_names() -> BTreeMap<String, Option<String>> {
    let Ok(entries) = fs::read_dir(BY_ID) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .map(|e| {
            let node = fs::canonicalize(e.path())
                .ok()
                .map(|p| p.display().to_string());
            (e.file_name().to_string_lossy().into_owned(), node)
        })
        .collect()
}

fn check_links(checks: &mut Checks, cfg: &Config, st: &Status) {
    let found = st.device.as_ref();
    if let Some(id) = &cfg.device_id {
        let link = Path::new(BY_ID).join(id);
        let link_node = fs::canonicalize(&link)
            .ok()
            .map(|p| p.display().to_string());
        if let Some(node) = link_node.filter(|_| link.exists()) {
            checks.ok("device-links", format!("{} -> {node}", link.display()));
            return;
        }
        let names = by_id_names();
        let listed = if names.is_empty() {
            "/dev/disk/by-id is empty or missing".to_string()
        } else {
            format!(
                "names in {BY_ID}: {}",
                names.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        match found {
            Some(dev) => {
                let same: Vec<&String> = names
                    .iter()
                    .filter(|(_, n)| n.as_deref() == Some(dev.node.as_str()))
                    .map(|(name, _)| name)
                    .collect();
                let instead = match same.first() {
                    Some(name) => format!("set deviceId = \"{name}\" (it points at {})", dev.node),
                    None => "remove deviceId".to_string(),
                };
                checks.warn(
                    "device-links",
                    format!(
                        "deviceId {id} is absent from {BY_ID}, but the disk was found: {} ({}); {listed}",
                        dev.node, dev.via
                    ),
                    format!(
                        "a disk attached with `wsl --mount --bare` is a SCSI disk inside WSL (sdX), so an nvme-... by-id name does not exist there: {instead}, and let fsUuid/fsLabel find the disk"
                    ),
                );
            }
            None => checks.warn(
                "device-links",
                format!("deviceId {id} is absent from {BY_ID}; {listed}"),
                "once the disk is attached, set deviceId to one of the names that exist, or rely on fsUuid (`blkid` prints it)",
            ),
        }
        return;
    }
    match found {
        Some(dev) if dev.via.contains("by probing") => checks.warn(
            "device-links",
            format!(
                "{} was found only by probing the block devices: udev made no /dev/disk/by-uuid or by-label link for it",
                dev.node
            ),
            "nothing breaks (the helper probes), but udev should make the links: see the udev check",
        ),
        Some(dev) => checks.ok("device-links", dev.via.clone()),
        None => checks.skip("device-links", "the device is not present"),
    }
}

fn check_udev(checks: &mut Checks, links_needed: bool) {
    if Path::new(UDEV_CONTROL).exists() {
        checks.ok("udev", format!("{UDEV_CONTROL} exists"));
        return;
    }
    let ping: Vec<String> = ["control", "--ping"].map(String::from).to_vec();
    let outcome = run_program(
        Path::new("udevadm"),
        &ping,
        LOCAL_TIMEOUT,
        &AtomicBool::new(false),
        "not installed, or not in PATH",
    );
    if outcome.succeeded() {
        checks.ok("udev", "`udevadm control --ping` answered");
        return;
    }
    let message = format!(
        "udev is not running (no {UDEV_CONTROL}; `udevadm control --ping` {}): no /dev/disk/by-* links",
        outcome.summary()
    );
    let fix = "NixOS-WSL turns udev off by default (services.udev.enable = mkDefault false); the module sets it to true: check `systemctl status systemd-udevd` and that nothing in your config sets services.udev.enable = false";
    if links_needed {
        checks.fail(
            "udev",
            message,
            format!("{fix}; or set fsUuid, which works without udev"),
        );
    } else {
        checks.warn(
            "udev",
            message,
            format!("{fix} (the helper still finds the disk by probing for fsUuid/fsLabel)"),
        );
    }
}

fn check_dev_disk(checks: &mut Checks, links_needed: bool) {
    if Path::new("/dev/disk").is_dir() {
        let count = |d: &str| fs::read_dir(d).map_or(0, Iterator::count);
        checks.ok(
            "dev-disk",
            format!(
                "/dev/disk is present (by-id: {}, by-uuid: {}, by-label: {} entries)",
                count(device::BY_ID),
                count(device::BY_UUID),
                count(device::BY_LABEL)
            ),
        );
        return;
    }
    let message = "/dev/disk does not exist (udev has not run)";
    let fix = "enable udev (see the udev check); without it only probing by fsUuid/fsLabel finds the disk";
    if links_needed {
        checks.fail("dev-disk", message, fix);
    } else {
        checks.warn("dev-disk", message, fix);
    }
}

/// Interop and the Windows side: the configured executable runs, and the
/// task exists (trigger "task") or the script is there (trigger "script").
fn check_windows(checks: &mut Checks, cfg: &Config) -> Option<trigger::TaskRun> {
    let win = &cfg.windows;
    let (program, key, args) = match win.trigger {
        Trigger::None => {
            checks.skip(
                "interop",
                "windows.trigger is \"none\": the boot does not start anything on Windows",
            );
            checks.skip("windows-task", "windows.trigger is \"none\"");
            return None;
        }
        Trigger::Task => (
            &win.schtasks_path,
            "windows.schtasksPath",
            // The verbose CSV also tells the last result (see
            // trigger::parse_task_query for how it is read).
            [
                "/Query",
                "/TN",
                &script::task_name(&cfg.windows),
                "/V",
                "/FO",
                "CSV",
                "/NH",
            ]
            .map(String::from)
            .to_vec(),
        ),
        Trigger::Script => {
            let path = win.script_path.clone().unwrap_or_default();
            (
                &win.powershell_path,
                "windows.powershellPath",
                vec![
                    "-NoProfile".to_string(),
                    "-NonInteractive".to_string(),
                    "-Command".to_string(),
                    format!(
                        "if (Test-Path -LiteralPath ([Environment]::ExpandEnvironmentVariables({}))) {{ exit 0 }} else {{ exit 3 }}",
                        script::ps_quote(&path)
                    ),
                ],
            )
        }
    };
    let interop_fix = format!(
        "check that the Windows drive is mounted (`ls {}`) and interop is on ([interop] enabled = true in /etc/wsl.conf; `ls /proc/sys/fs/binfmt_misc/WSLInterop`); the path prefix follows wsl.conf's automount.root: fix {key} if it differs; after changing wsl.conf run `wsl --shutdown` in Windows",
        drive_dir(Path::new(program))
    );
    let id = if win.trigger == Trigger::Task {
        "windows-task"
    } else {
        "windows-script"
    };
    let outcome = run_program(
        Path::new(program),
        &args,
        Duration::from_secs(win.trigger_timeout),
        &AtomicBool::new(false),
        &format!("Windows interop or the drive not ready, or a wrong path in {key}"),
    );
    let (code, output) = match outcome {
        TriggerOutcome::Exited { code, output } => (code, output),
        TriggerOutcome::TimedOut { .. } => {
            checks.warn(
                "interop",
                format!(
                    "{program} did not answer within windows.triggerTimeout ({} s)",
                    win.trigger_timeout
                ),
                format!("interop may still be starting; run doctor again in a minute, else {interop_fix}"),
            );
            checks.skip(id, "interop did not answer");
            return None;
        }
        other => {
            checks.fail("interop", format!("{key} {}", other.summary()), interop_fix);
            checks.skip(id, "interop is not usable");
            return None;
        }
    };
    checks.ok("interop", format!("{program} runs"));
    let first = output
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string();
    let code_text = code.map_or("a signal".to_string(), |c| c.to_string());
    let mut task_run = None;
    match win.trigger {
        Trigger::Task if code == Some(0) => {
            let name = script::task_name(&cfg.windows);
            task_run = trigger::parse_task_query(&output, &name);
            match task_run
                .clone()
                .map(|run| (run.last_run, trigger::describe_task_result(run.last_result)))
            {
                Some((when, (TaskVerdict::Failed, what))) => checks.warn(
                    id,
                    format!("scheduled task \"{name}\" exists; its last run ({when}): {what}"),
                    format!(
                        "read its transcript ({}), fix what it names, then run it again: `{} /Run /TN \"{name}\"`",
                        win.log_path.as_deref().unwrap_or(script::DEFAULT_LOG_PATH),
                        win.schtasks_path
                    ),
                ),
                Some((when, (_, what))) => checks.ok(
                    id,
                    format!("scheduled task \"{name}\" exists; its last run ({when}): {what}"),
                ),
                None => checks.ok(
                    id,
                    format!("scheduled task \"{name}\" exists (its last result could not be read)"),
                ),
            }
        }
        Trigger::Task => checks.fail(
            id,
            format!(
                "`schtasks /Query /TN \"{}\"` exited with {code_text}: {first}",
                script::task_name(&cfg.windows)
            ),
            "register the task once, in an elevated PowerShell: run register-task.ps1 (`sudo wsl-storage-mount install-windows-files` copies it to %USERPROFILE%\\wsl-storage-mount; or `wsl-storage-mount windows-task > register-task.ps1`)",
        ),
        _ if code == Some(0) => checks.warn(
            id,
            format!(
                "attach script {} exists; but the \"script\" trigger can attach only when WSL itself was started elevated",
                win.script_path.as_deref().unwrap_or("")
            ),
            "use windows.trigger = \"task\" with the elevated task from register-task.ps1; if you keep the script trigger, WSL runs windows.scriptPath elevated, so keep it where only administrators can write: the copy register-task.ps1 installs, %ProgramData%\\wsl-storage-mount\\attach.ps1",
        ),
        _ => checks.fail(
            id,
            format!(
                "attach script {} is not there (powershell exited with {code_text})",
                win.script_path.as_deref().unwrap_or("")
            ),
            "copy it there: `sudo wsl-storage-mount install-windows-files --dir <that dir as a Linux path>`, or fix windows.scriptPath",
        ),
    }
    task_run
}

/// The attach.ps1 the task runs is the copy register-task.ps1 installed in
/// %ProgramData%\wsl-storage-mount (read here through the automount path
/// that windows.schtasksPath shows): it must be what this config generates,
/// or the task attaches with old settings. Compared by SHA-256.
fn check_installed_script(checks: &mut Checks, cfg: &Config, task_run: Option<&trigger::TaskRun>) {
    let id = "windows-installed-script";
    if cfg.windows.trigger != Trigger::Task {
        checks.skip(id, "windows.trigger is not \"task\"");
        return;
    }
    let Ok(expected) = script::attach_script(cfg) else {
        checks.skip(
            id,
            "the config gives no attach.ps1 (diskSerialNumber is not set)",
        );
        return;
    };
    let (program_data, dir) = match install::windows_dir(cfg, "%ProgramData%") {
        Ok(found) => found,
        Err(why) => {
            checks.skip(id, format!("Windows is out of reach: {why}"));
            return;
        }
    };
    let windows_path = format!(
        "{}\\{}\\{}",
        program_data.trim_end_matches('\\'),
        script::INSTALL_SUBDIR,
        script::ATTACH_FILE
    );
    let linux_path = dir.join(script::INSTALL_SUBDIR).join(script::ATTACH_FILE);
    let update = format!(
        "stage the scripts with `sudo wsl-storage-mount install-windows-files`, then run register-task.ps1 again in an elevated PowerShell: `powershell.exe -NoProfile -ExecutionPolicy Bypass -File $env:USERPROFILE\\{}\\{}` (it installs attach.ps1 for the task; nothing started from Linux can, by design)",
        script::INSTALL_SUBDIR,
        script::REGISTER_FILE
    );
    // A task registered by an older register-task.ps1 runs the copy in the
    // user's profile, which any unelevated program can replace.
    if let Some(run) = task_run.filter(|r| !r.task_to_run.is_empty()) {
        if !run
            .task_to_run
            .to_ascii_lowercase()
            .contains(&windows_path.to_ascii_lowercase())
        {
            checks.fail(
                id,
                format!(
                    "the task runs `{}`, not {windows_path}: a script outside the administrators-only directory can be replaced by any program without elevation, which then gets administrator rights at the next start of the task",
                    run.task_to_run
                ),
                update,
            );
            return;
        }
    }
    let want = script::sha256_hex(expected.as_bytes());
    match read_small_regular_file(&linux_path) {
        Ok(bytes) => {
            let have = script::sha256_hex(&bytes);
            if have == want {
                checks.ok(
                    id,
                    format!("{windows_path} is what the config generates (SHA-256 {want})"),
                );
            } else {
                checks.warn(
                    id,
                    format!("{windows_path}, which the task runs, is not what the config generates: SHA-256 {have}, the config gives {want}"),
                    update,
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => checks.fail(
            id,
            format!(
                "{windows_path} (at {}) does not exist: the task has no script to run",
                linux_path.display()
            ),
            update,
        ),
        Err(e) => checks.fail(
            id,
            format!(
                "cannot read {windows_path} (at {}): {e}",
                linux_path.display()
            ),
            update,
        ),
    }
}

/// The execution policies Group Policy sets (scopes MachinePolicy and
/// UserPolicy) take precedence over `-ExecutionPolicy Bypass` on the
/// command line (about_Execution_Policies, "Execution policy precedence"):
/// AllSigned or Restricted there makes powershell.exe refuse the unsigned
/// attach.ps1, and the task ends with 1, which also means "no disk". Asked
/// of the user's own, unelevated powershell.exe: both scopes are the same
/// for the task, which runs as that user.
fn check_execution_policy(checks: &mut Checks, cfg: &Config) {
    let id = "windows-execution-policy";
    let win = &cfg.windows;
    if win.trigger == Trigger::None {
        checks.skip(id, "windows.trigger is \"none\"");
        return;
    }
    let args: Vec<String> = [
        "-NoProfile",
        "-NonInteractive",
        "-Command",
        "'MachinePolicy=' + (Get-ExecutionPolicy -Scope MachinePolicy); 'UserPolicy=' + (Get-ExecutionPolicy -Scope UserPolicy)",
    ]
    .map(String::from)
    .to_vec();
    let output = match run_program(
        Path::new(&win.powershell_path),
        &args,
        Duration::from_secs(win.trigger_timeout),
        &AtomicBool::new(false),
        "windows.powershellPath",
    ) {
        TriggerOutcome::Exited {
            code: Some(0),
            output,
        } => output,
        other => {
            checks.skip(
                id,
                format!("cannot ask powershell.exe: {}", other.summary()),
            );
            return;
        }
    };
    let policies: BTreeMap<&str, &str> = output
        .lines()
        .filter_map(|l| l.trim().split_once('='))
        .filter(|(scope, _)| matches!(*scope, "MachinePolicy" | "UserPolicy"))
        .collect();
    if policies.len() != 2 {
        checks.skip(
            id,
            format!(
                "cannot read the execution policies from {:?}",
                output.trim()
            ),
        );
        return;
    }
    let blocking: Vec<String> = policies
        .iter()
        .filter(|(_, policy)| matches!(**policy, "AllSigned" | "Restricted"))
        .map(|(scope, policy)| format!("{scope} {policy}"))
        .collect();
    let all = policies
        .iter()
        .map(|(scope, policy)| format!("{scope} {policy}"))
        .collect::<Vec<_>>()
        .join(", ");
    if blocking.is_empty() {
        checks.ok(
            id,
            format!("no Group Policy execution policy stops attach.ps1 ({all})"),
        );
    } else {
        checks.fail(
            id,
            format!(
                "Group Policy sets the execution policy ({}); it overrides -ExecutionPolicy Bypass, so powershell.exe refuses the unsigned attach.ps1 and the task ends with 1 without a transcript entry",
                blocking.join(", ")
            ),
            "ask whoever manages this Windows to allow local scripts (RemoteSigned or less strict) in \"Turn on Script Execution\" (Computer or User Configuration > Administrative Templates > Windows Components > Windows PowerShell), or sign attach.ps1 with a trusted code-signing certificate after every register-task.ps1; `Get-ExecutionPolicy -List` shows the scopes",
        );
    }
}

/// The WSL release, from `wsl.exe --version` beside windows.schtasksPath in
/// System32. The WSL that came with Windows (before the Store WSL) knows no
/// --version and has neither `wsl --mount --bare` fixes nor
/// wsl-mnt-guard.service. The first line is "WSL version: 2.x.y.z" with a
/// localized label, so only the number is read.
fn check_wsl_version(checks: &mut Checks, cfg: &Config) {
    let id = "wsl-version";
    let wsl = Path::new(&cfg.windows.schtasks_path).with_file_name("wsl.exe");
    let args = vec!["--version".to_string()];
    let outcome = run_program(
        &wsl,
        &args,
        Duration::from_secs(cfg.windows.trigger_timeout),
        &AtomicBool::new(false),
        "it lives beside windows.schtasksPath in System32",
    );
    match outcome {
        TriggerOutcome::Exited {
            code: Some(0),
            output,
        } => match wsl_version(&output) {
            Some(version) => checks.ok(id, format!("WSL {version} (`wsl.exe --version`)")),
            None => checks.warn(
                id,
                format!("cannot read a version from `wsl.exe --version`: {:?}", output.trim()),
                "`wsl --version` in PowerShell shows it; `wsl --update` installs the current WSL",
            ),
        },
        TriggerOutcome::Exited { .. } => checks.warn(
            id,
            "`wsl.exe --version` failed: this looks like the WSL that came with Windows, which predates the Store WSL's fixes (wsl-mnt-guard.service among them)",
            "`wsl --update` in PowerShell, then `wsl --shutdown`",
        ),
        other => checks.skip(id, format!("Windows is out of reach: {}", other.summary())),
    }
}

/// The first dotted number (2.4.13.0) on the first line that has one.
pub fn wsl_version(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        line.split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .map(|w| w.trim_matches('.'))
            .find(|w| w.split('.').count() >= 3 && w.split('.').all(|p| !p.is_empty()))
            .map(String::from)
    })
}

/// WSL's wsl-mnt-guard.service (generated by WSL's systemd generator since
/// the fix for microsoft/WSL#41084, WSL PR #41086): without it, a graceful
/// shutdown or idle stop of any other systemd distro unmounts the shared
/// /mnt/wsl/* mounts in every distro. On NixOS its ExecStart=/bin/true did
/// not exist until NixOS-WSL#1101 (issue #1100): the unit fails with
/// 203/EXEC and guards nothing.
fn check_mnt_guard(checks: &mut Checks) {
    let id = "wsl-mnt-guard";
    let args: Vec<String> = [
        "show",
        "-p",
        "LoadState",
        "-p",
        "ActiveState",
        "-p",
        "SubState",
        "-p",
        "Result",
        "-p",
        "ExecMainStatus",
        "wsl-mnt-guard.service",
    ]
    .map(String::from)
    .to_vec();
    let output = match run_program(
        Path::new("systemctl"),
        &args,
        LOCAL_TIMEOUT,
        &AtomicBool::new(false),
        "not installed, or not in PATH",
    ) {
        TriggerOutcome::Exited {
            code: Some(0),
            output,
        } => output,
        other => {
            checks.skip(
                id,
                format!(
                    "systemd is not running here (`systemctl show` {})",
                    other.summary()
                ),
            );
            return;
        }
    };
    let props: BTreeMap<&str, &str> = output
        .split("\n\n")
        .next()
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    let get = |k: &str| props.get(k).copied().unwrap_or("");
    let update = "update WSL (`wsl --update` in PowerShell, then `wsl --shutdown`)";
    match (get("LoadState"), get("ActiveState")) {
        ("not-found", _) => checks.warn(
            id,
            "wsl-mnt-guard.service does not exist: this WSL predates the fix for microsoft/WSL#41084, so stopping any other systemd distro (shutdown or idle stop) unmounts the shared /mnt/wsl/* mounts in this one too",
            update,
        ),
        (_, "active") => checks.ok(
            id,
            format!("wsl-mnt-guard.service is active ({}): WSL guards /mnt/wsl against other distros' shutdown", get("SubState")),
        ),
        (_, "") => checks.skip(id, format!("cannot read `systemctl show` output: {:?}", output.trim())),
        (_, state) => {
            let status = get("ExecMainStatus");
            let exec = if status == "203" {
                " (status 203/EXEC: its ExecStart=/bin/true does not exist, as on NixOS before NixOS-WSL#1101)"
            } else {
                ""
            };
            checks.warn(
                id,
                format!(
                    "wsl-mnt-guard.service is {state} (result {}, status {status}){exec}: it does not guard /mnt/wsl, so stopping another systemd distro unmounts the shared /mnt/wsl/* mounts here",
                    get("Result")
                ),
                "update NixOS-WSL (its fix for issue #1100 provides /bin/true), or give the unit a drop-in: systemd.services.wsl-mnt-guard = { overrideStrategy = \"asDropin\"; serviceConfig.ExecStart = [ \"\" \"${pkgs.coreutils}/bin/true\" ]; }; then `systemctl restart wsl-mnt-guard`; `journalctl -u wsl-mnt-guard` says why it stopped",
            );
        }
    }
}

/// A regular file of at most 1 MiB, opened without following a symlink and
/// without blocking on a FIFO.
fn read_small_regular_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > 1 << 20 {
        return Err(std::io::Error::other(
            "larger than 1 MiB, not an attach.ps1",
        ));
    }
    let mut bytes = Vec::new();
    file.take(1 << 20).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The Windows drive a program lives on, as a Linux path: the parent of
/// its `Windows` directory (`/mnt/c`).
fn drive_dir(program: &Path) -> String {
    program
        .ancestors()
        .find(|a| {
            a.file_name()
                .is_some_and(|n| n.eq_ignore_ascii_case("Windows"))
        })
        .and_then(Path::parent)
        .map_or("/mnt/c".to_string(), |p| p.display().to_string())
}

fn check_mount(checks: &mut Checks, cfg: &Config, st: &Status) {
    let mp = &cfg.mount_point;
    let Some(m) = &st.mount else {
        checks.fail(
            "mount",
            format!("nothing is mounted at {mp}"),
            "`systemctl restart wsl-storage-mount` once the device check is ok; why it did not mount: `journalctl -b -u wsl-storage-mount` and the log below",
        );
        return;
    };
    if !m.is_configured_device {
        checks.fail(
            "mount",
            format!("{} is mounted at {mp}, not the configured device", m.source),
            format!("unmount it (`umount {mp}`) or choose another mountPoint, then `systemctl restart wsl-storage-mount`"),
        );
        return;
    }
    let have: Vec<&str> = m.options.split(',').collect();
    let missing: Vec<&str> = mount::expected_flag_words(cfg)
        .into_iter()
        .filter(|w| !have.contains(w))
        .collect();
    if !missing.is_empty() {
        checks.fail(
            "mount",
            format!(
                "{mp} is mounted without {} (mounted with {})",
                missing.join(", "),
                m.options
            ),
            format!(
                "remount with the configured options: `mount -o remount,{} {mp}` (mountOptions applies at the next mount: `umount {mp} && systemctl restart wsl-storage-mount` also does it)",
                missing.join(",")
            ),
        );
        return;
    }
    if m.stacked > 1 {
        checks.warn(
            "mount",
            format!("{} mounts are stacked at {mp}", m.stacked),
            format!("`umount {mp}` until one is left (`findmnt {mp}`)"),
        );
        return;
    }
    checks.ok(
        "mount",
        format!("{} ({}) at {mp} with {}", m.source, m.fs_type, m.options),
    );
}

fn check_instance_dirs(checks: &mut Checks, cfg: &Config, st: &Status) {
    for (name, d) in &st.instance_dirs {
        let id = format!("instance-dir:{name}");
        let path = format!("{}/{name}", cfg.mount_point);
        let want = format!("{}:{} {}", d.want_owner, d.want_group, d.want_mode);
        match d.problem.as_deref() {
            None => checks.ok(&id, format!("{path} is {want}")),
            Some("storage not mounted") => checks.skip(&id, "the storage is not mounted"),
            Some("missing") => checks.fail(
                &id,
                format!("{path} is missing"),
                "`systemctl restart wsl-storage-mount` creates it",
            ),
            Some(p) if p.contains("symlink") || p.contains("not a directory") => checks.fail(
                &id,
                format!("{path} {p}"),
                format!("the helper never follows or replaces it: move it away (`mv {path} {path}.old`), then `systemctl restart wsl-storage-mount`"),
            ),
            Some(p) => checks.fail(
                &id,
                format!("{path}: {p}"),
                format!(
                    "`systemctl restart wsl-storage-mount` sets owner, group and mode; or by hand: `chown {}:{} {path} && chmod {} {path}`",
                    d.want_owner, d.want_group, d.want_mode
                ),
            ),
        }
    }
}

/// `instanceDirs.<name>.quota`: enforced, or the command that makes the
/// filesystem keep project quotas (the helper never changes features).
fn check_quotas(checks: &mut Checks, cfg: &Config, st: &Status) {
    use crate::boot::quota;
    for (name, spec) in &cfg.instance_dirs {
        if spec.quota.is_none() && spec.inode_quota.is_none() {
            continue;
        }
        let id = format!("quota:{name}");
        let path = format!("{}/{name}", cfg.mount_point);
        let (Some(dev), Some(_)) = (&st.device, &st.mount) else {
            checks.skip(&id, "the storage is not mounted");
            continue;
        };
        let dev = Path::new(&dev.node);
        if !quota::supported(dev) {
            checks.warn(
                &id,
                format!("{path} has a quota, but the filesystem keeps no project quotas: nothing is enforced"),
                quota::enable_command(cfg, dev),
            );
            continue;
        }
        let want_bytes = spec.quota.map(|b| b.div_ceil(1024) * 1024);
        match st.quotas.get(name) {
            Some(u) if u.limit_bytes == want_bytes && u.limit_inodes == spec.inode_quota => checks
                .ok(
                    &id,
                    format!(
                        "{path}: {} of {} (project {})",
                        crate::space::human_bytes(u.used_bytes),
                        u.limit_bytes
                            .map_or("no byte limit".into(), crate::space::human_bytes),
                        u.project
                    ),
                ),
            _ => checks.fail(
                &id,
                format!("{path}: the quota on the disk is not the configured one"),
                "`systemctl restart wsl-storage-mount` sets it",
            ),
        }
    }
}

fn check_bind(checks: &mut Checks, cfg: &Config, st: &Status) {
    let Some(b) = &st.bind else {
        checks.skip("bind", "bindMountNixStore is off");
        checks.skip("marker", "bindMountNixStore is off");
        return;
    };
    let marker = store::marker_path(cfg);
    if b.is_bind {
        checks.ok(
            "bind",
            format!("{} is the bind of {}", b.target, b.store_dir),
        );
    } else {
        let stamp = if st.stamp {
            "the stamp /run/wsl-storage-mount/bind-ok is present, so look at `systemctl status nix.mount`"
        } else {
            "the stamp /run/wsl-storage-mount/bind-ok is absent: `mount` did not verify the store this boot (see the last-run check)"
        };
        checks.fail(
            "bind",
            format!(
                "{} is not the bind of {} ({})",
                b.target,
                b.store_dir,
                b.mounted_source
                    .as_deref()
                    .map_or("nothing of its own is mounted there".to_string(), |m| format!("mounted: {m}"))
            ),
            format!("{stamp}; the bind happens at boot only, never from a switch: once the checks above are ok, restart this distro (`wsl --terminate <distro>` in Windows)"),
        );
    }
    if b.marker {
        checks.ok("marker", format!("{} is present", marker.display()));
    } else if b.is_bind {
        checks.fail(
            "marker",
            format!(
                "{} is missing although the bind is in place",
                marker.display()
            ),
            format!("`systemctl restart {MARKER_UNIT}` (then nix-daemon may start)"),
        );
    } else {
        checks.fail(
            "marker",
            format!("{} is missing", marker.display()),
            "it follows the bind: fix the bind check first",
        );
    }
}

/// `systemctl show -p ActiveState -p After` of the daemon's two units.
/// The VHDX boots what the disk's profile says was deployed last.
fn check_boot_generation(checks: &mut Checks, st: &Status) {
    let Some(b) = &st.boot else {
        return;
    };
    let is_bind = st.bind.as_ref().is_some_and(|b| b.is_bind);
    for hazard in &b.hazards {
        checks.fail(
            "vhdx-boot",
            hazard.clone(),
            "the message names the path and what to do",
        );
    }
    if let Some(e) = &b.error {
        // Not root: the namespace of the boot view. Anything else (a FIFO
        // or link planted in the VHDX's /nix, a locked or damaged
        // database): the message itself names the path and the fix.
        let fix = if nix::unistd::geteuid().is_root() {
            "see the message: it names the path and what to do; then `sudo wsl-storage-mount sync-boot`"
        } else {
            "run doctor as root (`sudo wsl-storage-mount doctor`): the VHDX's /nix is reached through a private mount namespace"
        };
        checks.fail(
            "boot-generation",
            format!("the VHDX store cannot be read: {e}"),
            fix,
        );
    } else if b.in_step {
        checks.ok(
            "boot-generation",
            format!(
                "the VHDX boots the disk's current system {}",
                b.vhdx_system.as_deref().unwrap_or("")
            ),
        );
    } else if is_bind {
        checks.fail(
            "boot-generation",
            format!(
                "the VHDX boots {} but the disk's current system is {}: the next start would undo the last deployment",
                b.vhdx_system.as_deref().unwrap_or("(nothing)"),
                b.disk_system.as_deref().unwrap_or("(nothing)")
            ),
            "sudo wsl-storage-mount sync-boot",
        );
    } else {
        checks.ok(
            "boot-generation",
            "/nix is not the bind, so deployments land in the VHDX store itself",
        );
    }
    if st.store_read_only == Some(false) {
        checks.fail(
            "store-read-only",
            "/nix/store is writable under the bind (NixOS-WSL mounts it read-only)",
            "sudo wsl-storage-mount mark",
        );
    }
}

fn check_nix_daemon(checks: &mut Checks, cfg: &Config) {
    let units = ["nix-daemon.service", "nix-daemon.socket"];
    let mut args: Vec<String> = ["show", "-p", "ActiveState", "-p", "After"]
        .map(String::from)
        .to_vec();
    args.extend(units.iter().map(|u| u.to_string()));
    let outcome = run_program(
        Path::new("systemctl"),
        &args,
        LOCAL_TIMEOUT,
        &AtomicBool::new(false),
        "not installed, or not in PATH",
    );
    let output = match outcome {
        TriggerOutcome::Exited {
            code: Some(0),
            output,
        } => output,
        other => {
            checks.skip(
                "nix-daemon",
                format!(
                    "systemd is not running here (`systemctl show` {})",
                    other.summary()
                ),
            );
            return;
        }
    };
    // One block of properties per unit, separated by an empty line.
    let blocks: Vec<BTreeMap<&str, &str>> = output
        .split("\n\n")
        .map(|block| {
            block
                .lines()
                .filter_map(|l| l.split_once('='))
                .collect::<BTreeMap<_, _>>()
        })
        .filter(|m| !m.is_empty())
        .collect();
    if blocks.len() != units.len() {
        checks.skip(
            "nix-daemon",
            format!("cannot read `systemctl show` output: {:?}", output.trim()),
        );
        return;
    }
    let state = |i: usize| blocks[i].get("ActiveState").copied().unwrap_or("unknown");
    let unordered: Vec<&str> = units
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            !blocks[*i]
                .get("After")
                .is_some_and(|a| a.split_whitespace().any(|u| u == MARKER_UNIT))
        })
        .map(|(_, u)| *u)
        .collect();
    if cfg.bind_mount_nix_store && !unordered.is_empty() {
        checks.fail(
            "nix-daemon",
            format!("{} not ordered after {MARKER_UNIT}: it may start on the VHDX store", unordered.join(" and ")),
            "the NixOS module adds this ordering when wslStorageMount.enable, bindMountNixStore and nix.enable are set: check that the module is imported and enabled, then `nixos-rebuild switch`",
        );
        return;
    }
    let (service, socket) = (state(0), state(1));
    let ordering = if cfg.bind_mount_nix_store {
        format!(", ordered after {MARKER_UNIT}")
    } else {
        String::new()
    };
    if service == "active" || socket == "active" {
        checks.ok(
            "nix-daemon",
            format!("nix-daemon.service {service}, nix-daemon.socket {socket}{ordering}"),
        );
    } else {
        checks.fail(
            "nix-daemon",
            format!("nix-daemon.service is {service} and nix-daemon.socket is {socket}"),
            "once the checks above are ok: `systemctl start nix-daemon.socket nix-daemon.service`; why it stopped: `systemctl status nix-daemon`",
        );
    }
}

fn check_last_run(checks: &mut Checks, st: &Status) {
    match &st.last_run {
        None => checks.warn(
            "last-run",
            "no `mount` run recorded since boot",
            "`systemctl start wsl-storage-mount` (and check it is enabled: `systemctl status wsl-storage-mount`)",
        ),
        Some(r) if r.outcome == "mounted" => checks.ok(
            "last-run",
            format!("{} at {}: {}", r.outcome, r.finished_at, r.message),
        ),
        Some(r) if r.outcome == "degraded" => checks.warn(
            "last-run",
            format!("degraded at {}: {}", r.finished_at, r.message),
            "onMissing = \"fallback\" kept /nix on the VHDX store: attach the disk, then restart this distro",
        ),
        Some(r) => checks.fail(
            "last-run",
            format!("{} (exit {}) at {}: {}", r.outcome, r.exit_code, r.finished_at, r.message),
            "fix the cause named in the message, then `systemctl restart wsl-storage-mount`",
        ),
    }
}

fn check_log(checks: &mut Checks, cfg: &Config) -> Vec<String> {
    match crate::log::read_file(std::path::Path::new(&cfg.log_file)) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let tail: Vec<String> = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..]
                .iter()
                .map(|l| l.to_string())
                .collect();
            checks.ok("log", format!("{} ({} lines)", cfg.log_file, lines.len()));
            tail
        }
        Err(e) => {
            checks.warn(
                "log",
                format!("cannot read {}: {e}", cfg.log_file),
                "the boot step writes it on its first run (`systemctl start wsl-storage-mount`); check logFile",
            );
            Vec::new()
        }
    }
}

pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let width = report.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for c in &report.checks {
        let _ = writeln!(
            out,
            "{:<4}  {:<width$}  {}",
            c.level.label(),
            c.id,
            c.message
        );
        if let Some(fix) = &c.fix {
            let _ = writeln!(out, "      {:<width$}  fix: {fix}", "");
        }
    }
    if let Some(log) = &report.log_file {
        if !report.log_tail.is_empty() {
            let _ = writeln!(out, "\nlast lines of {log}:");
            for line in &report.log_tail {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    let count = |l: Level| report.checks.iter().filter(|c| c.level == l).count();
    let _ = writeln!(
        out,
        "\ndoctor: {} ok, {} warning(s), {} failed, {} skipped",
        count(Level::Ok),
        count(Level::Warn),
        count(Level::Fail),
        count(Level::Skip)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wsl_version_is_the_number_not_the_label() {
        let out = "WSL-Version: 2.4.13.0\nKernelversion: 5.15.167.4-1\nWSLg-Version: 1.0.65\n";
        assert_eq!(wsl_version(out).as_deref(), Some("2.4.13.0"));
        assert_eq!(
            wsl_version("Version de WSL\u{a0}: 2.6.1.0\n").as_deref(),
            Some("2.6.1.0")
        );
        assert_eq!(wsl_version("Usage: wsl.exe [Argument]\n"), None);
    }

    #[test]
    fn the_drive_dir_is_the_parent_of_windows() {
        assert_eq!(
            drive_dir(Path::new(
                "/mnt/c/Windows/System32/WindowsPowerShell/v1.0/powershell.exe"
            )),
            "/mnt/c"
        );
        assert_eq!(
            drive_dir(Path::new("/c/WINDOWS/system32/schtasks.exe")),
            "/c"
        );
        assert_eq!(drive_dir(Path::new("/opt/schtasks.exe")), "/mnt/c");
    }

    #[test]
    fn fixes_are_kept_only_when_not_ok_and_rendered_under_the_check() {
        let mut checks = Checks::default();
        checks.add("a", Level::Ok, "fine", Some("ignored".into()));
        checks.fail("bb", "broken", "do this");
        assert!(checks.0[0].fix.is_none());
        let report = Report {
            ok: false,
            checks: checks.0,
            log_file: None,
            log_tail: Vec::new(),
            status: None,
        };
        let text = render(&report);
        assert!(text.contains("ok    a   fine\n"), "{text}");
        assert!(
            text.contains("FAIL  bb  broken\n          fix: do this\n"),
            "{text}"
        );
        assert!(
            text.contains("1 ok, 0 warning(s), 1 failed, 0 skipped"),
            "{text}"
        );
    }
}
