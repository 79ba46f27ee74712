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
    // The deployment made while the disk was missing is the disk store's
    // current system now (status: in step; sync-boot would undo nothing).
    let current =
        s.sb.sh_ok(&format!("readlink -f {}/var/nix/profiles/system", s.dir));
    assert_eq!(current.trim(), gen2, "the disk's profile follows the heal");
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

// ---------------------------------------------------------------------
// Hostile and unlucky stores (issue 21). Every run of the helper below is
// bounded (`timed`): a hang is a failure with exit 137, not a stuck test.

impl Setup {
    /// The helper with `args`, killed after `secs` (exit 137 then).
    fn timed(&self, secs: u32, args: &[&str]) -> std::process::Output {
        let mut line = format!(
            "timeout -s KILL {secs} {} --config {}",
            common::BIN,
            self.cfg.display()
        );
        for a in args {
            line.push_str(&format!(" '{a}'"));
        }
        self.sb.sh(&line)
    }

    fn sync_timed(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--boot-root", self.root.as_str(), "sync-boot"];
        all.extend_from_slice(args);
        self.timed(60, &all)
    }

    fn mount_timed(&self) -> std::process::Output {
        self.timed(60, &["--boot-root", self.root.as_str(), "mount"])
    }

    fn vhdx_links(&self) -> String {
        self.sb
            .sh_ok(&format!("ls -l {}/nix/var/nix/profiles", self.root))
    }
}

/// `status` and `doctor` end on their own (bounded) and each say `needle`:
/// status in its problems, doctor as a failed check.
fn status_and_doctor_say(s: &Setup, needle: &str) {
    let st = s.timed(60, &["--boot-root", &s.root, "status"]);
    assert_eq!(st.status.code(), Some(1), "{}", output_text(&st));
    assert!(err_of(&st).contains(needle), "status: {}", output_text(&st));
    let doc = s.timed(120, &["--boot-root", &s.root, "doctor", "--json"]);
    assert_ne!(doc.status.code(), Some(137), "doctor hung");
    let d: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
    assert!(
        d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["level"] == "fail" && c.to_string().contains(needle)),
        "doctor: {d}"
    );
}

fn err_of(out: &std::process::Output) -> String {
    format!("{}{}", stderr(out), String::from_utf8_lossy(&out.stdout))
}

#[test]
fn sync_boot_keeps_the_vhdx_copy_of_a_path_the_disk_registers_but_lost() {
    let gen1 = toy_system(1, 4, "-lost");
    let gen2 = toy_system(2, 4, "-lost");
    let Some(s) = setup(&[&gen1, &gen2], &gen1, None, json!({"bootGenerations": 1})) else {
        return;
    };
    let out = s.sync(&[&gen2]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    activate(&s.sb, &s.root, &gen2);
    // gen1's own path: still registered in the disk's database, but gone
    // from the disk (deleted by hand, a bad sector): the VHDX's copy is
    // the only real one.
    let own1: Vec<String> = closure(&gen1)
        .into_iter()
        .filter(|p| p.contains("toy-own-1"))
        .collect();
    assert_eq!(own1.len(), 1);
    let name = nixstore::store_name(&own1[0]);
    s.sb.sh_ok(&format!("rm -rf {}/store/{name}", s.dir));
    // Now gen1 is no longer a root of the VHDX (bootGenerations = 1).
    let out = s.sync(&[&gen2]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        s.vhdx_invalid(&own1).is_empty(),
        "the only present copy was deleted from the VHDX: {}",
        stderr(&out)
    );
    s.sb.sh_ok(&format!("test -d {}/nix/store/{name}", s.root));
    assert!(stderr(&out).contains("their only copy"), "{}", stderr(&out));
}

#[test]
fn sync_boot_checks_the_root_links_before_switching_the_boot_generation() {
    let gen1 = toy_system(1, 4, "-loop");
    let gen2 = toy_system(2, 4, "-loop");
    for (case, make) in [
        (
            "a link loop",
            "ln -sfn init2 sbin/init && ln -sfn init sbin/init2",
        ),
        (
            "a relative link out of the root",
            "ln -sfn ../../../../../../no/such/init sbin/init",
        ),
    ] {
        let Some(s) = setup(&[&gen1, &gen2], &gen1, None, json!({})) else {
            return;
        };
        // Sibling: the entrypoint WSL execs must not change either.
        s.sb.sh_ok(&format!(
            "mkdir -p /nix/nixos-wsl && ln -sfn {gen2}/init /nix/nixos-wsl/entrypoint"
        ));
        s.sb.sh_ok(&format!("cd {} && {make}", s.root));
        let out = s.sync_timed(&[]);
        assert_eq!(out.status.code(), Some(7), "{case}: {}", output_text(&out));
        assert!(
            stderr(&out).contains("previous boot generation is kept"),
            "{case}: {}",
            stderr(&out)
        );
        assert_eq!(s.vhdx_profile(), gen1, "{case}: the VHDX still boots gen1");
        assert!(!s.vhdx_links().contains("system-2-link"), "{case}");
        assert!(
            s.sb.sh(&format!("test -e {}/nix/nixos-wsl/entrypoint", s.root))
                .status
                .code()
                == Some(1),
            "{case}: the entrypoint was switched"
        );
        status_and_doctor_say(&s, "does not resolve in the VHDX store");
    }
}

#[test]
fn sync_boot_refuses_a_system_that_is_not_a_nixos_system() {
    let gen1 = toy_system(1, 4, "-notsys");
    let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
        return;
    };
    // A plain file, and (sibling) a directory with `init` but no `activate`:
    // both valid store paths on the disk.
    let plain = s.sb.sh_ok(&format!(
        "umount /nix && echo hi > {t}/plain && nix-store --add {t}/plain",
        t = s.sb.path("").display()
    ));
    let plain = plain.trim().to_string();
    let half = s.sb.sh_ok(&format!(
        "mkdir -p {t}/half && printf '#!/bin/sh\\n' > {t}/half/init && nix-store --add {t}/half",
        t = s.sb.path("").display()
    ));
    let half = half.trim().to_string();
    for p in [&plain, &half] {
        nixstore::import(&s.sb, &nixstore::nix_dir_uri(&s.dir), p);
    }
    s.sb.sh_ok(&format!("mount --bind {} /nix", s.dir));
    for (case, p) in [("a plain file", &plain), ("no activate", &half)] {
        let before = s.vhdx_links();
        let out = s.sync_timed(&[p]);
        assert_eq!(out.status.code(), Some(7), "{case}: {}", output_text(&out));
        assert!(
            stderr(&out).contains("is not a NixOS system"),
            "{case}: {}",
            stderr(&out)
        );
        assert_eq!(s.vhdx_profile(), gen1, "{case}");
        assert_eq!(s.vhdx_links(), before, "{case}: nothing changed");
        assert_eq!(
            s.vhdx_invalid(&[p.to_string()]),
            vec![p.to_string()],
            "{case}: nothing copied"
        );
    }
}

#[test]
fn sync_boot_refuses_a_generation_number_that_would_wrap() {
    let gen1 = toy_system(1, 4, "-wrap");
    let gen2 = toy_system(2, 4, "-wrap");
    let Some(s) = setup(&[&gen1, &gen2], &gen1, None, json!({})) else {
        return;
    };
    s.sb.sh_ok(&format!(
        "ln -s {gen1} {}/nix/var/nix/profiles/system-{}-link",
        s.root,
        u64::MAX
    ));
    let before = s.vhdx_links();
    let out = s.sync_timed(&[]);
    assert_eq!(out.status.code(), Some(7), "{}", output_text(&out));
    assert!(
        stderr(&out).contains(&format!("system-{}-link", u64::MAX)),
        "{}",
        stderr(&out)
    );
    assert_eq!(s.vhdx_profile(), gen1);
    assert_eq!(s.vhdx_links(), before, "no generation overwritten");
    assert!(
        !s.vhdx_invalid(&closure(&gen2)).is_empty(),
        "refused before copying"
    );
    status_and_doctor_say(&s, "highest generation number");
}

#[test]
fn a_fifo_at_the_vhdx_database_is_refused_by_every_command_that_reads_it() {
    let gen1 = toy_system(1, 4, "-fifo");
    let gen2 = toy_system(2, 4, "-fifo");
    // db.sqlite-wal: SQLite opens it; big-lock: nix-store does (sync-boot's
    // import and the heal run it on this store).
    for sibling in ["db.sqlite", "db.sqlite-wal", "big-lock"] {
        // The disk lacks gen2, which booted: mount heals from the VHDX.
        let Some(s) = setup(&[&gen1, &gen2], &gen1, None, json!({})) else {
            return;
        };
        let shown = format!("{}/nix/var/nix/db/{sibling}", s.root);
        s.sb.sh_ok(&format!("rm -f {shown} && mkfifo {shown}"));
        let out = s.sync_timed(&[]);
        assert_eq!(
            out.status.code(),
            Some(7),
            "{sibling}: {}",
            output_text(&out)
        );
        assert!(
            stderr(&out).contains(&format!("{shown} is a FIFO")),
            "names the file as the user sees it: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("boot-view."), "{}", stderr(&out));
        assert_eq!(s.vhdx_profile(), gen1);

        let st = s.timed(60, &["--boot-root", &s.root, "status"]);
        assert_eq!(st.status.code(), Some(1), "{}", output_text(&st));
        assert!(
            err_of(&st).contains(&format!("{shown} is a FIFO")),
            "{}",
            output_text(&st)
        );
        let doc = s.timed(120, &["--boot-root", &s.root, "doctor", "--json"]);
        assert_ne!(doc.status.code(), Some(137), "doctor hung");
        let d: serde_json::Value = serde_json::from_slice(&doc.stdout).unwrap();
        let check = d["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "boot-generation")
            .unwrap()
            .clone();
        assert_eq!(check["level"], "fail", "{check}");
        assert!(check.to_string().contains("is a FIFO"), "{check}");

        // The heal reads the VHDX database too.
        s.sb.sh_ok("umount /nix");
        s.sb.sh_ok(&format!("rm -rf {}/store/*toy-system-2-fifo*", s.dir));
        s.sb.sh_ok(&format!(
            "sqlite3 {}/var/nix/db/db.sqlite \"DELETE FROM ValidPaths WHERE path = '{gen2}'\"",
            s.dir
        ));
        boot(&s.sb, &gen2);
        let out = s.mount_timed();
        assert_eq!(
            out.status.code(),
            Some(6),
            "{sibling}: {}",
            output_text(&out)
        );
        assert!(
            stderr(&out).contains(&format!("{shown} is a FIFO")),
            "{}",
            stderr(&out)
        );
        assert!(!s.sb.stamp_exists());
    }
}

#[test]
fn a_fifo_or_a_symlink_at_the_sync_boot_lock_is_refused() {
    let gen1 = toy_system(1, 4, "-lock");
    let gen2 = toy_system(2, 4, "-lock");
    let Some(s) = setup(&[&gen1, &gen2], &gen1, None, json!({})) else {
        return;
    };
    let lock = "/run/wsl-storage-mount/sync-boot.lock";
    let victim = s.sb.path("victim").display().to_string();
    for (case, make) in [
        ("FIFO", format!("mkfifo {lock}")),
        ("symlink", format!("ln -s {victim} {lock}")),
    ] {
        s.sb.sh_ok(&format!("rm -f {lock} && {make}"));
        let out = s.sync_timed(&[]);
        assert_eq!(out.status.code(), Some(7), "{case}: {}", output_text(&out));
        assert!(stderr(&out).contains(lock), "{case}: {}", stderr(&out));
        assert_eq!(s.vhdx_profile(), gen1, "{case}");
        status_and_doctor_say(&s, "sync-boot.lock is not a regular file");
    }
    assert!(
        !std::path::Path::new(&victim).exists(),
        "the link was followed"
    );
}

#[test]
fn a_vhdx_nix_var_or_nixos_wsl_linked_out_of_the_root_is_refused() {
    let gen1 = toy_system(1, 4, "-varlink");
    let gen2 = toy_system(2, 4, "-varlink");
    for what in ["nix/var", "nix/nixos-wsl", "nix/var/nix/db"] {
        let Some(s) = setup(&[&gen1, &gen2], &gen1, None, json!({})) else {
            return;
        };
        s.sb.sh_ok(&format!(
            "mkdir -p /nix/nixos-wsl && ln -sfn {gen2}/init /nix/nixos-wsl/entrypoint"
        ));
        let outside = s.sb.path("outside").display().to_string();
        s.sb.sh_ok(&format!(
            "mkdir -p {outside} {root}/{what} && cp -a {root}/{what} {outside}/copy && rm -rf {root}/{what} && ln -s {outside}/copy {root}/{what}",
            root = s.root
        ));
        let before = s.sb.sh_ok(&format!("find {outside} | sort"));
        let out = s.sync_timed(&[]);
        assert_eq!(out.status.code(), Some(7), "{what}: {}", output_text(&out));
        assert!(
            stderr(&out).contains(&format!("{}/{what} is a symlink", s.root)),
            "{what}: {}",
            stderr(&out)
        );
        assert_eq!(
            s.sb.sh_ok(&format!("find {outside} | sort")),
            before,
            "{what}: written through the link"
        );
        status_and_doctor_say(&s, &format!("{}/{what} is a symlink", s.root));
    }
}

#[test]
fn a_percent_in_the_mount_point_reaches_nix_encoded() {
    let gen1 = toy_system(1, 4, "-pct");
    let gen2 = toy_system(2, 4, "-pct");
    let Some(s) = setup(&[&gen1], &gen2, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    boot(&s.sb, &gen2);
    // The same disk also mounted at a path with a `%41`, which Nix would
    // decode to `A`.
    let pct = s.sb.path("st%41ore").display().to_string();
    let decoded = s.sb.path("stAore").display().to_string();
    s.sb.sh_ok(&format!(
        "mkdir -p {pct} && mount --bind {} {pct}",
        s.dir.trim_end_matches("/nixos-wsl-main")
    ));
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.cfg).unwrap()).unwrap();
    cfg["mountPoint"] = json!(pct);
    let pcfg = s.sb.config("pct.json", cfg);
    let out = s.sb.helper(&pcfg, &["--boot-root", &s.root, "mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        !std::path::Path::new(&decoded).exists(),
        "Nix created a store at the decoded path {decoded}"
    );
    assert!(
        invalid_in(&s.sb, &nixstore::nix_dir_uri(&s.dir), &closure(&gen2)).is_empty(),
        "healed into the disk"
    );
}

#[test]
fn the_nix_store_children_die_with_a_killed_sync_boot() {
    let gen1 = toy_system(1, 4, "-orphan");
    let gen2 = toy_system(2, 4, "-orphan");
    let Some(mut s) = setup(&[&gen1, &gen2], &gen1, None, json!({})) else {
        return;
    };
    let pidfile = s.sb.path("import.pid").display().to_string();
    let wrapper = s.sb.path("nix-store-wrapper");
    common::write_exe(
        &wrapper,
        &format!(
            "#!/bin/sh\ncase \" $* \" in *' --import '*) echo $$ > {pidfile}; exec sleep 600;; esac\nexec nix-store \"$@\"\n"
        ),
    );
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.cfg).unwrap()).unwrap();
    cfg["nixStoreCommand"] = json!(wrapper.display().to_string());
    let wcfg = s.sb.config("wrapped.json", cfg);
    let root = s.root.clone();
    let idx =
        s.sb.spawn_helper(&wcfg, &["--boot-root", &root, "sync-boot"]);
    let start = std::time::Instant::now();
    let pid = loop {
        if let Ok(p) = std::fs::read_to_string(&pidfile) {
            if let Ok(p) = p.trim().parse::<i32>() {
                break p;
            }
        }
        assert!(start.elapsed().as_secs() < 60, "the import never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // The helper is the import's parent: SIGKILL it (no handler runs).
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ppid: i32 = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap();
    assert_eq!(comm.trim(), "wsl-storage-mou", "the import's parent");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ppid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = s.sb.wait_helper(idx);
    let start = std::time::Instant::now();
    let mut alive = true;
    while start.elapsed().as_secs() < 5 {
        // A zombie reaped by init: gone from /proc, or state Z.
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => {
                alive = false;
                break;
            }
            Ok(st) if st.contains(") Z ") => {
                alive = false;
                break;
            }
            Ok(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    if alive {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(!alive, "the import (pid {pid}) outlived the killed helper");
    assert_eq!(s.vhdx_profile(), gen1);
}

#[test]
fn a_booted_system_that_is_not_a_directory_or_an_entry_of_the_wrong_type_is_refused() {
    let gen1 = toy_system(1, 4, "-type");
    for case in ["toplevel -> /", "toplevel FIFO", "own path FIFO"] {
        let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
            return;
        };
        s.sb.sh_ok("umount /nix");
        boot(&s.sb, &gen1);
        let top = format!("{}/store/{}", s.dir, nixstore::store_name(&gen1));
        let own = closure(&gen1)
            .into_iter()
            .find(|p| p.contains("toy-own-1"))
            .unwrap();
        let own = format!("{}/store/{}", s.dir, nixstore::store_name(&own));
        let make = match case {
            "toplevel -> /" => format!("rm -rf {top} && ln -s / {top}"),
            "toplevel FIFO" => format!("rm -rf {top} && mkfifo {top}"),
            _ => format!("rm -rf {own} && mkfifo {own}"),
        };
        s.sb.sh_ok(&make);
        let out = s.mount_timed();
        assert_eq!(out.status.code(), Some(6), "{case}: {}", output_text(&out));
        assert!(!s.sb.stamp_exists(), "{case}");
        let said = if case == "own path FIFO" {
            "not what a store path can be"
        } else {
            "not a directory"
        };
        assert!(stderr(&out).contains(said), "{case}: {}", stderr(&out));
        status_and_doctor_say(&s, said);
    }
}

#[test]
fn a_refs_row_to_no_registered_path_is_refused() {
    let gen1 = toy_system(1, 4, "-dangle");
    let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    boot(&s.sb, &gen1);
    s.sb.sh_ok(&format!(
        "sqlite3 {d}/var/nix/db/db.sqlite \"PRAGMA foreign_keys=OFF; INSERT INTO Refs (referrer, reference) SELECT id, 987654 FROM ValidPaths WHERE path = '{gen1}';\"",
        d = s.dir
    ));
    let out = s.mount_timed();
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("closure invariant"),
        "{}",
        stderr(&out)
    );
    assert!(!s.sb.stamp_exists());
    status_and_doctor_say(&s, "closure invariant");
}

#[test]
fn a_mount_below_the_store_dir_is_refused() {
    let gen1 = toy_system(1, 4, "-submount");
    for sub in ["store", "var/nix/db", "store/own"] {
        let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
            return;
        };
        s.sb.sh_ok("umount /nix");
        boot(&s.sb, &gen1);
        let path = if sub == "store/own" {
            let own = closure(&gen1)
                .into_iter()
                .find(|p| p.contains("toy-own-1"))
                .unwrap();
            format!("{}/store/{}", s.dir, nixstore::store_name(&own))
        } else {
            format!("{}/{sub}", s.dir)
        };
        // A bind of the directory onto itself (as the marker's read-only
        // /nix/store shows up there when it propagates): the bind over /nix
        // shows the same files, so it is not refused.
        s.sb.sh_ok(&format!("mount --bind {path} {path}"));
        let out = s.mount_timed();
        assert_eq!(out.status.code(), Some(0), "{sub}: {}", output_text(&out));
        s.sb.sh_ok(&format!("umount {path}"));
        // Same contents, but from another place: a mount point of its own.
        s.sb.sh_ok(&format!(
            "cp -a {path} {path}.copy && mount --bind {path}.copy {path}"
        ));
        let out = s.mount_timed();
        assert_eq!(out.status.code(), Some(6), "{sub}: {}", output_text(&out));
        assert!(
            stderr(&out).contains(&format!("{path} is a mount point of its own")),
            "{sub}: {}",
            stderr(&out)
        );
        assert!(!s.sb.stamp_exists(), "{sub}");
        status_and_doctor_say(&s, "is a mount point of its own");
    }
}

#[test]
fn a_database_without_refs_is_exit_6_and_a_damaged_one_names_the_fix() {
    let gen1 = toy_system(1, 4, "-schema");
    let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    boot(&s.sb, &gen1);
    let db = format!("{}/var/nix/db/db.sqlite", s.dir);
    s.sb.sh_ok(&format!(
        "cp {db} {db}.good && sqlite3 {db} 'DROP TABLE Refs'"
    ));
    let out = s.mount_timed();
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    assert!(stderr(&out).contains("Refs"), "{}", stderr(&out));

    s.sb.sh_ok(&format!(
        "cp {db}.good {db} && rm -f {db}-wal {db}-shm && printf 'this is not sqlite at all, not at all...' | dd of={db} conv=notrunc 2>/dev/null"
    ));
    let out = s.mount_timed();
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("is damaged") && stderr(&out).contains("migrate"),
        "{}",
        stderr(&out)
    );
    status_and_doctor_say(&s, "is damaged");
}

#[test]
fn a_locked_database_is_called_locked_and_its_holder_named() {
    let gen1 = toy_system(1, 4, "-locked");
    let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    boot(&s.sb, &gen1);
    let db = format!("{}/var/nix/db/db.sqlite", s.dir);
    let ready = s.sb.path("locked").display().to_string();
    // A writer that holds its lock: rollback journal, exclusive locking.
    s.sb.sh_ok(&format!(
        "sqlite3 {db} 'PRAGMA journal_mode=DELETE' >/dev/null && \
         ( (printf 'PRAGMA locking_mode=EXCLUSIVE;\\nBEGIN EXCLUSIVE;\\nUPDATE ValidPaths SET narSize = narSize;\\n.shell echo $PPID > {ready}\\n'; sleep 40) | sqlite3 {db} ) >/dev/null 2>&1 </dev/null &"
    ));
    let start = std::time::Instant::now();
    while !std::path::Path::new(&ready).exists() {
        assert!(
            start.elapsed().as_secs() < 20,
            "sqlite3 did not take the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = s.mount_timed();
    // The writer goes before the sandbox does (it holds a file on the loop device).
    std::thread::sleep(std::time::Duration::from_millis(50));
    if let Ok(Ok(pid)) = std::fs::read_to_string(&ready).map(|p| p.trim().parse::<i32>()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("is locked by pid") && stderr(&out).contains("sqlite3"),
        "{}",
        stderr(&out)
    );
    status_and_doctor_say(&s, "is locked by pid");
}

#[test]
fn a_heal_from_a_vhdx_that_lacks_part_of_the_closure_says_so() {
    let gen1 = toy_system(1, 4, "-lack");
    let gen2 = toy_system(2, 4, "-lack");
    let Some(s) = setup(&[&gen1], &gen2, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    boot(&s.sb, &gen2);
    s.sb.sh_ok(&format!("rm -rf {}/nix/store/*toy-own-2-lack*", s.root));
    let out = s.mount_timed();
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    let err = stderr(&out);
    assert!(!err.contains("df -h"), "wrong fix: {err}");
    assert!(err.contains("missing from the VHDX"), "{err}");
    assert!(
        err.contains(&format!("{}/nix/var/nix/db/db.sqlite", s.root)),
        "names the VHDX database as the user sees it: {err}"
    );
    status_and_doctor_say(&s, "missing from the VHDX");
}

#[test]
fn a_fifo_at_the_run_state_does_not_hang_status_doctor_or_mount() {
    let gen1 = toy_system(1, 4, "-state");
    let Some(s) = setup(&[&gen1], &gen1, None, json!({})) else {
        return;
    };
    s.sb.sh_ok("umount /nix");
    boot(&s.sb, &gen1);
    let state = "/run/wsl-storage-mount/state.json";
    s.sb.sh_ok(&format!("mkfifo {state}"));
    let st = s.timed(60, &["--boot-root", &s.root, "status"]);
    assert_eq!(st.status.code(), Some(1), "{}", output_text(&st));
    assert!(
        err_of(&st).contains("state.json is not a regular file"),
        "{}",
        output_text(&st)
    );
    let doc = s.timed(120, &["--boot-root", &s.root, "doctor"]);
    assert_ne!(doc.status.code(), Some(137), "doctor hung");
    // mount replaces it with its record (a new file renamed over it).
    let out = s.timed(60, &["--boot-root", &s.root, "mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(s.sb.stamp_exists());
    assert!(s.sb.state()["exitCode"] == 0, "{}", s.sb.state());
}
