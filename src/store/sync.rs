//! `sync-boot`: make what is deployed on the disk store the VHDX's boot
//! generation.
//!
//! NixOS-WSL boots from the VHDX's /nix before any unit of ours runs: WSL
//! execs /sbin/init (a link on the root filesystem into /nix/store), the
//! shim activates /nix/var/nix/profiles/system and execs systemd from it.
//! With the disk bound over /nix, `nixos-rebuild` writes the new generation
//! into the disk store only. So, as the boot loader (and, closure only, at
//! every activation), this copies the new system's closure into the VHDX
//! store with Nix's own tools, points the VHDX's `system` profile at it,
//! keeps `bootGenerations` generations there and collects the rest.
//!
//! Order, so that every failure leaves the previous generation bootable:
//! copy what the VHDX lacks -> check it is valid there -> new profile link
//! (atomic rename) -> drop old generation links -> garbage-collect -> check
//! that every root-filesystem link into /nix/store resolves in the VHDX.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::IsTerminal;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::mountinfo;
use crate::space::{free_bytes, human_bytes};
use crate::state;
use crate::store::bootview::BootView;
use crate::store::nixcli;
use crate::store::nixdb::{self, NixDb};

/// Links on the root filesystem that WSL or the shim use before any
/// activation: they must resolve in the VHDX store at every start.
const ROOT_LINKS: &[&str] = &["sbin/init", "etc/static"];
/// Directories whose links into /nix/store must resolve too.
const ROOT_LINK_DIRS: &[&str] = &["bin", "usr/bin"];
/// What NixOS-WSL's activation writes inside /nix itself (the entrypoint
/// link): under the bind it lands on the disk, while WSL reads the VHDX's.
const NIXOS_WSL_DIR: &str = "nixos-wsl";
/// Paths per `nix-store --export | --import` batch, and bytes.
const BATCH_PATHS: usize = 400;
const BATCH_BYTES: u64 = 256 << 20;
/// Room kept free on the VHDX beyond the copy (Nix's database grows too).
const ROOM_MARGIN: u64 = 64 << 20;

#[derive(Debug, Default)]
pub struct Report {
    pub copied: usize,
    pub copied_bytes: u64,
    pub freed: usize,
    pub freed_bytes: u64,
    pub generation: Option<u64>,
}

fn sync_failed(msg: impl Into<String>) -> anyhow::Error {
    fail(Exit::SyncFailed, msg)
}

/// What `sync-boot` was asked to do.
pub struct Request<'a> {
    pub boot_root: &'a Path,
    pub system: Option<&'a Path>,
    pub closure_only: bool,
}

pub fn run(cfg: &Config, req: &Request) -> Result<Exit> {
    crate::log::open_file(Path::new(&cfg.log_file));
    let started = Instant::now();
    let Some(store_dir) = cfg.store_dir().filter(|_| cfg.bind_mount_nix_store) else {
        log::info!(
            "sync-boot: bindMountNixStore is off, so the VHDX store is the running store and what is deployed is already where the next start reads it; nothing to do"
        );
        return Ok(Exit::Success);
    };
    let store_dir = PathBuf::from(store_dir);
    let mounts = mountinfo::read().context("reading /proc/self/mountinfo")?;
    if !crate::store::bind_state(cfg, &mounts).is_bind {
        log::info!(
            "sync-boot: {} is not the bind of {} (disk missing with onMissing = \"fallback\", the first enable, or the boot itself), so deployments land in the VHDX store directly; nothing to do",
            cfg.bind_target,
            store_dir.display()
        );
        return Ok(Exit::Success);
    }
    let disk_uri = nixcli::nix_dir_store_uri(&store_dir).map_err(|e| fail(Exit::Config, e))?;
    let disk =
        NixDb::open(&store_dir.join("var/nix")).map_err(|e| sync_failed(format!("{e:#}")))?;
    let system = match req.system {
        Some(p) => system_arg(p)?,
        None => resolve_profile(&store_dir.join("var/nix/profiles"), "system")
            .map_err(|e| sync_failed(format!("the disk's system profile: {e}")))?,
    };
    if !disk.is_valid(&system)? {
        return Err(sync_failed(format!(
            "{system} is not a valid path in the disk store {}; nothing was changed on the VHDX. Build it first (nixos-rebuild does)",
            store_dir.display()
        )));
    }
    check_is_nixos_system(&store_dir.join("store"), &system)?;

    let view = BootView::open(req.boot_root)?;
    // A Ctrl-C stops nix-store too; an import cut short leaves the previous
    // boot generation as it was.
    crate::proc::kill_children_on_signal();
    let vhdx_nix = view.nix_dir();
    view.check_nix_layout().map_err(sync_failed)?;
    let shown_db = view.shown_db();
    let _lock = lock(&state::run_dir().join("sync-boot.lock"))?;
    let profiles = vhdx_nix.join("var/nix/profiles");
    // Before anything is copied: a generation number that cannot grow.
    if !req.closure_only {
        next_generation(&profiles)?;
    }
    let mut report = Report::default();

    // 1. What the next start needs: the system, the root-filesystem links'
    // targets and the nixos-wsl links' targets as they are on the disk.
    let mut wanted: BTreeSet<String> = BTreeSet::from([system.clone()]);
    for (link, name) in root_link_targets(view.root())? {
        let path = format!("{}/{name}", nixdb::STORE_DIR);
        if disk.is_valid(&path)? {
            wanted.insert(path);
        } else {
            log::debug!("{link} -> {path}: not in the disk store");
        }
    }
    let nixos_wsl = nixos_wsl_links(&store_dir.join(NIXOS_WSL_DIR))?;
    for (_, target) in &nixos_wsl {
        if let Some(p) = store_path_of(target) {
            if disk.is_valid(&p)? {
                wanted.insert(p);
            }
        }
    }
    let closure = disk
        .closure(wanted.iter().map(String::as_str))
        .map_err(|e| sync_failed(format!("{e:#}; nothing was changed on the VHDX")))?;
    let vhdx_db = NixDb::open_as(&vhdx_nix.join("var/nix"), &shown_db)
        .map_err(|e| sync_failed(format!("{e:#}")))?;
    let have = vhdx_db.valid_of(closure.iter().map(String::as_str))?;
    drop(vhdx_db);
    let missing: BTreeSet<String> = closure.difference(&have).cloned().collect();
    let bytes = disk.nar_size(missing.iter().map(String::as_str))?;

    // 2. Room, then the copy.
    let free = free_bytes(&vhdx_nix.join("store"))?;
    if bytes + ROOM_MARGIN > free {
        return Err(sync_failed(format!(
            "the VHDX has {} free at {}/nix/store but the new system needs {} more ({} paths); the previous boot generation is kept and still boots. Free space on the VHDX (files outside /nix, or a lower bootGenerations), then run `sudo wsl-storage-mount sync-boot`",
            human_bytes(free),
            view.boot_root().display(),
            human_bytes(bytes + ROOM_MARGIN),
            missing.len()
        )));
    }
    if !missing.is_empty() {
        log::info!(
            "sync-boot: copying {} of {} paths ({}) into the VHDX store",
            missing.len(),
            closure.len(),
            human_bytes(bytes)
        );
        let order = disk.topo_sorted(&missing)?;
        copy_in_batches(cfg, &disk, &disk_uri, &view.store_uri(), &order, bytes)?;
    }
    report.copied = missing.len();
    report.copied_bytes = bytes;
    let vhdx_db = NixDb::open_as(&vhdx_nix.join("var/nix"), &shown_db)
        .map_err(|e| sync_failed(format!("{e:#}")))?;
    let now_valid = vhdx_db.valid_of(closure.iter().map(String::as_str))?;
    if now_valid.len() != closure.len() {
        let lacking: Vec<&String> = closure.difference(&now_valid).take(5).collect();
        return Err(sync_failed(format!(
            "after the copy {} paths are still not valid in the VHDX store (first: {lacking:?}); the previous boot generation is kept",
            closure.len() - now_valid.len()
        )));
    }
    // 3. Everything the next start execs before activation resolves, checked
    // before the boot generation changes: a failure here keeps the
    // previous generation, as the message says.
    check_root_links(view.root(), &vhdx_nix, &shown_db)?;
    // WSL execs the entrypoint: it changes only once the checks passed.
    for (name, target) in &nixos_wsl {
        replace_link(&vhdx_nix.join(NIXOS_WSL_DIR), name, target)?;
    }

    // 4. The boot generation.
    if !req.closure_only {
        report.generation = Some(set_profile(&profiles, &system, ProfileOwner::Vhdx)?);
        let pruned = prune_generations(&profiles, cfg.boot_generations)?;
        // 5. Garbage: everything the kept roots do not reach.
        let roots = gc_roots(view.root(), &profiles)?;
        let live = vhdx_db
            .closure(roots.iter().map(String::as_str))
            .map_err(|e| {
                sync_failed(format!(
                    "{e:#}; the new generation is in place, nothing was collected"
                ))
            })?;
        let valid = vhdx_db.all_valid()?;
        let candidates: BTreeSet<String> = valid.difference(&live).cloned().collect();
        // Never delete the only copy: a path stays unless the disk store
        // has it both registered and really there (a registered path gone
        // from the disk's store/ makes the VHDX's copy the only one).
        let disk_store = store_dir.join("store");
        let on_disk: BTreeSet<String> = disk
            .valid_of(candidates.iter().map(String::as_str))?
            .into_iter()
            .filter(|p| {
                nixdb::store_name(p)
                    .is_some_and(|n| fs::symlink_metadata(disk_store.join(n)).is_ok())
            })
            .collect();
        let only_here = candidates.len() - on_disk.len();
        if only_here > 0 {
            log::info!(
                "sync-boot: keeping {only_here} unreachable paths in the VHDX store that the disk store lacks or has registered but not on its disk (their only copy)"
            );
        }
        // The dead set must be closed under referrers for Nix to delete
        // it: drop anything a kept path refers to (closure of what stays).
        let kept_extra: BTreeSet<String> = candidates.difference(&on_disk).cloned().collect();
        let keep = vhdx_db
            .closure(kept_extra.iter().map(String::as_str))
            .map_err(|e| {
                sync_failed(format!(
                    "{e:#}; the new generation is in place, nothing was collected"
                ))
            })?;
        let dead: Vec<String> = on_disk.difference(&keep).cloned().collect();
        report.freed_bytes = vhdx_db.nar_size(dead.iter().map(String::as_str))?;
        drop(vhdx_db);
        if !dead.is_empty() {
            log::info!(
                "sync-boot: removing {} paths ({}) no kept generation needs from the VHDX store ({} generation links dropped)",
                dead.len(),
                human_bytes(report.freed_bytes),
                pruned
            );
            for chunk in dead.chunks(1000) {
                if let Err(why) = nixcli::delete_paths(cfg, &view.store_uri(), chunk) {
                    // The new generation is complete and in place: a failed
                    // collection costs room, not a boot.
                    log::warn!("sync-boot: garbage collection of the VHDX store failed: {why}; the new generation is in place, run `sudo wsl-storage-mount sync-boot` again to retry");
                    report.freed_bytes = 0;
                    break;
                }
            }
            report.freed = dead.len();
        }
    } else {
        drop(vhdx_db);
    }

    log::info!(
        "sync-boot: {} {}: copied {} paths ({}), freed {} paths ({}), in {} ms",
        if req.closure_only {
            "closure of"
        } else {
            "boot generation is now"
        },
        match report.generation {
            Some(n) => format!("{system} (system-{n}-link)"),
            None => system.clone(),
        },
        report.copied,
        human_bytes(report.copied_bytes),
        report.freed,
        human_bytes(report.freed_bytes),
        started.elapsed().as_millis()
    );
    Ok(Exit::Success)
}

/// The lock that keeps two sync-boots apart. It lives in the run dir, but
/// a file planted there is not followed (O_NOFOLLOW) nor waited on (a FIFO
/// opens at once with O_NONBLOCK, then is refused by type).
fn lock(path: &Path) -> Result<Flock<File>> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let opened = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .mode(0o600)
        .open(path);
    let mut f = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(sync_failed(format!(
                "{} is a symlink (to {}), not the lock file sync-boot makes; nothing was changed. Remove it (`sudo rm {}`) and run sync-boot again",
                path.display(),
                fs::read_link(path).map_or("?".into(), |t| t.display().to_string()),
                path.display()
            )))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            // A FIFO with no reader refuses a non-blocking writer.
            return Err(not_a_lock_file(path, "a FIFO"));
        }
        Err(e) => return Err(e).with_context(|| format!("opening lock {}", path.display())),
    };
    let meta = f
        .metadata()
        .with_context(|| format!("inspecting lock {}", path.display()))?;
    if !meta.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if meta.file_type().is_fifo() {
            "a FIFO"
        } else {
            "not a regular file"
        };
        return Err(not_a_lock_file(path, what));
    }
    loop {
        match Flock::lock(f, FlockArg::LockExclusive) {
            Ok(l) => return Ok(l),
            Err((back, Errno::EINTR)) => f = back,
            Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }
}

fn not_a_lock_file(path: &Path, what: &str) -> anyhow::Error {
    sync_failed(format!(
        "{} is {what}, not the lock file sync-boot makes; nothing was changed. Remove it (`sudo rm {}`) and run sync-boot again",
        path.display(),
        path.display()
    ))
}

/// A NixOS system's toplevel is a directory with `init` (what /sbin/init
/// leads to) and `activate` (what the shim runs): anything else made the
/// boot generation would leave the VHDX unbootable.
fn check_is_nixos_system(store: &Path, system: &str) -> Result<()> {
    let Some(name) = nixdb::store_name(system) else {
        return Err(sync_failed(format!("{system} is not a /nix/store path")));
    };
    let top = store.join(name);
    let is_dir = fs::symlink_metadata(&top).is_ok_and(|m| m.is_dir());
    let lacking: Vec<&str> = ["init", "activate"]
        .into_iter()
        .filter(|f| !is_dir || fs::symlink_metadata(top.join(f)).is_err())
        .collect();
    if lacking.is_empty() {
        return Ok(());
    }
    Err(sync_failed(format!(
        "{system} is not a NixOS system ({}); making it the boot generation would leave the VHDX unbootable. Nothing was changed. Give the system's toplevel (config.system.build.toplevel, /run/current-system, or ./result of `nixos-rebuild build`)",
        if is_dir {
            format!("it has no {}", lacking.join(" or "))
        } else {
            "it is not a directory".to_string()
        }
    )))
}

/// SYSTEM as given: a store path, or a link to one (./result, a profile).
fn system_arg(p: &Path) -> Result<String> {
    let resolved = fs::canonicalize(p)
        .map_err(|e| fail(Exit::Config, format!("SYSTEM {}: {e}", p.display())))?;
    let s = resolved.to_string_lossy().into_owned();
    match store_path_of(&s) {
        Some(sp) if sp == s => Ok(s),
        _ => Err(fail(
            Exit::Config,
            format!(
                "SYSTEM {} resolves to {s}, which is not a top-level /nix/store path; give the system's toplevel (e.g. /run/current-system or ./result)",
                p.display()
            ),
        )),
    }
}

/// The store path at the start of `path` (/nix/store/<name>/... -> /nix/store/<name>).
fn store_path_of(path: &str) -> Option<String> {
    let rest = path.strip_prefix(nixdb::STORE_DIR)?.strip_prefix('/')?;
    let name = rest.split('/').next()?;
    let sp = format!("{}/{name}", nixdb::STORE_DIR);
    nixdb::store_name(&sp).is_some().then_some(sp)
}

/// Follow a profile link (`system` -> `system-7-link` -> /nix/store/...)
/// inside `dir`, never outside it.
pub fn resolve_profile(dir: &Path, name: &str) -> Result<String, String> {
    let mut cur = name.to_string();
    for _ in 0..10 {
        let link = dir.join(&cur);
        let target = fs::read_link(&link).map_err(|e| format!("{}: {e}", link.display()))?;
        let t = target.to_string_lossy().into_owned();
        if t.starts_with('/') {
            return match store_path_of(&t) {
                Some(sp) => Ok(sp),
                None => Err(format!(
                    "{} points to {t}, not into /nix/store",
                    link.display()
                )),
            };
        }
        if t.contains('/') {
            return Err(format!(
                "{} points to {t}, outside {}",
                link.display(),
                dir.display()
            ));
        }
        cur = t;
    }
    Err(format!("{}/{name}: too many links", dir.display()))
}

/// The generation numbers of the `system` profile in `profiles`.
fn generations(profiles: &Path) -> Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for entry in
        fs::read_dir(profiles).with_context(|| format!("reading {}", profiles.display()))?
    {
        let entry = entry.with_context(|| format!("reading {}", profiles.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("system-")
            .and_then(|r| r.strip_suffix("-link"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                out.push((n, name));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A symlink written atomically: a new link, then a rename over the old.
fn replace_link(dir: &Path, name: &str, target: &str) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = dir.join(name);
    if fs::read_link(&link).is_ok_and(|t| t == Path::new(target)) {
        return Ok(());
    }
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).with_context(|| format!("creating link {}", tmp.display()))?;
    fs::rename(&tmp, &link)
        .with_context(|| format!("renaming {} to {}", tmp.display(), link.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Whose `system` profile `set_profile` changes (for what it logs: the
/// helper's own paths, such as the boot view's, mean nothing to a user).
#[derive(Clone, Copy)]
pub(crate) enum ProfileOwner {
    Vhdx,
    DiskStore,
}

/// Point the `system` profile in `profiles` (the VHDX's, or the disk
/// store's after a heal) at `system`, as `nix-env --set` would: a new
/// `system-N-link`, then `system` -> it. Returns N. When the profile already
/// points there, nothing changes.
pub(crate) fn set_profile(profiles: &Path, system: &str, owner: ProfileOwner) -> Result<u64> {
    let gens = generations(profiles)?;
    if let Ok(current) = resolve_profile(profiles, "system") {
        if current == system {
            if let Ok(t) = fs::read_link(profiles.join("system")) {
                let t = t.to_string_lossy().into_owned();
                if let Some((n, _)) = gens.iter().find(|(_, name)| *name == t) {
                    match owner {
                        ProfileOwner::Vhdx => log::info!(
                            "sync-boot: the VHDX already boots {system} (system-{n}-link)"
                        ),
                        ProfileOwner::DiskStore => log::info!(
                            "the disk store's current system is already {system} (system-{n}-link)"
                        ),
                    }
                    return Ok(*n);
                }
            }
        }
    }
    let n = next_generation(profiles)?;
    let name = format!("system-{n}-link");
    replace_link(profiles, &name, system)?;
    replace_link(profiles, "system", &name)?;
    match owner {
        ProfileOwner::Vhdx => log::info!("sync-boot: VHDX profile system -> {name} -> {system}"),
        ProfileOwner::DiskStore => {
            log::info!("the disk store's profile system -> {name} -> {system}")
        }
    }
    Ok(n)
}

/// The number the next generation link gets. A `system-<u64::MAX>-link`
/// (planted, or a hand-made link) would make it wrap to 0 and generations
/// overwrite each other: refused, before anything changes.
fn next_generation(profiles: &Path) -> Result<u64> {
    let gens = generations(profiles)?;
    let Some((last, name)) = gens.last() else {
        return Ok(1);
    };
    last.checked_add(1).ok_or_else(|| {
        sync_failed(format!(
            "{} is the highest generation number there can be, so no new generation fits after it; nothing was changed. Renumber or remove that link (`sudo rm {}` if it is not the current one), then run sync-boot again",
            profiles.join(name).display(),
            profiles.join(name).display()
        ))
    })
}

/// Keep the newest `keep` generation links (and always the current one).
fn prune_generations(profiles: &Path, keep: u64) -> Result<usize> {
    let gens = generations(profiles)?;
    let current = fs::read_link(profiles.join("system"))
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cut = gens.len().saturating_sub(keep as usize);
    let mut dropped = 0;
    for (_, name) in &gens[..cut] {
        if *name == current {
            continue;
        }
        fs::remove_file(profiles.join(name)).with_context(|| {
            format!(
                "removing old generation link {}",
                profiles.join(name).display()
            )
        })?;
        dropped += 1;
    }
    Ok(dropped)
}

/// The roots of the VHDX store, decided here and nowhere else:
/// - the `system` generations kept in the VHDX's profile;
/// - what the root filesystem's links lead to (/sbin/init, /etc/static,
///   /bin/*, /usr/bin/*): the next start execs /sbin/init before the new
///   generation's activation rewrites it;
/// - the targets of /nix/nixos-wsl/* (WSL's entrypoint).
///
/// Not roots: the links in the VHDX's var/nix/gcroots (absolute links such
/// as gcroots/profiles -> /nix/var/nix/profiles resolve against the running
/// root, which is the disk store, not the VHDX), other profiles (users'
/// profiles live on the disk store), and running processes (they run from
/// the disk store). Paths only the VHDX has are kept by the caller anyway.
fn gc_roots(root: &Path, profiles: &Path) -> Result<BTreeSet<String>> {
    let mut roots = BTreeSet::new();
    for (_, name) in generations(profiles)? {
        match resolve_profile(profiles, &name) {
            Ok(p) => {
                roots.insert(p);
            }
            Err(e) => log::warn!("sync-boot: generation link {e}"),
        }
    }
    for (_, name) in root_link_targets(root)? {
        roots.insert(format!("{}/{name}", nixdb::STORE_DIR));
    }
    for (_, target) in nixos_wsl_links(&root.join("nix").join(NIXOS_WSL_DIR))? {
        if let Some(p) = store_path_of(&target) {
            roots.insert(p);
        }
    }
    Ok(roots)
}

/// The links in `dir` (/nix/nixos-wsl), name and target.
fn nixos_wsl_links(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_symlink()) {
            let target = fs::read_link(entry.path())
                .with_context(|| format!("reading link {}", entry.path().display()))?;
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                target.to_string_lossy().into_owned(),
            ));
        }
    }
    Ok(out)
}

/// Where a link on the root filesystem leads, resolved inside `root`:
/// Some(store name) when it reaches /nix/store/<name>, None when it leads
/// elsewhere, Err(why) when it dangles before reaching the store.
fn resolve_in_root(root: &Path, path: &str) -> Result<Option<String>, String> {
    let mut pending: Vec<String> = components(path);
    pending.reverse();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => cur.push(c),
        }
        if cur.len() == 3 && cur[0] == "nix" && cur[1] == "store" {
            return Ok(Some(cur[2].clone()));
        }
        let here = cur.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err(format!("/{path}: too many levels of links"));
                }
                let target =
                    fs::read_link(&here).map_err(|e| format!("{}: {e}", here.display()))?;
                let t = target.to_string_lossy().into_owned();
                cur.pop();
                if t.starts_with('/') {
                    cur.clear();
                }
                let mut more = components(&t);
                more.reverse();
                pending.extend(more);
            }
            Ok(_) => {}
            Err(_) => return Err(format!("/{} does not exist", cur.join("/"))),
        }
    }
    Ok(None)
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// The root-filesystem links that lead into /nix/store: (link, store name).
fn root_link_targets(root: &Path) -> Result<Vec<(String, String)>> {
    let mut links: Vec<String> = ROOT_LINKS.iter().map(|s| s.to_string()).collect();
    for dir in ROOT_LINK_DIRS {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                links.push(format!("{dir}/{}", entry.file_name().to_string_lossy()));
            }
        }
    }
    let mut out = Vec::new();
    for link in links {
        if fs::symlink_metadata(root.join(&link)).is_err() {
            continue;
        }
        if let Ok(Some(name)) = resolve_in_root(root, &link) {
            out.push((format!("/{link}"), name));
        }
    }
    Ok(out)
}

/// Every root-filesystem link into /nix/store resolves in the VHDX store
/// (valid in its database and present), or sync-boot fails naming them.
pub fn check_root_links(root: &Path, vhdx_nix: &Path, shown_db: &Path) -> Result<()> {
    let db = NixDb::open_as(&vhdx_nix.join("var/nix"), shown_db)
        .map_err(|e| sync_failed(format!("{e:#}")))?;
    let broken = broken_root_links(root, vhdx_nix, &db)?;
    if broken.is_empty() {
        return Ok(());
    }
    Err(sync_failed(format!(
        "these links on the root filesystem do not resolve in the VHDX store, so the next start of this instance could fail: {}. The previous boot generation is kept. Run `sudo wsl-storage-mount sync-boot` with the disk attached (it copies what they need), and do not restart the instance until it succeeds",
        broken.join(", ")
    )))
}

/// The root-filesystem links that do not resolve in the VHDX store, each
/// "link -> target" or "link: why".
fn broken_root_links(root: &Path, vhdx_nix: &Path, db: &NixDb) -> Result<Vec<String>> {
    let mut broken = Vec::new();
    for (link, name) in root_link_targets(root)? {
        let path = format!("{}/{name}", nixdb::STORE_DIR);
        let present = fs::symlink_metadata(vhdx_nix.join("store").join(&name)).is_ok();
        if !present || !db.is_valid(&path)? {
            broken.push(format!("{link} -> {path}"));
        }
    }
    for link in ROOT_LINKS {
        if let Err(why) = resolve_in_root(root, link) {
            if fs::symlink_metadata(root.join(link)).is_ok() {
                broken.push(format!("/{link}: {why}"));
            }
        }
    }
    Ok(broken)
}

/// Copy `order` (references first) in batches, with progress: a bar on a
/// terminal, a line per batch in the journal.
fn copy_in_batches(
    cfg: &Config,
    disk: &NixDb,
    from: &str,
    to: &str,
    order: &[String],
    total_bytes: u64,
) -> Result<()> {
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(total_bytes);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {msg} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let started = Instant::now();
    let mut done_paths = 0;
    let mut done_bytes = 0u64;
    let mut batch: Vec<String> = Vec::new();
    let mut batch_bytes = 0u64;
    for (i, path) in order.iter().enumerate() {
        batch.push(path.clone());
        batch_bytes += disk.nar_size([path.as_str()])?;
        let last = i + 1 == order.len();
        if batch.len() < BATCH_PATHS && batch_bytes < BATCH_BYTES && !last {
            continue;
        }
        nixcli::copy_paths(cfg, from, to, &batch).map_err(|why| {
            sync_failed(format!(
                "{why}; the VHDX's previous boot generation is kept and still boots (paths copied so far are valid but unused). If the VHDX is full, free space on it, then run `sudo wsl-storage-mount sync-boot`"
            ))
        })?;
        done_paths += batch.len();
        done_bytes += batch_bytes;
        match &bar {
            Some(b) => {
                b.set_position(done_bytes);
                b.set_message(format!("{done_paths}/{} paths", order.len()));
            }
            None => log::info!(
                "sync-boot: {done_paths}/{} paths, {}/{} ({} s)",
                order.len(),
                human_bytes(done_bytes),
                human_bytes(total_bytes),
                started.elapsed().as_secs()
            ),
        }
        batch.clear();
        batch_bytes = 0;
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(())
}

/// The VHDX's boot generation next to the disk's current system, for
/// `status` and `doctor`.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootStatus {
    /// What the VHDX's `system` profile points to: what the next start boots.
    pub vhdx_system: Option<String>,
    /// The disk store's `system` profile: the last deployment.
    pub disk_system: Option<String>,
    pub in_step: bool,
    /// Valid paths in the VHDX store and the sum of their sizes.
    pub vhdx_paths: Option<usize>,
    pub vhdx_store_bytes: Option<u64>,
    /// Why something could not be read.
    pub error: Option<String>,
    /// What would break the next start or stop the next sync-boot: root
    /// links that do not resolve in the VHDX store, a generation number
    /// that cannot grow, a lock file that is not one.
    pub hazards: Vec<String>,
}

pub fn boot_status(cfg: &Config, boot_root: &Path) -> BootStatus {
    let mut st = BootStatus::default();
    if let Some(dir) = cfg.store_dir() {
        st.disk_system = resolve_profile(&Path::new(&dir).join("var/nix/profiles"), "system").ok();
    }
    let vhdx = BootView::in_own_thread(boot_root, |view| {
        let nix = view.nix_dir();
        view.check_nix_layout().map_err(anyhow::Error::msg)?;
        let system = resolve_profile(&nix.join("var/nix/profiles"), "system").ok();
        let db = NixDb::open_as(&nix.join("var/nix"), &view.shown_db())?;
        let mut hazards: Vec<String> = broken_root_links(view.root(), &nix, &db)?
            .into_iter()
            .map(|b| format!("{b}: does not resolve in the VHDX store, so the next start of this instance could fail; run `sudo wsl-storage-mount sync-boot` (it copies what the links need) or repair the link"))
            .collect();
        if let Err(e) = next_generation(&nix.join("var/nix/profiles")) {
            hazards.push(format!("{e:#}"));
        }
        Ok((system, db.all_valid()?.len(), db.total_nar_size()?, hazards))
    });
    let lock = state::run_dir().join("sync-boot.lock");
    if let Ok(m) = fs::symlink_metadata(&lock) {
        if !m.is_file() {
            st.hazards.push(format!(
                "{} is not a regular file (a symlink, a FIFO?): sync-boot refuses to run until it is removed (`sudo rm {}`)",
                lock.display(),
                lock.display()
            ));
        }
    }
    match vhdx {
        Ok((system, paths, bytes, hazards)) => {
            st.vhdx_system = system;
            st.vhdx_paths = Some(paths);
            st.vhdx_store_bytes = Some(bytes);
            st.hazards.extend(hazards);
        }
        Err(e) => st.error = Some(format!("{e:#}")),
    }
    st.in_step = st.vhdx_system.is_some() && st.vhdx_system == st.disk_system;
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let name = "lvqa7a9v9yfvwfjhmainkplbl41x4bcz-toy-lib";
        fs::create_dir_all(r.join("nix/store").join(name).join("bin")).unwrap();
        fs::create_dir_all(r.join("sbin")).unwrap();
        fs::create_dir_all(r.join("etc")).unwrap();
        symlink(format!("/nix/store/{name}/bin/init"), r.join("sbin/init")).unwrap();
        // Relative, through another link.
        symlink("../sbin/init", r.join("etc/static")).unwrap();
        assert_eq!(resolve_in_root(r, "sbin/init"), Ok(Some(name.into())));
        assert_eq!(resolve_in_root(r, "etc/static"), Ok(Some(name.into())));
        // A link out of the store is not followed into the host.
        symlink("/etc/passwd", r.join("etc/other")).unwrap();
        assert!(resolve_in_root(r, "etc/other").is_err());
        // A loop ends.
        symlink("loop2", r.join("etc/loop1")).unwrap();
        symlink("loop1", r.join("etc/loop2")).unwrap();
        assert!(resolve_in_root(r, "etc/loop1").is_err());
    }

    #[test]
    fn profile_links_never_leave_the_profile_dir() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let sp = "/nix/store/lvqa7a9v9yfvwfjhmainkplbl41x4bcz-toy-lib";
        symlink(sp, p.join("system-3-link")).unwrap();
        symlink("system-3-link", p.join("system")).unwrap();
        assert_eq!(resolve_profile(p, "system"), Ok(sp.to_string()));
        symlink("../../etc", p.join("evil")).unwrap();
        assert!(resolve_profile(p, "evil").is_err());
        assert_eq!(generations(p).unwrap(), vec![(3, "system-3-link".into())]);
    }
}
