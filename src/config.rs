//! The JSON config. Its keys are the NixOS module's option names.
//!
//! The config is read by hand from a `serde_json::Value` rather than with
//! `#[derive(Deserialize)]` so that `check` can report *every* problem at
//! once, each by its JSON key and with the fix, instead of stopping at the
//! first one the way serde does.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::boot::mountopts;

pub const DEFAULT_CONFIG: &str = "/etc/wsl-storage-mount/config.json";
pub const DEFAULT_MOUNT_POINT: &str = "/mnt/wsl/storage";
pub const DEFAULT_LOG_FILE: &str = "/var/log/wsl-mount.log";
pub const DEFAULT_SCHTASKS: &str = "/mnt/c/Windows/System32/schtasks.exe";
pub const DEFAULT_POWERSHELL: &str =
    "/mnt/c/Windows/System32/WindowsPowerShell/v1.0/powershell.exe";
pub const DEFAULT_BIND_TARGET: &str = "/nix";

/// Filesystems the helper mounts (`fsType`); libblkid recognises more, and
/// anything else is named as what it is, never mounted.
pub const SUPPORTED_FS: &[&str] = &["ext2", "ext3", "ext4", "xfs", "btrfs", "vfat"];

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub device: Option<String>,
    pub device_id: Option<String>,
    pub fs_uuid: Option<String>,
    pub fs_label: Option<String>,
    pub mount_point: String,
    pub fs_type: String,
    pub mount_options: Vec<String>,
    pub wait_timeout: u64,
    pub fsck: bool,
    /// Seconds fsck may take before it is stopped (and the mount refused).
    pub fsck_timeout: u64,
    pub instance_dirs: BTreeMap<String, InstanceDir>,
    pub bind_mount_nix_store: bool,
    pub nix_store_subdir: Option<String>,
    pub nix_store_command: String,
    /// How many system generations the VHDX store keeps for booting.
    pub boot_generations: u64,
    pub bind_target: String,
    pub on_missing: OnMissing,
    pub disk_serial_number: Option<String>,
    pub mount_name: Option<String>,
    pub log_file: String,
    pub windows: WindowsConfig,
    /// Directories of the disk bound at paths of this instance (shared
    /// data), by path; the NixOS module's mount units make the binds.
    pub binds: BTreeMap<String, Bind>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bind {
    /// A directory directly under mountPoint.
    pub subdir: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDir {
    pub owner: Principal,
    pub group: Principal,
    /// Permission bits, at most 0o7777.
    #[serde(serialize_with = "serialize_mode")]
    pub mode: u32,
    /// Project quota: the most bytes the dir may hold (`quota`, "500G").
    pub quota: Option<u64>,
    /// Project quota: the most inodes (`inodeQuota`).
    pub inode_quota: Option<u64>,
}

fn serialize_mode<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

/// A user or group, by name or by numeric id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Principal {
    Id(u32),
    Name(String),
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Id(id) => write!(f, "{id}"),
            Principal::Name(name) => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    Block,
    Fallback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    None,
    Task,
    Script,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowsConfig {
    pub trigger: Trigger,
    pub task_name: Option<String>,
    pub script_path: Option<String>,
    pub schtasks_path: String,
    pub powershell_path: String,
    pub trigger_attempts: u32,
    pub trigger_timeout: u64,
    pub log_path: Option<String>,
}

/// One thing wrong with the config: the JSON key and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// All problems found in a config, printed one per line.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s) in the config:", self.0.len())?;
        for p in &self.0 {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Read a config file: a regular file only (through symlinks: NixOS's
/// /etc is links into the store), never waiting on a FIFO.
pub fn read_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

impl Config {
    /// Parse and validate a config document. Pure: touches no device and
    /// resolves no user names, so it runs in the Nix build sandbox.
    pub fn parse(text: &str) -> Result<Config, Problems> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            Problems(vec![Problem {
                key: "(document)".into(),
                message: format!(
                    "not valid JSON ({e}); write one JSON object such as {{\"fsUuid\": \"...\"}}"
                ),
            }])
        })?;
        let Value::Object(obj) = value else {
            return Err(Problems(vec![Problem {
                key: "(document)".into(),
                message: "the config must be a JSON object of settings".into(),
            }]));
        };
        let mut r = Reader::default();
        let config = r.config(&obj);
        if r.problems.is_empty() {
            Ok(config)
        } else {
            Err(Problems(r.problems))
        }
    }

    /// The directory that will be bound over `bindTarget`.
    pub fn store_dir(&self) -> Option<String> {
        self.nix_store_subdir
            .as_ref()
            .map(|sub| format!("{}/{}", self.mount_point.trim_end_matches('/'), sub))
    }

    /// A short human description of the configured device identity.
    pub fn identity(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.device {
            parts.push(format!("device {d}"));
        }
        if let Some(d) = &self.device_id {
            parts.push(format!("deviceId {d}"));
        }
        if let Some(u) = &self.fs_uuid {
            parts.push(format!("fsUuid {u}"));
        }
        if let Some(l) = &self.fs_label {
            parts.push(format!("fsLabel {l}"));
        }
        parts.join(", ")
    }
}

/// A filesystem UUID as blkid prints it for the supported filesystems:
/// 8-4-4-4-12 hex digits (ext2/3/4, xfs, btrfs) or a vfat volume id
/// XXXX-XXXX. Either case: by-uuid links are lower case for the first,
/// upper case for the second, and the comparison ignores case.
pub fn is_fs_uuid(u: &str) -> bool {
    let groups: Vec<&str> = u.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    (lens == [8, 4, 4, 4, 12] || lens == [4, 4])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A user's value quoted back in a message: at most 64 characters, so that
/// a huge value does not flood the journal.
pub fn echo(value: &str) -> String {
    const MAX: usize = 64;
    match value.char_indices().nth(MAX) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}... ({} bytes)", &value[..cut], value.len()),
    }
}

const TOP_KEYS: &[&str] = &[
    "device",
    "deviceId",
    "fsUuid",
    "fsLabel",
    "mountPoint",
    "fsType",
    "mountOptions",
    "waitTimeout",
    "fsck",
    "fsckTimeout",
    "instanceDirs",
    "bindMountNixStore",
    "nixStoreSubdir",
    "nixStoreCommand",
    "bootGenerations",
    "bindTarget",
    "onMissing",
    "diskSerialNumber",
    "mountName",
    "logFile",
    "windows",
    "binds",
];

const BIND_KEYS: &[&str] = &["subdir", "readOnly"];

const WINDOWS_KEYS: &[&str] = &[
    "trigger",
    "taskName",
    "scriptPath",
    "schtasksPath",
    "powershellPath",
    "triggerAttempts",
    "triggerTimeout",
    "logPath",
];

const INSTANCE_KEYS: &[&str] = &["owner", "group", "mode", "quota", "inodeQuota"];

#[derive(Default)]
struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn unknown_keys(&mut self, obj: &Map<String, Value>, known: &[&str], prefix: &str) {
        for key in obj.keys() {
            if !known.contains(&key.as_str()) {
                let hint = closest(key, known)
                    .map(|k| format!("did you mean \"{k}\"? "))
                    .unwrap_or_default();
                self.problem(
                    &format!("{prefix}{}", echo(key)),
                    format!("unknown key; {hint}known keys: {}", known.join(", ")),
                );
            }
        }
    }

    fn opt_string(&mut self, obj: &Map<String, Value>, key: &str, full: &str) -> Option<String> {
        match obj.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problem(
                    full,
                    format!("must be a string or null, not {}", kind(other)),
                );
                None
            }
        }
    }

    fn string(&mut self, obj: &Map<String, Value>, key: &str, full: &str, default: &str) -> String {
        self.opt_string(obj, key, full)
            .unwrap_or_else(|| default.to_string())
    }

    fn bool(&mut self, obj: &Map<String, Value>, key: &str, default: bool) -> bool {
        match obj.get(key) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.problem(key, format!("must be true or false, not {}", kind(other)));
                default
            }
        }
    }

    /// A whole number in `min..=max`; the module declares the same bounds
    /// (`types.ints.between`), so a value passes both or neither.
    fn uint(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        full: &str,
        default: u64,
        (min, max): (u64, u64),
    ) -> u64 {
        let why = match obj.get(key) {
            None | Some(Value::Null) => return default,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if (min..=max).contains(&v) => return v,
                _ => n.to_string(),
            },
            Some(other) => kind(other).to_string(),
        };
        self.problem(
            full,
            format!("must be a whole number from {min} to {max}, not {why}"),
        );
        default
    }

    fn config(&mut self, obj: &Map<String, Value>) -> Config {
        self.unknown_keys(obj, TOP_KEYS, "");

        let device = self.opt_string(obj, "device", "device");
        if let Some(d) = &device {
            self.abs_path("device", d);
        }
        let device_id = self.opt_string(obj, "deviceId", "deviceId");
        if let Some(id) = &device_id {
            if let Err(why) = single_component(id) {
                self.problem(
                    "deviceId",
                    format!("{why}; give the name of the link under /dev/disk/by-id, e.g. \"nvme-Samsung_SSD_990_PRO_4TB_S6Z2NJ0TC14842T\", or use \"device\" for a full path"),
                );
            }
        }
        let fs_uuid = self.opt_string(obj, "fsUuid", "fsUuid");
        if let Some(u) = &fs_uuid {
            if !is_fs_uuid(u) {
                self.problem(
                    "fsUuid",
                    format!("\"{}\" is not a filesystem UUID; copy it from `blkid` or `lsblk -f`: 8-4-4-4-12 hex digits for ext4, xfs and btrfs (e.g. \"0f3e5a8c-1c2d-4b6e-9f00-123456789abc\"), XXXX-XXXX for vfat (e.g. \"1234-ABCD\")", echo(u)),
                );
            }
        }
        let fs_label = self.opt_string(obj, "fsLabel", "fsLabel");
        if let Some(l) = &fs_label {
            if l.is_empty() || l.len() > 255 || l.contains(['/', '\0', '\n']) {
                self.problem(
                    "fsLabel",
                    "must be a non-empty label without '/' or a newline, as set by `e2label` or `mkfs.ext4 -L`",
                );
            }
        }
        if device.is_none() && device_id.is_none() && fs_uuid.is_none() && fs_label.is_none() {
            self.problem(
                "device",
                "no device identity: set at least one of \"fsUuid\" (recommended: `blkid` prints it), \"fsLabel\", \"deviceId\" or \"device\"",
            );
        }

        let bind_target = self.string(obj, "bindTarget", "bindTarget", DEFAULT_BIND_TARGET);
        let bind_target = self.abs_path("bindTarget", &bind_target);
        let mount_point = self.string(obj, "mountPoint", "mountPoint", DEFAULT_MOUNT_POINT);
        let mount_point = self.abs_path("mountPoint", &mount_point);
        if mount_point == "/" {
            self.problem(
                "mountPoint",
                "must not be / ; use e.g. \"/mnt/wsl/storage\"",
            );
        } else if is_within(&mount_point, &bind_target) || is_within(&bind_target, &mount_point) {
            self.problem(
                "mountPoint",
                format!("\"{}\" overlaps the bind target {bind_target}; mount the disk elsewhere, e.g. \"/mnt/wsl/storage\"", echo(&mount_point)),
            );
        } else if is_within(&mount_point, "/nix") {
            // As the module: the disk is mounted before its store is bound
            // over /nix, so it cannot live below /nix.
            self.problem(
                "mountPoint",
                format!(
                    "\"{}\" is under /nix; mount the disk elsewhere, e.g. \"/mnt/wsl/storage\"",
                    echo(&mount_point)
                ),
            );
        }

        let fs_type = self.string(obj, "fsType", "fsType", "ext4");
        if !SUPPORTED_FS.contains(&fs_type.as_str()) {
            self.problem(
                "fsType",
                format!(
                    "\"{}\" is not supported; use one of {}",
                    echo(&fs_type),
                    SUPPORTED_FS.join(", ")
                ),
            );
        }

        let mount_options = match obj.get("mountOptions") {
            None | Some(Value::Null) => vec!["noatime".to_string()],
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.problem(
                            &format!("mountOptions[{i}]"),
                            format!("must be a string such as \"noatime\", not {}", kind(other)),
                        ),
                    }
                }
                out
            }
            Some(other) => {
                self.problem(
                    "mountOptions",
                    format!(
                        "must be a list of strings such as [\"noatime\"], not {}",
                        kind(other)
                    ),
                );
                Vec::new()
            }
        };
        if let Err(why) = mountopts::parse(&mount_options) {
            self.problem("mountOptions", why);
        }

        let wait_timeout = self.uint(obj, "waitTimeout", "waitTimeout", 60, (1, 86_400));
        let fsck = self.bool(obj, "fsck", true);
        let fsck_timeout = self.uint(obj, "fsckTimeout", "fsckTimeout", 3600, (1, 86_400));

        let instance_dirs = self.instance_dirs(obj.get("instanceDirs"));

        let bind_mount_nix_store = self.bool(obj, "bindMountNixStore", false);
        let nix_store_subdir = self.opt_string(obj, "nixStoreSubdir", "nixStoreSubdir");
        match &nix_store_subdir {
            Some(sub) => {
                if let Err(why) = dir_name(sub) {
                    self.problem(
                        "nixStoreSubdir",
                        format!("\"{}\" {why}; use one directory name such as \"nixos-wsl-main\"", echo(sub)),
                    );
                } else if !instance_dirs.contains_key(sub) {
                    self.problem(
                        "nixStoreSubdir",
                        format!("\"{sub}\" is not one of instanceDirs; add instanceDirs.\"{sub}\" with its owner, group and mode (root, root, \"0755\" for a Nix store)"),
                    );
                }
            }
            None if bind_mount_nix_store => self.problem(
                "nixStoreSubdir",
                "bindMountNixStore is true but nixStoreSubdir is not set; name the instance dir that holds this instance's /nix, e.g. \"nixos-wsl-main\"",
            ),
            None => {}
        }
        if bind_mount_nix_store && fs_type == "vfat" {
            self.problem(
                "fsType",
                "\"vfat\" cannot hold a Nix store (no symlinks, no permissions); format the disk with ext4, xfs or btrfs, or set bindMountNixStore = false",
            );
        }
        let nix_store_command = self.string(obj, "nixStoreCommand", "nixStoreCommand", "nix-store");
        if nix_store_command.is_empty()
            || (nix_store_command.contains('/') && !nix_store_command.starts_with('/'))
        {
            self.problem(
                "nixStoreCommand",
                "must be an absolute path or a bare command name such as \"nix-store\"",
            );
        }

        let boot_generations = self.uint(obj, "bootGenerations", "bootGenerations", 2, (1, 1000));
        if boot_generations == 0 {
            self.problem(
                "bootGenerations",
                "must be at least 1: the VHDX keeps the generation it boots; 2 (the default) also keeps the one before",
            );
        }

        let on_missing = match self.opt_string(obj, "onMissing", "onMissing").as_deref() {
            None | Some("block") => OnMissing::Block,
            Some("fallback") => OnMissing::Fallback,
            Some(other) => {
                self.problem(
                    "onMissing",
                    format!("\"{}\" is not allowed; use \"block\" (keep nix-daemon off the VHDX store) or \"fallback\" (go on with the VHDX store)", echo(other)),
                );
                OnMissing::Block
            }
        };

        let disk_serial_number = self.opt_string(obj, "diskSerialNumber", "diskSerialNumber");
        if let Some(s) = &disk_serial_number {
            let ok = !s.trim().is_empty()
                && s.len() <= 128
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ' '));
            if !ok {
                self.problem(
                    "diskSerialNumber",
                    "may hold only letters, digits, '_', '.', '-' and spaces; copy it from `Get-PhysicalDisk | Select SerialNumber` in PowerShell",
                );
            } else if !crate::windows::script::normalize_serial(s)
                .chars()
                .any(|c| c.is_ascii_alphanumeric())
            {
                // attach.ps1 compares serials without '_', '.' and spaces;
                // an empty one would match every disk that reports none.
                self.problem(
                    "diskSerialNumber",
                    format!("\"{s}\" has no letter or digit once '_', '.' and spaces are dropped, as attach.ps1 compares serials; copy it from `Get-PhysicalDisk | Select SerialNumber` in PowerShell"),
                );
            }
        }
        let mount_name = self.opt_string(obj, "mountName", "mountName");
        if let Some(n) = &mount_name {
            if !is_safe_name(n) {
                self.problem(
                    "mountName",
                    "may hold only letters, digits, '_', '.' and '-' (at most 64), e.g. \"internal-4tb-nvme\"",
                );
            }
        }

        let log_file = self.string(obj, "logFile", "logFile", DEFAULT_LOG_FILE);
        let log_file = self.abs_path("logFile", &log_file);
        if log_file.contains('"') {
            // As the module's type: the path is quoted in logrotate's config.
            self.problem("logFile", "must not contain '\"'");
        }

        let windows = self.windows(obj.get("windows"), disk_serial_number.is_some());
        let binds = self.binds(
            obj.get("binds"),
            &mount_point,
            &bind_target,
            nix_store_subdir.as_deref(),
        );

        Config {
            device,
            device_id,
            fs_uuid,
            fs_label,
            mount_point,
            fs_type,
            mount_options,
            wait_timeout,
            fsck,
            fsck_timeout,
            instance_dirs,
            bind_mount_nix_store,
            nix_store_subdir,
            nix_store_command,
            boot_generations,
            bind_target,
            on_missing,
            disk_serial_number,
            mount_name,
            log_file,
            windows,
            binds,
        }
    }

    /// `binds`: path -> {subdir, readOnly}. A bind may not overlap the
    /// disk's mount point, the store's bind target or /nix, and may not
    /// expose the Nix store's own dir (a second, writable way into it).
    fn binds(
        &mut self,
        value: Option<&Value>,
        mount_point: &str,
        bind_target: &str,
        store_subdir: Option<&str>,
    ) -> BTreeMap<String, Bind> {
        let mut binds = BTreeMap::new();
        let obj = match value {
            None | Some(Value::Null) => return binds,
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                self.problem(
                    "binds",
                    format!(
                        "must be an object of path -> {{subdir, readOnly}}, e.g. {{\"/shared\": {{\"subdir\": \"shared\", \"readOnly\": true}}}}, not {}",
                        kind(other)
                    ),
                );
                return binds;
            }
        };
        for (path, spec) in obj {
            let key = format!("binds.\"{}\"", echo(path));
            let path = match normalize_abs(path) {
                Ok(p) => p,
                Err(why) => {
                    self.problem(&key, format!("the path \"{}\" {why}", echo(path)));
                    continue;
                }
            };
            for (other, what) in [
                (mount_point, "mountPoint"),
                (bind_target, "the store's bind target"),
                ("/nix", "/nix"),
            ] {
                if is_within(&path, other) || is_within(other, &path) {
                    self.problem(
                        &key,
                        format!("{path} overlaps {what} ({other}); bind the shared dir at a path of its own, e.g. \"/shared\""),
                    );
                }
            }
            let Value::Object(spec) = spec else {
                self.problem(
                    &key,
                    "must be an object {\"subdir\": \"shared\", \"readOnly\": true}",
                );
                continue;
            };
            self.unknown_keys(spec, BIND_KEYS, &format!("{key}."));
            let subdir = match spec.get("subdir") {
                Some(Value::String(sub)) => match dir_name(sub) {
                    Ok(()) if Some(sub.as_str()) == store_subdir => {
                        self.problem(
                            &format!("{key}.subdir"),
                            format!("\"{sub}\" is nixStoreSubdir: a bind of the Nix store's own dir would be a second way to write into it; bind another dir"),
                        );
                        continue;
                    }
                    Ok(()) => sub.clone(),
                    Err(why) => {
                        self.problem(
                            &format!("{key}.subdir"),
                            format!("\"{}\" {why}; use one directory name under mountPoint, such as \"shared\"", echo(sub)),
                        );
                        continue;
                    }
                },
                _ => {
                    self.problem(
                        &format!("{key}.subdir"),
                        "must be set to a directory name under mountPoint, such as \"shared\"",
                    );
                    continue;
                }
            };
            let read_only = match spec.get("readOnly") {
                None | Some(Value::Null) => true,
                Some(Value::Bool(b)) => *b,
                Some(other) => {
                    self.problem(
                        &format!("{key}.readOnly"),
                        format!("must be true or false, not {}", kind(other)),
                    );
                    continue;
                }
            };
            binds.insert(path, Bind { subdir, read_only });
        }
        binds
    }

    /// Validate an absolute path; returns it normalised (no `.`, no `//`,
    /// no trailing `/`).
    fn abs_path(&mut self, key: &str, path: &str) -> String {
        match normalize_abs(path) {
            Ok(p) => p,
            Err(why) => {
                self.problem(key, format!("\"{}\" {why}", echo(path)));
                path.to_string()
            }
        }
    }

    fn instance_dirs(&mut self, value: Option<&Value>) -> BTreeMap<String, InstanceDir> {
        let mut dirs = BTreeMap::new();
        let obj = match value {
            None | Some(Value::Null) => return dirs,
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                self.problem(
                    "instanceDirs",
                    format!(
                        "must be an object of dir name -> {{owner, group, mode}}, not {}",
                        kind(other)
                    ),
                );
                return dirs;
            }
        };
        for (name, spec) in obj {
            let key = format!("instanceDirs.{}", echo(name));
            if let Err(why) = dir_name(name) {
                self.problem(
                    &key,
                    format!(
                        "the name \"{}\" {why}; use one directory name such as \"nixos-wsl-dev\"",
                        echo(name)
                    ),
                );
                continue;
            }
            let Value::Object(spec) = spec else {
                self.problem(
                    &key,
                    "must be an object {\"owner\": ..., \"group\": ..., \"mode\": \"0755\"}",
                );
                continue;
            };
            self.unknown_keys(spec, INSTANCE_KEYS, &format!("{key}."));
            let owner = self.principal(spec.get("owner"), &format!("{key}.owner"), "user");
            let group = self.principal(spec.get("group"), &format!("{key}.group"), "group");
            let mode = self.mode(spec.get("mode"), &format!("{key}.mode"));
            let quota = match spec.get("quota") {
                None | Some(Value::Null) => None,
                Some(Value::String(q)) => match crate::boot::quota::parse_size(q) {
                    Ok(bytes) => Some(bytes),
                    Err(why) => {
                        self.problem(&format!("{key}.quota"), why);
                        None
                    }
                },
                Some(other) => {
                    self.problem(
                        &format!("{key}.quota"),
                        format!("must be a size such as \"500G\", not {}", kind(other)),
                    );
                    None
                }
            };
            let inode_quota = match spec.get("inodeQuota") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v > 0) => n.as_u64(),
                Some(other) => {
                    self.problem(
                        &format!("{key}.inodeQuota"),
                        format!(
                            "must be a whole number of inodes above 0 such as 1000000, not {other}"
                        ),
                    );
                    None
                }
            };
            if let (Some(owner), Some(group), Some(mode)) = (owner, group, mode) {
                dirs.insert(
                    name.clone(),
                    InstanceDir {
                        owner,
                        group,
                        mode,
                        quota,
                        inode_quota,
                    },
                );
            }
        }
        dirs
    }

    fn principal(&mut self, value: Option<&Value>, key: &str, what: &str) -> Option<Principal> {
        let fix = format!("give a {what} name such as \"root\" or a numeric id such as 1000");
        match value {
            None | Some(Value::Null) => Some(Principal::Id(0)),
            Some(Value::Number(n)) => match n.as_u64().and_then(|v| u32::try_from(v).ok()) {
                Some(id) if id != u32::MAX => Some(Principal::Id(id)),
                _ => {
                    self.problem(key, format!("{n} is not a valid id; {fix}"));
                    None
                }
            },
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                match s.parse::<u32>() {
                    Ok(id) if id != u32::MAX => Some(Principal::Id(id)),
                    _ => {
                        self.problem(key, format!("\"{}\" is not a valid id; {fix}", echo(s)));
                        None
                    }
                }
            }
            Some(Value::String(s)) if is_account_name(s) => Some(Principal::Name(s.clone())),
            Some(Value::String(s)) => {
                self.problem(key, format!("\"{}\" is not a {what} name; {fix}", echo(s)));
                None
            }
            Some(other) => {
                self.problem(key, format!("{} is not a {what}; {fix}", kind(other)));
                None
            }
        }
    }

    fn mode(&mut self, value: Option<&Value>, key: &str) -> Option<u32> {
        let fix = "write the mode as an octal string such as \"0755\" or \"0700\"";
        match value {
            None | Some(Value::Null) => Some(0o755),
            Some(Value::String(s)) => {
                let digits = s.strip_prefix("0o").unwrap_or(s);
                let ok = (3..=4).contains(&digits.len())
                    && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
                match u32::from_str_radix(digits, 8) {
                    Ok(m) if ok => Some(m),
                    _ => {
                        self.problem(key, format!("\"{}\" is not a mode; {fix}", echo(s)));
                        None
                    }
                }
            }
            Some(other) => {
                self.problem(
                    key,
                    format!(
                        "{} is not a mode; {fix} (a JSON number would be read as decimal)",
                        kind(other)
                    ),
                );
                None
            }
        }
    }

    fn windows(&mut self, value: Option<&Value>, have_serial: bool) -> WindowsConfig {
        let empty = Map::new();
        let obj = match value {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(obj)) => obj,
            Some(other) => {
                self.problem("windows", format!("must be an object, not {}", kind(other)));
                &empty
            }
        };
        self.unknown_keys(obj, WINDOWS_KEYS, "windows.");
        let trigger = match self
            .opt_string(obj, "trigger", "windows.trigger")
            .as_deref()
        {
            None | Some("none") => Trigger::None,
            Some("task") => Trigger::Task,
            Some("script") => Trigger::Script,
            Some(other) => {
                self.problem(
                    "windows.trigger",
                    format!("\"{}\" is not allowed; use \"none\", \"task\" (start the elevated scheduled task, recommended) or \"script\"", echo(other)),
                );
                Trigger::None
            }
        };
        let task_name = self.opt_string(obj, "taskName", "windows.taskName");
        if let Some(t) = &task_name {
            // '\\' separates task folders; the last part is the task itself.
            let ok = !t.trim().is_empty()
                && t.len() <= 200
                && t.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ' ' | '\\')
                })
                && !t.ends_with('\\')
                && t.split('\\')
                    .all(|part| part.trim() != "." && part.trim() != "..");
            if !ok {
                self.problem(
                    "windows.taskName",
                    "may hold only letters, digits, '_', '.', '-', spaces and '\\' (task folders), e.g. \"wsl-storage-mount\"",
                );
            } else if t
                .split('\\')
                .filter(|part| !part.is_empty())
                .any(|part| part.starts_with([' ', '.']) || part.ends_with([' ', '.']))
            {
                // Task Scheduler refuses such names, and the trigger,
                // doctor and register-task.ps1 would each see another task.
                self.problem(
                    "windows.taskName",
                    format!("\"{t}\": a task or folder name may not start or end with a space or '.', as Task Scheduler refuses them"),
                );
            }
        }
        let script_path = self.opt_string(obj, "scriptPath", "windows.scriptPath");
        if let Some(p) = &script_path {
            if let Err(why) = windows_path(p) {
                self.problem("windows.scriptPath", why);
            } else if !p.to_ascii_lowercase().ends_with(".ps1") {
                // powershell.exe -File runs only .ps1 files, and `& path`
                // would open any other file with its associated program.
                self.problem(
                    "windows.scriptPath",
                    format!("\"{p}\" must name a .ps1 file, e.g. \"C:\\\\wsl\\\\attach.ps1\""),
                );
            }
        }
        let log_path = self.opt_string(obj, "logPath", "windows.logPath");
        if let Some(p) = &log_path {
            if let Err(why) = windows_path(p) {
                self.problem("windows.logPath", why);
            }
        }
        let schtasks_path = self.string(
            obj,
            "schtasksPath",
            "windows.schtasksPath",
            DEFAULT_SCHTASKS,
        );
        let schtasks_path = self.abs_path("windows.schtasksPath", &schtasks_path);
        let powershell_path = self.string(
            obj,
            "powershellPath",
            "windows.powershellPath",
            DEFAULT_POWERSHELL,
        );
        let powershell_path = self.abs_path("windows.powershellPath", &powershell_path);
        let trigger_attempts = self.uint(
            obj,
            "triggerAttempts",
            "windows.triggerAttempts",
            3,
            (0, 100),
        ) as u32;
        let trigger_timeout = self.uint(
            obj,
            "triggerTimeout",
            "windows.triggerTimeout",
            20,
            (1, 3600),
        );
        match trigger {
            Trigger::Task => {
                if task_name.is_none() {
                    self.problem(
                        "windows.taskName",
                        "windows.trigger is \"task\" but no taskName is set; name the scheduled task registered by register-task.ps1, e.g. \"wsl-storage-mount\"",
                    );
                }
                if !have_serial {
                    self.problem(
                        "diskSerialNumber",
                        "windows.trigger is \"task\" but diskSerialNumber is not set; the attach script finds the disk by it (`Get-PhysicalDisk | Select SerialNumber` in PowerShell)",
                    );
                }
            }
            Trigger::Script => {
                if script_path.is_none() {
                    self.problem(
                        "windows.scriptPath",
                        "windows.trigger is \"script\" but no scriptPath is set; give the Windows path of attach.ps1, e.g. \"C:\\\\wsl\\\\attach.ps1\"",
                    );
                }
                if !have_serial {
                    self.problem(
                        "diskSerialNumber",
                        "windows.trigger is \"script\" but diskSerialNumber is not set; the attach script finds the disk by it",
                    );
                }
            }
            Trigger::None => {}
        }
        WindowsConfig {
            trigger,
            task_name,
            script_path,
            schtasks_path,
            powershell_path,
            trigger_attempts,
            trigger_timeout,
            log_path,
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A name that is exactly one path component: no '/', not '.' or '..'.
pub fn single_component(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("is empty")
    } else if name == "." || name == ".." {
        Err("is not a directory name ('.' and '..' are not allowed)")
    } else if name.contains('/') {
        Err("must be a single path component without '/'")
    } else if name.contains('\0') {
        Err("contains a NUL byte")
    } else if name.contains('\n') {
        Err("contains a newline")
    } else if name.len() > 255 {
        Err("is longer than 255 bytes")
    } else {
        Ok(())
    }
}

/// A directory name the helper creates under mountPoint and systemd takes
/// in a mount unit's What=: letters, digits, '.', '_' and '-' only, as the
/// module's `isSafeComponent` has it.
pub fn dir_name(name: &str) -> Result<(), &'static str> {
    single_component(name)?;
    if name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Ok(())
    } else {
        Err("may hold only letters, digits, '.', '_' and '-'")
    }
}

/// Normalise an absolute path: no `.`, no `..`, no repeated or trailing '/'.
pub fn normalize_abs(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("is not an absolute path; start it with '/'");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    if path.contains('\n') {
        return Err("contains a newline");
    }
    let mut out = String::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => {
                out.push('/');
                out.push_str(&part.to_string_lossy());
            }
            Component::ParentDir => return Err("must not contain '..'"),
            Component::Prefix(_) => return Err("is not a Linux path"),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Is `path` equal to `dir` or below it? Both normalised.
pub fn is_within(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || path.starts_with(&format!("{dir}/"))
}

fn is_safe_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn is_account_name(s: &str) -> bool {
    // Names as useradd accepts them; a trailing '$' is allowed (machine accounts).
    let body = s.strip_suffix('$').unwrap_or(s);
    matches!(body.chars().next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && s.len() <= 32
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// A Windows path that reaches PowerShell: a drive path such as
/// `C:\wsl\attach.ps1`, or one starting with `%LOCALAPPDATA%\`,
/// `%USERPROFILE%\` or `%ProgramData%\`. Only a plain character set is allowed, so nothing in
/// it can be read by PowerShell as code even before quoting.
pub fn windows_path(p: &str) -> Result<(), String> {
    let rest = if let Some(rest) = p
        .strip_prefix("%LOCALAPPDATA%\\")
        .or_else(|| p.strip_prefix("%USERPROFILE%\\"))
        .or_else(|| p.strip_prefix("%ProgramData%\\"))
    {
        rest
    } else {
        let b = p.as_bytes();
        if b.len() < 4 || !b[0].is_ascii_alphabetic() || b[1] != b':' || b[2] != b'\\' {
            return Err(format!(
                "\"{p}\" is not a Windows path; write it like \"C:\\\\wsl\\\\attach.ps1\" or \"%LOCALAPPDATA%\\\\wsl-storage-mount\\\\attach.ps1\""
            ));
        }
        &p[3..]
    };
    let ok = !rest.is_empty()
        && p.len() <= 240
        && rest.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ' ' | '\\' | '(' | ')')
        })
        && !rest.split('\\').any(|part| part == "..");
    if !ok {
        return Err(format!(
            "\"{p}\" may hold only letters, digits, spaces, '_', '.', '-', '(', ')' and '\\' after the drive, and no '..'"
        ));
    }
    // Windows drops a trailing '.' or space from a name and treats CON,
    // NUL, COM1 ... as devices: such a path is not the file it looks like.
    for part in rest.split('\\') {
        let stem = part.split('.').next().unwrap_or("").trim_end();
        let device = matches!(
            stem.to_ascii_uppercase().as_str(),
            "CON" | "PRN" | "AUX" | "NUL"
        ) || (stem.len() == 4
            && ["COM", "LPT"].contains(&stem[..3].to_ascii_uppercase().as_str())
            && stem.as_bytes()[3].is_ascii_digit());
        if part.is_empty() || part.ends_with(['.', ' ']) || part.starts_with(' ') || device {
            return Err(format!(
                "\"{p}\": \"{part}\" is not a usable Windows file or folder name (empty, ends with '.' or a space, starts with a space, or a device name such as NUL or COM1); name the file itself, e.g. \"C:\\\\wsl\\\\attach.ps1\""
            ));
        }
    }
    Ok(())
}

/// The known key nearest to a misspelt one, for "did you mean".
/// The known key closest to a misspelt one, if any is close (at most 3
/// edits). A key much longer than every known key cannot be within 3
/// edits of one, so it is not compared at all: a 10 MB key costs nothing.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    const MAX_EDITS: usize = 3;
    let longest = known.iter().map(|k| k.len()).max().unwrap_or(0);
    if key.len() > longest + MAX_EDITS {
        return None;
    }
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= MAX_EDITS)
        .min()
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Ok(_) => Vec::new(),
            Err(p) => p.0.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn fs_uuid_takes_the_forms_blkid_prints() {
        for good in [
            "0f3e5a8c-1c2d-4b6e-9f00-123456789abc",
            "0F3E5A8C-1C2D-4B6E-9F00-123456789ABC",
            "1234-ABCD",
        ] {
            assert!(is_fs_uuid(good), "{good}");
        }
        for bad in [
            "",
            "abc",
            "-",
            "0f3e5a8c1c2d4b6e9f00123456789abc",
            "0f3e5a8c-1c2d-4b6e-9f00-123456789abg",
            "12345-ABCD",
            "1234-ABCD-",
        ] {
            assert!(!is_fs_uuid(bad), "{bad}");
        }
    }

    #[test]
    fn bounds_match_the_module() {
        let with = |extra: &str| {
            problems(&format!(
                r#"{{"fsUuid": "0f3e5a8c-1c2d-4b6e-9f00-123456789abc", {extra}}}"#
            ))
        };
        assert_eq!(with(r#""waitTimeout": 0"#), vec!["waitTimeout"]);
        assert_eq!(with(r#""waitTimeout": 86401"#), vec!["waitTimeout"]);
        assert!(with(r#""waitTimeout": 1"#).is_empty());
        assert!(with(r#""waitTimeout": 86400"#).is_empty());
        assert_eq!(
            with(r#""windows": {"triggerTimeout": 0}"#),
            vec!["windows.triggerTimeout"]
        );
        assert!(with(r#""windows": {"triggerAttempts": 0}"#).is_empty());
        assert_eq!(with(r#""bootGenerations": 0"#), vec!["bootGenerations"]);
        assert_eq!(with(r#""fsckTimeout": 0"#), vec!["fsckTimeout"]);
    }

    #[test]
    fn string_rules_match_the_module() {
        let with = |extra: &str| {
            problems(&format!(
                r#"{{"fsUuid": "0f3e5a8c-1c2d-4b6e-9f00-123456789abc", {extra}}}"#
            ))
        };
        assert_eq!(with(r#""fsLabel": "a\nb""#), vec!["fsLabel"]);
        assert_eq!(with(r#""deviceId": "a\nb""#), vec!["deviceId"]);
        assert_eq!(with(r#""device": "/dev/a\nb""#), vec!["device"]);
        assert_eq!(with(r#""logFile": "/var/log/a\"b""#), vec!["logFile"]);
        assert_eq!(with(r#""mountPoint": "/nix/disk""#), vec!["mountPoint"]);
        assert_eq!(
            with(r#""instanceDirs": {"my dir": {"owner": 0, "group": 0, "mode": "0755"}}"#),
            vec!["instanceDirs.my dir"]
        );
        assert_eq!(
            with(
                r#""fsType": "vfat", "bindMountNixStore": true, "nixStoreSubdir": "s",
                   "instanceDirs": {"s": {"owner": 0, "group": 0, "mode": "0755"}}"#
            ),
            vec!["fsType"]
        );
        assert!(with(
            r#""instanceDirs": {"nixos-wsl_dev.2": {"owner": 0, "group": 0, "mode": "0755"}}"#
        )
        .is_empty());
    }

    #[test]
    fn a_huge_unknown_key_is_cut_short_and_not_compared() {
        let key = "x".repeat(1 << 20);
        let err = Config::parse(&format!(r#"{{"fsLabel": "l", "{key}": 1}}"#)).unwrap_err();
        let text = err.to_string();
        assert!(text.len() < 2048, "{} bytes", text.len());
        assert!(text.contains("(1048576 bytes): unknown key;"), "{text}");
        assert!(!text.contains("did you mean"), "{text}");
        assert_eq!(closest("fsUUid", TOP_KEYS), Some("fsUuid"));
        assert_eq!(closest("waitTimeOut", TOP_KEYS), Some("waitTimeout"));
        assert_eq!(echo("short"), "short");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(r#"{"fsUuid": "0f3e5a8c-1c2d-4b6e-9f00-123456789abc"}"#).unwrap();
        assert_eq!(c.mount_point, "/mnt/wsl/storage");
        assert_eq!(c.fs_type, "ext4");
        assert_eq!(c.mount_options, vec!["noatime"]);
        assert_eq!(c.wait_timeout, 60);
        assert!(c.fsck);
        assert!(!c.bind_mount_nix_store);
        assert_eq!(c.on_missing, OnMissing::Block);
        assert_eq!(c.log_file, "/var/log/wsl-mount.log");
        assert_eq!(c.bind_target, "/nix");
        assert_eq!(c.windows.trigger, Trigger::None);
        assert_eq!(c.windows.trigger_attempts, 3);
        assert_eq!(c.windows.trigger_timeout, 20);
    }

    #[test]
    fn full_config_parses() {
        let c = Config::parse(
            r#"{
              "deviceId": "nvme-FAKE_NVMe_1234", "fsLabel": "wsl-storage",
              "mountPoint": "/mnt/wsl/storage/", "mountOptions": ["noatime", "commit=60"],
              "instanceDirs": {
                "nixos-wsl-main": {"owner": "root", "group": 0, "mode": "0755"},
                "shared": {"owner": 1000, "group": "100", "mode": "2775"}
              },
              "bindMountNixStore": true, "nixStoreSubdir": "nixos-wsl-main",
              "onMissing": "fallback", "diskSerialNumber": "E823_8FA6_BF53_0001_001B_448B_4ED0_B0F4.",
              "windows": {"trigger": "task", "taskName": "wsl-storage-mount"}
            }"#,
        )
        .unwrap();
        assert_eq!(c.mount_point, "/mnt/wsl/storage");
        assert_eq!(c.on_missing, OnMissing::Fallback);
        let shared = &c.instance_dirs["shared"];
        assert_eq!(shared.owner, Principal::Id(1000));
        assert_eq!(shared.group, Principal::Id(100));
        assert_eq!(shared.mode, 0o2775);
        assert_eq!(
            c.instance_dirs["nixos-wsl-main"].owner,
            Principal::Name("root".into())
        );
        assert_eq!(c.store_dir().unwrap(), "/mnt/wsl/storage/nixos-wsl-main");
    }

    #[test]
    fn every_problem_is_listed_by_key() {
        let keys = problems(
            r#"{"mountPoint": "relative/path", "nixStoreSubdir": "../x", "bindMountNixStore": true,
                "instanceDirs": {"a/b": {}, "ok": {"mode": "999", "owner": "bad name!"}},
                "unknownThing": 1, "waitTimeout": "60", "onMissing": "maybe"}"#,
        );
        for k in [
            "device",
            "mountPoint",
            "nixStoreSubdir",
            "instanceDirs.a/b",
            "instanceDirs.ok.mode",
            "instanceDirs.ok.owner",
            "unknownThing",
            "waitTimeout",
            "onMissing",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn unknown_key_suggests_the_near_one() {
        let err = Config::parse(r#"{"fsUuid": "abcd-1234", "mountpoint": "/x"}"#).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert!(
            err.0[0].message.contains("did you mean \"mountPoint\""),
            "{}",
            err.0[0].message
        );
    }

    #[test]
    fn subdir_rules() {
        assert!(
            problems(r#"{"fsLabel": "x", "nixStoreSubdir": "a/b", "instanceDirs": {}}"#)
                .contains(&"nixStoreSubdir".to_string())
        );
        assert!(
            problems(r#"{"fsLabel": "x", "nixStoreSubdir": "..", "instanceDirs": {}}"#)
                .contains(&"nixStoreSubdir".to_string())
        );
        // Must be one of instanceDirs.
        assert_eq!(
            problems(r#"{"fsLabel": "x", "nixStoreSubdir": "main"}"#),
            vec!["nixStoreSubdir"]
        );
        assert!(problems(
            r#"{"fsLabel": "x", "nixStoreSubdir": "main", "instanceDirs": {"main": {}}}"#
        )
        .is_empty());
    }

    #[test]
    fn mount_point_must_not_overlap_the_bind_target() {
        assert_eq!(
            problems(r#"{"fsLabel": "x", "mountPoint": "/nix/storage"}"#),
            vec!["mountPoint"]
        );
        assert_eq!(
            problems(r#"{"fsLabel": "x", "mountPoint": "/"}"#),
            vec!["mountPoint"]
        );
        assert!(problems(r#"{"fsLabel": "x", "mountPoint": "/nixstorage"}"#).is_empty());
    }

    #[test]
    fn injection_attempts_in_windows_fields_are_rejected() {
        for (key, json) in [
            (
                "diskSerialNumber",
                r#""diskSerialNumber": "ABC'; Remove-Item C:\\ -Recurse; '""#,
            ),
            ("mountName", r#""mountName": "x$(calc)""#),
            ("windows.taskName", r#""windows": {"taskName": "tasks\\"}"#),
            ("windows.taskName", r#""windows": {"taskName": "..\\t"}"#),
            (
                "windows.taskName",
                r#""windows": {"taskName": "t`n; calc"}"#,
            ),
            (
                "windows.scriptPath",
                r#""windows": {"scriptPath": "C:\\a'; calc; '.ps1"}"#,
            ),
            (
                "windows.logPath",
                r#""windows": {"logPath": "C:\\logs\\$env:x.log"}"#,
            ),
            (
                "windows.scriptPath",
                r#""windows": {"scriptPath": "C:\\..\\x.ps1"}"#,
            ),
        ] {
            let keys = problems(&format!(r#"{{"fsLabel": "x", {json}}}"#));
            assert!(keys.contains(&key.to_string()), "{key}: {keys:?}");
        }
    }

    #[test]
    fn trigger_needs_its_settings() {
        let keys = problems(r#"{"fsLabel": "x", "windows": {"trigger": "task"}}"#);
        assert_eq!(keys, vec!["windows.taskName", "diskSerialNumber"]);
        let keys = problems(
            r#"{"fsLabel": "x", "diskSerialNumber": "S1", "windows": {"trigger": "script"}}"#,
        );
        assert_eq!(keys, vec!["windows.scriptPath"]);
        assert!(problems(r#"{"fsLabel": "x", "diskSerialNumber": "S1", "windows": {"trigger": "script", "scriptPath": "%LOCALAPPDATA%\\wsl-storage-mount\\attach.ps1"}}"#).is_empty());
    }

    #[test]
    fn mode_and_ids() {
        assert!(
            problems(r#"{"fsLabel": "x", "instanceDirs": {"d": {"mode": 755}}}"#)
                .contains(&"instanceDirs.d.mode".to_string())
        );
        assert!(
            problems(r#"{"fsLabel": "x", "instanceDirs": {"d": {"mode": "07777"}}}"#)
                .contains(&"instanceDirs.d.mode".to_string())
        );
        assert!(
            problems(r#"{"fsLabel": "x", "instanceDirs": {"d": {"owner": -1}}}"#)
                .contains(&"instanceDirs.d.owner".to_string())
        );
        assert!(problems(
            r#"{"fsLabel": "x", "instanceDirs": {"d": {"owner": "nixbld$", "group": "users"}}}"#
        )
        .is_empty());
    }

    #[test]
    fn normalize() {
        assert_eq!(
            normalize_abs("/mnt//wsl/./storage/").unwrap(),
            "/mnt/wsl/storage"
        );
        assert!(normalize_abs("/mnt/../etc").is_err());
        assert!(normalize_abs("mnt").is_err());
        assert_eq!(normalize_abs("/").unwrap(), "/");
    }

    #[test]
    fn not_json_or_not_object() {
        assert_eq!(problems("{"), vec!["(document)"]);
        assert_eq!(problems("[]"), vec!["(document)"]);
    }
}

#[cfg(test)]
mod bind_tests {
    use super::*;

    fn parse(binds: &str) -> Result<Config, Problems> {
        Config::parse(&format!(
            r#"{{"fsUuid": "0f3e5a8c-1c2d-4b6e-9f00-123456789abc", "bindMountNixStore": true,
                "nixStoreSubdir": "main", "instanceDirs": {{"main": {{}}}}, "binds": {binds}}}"#
        ))
    }

    #[test]
    fn a_bind_defaults_to_read_only() {
        let c = parse(r#"{"/shared/": {"subdir": "shared"}}"#).unwrap();
        assert_eq!(
            c.binds["/shared"],
            Bind {
                subdir: "shared".into(),
                read_only: true
            }
        );
    }

    #[test]
    fn bad_binds_are_named_by_key() {
        for (binds, key, words) in [
            (
                r#"{"/nix/shared": {"subdir": "s"}}"#,
                "binds.\"/nix/shared\"",
                "overlaps /nix",
            ),
            (
                r#"{"/mnt/wsl": {"subdir": "s"}}"#,
                "binds.\"/mnt/wsl\"",
                "overlaps mountPoint",
            ),
            (
                r#"{"rel": {"subdir": "s"}}"#,
                "binds.\"rel\"",
                "not an absolute path",
            ),
            (
                r#"{"/s": {"subdir": "../etc"}}"#,
                "binds.\"/s\".subdir",
                "directory name",
            ),
            (
                r#"{"/s": {"subdir": "main"}}"#,
                "binds.\"/s\".subdir",
                "nixStoreSubdir",
            ),
            (r#"{"/s": {}}"#, "binds.\"/s\".subdir", "must be set"),
            (
                r#"{"/s": {"subdir": "s", "readonly": true}}"#,
                "binds.\"/s\".readonly",
                "readOnly",
            ),
            (r#"["/s"]"#, "binds", "must be an object"),
        ] {
            let problems = parse(binds).unwrap_err().0;
            assert!(
                problems
                    .iter()
                    .any(|p| p.key == key && p.message.contains(words)),
                "{binds}: {problems:?}"
            );
        }
    }
}
