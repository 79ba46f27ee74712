//! `doctor` against a real setup: an ext4 loop device mounted by the helper,
//! instance dirs, the store bound over a stand-in for /nix, the marker, and
//! fakes for what a test cannot have (schtasks.exe, udevadm, systemctl),
//! each test in a private mount namespace. Once healthy, then broken in
//! several ways; each breakage is reported with a fix, and where the fix is
//! a command, running that command repairs it.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{nixstore, output_text, Sandbox};
use serde_json::{json, Value};

const BY_ID_NAME: &str = "nvme-Samsung_SSD_990_PRO_4TB_FAKE0001";

struct Setup {
    cfg: PathBuf,
    node: String,
    uuid: String,
    mp: String,
    nix: String,
    /// The stand-in VHDX root, booting the same system.
    root: String,
    /// Prepended to PATH: the fake udevadm and systemctl.
    fake_bin: PathBuf,
}

/// A healthy system: the disk attached (by-id and by-uuid links, as udev
/// makes them), `mount` run, /nix bound, `mark` run, the task registered,
/// udev answering, nix-daemon active and ordered after the marker.
fn healthy(sb: &mut Sandbox) -> Setup {
    let uuid = common::new_uuid();
    let dev = sb.loop_device(64, &["mkfs.ext4", "-q", "-U", &uuid]);
    sb.link(&format!("/dev/disk/by-id/{BY_ID_NAME}"), &dev.node);
    sb.link(&format!("/dev/disk/by-uuid/{uuid}"), &dev.node);
    let mp = sb.path("storage").display().to_string();
    let nix = sb.path("nix").display().to_string();

    // A real Nix store holding the booted (toy) system.
    let system = nixstore::toy_system(1, 4, "-doctor");
    sb.sh_ok(&format!("mkdir -p {mp} {nix} && mount {} {mp}", dev.node));
    nixstore::disk_store(sb, &format!("{mp}/nixos-wsl-main"), &[&system]);
    sb.sh_ok(&format!("umount {mp}"));
    nixstore::boot(sb, &system);
    let root = sb.path("vhdx").display().to_string();
    sb.sh_ok(&format!("mkdir -p {root}"));
    nixstore::vhdx_root(sb, &root, &system);

    // Windows: the task exists, and the attach.ps1 it runs is installed
    // (written below, once the config exists).
    let schtasks = schtasks_path(sb);
    fake_schtasks(sb, 0);
    sb.fake_exe(
        &schtasks.with_file_name("cmd.exe"),
        "case \"$4\" in %ProgramData%) printf 'C:\\\\ProgramData\\r\\n' ;; *) exit 1 ;; esac",
    );

    // WSL's release, and no Group Policy execution policy in the way.
    sb.fake_exe(
        &schtasks.with_file_name("wsl.exe"),
        "printf 'WSL version: 2.4.13.0\\r\\nKernel version: 5.15.167.4-1\\r\\n'",
    );
    let powershell = schtasks.with_file_name("WindowsPowerShell/v1.0/powershell.exe");
    sb.fake_exe(
        &powershell,
        "printf 'MachinePolicy=Undefined\\r\\nUserPolicy=Undefined\\r\\n'",
    );

    // udev answers; systemd knows nix-daemon, active, after the marker,
    // and WSL's wsl-mnt-guard.service, active.
    let fake_bin = sb.path("fakebin");
    sb.fake_exe(&fake_bin.join("udevadm"), "exit 0");
    fake_systemctl(sb, "nix-mount-marker.service");

    let cfg = sb.config(
        "config.json",
        json!({
            "deviceId": BY_ID_NAME,
            "fsUuid": uuid,
            "mountPoint": mp,
            "mountOptions": ["noatime", "nodev"],
            "waitTimeout": 5,
            "instanceDirs": {
                "nixos-wsl-main": {"owner": "root", "group": "root", "mode": "0755"},
                "nixos-wsl-dev": {"owner": 1000, "group": 100, "mode": "0700"},
            },
            "bindMountNixStore": true,
            "nixStoreSubdir": "nixos-wsl-main",
            "bindTarget": nix,
            "diskSerialNumber": "E823_8FA6_BF53_0001_001B_448B_4ED0_B0F4.",
            "windows": {
                "trigger": "task",
                "taskName": "wsl-storage-mount",
                "schtasksPath": schtasks.display().to_string(),
                "powershellPath": powershell.display().to_string(),
            },
        }),
    );
    let attach = sb.helper(&cfg, &["windows-script"]);
    let installed = sb.path("win/c/ProgramData/wsl-storage-mount/attach.ps1");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::write(&installed, &attach.stdout).unwrap();
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    // What nix.mount and nix-mount-marker.service do.
    sb.sh_ok(&format!("mount --bind {mp}/nixos-wsl-main {nix}"));
    let out = sb.helper(&cfg, &["mark"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    Setup {
        cfg,
        node: dev.node,
        uuid,
        mp,
        nix,
        root,
        fake_bin,
    }
}

/// schtasks.exe: `/Query` exits with `query_exit` (0: the task exists,
/// and its last run ended with exit 0).
fn fake_schtasks(sb: &Sandbox, query_exit: i32) {
    fake_schtasks_with_result(sb, query_exit, 0);
}

/// What register-task.ps1 registers as the task's action.
const TASK_TO_RUN: &str = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -NoProfile -NonInteractive -WindowStyle Hidden -ExecutionPolicy Bypass -File \"C:\\ProgramData\\wsl-storage-mount\\attach.ps1\"";

/// ... and the task's last run ended with `last_result`, as the verbose CSV
/// (`/V /FO CSV /NH`) says it.
fn fake_schtasks_with_result(sb: &Sandbox, query_exit: i32, last_result: i64) {
    fake_schtasks_running(sb, query_exit, last_result, TASK_TO_RUN);
}

/// ... and its action is `task_to_run`.
fn fake_schtasks_running(sb: &Sandbox, query_exit: i32, last_result: i64, task_to_run: &str) {
    let body = if query_exit == 0 {
        format!(
            "echo \"$*\" >> \"$0.calls\"\ncase \"$1\" in /Query) printf '%s\\r\\n' '\"PC\",\"\\wsl-storage-mount\",\"N/A\",\"Ready\",\"Interactive only\",\"11/25/2026 7:00:01 AM\",\"{last_result}\",\"PC\\me\",\"{}\"' ;; esac\nexit 0",
            task_to_run.replace('"', "\"\"")
        )
    } else {
        format!("echo \"$*\" >> \"$0.calls\"\necho 'ERROR: The system cannot find the file specified.'\nexit {query_exit}")
    };
    sb.fake_exe(&schtasks_path(sb), &body);
}

/// schtasks.exe in a fake Windows drive (as /mnt/c/Windows/System32), so
/// that doctor finds cmd.exe beside it and %ProgramData% under the drive.
fn schtasks_path(sb: &Sandbox) -> PathBuf {
    sb.path("win/c/Windows/System32/schtasks.exe")
}

/// systemctl show for nix-daemon.service and .socket, both active, both
/// ordered after `after`; for wsl-mnt-guard.service, active.
fn fake_systemctl(sb: &Sandbox, after: &str) {
    sb.fake_exe(
        &sb.path("fakebin/systemctl"),
        &format!(
            "echo \"$*\" >> \"$0.calls\"\ncase \"$*\" in *wsl-mnt-guard.service) printf 'LoadState=loaded\\nActiveState=active\\nSubState=exited\\nResult=success\\nExecMainStatus=0\\n'; exit 0 ;; esac\nprintf 'ActiveState=active\\nAfter={after} basic.target\\n\\nActiveState=active\\nAfter={after} sockets.target\\n'"
        ),
    );
}

fn doctor(sb: &Sandbox, s: &Setup, json: bool) -> Output {
    let path = format!(
        "{}:{}",
        s.fake_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let args: &[&str] = if json {
        &["--boot-root", &s.root, "doctor", "--json"]
    } else {
        &["--boot-root", &s.root, "doctor"]
    };
    sb.helper_cmd(&s.cfg, args)
        .env("PATH", path)
        .output()
        .unwrap()
}

fn run_doctor(sb: &Sandbox, s: &Setup) -> (Option<i32>, Value) {
    let out = doctor(sb, s, true);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", output_text(&out)));
    (out.status.code(), report)
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

/// The checks that are not ok, as "id=level".
fn not_ok(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["level"] != "ok")
        .map(|c| {
            format!(
                "{}={}",
                c["id"].as_str().unwrap(),
                c["level"].as_str().unwrap()
            )
        })
        .collect()
}

/// The commands in a fix: the parts between backticks.
fn commands(fix: &Value) -> Vec<String> {
    fix.as_str()
        .unwrap_or_else(|| panic!("no fix: {fix}"))
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .collect()
}

#[test]
fn a_healthy_setup_is_all_ok() {
    let Some(mut sb) = Sandbox::new().filter(|_| nixstore::have_nix()) else {
        return;
    };
    let s = healthy(&mut sb);
    let (code, report) = run_doctor(&sb, &s);
    assert_eq!(not_ok(&report), Vec::<String>::new(), "{report:#}");
    assert_eq!(code, Some(0));
    assert_eq!(report["ok"], true);
    let ids: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "config",
            "device",
            "device-links",
            "udev",
            "dev-disk",
            "interop",
            "windows-task",
            "windows-installed-script",
            "windows-execution-policy",
            "wsl-version",
            "wsl-mnt-guard",
            "mount",
            "instance-dir:nixos-wsl-dev",
            "instance-dir:nixos-wsl-main",
            "bind",
            "marker",
            "boot-generation",
            "nix-daemon",
            "last-run",
            "log",
        ]
    );
    assert!(check(&report, "device")["message"]
        .as_str()
        .unwrap()
        .contains(&format!("UUID={}", s.uuid)));
    // No fix where nothing is wrong.
    assert!(report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["fix"].is_null()));
    // The log tail and the status come along.
    assert!(report["logTail"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l.as_str().unwrap().contains("mount: mounted")));
    assert_eq!(report["status"]["ok"], true);
    // What was asked of Windows and systemd.
    let calls = std::fs::read_to_string(schtasks_path(&sb).with_extension("exe.calls")).unwrap();
    assert_eq!(calls, "/Query /TN wsl-storage-mount /V /FO CSV /NH\n");
    let calls = std::fs::read_to_string(sb.path("fakebin/systemctl.calls")).unwrap();
    assert_eq!(
        calls,
        "show -p LoadState -p ActiveState -p SubState -p Result -p ExecMainStatus wsl-mnt-guard.service\nshow -p ActiveState -p After nix-daemon.service nix-daemon.socket\n"
    );

    let out = doctor(&sb, &s, false);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("doctor: 20 ok, 0 warning(s), 0 failed, 0 skipped"),
        "{text}"
    );
    assert!(!text.contains("fix:"), "{text}");
}

#[test]
fn wrong_mount_options_are_a_failure_and_the_fix_command_repairs_them() {
    let Some(mut sb) = Sandbox::new().filter(|_| nixstore::have_nix()) else {
        return;
    };
    let s = healthy(&mut sb);
    sb.sh_ok(&format!("mount -o remount,dev {}", s.mp));
    let (code, report) = run_doctor(&sb, &s);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(not_ok(&report), ["mount=fail"], "{report:#}");
    let mount = check(&report, "mount");
    assert!(mount["message"]
        .as_str()
        .unwrap()
        .contains(&format!("{} is mounted without nodev", s.mp)));
    let fix = commands(&mount["fix"]);
    assert_eq!(fix[0], format!("mount -o remount,nodev {}", s.mp));
    sb.sh_ok(&fix[0]);
    let (code, report) = run_doctor(&sb, &s);
    assert_eq!((code, not_ok(&report)), (Some(0), vec![]), "{report:#}");
}

#[test]
fn an_instance_dir_with_the_wrong_mode_is_a_failure_and_the_fix_command_repairs_it() {
    let Some(mut sb) = Sandbox::new().filter(|_| nixstore::have_nix()) else {
        return;
    };
    let s = healthy(&mut sb);
    let dir = format!("{}/nixos-wsl-dev", s.mp);
    sb.sh_ok(&format!("chmod 0777 {dir} && chown 0:0 {dir}"));
    let (code, report) = run_doctor(&sb, &s);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(
        not_ok(&report),
        ["instance-dir:nixos-wsl-dev=fail"],
        "{report:#}"
    );
    let c = check(&report, "instance-dir:nixos-wsl-dev");
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains("owner 0 (want 1000)") && message.contains("mode 0777 (want 0700)"),
        "{message}"
    );
    let fix = commands(&c["fix"]);
    assert_eq!(fix[0], "systemctl restart wsl-storage-mount");
    assert_eq!(fix[1], format!("chown 1000:100 {dir} && chmod 0700 {dir}"));
    sb.sh_ok(&fix[1]);
    let (code, report) = run_doctor(&sb, &s);
    assert_eq!((code, not_ok(&report)), (Some(0), vec![]), "{report:#}");
}

#[test]
fn an_absent_by_id_link_with_the_disk_present_lists_the_names_that_exist() {
    let Some(mut sb) = Sandbox::new().filter(|_| nixstore::have_nix()) else {
        return;
    };
    let s = healthy(&mut sb);
    // Inside WSL the bare-attached disk is a SCSI disk: udev names it
    // scsi-..., and the nvme-... name from Windows does not exist.
    sb.sh_ok(&format!(
        "rm /dev/disk/by-id/{BY_ID_NAME} /dev/disk/by-uuid/{}",
        s.uuid
    ));
    sb.link("/dev/disk/by-id/scsi-0Msft_Virtual_Disk_FAKE0001", &s.node);
    sb.link("/dev/disk/by-id/ata-Other_Disk_1234", "/dev/null");
    let (code, report) = run_doctor(&sb, &s);
    // A warning: the disk is still found (by probing for the UUID).
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(not_ok(&report), ["device-links=warn"], "{report:#}");
    let c = check(&report, "device-links");
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("deviceId {BY_ID_NAME} is absent"))
            && message.contains("ata-Other_Disk_1234, scsi-0Msft_Virtual_Disk_FAKE0001"),
        "{message}"
    );
    let fix = c["fix"].as_str().unwrap();
    assert!(
        fix.contains("set deviceId = \"scsi-0Msft_Virtual_Disk_FAKE0001\""),
        "{fix}"
    );
    assert!(check(&report, "device")["message"]
        .as_str()
        .unwrap()
        .contains("fsUuid by probing"));
}

#[test]
fn nothing_mounted_fails_mount_bind_and_marker_with_their_fixes() {
    let Some(mut sb) = Sandbox::new().filter(|_| nixstore::have_nix()) else {
        return;
    };
    let s = healthy(&mut sb);
    sb.sh_ok(&format!("umount -R {} && umount {}", s.nix, s.mp));
    let (code, report) = run_doctor(&sb, &s);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(
        not_ok(&report),
        [
            "mount=fail",
            "instance-dir:nixos-wsl-dev=skip",
            "instance-dir:nixos-wsl-main=skip",
            "bind=fail",
            "marker=fail"
        ],
        "{report:#}"
    );
    let mount = check(&report, "mount");
    assert!(mount["message"]
        .as_str()
        .unwrap()
        .contains(&format!("nothing is mounted at {}", s.mp)));
    assert!(commands(&mount["fix"]).contains(&"systemctl restart wsl-storage-mount".to_string()));
    assert!(check(&report, "bind")["fix"]
        .as_str()
        .unwrap()
        .contains("the bind happens at boot only"));
    // The text form names each fix under its check.
    let out = doctor(&sb, &s, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FAIL  mount"), "{text}");
    assert!(
        text.contains("fix: `systemctl restart wsl-storage-mount`"),
        "{text}"
    );
    assert!(text.contains(", 3 failed,"), "{text}");
}

#[test]
fn a_missing_task_and_a_daemon_not_ordered_after_the_marker_fail() {
    let Some(mut sb) = Sandbox::new().filter(|_| nixstore::have_nix()) else {
        return;
    };
    let s = healthy(&mut sb);
    fake_schtasks(&sb, 1);
    fake_systemctl(&sb, "network.target");
    let (code, report) = run_doctor(&sb, &s);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(
        not_ok(&report),
        ["windows-task=fail", "nix-daemon=fail"],
        "{report:#}"
    );
    let task = check(&report, "windows-task");
    assert!(task["message"]
        .as_str()
        .unwrap()
        .contains("ERROR: The system cannot find the file specified."));
    assert!(task["fix"].as_str().unwrap().contains("register-task.ps1"));
    let daemon = check(&report, "nix-daemon");
    assert!(daemon["message"].as_str().unwrap().contains(
        "nix-daemon.service and nix-daemon.socket not ordered after nix-mount-marker.service"
    ));
}

/// The task exists but its last run failed (attach.ps1 exit 1: no disk
/// with the serial): a warning that says so, with the transcript and the
/// command to run it again.
#[test]
fn a_task_whose_last_run_failed_is_a_warning_with_its_meaning() {
    let Some(mut sb) = Sandbox::new() else { return };
    let s = healthy(&mut sb);
    fake_schtasks_with_result(&sb, 0, 1);
    let (code, report) = run_doctor(&sb, &s);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(not_ok(&report), ["windows-task=warn"], "{report:#}");
    let task = check(&report, "windows-task");
    let message = task["message"].as_str().unwrap();
    assert!(
        message.contains("its last run (11/25/2026 7:00:01 AM): attach.ps1 exited 1: no disk, or more than one, has diskSerialNumber"),
        "{message}"
    );
    let fix = task["fix"].as_str().unwrap();
    assert!(
        fix.contains("%ProgramData%\\wsl-storage-mount\\attach.log"),
        "{fix}"
    );
    assert!(
        commands(&task["fix"])
            .iter()
            .any(|c| c.ends_with("schtasks.exe /Run /TN \"wsl-storage-mount\"")),
        "{fix}"
    );
    // Still running is no warning.
    fake_schtasks_with_result(&sb, 0, 0x41301);
    let (_, report) = run_doctor(&sb, &s);
    assert_eq!(not_ok(&report), Vec::<String>::new(), "{report:#}");
    assert!(check(&report, "windows-task")["message"]
        .as_str()
        .unwrap()
        .contains("still running (0x41301)"));
    // Issue 17: exit 4 (an error attach.ps1 did not expect) is not "no
    // disk"; 0x800704DD (schtasks prints it as -2147023651) is named.
    for (result, meaning) in [
        (
            4,
            "attach.ps1 exited 4: attach.ps1 stopped on an error it did not expect",
        ),
        (
            -2147023651,
            "(0x800704DD): its Windows user has no interactive session",
        ),
    ] {
        fake_schtasks_with_result(&sb, 0, result);
        let (_, report) = run_doctor(&sb, &s);
        assert_eq!(not_ok(&report), ["windows-task=warn"], "{report:#}");
        let message = check(&report, "windows-task")["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(message.contains(meaning), "{message}");
        assert!(!message.contains("diskSerialNumber"), "{message}");
    }
}

/// A task registered by an older register-task.ps1 runs attach.ps1 from
/// the user's profile, which any unelevated program can replace: a failure,
/// whatever that file holds, with the command that moves the task over.
#[test]
fn a_task_that_runs_a_user_writable_script_is_a_failure() {
    let Some(mut sb) = Sandbox::new() else { return };
    let s = healthy(&mut sb);
    fake_schtasks_running(
        &sb,
        0,
        0,
        "powershell.exe -NoProfile -NonInteractive -WindowStyle Hidden -ExecutionPolicy Bypass -File \"C:\\Users\\me\\wsl-storage-mount\\attach.ps1\"",
    );
    let (code, report) = run_doctor(&sb, &s);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(
        not_ok(&report),
        ["windows-installed-script=fail"],
        "{report:#}"
    );
    let installed = check(&report, "windows-installed-script");
    let message = installed["message"].as_str().unwrap();
    assert!(
        message.contains("C:\\Users\\me\\wsl-storage-mount\\attach.ps1")
            && message.contains("not C:\\ProgramData\\wsl-storage-mount\\attach.ps1"),
        "{message}"
    );
    assert!(
        installed["fix"]
            .as_str()
            .unwrap()
            .contains("register-task.ps1"),
        "{installed}"
    );
}

#[test]
fn interop_that_cannot_run_is_a_failure_naming_the_path() {
    let Some(mut sb) = Sandbox::new().filter(|_| nixstore::have_nix()) else {
        return;
    };
    let s = healthy(&mut sb);
    std::fs::remove_file(schtasks_path(&sb)).unwrap();
    let (code, report) = run_doctor(&sb, &s);
    assert_eq!(code, Some(1), "{report:#}");
    assert_eq!(
        not_ok(&report),
        ["interop=fail", "windows-task=skip"],
        "{report:#}"
    );
    let interop = check(&report, "interop");
    assert!(interop["message"]
        .as_str()
        .unwrap()
        .contains(&format!("{} does not exist", schtasks_path(&sb).display())));
    assert!(interop["fix"]
        .as_str()
        .unwrap()
        .contains("[interop] enabled = true"));
}

#[test]
fn a_bad_config_is_the_first_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("config.json");
    std::fs::write(
        &cfg,
        r#"{"fsUuid": "not a uuid", "diskSerialNumber": "x'; calc"}"#,
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--config")
        .arg(&cfg)
        .args(["doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let config = check(&report, "config");
    assert_eq!(config["level"], "fail");
    let message = config["message"].as_str().unwrap();
    assert!(
        message.contains("fsUuid:") && message.contains("diskSerialNumber:"),
        "{message}"
    );
    assert!(config["fix"].as_str().unwrap().contains("check"));
    assert_eq!(report["ok"], false);
    assert!(report["status"].is_null());
}
