//! `bench`: is the disk really faster than the VHDX on this machine?
//!
//! The same workloads run on mountPoint (the disk) and on a directory of
//! the VHDX's root filesystem, side by side: sequential write and read in
//! 1 MiB blocks (O_DIRECT where the filesystem allows it, fsync at the end
//! of the write), 4 KiB random reads and writes (IOPS, latency p50/p99),
//! and a Nix-shaped workload (small files created, fsync'ed and renamed
//! into place in many directories, then read back), each workload on both
//! sides in turn. Each side works in a directory of its own making,
//! removed at the end, also on Ctrl-C.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::config::Config;
use crate::exit::{fail, Exit};
use crate::mountinfo;
use crate::space::free_bytes;

const SEQ_BLOCK: usize = 1 << 20;
const RAND_BLOCK: usize = 4096;
/// Random I/O stops at this many operations or after `RAND_TIME`.
const RAND_MAX_OPS: usize = 20_000;
const RAND_TIME: Duration = Duration::from_secs(3);
/// Directories of the Nix-shaped workload (store paths spread out).
const NIX_DIRS: usize = 256;
/// Small-file sizes, cycled: most store files are a few KiB.
const NIX_SIZES: [usize; 8] = [512, 1024, 2048, 4096, 4096, 8192, 16384, 700];
/// Free space kept beyond what the files take (metadata, journal).
const MARGIN: u64 = 16 << 20;

/// Set by SIGINT/SIGTERM/SIGHUP: stop, clean up, exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn check_stop() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        anyhow::bail!("interrupted; the benchmark files were removed");
    }
    Ok(())
}

pub struct Options {
    pub size: u64,
    pub files: usize,
    pub vhdx_dir: Option<PathBuf>,
    pub json: bool,
}

/// "1G", "512M", "64MiB", "4096": bytes (powers of 1024), at least 4 MiB.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bytes = crate::space::parse_bytes(text, "1G, 512M or 64MiB")?;
    if bytes < (4 << 20) {
        return Err(format!(
            "{text:?} is too small to measure anything; use at least 4M"
        ));
    }
    // Whole 1 MiB blocks, so O_DIRECT stays aligned.
    Ok(bytes / SEQ_BLOCK as u64 * SEQ_BLOCK as u64)
}

/// A directory this run made and removes again (also when a step fails).
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(parent: &Path) -> Result<WorkDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!(
            ".wsl-storage-mount-bench-{}-{nanos:x}",
            std::process::id()
        ));
        // mkdir never follows a symlink in the last component, and fails on
        // anything already there: the directory is ours alone.
        fs::create_dir(&path)
            .with_context(|| format!("creating the benchmark directory {}", path.display()))?;
        Ok(WorkDir { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        // remove_dir_all does not follow symlinks inside.
        if let Err(e) = fs::remove_dir_all(&self.path) {
            log::warn!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// One side's results.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Side {
    pub path: String,
    pub fs_type: String,
    pub direct_io: bool,
    pub seq_write_mib_s: f64,
    pub seq_read_mib_s: f64,
    pub rand_read_iops: f64,
    pub rand_read_p50_us: f64,
    pub rand_read_p99_us: f64,
    pub rand_write_iops: f64,
    pub rand_write_p50_us: f64,
    pub rand_write_p99_us: f64,
    pub nix_write_files_s: f64,
    pub nix_read_files_s: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub name: &'static str,
    pub unit: &'static str,
    pub disk: f64,
    pub vhdx: f64,
    /// How many times better the disk is (above 1: the disk wins).
    pub ratio: f64,
    pub higher_is_better: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub size_bytes: u64,
    pub files: usize,
    pub disk: Side,
    pub vhdx: Side,
    pub rows: Vec<Row>,
    pub verdict: String,
}

/// An aligned buffer for O_DIRECT (the block layer wants 4 KiB alignment).
struct Aligned {
    buf: Vec<u8>,
    offset: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let mut buf = vec![0u8; len + 4096];
        let offset = buf.as_ptr().align_offset(4096);
        // Not zeros: some layers treat zero blocks specially.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for b in &mut buf[offset..offset + len] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        Aligned { buf, offset, len }
    }
    fn get(&self) -> &[u8] {
        &self.buf[self.offset..self.offset + self.len]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.offset..self.offset + self.len]
    }
}

/// A small deterministic generator for random offsets.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Drop a file's cached pages, so reads come from the device.
fn drop_cache(file: &File) {
    // SAFETY: a plain syscall on an open descriptor.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

fn open(path: &Path, write: bool, create: bool, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(!write).write(write).create(create).truncate(create);
    let mut flags = libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if direct {
        flags |= libc::O_DIRECT;
    }
    o.custom_flags(flags).mode(0o600);
    o.open(path)
}

fn mib_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / took.as_secs_f64().max(1e-9)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let k = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[k.clamp(1, sorted.len()) - 1]
}

/// Sequential write of `size` bytes in 1 MiB blocks, fsync at the end.
/// Returns the throughput and whether O_DIRECT was used.
fn seq_write(path: &Path, size: u64, buf: &Aligned) -> Result<(f64, bool)> {
    let ctx = || format!("sequential write to {}", path.display());
    // O_DIRECT where the filesystem allows it (tmpfs refuses at open,
    // some filesystems only at the first write).
    let mut direct = true;
    let mut file = match open(path, true, true, true) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            direct = false;
            open(path, true, true, false).with_context(ctx)?
        }
        Err(e) => return Err(e).with_context(ctx),
    };
    let start = Instant::now();
    let mut written = 0u64;
    while written < size {
        check_stop()?;
        match file.write_all(buf.get()) {
            Ok(()) => written += SEQ_BLOCK as u64,
            Err(e) if direct && written == 0 && e.raw_os_error() == Some(libc::EINVAL) => {
                direct = false;
                file = open(path, true, true, false).with_context(ctx)?;
            }
            Err(e) => return Err(e).with_context(ctx),
        }
    }
    file.sync_all().with_context(ctx)?;
    Ok((mib_s(size, start.elapsed()), direct))
}

fn seq_read(path: &Path, size: u64, direct: bool, buf: &mut Aligned) -> Result<f64> {
    let ctx = || format!("sequential read of {}", path.display());
    let mut file = open(path, false, false, direct).with_context(ctx)?;
    drop_cache(&file);
    let start = Instant::now();
    let mut read = 0u64;
    while read < size {
        check_stop()?;
        let n = file.read(buf.get_mut()).with_context(ctx)?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    Ok(mib_s(read, start.elapsed()))
}

/// 4 KiB operations at random offsets: IOPS and latency p50/p99 in µs.
fn random_io(path: &Path, size: u64, direct: bool, write: bool) -> Result<(f64, f64, f64)> {
    let ctx = || {
        format!(
            "random 4 KiB {} on {}",
            if write { "writes" } else { "reads" },
            path.display()
        )
    };
    let file = open(path, write, false, direct).with_context(ctx)?;
    drop_cache(&file);
    let mut buf = Aligned::new(RAND_BLOCK);
    let blocks = size / RAND_BLOCK as u64;
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ u64::from(write));
    let mut lat = Vec::with_capacity(RAND_MAX_OPS);
    let start = Instant::now();
    while lat.len() < RAND_MAX_OPS && start.elapsed() < RAND_TIME {
        if lat.len() % 256 == 0 {
            check_stop()?;
        }
        let off = rng.below(blocks) * RAND_BLOCK as u64;
        let t = Instant::now();
        if write {
            file.write_all_at(buf.get(), off).with_context(ctx)?;
        } else {
            file.read_exact_at(buf.get_mut(), off).with_context(ctx)?;
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    if write {
        file.sync_all().with_context(ctx)?;
    }
    let took = start.elapsed();
    let iops = lat.len() as f64 / took.as_secs_f64().max(1e-9);
    lat.sort_by(f64::total_cmp);
    Ok((iops, percentile(&lat, 50.0), percentile(&lat, 99.0)))
}

/// Small files the way Nix writes a store: each written to a temporary
/// name, fsync'ed and renamed into place, spread over many directories;
/// then all read back. Files per second for each half.
fn nix_shaped(dir: &Path, files: usize) -> Result<(f64, f64)> {
    let data = Aligned::new(*NIX_SIZES.iter().max().unwrap_or(&4096));
    for d in 0..NIX_DIRS {
        let sub = dir.join(format!("{d:02x}"));
        fs::create_dir(&sub).with_context(|| format!("creating {}", sub.display()))?;
    }
    let name = |i: usize| {
        dir.join(format!("{:02x}", i % NIX_DIRS))
            .join(format!("{i:08x}-file"))
    };
    let start = Instant::now();
    for i in 0..files {
        check_stop()?;
        let final_path = name(i);
        let tmp = final_path.with_extension("tmp");
        let ctx = || format!("writing {}", tmp.display());
        let mut f = open(&tmp, true, true, false).with_context(ctx)?;
        f.write_all(&data.get()[..NIX_SIZES[i % NIX_SIZES.len()]])
            .with_context(ctx)?;
        f.sync_all().with_context(ctx)?;
        drop(f);
        fs::rename(&tmp, &final_path)
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
    }
    let write_rate = files as f64 / start.elapsed().as_secs_f64().max(1e-9);
    // Written and synced: their pages are clean and can be dropped, so the
    // read-back comes from the device (directories stay cached, as they
    // would for a warm store).
    for i in 0..files {
        if let Ok(f) = open(&name(i), false, false, false) {
            drop_cache(&f);
        }
    }
    let mut buf = Vec::with_capacity(data.len);
    let start = Instant::now();
    for i in 0..files {
        check_stop()?;
        let path = name(i);
        buf.clear();
        open(&path, false, false, false)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .with_context(|| format!("reading back {}", path.display()))?;
    }
    let read_rate = files as f64 / start.elapsed().as_secs_f64().max(1e-9);
    Ok((write_rate, read_rate))
}

/// What one side needs free: the big file, the small files rounded up to
/// 4 KiB blocks, their directories, and a margin.
pub fn room_needed(size: u64, files: usize) -> u64 {
    let small: u64 = (0..files)
        .map(|i| (NIX_SIZES[i % NIX_SIZES.len()] as u64).div_ceil(4096) * 4096)
        .sum();
    size + small + (NIX_DIRS as u64) * 4096 + MARGIN
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else {
        format!("{:.0} MiB", b / (1u64 << 20) as f64)
    }
}

/// The filesystem type of the mount holding `dir`: the mount with the
/// longest mount point that contains it.
fn fs_type_of(dir: &Path, mounts: &[mountinfo::MountEntry]) -> String {
    let Ok(dir) = fs::canonicalize(dir) else {
        return String::new();
    };
    mounts
        .iter()
        .filter(|m| dir.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len())
        .map(|m| m.fs_type.clone())
        .unwrap_or_default()
}

/// Both sides, one workload at a time on each in turn, so that a change
/// of load on the machine during the run touches both sides alike.
fn run_both(targets: [(&Path, String); 2], opts: &Options) -> Result<[Side; 2]> {
    let mut work = Vec::new();
    let mut sides: Vec<Side> = Vec::new();
    for (parent, fs_type) in targets {
        work.push(WorkDir::create(parent)?);
        sides.push(Side {
            path: parent.display().to_string(),
            fs_type,
            ..Side::default()
        });
    }
    let big: Vec<PathBuf> = work.iter().map(|w| w.path.join("seq")).collect();
    let mut buf = Aligned::new(SEQ_BLOCK);
    for (side, big) in sides.iter_mut().zip(&big) {
        log::info!("bench {}: sequential write", side.path);
        (side.seq_write_mib_s, side.direct_io) = seq_write(big, opts.size, &buf)?;
    }
    for (side, big) in sides.iter_mut().zip(&big) {
        log::info!("bench {}: sequential read", side.path);
        side.seq_read_mib_s = seq_read(big, opts.size, side.direct_io, &mut buf)?;
    }
    for (side, big) in sides.iter_mut().zip(&big) {
        log::info!("bench {}: random 4 KiB reads", side.path);
        (
            side.rand_read_iops,
            side.rand_read_p50_us,
            side.rand_read_p99_us,
        ) = random_io(big, opts.size, side.direct_io, false)?;
    }
    for (side, big) in sides.iter_mut().zip(&big) {
        log::info!("bench {}: random 4 KiB writes", side.path);
        (
            side.rand_write_iops,
            side.rand_write_p50_us,
            side.rand_write_p99_us,
        ) = random_io(big, opts.size, side.direct_io, true)?;
        fs::remove_file(big).with_context(|| format!("removing {}", big.display()))?;
    }
    for (side, w) in sides.iter_mut().zip(&work) {
        log::info!(
            "bench {}: {} small files, Nix-shaped",
            side.path,
            opts.files
        );
        let nix_dir = w.path.join("store");
        fs::create_dir(&nix_dir).with_context(|| format!("creating {}", nix_dir.display()))?;
        (side.nix_write_files_s, side.nix_read_files_s) = nix_shaped(&nix_dir, opts.files)?;
    }
    let [disk, vhdx]: [Side; 2] = sides
        .try_into()
        .map_err(|_| anyhow::anyhow!("two sides expected"))?;
    Ok([disk, vhdx])
}

fn rows(d: &Side, v: &Side) -> Vec<Row> {
    let row = |name, unit, disk: f64, vhdx: f64, higher_is_better| Row {
        name,
        unit,
        disk,
        vhdx,
        ratio: if higher_is_better {
            disk / vhdx.max(1e-9)
        } else {
            vhdx / disk.max(1e-9)
        },
        higher_is_better,
    };
    vec![
        row(
            "sequential write",
            "MiB/s",
            d.seq_write_mib_s,
            v.seq_write_mib_s,
            true,
        ),
        row(
            "sequential read",
            "MiB/s",
            d.seq_read_mib_s,
            v.seq_read_mib_s,
            true,
        ),
        row(
            "random 4K read",
            "IOPS",
            d.rand_read_iops,
            v.rand_read_iops,
            true,
        ),
        row(
            "random 4K read p50",
            "us",
            d.rand_read_p50_us,
            v.rand_read_p50_us,
            false,
        ),
        row(
            "random 4K read p99",
            "us",
            d.rand_read_p99_us,
            v.rand_read_p99_us,
            false,
        ),
        row(
            "random 4K write",
            "IOPS",
            d.rand_write_iops,
            v.rand_write_iops,
            true,
        ),
        row(
            "random 4K write p50",
            "us",
            d.rand_write_p50_us,
            v.rand_write_p50_us,
            false,
        ),
        row(
            "random 4K write p99",
            "us",
            d.rand_write_p99_us,
            v.rand_write_p99_us,
            false,
        ),
        row(
            "small files: write+fsync+rename",
            "files/s",
            d.nix_write_files_s,
            v.nix_write_files_s,
            true,
        ),
        row(
            "small files: read back",
            "files/s",
            d.nix_read_files_s,
            v.nix_read_files_s,
            true,
        ),
    ]
}

/// One line: which side wins, by the geometric mean of the ratios.
fn verdict(rows: &[Row]) -> String {
    let n = rows.len().max(1) as f64;
    let g = (rows.iter().map(|r| r.ratio.max(1e-9).ln()).sum::<f64>() / n).exp();
    let better = rows.iter().filter(|r| r.ratio > 1.1).count();
    let worse = rows.iter().filter(|r| r.ratio < 1.0 / 1.1).count();
    let detail = format!(
        "geometric mean {g:.2}x; the disk is better on {better} and worse on {worse} of {} rows",
        rows.len()
    );
    if g >= 1.1 {
        format!("verdict: the disk is faster than the VHDX here ({detail}): the Nix store gains speed on it")
    } else if g <= 1.0 / 1.1 {
        format!("verdict: the VHDX is faster than the disk here ({detail}): the disk brings room, not speed")
    } else {
        format!("verdict: no clear difference ({detail}): the disk brings room, not speed")
    }
}

fn print_table(r: &Report) {
    println!(
        "wsl-storage-mount bench: {} file, {} small files",
        human(r.size_bytes),
        r.files
    );
    println!(
        "  disk: {} ({}{})",
        r.disk.path,
        r.disk.fs_type,
        if r.disk.direct_io {
            ", O_DIRECT"
        } else {
            ", page cache"
        }
    );
    println!(
        "  VHDX: {} ({}{})",
        r.vhdx.path,
        r.vhdx.fs_type,
        if r.vhdx.direct_io {
            ", O_DIRECT"
        } else {
            ", page cache"
        }
    );
    println!();
    println!(
        "{:<34} {:>8} {:>12} {:>12} {:>8}",
        "workload", "unit", "disk", "VHDX", "ratio"
    );
    for row in &r.rows {
        println!(
            "{:<34} {:>8} {:>12.1} {:>12.1} {:>7.2}x",
            row.name, row.unit, row.disk, row.vhdx, row.ratio
        );
    }
    println!("(ratio: how many times better the disk is; latency rows compare VHDX/disk)");
    println!("{}", r.verdict);
}

pub fn run(cfg: &Config, opts: &Options) -> Result<Exit> {
    let mounts = mountinfo::read().context("reading /proc/self/mountinfo")?;
    let mp = Path::new(&cfg.mount_point);
    if mountinfo::top_at(&mounts, &cfg.mount_point).is_none() {
        return Err(fail(
            Exit::Mount,
            format!(
                "mountPoint {} is not mounted: there is no disk to measure; run `wsl-storage-mount mount` first",
                mp.display()
            ),
        ));
    }
    let vhdx_parent = opts
        .vhdx_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let meta = fs::metadata(&vhdx_parent).map_err(|e| {
        fail(
            Exit::Config,
            format!(
                "--vhdx-dir {}: {e}; pass a directory on the VHDX's root filesystem",
                vhdx_parent.display()
            ),
        )
    })?;
    let disk_dev = fs::metadata(mp)
        .with_context(|| format!("reading {}", mp.display()))?
        .dev();
    if !meta.is_dir() || meta.dev() == disk_dev {
        return Err(fail(
            Exit::Config,
            format!(
                "--vhdx-dir {} must be a directory on another filesystem than mountPoint {} (the VHDX's root filesystem, e.g. /var/tmp)",
                vhdx_parent.display(),
                mp.display()
            ),
        ));
    }
    let vhdx_fs = fs_type_of(&vhdx_parent, &mounts);
    if matches!(vhdx_fs.as_str(), "tmpfs" | "ramfs") {
        return Err(fail(
            Exit::Config,
            format!(
                "--vhdx-dir {} is on {vhdx_fs} (memory), not on the VHDX; pass a directory on the root filesystem, e.g. --vhdx-dir /root",
                vhdx_parent.display()
            ),
        ));
    }
    let needed = room_needed(opts.size, opts.files);
    for dir in [mp, vhdx_parent.as_path()] {
        let free = free_bytes(dir)?;
        if free < needed {
            return Err(fail(
                Exit::NoRoom,
                format!(
                    "not enough room on {}: the benchmark needs {} there and {} are free; pass a smaller --size (e.g. --size 256M)",
                    dir.display(),
                    human(needed),
                    human(free)
                ),
            ));
        }
    }
    install_signal_handlers();
    let [disk, vhdx] = run_both(
        [
            (mp, fs_type_of(mp, &mounts)),
            (vhdx_parent.as_path(), vhdx_fs),
        ],
        opts,
    )?;
    let rows = rows(&disk, &vhdx);
    let report = Report {
        size_bytes: opts.size,
        files: opts.files,
        verdict: verdict(&rows),
        disk,
        vhdx,
        rows,
    };
    if opts.json {
        let text = serde_json::to_string_pretty(&report).context("encoding the report")?;
        println!("{text}");
    } else {
        print_table(&report);
    }
    Ok(Exit::Success)
}

fn install_signal_handlers() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    // No SA_RESTART: a blocking read/write returns, and the loop sees STOP.
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic.
        if let Err(e) = unsafe { sigaction(sig, &action) } {
            log::warn!("cannot catch {sig}: {e}; an interrupt may leave benchmark files behind");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("5000000"), Ok(4 << 20));
        assert!(parse_size("1X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").unwrap_err().contains("not a size"));
        assert!(parse_size("1K").unwrap_err().contains("too small"));
    }

    #[test]
    fn percentiles_pick_the_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }

    #[test]
    fn the_verdict_follows_the_geometric_mean() {
        let side = |x: f64| Side {
            seq_write_mib_s: x,
            seq_read_mib_s: x,
            rand_read_iops: x,
            rand_read_p50_us: 1.0 / x,
            rand_read_p99_us: 1.0 / x,
            rand_write_iops: x,
            rand_write_p50_us: 1.0 / x,
            rand_write_p99_us: 1.0 / x,
            nix_write_files_s: x,
            nix_read_files_s: x,
            ..Side::default()
        };
        let r = rows(&side(4.0), &side(1.0));
        assert!(r.iter().all(|row| (row.ratio - 4.0).abs() < 1e-9));
        assert!(verdict(&r).contains("the disk is faster"));
        assert!(verdict(&rows(&side(1.0), &side(2.0))).contains("the VHDX is faster"));
        assert!(verdict(&rows(&side(1.0), &side(1.0))).contains("no clear difference"));
    }

    #[test]
    fn room_counts_whole_blocks() {
        assert_eq!(
            room_needed(1 << 20, 8),
            (1 << 20) + (1 + 1 + 1 + 1 + 1 + 2 + 4 + 1) * 4096 + 256 * 4096 + MARGIN
        );
    }
}
