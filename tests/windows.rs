//! The Windows side: the generated PowerShell (golden files, injection
//! attempts), install-windows-files, and the trigger from Linux against
//! fake schtasks.exe / powershell.exe inside a private mount namespace.
//!
//! Golden files live in tests/golden/; `UPDATE_GOLDEN=1 cargo test --test
//! windows` rewrites them (then read the diff before committing it).

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{output_text, write_exe, Sandbox, BIN};
use serde_json::{json, Value};

const UUID: &str = "0f3e5a8c-1c2d-4b6e-9f00-123456789abc";
const BY_ID_NAME: &str = "nvme-FAKE_WSL_NVMe_0001";

/// Run the helper outside any sandbox (commands that touch no device).
fn helper(dir: &Path, config: Value, args: &[&str]) -> Output {
    let path = dir.join("config.json");
    fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// --- Golden files ----------------------------------------------------------

fn golden_configs() -> Vec<(&'static str, Value)> {
    vec![
        // The least a user writes: the serial, everything else default.
        (
            "minimal",
            json!({"fsUuid": UUID, "diskSerialNumber": "S6Z2NJ0TC14842T"}),
        ),
        // An NVMe serial as Get-PhysicalDisk prints it, a task in a folder,
        // explicit Windows paths with spaces and parentheses.
        (
            "nvme-task-folder",
            json!({
                "fsUuid": UUID,
                "diskSerialNumber": "E823_8FA6_BF53_0001_001B_448B_4ED0_B0F4.",
                "mountName": "internal-4tb-nvme",
                "windows": {
                    "trigger": "task",
                    "taskName": "WSL\\attach storage",
                    "scriptPath": "C:\\wsl tools\\attach.ps1",
                    "logPath": "D:\\logs\\wsl attach (nvme).log"
                }
            }),
        ),
        // The script trigger with paths under %LOCALAPPDATA%/%USERPROFILE%.
        (
            "script-env-paths",
            json!({
                "fsLabel": "wsl-storage",
                "diskSerialNumber": " WD-WX11A2345678 ",
                "windows": {
                    "trigger": "script",
                    "scriptPath": "%LOCALAPPDATA%\\wsl-storage-mount\\attach.ps1",
                    "logPath": "%USERPROFILE%\\wsl\\attach.log"
                }
            }),
        ),
    ]
}

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn compare_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, actual).unwrap();
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with UPDATE_GOLDEN=1 cargo test --test windows",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .map_or(expected.lines().count().min(actual.lines().count()), |i| i);
        panic!(
            "{} differs from the generated script, first at line {}:\n  golden: {:?}\n  actual: {:?}\nIf the change is intended: UPDATE_GOLDEN=1 cargo test --test windows, and read the diff",
            path.display(),
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

/// Every line of code that holds `value` assigns it as a single-quoted
/// literal (`$X = '...'`, or expanded from one). Comments are the
/// template's own text (an example serial, say).
fn only_in_literals(script: &str, value: &str) {
    let quoted = format!("'{}'", value.replace('\'', "''"));
    let code = script.lines().filter(|l| !l.trim_start().starts_with('#'));
    for line in code.filter(|l| l.contains(value)) {
        let ok = line.starts_with('$')
            && (line.ends_with(&format!("= {quoted}"))
                || line.ends_with(&format!(
                    "= [Environment]::ExpandEnvironmentVariables({quoted})"
                )));
        assert!(ok, "{value:?} outside a literal assignment: {line}");
    }
}

#[test]
fn attach_and_register_scripts_match_the_golden_files() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, cfg) in golden_configs() {
        let attach = helper(tmp.path(), cfg.clone(), &["windows-script"]);
        assert_eq!(
            attach.status.code(),
            Some(0),
            "{name}: {}",
            output_text(&attach)
        );
        let register = helper(tmp.path(), cfg.clone(), &["windows-task"]);
        assert_eq!(
            register.status.code(),
            Some(0),
            "{name}: {}",
            output_text(&register)
        );
        let (attach, register) = (stdout(&attach), stdout(&register));
        compare_golden(&format!("{name}.attach.ps1"), &attach);
        compare_golden(&format!("{name}.register-task.ps1"), &register);

        // Plain ASCII: Windows PowerShell 5.1 reads a file without a BOM
        // in the ANSI code page.
        assert!(attach.is_ascii() && register.is_ascii(), "{name}");
        for value in [
            cfg["diskSerialNumber"].as_str(),
            cfg["mountName"].as_str(),
            cfg["windows"]["scriptPath"].as_str(),
            cfg["windows"]["logPath"].as_str(),
        ]
        .into_iter()
        .flatten()
        {
            only_in_literals(&attach, value);
            only_in_literals(&register, value);
        }
    }
}

#[test]
fn attach_script_does_what_the_issue_asks() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, cfg) = golden_configs().remove(1);
    let attach = stdout(&helper(tmp.path(), cfg, &["windows-script"]));
    let code: Vec<&str> = attach
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    let has = |s: &str| code.iter().any(|l| l.contains(s));
    assert!(has("Get-PhysicalDisk") && has("Get-Disk"));
    assert!(has("-replace '[_. ]', ''") && has(".Trim()") && has("ToUpperInvariant()"));
    assert!(has(r"'\\.\PHYSICALDRIVE{0}' -f $number"));
    assert!(has("$env:WSL_UTF8 = '1'"));
    assert!(has("--mount $drive --bare"));
    assert!(has("-match 'WSL_E_DISK_ALREADY_ATTACHED'"));
    assert!(has("Start-Transcript"));
    assert!(has("Finish 0") && has("Finish 1") && has("Finish 2"));
    // `wsl --list` lists distributions, not disks: it must not be used.
    assert!(!has("--list") && !has(" -l "), "wsl --list used");
    // Never a hard-coded user.
    assert!(!attach.contains("C:\\Users\\"));

    let register = stdout(&helper(
        tmp.path(),
        golden_configs().remove(1).1,
        &["windows-task"],
    ));
    for needle in [
        "Register-ScheduledTask",
        "-RunLevel Highest",
        "-AtLogOn",
        "-LogonType Interactive",
        "-NoProfile",
        "-ExecutionPolicy Bypass -File",
        "-Force",
        "schtasks /Run /TN",
        "Unregister-ScheduledTask",
        "$TaskPath = '\\WSL\\'",
        "$TaskName = 'attach storage'",
    ] {
        assert!(
            register.contains(needle),
            "register-task.ps1 lacks {needle}"
        );
    }
    assert!(!register.contains("SYSTEM'") && !register.contains("-UserId 'SYSTEM"));
}

#[test]
fn windows_script_needs_the_serial() {
    let tmp = tempfile::tempdir().unwrap();
    let out = helper(tmp.path(), json!({"fsUuid": UUID}), &["windows-script"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("diskSerialNumber is not set"));
}

// --- Injection attempts --------------------------------------------------------

#[test]
fn injection_attempts_in_every_windows_field_are_rejected_by_check() {
    let tmp = tempfile::tempdir().unwrap();
    let names = [
        "x'; Remove-Item -Recurse C:\\; '",
        "x$(calc)",
        "x`ncalc",
        "x\"; calc; \"",
        "x; calc",
        "x | calc",
        "x & calc",
        "x\ncalc",
        "x\u{2019}; calc; \u{2018}",
        "@(calc)",
        "x#",
        "{calc}",
    ];
    let paths = [
        "C:\\wsl\\a'; calc; '.ps1",
        "C:\\wsl\\$env:USERNAME.ps1",
        "C:\\wsl\\$(calc).ps1",
        "C:\\wsl\\a`calc.ps1",
        "C:\\wsl\\a\u{2019}.ps1",
        "C:\\..\\Windows\\x.ps1",
        "\\\\server\\share\\x.ps1",
        "%TEMP%\\x.ps1",
        "C:\\wsl\\x.ps1\"; calc",
        "C:\\wsl\\x;calc.ps1",
    ];
    let mut cases: Vec<(&str, Value)> = Vec::new();
    for bad in names {
        cases.push(("diskSerialNumber", json!({"diskSerialNumber": bad})));
        cases.push(("mountName", json!({"mountName": bad})));
        cases.push(("windows.taskName", json!({"windows": {"taskName": bad}})));
    }
    for bad in paths {
        cases.push((
            "windows.scriptPath",
            json!({"windows": {"scriptPath": bad}}),
        ));
        cases.push(("windows.logPath", json!({"windows": {"logPath": bad}})));
    }
    for (key, extra) in cases {
        let mut cfg = json!({"fsUuid": UUID, "diskSerialNumber": "S1"});
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let out = helper(tmp.path(), cfg.clone(), &["check"]);
        assert_eq!(out.status.code(), Some(2), "{cfg}: {}", output_text(&out));
        assert!(
            stderr(&out).contains(&format!("{key}:")),
            "{cfg}: the problem is not named by {key}: {}",
            output_text(&out)
        );
        // And nothing is generated from it.
        for cmd in ["windows-script", "windows-task"] {
            let out = helper(tmp.path(), cfg.clone(), &[cmd]);
            assert_eq!(out.status.code(), Some(2), "{cmd} {cfg}");
            assert!(stdout(&out).is_empty(), "{cmd} {cfg}");
        }
    }
}

// --- install-windows-files -----------------------------------------------------

fn mtime_and_inode(path: &Path) -> (i64, i64, u64) {
    let m = fs::metadata(path).unwrap();
    (m.mtime(), m.mtime_nsec(), m.ino())
}

#[test]
fn install_writes_both_scripts_and_rewrites_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("win");
    let cfg = json!({"fsUuid": UUID, "diskSerialNumber": "S1"});
    let dir_arg = dir.display().to_string();
    let out = helper(
        tmp.path(),
        cfg.clone(),
        &["install-windows-files", "--dir", &dir_arg],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let attach = dir.join("attach.ps1");
    let register = dir.join("register-task.ps1");
    assert_eq!(
        fs::read_to_string(&attach).unwrap(),
        stdout(&helper(tmp.path(), cfg.clone(), &["windows-script"]))
    );
    assert_eq!(
        fs::read_to_string(&register).unwrap(),
        stdout(&helper(tmp.path(), cfg.clone(), &["windows-task"]))
    );
    assert!(stdout(&out).contains(&format!("wrote {}", attach.display())));

    // Same config: nothing is rewritten.
    let before = (mtime_and_inode(&attach), mtime_and_inode(&register));
    std::thread::sleep(Duration::from_millis(20));
    let out = helper(
        tmp.path(),
        cfg,
        &["install-windows-files", "--dir", &dir_arg],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(stdout(&out).contains(&format!("unchanged {}", attach.display())));
    assert!(stdout(&out).contains(&format!("unchanged {}", register.display())));
    assert_eq!(
        before,
        (mtime_and_inode(&attach), mtime_and_inode(&register))
    );

    // A new serial changes attach.ps1 only.
    let cfg = json!({"fsUuid": UUID, "diskSerialNumber": "S2"});
    let out = helper(
        tmp.path(),
        cfg,
        &["install-windows-files", "--dir", &dir_arg],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(stdout(&out).contains(&format!("wrote {}", attach.display())));
    assert!(stdout(&out).contains(&format!("unchanged {}", register.display())));
    assert!(fs::read_to_string(&attach).unwrap().contains("'S2'"));
    assert_eq!(before.1, mtime_and_inode(&register));
}

/// A fake Windows under `root`: /mnt-like root with drive c and System32.
fn fake_windows(root: &Path, cmd_body: Option<&str>) -> (PathBuf, PathBuf) {
    let system32 = root.join("mnt/c/Windows/System32");
    fs::create_dir_all(&system32).unwrap();
    if let Some(body) = cmd_body {
        write_exe(&system32.join("cmd.exe"), body);
    }
    (system32.join("schtasks.exe"), root.join("mnt"))
}

/// `printf` arguments that print `text` as UTF-16LE bytes.
fn utf16le_printf(text: &str) -> String {
    let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let escaped: String = bytes.iter().map(|b| format!("\\{b:03o}")).collect();
    format!("printf '{escaped}'")
}

#[test]
fn install_finds_the_profile_dir_through_cmd_exe() {
    let tmp = tempfile::tempdir().unwrap();
    // cmd.exe without WSL_UTF8 answers in UTF-16LE, and complains about a
    // UNC current directory on stderr; the args and env are recorded.
    let calls = tmp.path().join("cmd.calls");
    let body = format!(
        "echo \"$@\" > {calls}\necho \"WSL_UTF8=$WSL_UTF8 WSLENV=$WSLENV\" >> {calls}\n{}\necho \"UNC paths are not supported.  Defaulting to Windows directory.\" >&2",
        utf16le_printf("C:\\Users\\Tim Berners\r\n"),
        calls = calls.display()
    );
    let (schtasks, mnt) = fake_windows(tmp.path(), Some(&body));
    let profile = mnt.join("c/Users/Tim Berners");
    fs::create_dir_all(&profile).unwrap();
    let cfg = json!({
        "fsUuid": UUID, "diskSerialNumber": "S1",
        "windows": {"schtasksPath": schtasks.display().to_string()}
    });
    let out = helper(tmp.path(), cfg, &["install-windows-files"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let dir = profile.join("wsl-storage-mount");
    assert!(dir.join("attach.ps1").is_file(), "{}", output_text(&out));
    assert!(dir.join("register-task.ps1").is_file());
    assert!(stdout(&out).contains("$env:USERPROFILE\\wsl-storage-mount\\register-task.ps1"));
    let calls = fs::read_to_string(&calls).unwrap();
    assert!(calls.starts_with("/d /c echo %USERPROFILE%\n"), "{calls}");
    assert!(
        calls.contains("WSL_UTF8=1 WSLENV=") && calls.contains("WSL_UTF8\n"),
        "{calls}"
    );
}

#[test]
fn install_warns_and_exits_0_when_windows_is_out_of_reach() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Option<&str>, &str)> = vec![
        // No interop: cmd.exe is not there (/mnt/c not mounted).
        ("no cmd.exe", None, "does not exist"),
        // Interop not registered: the .exe cannot be executed.
        (
            "exec format error",
            Some("\u{1}garbage"),
            "exec format error",
        ),
        // cmd.exe hangs: killed at triggerTimeout.
        (
            "hang",
            Some("#!/bin/sh\nsleep 30"),
            "killed at triggerTimeout",
        ),
        // %USERPROFILE% not expanded.
        (
            "unexpanded",
            Some("#!/bin/sh\necho %USERPROFILE%"),
            "did not print the profile dir",
        ),
        // The profile's drive is not mounted where schtasksPath says.
        (
            "no drive",
            Some("#!/bin/sh\nprintf '%s\\r\\n' 'D:\\Users\\me'"),
            "is its drive mounted",
        ),
    ];
    for (what, cmd, expect) in cases {
        let root = tmp.path().join(what.replace(' ', "-"));
        let (schtasks, mnt) = fake_windows(&root, None);
        if let Some(body) = cmd {
            let path = schtasks.with_file_name("cmd.exe");
            fs::write(&path, body).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let cfg = json!({
            "fsUuid": UUID, "diskSerialNumber": "S1",
            "windows": {"schtasksPath": schtasks.display().to_string(), "triggerTimeout": 1}
        });
        let out = helper(tmp.path(), cfg, &["install-windows-files"]);
        assert_eq!(out.status.code(), Some(0), "{what}: {}", output_text(&out));
        let err = stderr(&out);
        assert!(err.contains("Windows is out of reach"), "{what}: {err}");
        assert!(err.contains(expect), "{what}: expected {expect:?} in {err}");
        // Nothing was created on the Linux side in Windows' place.
        assert!(!mnt.join("c/Users").exists(), "{what}");
        assert!(!mnt.join("d").exists(), "{what}");
    }

    // An explicit --dir whose parent is missing (drive not mounted): a
    // warning, and no parent directories made up.
    let missing = tmp.path().join("not-mounted/Users/me/wsl");
    let out = helper(
        tmp.path(),
        json!({"fsUuid": UUID, "diskSerialNumber": "S1"}),
        &[
            "install-windows-files",
            "--dir",
            &missing.display().to_string(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("cannot create"),
        "{}",
        output_text(&out)
    );
    assert!(!tmp.path().join("not-mounted").exists());
}

// --- The trigger from Linux ------------------------------------------------------

/// A loop device with ext4 that is found only through the by-id link, which
/// the fake Windows side (or the test) creates: as when Windows attaches
/// the disk. Returns the loop device node and the config path.
fn trigger_setup(sb: &mut Sandbox, wait_timeout: u64, windows: Value) -> (String, PathBuf) {
    let uuid = common::new_uuid();
    let dev = sb.loop_device(32, &["mkfs.ext4", "-q", "-U", &uuid]);
    let mp = sb.path("storage").display().to_string();
    let cfg = sb.config(
        "config.json",
        json!({
            "deviceId": BY_ID_NAME,
            "mountPoint": mp,
            "waitTimeout": wait_timeout,
            "fsck": false,
            "diskSerialNumber": "E823_8FA6_BF53_0001_001B_448B_4ED0_B0F4.",
            "windows": windows,
        }),
    );
    (dev.node, cfg)
}

/// Shell lines for a fake: record args and env, and "attach" the disk half
/// a second later (the link appears, as udev would make it).
fn fake_attach_lines(sb: &Sandbox, node: &str) -> String {
    format!(
        "printf '%s\\n' \"$*\" >> {calls}\necho \"WSL_UTF8=$WSL_UTF8 WSLENV=$WSLENV\" > {env}\n(sleep 0.5; ln -s {node} /dev/disk/by-id/{BY_ID_NAME}) >/dev/null 2>&1 &",
        calls = sb.path("calls").display(),
        env = sb.path("env").display(),
    )
}

fn calls(sb: &Sandbox) -> Vec<String> {
    fs::read_to_string(sb.path("calls"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Wait for `needle` in the log file (the helper runs in the background).
fn wait_for_log(sb: &Sandbox, needle: &str) {
    let start = Instant::now();
    while !sb.log().contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the log never said {needle:?}:\n{}",
            sb.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_mounted(sb: &Sandbox, out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nlog:\n{}",
        output_text(out),
        sb.log()
    );
    let mp = sb.path("storage").display().to_string();
    assert_eq!(sb.mounts_at(&mp), 1);
    assert_eq!(sb.state()["outcome"], "mounted");
}

#[test]
fn task_trigger_runs_schtasks_with_utf8_env_and_the_disk_is_mounted() {
    let Some(mut sb) = Sandbox::new() else { return };
    let schtasks = sb.path("win/schtasks.exe");
    let (node, cfg) = trigger_setup(
        &mut sb,
        20,
        json!({"trigger": "task", "taskName": "wsl-storage-mount",
               "schtasksPath": schtasks.display().to_string()}),
    );
    sb.fake_exe(
        &schtasks,
        &format!(
            "{}\necho 'SUCCESS: Attempted to run the scheduled task \"wsl-storage-mount\".'",
            fake_attach_lines(&sb, &node)
        ),
    );
    let out = sb.helper(&cfg, &["mount"]);
    assert_mounted(&sb, &out);
    assert_eq!(calls(&sb), vec!["/Run /TN wsl-storage-mount"]);
    let env = fs::read_to_string(sb.path("env")).unwrap();
    assert!(env.starts_with("WSL_UTF8=1 WSLENV="), "{env}");
    assert!(
        env.trim_end()
            .split(['=', ':', ' '])
            .any(|e| e == "WSL_UTF8"),
        "{env}"
    );
    let log = sb.log();
    assert!(
        log.contains("Windows trigger attempt 1: exited with 0"),
        "{log}"
    );
    assert!(
        log.contains(
            "windows: SUCCESS: Attempted to run the scheduled task \"wsl-storage-mount\"."
        ),
        "{log}"
    );
    let triggers = sb.state()["windowsTriggers"].clone();
    assert!(
        triggers[0].as_str().unwrap().contains("exited with 0"),
        "{triggers}"
    );
}

/// schtasks.exe printing `text` as UTF-16LE or as UTF-8: the log shows the
/// same decoded text.
fn trigger_output_is_decoded(utf16: bool) {
    let Some(mut sb) = Sandbox::new() else { return };
    let schtasks = sb.path("win/schtasks.exe");
    let (node, cfg) = trigger_setup(
        &mut sb,
        20,
        json!({"trigger": "task", "taskName": "wsl-storage-mount",
               "schtasksPath": schtasks.display().to_string()}),
    );
    let text = "ERFOLGREICH: Die geplante Aufgabe \"wsl-storage-mount\" wurde ausgeführt.\r\n";
    let print = if utf16 {
        utf16le_printf(text)
    } else {
        format!("printf '%s' '{text}'")
    };
    sb.fake_exe(
        &schtasks,
        &format!("{}\n{print}", fake_attach_lines(&sb, &node)),
    );
    let out = sb.helper(&cfg, &["mount"]);
    assert_mounted(&sb, &out);
    let log = sb.log();
    assert!(
        log.contains(
            "windows: ERFOLGREICH: Die geplante Aufgabe \"wsl-storage-mount\" wurde ausgeführt.\n"
        ),
        "{log}"
    );
    assert!(!log.contains('\0') && !log.contains('\r'), "{log:?}");
}

#[test]
fn utf16le_trigger_output_is_decoded() {
    trigger_output_is_decoded(true);
}

#[test]
fn utf8_trigger_output_is_decoded() {
    trigger_output_is_decoded(false);
}

#[test]
fn already_attached_from_the_script_trigger_counts_as_success() {
    let Some(mut sb) = Sandbox::new() else { return };
    let powershell = sb.path("win/powershell.exe");
    let (node, cfg) = trigger_setup(
        &mut sb,
        20,
        json!({"trigger": "script", "scriptPath": "C:\\wsl\\attach.ps1",
               "powershellPath": powershell.display().to_string()}),
    );
    // What a non-elevated `wsl --mount` answers for an attached disk:
    // localized text, the symbolic code, exit -1 (255 from Linux).
    sb.fake_exe(
        &powershell,
        &format!(
            "{}\necho 'Der Datenträger ist bereits angefügt.'\necho 'Fehlercode: Wsl/Service/AttachDisk/WSL_E_DISK_ALREADY_ATTACHED'\nexit 255",
            fake_attach_lines(&sb, &node)
        ),
    );
    let out = sb.helper(&cfg, &["mount"]);
    assert_mounted(&sb, &out);
    assert_eq!(
        calls(&sb),
        vec!["-NoProfile -NonInteractive -ExecutionPolicy Bypass -File C:\\wsl\\attach.ps1"]
    );
    let log = sb.log();
    let line = log
        .lines()
        .find(|l| l.contains("Windows trigger attempt 1:"))
        .unwrap_or_else(|| panic!("no trigger line:\n{log}"));
    assert!(line.contains("exited with 255"), "{line}");
    // Logged as information, not as a warning: Windows did its part.
    assert!(line.contains(" INFO "), "{line}");
    assert!(log.contains("WSL_E_DISK_ALREADY_ATTACHED"), "{log}");
}

#[test]
fn a_hanging_trigger_is_killed_at_the_timeout_and_the_wait_goes_on() {
    let Some(mut sb) = Sandbox::new() else { return };
    let schtasks = sb.path("win/schtasks.exe");
    let (node, cfg) = trigger_setup(
        &mut sb,
        30,
        json!({"trigger": "task", "taskName": "wsl-storage-mount",
               "schtasksPath": schtasks.display().to_string(),
               "triggerTimeout": 1, "triggerAttempts": 1}),
    );
    let pids = sb.path("pids");
    sb.fake_exe(
        &schtasks,
        &format!(
            "echo $$ > {pids}\nsleep 1000 &\necho $! >> {pids}\nwait",
            pids = pids.display()
        ),
    );
    let idx = sb.spawn_helper(&cfg, &["mount"]);
    wait_for_log(&sb, "Windows trigger attempt 1: killed at triggerTimeout");
    // The disk arrives after the trigger was given up on.
    sb.link(&format!("/dev/disk/by-id/{BY_ID_NAME}"), &node);
    let out = sb.wait_helper(idx);
    assert_mounted(&sb, &out);
    // The fake and its child were killed with their process group.
    for pid in fs::read_to_string(&pids).unwrap().split_whitespace() {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        assert!(
            stat.is_empty() || state == Some('Z'),
            "process {pid} of the hung trigger still runs: {stat}"
        );
    }
}

#[test]
fn an_exe_interop_cannot_run_is_a_warning_and_the_wait_goes_on() {
    let Some(mut sb) = Sandbox::new() else { return };
    let schtasks = sb.path("win/schtasks.exe");
    let (node, cfg) = trigger_setup(
        &mut sb,
        30,
        json!({"trigger": "task", "taskName": "wsl-storage-mount",
               "schtasksPath": schtasks.display().to_string(), "triggerAttempts": 1}),
    );
    // A PE file without the WSLInterop binfmt handler: exec format error.
    fs::create_dir_all(schtasks.parent().unwrap()).unwrap();
    fs::write(
        &schtasks,
        b"MZ\x90\x00\x03\x00\x00\x00 not an ELF, no #! line",
    )
    .unwrap();
    fs::set_permissions(&schtasks, fs::Permissions::from_mode(0o755)).unwrap();
    let idx = sb.spawn_helper(&cfg, &["mount"]);
    wait_for_log(&sb, "Windows trigger attempt 1: not runnable");
    sb.link(&format!("/dev/disk/by-id/{BY_ID_NAME}"), &node);
    let out = sb.wait_helper(idx);
    assert_mounted(&sb, &out);
    let log = sb.log();
    assert!(
        log.contains("WARN  Windows trigger attempt 1: not runnable:")
            && log.contains("exec format error"),
        "{log}"
    );
}

#[test]
fn a_missing_or_unexecutable_trigger_is_retried_and_named_when_the_disk_never_comes() {
    let Some(sb) = Sandbox::new() else { return };
    for (what, prepare) in [("missing", false), ("no-exec-bit", true)] {
        let schtasks = sb.path(&format!("{what}/schtasks.exe"));
        if prepare {
            fs::create_dir_all(schtasks.parent().unwrap()).unwrap();
            fs::write(&schtasks, "#!/bin/sh\nexit 0\n").unwrap();
            fs::set_permissions(&schtasks, fs::Permissions::from_mode(0o644)).unwrap();
        }
        let cfg = sb.config(
            &format!("{what}.json"),
            json!({
                "deviceId": BY_ID_NAME,
                "waitTimeout": 7,
                "mountPoint": sb.path("storage").display().to_string(),
                "diskSerialNumber": "S1",
                "windows": {"trigger": "task", "taskName": "wsl-storage-mount",
                            "schtasksPath": schtasks.display().to_string(),
                            "triggerAttempts": 2},
            }),
        );
        let out = sb.helper(&cfg, &["mount"]);
        assert_eq!(out.status.code(), Some(3), "{what}: {}", output_text(&out));
        let err = stderr(&out);
        let why = if prepare {
            "Permission denied"
        } else {
            "does not exist"
        };
        // Tried again on a later miss, and both attempts are in the message.
        for n in [1, 2] {
            let attempt = format!("attempt {n}: not runnable: {}", schtasks.display());
            assert!(err.contains(&attempt), "{what}: {attempt:?} not in: {err}");
        }
        assert!(err.contains(why), "{what}: {err}");
        assert!(err.contains("device not found after 7 s"), "{what}: {err}");
    }
}
