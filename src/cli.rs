//! The command line. It is a contract: the NixOS module's units, the VM
//! tests and the docs (docs/commands.md is generated from it) depend on these names.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::DEFAULT_CONFIG;

#[derive(Debug, Parser)]
#[command(
    name = "wsl-storage-mount",
    version,
    about = "Mount a disk attached with `wsl --mount --bare`, prepare per-instance dirs and guard the /nix bind",
    after_help = crate::exit::Exit::help_table(),
)]
pub struct Cli {
    /// The JSON config (keys are the NixOS module's option names).
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// Where state.json and the bind stamp live. The NixOS module's units use
    /// the default; tests and the demo point it at a private directory.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "WSL_STORAGE_MOUNT_RUN_DIR",
        default_value = crate::state::RUNTIME_DIR
    )]
    pub run_dir: PathBuf,

    /// The root filesystem NixOS-WSL boots from (the VHDX), whose /nix is
    /// reached through a private non-recursive bind: the boot store is
    /// DIR/nix. Tests point it at a stand-in root.
    #[arg(long, global = true, value_name = "DIR", default_value = "/")]
    pub boot_root: PathBuf,

    /// More output: -v debug, -vv trace (RUST_LOG works too).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and list every problem by its JSON key.
    #[command(after_help = "\
Touches no device and resolves no user names, so it runs in the Nix build sandbox.

Examples:
  wsl-storage-mount --config /etc/wsl-storage-mount/config.json check
  wsl-storage-mount --config ./my.json check && echo fine

Exits 0 when the config is valid, 2 otherwise.")]
    Check,

    /// The boot step: wait for the disk, fsck, mount it, prepare instance dirs, guard the store.
    #[command(after_help = "\
In order: find the device (waiting up to waitTimeout seconds, starting the Windows
trigger on the first windows.triggerAttempts misses), check its filesystem type,
run fsck -p (fsck: true), mount it at mountPoint (or accept the same device already
mounted there), create instanceDirs with owner/group/mode, and with
bindMountNixStore verify that mountPoint/nixStoreSubdir holds the closure of
/run/booted-system before writing /run/wsl-storage-mount/bind-ok, which lets the
/nix bind proceed. Running it twice changes nothing the second time.

Examples:
  wsl-storage-mount mount
  wsl-storage-mount --config ./demo.json -v mount

Exit codes: 0 mounted (or degraded with onMissing = \"fallback\"), 1 unexpected,
2 bad config, 3 device missing, 4 wrong/no filesystem, 5 mount failed or mount
point taken, 6 store not safe to bind over /nix.")]
    Mount,

    /// Show the device, the mount, the instance dirs, the /nix bind and the last outcome.
    #[command(after_help = "\
Examples:
  wsl-storage-mount status
  wsl-storage-mount status --json | jq .lastRun

Exits 0 when everything is as configured, 1 otherwise.")]
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },

    /// The marker step after the /nix bind: write <bindTarget>/.mounted only when the bind is real.
    #[command(after_help = "\
Run by nix-mount-marker.service after the bind mount unit. When bindTarget is the
bind of mountPoint/nixStoreSubdir it writes bindTarget/.mounted and exits 0.
Otherwise it removes a stale marker and exits 0 with a warning when
onMissing = \"fallback\", or exits 5 when \"block\" (so nix-daemon stays off the
VHDX store).

Example:
  wsl-storage-mount mark")]
    Mark,

    /// Hard-link identical files across the instance stores on the disk (one copy of what they share).
    #[command(after_help = "\
Reads every <mountPoint>/<dir>/store (regular files only, immutable ones: mtime 1,
no write bit) and makes files with the same content, owner, group and mode one
inode, .links entries included, so that each store stays valid for its own Nix
(`nix-store --verify --check-contents` passes, `nix-store --optimise` changes
nothing) and a GC in one store frees nothing another uses. A progress bar on a
terminal; a summary of the bytes saved.

Examples:
  sudo wsl-storage-mount dedupe --dry-run
  sudo wsl-storage-mount dedupe")]
    Dedupe {
        /// Say what would be linked; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },

    /// Watch mountPoint and mount the disk there again when it is taken away (a service).
    #[command(after_help = "\
A peer distro's shutdown unmounts /mnt/wsl/* in every distro of the WSL VM
(microsoft/WSL#41084). What is bound from the disk (/nix, its read-only store,
binds) is private and stays; the mount at mountPoint goes. `keep` waits for
changes of this namespace's mount table and, when mountPoint is empty while the
last `mount` succeeded, mounts the same device again (the steps of `mount` up
to the mount itself), for every distro. Runs until stopped; stop it before
unmounting the disk by hand.

Example:
  wsl-storage-mount keep")]
    Keep,

    /// Make the system deployed on the disk store the VHDX's boot generation (the boot loader).
    #[command(after_help = "\
NixOS-WSL boots from the VHDX's /nix before the disk is bound, so every generation
deployed onto the disk store must also reach the VHDX. In order: copy the closure of
SYSTEM (default: the disk's /nix/var/nix/profiles/system), of what the root
filesystem's links (/sbin/init, /etc/static, /bin/*, /usr/bin/*) and
/nix/nixos-wsl/* lead to, into the VHDX store with nix-store --export/--import
(only what it lacks); point the VHDX's system profile at SYSTEM (a new
system-N-link, renamed into place); keep the newest bootGenerations generations and
garbage-collect the rest (paths the disk store lacks are never deleted); check that
every root-filesystem link into /nix/store resolves in the VHDX store.
When /nix is not the bind of the disk store it says so and does nothing.
The NixOS module runs it as the boot loader (nixos-rebuild switch/boot) and, with
--closure-only, at every activation (nixos-rebuild test).

Examples:
  sudo wsl-storage-mount sync-boot
  sudo wsl-storage-mount sync-boot /nix/var/nix/profiles/system-42-link
  sudo wsl-storage-mount --boot-root /mnt/standin sync-boot --closure-only ./result

Exit codes: 0 done (or nothing to do), 2 bad usage or config, 7 sync failed (the
previous boot generation is kept and still boots).")]
    SyncBoot {
        /// Copy the closure only; leave the VHDX's boot generation as it is.
        #[arg(long)]
        closure_only: bool,
        /// The system toplevel (a /nix/store path or a link to one).
        #[arg(value_name = "SYSTEM")]
        system: Option<PathBuf>,
    },

    /// Print the Windows attach script (attach.ps1).
    #[command(after_help = "\
Example:
  wsl-storage-mount windows-script > attach.ps1")]
    WindowsScript,

    /// Print the script that registers the elevated scheduled task (register-task.ps1).
    #[command(after_help = "\
Run its output in an elevated PowerShell, once and again whenever attach.ps1
changes: it carries attach.ps1 (with its SHA-256), installs it into
%ProgramData%\\wsl-storage-mount (administrators only) and registers the task
that runs that copy.

Example:
  wsl-storage-mount windows-task > register-task.ps1")]
    WindowsTask,

    /// Stage attach.ps1 and register-task.ps1 in a Windows directory.
    #[command(after_help = "\
Rewrites a file only when its content changed. Never fails hard when Windows is
unreachable (it warns and exits 0). Never writes the attach.ps1 the task runs:
only register-task.ps1, run elevated, installs that one.

Examples:
  wsl-storage-mount install-windows-files
  wsl-storage-mount install-windows-files --dir /mnt/c/Users/me/wsl")]
    InstallWindowsFiles {
        /// The Windows directory, as a Linux path (default: %USERPROFILE%\wsl-storage-mount through interop).
        #[arg(long, value_name = "WINDOWS_DIR")]
        dir: Option<PathBuf>,
    },

    /// Copy this instance's /nix onto the disk (mountPoint/nixStoreSubdir), verified, resumable.
    #[command(after_help = "\
Reads the /nix NixOS-WSL boots from (DIR/nix for the global --boot-root DIR,
/ by default, through a private non-recursive bind, so it works whether or not /nix is bound
already) and copies it into mountPoint/nixStoreSubdir.partial: the rest of
/nix (profiles, gcroots, logs), then the Nix database as a consistent snapshot
(SQLite's online backup, nix-daemon may keep running), then every store path
valid in that snapshot, .links and every hard link, with owners, modes,
mtimes, symlinks, xattrs and ACLs. Mounts the disk first when it is not
(the steps of `mount` up to the instance dirs). Checks the room first. Verifies
the copy (the booted system valid in the copied database, its closure and
every valid path present; with --verify-contents also
`nix-store --verify --check-contents`), then renames .partial to the subdir.
Never writes to the source, never deletes anything, never writes over an
existing non-empty subdir.

Examples:
  sudo wsl-storage-mount migrate --dry-run
  sudo wsl-storage-mount migrate
  sudo wsl-storage-mount migrate --resume --verify-contents

Exit codes: 0 copied and verified (or: the dry run found room), 1 unexpected,
2 bad config or usage (the subdir exists and is not empty, a .partial without
--resume), 3 device missing, 4 wrong/no filesystem, 5 mount failed,
6 the copy failed verification, 8 not enough room on the disk.")]
    Migrate {
        /// Print what would be copied and the free space; copy nothing.
        #[arg(long)]
        dry_run: bool,
        /// Continue an interrupted copy in <subdir>.partial.
        #[arg(long)]
        resume: bool,
        /// Also run `nix-store --verify --check-contents` on the copy (reads every byte).
        #[arg(long)]
        verify_contents: bool,
        /// The system the copy must boot (default: the target of /run/booted-system).
        #[arg(long, value_name = "PATH")]
        system: Option<PathBuf>,
    },

    /// Measure the disk against the VHDX: sequential, random 4 KiB and Nix-shaped small files.
    #[command(after_help = "\
Runs the same workloads in a directory of its own on mountPoint and on a directory of
the VHDX's root filesystem (--vhdx-dir, default /var/tmp): sequential write and read
in 1 MiB blocks (O_DIRECT where the filesystem allows it, fsync after the write),
4 KiB random reads and writes (IOPS, latency p50/p99; up to 20,000 operations or
3 s each), and --files small files written, fsync'ed and renamed into place in 256
directories, then read back. Prints a table with the ratio per row and a verdict.
Removes its files at the end, also on Ctrl-C. Needs size + 6 MiB per 1,000 files
+ 17 MiB free on each side, and refuses (exit 8) otherwise.

Examples:
  wsl-storage-mount bench
  wsl-storage-mount bench --size 4G --json | jq .verdict

Exits 0 after a run, 2 on bad options, 5 when mountPoint is not mounted, 8 when a
side lacks room.")]
    Bench {
        /// Size of the sequential file (K, M, G, T: powers of 1024).
        #[arg(long, default_value = "1G", value_parser = crate::bench::parse_size)]
        size: u64,
        /// How many small files the Nix-shaped workload writes and reads.
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        files: u64,
        /// A directory on the VHDX's root filesystem to compare with (default /var/tmp).
        #[arg(long, value_name = "DIR")]
        vhdx_dir: Option<PathBuf>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },

    /// Check the whole chain and print the fix for everything that is not ok.
    #[command(after_help = "\
Examples:
  wsl-storage-mount doctor
  wsl-storage-mount doctor --json

Exits 0 when no check fails (warnings allowed), 1 otherwise.")]
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}
