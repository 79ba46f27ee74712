//! The boot view: the VHDX's own /nix, whether or not the disk store is
//! bound over /nix.
//!
//! NixOS-WSL boots from the root filesystem's /nix before any unit of ours
//! runs, so the store lifecycle must read and write that /nix while the
//! running system sees the disk's. A bind of `/` without MS_REC carries the
//! root filesystem alone: the /nix bind (and the read-only bind of
//! /nix/store the shim makes) stay behind. The bind is made inside a private
//! mount namespace of this process: nothing is left mounted when it exits,
//! and no other process ever sees it.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::exit::{fail, Exit};
use crate::state;

#[derive(Debug)]
pub struct BootView {
    /// Where the view of the boot root is mounted.
    root: PathBuf,
    /// The boot root it shows (for messages).
    boot_root: PathBuf,
}

impl BootView {
    /// Bind `boot_root` (normally "/") without its submounts at a temporary
    /// directory, inside this process's own mount namespace. Children
    /// started afterwards (nix-store) see it too.
    pub fn open(boot_root: &Path) -> Result<BootView> {
        let meta = fs::symlink_metadata(boot_root)
            .with_context(|| format!("--boot-root {}", boot_root.display()))?;
        if !boot_root.is_absolute() || !meta.is_dir() {
            return Err(fail(
                Exit::Config,
                format!(
                    "--boot-root {}: must be an absolute path to a directory (not a symlink); it is the root filesystem NixOS-WSL boots from, / by default",
                    boot_root.display()
                ),
            ));
        }
        // A namespace of our own, with every mount private in it, so that
        // the bind below propagates nowhere (the host's / is usually shared).
        unshare(CloneFlags::CLONE_NEWNS)
            .context("unshare(CLONE_NEWNS) for a private view of the boot root (needs root)")?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .context("making the mounts of the private namespace private")?;

        let parent = state::run_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        let template = parent.join("boot-view.XXXXXX");
        let root = nix::unistd::mkdtemp(&template).with_context(|| {
            format!(
                "creating a directory for the boot view in {}",
                parent.display()
            )
        })?;
        if let Err(e) = mount(
            Some(boot_root),
            &root,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            let _ = fs::remove_dir(&root);
            return Err(e).with_context(|| {
                format!(
                    "binding {} (without submounts) at {}",
                    boot_root.display(),
                    root.display()
                )
            });
        }
        log::debug!(
            "boot view: {} without submounts at {}",
            boot_root.display(),
            root.display()
        );
        Ok(BootView {
            root,
            boot_root: boot_root.to_path_buf(),
        })
    }

    /// Run `f` with a view of `boot_root` in a thread of its own: the
    /// private mount namespace is that thread's alone (children it starts
    /// inherit it), and the caller's mounts stay where everyone sees them.
    /// For commands that mount for the system (`mount`) or must not change
    /// their own view (`status`).
    pub fn in_own_thread<T: Send>(
        boot_root: &Path,
        f: impl FnOnce(&BootView) -> Result<T> + Send,
    ) -> Result<T> {
        std::thread::scope(|s| {
            s.spawn(|| f(&BootView::open(boot_root)?))
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the boot view's thread panicked")))
        })
    }

    /// The view of the boot root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The boot root it shows, as given.
    pub fn boot_root(&self) -> &Path {
        &self.boot_root
    }

    /// The VHDX's /nix.
    pub fn nix_dir(&self) -> PathBuf {
        self.root.join("nix")
    }

    /// The VHDX store for `nix-store --store`: a chroot store whose logical
    /// store dir is /nix/store.
    pub fn store_uri(&self) -> String {
        crate::store::nixcli::root_store_uri(&self.root)
    }

    /// The VHDX store as the user reaches it (for a command in a message).
    pub fn shown_store_uri(&self) -> String {
        crate::store::nixcli::root_store_uri(&self.boot_root)
    }

    /// The VHDX's database as the user sees it: under `--boot-root`, not
    /// the view's temporary path (gone once the helper exits).
    pub fn shown_db(&self) -> PathBuf {
        self.boot_root.join("nix/var/nix/db/db.sqlite")
    }

    /// Check that the VHDX's /nix and the directories the store lifecycle
    /// reads and writes in it are real directories inside the root: a
    /// `nix/var` or `nix/nixos-wsl` that is a link would carry writes
    /// (profiles, registrations, the entrypoint) out of the VHDX. Absent
    /// optional ones are fine.
    pub fn check_nix_layout(&self) -> Result<(), String> {
        let required = [
            "nix",
            "nix/store",
            "nix/var",
            "nix/var/nix",
            "nix/var/nix/db",
            "nix/var/nix/profiles",
        ];
        let optional = [
            "nix/nixos-wsl",
            "nix/var/log",
            "nix/var/log/nix",
            "nix/var/nix/gcroots",
            "nix/var/nix/temproots",
        ];
        for (rel, needed) in required
            .iter()
            .map(|r| (r, true))
            .chain(optional.iter().map(|r| (r, false)))
        {
            let p = self.root.join(rel);
            let shown = self.boot_root.join(rel);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(format!(
                        "{} is a symlink (to {}); the VHDX's /nix must be real directories inside {}, or writes would land outside it. Nothing was changed: replace the link with the directory it stands for",
                        shown.display(),
                        fs::read_link(&p).map_or("?".into(), |t| t.display().to_string()),
                        self.boot_root.display()
                    ))
                }
                Ok(_) => {
                    return Err(format!(
                        "{} is not a directory: {} is not the root filesystem of a NixOS-WSL instance (its VHDX). Nothing was changed",
                        shown.display(),
                        self.boot_root.display()
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !needed => {}
                Err(_) => {
                    return Err(format!(
                        "{} is missing: {} is not the root filesystem of a NixOS-WSL instance (its VHDX). Nothing was changed",
                        shown.display(),
                        self.boot_root.display()
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Drop for BootView {
    fn drop(&mut self) {
        // The namespace goes away with the process anyway; unmounting now
        // lets the empty directory be removed.
        if umount2(&self.root, MntFlags::MNT_DETACH).is_ok() {
            let _ = fs::remove_dir(&self.root);
        }
    }
}
