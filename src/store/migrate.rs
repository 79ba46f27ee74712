//! `migrate`: copy this instance's /nix (the VHDX's, read through the boot
//! view) into `mountPoint/nixStoreSubdir`, safely, while the system runs.
//!
//! The order is what makes the copy consistent without stopping nix-daemon:
//! the rest of /nix first (profiles and GC roots: Nix registers a path
//! before it links one to it), then the database as one snapshot (SQLite's
//! online backup API), and then only the store paths valid in that snapshot
//! (plus `.links`). A path that becomes valid later is neither registered in
//! the copy nor copied; a path valid in the snapshot is immutable, so its
//! copy is complete. Everything goes into `<subdir>.partial`, which becomes
//! `<subdir>` (one rename) only once it is complete and verified: an
//! interrupted run never leaves anything the guard could take for a store.
//! Nothing is ever written to the source, and nothing is deleted.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{renameat, AtFlags, Flock, FlockArg};
use nix::sys::stat::{fstatat, mkdirat, Mode};
use rusqlite::{Connection, OpenFlags};

use super::copy::{self, Engine, Size};
use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::space::human_bytes;
use crate::store::bootview::BootView;
use crate::store::guard::{self, BOOTED_SYSTEM};

const STORE_PREFIX: &str = "/nix/store/";
/// Threads that copy: on a cold cache the work is waiting for two disks,
/// so a few more than the cores keep both busy.
const WORKERS: usize = 4;
/// Room kept free beyond the plan: ext4's own metadata (extent trees,
/// directory blocks, the journal's growth) and the database's WAL.
const MARGIN_BYTES: u64 = 64 << 20;
const MARGIN_PERCENT: u64 = 2;
/// nix-store --verify --check-contents reads every byte of the copy.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// Plain progress lines (journal, pipes) this often.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// Test hook: stop the process (SIGSTOP) after this many copied entries,
/// so a test can kill the copy half way. Never set in production.
const STOP_AFTER_ENV: &str = "WSL_STORAGE_MOUNT_TEST_STOP_AFTER";

pub struct Options {
    pub boot_root: PathBuf,
    pub dry_run: bool,
    pub resume: bool,
    pub verify_contents: bool,
    pub system: Option<PathBuf>,
}

pub fn run(cfg: &Config, opts: &Options) -> Result<Exit> {
    crate::log::open_file(Path::new(&cfg.log_file));
    let started = Instant::now();
    let Some(subdir) = cfg.nix_store_subdir.clone() else {
        return Err(fail(
            Exit::Config,
            "nixStoreSubdir is not set; name the instance dir that will hold this instance's /nix (e.g. \"nixos-wsl-main\", a key of instanceDirs) and run migrate again",
        ));
    };
    let mp = cfg.mount_point.trim_end_matches('/').to_string();
    let target = format!("{mp}/{subdir}");
    let partial_name = format!("{subdir}.partial");
    let partial = format!("{mp}/{partial_name}");
    log::info!(
        "migrate: /nix of {} to {target}{}",
        opts.boot_root.display(),
        if opts.dry_run { " (dry run)" } else { "" }
    );
    let system = booted_system(opts.system.as_deref())?;

    // The disk, mounted in the host's namespace (before the boot view makes
    // this process a namespace of its own).
    crate::boot::ensure_disk(cfg)?;
    let mp_fd = crate::boot::mount::open_dir_no_symlinks(Path::new(&mp), false)?;
    check_target(&mp_fd, &subdir, &target)?;
    let partial_exists = check_partial(&mp_fd, &partial_name, &partial, opts.resume)?;
    if !opts.dry_run {
        crate::boot::instances::prepare_all(cfg)?;
        // The instance-dir step may have made the target: still empty.
        check_target(&mp_fd, &subdir, &target)?;
    }

    let view = BootView::open(&opts.boot_root)?;
    let shown_src = opts.boot_root.join("nix");
    let src_root = copy::open_dir_beneath(
        &OwnedFd::from(
            File::open(view.root())
                .with_context(|| format!("opening {}", view.root().display()))?,
        ),
        Path::new("nix"),
    )
    .with_context(|| format!("opening the source {}", shown_src.display()))?;
    // The database by a path through a directory fd opened without
    // following symlinks: SQLite opens paths, and follows them.
    let src_db_dir =
        copy::open_dir_beneath(&src_root, Path::new("var/nix/db")).with_context(|| {
            format!(
                "opening {}/var/nix/db, the Nix database of the source",
                shown_src.display()
            )
        })?;
    let src_db = PathBuf::from(format!(
        "/proc/self/fd/{}/db.sqlite",
        src_db_dir.as_raw_fd()
    ));

    // The plan, from the source database as it is now (the copy itself
    // follows the snapshot taken below, which can only differ by paths
    // registered or collected in between).
    let valid_now = read_valid(&open_source_db(&src_db, &shown_src)?)
        .with_context(|| format!("reading the valid paths of {}", shown_src.display()))?;
    if !valid_now.contains(&system.name) {
        return Err(fail(
            Exit::UnsafeStore,
            format!(
                "{} is not a valid path in the store at {}: a copy of it could not boot this system. Pass the right --boot-root (the root filesystem NixOS-WSL boots from) or --system",
                system.path,
                shown_src.display()
            ),
        ));
    }
    let plan_started = Instant::now();
    let plan = measure_plan(&src_root, &valid_now)?;
    let plan_secs = plan_started.elapsed().as_secs_f64();
    let already = if partial_exists {
        let pfd = copy::open_dir_beneath(&mp_fd, Path::new(&partial_name))?;
        let seen = copy::Seen::default();
        let mut s = Size::default();
        copy::measure(
            &pfd,
            Path::new(""),
            &|_: &Path, _: &OsStr| true,
            &seen,
            &mut s,
        )
        .with_context(|| format!("measuring {partial}"))?;
        s
    } else {
        Size::default()
    };
    let need_bytes = plan.blocks_bytes.saturating_sub(already.blocks_bytes);
    let need_inodes = plan.inodes.saturating_sub(already.inodes);
    let (free_bytes, free_inodes) = free_space(&mp)?;
    let want_bytes = need_bytes + need_bytes * MARGIN_PERCENT / 100 + MARGIN_BYTES;
    log::info!(
        "plan: {} store paths and .links from {}: {} entries ({} hard links), {} in {} files and dirs (measured in {plan_secs:.1} s)",
        valid_now.len(),
        shown_src.display(),
        plan.entries,
        plan.hard_links,
        human_bytes(plan.bytes),
        plan.inodes
    );
    if partial_exists {
        log::info!(
            "resume: {partial} already holds {} in {} files and dirs",
            human_bytes(already.bytes),
            already.inodes
        );
    }
    log::info!(
        "room: {} needed (with {}% + {} margin), {} free on {mp}; {} inodes needed, {} free",
        human_bytes(want_bytes),
        MARGIN_PERCENT,
        human_bytes(MARGIN_BYTES),
        human_bytes(free_bytes),
        need_inodes,
        free_inodes
    );
    if want_bytes > free_bytes || need_inodes > free_inodes {
        return Err(fail(
            Exit::NoRoom,
            format!(
                "not enough room on {mp}: the copy needs {} and {need_inodes} inodes, the disk has {} and {free_inodes} inodes free; nothing was copied. Free space on the disk (or collect garbage first: `nix-collect-garbage -d`) and run migrate again",
                human_bytes(want_bytes),
                human_bytes(free_bytes)
            ),
        ));
    }
    if opts.dry_run {
        log::info!("dry run: nothing copied; run `wsl-storage-mount migrate` to copy");
        return Ok(Exit::Success);
    }

    // The .partial, locked so two runs never copy into it at once.
    match mkdirat(
        mp_fd.as_fd(),
        partial_name.as_str(),
        Mode::from_bits_truncate(0o700),
    ) {
        Ok(()) => log::info!("created {partial}"),
        Err(Errno::EEXIST) if opts.resume => log::info!("resuming into {partial}"),
        Err(e) => return Err(e).with_context(|| format!("creating {partial}")),
    }
    let partial_fd = copy::open_dir_beneath(&mp_fd, Path::new(&partial_name))?;
    let _lock = Flock::lock(
        File::from(partial_fd.try_clone().context("duplicating a directory fd")?),
        FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, e)| {
        fail(
            Exit::Unexpected,
            format!("{partial} is locked ({e}): another migrate is copying into it; wait for it to finish"),
        )
    })?;

    raise_fd_limit();
    let stop_after = std::env::var(STOP_AFTER_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    let engine = Engine::new(&partial_fd, stop_after, partial_exists);
    let copy_started = Instant::now();
    let done = AtomicBool::new(false);
    let copied = std::thread::scope(|scope| -> Result<()> {
        scope.spawn(|| show_progress(&engine, &plan, &done));
        let result = (|| -> Result<()> {
            // 1. Everything next to the store first (profiles, gcroots,
            // logs): Nix registers a path before it points a profile or a
            // root at it, so every link copied here leads to a path that
            // the snapshot taken next holds.
            engine.copy_dir_parallel(&src_root, Path::new(""), &rest_filter, WORKERS)?;
            // 2. The database snapshot, before any store path is copied.
            let valid = snapshot_db(&src_db, &shown_src, &partial_fd, &partial)?;
            if !valid.contains(&system.name) {
                return Err(anyhow!(
                    "{} was collected from {} while migrate ran; run migrate --resume",
                    system.path,
                    shown_src.display()
                ));
            }
            // The snapshot is part of the plan's bytes: count it as done.
            if let Ok(st) = fstatat(
                partial_fd.as_fd(),
                "var/nix/db/db.sqlite",
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                engine
                    .progress
                    .bytes
                    .fetch_add(st.st_size.max(0) as u64, Ordering::Relaxed);
            }
            // 3. .links (so every later name of an optimised file becomes
            // a hard link), then the paths valid in the snapshot.
            let links = Path::new("store/.links");
            if fstatat(src_root.as_fd(), links, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
                engine.copy_dir_parallel(&src_root, links, &|_: &Path, _: &OsStr| true, WORKERS)?;
            }
            let store_filter = |rel: &Path, name: &OsStr| -> bool {
                rel != Path::new("store") || name.to_str().is_some_and(|n| valid.contains(n))
            };
            engine.copy_dir_parallel(&src_root, Path::new("store"), &store_filter, WORKERS)?;
            // 4. Making store/ changed the root's mtime: its metadata again.
            engine.copy_dir_meta(&src_root, Path::new(""))
        })();
        done.store(true, Ordering::Relaxed);
        result
    });
    if let Err(e) = copied {
        let full = e.chain().any(|c| {
            c.downcast_ref::<Errno>()
                .is_some_and(|n| matches!(n, Errno::ENOSPC | Errno::EDQUOT))
                || c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                    matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
                })
        });
        if full {
            return Err(fail(
                Exit::NoRoom,
                format!(
                    "{mp} ran out of room during the copy ({e:#}), although the plan fitted; what was copied stays in {partial}. Free space on the disk, then run `wsl-storage-mount migrate --resume`"
                ),
            ));
        }
        return Err(e.context(format!("copying {} to {partial}", shown_src.display())));
    }
    let p = &engine.progress;
    let secs = copy_started.elapsed().as_secs_f64();
    log::info!(
        "copied {} entries ({} hard links, {}) in {:.1} s ({}/s){}{}",
        p.entries.load(Ordering::Relaxed),
        p.links.load(Ordering::Relaxed),
        human_bytes(p.bytes.load(Ordering::Relaxed)),
        secs,
        human_bytes((p.bytes.load(Ordering::Relaxed) as f64 / secs.max(0.001)) as u64),
        match p.reused.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!(
                "; {} of it already copied by an earlier run",
                human_bytes(n)
            ),
        },
        match p.sockets.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!("; sockets left out (their servers recreate them): {n}"),
        }
    );

    // 3. Verify before the rename.
    let checked = verify_copy(Path::new(&partial), &system)?;
    log::info!(
        "verified: {} is valid in the copied database, its {} closure paths and all {} valid paths are in {partial}/store",
        system.path,
        checked.closure,
        checked.valid
    );
    if opts.verify_contents {
        verify_contents(cfg, &partial)?;
    }

    // 4. On disk first, then the one rename that makes it a store.
    nix::unistd::syncfs(partial_fd.as_fd()).with_context(|| format!("syncing {partial}"))?;
    match renameat(mp_fd.as_fd(), partial_name.as_str(), mp_fd.as_fd(), subdir.as_str()) {
        Ok(()) => {}
        Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
            return Err(fail(
                Exit::Config,
                format!("{target} was filled by something else during the copy; the complete copy stays in {partial}: look at both and move one away, then run migrate --resume"),
            ))
        }
        Err(e) => return Err(e).with_context(|| format!("renaming {partial} to {target}")),
    }
    nix::unistd::fsync(mp_fd.as_fd()).with_context(|| format!("syncing {mp}"))?;
    log::info!(
        "migrate: done in {:.1} s: {target} holds this instance's store ({} valid paths)",
        started.elapsed().as_secs_f64(),
        checked.valid
    );
    let distro = std::env::var("WSL_DISTRO_NAME").unwrap_or_else(|_| "<distro>".into());
    log::info!(
        "next: make sure bindMountNixStore is on (the NixOS module's default) with nixStoreSubdir = \"{subdir}\", then restart this instance so /nix is the disk from its start: in PowerShell `wsl --terminate {distro}`, then `wsl -d {distro}`; `wsl-storage-mount status` shows the bind"
    );
    Ok(Exit::Success)
}

/// The walk holds two directory fds per level in each worker (up to
/// `copy::MAX_DEPTH` levels): more than the usual soft limit of 1024.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(1 << 16);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                log::debug!(
                    "cannot raise the open file limit: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

struct System {
    /// /nix/store/<name>
    path: String,
    name: String,
}

/// The system that must boot from the copy: `--system` (a store path, or a
/// link to one) or the target of /run/booted-system. Only the link is read;
/// the store path itself is looked up in the databases, not followed.
fn booted_system(given: Option<&Path>) -> Result<System> {
    let (from, link) = match given {
        Some(p) if p.to_str().is_some_and(|s| s.starts_with(STORE_PREFIX)) => {
            (p.to_path_buf(), p.to_path_buf())
        }
        Some(p) => (
            p.to_path_buf(),
            std::fs::read_link(p).with_context(|| format!("--system {}: reading the link", p.display()))?,
        ),
        None => (
            PathBuf::from(BOOTED_SYSTEM),
            std::fs::read_link(BOOTED_SYSTEM).map_err(|e| {
                fail(
                    Exit::Config,
                    format!("cannot read {BOOTED_SYSTEM} ({e}): migrate checks that the copy can boot the running NixOS; on a system without it pass --system /nix/store/<hash>-nixos-system-..."),
                )
            })?,
        ),
    };
    let text = link.to_str().unwrap_or_default();
    let name = text
        .strip_prefix(STORE_PREFIX)
        .map(|n| n.trim_end_matches('/'))
        .filter(|n| !n.is_empty() && !n.contains('/'))
        .ok_or_else(|| {
            fail(
                Exit::Config,
                format!(
                    "{} leads to {}, which is not a path in /nix/store; pass --system /nix/store/<hash>-nixos-system-...",
                    from.display(),
                    link.display()
                ),
            )
        })?;
    Ok(System {
        path: format!("{STORE_PREFIX}{name}"),
        name: name.to_string(),
    })
}

/// The target must not exist, or be an empty directory (the instance-dir
/// step makes it empty): anything else is refused and left as it is.
fn check_target(mp: &OwnedFd, subdir: &str, target: &str) -> Result<()> {
    match fstatat(mp.as_fd(), subdir, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("inspecting {target}")),
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
            let dir = copy::open_dir_beneath(mp, Path::new(subdir))?;
            let empty = nix::dir::Dir::from_fd(dir)
                .with_context(|| format!("reading {target}"))?
                .iter()
                .filter_map(|e| e.ok())
                .all(|e| matches!(e.file_name().to_bytes(), b"." | b".."));
            if empty {
                Ok(())
            } else {
                Err(fail(
                    Exit::Config,
                    format!("{target} exists and is not empty; migrate never writes into or over an existing directory. If it already is this instance's store there is nothing to migrate; otherwise move it away (mv {target} {target}.old) and run migrate again"),
                ))
            }
        }
        Ok(_) => Err(fail(
            Exit::Config,
            format!("{target} exists and is not a directory (a symlink or a file); migrate leaves it alone. Move it away and run migrate again"),
        )),
    }
}

/// Whether a `.partial` of an earlier run is there (only with --resume).
fn check_partial(mp: &OwnedFd, name: &str, partial: &str, resume: bool) -> Result<bool> {
    match fstatat(mp.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => {
            if resume {
                log::info!("--resume: there is no {partial}; starting a new copy");
            }
            Ok(false)
        }
        Err(e) => Err(e).with_context(|| format!("inspecting {partial}")),
        Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => Err(fail(
            Exit::Config,
            format!("{partial} exists and is not a directory (a symlink or a file); migrate leaves it alone. Move it away and run migrate again"),
        )),
        Ok(_) if !resume => Err(fail(
            Exit::Config,
            format!("{partial} is there from an interrupted migrate; continue it with `wsl-storage-mount migrate --resume` (only what is missing is copied), or move it away to start again"),
        )),
        Ok(_) => Ok(true),
    }
}

/// What the copy will take: .links, the valid paths, the rest of /nix.
fn measure_plan(src_root: &OwnedFd, valid: &HashSet<String>) -> Result<Size> {
    let seen = copy::Seen::default();
    let all = |_: &Path, _: &OsStr| true;
    let mut size = Size::default();
    // The root, the store and .links themselves.
    for rel in ["", "store", "store/.links"] {
        if let Ok(st) = fstatat(
            src_root.as_fd(),
            rel_or_dot(rel),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            size.entries += 1;
            size.add_inode(&st);
        }
    }
    if fstatat(
        src_root.as_fd(),
        "store/.links",
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .is_ok()
    {
        size.add(&copy::measure_parallel(
            src_root,
            Path::new("store/.links"),
            &all,
            &seen,
            WORKERS,
        )?);
    }
    // Only the store's own entries are chosen; inside a path, everything.
    let store_filter = |rel: &Path, name: &OsStr| {
        rel != Path::new("store") || name.to_str().is_some_and(|n| valid.contains(n))
    };
    size.add(&copy::measure_parallel(
        src_root,
        Path::new("store"),
        &store_filter,
        &seen,
        WORKERS,
    )?);
    size.add(&copy::measure_parallel(
        src_root,
        Path::new(""),
        &rest_filter,
        &seen,
        WORKERS,
    )?);
    // The database snapshot, about the size of the database file.
    if let Ok(st) = fstatat(
        src_root.as_fd(),
        "var/nix/db/db.sqlite",
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        let len = st.st_size.max(0) as u64;
        size.entries += 1;
        size.inodes += 1;
        size.bytes += len;
        size.blocks_bytes += len.div_ceil(4096) * 4096;
    }
    Ok(size)
}

fn rel_or_dot(rel: &str) -> &str {
    if rel.is_empty() {
        "."
    } else {
        rel
    }
}

/// The rest of /nix, next to the store: everything but the store (copied
/// path by path), the live database files (snapshotted instead) and the
/// bind marker (a statement about a mount, written by `mark`).
fn rest_filter(rel: &Path, name: &OsStr) -> bool {
    if rel == Path::new("") {
        return name != "store" && name != ".mounted";
    }
    if rel == Path::new("var/nix/db") {
        return !name.as_encoded_bytes().starts_with(b"db.sqlite");
    }
    true
}

/// The source database, read-only: the copy never writes to the source.
fn open_source_db(db: &Path, shown_src: &Path) -> Result<Connection> {
    // The database and its siblings: no link, no FIFO (SQLite would
    // follow the one and block on the other).
    let shown_db = shown_src.join("var/nix/db/db.sqlite");
    crate::store::nixdb::check_regular(db, &shown_db, false)
        .map_err(|e| fail(Exit::UnsafeStore, format!("{e:#}; refusing to read it")))?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_os_string();
        p.push(suffix);
        let mut shown = shown_db.as_os_str().to_os_string();
        shown.push(suffix);
        crate::store::nixdb::check_regular(Path::new(&p), Path::new(&shown), true)
            .map_err(|e| fail(Exit::UnsafeStore, format!("{e:#}; refusing to read it")))?;
    }
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| {
        format!(
            "opening {}/var/nix/db/db.sqlite read-only",
            shown_src.display()
        )
    })?;
    // nix-daemon may hold a write lock for a moment.
    conn.busy_timeout(Duration::from_secs(60))?;
    Ok(conn)
}

fn read_valid(conn: &Connection) -> Result<HashSet<String>> {
    let mut stmt = conn.prepare("SELECT path FROM ValidPaths")?;
    let mut valid = HashSet::new();
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let path: String = row.get(0)?;
        if let Some(name) = path.strip_prefix(STORE_PREFIX).filter(|n| !n.contains('/')) {
            valid.insert(name.to_string());
        }
    }
    Ok(valid)
}

/// Back the source database up into the copy in one step (one read
/// transaction: a consistent snapshot however busy nix-daemon is), give it
/// the source file's owner and mode, and return its valid paths.
fn snapshot_db(
    src_db: &Path,
    shown_src: &Path,
    partial_fd: &OwnedFd,
    partial: &str,
) -> Result<HashSet<String>> {
    let db_dir = copy::open_dir_beneath(partial_fd, Path::new("var/nix/db")).or_else(|_| {
        for rel in ["var", "var/nix", "var/nix/db"] {
            match mkdirat(partial_fd.as_fd(), rel, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e).with_context(|| format!("creating {partial}/{rel}")),
            }
        }
        copy::open_dir_beneath(partial_fd, Path::new("var/nix/db"))
    })?;
    let dst_path = PathBuf::from(format!("/proc/self/fd/{}/db.sqlite", db_dir.as_raw_fd()));
    let shown_dst = format!("{partial}/var/nix/db/db.sqlite");
    // SQLite opens the database and its journal by path and follows links:
    // whatever an earlier run (or anyone) left under these names is removed
    // (never opened, never followed), and the database file is made here,
    // O_EXCL, before SQLite gets the path. The snapshot is taken anew on
    // every run anyway.
    for leftover in [
        "db.sqlite",
        "db.sqlite-wal",
        "db.sqlite-shm",
        "db.sqlite-journal",
    ] {
        match nix::unistd::unlinkat(db_dir.as_fd(), leftover, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) => log::debug!("removed {partial}/var/nix/db/{leftover} of an earlier run"),
            Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("removing {partial}/var/nix/db/{leftover} (left in the copy; the snapshot is taken again)")
                })
            }
        }
    }
    drop(
        nix::fcntl::openat(
            db_dir.as_fd(),
            "db.sqlite",
            nix::fcntl::OFlag::O_WRONLY
                | nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_EXCL
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .with_context(|| format!("creating {shown_dst}"))?,
    );
    let shown_db = shown_src.join("var/nix/db/db.sqlite");
    let src = open_source_db(src_db, shown_src)?;
    let mut dst = Connection::open(&dst_path).with_context(|| format!("creating {shown_dst}"))?;
    {
        let backup = rusqlite::backup::Backup::new(&src, &mut dst).with_context(|| {
            format!(
                "starting the backup of {} into {shown_dst}",
                shown_db.display()
            )
        })?;
        // All pages in one step: one read transaction of the source, so the
        // snapshot is consistent however busy nix-daemon is. Busy/Locked
        // (a writer holding the lock for a moment) is retried.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let step = backup
                .step(-1)
                .with_context(|| format!("backing {} up into {shown_dst}", shown_db.display()))?;
            match step {
                rusqlite::backup::StepResult::Done => break,
                _ if Instant::now() > deadline => {
                    return Err(anyhow!(
                        "{} stayed locked for 120 s; is a long nix operation running? Run migrate again when it is done",
                        shown_db.display()
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    let valid = read_valid(&dst).with_context(|| format!("reading {shown_dst}"))?;
    drop(dst);
    let st = nix::sys::stat::lstat(src_db)
        .with_context(|| format!("inspecting {}", shown_db.display()))?;
    nix::unistd::fchownat(
        db_dir.as_fd(),
        "db.sqlite",
        Some(nix::unistd::Uid::from_raw(st.st_uid)),
        Some(nix::unistd::Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("setting the owner of {shown_dst}"))?;
    nix::sys::stat::fchmodat(
        db_dir.as_fd(),
        "db.sqlite",
        Mode::from_bits_truncate(st.st_mode & 0o777),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .with_context(|| format!("setting the mode of {shown_dst}"))?;
    log::info!(
        "database snapshot: {} valid paths, {shown_dst}",
        valid.len()
    );
    Ok(valid)
}

fn free_space(mp: &str) -> Result<(u64, u64)> {
    let vfs = nix::sys::statvfs::statvfs(mp).with_context(|| format!("statvfs {mp}"))?;
    Ok((
        vfs.blocks_available() as u64 * vfs.fragment_size() as u64,
        vfs.files_available() as u64,
    ))
}

struct Checked {
    closure: usize,
    valid: usize,
}

/// The guard's database check, on the copy (layout, the system valid in
/// the copied database, its closure present under store/), and beyond it:
/// every valid path of the copied database is there.
fn verify_copy(dir: &Path, system: &System) -> Result<Checked> {
    let not_renamed = || format!("nothing was renamed; the copy stays in {}", dir.display());
    let closure = match guard::check_store(dir, &system.path) {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Err(fail(
                Exit::UnsafeStore,
                format!(
                    "{} is not valid in the copied database of {}; {}",
                    system.path,
                    dir.display(),
                    not_renamed()
                ),
            ))
        }
        Err(e) => return Err(e.context(format!("verifying the copy: {}", not_renamed()))),
    };
    let db = dir.join("var/nix/db/db.sqlite");
    // Read-write (it is our copy): the last close removes the -wal and -shm
    // a read-only reader (the guard's check) leaves.
    let conn = Connection::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let all: Vec<String> = {
        let mut stmt = conn.prepare("SELECT path FROM ValidPaths")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<_>>()
            .with_context(|| format!("reading {}", db.display()))?
    };
    drop(conn);
    let store = dir.join("store");
    let missing: Vec<&String> = all
        .iter()
        .filter(|p| {
            let name = p.strip_prefix(STORE_PREFIX).unwrap_or(p);
            std::fs::symlink_metadata(store.join(name)).is_err()
        })
        .collect();
    if !missing.is_empty() {
        let first: Vec<&str> = missing.iter().take(5).map(|s| s.as_str()).collect();
        return Err(fail(
            Exit::UnsafeStore,
            format!(
                "{} valid paths of the copied database are missing from {} (first: {}): were they collected from the source during the copy? {}; run `wsl-storage-mount migrate --resume`",
                missing.len(),
                store.display(),
                first.join(", "),
                not_renamed()
            ),
        ));
    }
    Ok(Checked {
        closure,
        valid: all.len(),
    })
}

/// Nix's own check of the copy: every valid path's content hash.
fn verify_contents(cfg: &Config, partial: &str) -> Result<()> {
    // Encoded: Nix decodes the URI, so a `%` in the path would name another dir.
    let store = crate::store::nixcli::nix_dir_store_uri(Path::new(partial)).unwrap_or_default();
    log::info!(
        "verifying every path's contents: {} --store '{store}' --verify --check-contents",
        cfg.nix_store_command
    );
    let mut cmd = Command::new(&cfg.nix_store_command);
    cmd.args(["--store", &store, "--verify", "--check-contents"]);
    let out = crate::proc::run(cmd, VERIFY_TIMEOUT).map_err(|e| {
        fail(
            Exit::Unexpected,
            format!("cannot run nixStoreCommand \"{}\" for --verify-contents: {e}; set nixStoreCommand, or run without --verify-contents", cfg.nix_store_command),
        )
    })?;
    if !out.success() {
        return Err(fail(
            Exit::UnsafeStore,
            format!(
                "`nix-store --verify --check-contents` on the copy failed ({}): {}; nothing was renamed, the copy stays in {partial}",
                out.describe(VERIFY_TIMEOUT),
                out.stderr_text()
            ),
        ));
    }
    log::info!("nix-store --verify --check-contents: the copy is intact");
    Ok(())
}

/// A bar on a terminal, plain lines every few seconds otherwise.
fn show_progress(engine: &Engine<'_>, plan: &Size, done: &AtomicBool) {
    let p = &engine.progress;
    let started = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(plan.bytes);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} ETA {eta}",
        ) {
            bar.set_style(style);
        }
        while !done.load(Ordering::Relaxed) {
            bar.set_position(p.bytes.load(Ordering::Relaxed).min(plan.bytes));
            bar.set_message(format!(
                "files {}/{}",
                p.entries.load(Ordering::Relaxed),
                plan.entries
            ));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
        return;
    }
    let mut last = Instant::now();
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() < PLAIN_EVERY {
            continue;
        }
        last = Instant::now();
        let bytes = p.bytes.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let rate = bytes as f64 / secs;
        let eta = if rate > 0.0 {
            format!("{:.0} s", plan.bytes.saturating_sub(bytes) as f64 / rate)
        } else {
            "unknown".into()
        };
        log::info!(
            "progress: {} of {}, {} of {} entries, {}/s, ETA {eta}",
            human_bytes(bytes),
            human_bytes(plan.bytes),
            p.entries.load(Ordering::Relaxed),
            plan.entries,
            human_bytes(rate as u64)
        );
    }
}
