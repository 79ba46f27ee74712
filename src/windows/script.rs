//! The generated PowerShell: `attach.ps1` (finds the disk by its serial
//! number and attaches it with `wsl --mount --bare`) and
//! `register-task.ps1` (installs attach.ps1 in an administrators-only
//! directory and registers the elevated logon task that runs it).
//!
//! Both are generated from the config, so the NixOS module builds them in
//! the Nix sandbox (`windows-script`, `windows-task`), the tests compare
//! them with golden files, and CI parses them with tree-sitter's PowerShell
//! grammar (scripts/check-powershell.py). Every value from the config
//! enters them only as a single-quoted literal (`ps_quote`), after config
//! validation already restricted it to a plain character set, and the
//! templates are filled in one pass (`fill`), so a value is never read for
//! placeholders.

use anyhow::Result;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::config::{Config, WindowsConfig};
use crate::exit::{fail, Exit};

/// The attach transcript when `windows.logPath` is not set: beside the
/// installed script, where no program without elevation can change it.
/// Expanded on the Windows side.
pub const DEFAULT_LOG_PATH: &str = r"%ProgramData%\wsl-storage-mount\attach.log";
/// The task name when `windows.taskName` is not set.
pub const DEFAULT_TASK_NAME: &str = "wsl-storage-mount";
/// Where `install-windows-files` stages the scripts by default, relative
/// to the user's profile dir. Only a staging place: the task never runs a
/// file from there.
pub const INSTALL_SUBDIR: &str = "wsl-storage-mount";
pub const ATTACH_FILE: &str = "attach.ps1";
pub const REGISTER_FILE: &str = "register-task.ps1";

const ATTACH_TEMPLATE: &str = include_str!("attach.ps1.in");
const REGISTER_TEMPLATE: &str = include_str!("register-task.ps1.in");

/// A PowerShell single-quoted literal. Inside one, only a quote character
/// is special, and it is escaped by doubling it. PowerShell also takes the
/// typographic single quotes (U+2018..U+201B) as quotes, so those are
/// doubled too. (Config validation rejects all of them anyway.)
pub fn ps_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Fill `@NAME@` placeholders in one pass over the template: what a value
/// contains is copied as it is, never searched for placeholders. A
/// placeholder without a value is a bug in this file.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(start) = rest.find('@') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        let value = (name_len > 0 && after[name_len..].starts_with('@'))
            .then(|| values.iter().find(|(n, _)| *n == &after[..name_len]))
            .flatten();
        match value {
            Some((_, v)) => {
                out.push_str(v);
                rest = &after[name_len + 1..];
            }
            None => {
                out.push('@');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A disk serial as attach.ps1 compares it: trimmed, without '_', '.' and
/// spaces, upper case. The config check requires a letter or digit in it.
pub fn normalize_serial(serial: &str) -> String {
    serial
        .trim()
        .chars()
        .filter(|c| !matches!(c, '_' | '.' | ' '))
        .collect::<String>()
        .to_ascii_uppercase()
}

/// The task's folder (`\` or `\Folder\Sub\`) and leaf name, as
/// Register-ScheduledTask wants them, from a taskName such as
/// `WSL\attach storage`. Empty parts (a leading `\`, `\\`) are dropped.
pub fn split_task_name(name: &str) -> (String, String) {
    let parts: Vec<&str> = name.split('\\').filter(|p| !p.is_empty()).collect();
    match parts.split_last() {
        Some((leaf, folders)) if !folders.is_empty() => {
            (format!("\\{}\\", folders.join("\\")), (*leaf).to_string())
        }
        Some((leaf, _)) => ("\\".to_string(), (*leaf).to_string()),
        None => ("\\".to_string(), name.to_string()),
    }
}

/// The one spelling of the task name that everything uses: the trigger
/// (`schtasks /Run /TN`), doctor (`schtasks /Query /TN`) and
/// register-task.ps1: `\Folder\name`, or `name` for the root folder.
pub fn task_name(win: &WindowsConfig) -> String {
    let name = win.task_name.as_deref().unwrap_or(DEFAULT_TASK_NAME);
    let (folder, leaf) = split_task_name(name);
    if folder == "\\" {
        leaf
    } else {
        format!("{folder}{leaf}")
    }
}

/// SHA-256 as upper-case hex, as PowerShell's Get-FileHash prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// `attach.ps1`. Needs `diskSerialNumber`.
pub fn attach_script(cfg: &Config) -> Result<String> {
    let Some(serial) = cfg.disk_serial_number.as_deref() else {
        return Err(fail(
            Exit::Config,
            "diskSerialNumber is not set, and the attach script finds the disk by it; copy it from `Get-PhysicalDisk | Select SerialNumber, FriendlyName, Size` in PowerShell into diskSerialNumber",
        ));
    };
    let log_path = cfg.windows.log_path.as_deref().unwrap_or(DEFAULT_LOG_PATH);
    let mount_name = cfg.mount_name.as_deref().unwrap_or("");
    Ok(fill(
        ATTACH_TEMPLATE,
        &[
            ("SERIAL", &ps_quote(serial)),
            ("MOUNT_NAME", &ps_quote(mount_name)),
            ("LOG_PATH", &ps_quote(log_path)),
        ],
    ))
}

/// `register-task.ps1`, with attach.ps1 embedded. Needs `diskSerialNumber`.
pub fn register_script(cfg: &Config) -> Result<String> {
    let attach = attach_script(cfg)?;
    let name = cfg
        .windows
        .task_name
        .as_deref()
        .unwrap_or(DEFAULT_TASK_NAME);
    let (folder, leaf) = split_task_name(name);
    let encoded = base64::engine::general_purpose::STANDARD.encode(attach.as_bytes());
    Ok(fill(
        REGISTER_TEMPLATE,
        &[
            ("TASK_NAME", &ps_quote(&leaf)),
            ("TASK_PATH", &ps_quote(&folder)),
            ("TASK_FULL_NAME", &ps_quote(&task_name(&cfg.windows))),
            ("ATTACH_SHA256", &ps_quote(&sha256_hex(attach.as_bytes()))),
            ("ATTACH_BASE64", &ps_quote(&encoded)),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(ps_quote("abc"), "'abc'");
        assert_eq!(ps_quote("a'b"), "'a''b'");
        assert_eq!(ps_quote("'; calc; '"), "'''; calc; '''");
        assert_eq!(ps_quote("a\u{2019}b"), "'a\u{2019}\u{2019}b'");
        assert_eq!(ps_quote(""), "''");
        // Nothing else is special inside single quotes.
        assert_eq!(ps_quote("$x `n \"y\""), "'$x `n \"y\"'");
    }

    #[test]
    fn task_names_split_into_folder_and_leaf() {
        assert_eq!(
            split_task_name("wsl-storage-mount"),
            ("\\".into(), "wsl-storage-mount".into())
        );
        assert_eq!(
            split_task_name("WSL\\attach storage"),
            ("\\WSL\\".into(), "attach storage".into())
        );
        assert_eq!(
            split_task_name("\\A\\B\\c"),
            ("\\A\\B\\".into(), "c".into())
        );
    }

    /// `@NAME@`, as the templates mark their placeholders.
    fn has_placeholder(text: &str) -> bool {
        let parts: Vec<&str> = text.split('@').collect();
        parts.len() > 2
            && parts[1..parts.len() - 1]
                .iter()
                .any(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
    }

    #[test]
    fn values_enter_only_as_literals() {
        let cfg = Config::parse(
            r#"{"fsLabel": "x", "diskSerialNumber": "E823_8FA6.", "mountName": "m",
                "windows": {"taskName": "WSL\\t", "scriptPath": "C:\\w\\attach.ps1", "logPath": "D:\\l.log"}}"#,
        )
        .unwrap();
        let attach = attach_script(&cfg).unwrap();
        assert!(attach.contains("$DiskSerialNumber = 'E823_8FA6.'"));
        assert!(attach.contains("$LogPathSetting = 'D:\\l.log'"));
        assert!(!has_placeholder(&attach), "a placeholder is left");
        let register = register_script(&cfg).unwrap();
        assert!(register.contains("$TaskName = 't'"));
        assert!(register.contains("$TaskPath = '\\WSL\\'"));
        assert!(register.contains(&format!(
            "$AttachSha256 = '{}'",
            sha256_hex(attach.as_bytes())
        )));
        assert!(!has_placeholder(&register), "a placeholder is left");
        assert!(attach.is_ascii() && register.is_ascii());
        assert!(has_placeholder("a @(x) @SERIAL@ b") && !has_placeholder("@(x) @y"));
    }

    #[test]
    fn attach_needs_the_serial() {
        let cfg = Config::parse(r#"{"fsLabel": "x"}"#).unwrap();
        assert!(attach_script(&cfg).is_err());
        assert!(register_script(&cfg).is_err());
    }

    #[test]
    fn placeholders_are_filled_in_one_pass() {
        // A value that holds a later placeholder stays as it is.
        let out = fill("a=@A@ b=@B@", &[("A", "@B@"), ("B", "x")]);
        assert_eq!(out, "a=@B@ b=x");
        // Unknown names, lone '@' and PowerShell's @( and @' stay.
        assert_eq!(
            fill("@(1) @'x'@ @NOPE@ me@host @A@@A@", &[("A", "1")]),
            "@(1) @'x'@ @NOPE@ me@host 11"
        );
    }

    #[test]
    fn serials_normalize_as_the_script_does() {
        assert_eq!(
            normalize_serial(" e823_8FA6_BF53.0001 "),
            "E8238FA6BF530001"
        );
        assert_eq!(normalize_serial("._ ._"), "");
        assert_eq!(normalize_serial("WD-WX11"), "WD-WX11");
    }

    #[test]
    fn one_task_name_spelling() {
        let win = |name: &str| {
            Config::parse(&format!(
                r#"{{"fsLabel": "x", "windows": {{"taskName": {}}}}}"#,
                serde_json::to_string(name).unwrap()
            ))
            .unwrap()
            .windows
        };
        assert_eq!(task_name(&win("wsl-storage-mount")), "wsl-storage-mount");
        assert_eq!(task_name(&win("\\wsl-storage-mount")), "wsl-storage-mount");
        assert_eq!(task_name(&win("WSL\\attach")), "\\WSL\\attach");
        assert_eq!(task_name(&win("\\WSL\\attach")), "\\WSL\\attach");
    }
}
