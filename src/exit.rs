//! Exit codes and the error type that carries one. The texts here are the
//! documentation: `--help`, the man page and docs/commands.md are generated
//! from them.

use std::fmt;

/// The helper's documented exit codes. Other parts of the project (the
/// systemd units, the VM tests, `doctor`) rely on these numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Every code, in order. A new code goes here too: the generated
    /// documentation lists what this lists.
    pub const ALL: [Exit; 9] = [
        Exit::Success,
        Exit::Unexpected,
        Exit::Config,
        Exit::DeviceMissing,
        Exit::Filesystem,
        Exit::Mount,
        Exit::UnsafeStore,
        Exit::SyncFailed,
        Exit::NoRoom,
    ];

    pub fn code(self) -> i32 {
        self as i32
    }

    /// One line for `--help`.
    pub fn summary(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Unexpected => "unexpected error",
            Exit::Config => "bad config or usage",
            Exit::DeviceMissing => "device not found within waitTimeout",
            Exit::Filesystem => {
                "no filesystem, the wrong one, a partitioned or ambivalent disk, or fsck failed"
            }
            Exit::Mount => {
                "mount failed, the mount point is taken, or its path has a symlink or a file"
            }
            Exit::UnsafeStore => "store not safe to bind over /nix",
            Exit::SyncFailed => "sync-boot failed; the previous boot generation is kept",
            Exit::NoRoom => "migrate, bench: not enough room on the disk",
        }
    }

    /// The whole meaning, in Markdown, for docs/commands.md and the man page.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Success => {
                "success (for `mount` also \"degraded\" with `onMissing = \"fallback\"`)"
            }
            Exit::Unexpected => {
                "unexpected error (`status`: not everything is as configured; `doctor`: a check failed)"
            }
            Exit::Config => "bad config or usage",
            Exit::DeviceMissing => "device not found within `waitTimeout`",
            Exit::Filesystem => {
                "no filesystem, the wrong one, a partitioned disk, two signatures, a UUID/LABEL that does not match, errors `fsck -p` could not repair, or fsck past `fsckTimeout`"
            }
            Exit::Mount => {
                "mount failed, the mount point is taken by something else, a symlink or a file in `mountPoint`'s path or in an instance dir's place; `mark`: the bind is absent (with `onMissing = \"block\"`)"
            }
            Exit::UnsafeStore => {
                "the store under `nixStoreSubdir` is not safe to bind over `/nix` (and the heal from the VHDX could not fix it); `migrate`: the copy failed verification"
            }
            Exit::SyncFailed => {
                "`sync-boot` failed; the VHDX's previous boot generation is kept and still boots"
            }
            Exit::NoRoom => {
                "not enough room: `migrate` on the disk (nothing was copied); `bench` on one side (nothing was written)"
            }
        }
    }

    /// The exit codes as `--help` shows them after the commands.
    pub fn help_table() -> String {
        let mut text = String::from("Exit codes:");
        for exit in Exit::ALL {
            text.push_str(&format!("\n  {}  {}", exit.code(), exit.summary()));
        }
        text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_code_once_in_order() {
        let codes: Vec<i32> = Exit::ALL.iter().map(|e| e.code()).collect();
        let expected: Vec<i32> = (0..Exit::ALL.len() as i32).collect();
        assert_eq!(codes, expected);
    }

    #[test]
    fn help_table_has_one_line_per_code() {
        let table = Exit::help_table();
        assert_eq!(table.lines().count(), Exit::ALL.len() + 1);
        assert!(
            table.contains("\n  6  store not safe to bind over /nix"),
            "{table}"
        );
    }
}
