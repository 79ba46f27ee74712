//! `install-windows-files`: stage attach.ps1 and register-task.ps1 in a
//! Windows directory, by default `%USERPROFILE%\wsl-storage-mount`.
//!
//! Only staging: the scheduled task never runs a file from there. A
//! directory the user can write is within reach of every program the user
//! runs without elevation, so register-task.ps1 (run elevated) installs
//! the attach.ps1 embedded in it into `%ProgramData%\wsl-storage-mount`,
//! which only administrators can change, and the task runs that copy.
//! Nothing here ever writes that copy; `doctor` says when it is outdated.
//!
//! It runs from a systemd service after boot and after every switch, when
//! Windows may be out of reach (interop off, /mnt/c not mounted): then it
//! warns and exits 0, never failing the boot or the switch. A file is only
//! rewritten when its content changed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Result;

use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::state;
use crate::windows::script::{self, ATTACH_FILE, INSTALL_SUBDIR, REGISTER_FILE};
use crate::windows::trigger::{run_program, TriggerOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Changed,
    Unchanged,
}

/// Write `body` to `path` unless it holds exactly that already; readers
/// see the old or the new file, never half of one.
pub fn write_if_changed(path: &Path, body: &str) -> io::Result<Written> {
    if fs::read(path).is_ok_and(|old| old == body.as_bytes()) {
        return Ok(Written::Unchanged);
    }
    state::write_atomic(path, body.as_bytes())?;
    Ok(Written::Changed)
}

/// The automount root (`/mnt/`) and System32 directory, when `schtasks`
/// looks like `<root><drive>/Windows/System32/schtasks.exe`.
fn windows_layout(schtasks: &Path) -> Option<(PathBuf, PathBuf)> {
    let system32 = schtasks.parent()?;
    let windows = system32.parent()?;
    let drive = windows.parent()?;
    let root = drive.parent()?;
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
    };
    let drive_name = name(drive)?;
    let plausible = name(system32)? == "system32"
        && name(windows)? == "windows"
        && drive_name.len() == 1
        && drive_name.chars().all(|c| c.is_ascii_alphabetic());
    plausible.then(|| (root.to_path_buf(), system32.to_path_buf()))
}

/// `C:\Users\me` as a Linux path under the automount root (`/mnt/c/Users/me`).
pub fn linux_path(root: &Path, windows: &str) -> Option<PathBuf> {
    let b = windows.as_bytes();
    if b.len() < 2 || !b[0].is_ascii_alphabetic() || b[1] != b':' {
        return None;
    }
    let mut path = root.join((b[0] as char).to_ascii_lowercase().to_string());
    for part in windows[2..].split('\\').filter(|p| !p.is_empty()) {
        if part == ".." {
            return None;
        }
        path.push(part);
    }
    Some(path)
}

/// The first line of cmd.exe's output that is a drive path; cmd.exe may
/// also complain about a UNC current directory on stderr.
fn profile_line(output: &str) -> Option<&str> {
    output.lines().map(str::trim).find(|l| {
        let b = l.as_bytes();
        b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && b[2] == b'\\'
    })
}

/// The user's profile dir as a Linux path (see `windows_dir`).
pub fn profile_dir(cfg: &Config) -> Result<PathBuf, String> {
    windows_dir(cfg, "%USERPROFILE%").map(|(_, linux)| linux)
}

/// A directory Windows names by an environment variable (`%USERPROFILE%`,
/// `%ProgramData%`), as its Windows path and as a Linux path, through
/// interop: `cmd.exe /c echo %VAR%`, then converted under the automount
/// root that `windows.schtasksPath` shows (or by `wslpath -u` when it
/// shows none).
pub fn windows_dir(cfg: &Config, variable: &str) -> Result<(String, PathBuf), String> {
    let schtasks = Path::new(&cfg.windows.schtasks_path);
    let layout = windows_layout(schtasks);
    let system32 = layout.as_ref().map_or_else(
        || PathBuf::from("/mnt/c/Windows/System32"),
        |(_, s)| s.clone(),
    );
    let cmd = system32.join("cmd.exe");
    let args: Vec<String> = ["/d", "/c", "echo", variable]
        .into_iter()
        .map(String::from)
        .collect();
    let timeout = Duration::from_secs(cfg.windows.trigger_timeout);
    let output = match run_program(
        &cmd,
        &args,
        timeout,
        &AtomicBool::new(false),
        "Windows interop or /mnt/c not ready yet; cmd.exe is looked for next to windows.schtasksPath",
    ) {
        TriggerOutcome::Exited {
            code: Some(0),
            output,
        } => output,
        other => return Err(format!("{} {}", cmd.display(), other.summary())),
    };
    let Some(windows) = profile_line(&output) else {
        return Err(format!(
            "{} did not print {variable} (output: {:?})",
            cmd.display(),
            output.trim()
        ));
    };
    let linux = match &layout {
        Some((root, _)) => linux_path(root, windows),
        None => {
            let mut wslpath = Command::new("wslpath");
            wslpath.arg("-u").arg(windows);
            crate::proc::run(wslpath, std::time::Duration::from_secs(10))
                .ok()
                .filter(|o| o.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        }
    };
    let Some(linux) = linux else {
        return Err(format!("cannot turn {windows} into a Linux path"));
    };
    if !linux.is_dir() {
        return Err(format!(
            "{variable} ({windows}) is not at {} (is its drive mounted?)",
            linux.display()
        ));
    }
    Ok((windows.to_string(), linux))
}

/// `.../ProgramData/wsl-storage-mount` (any case): the directory whose
/// attach.ps1 the task runs.
fn is_task_dir(dir: &Path) -> bool {
    let mut names = dir
        .components()
        .rev()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().to_ascii_lowercase());
    names.next().as_deref() == Some(INSTALL_SUBDIR)
        && names.next().as_deref() == Some("programdata")
}

/// Create `dir` itself when missing, but never its parents: a missing
/// parent means a drive that is not mounted, and creating it would put
/// Windows' files on the Linux disk.
fn ensure_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

pub fn run(cfg: &Config, dir: Option<&Path>) -> Result<Exit> {
    // Generated first: a config that cannot give the scripts is exit 2,
    // whatever the state of Windows.
    let files = [
        (ATTACH_FILE, script::attach_script(cfg)?),
        (REGISTER_FILE, script::register_script(cfg)?),
    ];
    // How to name register-task.ps1 in PowerShell, for the closing hint.
    let mut in_powershell = None;
    let dir = match dir {
        Some(d) if is_task_dir(d) || fs::canonicalize(d).is_ok_and(|real| is_task_dir(&real)) => {
            return Err(fail(
                Exit::Config,
                format!(
                    "--dir {}: that is where register-task.ps1 installs the attach.ps1 the elevated task runs; only register-task.ps1, run elevated, writes there. Stage the files elsewhere (the default, %USERPROFILE%\\{INSTALL_SUBDIR}, or another --dir) and run register-task.ps1",
                    d.display()
                ),
            ));
        }
        Some(d) => d.to_path_buf(),
        None => match profile_dir(cfg) {
            Ok(profile) => {
                in_powershell = Some(format!(
                    "$env:USERPROFILE\\{INSTALL_SUBDIR}\\{REGISTER_FILE}"
                ));
                profile.join(INSTALL_SUBDIR)
            }
            Err(why) => {
                log::warn!(
                    "Windows is out of reach ({why}); the scripts were not copied. They are in /etc/wsl-storage-mount/ too; run `wsl-storage-mount install-windows-files` once interop works, or pass --dir"
                );
                return Ok(Exit::Success);
            }
        },
    };
    if let Err(e) = ensure_dir(&dir) {
        log::warn!(
            "cannot create {}: {e}; the scripts were not copied (is the Windows drive mounted?)",
            dir.display()
        );
        return Ok(Exit::Success);
    }
    let mut all_written = true;
    for (name, body) in &files {
        let path = dir.join(name);
        match write_if_changed(&path, body) {
            Ok(Written::Changed) => println!("wrote {}", path.display()),
            Ok(Written::Unchanged) => println!("unchanged {}", path.display()),
            Err(e) => {
                all_written = false;
                log::warn!("cannot write {}: {e}", path.display());
            }
        }
    }
    if all_written {
        let script = in_powershell.unwrap_or_else(|| {
            format!("<{} as a Windows path>", dir.join(REGISTER_FILE).display())
        });
        println!(
            "next (once, and again whenever attach.ps1 changed: it installs it for the task), in an elevated PowerShell:\n  powershell.exe -NoProfile -ExecutionPolicy Bypass -File {script}"
        );
    }
    Ok(Exit::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_comes_from_the_schtasks_path() {
        let (root, sys) =
            windows_layout(Path::new("/mnt/c/Windows/System32/schtasks.exe")).unwrap();
        assert_eq!(root, Path::new("/mnt"));
        assert_eq!(sys, Path::new("/mnt/c/Windows/System32"));
        let (root, _) = windows_layout(Path::new("/c/WINDOWS/system32/schtasks.exe")).unwrap();
        assert_eq!(root, Path::new("/"));
        assert!(windows_layout(Path::new("/usr/bin/schtasks.exe")).is_none());
    }

    #[test]
    fn windows_paths_become_linux_paths() {
        assert_eq!(
            linux_path(Path::new("/mnt"), "C:\\Users\\Tim Berners").unwrap(),
            Path::new("/mnt/c/Users/Tim Berners")
        );
        assert!(linux_path(Path::new("/mnt"), "\\\\server\\share").is_none());
        assert!(linux_path(Path::new("/mnt"), "C:\\Users\\..\\x").is_none());
    }

    #[test]
    fn the_profile_line_is_found_among_warnings() {
        let out = "C:\\Users\\me\n'\\\\wsl.localhost\\NixOS\\root'\nCMD.EXE was started with the above path as the current directory.\n";
        assert_eq!(profile_line(out), Some("C:\\Users\\me"));
        assert_eq!(profile_line("%USERPROFILE%\n"), None);
    }

    #[test]
    fn the_task_dir_is_recognised() {
        assert!(is_task_dir(Path::new(
            "/mnt/c/ProgramData/wsl-storage-mount"
        )));
        assert!(is_task_dir(Path::new(
            "/mnt/c/programdata/WSL-Storage-Mount/"
        )));
        assert!(!is_task_dir(Path::new("/mnt/c/Users/me/wsl-storage-mount")));
        assert!(!is_task_dir(Path::new("wsl-storage-mount")));
    }

    #[test]
    fn unchanged_files_are_not_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.ps1");
        assert_eq!(write_if_changed(&p, "x").unwrap(), Written::Changed);
        assert_eq!(write_if_changed(&p, "x").unwrap(), Written::Unchanged);
        assert_eq!(write_if_changed(&p, "y").unwrap(), Written::Changed);
        assert_eq!(fs::read_to_string(&p).unwrap(), "y");
    }
}
