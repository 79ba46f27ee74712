//! The store guard (`mount` with bindMountNixStore) and the marker step
//! (`mark`), against a real ext4 loop device and a real bind mount.

mod common;

use common::{nixstore, output_text, Sandbox};
use serde_json::json;

/// A mounted storage disk whose `nixos-wsl-main` holds a real Nix store
/// with the closure of a toy system, which is the booted one.
fn setup(sb: &mut Sandbox, extra: serde_json::Value) -> (std::path::PathBuf, String) {
    let system = nixstore::toy_system(1, 4, "");
    let uuid = common::new_uuid();
    let dev = sb.loop_device(64, &["mkfs.ext4", "-q", "-U", &uuid]);
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let mp = sb.path("storage").display().to_string();
    sb.sh_ok(&format!("mkdir -p {mp} && mount {} {mp}", dev.node));
    nixstore::disk_store(sb, &format!("{mp}/nixos-wsl-main"), &[&system]);
    sb.sh_ok(&format!("umount {mp}"));
    nixstore::boot(sb, &system);
    // The stand-in VHDX root boots the same system (status compares them).
    let root = sb.path("vhdx").display().to_string();
    sb.sh_ok(&format!("mkdir -p {root}"));
    nixstore::vhdx_root(sb, &root, &system);
    let mut cfg = json!({
        "deviceId": "nvme-FAKE_NVMe_0001",
        "fsUuid": uuid,
        "mountPoint": mp,
        "waitTimeout": 3,
        "bindMountNixStore": true,
        "nixStoreSubdir": "nixos-wsl-main",
        "bindTarget": sb.path("nix").display().to_string(),
        "instanceDirs": {"nixos-wsl-main": {"owner": "root", "group": "root", "mode": "0755"}},
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    (sb.config("config.json", cfg), system)
}

fn sandbox() -> Option<Sandbox> {
    let sb = Sandbox::new()?;
    nixstore::have_nix().then_some(sb)
}

#[test]
fn a_path_registered_but_deleted_from_the_store_is_refused_with_exit_6() {
    let Some(mut sb) = sandbox() else { return };
    let (cfg, system) = setup(&mut sb, json!({}));
    let own = nixstore::closure(&system)
        .into_iter()
        .find(|p| p.contains("toy-own-1"))
        .unwrap();
    let mp = sb.path("storage").display().to_string();
    sb.sh_ok(&format!(
        "mount /dev/disk/by-id/nvme-FAKE_NVMe_0001 {mp} && rm -rf {mp}/nixos-wsl-main/store/{} && umount {mp}",
        nixstore::store_name(&own)
    ));
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 of 4 paths in the closure of") && stderr.contains("are registered in"),
        "{stderr}"
    );
    assert!(stderr.contains(&own), "names the missing path: {stderr}");
    assert!(
        stderr.contains("wsl-storage-mount migrate"),
        "says how to fix: {stderr}"
    );
    assert!(!sb.stamp_exists());
    assert_eq!(sb.state()["outcome"], "failed");
    assert_eq!(sb.state()["exitCode"], 6);
    // The storage itself is mounted; only the bind is refused.
    assert_eq!(sb.mounts_at(&sb.path("storage").display().to_string()), 1);
}

#[test]
fn a_dir_that_is_no_store_is_refused_and_a_stale_stamp_removed() {
    let Some(mut sb) = sandbox() else { return };
    let (cfg, _) = setup(&mut sb, json!({}));
    sb.sh_ok("echo old > /run/wsl-storage-mount/bind-ok");
    let mp = sb.path("storage").display().to_string();
    sb.sh_ok(&format!(
        "mount /dev/disk/by-id/nvme-FAKE_NVMe_0001 {mp} && rm -r {mp}/nixos-wsl-main/var && umount {mp}"
    ));
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nixos-wsl-main/var is not a directory"));
    assert!(!sb.stamp_exists(), "the stale stamp survived a failed run");
}

#[test]
fn the_whole_closure_gets_the_stamp_and_mark_writes_the_marker_only_on_the_bind() {
    let Some(mut sb) = sandbox() else { return };
    let (cfg, _) = setup(&mut sb, json!({}));
    let out = sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(sb.stamp_exists());
    assert_eq!(sb.state()["storeVerified"], true);
    let mp = sb.path("storage").display().to_string();
    let nix = sb.path("nix").display().to_string();

    // Before the bind: block mode refuses to mark (nix-daemon stays off).
    sb.sh_ok(&format!("mkdir -p {nix} && touch {nix}/.mounted"));
    let out = sb.helper(&cfg, &["mark"]);
    assert_eq!(out.status.code(), Some(5), "{}", output_text(&out));
    assert!(
        !sb.path("nix/.mounted").exists(),
        "a stale marker on the unbound dir must go"
    );

    // What nix.mount does: bind the instance dir over the target.
    sb.sh_ok(&format!("mount --bind {mp}/nixos-wsl-main {nix}"));
    let out = sb.helper(&cfg, &["mark"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(sb
        .sh_ok(&format!("cat {nix}/.mounted"))
        .contains("is the bind of"));
    // The marker lives on the storage disk, not on the dir underneath.
    assert!(sb
        .sh_ok(&format!("cat {mp}/nixos-wsl-main/.mounted"))
        .contains("is the bind of"));

    let status = sb.helper(
        &cfg,
        &[
            "--boot-root",
            &sb.path("vhdx").display().to_string(),
            "status",
            "--json",
        ],
    );
    assert_eq!(status.status.code(), Some(0), "{}", output_text(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["bind"]["isBind"], true);
    assert_eq!(status["bind"]["marker"], true);

    // A bind of another directory is not the bind.
    sb.sh_ok(&format!(
        "umount -R {nix} && mkdir -p {mp}/other && mount --bind {mp}/other {nix}"
    ));
    let out = sb.helper(&cfg, &["mark"]);
    assert_eq!(out.status.code(), Some(5), "{}", output_text(&out));
    let status = sb.helper(
        &cfg,
        &[
            "--boot-root",
            &sb.path("vhdx").display().to_string(),
            "status",
        ],
    );
    assert_eq!(status.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&status.stdout).contains("is NOT the bind of"));
}

#[test]
fn fallback_mark_goes_on_without_the_bind() {
    let Some(mut sb) = sandbox() else { return };
    let (cfg, _) = setup(&mut sb, json!({"onMissing": "fallback"}));
    let nix = sb.path("nix").display().to_string();
    sb.sh_ok(&format!("mkdir -p {nix} && touch {nix}/.mounted"));
    let out = sb.helper(&cfg, &["mark"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEGRADED"));
    assert!(!sb.path("nix/.mounted").exists(), "a stale marker must go");
}

/// Run the helper with a fake `systemctl` that answers `is-system-running`.
fn helper_with_systemd_state(
    sb: &Sandbox,
    cfg: &std::path::Path,
    state: &str,
    args: &[&str],
) -> std::process::Output {
    let bin = sb.path(&format!("systemd-{state}"));
    sb.fake_exe(&bin.join("systemctl"), &format!("echo {state}"));
    sb.sh_ok("mkdir -p /run/systemd/system");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    sb.helper_cmd(cfg, args).env("PATH", path).output().unwrap()
}

#[test]
fn the_bind_waits_for_boot_when_the_system_is_already_up() {
    let Some(mut sb) = sandbox() else { return };
    let (cfg, _) = setup(&mut sb, json!({}));
    let nix = sb.path("nix").display().to_string();
    sb.sh_ok(&format!("mkdir -p {nix}"));

    // A switch (or a manual restart) after boot: verified, but no stamp.
    let out = helper_with_systemd_state(&sb, &cfg, "running", &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the system is already up"));
    assert!(!sb.stamp_exists());
    assert_eq!(sb.state()["storeVerified"], true);
    assert_eq!(sb.state()["bindDeferred"], true);
    // The marker step does not fail the running nix-daemon over it.
    let out = sb.helper(&cfg, &["mark"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("next start of this instance"));

    // During boot the stamp is written.
    let out = helper_with_systemd_state(&sb, &cfg, "starting", &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(sb.stamp_exists());
    assert_eq!(sb.state()["bindDeferred"], false);

    // Once /nix is the bind, a restart after boot keeps (re-writes) the stamp.
    let mp = sb.path("storage").display().to_string();
    sb.sh_ok(&format!("mount --bind {mp}/nixos-wsl-main {nix}"));
    let out = helper_with_systemd_state(&sb, &cfg, "running", &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(sb.stamp_exists());
    assert_eq!(sb.mounts_at(&nix), 1, "the bind is left alone");

    // An unreadable systemd state is not taken for a boot.
    let out = helper_with_systemd_state(&sb, &cfg, "offline", &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(sb.stamp_exists(), "already bound: the stamp stays true");
    sb.sh_ok(&format!("umount {nix}"));
    let out = helper_with_systemd_state(&sb, &cfg, "offline", &["mount"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot tell whether the system is booting")
    );
    assert!(!sb.stamp_exists());
}
