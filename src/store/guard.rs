//! The store guard: is `mountPoint/nixStoreSubdir` safe to put over /nix?
//! And the heal: when it lacks the booted system but the VHDX has it (a
//! switch done while the disk was missing, with onMissing = "fallback"),
//! copy that closure onto the disk first.
//!
//! After the bind every new exec resolves in the new /nix, so the store
//! there must hold the whole closure of the booted system. Safe to bind:
//! - `store/`, `var/`, `var/nix/`, `var/nix/db/` are real directories (no
//!   symlink into another instance's dir);
//! - the booted system is a valid path in that store's own database (so,
//!   by Nix's closure invariant, its whole closure is registered);
//! - every path of that closure, read from the same database, exists
//!   under `store/`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::space::human_bytes;
use crate::store::bootview::BootView;
use crate::store::nixcli;
use crate::store::nixdb::{self, NixDb};

pub const BOOTED_SYSTEM: &str = "/run/booted-system";
/// How many missing paths a refusal names.
const SHOW_MISSING: usize = 5;

/// What the guard found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Paths in the booted system's closure.
    pub closure: usize,
    /// Paths the heal copied from the VHDX first (0: none needed).
    pub healed: usize,
}

fn unsafe_store(msg: String) -> anyhow::Error {
    fail(Exit::UnsafeStore, msg)
}

fn migrate_hint(dir: &Path) -> String {
    format!(
        "put this instance's store there with `sudo wsl-storage-mount migrate` (it copies the VHDX's /nix into {} and verifies it), then restart wsl-storage-mount",
        dir.display()
    )
}

/// The booted system's store path, read from the /run/booted-system link.
pub fn booted_system() -> Result<String> {
    let target = fs::read_link(BOOTED_SYSTEM).map_err(|e| {
        unsafe_store(format!(
            "cannot read {BOOTED_SYSTEM} ({e}); without the booted system the store cannot be verified, so /nix stays as it is"
        ))
    })?;
    let target = target.to_string_lossy().into_owned();
    if nixdb::store_name(&target).is_none() {
        return Err(unsafe_store(format!(
            "{BOOTED_SYSTEM} points to \"{target}\", which is not a /nix/store path; refusing to trust it"
        )));
    }
    Ok(target)
}

/// The directories a store needs, each a real directory, not a symlink.
fn check_layout(dir: &Path) -> Result<()> {
    for sub in ["", "store", "var", "var/nix", "var/nix/db"] {
        let p = if sub.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(sub)
        };
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_store(format!(
                    "{} is a symlink (to {}); a store under another name could be another instance's. Refusing to bind {}: replace the link with the directory itself",
                    p.display(),
                    fs::read_link(&p).map_or("?".into(), |t| t.display().to_string()),
                    dir.display()
                )));
            }
            _ => {
                return Err(unsafe_store(format!(
                    "{} is not a directory, so {} is not a Nix store; refusing to bind it. Next: {}",
                    p.display(),
                    dir.display(),
                    migrate_hint(dir)
                )));
            }
        }
    }
    let db = dir.join("var/nix/db/db.sqlite");
    match fs::symlink_metadata(&db) {
        Ok(m) if m.is_file() => {}
        _ => {
            return Err(unsafe_store(format!(
            "{} is not a regular file, so {} has no Nix database; refusing to bind it. Next: {}",
            db.display(),
            dir.display(),
            migrate_hint(dir)
        )))
        }
    }
    check_no_submounts(dir)
}

/// The /nix bind (nix.mount) is not recursive: a filesystem mounted below
/// the store's dir (on store/, var/nix/db, a store path) is not carried
/// over, so after the bind /nix would show the empty directory under it.
/// Refused rather than bound recursively: a recursive bind would also carry
/// whatever else someone mounted there, and the store must be one
/// filesystem for Nix's hard links (.links) and renames to work.
///
/// A bind of a directory onto itself (the same filesystem and the same
/// directory in it) is not refused: the bind over /nix shows the very same
/// files under it. That is what the marker's read-only /nix/store is, seen
/// from the storage mount when it propagates there (the boot twin's
/// `restart` scenario: a restart of the helper on a running system).
fn check_no_submounts(dir: &Path) -> Result<()> {
    let mounts = crate::mountinfo::read()
        .map_err(|e| unsafe_store(format!("reading /proc/self/mountinfo: {e}")))?;
    // The mount `dir` is on: the closest mount point above it.
    let host = mounts
        .iter()
        .filter(|m| dir.starts_with(&m.mount_point) && m.mount_point != dir)
        .max_by_key(|m| m.mount_point.as_os_str().len());
    let binds_itself = |m: &crate::mountinfo::MountEntry| {
        host.is_some_and(|h| {
            (h.major, h.minor) == (m.major, m.minor)
                && m.mount_point
                    .strip_prefix(&h.mount_point)
                    .is_ok_and(|rel| m.root == h.root.join(rel))
        })
    };
    let below: Vec<String> = mounts
        .iter()
        .filter(|m| m.mount_point != dir && m.mount_point.starts_with(dir))
        .filter(|m| !binds_itself(m))
        .map(|m| m.mount_point.display().to_string())
        .collect();
    if below.is_empty() {
        return Ok(());
    }
    Err(unsafe_store(format!(
        "{} is a mount point of its own below the store {}; the bind over /nix does not carry submounts, so /nix would show the empty directory under it. Refusing to bind: unmount it (`umount {}`) and keep the whole store on the one filesystem of {}",
        below.join(", "),
        dir.display(),
        below[0],
        dir.display()
    )))
}

/// The closure of `system` in the store at `dir`, each path present under
/// `dir/store`. Ok(None): `system` is not valid in that database.
fn closure_present(dir: &Path, system: &str) -> Result<Option<usize>> {
    let db = NixDb::open(&dir.join("var/nix")).map_err(|e| unsafe_store(format!("{e:#}")))?;
    if !db
        .is_valid(system)
        .map_err(|e| unsafe_store(format!("{e:#}")))?
    {
        return Ok(None);
    }
    let closure = db
        .closure([system])
        .map_err(|e| unsafe_store(format!("{e:#}")))?;
    // One read of the store directory instead of an lstat per path: the
    // same answer (the entry exists, and its type from the directory entry,
    // which ext4 records), a fraction of the syscalls.
    let store = dir.join("store");
    let mut present: HashMap<std::ffi::OsString, fs::FileType> = HashMap::new();
    for entry in fs::read_dir(&store)
        .map_err(|e| unsafe_store(format!("reading {}: {e}", store.display())))?
    {
        let entry = entry.map_err(|e| unsafe_store(format!("reading {}: {e}", store.display())))?;
        let kind = entry
            .file_type()
            .map_err(|e| unsafe_store(format!("inspecting {}: {e}", entry.path().display())))?;
        present.insert(entry.file_name(), kind);
    }
    // What the bind shows must be what Nix registered: the system a real
    // directory (init, activate, sw inside), every path a directory, file or
    // symlink (a NAR holds nothing else). A FIFO or socket there is not a
    // store path, and a symlink toplevel leads out of the store.
    match present.get(std::ffi::OsStr::new(nixdb::store_name(system).unwrap_or(""))) {
        Some(k) if k.is_dir() => {}
        Some(k) => {
            return Err(unsafe_store(format!(
                "the booted system {system} is {} in {}/store, not a directory: the bind would show something else than the registered system. Refusing to bind. Next: {}",
                kind_name(k),
                dir.display(),
                migrate_hint(dir)
            )))
        }
        None => {}
    }
    let mut wrong = Vec::new();
    let mut missing = Vec::new();
    for path in &closure {
        let Some(name) = nixdb::store_name(path) else {
            return Err(unsafe_store(format!(
                "the database {} lists \"{path}\" in the closure of {system}, which is not a plain /nix/store path; refusing to trust it",
                db.path().display()
            )));
        };
        match present.get(std::ffi::OsStr::new(name)) {
            None => missing.push(path.as_str()),
            Some(k) if !(k.is_dir() || k.is_file() || k.is_symlink()) => {
                wrong.push(format!("{path} ({})", kind_name(k)))
            }
            Some(_) => {}
        }
    }
    if !wrong.is_empty() {
        return Err(unsafe_store(format!(
            "{} of the closure of {system} in {}/store are not what a store path can be (a directory, file or symlink): {}; refusing to bind. Remove them and run `nix-store --store '{}' --verify --repair`, or {}",
            wrong.len(),
            dir.display(),
            wrong.iter().take(SHOW_MISSING).cloned().collect::<Vec<_>>().join(", "),
            nixcli::nix_dir_store_uri(dir).unwrap_or_default(),
            migrate_hint(dir)
        )));
    }
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(SHOW_MISSING).copied().collect();
        return Err(unsafe_store(format!(
            "{} of {} paths in the closure of {system} are registered in {} but missing from {}/store (first: {}); the store was damaged (deleted by hand?). Binding it over /nix would break the running system. Next: `nix-store --store '{}' --verify --repair`, or {}",
            missing.len(),
            closure.len(),
            db.path().display(),
            dir.display(),
            shown.join(", "),
            nixcli::nix_dir_store_uri(dir).unwrap_or_default(),
            migrate_hint(dir)
        )));
    }
    Ok(Some(closure.len()))
}

fn kind_name(k: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if k.is_symlink() {
        "a symlink"
    } else if k.is_fifo() {
        "a FIFO"
    } else if k.is_socket() {
        "a socket"
    } else if k.is_block_device() || k.is_char_device() {
        "a device node"
    } else if k.is_file() {
        "a regular file"
    } else {
        "not a directory"
    }
}

/// The guard's check of the store at `dir` for `system`, without the heal:
/// the layout, `system` valid in that store's database, its closure present
/// under `store/`. Ok(None): not valid there. (migrate verifies its copy
/// with this before the rename.)
pub fn check_store(dir: &Path, system: &str) -> Result<Option<usize>> {
    check_layout(dir)?;
    closure_present(dir, system)
}

/// Verify the store, healing it from the VHDX when it lacks the booted
/// system. `boot_root` is the root filesystem NixOS-WSL boots from.
pub fn verify(cfg: &Config, boot_root: &Path) -> Result<Verified> {
    let Some(dir) = cfg.store_dir() else {
        return Err(fail(Exit::Config, "nixStoreSubdir is not set"));
    };
    let dir = PathBuf::from(dir);
    check_layout(&dir)?;
    let system = booted_system()?;
    if let Some(n) = closure_present(&dir, &system)? {
        log::info!(
            "store {} holds the booted system {system}: {n} paths, valid in its database and present",
            dir.display()
        );
        return Ok(Verified {
            closure: n,
            healed: 0,
        });
    }
    log::warn!(
        "the booted system {system} is not valid in the store {} (deployed while the disk was missing?); healing it from the VHDX store",
        dir.display()
    );
    let healed = heal(cfg, &dir, &system, boot_root)?;
    match closure_present(&dir, &system)? {
        Some(n) => {
            log::info!(
                "healed: copied {healed} paths from the VHDX into {}; the booted system's {n} paths are valid and present",
                dir.display()
            );
            profile_to_booted(&dir, &system)?;
            Ok(Verified { closure: n, healed })
        }
        None => Err(unsafe_store(format!(
            "after copying {healed} paths from the VHDX, {system} is still not valid in {}; refusing to bind it",
            dir.display()
        ))),
    }
}

/// After a heal, the booted system (deployed while the disk was missing:
/// the VHDX's boot generation) becomes the disk store's current system too,
/// as `nix-env --set` makes it: otherwise the disk's profile still names the
/// generation before, `status` says the two are out of step, and the
/// `sync-boot` it advises would make the VHDX boot that older one, undoing
/// the deployment. Found by the boot twin's heal scenario.
fn profile_to_booted(dir: &Path, system: &str) -> Result<()> {
    let profiles = dir.join("var/nix/profiles");
    match fs::symlink_metadata(&profiles) {
        Ok(meta) if meta.is_dir() => {
            use crate::store::sync::{set_profile, ProfileOwner};
            set_profile(&profiles, system, ProfileOwner::DiskStore)?;
            Ok(())
        }
        Ok(_) => Err(unsafe_store(format!(
            "{} is not a directory; the disk store's profiles must be one (a link there is refused)",
            profiles.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::warn!(
                "{} is missing: the healed system is not the disk store's current system; `nixos-rebuild boot` makes it so",
                profiles.display()
            );
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", profiles.display())),
    }
}

/// Copy the booted system's closure (what the disk lacks) from the VHDX
/// store into the disk store, in the boot view's own thread (`mount`'s own
/// mounts stay where everyone sees them).
fn heal(cfg: &Config, dir: &Path, system: &str, boot_root: &Path) -> Result<usize> {
    let to = nixcli::nix_dir_store_uri(dir).map_err(unsafe_store)?;
    BootView::in_own_thread(boot_root, |view| {
        let shown = view.shown_db();
        let vhdx = NixDb::open_as(&view.nix_dir().join("var/nix"), &shown).map_err(|e| {
            unsafe_store(format!(
                "{e:#}; the VHDX store cannot be read, so the disk store cannot be healed"
            ))
        })?;
        if !vhdx.is_valid(system)? {
            return Err(unsafe_store(format!(
                "the booted system {system} is valid neither in the disk store {} nor in the VHDX store; refusing to bind. Next: {}",
                dir.display(),
                migrate_hint(dir)
            )));
        }
        let closure = vhdx
            .closure([system])
            .map_err(|e| unsafe_store(format!("{e:#}")))?;
        let have = NixDb::open(&dir.join("var/nix"))
            .and_then(|db| db.valid_of(closure.iter().map(String::as_str)))
            .map_err(|e| unsafe_store(format!("{e:#}")))?;
        let missing: Vec<String> = closure.difference(&have).cloned().collect();
        let bytes = vhdx.nar_size(missing.iter().map(String::as_str))?;
        drop(vhdx);
        log::info!(
            "heal: copying {} of {} paths ({}) from the VHDX store into {}",
            missing.len(),
            closure.len(),
            human_bytes(bytes),
            dir.display()
        );
        // The VHDX must hold every path it is to give: a path registered
        // there but gone from its disk would make the import fail half way.
        let vhdx_store = view.nix_dir().join("store");
        let absent: Vec<&String> = missing
            .iter()
            .filter(|p| {
                nixdb::store_name(p)
                    .is_none_or(|n| fs::symlink_metadata(vhdx_store.join(n)).is_err())
            })
            .collect();
        if !absent.is_empty() {
            return Err(unsafe_store(format!(
                "heal impossible: {} of the {} paths the disk store lacks are registered in {} but missing from the VHDX's {}/nix/store too (first: {}); neither store holds the booted system whole. /nix stays the VHDX store. Next: {}",
                absent.len(),
                missing.len(),
                shown.display(),
                view.boot_root().display(),
                absent.iter().take(SHOW_MISSING).map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                migrate_hint(dir)
            )));
        }
        nixcli::copy_paths(cfg, &view.store_uri(), &to, &missing).map_err(|why| {
            let full = crate::space::free_bytes(Path::new(&cfg.mount_point))
                .is_ok_and(|free| free < bytes.saturating_add(64 << 20));
            let next = if full {
                format!(
                    "the disk has too little room for {}: free space on {} (`df -h {}`)",
                    human_bytes(bytes),
                    cfg.mount_point,
                    cfg.mount_point
                )
            } else {
                format!(
                    "the output above says what nix-store could not do; `nix-store --store '{}' --verify` checks the VHDX store",
                    view.shown_store_uri()
                )
            };
            unsafe_store(format!(
                "heal failed: {why}; /nix stays the VHDX store. Next: {next}"
            ))
        })?;
        Ok(missing.len())
    })
}
