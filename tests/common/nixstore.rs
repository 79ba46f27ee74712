//! Real Nix stores for the store-lifecycle tests: toy systems built into
//! the machine's store by Debian's nix-bin (no sandbox, /bin/sh builders),
//! then imported with nix-store --export/--import into chroot stores that
//! stand in for the VHDX root (`local?root=DIR`) and the disk's instance
//! dir (`local?real=DIR/store&state=DIR/var/nix`).

use std::path::Path;
use std::process::Command;

use super::{output_text, Sandbox};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/toy-system.nix");

/// Whether Nix is here. Under CI=true it must be: a missing nix-store is a
/// failure, never a silent skip.
pub fn have_nix() -> bool {
    let ok = super::have_tool("nix-store") && super::have_tool("nix-build");
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nix-store/nix-build are missing under CI=true (apt-get install nix-bin)"
        );
        super::record_skip("nix-store is not installed (apt-get install nix-bin)");
    }
    ok
}

/// Build toy system `gen` (own blob of `blob_kib` KiB; `tag` makes a
/// distinct family of paths) and return its store path.
pub fn toy_system(gen: u32, blob_kib: u32, tag: &str) -> String {
    let out = Command::new("nix-build")
        .args([
            "--option",
            "sandbox",
            "false",
            "--option",
            "build-users-group",
            "",
        ])
        .args(["--no-out-link", FIXTURE])
        .args(["--arg", "gen", &gen.to_string()])
        .args(["--arg", "blobKiB", &blob_kib.to_string()])
        .args(["--argstr", "tag", tag])
        .output()
        .expect("nix-build");
    assert!(
        out.status.success(),
        "nix-build failed:\n{}",
        output_text(&out)
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(path.starts_with("/nix/store/"), "{path}");
    path
}

/// The closure of `path` in the machine's store.
pub fn closure(path: &str) -> Vec<String> {
    let out = Command::new("nix-store")
        .args(["--query", "--requisites", path])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// The store URI of a /nix-shaped directory (the disk's instance dir).
pub fn nix_dir_uri(dir: &str) -> String {
    format!("local?real={dir}/store&state={dir}/var/nix")
}

pub fn root_uri(root: &str) -> String {
    format!("local?root={root}")
}

/// Copy the closure of `system` from the machine's store into `uri`,
/// inside the sandbox (its mounts), with Nix's own tools.
pub fn import(sb: &Sandbox, uri: &str, system: &str) {
    sb.sh_ok(&format!(
        "nix-store --export $(nix-store -qR {system}) | nix-store --store '{uri}' --import >/dev/null 2>&1"
    ));
    let lacking = invalid_in(sb, uri, &closure(system));
    assert!(
        lacking.is_empty(),
        "import of {system} into {uri} left out {lacking:?}"
    );
}

/// Paths of `paths` NOT valid in `uri` (empty: all valid).
pub fn invalid_in(sb: &Sandbox, uri: &str, paths: &[String]) -> Vec<String> {
    let out = sb.sh(&format!(
        "nix-store --store '{uri}' --check-validity --print-invalid {} 2>/dev/null",
        paths.join(" ")
    ));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// A stand-in VHDX root at `root` that boots `system`: its own store with
/// the closure, profile `system` -> `system-1-link` -> system, /sbin/init
/// and /etc/static into it (what NixOS-WSL's activation writes).
pub fn vhdx_root(sb: &Sandbox, root: &str, system: &str) {
    import(sb, &root_uri(root), system);
    sb.sh_ok(&format!(
        "cd {root} && mkdir -p nix/var/nix/profiles sbin etc bin && ln -sfn {system} nix/var/nix/profiles/system-1-link \
         && ln -sfn system-1-link nix/var/nix/profiles/system && ln -sfn {system}/init sbin/init && ln -sfn {system}/etc etc/static"
    ));
}

/// What activation of `system` does to the root's links.
pub fn activate(sb: &Sandbox, root: &str, system: &str) {
    sb.sh_ok(&format!(
        "cd {root} && ln -sfn {system}/init sbin/init && ln -sfn {system}/etc etc/static"
    ));
}

/// A disk instance dir at `dir` holding `systems`, profile -> the last.
pub fn disk_store(sb: &Sandbox, dir: &str, systems: &[&str]) {
    for (i, s) in systems.iter().enumerate() {
        import(sb, &nix_dir_uri(dir), s);
        sb.sh_ok(&format!(
            "mkdir -p {dir}/var/nix/profiles && ln -sfn {s} {dir}/var/nix/profiles/system-{n}-link && ln -sfn system-{n}-link {dir}/var/nix/profiles/system",
            n = i + 1
        ));
    }
}

/// /run/booted-system -> `system` (the sandbox's private /run).
pub fn boot(sb: &Sandbox, system: &str) {
    sb.sh_ok(&format!("ln -sfn {system} /run/booted-system"));
}

pub fn store_name(path: &str) -> &str {
    Path::new(path).file_name().unwrap().to_str().unwrap()
}

/// The store lifecycle's two stores, as the tests use them.
pub struct Stores {
    pub uuid: String,
    /// The storage disk's mount point.
    pub mp: String,
    /// The disk's instance dir (`mp/nixos-wsl-main`), a /nix-shaped store.
    pub dir: String,
    /// The stand-in VHDX root (`--boot-root`).
    pub root: String,
}

/// An ext4 loop device mounted at `storage/` whose instance dir holds
/// `disk_systems` (its profile -> the last), and a stand-in VHDX root
/// (`root_fs_mb`: on a small loop filesystem of its own) booting
/// `vhdx_system`. Nothing is bound over /nix yet.
pub fn disk_and_vhdx(
    sb: &mut Sandbox,
    disk_systems: &[&str],
    vhdx_system: &str,
    root_fs_mb: Option<u64>,
) -> Stores {
    let uuid = super::new_uuid();
    let dev = sb.loop_device(128, &["mkfs.ext4", "-q", "-U", &uuid]);
    let mp = sb.path("storage").display().to_string();
    let dir = format!("{mp}/nixos-wsl-main");
    let root = sb.path("vhdx").display().to_string();
    sb.sh_ok(&format!("mkdir -p {mp} {root} && mount {} {mp}", dev.node));
    if let Some(mb) = root_fs_mb {
        let small = sb.loop_device(mb, &["mkfs.ext4", "-q", "-m", "0"]);
        sb.sh_ok(&format!("mount {} {root}", small.node));
    }
    disk_store(sb, &dir, disk_systems);
    vhdx_root(sb, &root, vhdx_system);
    Stores {
        uuid,
        mp,
        dir,
        root,
    }
}
