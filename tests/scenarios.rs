//! The Rust twins of the NixOS VM tests in checks/vm/: each VM scenario's
//! logic, run here against the real binary, real loop devices and a private
//! mount namespace (the VM tests themselves need KVM and a full nixpkgs).
//! Scenarios already covered elsewhere are named in docs/development.md's table.

mod common;

use common::{output_text, Sandbox};
use serde_json::json;

fn mount_id_at(sb: &Sandbox, path: &str) -> Vec<String> {
    sb.mountinfo()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(path))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

/// A config that binds the instance dir "main" (over a sandbox path, not
/// /nix).
fn bind_config(sb: &Sandbox, uuid: &str, mp: &str) -> std::path::PathBuf {
    sb.config(
        "config.json",
        json!({"fsUuid": uuid, "mountPoint": mp, "bindMountNixStore": true, "nixStoreSubdir": "main",
               "bindTarget": sb.path("nix").display().to_string(),
               "instanceDirs": {"main": {"owner": 0, "group": 0, "mode": "0755"}}}),
    )
}

/// vm-reboot: after a "reboot" (everything unmounted, the disk detached and
/// attached again on another loop number, a fresh /run) the same layout
/// comes back, and the log keeps both boots.
#[test]
fn vm_reboot_twin_everything_comes_back_after_reattach() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let first = sb.loop_device(64, &["mkfs.ext4", "-q", "-U", &uuid]);
    let mp = sb.path("storage").display().to_string();
    let cfg = sb.config(
        "config.json",
        json!({"fsUuid": uuid, "mountPoint": mp, "waitTimeout": 5,
               "instanceDirs": {"nixos-wsl-main": {"owner": 0, "group": 0, "mode": "0755"},
                                "nixos-wsl-dev": {"owner": 1000, "group": 100, "mode": "0700"}}}),
    );
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let layout = sb.sh_ok(&format!(
        "cd {mp} && stat -c '%n %u %g %a' nixos-wsl-main nixos-wsl-dev"
    ));

    // "Reboot": unmount, detach, wipe /run, attach again (the number moves on).
    sb.sh_ok(&format!("umount {mp} && rm -rf /run/wsl-storage-mount/*"));
    sb.detach(&first.node);
    let name = first.node.trim_start_matches("/dev/");
    let backing = format!("/sys/block/{name}/loop/backing_file");
    let start = std::time::Instant::now();
    while std::path::Path::new(&backing).exists() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "{name} stays attached"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The disk comes back as another device, as /dev/sdX letters move
    // between WSL boots: should the kernel hand out the old number again,
    // attach once more (a new number) and let the old one go.
    let mut second = sb.attach(&first.image);
    if second.node == first.node {
        let again = sb.attach(&first.image);
        sb.detach(&second.node);
        second = again;
    }
    assert_ne!(
        second.node, first.node,
        "the disk should come back under another name"
    );

    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sb.state()["device"], second.node.as_str());
    assert_eq!(sb.mounts_at(&mp), 1);
    assert_eq!(
        sb.sh_ok(&format!(
            "cd {mp} && stat -c '%n %u %g %a' nixos-wsl-main nixos-wsl-dev"
        )),
        layout
    );
    assert_eq!(
        sb.log().matches("mount: starting").count(),
        2,
        "the log was truncated"
    );
    let status = sb.helper(&cfg, &["status"]);
    assert_eq!(status.status.code(), Some(0), "{}", output_text(&status));
}

/// vm-restart-switch: a second `mount` (systemctl restart) keeps the very
/// same mount (same mountinfo ID), and the stamp is rewritten.
#[test]
fn vm_restart_switch_twin_keeps_the_same_mount_and_stamp() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = sb.loop_device(64, &["mkfs.ext4", "-q", "-U", &uuid]);
    let mp = sb.path("storage").display().to_string();
    if !common::nixstore::have_nix() {
        return;
    }
    let system = common::nixstore::toy_system(1, 4, "-restart");
    sb.sh_ok(&format!("mkdir -p {mp} && mount {} {mp}", dev.node));
    common::nixstore::disk_store(&sb, &format!("{mp}/main"), &[&system]);
    sb.sh_ok(&format!("umount {mp}"));
    common::nixstore::boot(&sb, &system);
    let cfg = bind_config(&sb, &uuid, &mp);
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let ids = mount_id_at(&sb, &mp);
    assert_eq!(ids.len(), 1);
    sb.sh_ok("rm /run/wsl-storage-mount/bind-ok");
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(mount_id_at(&sb, &mp), ids, "the mount was replaced");
    assert!(sb.stamp_exists(), "the stamp was not rewritten");
}

/// vm-windows-trigger: the disk is missing; a fake schtasks.exe attaches it
/// when run with `/Run /TN <task>`; the helper picks it up.
#[test]
fn vm_windows_trigger_twin_schtasks_brings_the_disk_in() {
    let Some(sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let image = sb.path("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    sb.sh_ok(&format!("mkfs.ext4 -q -U {uuid} {}", image.display()));
    let schtasks = sb.path("mnt/c/Windows/System32/schtasks.exe");
    let args_log = sb.path("schtasks.args");
    // Like the scheduled task: on /Run, attach the disk (here: a loop device
    // and the by-id link udev would make) a little later, outside the fake's
    // process group (the helper kills that group when the fake exits), as
    // Windows does the work outside it. `/Query` (the task's last result)
    // knows nothing here, as in the VM test.
    sb.fake_exe(
        &schtasks,
        &format!(
            "case \"$1\" in /Run) ;; *) exit 0 ;; esac\necho \"$*\" >> {args}\nsetsid -f sh -c 'sleep 0.3; dev=$(losetup --find --show {img}); echo \"$dev\" > {args}.dev; ln -s \"$dev\" /dev/disk/by-id/nvme-FAKE_NVMe_0001' >/dev/null 2>&1\necho 'SUCCESS: Attempted to run the scheduled task \"wsl-storage-mount\".'",
            args = args_log.display(),
            img = image.display()
        ),
    );
    let mp = sb.path("storage").display().to_string();
    let cfg = sb.config(
        "config.json",
        json!({"deviceId": "nvme-FAKE_NVMe_0001", "fsUuid": uuid, "mountPoint": mp, "waitTimeout": 10,
               "diskSerialNumber": "E823_8FA6_BF53_0001_001B_448B_4ED0_B0F4.",
               "windows": {"trigger": "task", "taskName": "wsl-storage-mount",
                           "schtasksPath": schtasks.display().to_string()}}),
    );
    let out = sb.helper(&cfg, &["mount"]);
    // Detach what the fake attached, whatever happened.
    if let Ok(dev) = std::fs::read_to_string(format!("{}.dev", args_log.display())) {
        sb.sh_ok(&format!(
            "umount {mp} 2>/dev/null; losetup -d {} || true",
            dev.trim()
        ));
    }
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(
        std::fs::read_to_string(&args_log).unwrap(),
        "/Run /TN wsl-storage-mount\n",
        "run exactly once"
    );
    let log = sb.log();
    assert!(
        log.contains("starting Windows trigger (attempt 1 of 3)"),
        "{log}"
    );
    assert!(
        log.contains("windows: SUCCESS: Attempted to run the scheduled task"),
        "{log}"
    );
    assert!(log.contains("device appeared after"), "{log}");
}

/// vm-qemu-nvme: without the /nix bind, nothing is stamped or marked and
/// status is clean; `mark` is a no-op under both policies.
#[test]
fn vm_qemu_nvme_twin_without_the_bind_nothing_is_marked() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = sb.loop_device(64, &["mkfs.ext4", "-q", "-U", &uuid]);
    sb.link("/dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_fakeserial1", &dev.node);
    let mp = sb.path("storage").display().to_string();
    for policy in ["block", "fallback"] {
        let cfg = sb.config(
            &format!("{policy}.json"),
            json!({"deviceId": "nvme-QEMU_NVMe_Ctrl_fakeserial1", "mountPoint": mp, "onMissing": policy,
                   "bindMountNixStore": false, "bindTarget": sb.path("nix").display().to_string()}),
        );
        let out = sb.helper(&cfg, &["mount"]);
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
        // "fsck.ext4 is not on PATH; skipping fsck" names the tool too:
        // only fsck's own verdict shows that it ran.
        let log = sb.log();
        assert!(
            log.contains("fsck.ext4: no errors") && !log.contains("is not on PATH"),
            "fsck ran: {log}"
        );
        assert!(!sb.stamp_exists());
        let out = sb.helper(&cfg, &["mark"]);
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to mark"));
        let out = sb.helper(&cfg, &["status"]);
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    }
    assert_eq!(sb.mounts_at(&mp), 1);
}

/// vm-unsafe-store: only the booted toplevel is missing (what the VM
/// seeds): exit 6, no stamp, and status says not as configured.
#[test]
fn vm_unsafe_store_twin_missing_toplevel_is_refused() {
    let Some(mut sb) = Sandbox::new() else { return };
    if !common::nixstore::have_nix() {
        return;
    }
    let uuid = common::new_uuid();
    let dev = sb.loop_device(64, &["mkfs.ext4", "-q", "-U", &uuid]);
    let mp = sb.path("storage").display().to_string();
    let toplevel = common::nixstore::toy_system(1, 4, "-unsafe");
    let deps: Vec<String> = common::nixstore::closure(&toplevel)
        .into_iter()
        .filter(|p| p.contains("toy-etc"))
        .collect();
    // The disk store and the stand-in VHDX hold everything but the toplevel.
    let root = sb.path("vhdx").display().to_string();
    sb.sh_ok(&format!("mkdir -p {mp} {root} && mount {} {mp}", dev.node));
    common::nixstore::import(
        &sb,
        &common::nixstore::nix_dir_uri(&format!("{mp}/main")),
        &deps[0],
    );
    common::nixstore::import(&sb, &common::nixstore::root_uri(&root), &deps[0]);
    sb.sh_ok(&format!("umount {mp}"));
    common::nixstore::boot(&sb, &toplevel);
    let cfg = bind_config(&sb, &uuid, &mp);
    let out = sb.helper(&cfg, &["--boot-root", &root, "mount"]);
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("the booted system {toplevel} is valid neither in the disk store {mp}/main nor in the VHDX store")), "{}", output_text(&out));
    assert!(!sb.stamp_exists());
    let status = sb.helper(&cfg, &["status"]);
    assert_eq!(status.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("failed (exit 6)"),
        "{}",
        output_text(&status)
    );
}

/// vm-eval-bad-subdir: the module's assertion has its twin in `check`.
#[test]
fn vm_eval_bad_subdir_twin_check_names_nix_store_subdir() {
    // check needs no root: this runs as any user.
    let tmp = common::scratch_dir();
    let cfg = tmp.path().join("bad.json");
    std::fs::write(
        &cfg,
        json!({"fsUuid": "abcd-1234", "bindMountNixStore": true, "nixStoreSubdir": "../etc",
               "instanceDirs": {"../etc": {}}})
        .to_string(),
    )
    .unwrap();
    let out = common::check_config(&cfg);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("- nixStoreSubdir: \"../etc\" must be a single path component"),
        "{stderr}"
    );
}
