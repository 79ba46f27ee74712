//! `mount` end to end: the real binary, real loop devices with ext4, each
//! test in a private mount namespace (see tests/common).

mod common;

use common::{output_text, Sandbox};
use serde_json::json;

#[test]
fn device_present_is_mounted_with_dirs_and_second_run_changes_nothing() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = sb.loop_device(64, &["mkfs.ext4", "-q", "-U", &uuid, "-L", "wsl-storage"]);
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let mp = sb.path("storage").display().to_string();
    let cfg = sb.config(
        "config.json",
        json!({
            "deviceId": "nvme-FAKE_NVMe_0001",
            "fsUuid": uuid,
            "mountPoint": mp,
            "mountOptions": ["noatime", "nodev"],
            "waitTimeout": 5,
            "instanceDirs": {
                "nixos-wsl-main": {"owner": "root", "group": "root", "mode": "0755"},
                "nixos-wsl-dev": {"owner": 1000, "group": "100", "mode": "0700"},
            }
        }),
    );
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sb.mounts_at(&mp), 1);
    assert_eq!(sb.fstype_at(&mp).as_deref(), Some("ext4"));
    let opts = sb.options_at(&mp).unwrap();
    assert!(opts.contains("noatime") && opts.contains("nodev"), "{opts}");
    let stat = sb.sh_ok(&format!(
        "stat -c '%u %g %a' {mp}/nixos-wsl-main {mp}/nixos-wsl-dev"
    ));
    assert_eq!(stat, "0 0 755\n1000 100 700\n");
    let state = sb.state();
    assert_eq!(state["outcome"], "mounted");
    assert_eq!(state["mountedNow"], true);
    assert_eq!(state["device"], dev.node.as_str());
    let log = sb.log();
    for step in [
        "mount: starting",
        "found",
        "mounting",
        "instance dir",
        "mount: mounted",
    ] {
        assert!(log.contains(step), "log lacks {step:?}:\n{log}");
    }

    // Second run: nothing changes, nothing stacks.
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sb.mounts_at(&mp), 1);
    assert_eq!(sb.state()["mountedNow"], false);
    assert_eq!(
        sb.sh_ok(&format!(
            "stat -c '%u %g %a' {mp}/nixos-wsl-main {mp}/nixos-wsl-dev"
        )),
        stat
    );

    let out = sb.helper(&cfg, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
}

fn ext4(sb: &mut Sandbox, uuid: &str) -> common::LoopDev {
    sb.loop_device(64, &["mkfs.ext4", "-q", "-U", uuid])
}

fn basic_config(sb: &Sandbox, extra: serde_json::Value) -> std::path::PathBuf {
    let mut cfg = json!({
        "deviceId": "nvme-FAKE_NVMe_0001",
        "mountPoint": sb.path("storage").display().to_string(),
        "waitTimeout": 5,
        "fsck": false,
        "instanceDirs": {"nixos-wsl-main": {"owner": "root", "group": "root", "mode": "0755"}},
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    sb.config("config.json", cfg)
}

#[test]
fn device_appearing_a_second_after_start_is_mounted() {
    let Some(mut sb) = Sandbox::new() else { return };
    let mp = sb.path("storage").display().to_string();
    // (a) The by-id link appears late (inotify on /dev/disk/by-id).
    let dev = ext4(&mut sb, &common::new_uuid());
    let cfg = basic_config(&sb, json!({"waitTimeout": 10}));
    let started = std::time::Instant::now();
    let run = sb.spawn_helper(&cfg, &["mount"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let out = sb.wait_helper(run);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "it waited for the timeout"
    );
    assert_eq!(sb.mounts_at(&mp), 1);
    let log = sb.log();
    assert!(log.contains("waiting up to 10 s"), "{log}");
    assert!(log.contains("device appeared after"), "{log}");
    sb.sh_ok(&format!("umount {mp}"));

    // (b) No links at all; the disk itself is attached late and found by
    // probing for its UUID (udev off, as on NixOS-WSL by default).
    let uuid = common::new_uuid();
    let image = sb.path("late.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    sb.sh_ok(&format!("mkfs.ext4 -q -U {uuid} {}", image.display()));
    let cfg = sb.config(
        "late.json",
        json!({"fsUuid": uuid, "mountPoint": mp, "waitTimeout": 10, "fsck": false}),
    );
    let started = std::time::Instant::now();
    let run = sb.spawn_helper(&cfg, &["mount"]);
    std::thread::sleep(std::time::Duration::from_secs(1));
    let late = sb.attach(&image);
    let out = sb.wait_helper(run);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(9),
        "it waited for the timeout"
    );
    assert_eq!(sb.state()["device"], late.node.as_str());
    assert_eq!(sb.mounts_at(&mp), 1);
}

#[test]
fn device_that_never_appears_exits_3_or_degrades_with_fallback() {
    let Some(sb) = Sandbox::new() else { return };
    let mp = sb.path("storage").display().to_string();
    let cfg = basic_config(&sb, json!({"waitTimeout": 2, "fsUuid": common::new_uuid()}));
    let started = std::time::Instant::now();
    let out = sb.helper(&cfg, &["mount"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(3), "{}", output_text(&out));
    assert!(
        took >= std::time::Duration::from_secs(2),
        "gave up early: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(5),
        "overran waitTimeout: {took:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("device not found after 2 s"), "{stderr}");
    assert!(
        last.contains("/dev/disk/by-id/nvme-FAKE_NVMe_0001"),
        "{last}"
    );
    assert!(last.contains("Next:"), "{last}");
    assert_eq!(sb.mounts_at(&mp), 0);
    assert_eq!(sb.state()["outcome"], "failed");
    assert_eq!(sb.state()["exitCode"], 3);
    assert!(!sb.stamp_exists());

    let cfg = basic_config(
        &sb,
        json!({"waitTimeout": 1, "fsUuid": common::new_uuid(), "onMissing": "fallback", "bindMountNixStore": true, "nixStoreSubdir": "nixos-wsl-main"}),
    );
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DEGRADED"),
        "{}",
        output_text(&out)
    );
    assert_eq!(sb.state()["outcome"], "degraded");
    assert_eq!(sb.mounts_at(&mp), 0);
    assert!(!sb.stamp_exists(), "no stamp when degraded");
    let status = sb.helper(&cfg, &["status", "--json"]);
    assert_eq!(status.status.code(), Some(1));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["lastRun"]["outcome"], "degraded");
}

fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn no_filesystem_or_the_wrong_one_exits_4_and_leaves_the_bytes_alone() {
    let Some(mut sb) = Sandbox::new() else { return };
    let mp = sb.path("storage").display().to_string();
    let mut cases: Vec<(&str, common::LoopDev)> = Vec::new();
    // Random bytes, no filesystem.
    let blank = sb.loop_device(16, &[]);
    sb.sh_ok(&format!(
        "head -c 1048576 /dev/urandom | dd of={} bs=64k conv=notrunc status=none",
        blank.image.display()
    ));
    cases.push(("no filesystem", blank));
    // A swap signature: not a filesystem, and not one to set fsType to.
    cases.push(("holds swap", sb.loop_device(16, &["mkswap", "-q"])));
    if common::tool_for_case("mkfs.vfat", "dosfstools", "vfat case") {
        cases.push(("holds vfat", sb.loop_device(40, &["mkfs.vfat"])));
    }
    if common::tool_for_case("mkfs.xfs", "xfsprogs", "xfs case") {
        let xfs = sb.loop_device(320, &["mkfs.xfs", "-q", "-f"]);
        // ext4 with an XFS superblock in sector 0 (where ext4 leaves its
        // boot block free): two signatures, refused, both named.
        let two = sb.loop_device(16, &["mkfs.ext4", "-q", "-F"]);
        sb.sh_ok(&format!(
            "dd if={} of={} bs=512 count=1 conv=notrunc status=none",
            xfs.image.display(),
            two.image.display()
        ));
        let _ = std::process::Command::new("blockdev")
            .arg("--flushbufs")
            .arg(&two.node)
            .output();
        cases.push(("holds xfs", xfs));
        cases.push(("carries more than one signature (xfs", two));
    }
    for (what, dev) in cases {
        sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
        let before = sha256(&dev.image);
        let cfg = basic_config(&sb, json!({"fsck": true}));
        let out = sb.helper(&cfg, &["mount"]);
        assert_eq!(out.status.code(), Some(4), "{what}: {}", output_text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(what) && stderr.contains(&dev.node),
            "{what}: {stderr}"
        );
        if what == "holds swap" {
            assert!(
                !stderr.contains("set fsType")
                    && stderr.contains("not a filesystem the helper mounts"),
                "{stderr}"
            );
        }
        assert_eq!(sb.mounts_at(&mp), 0, "{what}");
        assert_eq!(
            sha256(&dev.image),
            before,
            "{what}: the device's bytes changed"
        );
    }
}

#[test]
fn a_foreign_mount_point_exits_5_and_the_same_device_is_accepted() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = ext4(&mut sb, &uuid);
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let mp = sb.path("storage").display().to_string();
    let cfg = basic_config(&sb, json!({}));

    // Something else is mounted there.
    sb.sh_ok(&format!("mkdir -p {mp} && mount -t tmpfs other {mp}"));
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(5), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is taken by other"),
        "{}",
        output_text(&out)
    );
    assert_eq!(sb.mounts_at(&mp), 1, "nothing stacked on the tmpfs");
    assert_eq!(sb.fstype_at(&mp).as_deref(), Some("tmpfs"));
    sb.sh_ok(&format!("umount {mp}"));

    // The same device, mounted by "another instance".
    sb.sh_ok(&format!("mount -t ext4 {} {mp}", dev.node));
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sb.mounts_at(&mp), 1, "no second mount stacked");
    assert!(sb.log().contains("already mounted"), "{}", sb.log());
    assert_eq!(sb.state()["mountedNow"], false);
}

#[test]
fn a_symlink_in_an_instance_dirs_place_is_refused_and_the_victim_untouched() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = ext4(&mut sb, &uuid);
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let mp = sb.path("storage").display().to_string();
    let victim = sb.path("victim").display().to_string();
    sb.sh_ok(&format!(
        "mkdir -p {victim} && chown 4242:4242 {victim} && chmod 0751 {victim}"
    ));
    // Plant the link on the disk itself, where the instance dir belongs.
    sb.sh_ok(&format!(
        "mkdir -p {mp} && mount {} {mp} && ln -s {victim} {mp}/nixos-wsl-dev && touch {mp}/not-a-dir && umount {mp}",
        dev.node
    ));
    let cfg = basic_config(
        &sb,
        json!({"instanceDirs": {
            "nixos-wsl-main": {"owner": 0, "group": 0, "mode": "0755"},
            "nixos-wsl-dev": {"owner": 1000, "group": 100, "mode": "0700"},
            "not-a-dir": {"owner": 1000, "group": 100, "mode": "0700"},
        }}),
    );
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(5), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nixos-wsl-dev is a symlink"), "{stderr}");
    assert!(
        stderr.contains("not-a-dir exists and is not a directory"),
        "{stderr}"
    );
    assert_eq!(
        sb.sh_ok(&format!("stat -c '%u %g %a' {victim}")),
        "4242 4242 751\n"
    );
    // The link is left as it was; the good dir was still prepared.
    assert_eq!(
        sb.sh_ok(&format!("readlink {mp}/nixos-wsl-dev")).trim(),
        victim
    );
    assert_eq!(
        sb.sh_ok(&format!("stat -c '%u %g %a' {mp}/nixos-wsl-main")),
        "0 0 755\n"
    );
    assert!(!sb.stamp_exists());
}

#[test]
fn two_runs_started_together_make_one_mount() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = ext4(&mut sb, &uuid);
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let mp = sb.path("storage").display().to_string();
    let cfg = basic_config(&sb, json!({"fsck": true}));
    for round in 0..3 {
        let a = sb.spawn_helper(&cfg, &["mount"]);
        let b = sb.spawn_helper(&cfg, &["mount"]);
        let (a, b) = (sb.wait_helper(a), sb.wait_helper(b));
        assert_eq!(
            a.status.code(),
            Some(0),
            "round {round}: {}",
            output_text(&a)
        );
        assert_eq!(
            b.status.code(),
            Some(0),
            "round {round}: {}",
            output_text(&b)
        );
        assert_eq!(sb.mounts_at(&mp), 1, "round {round}");
        sb.sh_ok(&format!("umount {mp}"));
    }
}

#[test]
fn bad_configs_exit_2_naming_each_key() {
    // check needs no root and runs as any user; mount runs in a sandbox,
    // which only root gets.
    let tmp = common::scratch_dir();
    let sb = Sandbox::new();
    let cases = [
        (
            json!({"fsUuid": "abcd-1234", "colour": "blue"}),
            vec!["colour"],
        ),
        (
            json!({"fsUuid": "abcd-1234", "mountPoint": "mnt/storage"}),
            vec!["mountPoint"],
        ),
        (
            json!({"fsUuid": "abcd-1234", "nixStoreSubdir": "../x", "instanceDirs": {}}),
            vec!["nixStoreSubdir"],
        ),
        (
            json!({"fsUuid": "abcd-1234", "nixStoreSubdir": "a/b", "instanceDirs": {}}),
            vec!["nixStoreSubdir"],
        ),
        (json!({"mountPoint": "/mnt/wsl/storage"}), vec!["device"]),
        (
            json!({"fsUuid": "abcd-1234", "instanceDirs": {"d": {"mode": "0999"}}}),
            vec!["instanceDirs.d.mode"],
        ),
        (
            json!({"deviceId": "a/b", "waitTimeout": -1, "instanceDirs": {"..": {}}, "onMissing": "later"}),
            vec!["deviceId", "waitTimeout", "instanceDirs...", "onMissing"],
        ),
        // The module's bounds: a UUID as blkid prints it, waitTimeout 1..86400.
        (json!({"fsUuid": "abc"}), vec!["fsUuid"]),
        (
            json!({"fsUuid": "0f3e5a8c-1c2d-4b6e-9f00-123456789ab"}),
            vec!["fsUuid"],
        ),
        (
            json!({"fsUuid": "0f3e5a8c-1c2d-4b6e-9f00-123456789abc", "waitTimeout": 0, "fsckTimeout": 0}),
            vec!["waitTimeout", "fsckTimeout"],
        ),
    ];
    for (i, (value, keys)) in cases.into_iter().enumerate() {
        let cfg = tmp.path().join(format!("bad{i}.json"));
        std::fs::write(&cfg, value.to_string()).unwrap();
        for cmd in ["check", "mount"] {
            let out = match (cmd, &sb) {
                ("check", _) => common::check_config(&cfg),
                (_, Some(sb)) => sb.helper(&cfg, &[cmd]),
                (_, None) => continue,
            };
            assert_eq!(
                out.status.code(),
                Some(2),
                "{cmd} {value}: {}",
                output_text(&out)
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            for key in &keys {
                assert!(
                    stderr.contains(&format!("- {key}:")),
                    "{cmd} {value}: {key} not named in\n{stderr}"
                );
            }
        }
    }
    // A good config passes check without touching anything.
    let good = tmp.path().join("good.json");
    std::fs::write(&good, json!({"fsLabel": "wsl-storage"}).to_string()).unwrap();
    let out = common::check_config(&good);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    // A 10 MB unknown key: reported at once, and echoed in a few dozen
    // characters, not in full.
    let huge = format!(r#"{{"fsLabel": "x", "{}": 1}}"#, "k".repeat(10 << 20));
    let cfg = tmp.path().join("huge.json");
    std::fs::write(&cfg, huge).unwrap();
    let out = common::check_config(&cfg);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out).len());
    assert!(
        out.stderr.len() < 4096,
        "{} bytes of stderr",
        out.stderr.len()
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("(10485760 bytes): unknown key"));
    // A FIFO as the config is refused, not waited on.
    let fifo = tmp.path().join("config.fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let out = common::check_config(&fifo);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    // A missing config file is a config problem too.
    let out = common::check_config(&tmp.path().join("absent.json"));
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
}

#[test]
fn fsck_repairs_a_filesystem_marked_with_errors_before_mounting() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = ext4(&mut sb, &uuid);
    sb.sh_ok(&format!("tune2fs -E force_fsck {}", dev.node));
    assert!(sb
        .sh_ok(&format!("dumpe2fs -h {} 2>/dev/null", dev.node))
        .contains("with errors"));
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let mp = sb.path("storage").display().to_string();
    let cfg = basic_config(&sb, json!({"fsck": true}));
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sb.mounts_at(&mp), 1);
    let log = sb.log();
    assert!(
        log.contains("running fsck.ext4 -p") && log.contains("records errors"),
        "{log}"
    );
    assert!(
        log.contains("the recorded errors were checked and cleared"),
        "{log}"
    );
    sb.sh_ok(&format!("umount {mp}"));
    let state = sb.sh_ok(&format!(
        "dumpe2fs -h {} 2>/dev/null | grep '^Filesystem state'",
        dev.node
    ));
    assert!(
        state.contains("clean") && !state.contains("errors"),
        "{state}"
    );
}

#[test]
fn without_udev_links_the_uuid_or_label_is_found_by_probing() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let label = format!("wsm{}", &uuid[..8]);
    let dev = sb.loop_device(64, &["mkfs.ext4", "-q", "-U", &uuid, "-L", &label]);
    let mp = sb.path("storage").display().to_string();
    // No links at all: /dev/disk is an empty tmpfs in the sandbox.
    for identity in [
        json!({"fsUuid": uuid.to_uppercase()}),
        json!({"fsLabel": label}),
    ] {
        let mut cfg = json!({"mountPoint": mp, "waitTimeout": 3, "fsck": false});
        for (k, v) in identity.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let cfg = sb.config("probe.json", cfg);
        let out = sb.helper(&cfg, &["mount"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{identity}: {}",
            output_text(&out)
        );
        assert_eq!(sb.state()["device"], dev.node.as_str());
        assert!(sb.state()["foundVia"]
            .as_str()
            .unwrap()
            .contains("by probing"));
        sb.sh_ok(&format!("umount {mp}"));
    }
    // A by-uuid link pointing at the wrong disk is caught by the UUID check.
    let other = ext4(&mut sb, &common::new_uuid());
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &other.node);
    let cfg = sb.config("wrong.json", json!({"deviceId": "nvme-FAKE_NVMe_0001", "fsUuid": uuid, "mountPoint": mp, "waitTimeout": 1}));
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(4), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the configured fsUuid"));
    assert_eq!(sb.mounts_at(&mp), 0);
}

#[test]
fn a_hanging_fsck_is_stopped_at_fsck_timeout_and_nothing_is_mounted() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = ext4(&mut sb, &uuid);
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let bin = sb.path("bin");
    // A grandchild keeps fsck's output pipe open: the helper must neither
    // wait for it nor leave it running.
    common::write_exe(
        &bin.join("fsck.ext4"),
        &format!(
            "echo checking; sleep 300 & echo $! > {}; sleep 300",
            sb.path("grandchild.pid").display()
        ),
    );
    let mp = sb.path("storage").display().to_string();
    let cfg = basic_config(&sb, json!({"fsck": true, "fsckTimeout": 2}));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = sb
        .helper_cmd(&cfg, &["mount"])
        .env("PATH", path)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains("did not finish within fsckTimeout (2 s)"),
        "{text}"
    );
    assert_eq!(sb.mounts_at(&mp), 0);
    let pid = std::fs::read_to_string(sb.path("grandchild.pid")).unwrap();
    assert!(
        !std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .is_ok_and(|s| s.contains(") Z ")),
        "the grandchild {pid} outlived the step"
    );
}

#[test]
fn a_partitioned_disk_is_described_and_never_offered_mkfs() {
    let Some(mut sb) = Sandbox::new() else { return };
    for tool in ["sgdisk", "partx"] {
        if !common::have_tool(tool) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must have {tool}"
            );
            eprintln!("skipped: {tool} missing (apt-get install gdisk util-linux)");
            return;
        }
    }
    let image = sb.path("gpt.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    sb.sh_ok(&format!(
        "sgdisk -n 1:2048:+30M -n 2:0:0 {} >/dev/null",
        image.display()
    ));
    // ext4 in partition 1 (1 MiB in), through a loop device over its range.
    let uuid = common::new_uuid();
    sb.sh_ok(&format!(
        "p=$(losetup -f --show -o 1048576 --sizelimit 31457280 {img}) && mkfs.ext4 -q -U {uuid} -L inpart $p; rc=$?; losetup -d $p; exit $rc",
        img = image.display()
    ));
    let disk = sb.attach(&image);
    let mp = sb.path("storage").display().to_string();
    let by_uuid = sb.config(
        "by-uuid.json",
        json!({"fsUuid": uuid, "mountPoint": mp, "waitTimeout": 3, "fsck": false}),
    );
    // A loop device without partition scanning has no partition nodes: by
    // fsUuid the whole disk is found, and the message says how to get them.
    let out = sb.helper(&by_uuid, &["mount"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains(&format!("{} (fsUuid by probing", disk.node))
            && text.contains(&format!("partx -a {}", disk.node)),
        "{text}"
    );
    assert!(!text.contains("mkfs"), "{text}");
    // The test kernel may not read partition tables itself; partx asks it to
    // add the partitions the table lists (as udev's partprobe would).
    sb.sh_ok(&format!("partx -a {} || true", disk.node));
    // Partitions added by hand outlive the loop device's detach (the kernel
    // drops them itself only for a partition-scanning loop): once the
    // sandbox is gone (its mounts with it), remove them, also when the
    // test fails.
    struct DropPartitions {
        sb: Option<Sandbox>,
        node: String,
    }
    impl Drop for DropPartitions {
        fn drop(&mut self) {
            self.sb.take();
            let _ = std::process::Command::new("partx")
                .arg("-d")
                .arg(&self.node)
                .output();
        }
    }
    let mut guard = DropPartitions {
        sb: Some(sb),
        node: disk.node.clone(),
    };
    let sb = guard.sb.as_mut().unwrap();
    let part1 = format!("{}p1", disk.node);
    let have_part_node = std::path::Path::new(&part1).exists();
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &disk.node);
    let before = sha256(&image);

    let cfg = basic_config(sb, json!({"fsck": true}));
    let out = sb.helper(&cfg, &["mount"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("is a partitioned disk (gpt table"), "{text}");
    assert!(
        text.contains("partition 1") && text.contains(&format!("ext4 UUID {uuid}")),
        "{text}"
    );
    assert!(
        text.contains("partition 2: no filesystem")
            || text.contains(&format!("partition 2 ({}p2): no filesystem", disk.node)),
        "{text}"
    );
    assert!(text.contains(&format!("fsUuid = \"{uuid}\"")), "{text}");
    if have_part_node {
        assert!(text.contains(&format!("device = \"{part1}\"")), "{text}");
    }
    assert!(!text.contains("mkfs"), "{text}");
    assert_eq!(sb.mounts_at(&mp), 0);
    assert_eq!(sha256(&image), before, "the disk's bytes changed");
    // status says the same, not "no filesystem".
    let out = sb.helper(&cfg, &["status"]);
    let text = output_text(&out);
    assert!(
        text.contains("fs:        none usable: is a partitioned disk (gpt table"),
        "{text}"
    );

    // The advice works: by fsUuid the partition is found and mounted.
    if have_part_node {
        let out = sb.helper(&by_uuid, &["mount"]);
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
        assert!(sb.log().contains(&format!("fsUuid by probing {part1}")));
    }
}

#[test]
fn an_empty_loop_or_a_regular_file_as_device_is_named_for_what_it_is() {
    let Some(mut sb) = Sandbox::new() else { return };
    let empty = sb.path("empty.img");
    std::fs::File::create(&empty).unwrap();
    // Attached to a file of 0 bytes: a loop device of size 0, as a
    // detached one is, but held by this test.
    let dev = sb.attach(&empty);
    let file = sb.path("not-a-device");
    std::fs::write(&file, "data").unwrap();
    let mp = sb.path("storage").display().to_string();
    for (device, what) in [
        (dev.node.clone(), "a block device of size 0"),
        (
            file.display().to_string(),
            "exists but is a regular file, not a block device",
        ),
    ] {
        let cfg = sb.config(
            "config.json",
            json!({"device": device, "mountPoint": mp, "waitTimeout": 1}),
        );
        let out = sb.helper(&cfg, &["mount"]);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert!(text.contains(&format!("{device} ({what}")), "{text}");
        assert!(!text.contains("mkfs"), "{text}");
        // status and doctor say the same.
        for cmd in ["status", "doctor"] {
            let out = sb.helper(&cfg, &[cmd]);
            let text = output_text(&out);
            assert!(text.contains(&format!("{device}: {what}")), "{cmd}: {text}");
        }
    }
}

#[test]
fn a_mount_at_a_non_utf8_path_does_not_blind_mount_or_status() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = ext4(&mut sb, &uuid);
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    // A tmpfs at a path with bytes that are not UTF-8 (Latin-1 "café" and
    // 0xff), plus a space the kernel escapes as \040.
    let odd = sb.path("odd");
    sb.sh_ok(&format!(
        "d=\"{}/caf$(printf '\\351') $(printf '\\377')\" && mkdir -p \"$d\" && mount -t tmpfs odd-tmpfs \"$d\"",
        odd.display()
    ));
    assert!(sb.mountinfo().contains("odd-tmpfs"));
    let mp = sb.path("storage").display().to_string();
    let cfg = basic_config(&sb, json!({}));
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sb.mounts_at(&mp), 1);
    for args in [&["status"][..], &["status", "--json"][..]] {
        let out = sb.helper(&cfg, args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            output_text(&out)
        );
    }
    // Idempotent across it too: the second run sees the first one's mount.
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sb.mounts_at(&mp), 1);
}

#[test]
fn a_symlink_or_file_in_the_mount_points_path_exits_5_and_mounts_nothing() {
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = ext4(&mut sb, &uuid);
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let victim = sb.path("victim");
    std::fs::create_dir(&victim).unwrap();
    std::os::unix::fs::symlink(&victim, sb.path("parent-link")).unwrap();
    std::os::unix::fs::symlink(&victim, sb.path("mp-link")).unwrap();
    std::fs::write(sb.path("a-file"), "x").unwrap();
    let cases = [
        (
            sb.path("parent-link/storage"),
            sb.path("parent-link"),
            "is a symlink",
        ),
        (sb.path("mp-link"), sb.path("mp-link"), "is a symlink"),
        (sb.path("a-file"), sb.path("a-file"), "is a regular file"),
        (
            sb.path("a-file/storage"),
            sb.path("a-file"),
            "is a regular file",
        ),
    ];
    for (mp, culprit, what) in cases {
        let cfg = basic_config(&sb, json!({"mountPoint": mp.display().to_string()}));
        let out = sb.helper(&cfg, &["mount"]);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(5), "{}: {text}", mp.display());
        assert!(
            text.contains(&format!("{} {what}", culprit.display())),
            "{}: {text}",
            mp.display()
        );
        // Nothing mounted anywhere from the device, nothing made in the
        // link's target.
        let dev_line = format!(" - ext4 {} ", dev.node);
        assert!(
            !sb.mountinfo().contains(&dev_line),
            "{}: {}",
            mp.display(),
            sb.mountinfo()
        );
        assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
        assert_eq!(sb.state()["exitCode"], 5);
    }
    // The device is free for the real path (no EBUSY left behind).
    let mp = sb.path("storage").display().to_string();
    let cfg = basic_config(&sb, json!({}));
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sb.mounts_at(&mp), 1);
}

#[test]
fn sigterm_during_the_wait_records_interrupted_not_the_previous_outcome() {
    use std::os::unix::process::ExitStatusExt;
    let Some(mut sb) = Sandbox::new() else { return };
    let uuid = common::new_uuid();
    let dev = ext4(&mut sb, &uuid);
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let cfg = basic_config(&sb, json!({}));
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sb.state()["outcome"], "mounted");

    // Now a run that waits for a device that is not there.
    let cfg = sb.config(
        "missing.json",
        json!({"deviceId": "nvme-NOT_THERE", "mountPoint": sb.path("other").display().to_string(), "waitTimeout": 120}),
    );
    let mut child = sb
        .helper_cmd(&cfg, &["mount"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait (bounded) until it is in the wait; nsenter execs the helper, so
    // the child's pid is the helper's.
    let start = std::time::Instant::now();
    while !sb.log().contains("waiting up to 120 s") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{}",
            sb.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}");
    let state = sb.state();
    assert_eq!(state["outcome"], "interrupted", "{state}");
    assert_eq!(state["exitCode"], 143, "{state}");
    assert!(
        state["message"].as_str().unwrap().contains("SIGTERM"),
        "{state}"
    );
    assert!(!sb.stamp_exists());
}

#[test]
fn a_device_with_two_signatures_found_by_probing_is_refused_not_missing() {
    let Some(mut sb) = Sandbox::new() else { return };
    if !common::have_tool("mkfs.xfs") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI needs xfsprogs"
        );
        return;
    }
    let uuid = common::new_uuid();
    let xfs = sb.path("xfs.img");
    std::fs::File::create(&xfs)
        .unwrap()
        .set_len(320 << 20)
        .unwrap();
    sb.sh_ok(&format!("mkfs.xfs -q -f {}", xfs.display()));
    let two = sb.path("two.img");
    std::fs::File::create(&two)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    sb.sh_ok(&format!(
        "mkfs.ext4 -q -F -U {uuid} {two} && dd if={xfs} of={two} bs=512 count=1 conv=notrunc status=none",
        two = two.display(),
        xfs = xfs.display()
    ));
    let dev = sb.attach(&two);
    let before = sha256(&two);
    let mp = sb.path("storage").display().to_string();
    let cfg = sb.config(
        "config.json",
        json!({"fsUuid": uuid, "mountPoint": mp, "waitTimeout": 2, "fsck": true}),
    );
    let out = sb.helper(&cfg, &["mount"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(
        text.contains(&format!("{} (fsUuid by probing", dev.node))
            && text.contains("carries more than one signature (xfs")
            && text.contains(&format!("ext4 UUID {uuid}"))
            && text.contains("wipefs"),
        "{text}"
    );
    assert!(!text.contains("mkfs"), "{text}");
    assert_eq!(sb.mounts_at(&mp), 0);
    assert_eq!(sha256(&two), before);
}
