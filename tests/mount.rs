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
    let stat = sb.sh_ok(&format!("stat -c '%u %g %a' {mp}/nixos-wsl-main {mp}/nixos-wsl-dev"));
    assert_eq!(stat, "0 0 755\n1000 100 700\n");
    let state = sb.state();
    assert_eq!(state["outcome"], "mounted");
    assert_eq!(state["mountedNow"], true);
    assert_eq!(state["device"], dev.node.as_str());
    let log = sb.log();
    for step in ["mount: starting", "found", "mounting", "instance dir", "mount: mounted"] {
        assert!(log.contains(step), "log lacks {step:?}:\n{log}");
    }

    // Second run: nothing changes, nothing stacks.
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(sb.mounts_at(&mp), 1);
    assert_eq!(sb.state()["mountedNow"], false);
    assert_eq!(
        sb.sh_ok(&format!("stat -c '%u %g %a' {mp}/nixos-wsl-main {mp}/nixos-wsl-dev")),
        stat
    );

    let out = sb.helper(&cfg, &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
}
