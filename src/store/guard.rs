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

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

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
        Ok(m) if m.is_file() => Ok(()),
        _ => Err(unsafe_store(format!(
            "{} is not a regular file, so {} has no Nix database; refusing to bind it. Next: {}",
            db.display(),
            dir.display(),
            migrate_hint(dir)
        ))),
    }
}

/// The closure of `system` in the store at `dir`, each path present under
/// `dir/store`. Ok(None): `system` is not valid in that database.
fn closure_present(dir: &Path, system: &str) -> Result<Option<usize>> {
    let db = NixDb::open(&dir.join("var/nix")).map_err(|e| unsafe_store(format!("{e:#}")))?;
    if !db.is_valid(system)? {
        return Ok(None);
    }
    let closure = db.closure([system])?;
    // One read of the store directory instead of an lstat per path: the
    // same answer (the entry exists), a fraction of the syscalls.
    let store = dir.join("store");
    let present: HashSet<std::ffi::OsString> = fs::read_dir(&store)
        .map_err(|e| unsafe_store(format!("reading {}: {e}", store.display())))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    let mut missing = Vec::new();
    for path in &closure {
        let Some(name) = nixdb::store_name(path) else {
            return Err(unsafe_store(format!(
                "the database {} lists \"{path}\" in the closure of {system}, which is not a plain /nix/store path; refusing to trust it",
                db.path().display()
            )));
        };
        if !present.contains(std::ffi::OsStr::new(name)) {
            missing.push(path.as_str());
        }
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
            Ok(Verified { closure: n, healed })
        }
        None => Err(unsafe_store(format!(
            "after copying {healed} paths from the VHDX, {system} is still not valid in {}; refusing to bind it",
            dir.display()
        ))),
    }
}

/// Copy the booted system's closure (what the disk lacks) from the VHDX
/// store into the disk store, in the boot view's own thread (`mount`'s own
/// mounts stay where everyone sees them).
fn heal(cfg: &Config, dir: &Path, system: &str, boot_root: &Path) -> Result<usize> {
    let to = nixcli::nix_dir_store_uri(dir).map_err(unsafe_store)?;
    BootView::in_own_thread(boot_root, |view| {
        let vhdx = NixDb::open(&view.nix_dir().join("var/nix")).map_err(|e| {
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
        let closure = vhdx.closure([system])?;
        let have =
            NixDb::open(&dir.join("var/nix"))?.valid_of(closure.iter().map(String::as_str))?;
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
        nixcli::copy_paths(cfg, &view.store_uri(), &to, &missing).map_err(|why| {
            unsafe_store(format!(
                "heal failed: {why}; /nix stays the VHDX store. Check free space on {} (`df -h {}`)",
                cfg.mount_point, cfg.mount_point
            ))
        })?;
        Ok(missing.len())
    })
}
