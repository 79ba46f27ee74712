//! The store's life after the first boot, on real Nix stores: `sync-boot`
//! (the VHDX's boot generation kept in step), the heal at boot, and the
//! database-backed guard. Toy systems are built by Debian's nix-bin; a
//! chroot store stands in for the VHDX root (`--boot-root`), a real ext4
//! loop device carries the disk store, bound over the sandbox's own /nix.

mod common;

use common::nixstore::{self, activate, boot, closure, invalid_in, root_uri, toy_system};
use common::{output_text, Sandbox};
use serde_json::json;

struct Setup {
    sb: Sandbox,
    cfg: std::path::PathBuf,
    /// The stand-in VHDX root.
    root: String,
    /// The disk's instance dir (bound over /nix).
    dir: String,
}

/// A disk store holding `disk_systems` (profile -> the last), bound over
/// the sandbox's /nix, and a stand-in VHDX root (`root_fs`: a directory, or
/// a small loop filesystem of that many MiB) booting `vhdx_system`.
fn setup(
    disk_systems: &[&str],
    vhdx_system: &str,
    root_fs_mb: Option<u64>,
    extra: serde_json::Value,
) -> Option<Setup> {
    let mut sb = Sandbox::new()?;
    if !nixstore::have_nix() {
        return None;
    }
    let nixstore::Stores {
        uuid,
        mp,
        dir,
        root,
    } = nixstore::disk_and_vhdx(&mut sb, disk_systems, vhdx_system, root_fs_mb);
    let mut cfg = json!({
        "fsUuid": uuid,
        "mountPoint": mp,
        "bindMountNixStore": true,
        "nixStoreSubdir": "nixos-wsl-main",
        "instanceDirs": {"nixos-wsl-main": {"owner": 0, "group": 0, "mode": "0755"}},
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let cfg = sb.config("config.json", cfg);
    // What nix.mount does at boot: the disk store over /nix.
    sb.sh_ok(&format!("mount --bind {dir} /nix"));
    Some(Setup { sb, cfg, root, dir })
}

impl Setup {
    fn sync(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--boot-root", self.root.as_str(), "sync-boot"];
        all.extend_from_slice(args);
        self.sb.helper(&self.cfg, &all)
    }

    fn vhdx_profile(&self) -> String {
        self.sb
            .sh_ok(&format!(
                "readlink -f {}/nix/var/nix/profiles/system",
                self.root
            ))
            .trim()
            .to_string()
    }

    fn vhdx_invalid(&self, paths: &[String]) -> Vec<String> {
        invalid_in(&self.sb, &root_uri(&self.root), paths)
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_new_generation_becomes_the_vhdx_boot_generation_and_a_second_run_copies_nothing() {
    let gen1 = toy_system(1, 4, "-sync");
    let gen2 = toy_system(2, 4, "-sync");
    let Some(s) = setup(&[&gen1, &gen2], &gen1, None, json!({})) else {
        return;
    };
    assert_eq!(s.vhdx_profile(), gen1);
    assert!(
        !s.vhdx_invalid(&closure(&gen2)).is_empty(),
        "gen2 is not on the VHDX yet"
    );

    // NixOS-WSL's activation wrote its entrypoint inside /nix: on the disk.
    s.sb.sh_ok(&format!(
        "mkdir -p /nix/nixos-wsl && ln -sfn {gen2}/init /nix/nixos-wsl/entrypoint"
    ));
    let out = s.sync(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(s.vhdx_profile(), gen2, "the VHDX boots the new generation");
    assert_eq!(
        s.sb.sh_ok(&format!("readlink {}/nix/nixos-wsl/entrypoint", s.root))
            .trim(),
        format!("{gen2}/init"),
        "the entrypoint WSL reads is in step"
    );
    assert_eq!(
        s.vhdx_invalid(&closure(&gen2)),
        Vec::<String>::new(),
        "every path registered in the VHDX db"
    );
    assert!(
        stderr(&out).contains("boot generation is now"),
        "{}",
        stderr(&out)
    );
    // gen1 (which /sbin/init still leads to) was there already: only gen2's own paths moved.
    assert!(
        stderr(&out).contains("copying 3 of 7 paths"),
        "{}",
        stderr(&out)
    );
    let links = s.sb.sh_ok(&format!("ls {}/nix/var/nix/profiles", s.root));
    assert!(links.contains("system-2-link"), "{links}");
    // The profile link is relative, as nix-env --set writes it.
    assert_eq!(
        s.sb.sh_ok(&format!("readlink {}/nix/var/nix/profiles/system", s.root))
            .trim(),
        "system-2-link"
    );
    // Nix itself agrees the VHDX copy is whole.
    s.sb.sh_ok(&format!(
        "nix-store --store '{}' --verify --check-contents 2>&1",
        root_uri(&s.root)
    ));

    let again = s.sync(&[]);
    assert_eq!(again.status.code(), Some(0), "{}", output_text(&again));
    assert!(
        stderr(&again).contains("copied 0 paths"),
        "{}",
        stderr(&again)
    );
    assert!(
        stderr(&again).contains("already boots"),
        "{}",
        stderr(&again)
    );
    let links2 = s.sb.sh_ok(&format!("ls {}/nix/var/nix/profiles", s.root));
    assert_eq!(links, links2, "no new generation link");
}

#[test]
fn with_two_boot_generations_the_oldest_generations_own_paths_are_collected() {
    let gens: Vec<String> = (1..=3).map(|g| toy_system(g, 4, "-gc")).collect();
    let Some(s) = setup(
        &[&gens[0], &gens[1], &gens[2]],
        &gens[0],
        None,
        json!({"bootGenerations": 2}),
    ) else {
        return;
    };
    let disk_uri = nixstore::nix_dir_uri(&s.dir);
    // Deploy gen2, activate it (the next start rewrites /sbin/init), then gen3.
    for g in [&gens[1], &gens[2]] {
        let out = s.sync(&[g]);
        assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
        activate(&s.sb, &s.root, g);
    }
    assert_eq!(s.vhdx_profile(), gens[2]);
    let own1: Vec<String> = closure(&gens[0])
        .into_iter()
        .filter(|p| !p.contains("toy-shared"))
        .collect();
    let shared: Vec<String> = closure(&gens[0])
        .into_iter()
        .filter(|p| p.contains("toy-shared"))
        .collect();
    assert_eq!(own1.len(), 3);
    assert_eq!(
        s.vhdx_invalid(&own1),
        own1,
        "gen1's own paths are gone from the VHDX"
    );
    for p in &own1 {
        let name = nixstore::store_name(p);
        assert!(
            s.sb.sh(&format!("test -e {}/nix/store/{name}", s.root))
                .status
                .code()
                == Some(1),
            "{p} still on the VHDX's disk"
        );
    }
    assert!(s.vhdx_invalid(&shared).is_empty(), "the shared path stays");
    assert!(
        s.vhdx_invalid(&closure(&gens[1])).is_empty(),
        "gen2 (kept) stays"
    );
    let links = s.sb.sh_ok(&format!("ls {}/nix/var/nix/profiles", s.root));
    assert!(
        !links.contains("system-1-link")
            && links.contains("system-2-link")
            && links.contains("system-3-link"),
        "{links}"
    );
    // The disk store is untouched: all three generations are valid there.
    for g in &gens {
        assert!(invalid_in(&s.sb, &disk_uri, &closure(g)).is_empty(), "{g}");
    }
}

#[test]
fn a_vhdx_too_small_fails_with_exit_7_and_keeps_the_previous_generation() {
    let gen1 = toy_system(1, 4, "-small");
    // 40 MiB in gen2's own path; the stand-in VHDX is a 24 MiB filesystem.
    let gen2 = toy_system(2, 40 * 1024, "-small");
    let Some(s) = setup(&[&gen1, &gen2], &gen1, Some(24), json!({})) else {
        return;
    };
    let out = s.sync(&[]);
    assert_eq!(out.status.code(), Some(7), "{}", output_text(&out));
    let err = stderr(&out);
    assert!(err.contains("previous boot generation is kept"), "{err}");
    assert!(err.contains("free"), "says what to free: {err}");
    assert_eq!(s.vhdx_profile(), gen1, "the VHDX still boots gen1");
    assert!(
        s.vhdx_invalid(&closure(&gen1)).is_empty(),
        "gen1's closure is still valid"
    );
}

#[test]
fn a_root_link_into_a_path_the_vhdx_lacks_fails_naming_it() {
    let gen1 = toy_system(1, 4, "-links");
    let stray = toy_system(9, 4, "-stray");
    let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
        return;
    };
    // /etc/static points into a path that neither store has (a switch from
    // before this module, whose generation was collected since).
    s.sb.sh_ok(&format!("ln -sfn {stray}/etc {}/etc/static", s.root));
    let out = s.sync(&[]);
    assert_eq!(out.status.code(), Some(7), "{}", output_text(&out));
    assert!(
        stderr(&out).contains(&format!("/etc/static -> {stray}")),
        "{}",
        stderr(&out)
    );

    // When the disk has it, sync-boot copies it and the link resolves.
    // (Imported from the machine's store, so with the machine's /nix back.)
    s.sb.sh_ok("umount /nix");
    nixstore::import(&s.sb, &nixstore::nix_dir_uri(&s.dir), &stray);
    s.sb.sh_ok(&format!("mount --bind {} /nix", s.dir));
    let out = s.sync(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(s.vhdx_invalid(&closure(&stray)).is_empty());
}

#[test]
fn closure_only_copies_without_changing_the_boot_generation() {
    let gen1 = toy_system(1, 4, "-test");
    let gen2 = toy_system(2, 4, "-test");
    let Some(s) = setup(&[&gen1, &gen2], &gen1, None, json!({})) else {
        return;
    };
    let out = s.sync(&["--closure-only", &gen2]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(
        s.vhdx_profile(),
        gen1,
        "nixos-rebuild test leaves the boot generation"
    );
    assert!(s.vhdx_invalid(&closure(&gen2)).is_empty());
}

#[test]
fn without_the_bind_sync_boot_says_so_and_changes_nothing() {
    let gen1 = toy_system(1, 4, "-nobind");
    let gen2 = toy_system(2, 4, "-nobind");
    let Some(s) = setup(&[&gen1, &gen2], &gen1, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    let out = s.sync(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("is not the bind of"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.vhdx_profile(), gen1);
}

#[test]
fn mount_heals_a_disk_store_that_lacks_the_booted_system_and_binds() {
    let gen1 = toy_system(1, 4, "-heal");
    let gen2 = toy_system(2, 4, "-heal");
    // gen2 was deployed while the disk was missing: only the VHDX has it,
    // and it is what booted.
    let Some(s) = setup(&[&gen1], &gen2, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    boot(&s.sb, &gen2);
    let disk_uri = nixstore::nix_dir_uri(&s.dir);
    assert!(!invalid_in(&s.sb, &disk_uri, &closure(&gen2)).is_empty());
    let out = s.sb.helper(&s.cfg, &["--boot-root", &s.root, "mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("healed: copied 3 paths"),
        "{}",
        stderr(&out)
    );
    assert!(
        invalid_in(&s.sb, &disk_uri, &closure(&gen2)).is_empty(),
        "gen2 is valid on the disk now"
    );
    assert!(s.sb.stamp_exists(), "and the bind may proceed");
    assert_eq!(s.sb.state()["healedPaths"], 3);
}

#[test]
fn a_booted_system_present_by_name_but_unknown_to_the_database_is_refused() {
    let gen1 = toy_system(1, 4, "-unknown");
    let gen2 = toy_system(2, 4, "-unknown");
    let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    // gen2's paths copied in by name (cp, not Nix): present, not registered.
    for p in closure(&gen2) {
        s.sb.sh_ok(&format!("cp -a {p} {}/store/ 2>/dev/null || true", s.dir));
    }
    boot(&s.sb, &gen2);
    let out = s.sb.helper(&s.cfg, &["--boot-root", &s.root, "mount"]);
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("is valid neither in the disk store"),
        "{}",
        stderr(&out)
    );
    assert!(!s.sb.stamp_exists());
}

#[test]
fn a_symlinked_var_is_refused() {
    let gen1 = toy_system(1, 4, "-symvar");
    let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    boot(&s.sb, &gen1);
    // var/ of this instance is a link to another instance's dir.
    let other = s.dir.replace("nixos-wsl-main", "nixos-wsl-other");
    s.sb.sh_ok(&format!(
        "mkdir -p {other} && mv {d}/var {other}/var && ln -s {other}/var {d}/var",
        d = s.dir
    ));
    let out = s.sb.helper(&s.cfg, &["--boot-root", &s.root, "mount"]);
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("/var is a symlink"),
        "{}",
        stderr(&out)
    );
    assert!(!s.sb.stamp_exists());
}

#[test]
fn mark_makes_the_store_read_only_and_status_shows_the_boot_generation() {
    let gen1 = toy_system(1, 4, "-ro");
    let gen2 = toy_system(2, 4, "-ro");
    let Some(s) = setup(&[&gen1, &gen2], &gen1, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    boot(&s.sb, &gen1);
    let out = s.sb.helper(&s.cfg, &["--boot-root", &s.root, "mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    s.sb.sh_ok(&format!("mount --bind {} /nix", s.dir));
    let out = s.sb.helper(&s.cfg, &["mark"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let w = s.sb.sh("touch /nix/store/x 2>&1");
    assert_ne!(
        w.status.code(),
        Some(0),
        "the store is read-only under the bind"
    );
    assert!(String::from_utf8_lossy(&w.stdout).contains("Read-only"));
    // Twice: no second read-only mount stacked.
    let out = s.sb.helper(&s.cfg, &["mark"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(s.sb.mounts_at("/nix/store"), 1);

    // The disk's profile is gen2, the VHDX boots gen1: not in step.
    let st =
        s.sb.helper(&s.cfg, &["--boot-root", &s.root, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st.status.code(), Some(1), "{}", output_text(&st));
    assert_eq!(v["storeReadOnly"], true);
    assert_eq!(v["boot"]["vhdxSystem"], gen1.as_str());
    assert_eq!(v["boot"]["diskSystem"], gen2.as_str());
    assert_eq!(v["boot"]["inStep"], false);
    let doc =
        s.sb.helper(&s.cfg, &["--boot-root", &s.root, "doctor", "--json"]);
    let d: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
    let check = d["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "boot-generation")
        .unwrap()
        .clone();
    assert_eq!(check["level"], "fail", "{check}");
    assert_eq!(check["fix"], "sudo wsl-storage-mount sync-boot");

    // The fix works.
    let out = s.sync(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let st =
        s.sb.helper(&s.cfg, &["--boot-root", &s.root, "status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["boot"]["inStep"], true, "{v}");
    assert!(v["boot"]["vhdxStoreBytes"].as_u64().unwrap() > 0);
}

#[test]
fn a_database_that_lists_dot_dot_in_the_closure_is_refused() {
    let gen1 = toy_system(1, 4, "-dotdot");
    let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    boot(&s.sb, &gen1);
    // A hand-edited database: the system refers to "/nix/store/..", which
    // would make the closure check look at the disk's instance dir itself.
    s.sb.sh_ok(&format!(
        "sqlite3 {d}/var/nix/db/db.sqlite \"INSERT INTO ValidPaths (path, hash, registrationTime, narSize) VALUES ('/nix/store/..', 'sha256:0', 0, 0); \
         INSERT INTO Refs (referrer, reference) SELECT s.id, d.id FROM ValidPaths s, ValidPaths d WHERE s.path = '{gen1}' AND d.path = '/nix/store/..';\"",
        d = s.dir
    ));
    let out = s.sb.helper(&s.cfg, &["--boot-root", &s.root, "mount"]);
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("\"/nix/store/..\"")
            && stderr(&out).contains("not a plain /nix/store path"),
        "{}",
        stderr(&out)
    );
    assert!(!s.sb.stamp_exists());
}
