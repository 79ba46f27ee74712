//! Device arrival from kernel uevents: no udev, no /dev/disk links (the
//! sandbox's /dev/disk is an empty tmpfs), a loop device attached while
//! `mount` waits. Uevents are not namespaced: the sandbox sees every loop
//! event of the machine, so each test's filesystem has its own UUID/LABEL.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{output_text, LoopDev, Sandbox};
use serde_json::json;

/// An image with a filesystem, not attached yet.
fn image(sb: &Sandbox, name: &str, mkfs_args: &[&str]) -> PathBuf {
    let image = sb.path(name);
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let out = std::process::Command::new("mkfs.ext4")
        .arg("-q")
        .args(mkfs_args)
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    image
}

/// Wait until the log holds `needle` (the helper got that far).
fn wait_for_log(sb: &Sandbox, needle: &str) {
    let start = Instant::now();
    while !sb.log().contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "log never said {needle:?}:\n{}",
            sb.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn config(sb: &Sandbox, identity: serde_json::Value) -> PathBuf {
    let mut cfg = json!({
        "mountPoint": sb.path("storage").display().to_string(),
        "waitTimeout": 30,
        "fsck": false,
        "instanceDirs": {"nixos-wsl-main": {"owner": "root", "group": "root", "mode": "0755"}},
    });
    for (k, v) in identity.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    sb.config("config.json", cfg)
}

/// A short random label (ext4 allows 16 bytes).
fn new_label() -> String {
    format!("ue-{}", &common::new_uuid()[..8])
}

/// The helper waits; an unrelated ext4 device arrives and is ignored (the
/// debug log says so); then the configured one arrives and is mounted,
/// found from its own uevent.
fn found_from_its_uevent(identity: serde_json::Value, mkfs_args: &[&str]) {
    let Some(mut sb) = Sandbox::new() else { return };
    assert!(
        sb.sh_ok("ls -A /dev/disk/by-id /dev/disk/by-uuid /dev/disk/by-label")
            .lines()
            .all(|l| l.is_empty() || l.ends_with(':')),
        "the sandbox has no udev links"
    );
    let target = image(&sb, "target.img", mkfs_args);
    let other = image(
        &sb,
        "other.img",
        &["-U", &common::new_uuid(), "-L", &new_label()],
    );
    let cfg = config(&sb, identity);
    let mp = sb.path("storage").display().to_string();
    let run = sb.spawn_helper(&cfg, &["-v", "mount"]);
    wait_for_log(&sb, "waiting up to 30 s");

    let unrelated: LoopDev = sb.attach(&other);
    wait_for_log(&sb, &format!("{}: ext4 UUID=", unrelated.node));
    let log = sb.log();
    assert!(
        log.contains(&format!("uevent change {}", unrelated.node)) && log.contains("ignored"),
        "{log}"
    );
    assert!(!log.contains("device appeared"), "{log}");

    let dev = sb.attach(&target);
    let out = sb.wait_helper(run);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let state = sb.state();
    assert_eq!(state["device"], dev.node.as_str(), "{state}");
    let via = state["foundVia"].as_str().unwrap_or_default();
    assert!(
        via.contains("(uevent change)"),
        "found {via:?}, not from its uevent"
    );
    assert_eq!(sb.mounts_at(&mp), 1);
    assert!(sb.mountinfo().contains(&format!(" {} ", dev.node)));
}

#[test]
fn a_loop_attach_without_links_is_found_by_uuid_from_its_uevent() {
    let uuid = common::new_uuid();
    found_from_its_uevent(json!({"fsUuid": uuid}), &["-U", &uuid]);
}

#[test]
fn a_loop_attach_without_links_is_found_by_label_from_its_uevent() {
    let label = new_label();
    found_from_its_uevent(json!({"fsLabel": label}), &["-L", &label]);
}

/// The device arrives right after the helper's first look, before its wait
/// loop (the helper holds there on a test hook): the listener opened before
/// the look has queued the event, so it is found from that event, not by
/// the one-second safety scan.
#[test]
fn a_device_arriving_between_the_first_look_and_the_wait_is_not_lost() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let target = image(&sb, "target.img", &["-U", &uuid]);
    let cfg = config(&sb, json!({"fsUuid": uuid}));
    let mut child: Child = sb
        .helper_cmd(&cfg, &["-v", "mount"])
        .env("WSL_STORAGE_MOUNT_HOLD_AFTER_FIRST_LOOK_MS", "3000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for_log(&sb, "holding 3000 ms after the first look");
        let dev = sb.attach(&target);
        (dev, sb.log())
    }));
    let (dev, log_at_attach) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            std::panic::resume_unwind(e);
        }
    };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    // The attach happened while the helper held (it had not looked again).
    assert!(
        !log_at_attach.contains("device appeared"),
        "{log_at_attach}"
    );
    let state = sb.state();
    assert_eq!(state["device"], dev.node.as_str(), "{state}");
    let via = state["foundVia"].as_str().unwrap_or_default();
    assert!(
        via.contains("(uevent change)"),
        "found {via:?}: the event in the gap was lost"
    );
    assert!(Path::new(&dev.image).exists());
}

/// Processes of the helper's binary inside the sandbox's mount namespace.
fn helpers_in(sb: &Sandbox) -> Vec<u32> {
    let ns = std::fs::read_link(format!("/proc/{}/ns/mnt", sb.pid)).unwrap();
    let bin = std::fs::canonicalize(common::BIN).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
                .ok()
                .as_ref()
                == Some(&ns)
                && std::fs::read_link(format!("/proc/{pid}/exe")).ok().as_ref() == Some(&bin)
        })
        .collect()
}

/// Wait until no process of the helper's binary is left in the sandbox.
fn no_helper_left(sb: &Sandbox) {
    let start = Instant::now();
    while !helpers_in(sb).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "helper processes left behind: {:?}",
            helpers_in(sb)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With a by-id identity the helper watches the link directory with
/// inotify and hands the descriptor's teardown to a child forked while it
/// waits (not once the device is there): the link is found, and that
/// child is gone soon after the helper exits.
#[test]
fn a_by_id_link_is_found_with_inotify_and_no_process_stays_behind() {
    let Some(mut sb) = Sandbox::new() else { return };
    let dev = sb.loop_device(64, &["mkfs.ext4", "-q", "-U", &common::new_uuid()]);
    let cfg = config(&sb, json!({"deviceId": "nvme-FAKE_UEVENT_0001"}));
    let run = sb.spawn_helper(&cfg, &["-v", "mount"]);
    wait_for_log(&sb, "watching /dev/disk/by-id");
    assert_eq!(
        helpers_in(&sb).len(),
        2,
        "the helper and the holder of its inotify descriptor, while it waits"
    );
    sb.link("/dev/disk/by-id/nvme-FAKE_UEVENT_0001", &dev.node);
    let out = sb.wait_helper(run);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let via = sb.state()["foundVia"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(via.starts_with("deviceId via /dev/disk/by-id/"), "{via}");
    no_helper_left(&sb);
}

/// The holder goes with the helper when the disk never comes too.
#[test]
fn a_by_id_wait_that_times_out_leaves_no_process_behind() {
    let Some(mut sb) = Sandbox::new() else { return };
    let cfg = config(
        &sb,
        json!({"deviceId": "nvme-FAKE_UEVENT_NEVER", "waitTimeout": 1}),
    );
    let run = sb.spawn_helper(&cfg, &["mount"]);
    let out = sb.wait_helper(run);
    assert_ne!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(sb.log().contains("nvme-FAKE_UEVENT_NEVER"), "{}", sb.log());
    no_helper_left(&sb);
}
