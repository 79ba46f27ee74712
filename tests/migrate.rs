//! `migrate` against real Nix stores: a toy system built by Debian's
//! nix-bin into the machine's store, imported into a chroot store that
//! stands in for the VHDX's root (optimised, so it has hard links), copied
//! onto a real ext4 loop device in the sandbox's mount namespace.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{output_text, Sandbox};
use serde_json::json;

const SUBDIR: &str = "nixos-wsl-main";
/// The test hook of `migrate`: SIGSTOP itself after this many entries.
const STOP_AFTER: &str = "WSL_STORAGE_MOUNT_TEST_STOP_AFTER";

struct Env {
    sb: Sandbox,
    cfg: PathBuf,
    /// The stand-in boot root; its /nix is the source.
    root: PathBuf,
    system: String,
    mp: PathBuf,
    dev: String,
}

fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "`{script}`:\n{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The toy system, built (once; Nix caches it) into the machine's store.
fn toy_system() -> String {
    let expr = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/migrate-toy.nix");
    sh(&format!(
        "nix-build --no-out-link --option sandbox false --option build-users-group '' {} 2>/dev/null",
        expr.display()
    ))
}

fn setup(disk_mb: u64) -> Option<Env> {
    setup_fs(disk_mb, &[])
}

/// `setup` with extra mkfs.ext4 options for the disk.
fn setup_fs(disk_mb: u64, mkfs_extra: &[&str]) -> Option<Env> {
    let mut sb = Sandbox::new()?;
    for (tool, package) in [
        ("nix-store", "nix-bin"),
        ("nix-build", "nix-bin"),
        ("sqlite3", "sqlite3"),
        ("setfattr", "attr"),
        ("setfacl", "acl"),
    ] {
        if !common::tool_for_case(tool, package, "migrate on a real Nix store") {
            return None;
        }
    }
    let system = toy_system();
    let root = sb.path("root");
    let r = root.display();
    // The chroot store standing in for the VHDX's /nix, with what a real
    // one has next to the store: profiles, a GC root, a user-owned profile
    // dir, an xattr, an ACL, a FIFO and nix-daemon's socket.
    sh(&format!(
        "set -e; nix-store --export $(nix-store -qR {system}) 2>/dev/null | nix-store --store 'local?root={r}' --import >/dev/null 2>&1
         nix-store --store 'local?root={r}' --optimise >/dev/null 2>&1
         cd {r}/nix/var/nix
         mkdir -p profiles/per-user/alice gcroots daemon-socket
         ln -s {system} profiles/system-1-link && ln -s system-1-link profiles/system
         ln -s /nix/var/nix/profiles gcroots/profiles
         chown 1000:100 profiles/per-user/alice && chmod 0750 profiles/per-user/alice
         echo note > profiles/per-user/alice/notes && chown 1000:100 profiles/per-user/alice/notes
         setfattr -n user.wsm -v kept profiles/per-user/alice/notes
         setfacl -m u:1001:rx profiles/per-user/alice
         mkfifo {r}/nix/var/nix/a-fifo"
    ));
    let socket = root.join("nix/var/nix/daemon-socket/socket");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let uuid = common::new_uuid();
    let mut mkfs = vec!["mkfs.ext4", "-q", "-U", &uuid];
    mkfs.extend_from_slice(mkfs_extra);
    let dev = sb.loop_device(disk_mb, &mkfs);
    sb.link("/dev/disk/by-id/nvme-FAKE_NVMe_0001", &dev.node);
    let mp = sb.path("storage");
    let cfg = sb.config(
        "config.json",
        json!({
            "deviceId": "nvme-FAKE_NVMe_0001",
            "fsUuid": uuid,
            "mountPoint": mp.display().to_string(),
            "waitTimeout": 3,
            "nixStoreSubdir": SUBDIR,
            "bindTarget": sb.path("nix").display().to_string(),
            "instanceDirs": {SUBDIR: {"owner": "root", "group": "root", "mode": "0755"}},
        }),
    );
    Some(Env {
        sb,
        cfg,
        root,
        system,
        mp,
        dev: dev.node,
    })
}

impl Env {
    fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<String> {
        let mut v = vec![
            "migrate".to_string(),
            "--boot-root".into(),
            self.root.display().to_string(),
            "--system".into(),
            self.system.clone(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    fn migrate(&self, extra: &[&str]) -> Output {
        let args = self.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.sb.helper(&self.cfg, &args)
    }

    /// migrate, stopped by the test hook after `n` entries.
    fn migrate_stopped_after(&self, n: u32, extra: &[&str]) -> Child {
        let args = self.args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = self
            .sb
            .helper_cmd(&self.cfg, &args)
            .env(STOP_AFTER, n.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // nsenter execs the helper: the child's pid is the helper's.
        let stat = format!("/proc/{}/stat", child.id());
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            let state = text.rsplit(") ").next().and_then(|r| r.split(' ').next());
            if state == Some("T") {
                return child;
            }
            if let Ok(Some(_)) = child.try_wait() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "migrate ended before the hook stopped it:\n{}",
                    output_text(&out)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "migrate never stopped"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn target(&self) -> String {
        format!("{}/{SUBDIR}", self.mp.display())
    }

    /// Every entry of a tree with what must survive the copy: link count,
    /// owner, group, mode, mtime, type, symlink target; size for files.
    /// Left out: the live database files (the copy has a snapshot), the
    /// db dir's mtime, and nix-daemon's socket (never copied).
    fn listing(&self, dir: &str) -> String {
        let out = self.sb.sh_ok(&format!(
            "cd {dir} && find . \\( -type d -printf '%P|%n|%U|%G|%m|%T@|%y\\n' \\) -o \\( ! -type d -printf '%P|%n|%U|%G|%m|%T@|%y|%s|%l\\n' \\) | sort"
        ));
        out.lines()
            .filter(|l| {
                !l.starts_with("var/nix/db/db.sqlite")
                    && !l.starts_with("var/nix/db|")
                    && !l.starts_with("var/nix/daemon-socket/socket|")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The source as bytes and metadata: the listing plus a checksum of
    /// every file. SQLite's readers (ours, like every Nix process) keep
    /// their -wal/-shm index next to the database; they are not the store.
    fn source_fingerprint(&self) -> String {
        let nix = format!("{}/nix", self.root.display());
        let sums = sh(&format!(
            "cd {nix} && find . -type f ! -name 'db.sqlite-wal' ! -name 'db.sqlite-shm' -print0 | sort -z | xargs -0 sha256sum"
        ));
        format!("{}\n{sums}", self.listing(&nix))
    }

    fn nix_verify(&self, dir: &str) -> Output {
        self.sb.sh(&format!(
            "nix-store --store 'local?real={dir}/store&state={dir}/var/nix&log={dir}/var/log/nix' --verify --check-contents"
        ))
    }

    fn exists(&self, path: &str) -> bool {
        self.sb
            .sh(&format!("test -e '{path}' || test -L '{path}'"))
            .status
            .success()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn migrate_copies_a_real_store_that_nix_verifies_and_the_guard_accepts() {
    let Some(env) = setup(256) else { return };
    let before = env.source_fingerprint();
    let out = env.migrate(&["--verify-contents"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("nix-store --verify --check-contents: the copy is intact"),
        "{err}"
    );
    assert!(
        err.contains("wsl --terminate"),
        "says what happens next: {err}"
    );
    let target = env.target();
    assert!(
        !env.exists(&format!("{target}.partial")),
        "the .partial was renamed"
    );

    // Nix's own check of the copy, run by the test.
    let verify = env.nix_verify(&target);
    assert!(verify.status.success(), "{}", output_text(&verify));

    // Link counts, owners, modes, mtimes (store paths: 1), symlinks.
    let src = env.listing(&format!("{}/nix", env.root.display()));
    let dst = env.listing(&target);
    assert_eq!(src, dst, "the copy differs from the source");
    assert!(
        src.lines()
            .any(|l| l.starts_with("store/.links/") && l.contains("|2|")),
        "the source has hard links into .links:\n{src}"
    );
    assert!(src.contains("|1.0000000000|"), "store paths have mtime 1");
    // xattrs and ACLs.
    let xattr = env.sb.sh_ok(&format!(
        "getfattr --only-values -n user.wsm {target}/var/nix/profiles/per-user/alice/notes"
    ));
    assert_eq!(xattr, "kept");
    let acl = env.sb.sh_ok(&format!(
        "getfacl -n {target}/var/nix/profiles/per-user/alice"
    ));
    assert!(acl.contains("user:1001:r-x"), "{acl}");
    // The FIFO is a FIFO; the socket was left out.
    env.sb.sh_ok(&format!("test -p {target}/var/nix/a-fifo"));
    assert!(!env.exists(&format!("{target}/var/nix/daemon-socket/socket")));
    assert!(
        err.contains("sockets left out (their servers recreate them): 1"),
        "{err}"
    );

    assert!(env.sb.log().contains("migrate: done"), "logged to logFile");

    // The source did not change.
    assert_eq!(before, env.source_fingerprint(), "the source was modified");

    // The guard accepts the copy for the booted system.
    env.sb.sh_ok(&format!(
        "ln -s {} /run/booted-system && mkdir -p {}",
        env.system,
        env.sb.path("nix").display()
    ));
    let cfg = env.sb.config(
        "guard.json",
        json!({
            "deviceId": "nvme-FAKE_NVMe_0001",
            "mountPoint": env.mp.display().to_string(),
            "waitTimeout": 3,
            "bindMountNixStore": true,
            "nixStoreSubdir": SUBDIR,
            "bindTarget": env.sb.path("nix").display().to_string(),
            "instanceDirs": {SUBDIR: {"owner": "root", "group": "root", "mode": "0755"}},
        }),
    );
    let out = env.sb.helper(&cfg, &["mount"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(env.sb.stamp_exists(), "the guard wrote the bind stamp");
}

#[test]
fn migrate_killed_half_way_leaves_no_subdir_and_resume_finishes() {
    let Some(env) = setup(256) else { return };
    let child = env.migrate_stopped_after(60, &[]);
    let target = env.target();
    assert!(env.exists(&format!("{target}.partial/store/.links")));
    // The instance-dir step made the subdir, empty: nothing a guard
    // could take for a store.
    assert_eq!(env.sb.sh_ok(&format!("ls -A {target}")), "");
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed");

    let again = env.migrate(&[]);
    assert_eq!(again.status.code(), Some(2), "{}", output_text(&again));
    assert!(stderr(&again).contains("--resume"), "{}", stderr(&again));

    let resumed = env.migrate(&["--resume"]);
    assert_eq!(resumed.status.code(), Some(0), "{}", output_text(&resumed));
    assert!(
        stderr(&resumed).contains("already holds"),
        "{}",
        stderr(&resumed)
    );
    assert!(!env.exists(&format!("{target}.partial")));
    let verify = env.nix_verify(&target);
    assert!(verify.status.success(), "{}", output_text(&verify));
    assert_eq!(
        env.listing(&format!("{}/nix", env.root.display())),
        env.listing(&target)
    );
}

#[test]
fn migrate_refuses_a_target_that_is_not_empty_and_touches_nothing() {
    let Some(env) = setup(256) else { return };
    let mp = env.mp.display();
    env.sb.sh_ok(&format!(
        "mkdir -p {mp} && mount {dev} {mp} && mkdir -m 0700 {mp}/{SUBDIR} && echo mine > {mp}/{SUBDIR}/keep",
        dev = env.dev
    ));
    let before = env.sb.sh_ok(&format!(
        "stat -c '%a %U %Y' {mp}/{SUBDIR}; cat {mp}/{SUBDIR}/keep; ls -A {mp}"
    ));
    let out = env.migrate(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("exists and is not empty"),
        "{}",
        stderr(&out)
    );
    let after = env.sb.sh_ok(&format!(
        "stat -c '%a %U %Y' {mp}/{SUBDIR}; cat {mp}/{SUBDIR}/keep; ls -A {mp}"
    ));
    assert_eq!(
        before, after,
        "the target (its mode too) and the disk are untouched"
    );
    assert!(!after.contains(".partial"));
}

#[test]
fn migrate_on_a_disk_too_small_exits_8_before_copying_anything() {
    // 48 MiB: less than the store plus the margin migrate keeps free.
    let Some(env) = setup(48) else { return };
    let dry = env.migrate(&["--dry-run"]);
    assert_eq!(dry.status.code(), Some(8), "{}", output_text(&dry));
    let out = env.migrate(&[]);
    assert_eq!(out.status.code(), Some(8), "{}", output_text(&out));
    let err = stderr(&out);
    assert!(err.contains("not enough room"), "{err}");
    assert!(err.contains("nothing was copied"), "{err}");
    let listing = env.sb.sh_ok(&format!("ls -A {}", env.mp.display()));
    assert!(!listing.contains(".partial"), "{listing}");
    assert_eq!(env.sb.sh_ok(&format!("ls -A {}", env.target())), "");
}

#[test]
fn migrate_dry_run_prints_the_plan_and_copies_nothing() {
    let Some(env) = setup(256) else { return };
    let out = env.migrate(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let err = stderr(&out);
    assert!(err.contains("plan: 3 store paths"), "{err}");
    // Every entry of the source is in the plan (the live database's -wal
    // and -shm are not: the copy gets a snapshot), hard links counted as
    // such: the names beyond the first of each inode.
    let nix = format!("{}/nix", env.root.display());
    let entries = sh(&format!(
        "find {nix} ! -name db.sqlite-wal ! -name db.sqlite-shm | wc -l"
    ));
    let links = sh(&format!(
        "find {nix} ! -type d -links +1 -printf '%i\\n' | sort | uniq -c | awk '{{n += $1 - 1}} END {{print n}}'"
    ));
    let want = format!("{entries} entries ({links} hard links)");
    assert!(err.contains(&want), "want {want}: {err}");
    assert!(err.contains("free on"), "{err}");
    let listing = env.sb.sh_ok(&format!("ls -A {}", env.mp.display()));
    assert!(
        !listing.contains(SUBDIR),
        "dry run creates nothing: {listing}"
    );
}

#[test]
fn a_path_added_during_the_copy_is_registered_and_present_or_neither() {
    let Some(env) = setup(256) else { return };
    let child = env.migrate_stopped_after(40, &[]);
    // While the copy is half way: a new path in the source store.
    let file = env.sb.path("added-during-copy");
    std::fs::write(&file, "new content\n").unwrap();
    let added = sh(&format!(
        "nix-store --store 'local?root={}' --add {} 2>/dev/null",
        env.root.display(),
        file.display()
    ));
    assert!(added.starts_with("/nix/store/"), "{added}");
    // ... and a profile pointed at it, as nix-env would (after registering).
    sh(&format!(
        "ln -s {added} {}/nix/var/nix/profiles/added-1-link",
        env.root.display()
    ));
    Command::new("kill")
        .args(["-CONT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    let target = env.target();
    let registered = env.sb.sh_ok(&format!(
        "sqlite3 {target}/var/nix/db/db.sqlite \"SELECT count(*) FROM ValidPaths WHERE path = '{added}'\""
    ));
    let name = added.trim_start_matches("/nix/store/");
    let present = env.exists(&format!("{target}/store/{name}"));
    assert!(
        (registered.trim() == "1") == present,
        "{added}: registered {registered}, present {present}"
    );
    // Every profile and GC root of the copy leads to a path of the copy.
    let links = env.sb.sh_ok(&format!(
        "find {target}/var/nix/profiles {target}/var/nix/gcroots -type l -printf '%l\\n'"
    ));
    for link in links.lines().filter(|l| l.starts_with("/nix/store/")) {
        let name = link.trim_start_matches("/nix/store/");
        assert!(
            env.exists(&format!("{target}/store/{name}")),
            "a copied profile leads to {link}, which the copy lacks"
        );
    }
    let verify = env.nix_verify(&target);
    assert!(verify.status.success(), "{}", output_text(&verify));
}

#[test]
fn migrate_refuses_a_system_the_source_store_does_not_hold() {
    let Some(env) = setup(256) else { return };
    let other = "/nix/store/00000000000000000000000000000000-nixos-system-other";
    let out = env.sb.helper(
        &env.cfg,
        &[
            "--boot-root",
            &env.root.display().to_string(),
            "migrate",
            "--system",
            other,
        ],
    );
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("is not a valid path in the store"),
        "{}",
        stderr(&out)
    );
    let listing = env.sb.sh_ok(&format!("ls -A {}", env.mp.display()));
    assert!(!listing.contains(".partial"), "nothing copied: {listing}");
}

#[test]
fn migrate_does_not_follow_a_symlink_in_the_source() {
    let Some(env) = setup(256) else { return };
    // The database dir moved away and a symlink in its place: SQLite would
    // follow it; migrate must not.
    let var = env.root.join("nix/var/nix");
    sh(&format!(
        "mv {v}/db {r}/db-elsewhere && ln -s {r}/db-elsewhere {v}/db",
        v = var.display(),
        r = env.root.display()
    ));
    let out = env.migrate(&[]);
    assert_ne!(out.status.code(), Some(0), "{}", output_text(&out));
    let err = stderr(&out);
    assert!(err.contains("var/nix/db"), "names the path: {err}");
    let listing = env.sb.sh_ok(&format!("ls -A {}", env.mp.display()));
    assert!(!listing.contains(".partial"), "nothing copied: {listing}");
}

// ---------------------------------------------------------------------
// Hostile .partial contents, runaway trees, room (issue 21). Every run is
// bounded: a hang shows as exit 137.

impl Env {
    fn migrate_timed(&self, extra: &[&str]) -> Output {
        let mut line = format!(
            "timeout -s KILL 120 {} --config {}",
            common::BIN,
            self.cfg.display()
        );
        for a in self.args(extra) {
            line.push_str(&format!(" '{a}'"));
        }
        self.sb.sh(&line)
    }

    /// The disk mounted at its mount point (as migrate leaves it).
    fn mount_disk(&self) {
        self.sb.sh_ok(&format!(
            "mkdir -p {mp} && mount {dev} {mp}",
            mp = self.mp.display(),
            dev = self.dev
        ));
    }
}

#[test]
fn resume_never_writes_into_follows_or_blocks_on_what_it_finds_in_the_partial() {
    // Each case alone, so each shows on the old code for what it is.
    for case in [
        "hard links",
        "existing db link",
        "dangling db link",
        "fifos",
    ] {
        let Some(env) = setup(256) else { return };
        env.mount_disk();
        let mp = env.mp.display().to_string();
        let p = format!("{}.partial", env.target());
        let links = format!("{}/nix/store/.links", env.root.display());
        let two: Vec<String> = sh(&format!("ls {links} | head -2"))
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(two.len(), 2, "the optimised source has .links");
        env.sb.sh_ok(&format!(
            "set -e; mkdir -p {p}/store/.links {p}/var/nix/db {p}/var/nix/profiles/per-user/alice
             echo victim > {mp}/victim && echo other > {mp}/victim2"
        ));
        let other = format!("{mp}/other.sqlite");
        // What an earlier run could not have made.
        let plant = match case {
            // Names that are hard links to files elsewhere on the disk.
            "hard links" => format!(
                "ln {mp}/victim {p}/var/nix/profiles/per-user/alice/notes && ln {mp}/victim2 {p}/store/.links/{}",
                two[0]
            ),
            // The database a link to another database.
            "existing db link" => format!(
                "sqlite3 {other} 'CREATE TABLE keep (x); INSERT INTO keep VALUES (42)' && ln -s {other} {p}/var/nix/db/db.sqlite"
            ),
            // A dangling one (SQLite would create the file where it points),
            // and SQLite's -wal name as a link too.
            "dangling db link" => format!(
                "ln -s {other} {p}/var/nix/db/db.sqlite && ln -s {mp}/victim {p}/var/nix/db/db.sqlite-wal"
            ),
            // FIFOs where a file and SQLite's journal go.
            _ => format!(
                "mkfifo {p}/store/.links/{} && mkfifo {p}/var/nix/db/db.sqlite-journal",
                two[1]
            ),
        };
        env.sb.sh_ok(&plant);
        let other_before = env.sb.sh(&format!("sha256sum {other} 2>&1")).stdout;
        let out = env.migrate_timed(&["--resume"]);
        assert_eq!(out.status.code(), Some(0), "{case}: {}", output_text(&out));
        assert_eq!(
            env.sb.sh_ok(&format!("cat {mp}/victim {mp}/victim2")),
            "victim\nother\n",
            "{case}: a file outside the copy was written through a hard link"
        );
        assert_eq!(
            env.sb.sh(&format!("sha256sum {other} 2>&1")).stdout,
            other_before,
            "{case}: the database a link pointed to was touched (or created)"
        );
        let verify = env.nix_verify(&env.target());
        assert!(verify.status.success(), "{case}: {}", output_text(&verify));
        assert_eq!(
            env.listing(&format!("{}/nix", env.root.display())),
            env.listing(&env.target()),
            "{case}"
        );
    }
}

#[test]
fn a_runaway_deep_directory_is_refused_naming_it_before_anything_is_written() {
    let Some(env) = setup(256) else { return };
    let deep = env.root.join("nix/var/nix/deep");
    // 10,000 levels: deeper than PATH_MAX allows to name at once.
    sh(&format!(
        "python3 -c 'import os; os.mkdir(\"{d}\"); os.chdir(\"{d}\")\nfor _ in range(10000):\n    os.mkdir(\"d\"); os.chdir(\"d\")'",
        d = deep.display()
    ));
    let out = env.migrate_timed(&[]);
    sh(&format!("rm -rf {}", deep.display()));
    assert_eq!(out.status.code(), Some(6), "{}", output_text(&out));
    let err = stderr(&out);
    assert!(
        err.contains("var/nix/deep") && err.contains("directories deep"),
        "{err}"
    );
    let listing = env.sb.sh_ok(&format!("ls -A {}", env.mp.display()));
    assert!(!listing.contains(".partial"), "nothing copied: {listing}");
}

#[test]
fn the_room_check_counts_the_blocks_of_long_symlinks_and_directories() {
    // 4 KiB blocks (as on any disk of 512 MiB and more; mkfs.ext4 gives a
    // small one 1 KiB blocks), inodes enough for every entry, and no blocks
    // reserved for root (the helper, as root, could use them).
    let Some(env) = setup_fs(256, &["-b", "4096", "-i", "4096", "-m", "0"]) else {
        return;
    };
    // 30,000 symlinks with 100-byte targets: no content, but a 4 KiB
    // block each on ext4 (117 MiB), and directories holding them.
    let dir = env.root.join("nix/var/nix/many");
    sh(&format!(
        "python3 -c 'import os; os.mkdir(\"{d}\")\nfor i in range(30000):\n    os.symlink(\"/nix/store/\" + \"x\" * 90 + str(i), \"{d}/l%d\" % i)'",
        d = dir.display()
    ));
    // What the copy really takes on the source's ext4.
    let need: u64 = sh(&format!("du -sB1 {}/nix | cut -f1", env.root.display()))
        .parse()
        .unwrap();
    // Leave 10 MiB less than that free on the disk.
    env.mount_disk();
    let mp = env.mp.display().to_string();
    let avail: u64 = env
        .sb
        .sh_ok(&format!("df -B1 --output=avail {mp} | tail -1"))
        .trim()
        .parse()
        .unwrap();
    let fill = avail - (need - (10 << 20));
    env.sb
        .sh_ok(&format!("fallocate -l {fill} {mp}/filler && sync"));
    let out = env.migrate_timed(&[]);
    assert_eq!(out.status.code(), Some(8), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("nothing was copied"),
        "{}",
        stderr(&out)
    );
    let listing = env.sb.sh_ok(&format!("ls -A {mp}"));
    assert!(!listing.contains(".partial"), "nothing copied: {listing}");
}
