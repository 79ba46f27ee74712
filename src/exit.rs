//! Exit codes (documented in the README) and the error type that carries one.

use std::fmt;

/// The helper's documented exit codes. Other parts of the project (the
/// systemd units, the VM tests, `doctor`) rely on these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // 7 and 8: sync-boot and migrate, which land next
pub enum Exit {
    /// Everything done.
    Success = 0,
    /// An unexpected error (I/O, a bug, something not foreseen).
    Unexpected = 1,
    /// Bad config or usage.
    Config = 2,
    /// The device did not appear within `waitTimeout`.
    DeviceMissing = 3,
    /// No filesystem, the wrong one, or errors `fsck -p` could not repair.
    Filesystem = 4,
    /// mount(2) failed, the mount point is taken, or the bind is absent.
    Mount = 5,
    /// The store under `nixStoreSubdir` is not safe to bind over /nix (its
    /// layout, database, closure, entry types or submounts; a heal that
    /// could not fix it). `migrate`: the copy failed verification, or the
    /// source holds what no copy may carry (a tree deeper than
    /// `copy::MAX_DEPTH`, a database that is a link or a FIFO).
    UnsafeStore = 6,
    /// `sync-boot` failed; the VHDX's previous boot generation is kept (also
    /// when SYSTEM is not a NixOS system, the VHDX's /nix is linked out of
    /// its root, or the lock file is not one).
    SyncFailed = 7,
    /// `migrate`: not enough room on the disk for the copy (found by the
    /// room check before anything is written, or, should the estimate
    /// fall short, by the copy itself: the `.partial` stays for
    /// `--resume`); `bench`: not enough room for its files on one side.
    NoRoom = 8,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// An error that ends the program with a specific exit code. The message is
/// the last line the user sees: what failed, on which path, what to do next.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Build an `anyhow::Error` that exits with `exit`.
pub fn fail(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        exit,
        message: message.into(),
    })
}

/// The exit code for an error: the first `Failure` in its chain, else 1.
pub fn exit_of(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Failure>())
        .map_or(Exit::Unexpected, |f| f.exit)
}
