//! Several NixOS-WSL instances on one disk: the real binary in two mount
//! namespaces ("distros") whose /mnt/wsl are peers of one shared tmpfs, as
//! WSL's init makes it, over a real ext4 loop device holding real Nix
//! stores (see tests/common/peers.rs and tests/common/nixstore.rs).

mod common;

use std::path::PathBuf;

use common::nixstore::{self, toy_system};
use common::peers::{self, Distro};
use common::{output_text, Sandbox};
use serde_json::json;

/// The VM: a disk with one store per instance, a stand-in VHDX root per
/// instance, the shared /mnt/wsl, and nothing mounted on it yet.
struct Vm {
    sb: Sandbox,
    uuid: String,
    /// mountPoint, under the shared tmpfs.
    mp: String,
}

/// One instance: its distro, config, VHDX root and bindTarget.
struct Instance {
    distro: Distro,
    cfg: PathBuf,
    root: String,
    nix: String,
    subdir: String,
}

fn vm(stores: &[(&str, &str)]) -> Option<Vm> {
    let mut sb = Sandbox::new()?;
    if !nixstore::have_nix() {
        return None;
    }
    let uuid = common::new_uuid();
    let dev = sb.loop_device(256, &["mkfs.ext4", "-q", "-U", &uuid]);
    // The stores are put on the disk before any distro runs.
    let setup = sb.path("setup").display().to_string();
    sb.sh_ok(&format!("mkdir -p {setup} && mount {} {setup}", dev.node));
    for (subdir, system) in stores {
        nixstore::disk_store(&sb, &format!("{setup}/{subdir}"), &[system]);
    }
    sb.sh_ok(&format!("umount {setup}"));
    let wsl = sb.path("wsl").display().to_string();
    peers::shared_wsl_tmpfs(&sb, &wsl);
    Some(Vm {
        sb,
        uuid,
        mp: format!("{wsl}/storage"),
    })
}

impl Vm {
    /// Start distro `name` booting `system` from a VHDX root of its own,
    /// with a config for `subdir`. `twin`: like the boot twin's shim,
    /// `mount --make-rshared /` first (systemd does the same at boot).
    fn instance(&self, name: &str, subdir: &str, system: &str) -> Instance {
        let root = self.sb.path(&format!("vhdx-{name}")).display().to_string();
        self.sb.sh_ok(&format!("mkdir -p {root}"));
        nixstore::vhdx_root(&self.sb, &root, system);
        let nix = self.sb.path(&format!("nix-{name}")).display().to_string();
        self.sb.sh_ok(&format!("mkdir -p {nix}"));
        let cfg = self.sb.config(
            &format!("{name}.json"),
            json!({
                "fsUuid": self.uuid,
                "mountPoint": self.mp,
                "waitTimeout": 5,
                "bindMountNixStore": true,
                "nixStoreSubdir": subdir,
                "bindTarget": nix,
                "logFile": self.sb.path(&format!("{name}.log")).display().to_string(),
                "instanceDirs": {subdir: {"owner": 0, "group": 0, "mode": "0755"}},
            }),
        );
        let distro = Distro::start(&self.sb, name);
        distro.sh_ok(&format!(
            "mount --make-rshared / && ln -sfn {system} /run/booted-system"
        ));
        Instance {
            distro,
            cfg,
            root,
            nix,
            subdir: subdir.to_string(),
        }
    }
}

impl Instance {
    fn helper(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--boot-root", self.root.as_str()];
        all.extend_from_slice(args);
        self.distro.helper(&self.cfg, &all)
    }

    fn helper_ok(&self, args: &[&str]) -> String {
        let out = self.helper(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{} {args:?}: {}",
            self.distro.name,
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The boot chain: the helper's `mount`, nix.mount (mount(8) binding
    /// mountPoint/subdir over bindTarget, as systemd does), then `mark`.
    fn boot(&self, mp: &str) {
        self.helper_ok(&["mount"]);
        self.distro
            .sh_ok(&format!("mount --bind {mp}/{} {}", self.subdir, self.nix));
        self.helper_ok(&["mark"]);
    }

    fn status(&self) -> (Option<i32>, serde_json::Value) {
        self.distro.status(&self.cfg, &self.root)
    }

    /// The store under bindTarget is a read-only mount and refuses a write.
    fn assert_store_read_only(&self, when: &str) {
        let store = format!("{}/store", self.nix);
        let tops = self.distro.mounts_at(&store);
        let top = tops
            .last()
            .unwrap_or_else(|| panic!("{when}: nothing is mounted at {store}"));
        let opts = top.split(' ').nth(5).unwrap();
        assert!(
            opts.split(',').any(|o| o == "ro"),
            "{when}: {store} is mounted {opts}: {top}"
        );
        let w = self.distro.sh(&format!("touch {store}/written 2>&1"));
        assert_ne!(w.status.code(), Some(0), "{when}: {store} took a write");
        assert!(
            String::from_utf8_lossy(&w.stdout).contains("Read-only"),
            "{when}: {}",
            output_text(&w)
        );
    }

    /// bindTarget is still the bind of the subdir on the disk.
    fn assert_bind(&self, when: &str) {
        let at = self.distro.mounts_at(&self.nix);
        let top = at
            .last()
            .unwrap_or_else(|| panic!("{when}: nothing is mounted at {}", self.nix));
        assert_eq!(
            top.split(' ').nth(3),
            Some(format!("/{}", self.subdir).as_str()),
            "{when}: {top}"
        );
    }
}

/// Item 1 of issue 19: another distro's shutdown unmounts the shared
/// storage mount (systemd's `umount -R`, and a lazy `umount -l`); this
/// instance keeps its bind and its read-only store, `status` says that
/// mountPoint was taken away, and `mount` puts it back.
#[test]
fn a_peer_distros_unmount_of_the_storage_leaves_the_bind_and_its_read_only_store() {
    let system = toy_system(1, 4, "-peer");
    let Some(vm) = vm(&[("main", &system)]) else {
        return;
    };
    let a = vm.instance("a", "main", &system);
    // The peer distro: no helper of its own, its /mnt/wsl shares A's.
    let peer = Distro::start(&vm.sb, "peer");
    a.boot(&vm.mp);
    a.assert_store_read_only("after mark");
    let (code, st) = a.status();
    assert_eq!(code, Some(0), "{st:#}");
    //OLD assert_eq!(st["propagation"][&a.nix], "private", "{st:#}");
    assert_eq!(
        st["propagation"][format!("{}/store", a.nix)],
        "private",
        "{st:#}"
    );
    assert_eq!(peer.mounts_at(&vm.mp).len(), 1, "the peer sees the disk");

    for umount in ["umount -R", "umount -l"] {
        let when = format!("after the peer's `{umount}`");
        peer.sh_ok(&format!("{umount} {}", vm.mp));
        a.assert_bind(&when);
        a.assert_store_read_only(&when);
        assert!(
            a.distro.mounts_at(&vm.mp).is_empty(),
            "{when}: the storage mount went in every distro (its parent is shared)"
        );
        let (code, st) = a.status();
        assert_eq!(code, Some(1), "{when}: {st:#}");
        assert_eq!(st["mountPointTaken"], true, "{when}: {st:#}");
        assert_eq!(st["bind"]["isBind"], true, "{when}: {st:#}");
        assert_eq!(st["storeReadOnly"], true, "{when}: {st:#}");
        let problems = st["problems"].to_string();
        assert!(problems.contains("taken away"), "{when}: {problems}");

        // The re-mount: the same device, for every distro again.
        a.helper_ok(&["mount"]);
        let (code, st) = a.status();
        assert_eq!(code, Some(0), "{when}, after `mount`: {st:#}");
        assert_eq!(st["mountPointTaken"], false);
        assert_eq!(peer.mounts_at(&vm.mp).len(), 1, "the peer sees it again");
        a.assert_bind(&when);
        a.assert_store_read_only(&when);
    }
}
