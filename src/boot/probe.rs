//! What a device holds, from libblkid (util-linux's probing library, the
//! one mount(8), systemd and udev use): a filesystem with its type, UUID
//! and LABEL, a partition table with the filesystems in its partitions,
//! two signatures at once (ambivalent: refused), or nothing at all.
//!
//! Without udev there is no /dev/disk/by-uuid, so the helper probes the
//! block devices itself. Only "nothing at all" on a device of non-zero size
//! may ever lead to advice to create a filesystem; the helper never formats.
//!
//! Kept by hand: the ext* "errors" state bit (two bytes of the superblock),
//! which libblkid does not report and the fsck step needs.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use libblkid_rs::{BlkidProbe, BlkidProbeRet, BlkidSafeprobeRet, BlkidSublks, BlkidSublksFlags};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FsInfo {
    pub fs_type: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// ext*: the superblock's state says errors were found (fsck needed).
    pub has_errors: bool,
}

impl FsInfo {
    /// Does this filesystem satisfy the configured `fsType`? The ext4
    /// driver mounts ext2 and ext3 too, so "ext4" accepts the whole family.
    pub fn matches_type(&self, wanted: &str) -> bool {
        self.fs_type == wanted
            || (wanted == "ext4" && matches!(self.fs_type.as_str(), "ext2" | "ext3"))
    }

    pub fn uuid_is(&self, uuid: &str) -> bool {
        self.uuid
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
    }

    pub fn label_is(&self, label: &str) -> bool {
        self.label.as_deref() == Some(label)
    }

    /// "ext4 UUID 0f3e... LABEL data"
    pub fn describe(&self) -> String {
        let mut s = self.fs_type.clone();
        if let Some(u) = &self.uuid {
            s.push_str(&format!(" UUID {u}"));
        }
        if let Some(l) = &self.label {
            s.push_str(&format!(" LABEL {l:?}"));
        }
        s
    }
}

/// One partition of a partitioned disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Partition {
    pub number: u32,
    /// Its device node, when the kernel made one (e.g. /dev/sdc1).
    pub node: Option<PathBuf>,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// What the partition holds (probed through the whole disk, so this
    /// works without partition nodes too).
    pub fs: Option<FsInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Contents {
    /// A device of size 0: a loop device with nothing attached, a reader
    /// without a medium, a disk that went away.
    NoMedium,
    /// No signature libblkid knows: the only case where creating a
    /// filesystem may be suggested.
    Empty,
    Filesystem(FsInfo),
    /// A partition table: the data is in the partitions.
    Partitioned {
        table: String,
        partitions: Vec<Partition>,
    },
    /// Two or more signatures; libblkid will not say which is real, and
    /// neither will the helper.
    Ambiguous {
        signatures: Vec<Signature>,
    },
}

/// One signature of an ambivalent device, as wipefs lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Signature {
    pub fs_type: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// Where its magic is, as libblkid prints it (e.g. "0x438").
    pub offset: String,
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.fs_type)?;
        if let Some(u) = &self.uuid {
            write!(f, " UUID {u}")?;
        }
        if let Some(l) = &self.label {
            write!(f, " LABEL {l:?}")?;
        }
        write!(f, " at offset {}", self.offset)
    }
}

impl Contents {
    pub fn filesystem(&self) -> Option<&FsInfo> {
        match self {
            Contents::Filesystem(fs) => Some(fs),
            _ => None,
        }
    }
}

/// Open a device or image read-only, never through a FIFO or other
/// special file: block devices and regular files (images) only.
fn open_device(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let ft = file.metadata()?.file_type();
    if !(ft.is_block_device() || ft.is_file()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a block device", path.display()),
        ));
    }
    Ok(file)
}

/// libblkid reads some 60 pieces of a device, and on a freshly attached
/// disk each piece it waits for is a round trip to the device. The pages it
/// reads are asked for ahead, all at once and without waiting, so that its
/// reads then come from memory: see `prefetch_ranges` for which.
fn prefetch(file: &File, size: u64) {
    for (offset, len) in prefetch_ranges(size) {
        // SAFETY: posix_fadvise only advises the kernel about an open fd.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                offset as i64,
                len as i64,
                libc::POSIX_FADV_WILLNEED,
            );
        }
    }
}

/// The byte ranges libblkid's probe of a whole device reads (traced with
/// strace on util-linux 2.38, the same for 256 MiB, 4 GiB and 64 GiB):
/// - the last 512 KiB: RAID superblocks (md, DDF, Intel, LSI, JMicron, VIA,
///   nVidia, Promise...), the GPT backup header and ZFS labels 2 and 3;
/// - the first 512 KiB: the filesystem superblocks, the partition tables
///   and ZFS labels 0 and 1;
/// - four single pages: 3087 sectors before the end (Promise FastTrack's
///   farthest copy) and 512 KiB, 1, 2 and 4 MiB (superblocks placed at
///   powers of two).
///
/// In the order libblkid first needs them; a page it reads outside these
/// only costs a round trip. About 1 MiB in all: asking for the first 2 and
/// last 1 MiB instead took the device twice as long to deliver.
pub(crate) fn prefetch_ranges(size: u64) -> Vec<(u64, u64)> {
    const PAGE: u64 = 4096;
    const END: u64 = 512 << 10;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut add = |offset: u64, len: u64| {
        let offset = offset / PAGE * PAGE;
        if offset >= size {
            return;
        }
        let len = len.min(size - offset);
        // Once: on a small device the ranges overlap.
        if !out
            .iter()
            .any(|&(o, l)| o <= offset && offset + len <= o + l)
        {
            out.push((offset, len));
        }
    };
    add(size.saturating_sub(END), END);
    add(0, END);
    add(size.saturating_sub(3087 * 512), PAGE);
    for at in [512 << 10, 1 << 20, 2 << 20, 4 << 20] {
        add(at, PAGE);
    }
    out
}

/// Ready the allocator for a probe while the helper waits for the disk.
///
/// libblkid's probe allocates four 256 KiB buffers (the ZFS labels). Above
/// glibc's mmap threshold each one is fresh mmap()ed memory, and filling it
/// takes a page fault per 4 KiB: some 0.3 ms of the reaction to the disk.
/// With the threshold raised they come from the heap instead, whose pages
/// are faulted in here, off the clock, and kept (trim threshold raised too).
pub fn prepare_for_arrival() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes glibc's allocator; the buffer is allocated,
    // written within its bounds and freed here.
    unsafe {
        const HEAP: usize = 2 << 20;
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
        let buf = libc::malloc(HEAP).cast::<u8>();
        if !buf.is_null() {
            for at in (0..HEAP).step_by(4096) {
                std::ptr::write_volatile(buf.add(at), 0);
            }
            libc::free(buf.cast());
        }
    }
}

fn blkid_err(what: &str, e: libblkid_rs::BlkidErr) -> io::Error {
    io::Error::other(format!("libblkid: {what}: {e}"))
}

/// A probe over `len` bytes at `offset` of `file` (len 0: to its end).
fn new_probe(file: &File, offset: u64, len: u64) -> io::Result<BlkidProbe> {
    let mut probe = BlkidProbe::new().map_err(|e| blkid_err("new probe", e))?;
    probe
        .set_device(file.as_raw_fd(), offset as i64, len as i64)
        .map_err(|e| blkid_err("set device", e))?;
    probe
        .enable_superblocks(true)
        .map_err(|e| blkid_err("superblocks", e))?;
    probe
        .set_superblock_flags(BlkidSublksFlags::new(vec![
            BlkidSublks::Type,
            BlkidSublks::Uuid,
            BlkidSublks::Label,
            BlkidSublks::Usage,
            BlkidSublks::Magic,
        ]))
        .map_err(|e| blkid_err("superblock flags", e))?;
    Ok(probe)
}

fn value(probe: &BlkidProbe, name: &str) -> Option<String> {
    probe
        .lookup_value(name)
        .ok()
        .map(|v| v.trim_end_matches('\0').to_string())
        .filter(|v| !v.is_empty())
}

fn fs_info(probe: &BlkidProbe, file: &File, offset: u64) -> Option<FsInfo> {
    let fs_type = value(probe, "TYPE")?;
    let has_errors = fs_type.starts_with("ext") && ext_has_errors(file, offset);
    Some(FsInfo {
        uuid: value(probe, "UUID"),
        label: value(probe, "LABEL"),
        has_errors,
        fs_type,
    })
}

/// EXT2_ERROR_FS in s_state: the kernel recorded errors, fsck is due.
/// libblkid does not report this state, so these two bytes are read here.
fn ext_has_errors(file: &File, offset: u64) -> bool {
    const SB: u64 = 1024;
    let mut b = [0u8; 4];
    // s_magic at 0x38, s_state at 0x3A.
    if file.read_exact_at(&mut b, offset + SB + 0x38).is_err() {
        return false;
    }
    u16::from_le_bytes([b[0], b[1]]) == 0xEF53 && u16::from_le_bytes([b[2], b[3]]) & 0x0002 != 0
}

/// What the device or image at `path` holds.
pub fn probe_contents(path: &Path) -> io::Result<Contents> {
    let file = open_device(path)?;
    let meta = file.metadata()?;
    let size = if meta.file_type().is_block_device() {
        block_size(&file)?
    } else {
        meta.len()
    };
    if size == 0 {
        return Ok(Contents::NoMedium);
    }
    prefetch(&file, size);
    let mut probe = new_probe(&file, 0, 0)?;
    probe
        .enable_partitions(true)
        .map_err(|e| blkid_err("partitions", e))?;
    match probe.do_safeprobe() {
        Ok(BlkidSafeprobeRet::Success) => {}
        Ok(BlkidSafeprobeRet::None) => return Ok(Contents::Empty),
        Ok(BlkidSafeprobeRet::Ambiguous) => {
            return Ok(Contents::Ambiguous {
                signatures: signatures(&file)?,
            })
        }
        Err(e) => return Err(blkid_err(&format!("probing {}", path.display()), e)),
    }
    if let Some(fs) = fs_info(&probe, &file, 0) {
        return Ok(Contents::Filesystem(fs));
    }
    let Some(table) = value(&probe, "PTTYPE") else {
        return Ok(Contents::Empty);
    };
    let mut partitions = Vec::new();
    let nodes = partition_nodes(&meta);
    if let Ok(mut list) = probe.get_partitions() {
        let n = list.number_of_partitions().unwrap_or(0);
        for i in 0..n {
            let Ok(part) = list.get_partition(i) else {
                continue;
            };
            let number = part.get_partno().unwrap_or(0);
            let start_bytes = (*part.get_start().as_ref()).max(0) as u64 * 512;
            let size_bytes = (*part.get_size().as_ref()).max(0) as u64 * 512;
            partitions.push(Partition {
                number,
                node: nodes
                    .iter()
                    .find(|(n, _)| *n == number)
                    .map(|(_, p)| p.clone()),
                start_bytes,
                size_bytes,
                fs: None,
            });
        }
    }
    for part in &mut partitions {
        part.fs = probe_range(&file, part.start_bytes, part.size_bytes);
    }
    Ok(Contents::Partitioned { table, partitions })
}

/// The filesystem in a byte range of the whole disk (a partition).
fn probe_range(file: &File, offset: u64, len: u64) -> Option<FsInfo> {
    if len == 0 {
        return None;
    }
    let mut probe = new_probe(file, offset, len).ok()?;
    match probe.do_safeprobe() {
        Ok(BlkidSafeprobeRet::Success) => fs_info(&probe, file, offset),
        _ => None,
    }
}

/// Every superblock signature on the device (the way wipefs lists them),
/// for the message about an ambivalent result.
fn signatures(file: &File) -> io::Result<Vec<Signature>> {
    let mut probe = new_probe(file, 0, 0)?;
    let mut out = Vec::new();
    // Low-level probing returns one signature per call.
    while let Ok(BlkidProbeRet::Success) = probe.do_probe() {
        out.push(Signature {
            fs_type: value(&probe, "TYPE").unwrap_or_else(|| "unknown".into()),
            uuid: value(&probe, "UUID"),
            label: value(&probe, "LABEL"),
            offset: value(&probe, "SBMAGIC_OFFSET").unwrap_or_else(|| "?".into()),
        });
        if out.len() >= 16 {
            break;
        }
    }
    Ok(out)
}

/// Size in bytes of a block device (0: no medium, a detached loop).
fn block_size(file: &File) -> io::Result<u64> {
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    // SAFETY: the ioctl writes one u64 into `size`, which outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// The kernel's partition nodes of a whole disk, by partition number, from
/// /sys/dev/block/MAJ:MIN/<name>/partition.
fn partition_nodes(meta: &fs::Metadata) -> Vec<(u32, PathBuf)> {
    if !meta.file_type().is_block_device() {
        return Vec::new();
    }
    let rdev = meta.rdev();
    let sys = PathBuf::from(format!(
        "/sys/dev/block/{}:{}",
        libc::major(rdev),
        libc::minor(rdev)
    ));
    let Ok(entries) = fs::read_dir(&sys) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(number) = fs::read_to_string(entry.path().join("partition")) else {
            continue;
        };
        if let Ok(number) = number.trim().parse() {
            out.push((number, Path::new("/dev").join(entry.file_name())));
        }
    }
    out
}

/// The filesystem on the device, when it holds exactly one.
pub fn probe_path(path: &Path) -> io::Result<Option<FsInfo>> {
    Ok(probe_contents(path)?.filesystem().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn have(tool: &str) -> bool {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn run(cmd: &str, args: &[&str], path: &Path) {
        let out = Command::new(cmd).args(args).arg(path).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// An image made by `mkfs`; under CI a missing tool is a failure.
    fn image(mkfs: &str, args: &[&str], size_mb: u64) -> Option<tempfile::TempPath> {
        if !have(mkfs) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{mkfs} is not installed (CI must have it)"
            );
            eprintln!("skipped: {mkfs} is not installed");
            return None;
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(size_mb << 20).unwrap();
        let path = file.into_temp_path();
        run(mkfs, args, &path);
        Some(path)
    }

    /// Every page libblkid reads when it probes a whole ext4 disk is one
    /// `prefetch` asks for ahead (else each is a round trip to the disk on
    /// the way to the mount). Observed, not assumed: a fresh loop device
    /// has nothing in its page cache, libblkid probes it without the
    /// prefetch, and mincore() then names the pages it read.
    #[test]
    fn prefetch_covers_what_libblkid_reads() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs the unit tests as root"
            );
            eprintln!("skipped: a loop device needs root");
            return;
        }
        // Sizes above ZFS's 64 MiB minimum (its labels at both ends are
        // most of what libblkid reads): a small disk and one past 4 GiB.
        for size_mb in [256u64, 4097] {
            let Some(img) = image("mkfs.ext4", &["-q", "-F"], size_mb) else {
                return;
            };
            let out = Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&img)
                .output()
                .unwrap();
            assert!(out.status.success(), "losetup: {out:?}");
            let node = String::from_utf8(out.stdout).unwrap().trim().to_string();
            struct Detach(String);
            impl Drop for Detach {
                fn drop(&mut self) {
                    let _ = Command::new("losetup").args(["-d", &self.0]).status();
                }
            }
            let _detach = Detach(node.clone());
            // Held open throughout: the last close of a block device
            // empties its page cache.
            let hold = open_device(Path::new(&node)).unwrap();
            let size = block_size(&hold).unwrap();
            {
                let file = open_device(Path::new(&node)).unwrap();
                let mut probe = new_probe(&file, 0, 0).unwrap();
                probe.enable_partitions(true).unwrap();
                assert!(matches!(
                    probe.do_safeprobe(),
                    Ok(BlkidSafeprobeRet::Success)
                ));
            }
            let read = resident_pages(&hold, size);
            assert!(!read.is_empty(), "mincore saw no page read");
            let ranges = prefetch_ranges(size);
            let outside: Vec<String> = read
                .iter()
                .filter(|&&at| !ranges.iter().any(|&(o, l)| o <= at && at < o + l))
                .map(|at| format!("{at} (end-{})", size - at))
                .collect();
            assert!(
                outside.is_empty(),
                "{size_mb} MiB: libblkid read pages the prefetch does not ask for: {outside:?}"
            );
            let asked: u64 = ranges.iter().map(|&(_, l)| l).sum();
            assert!(asked <= 1100 << 10, "{asked} bytes asked for");
        }
    }

    /// The offsets of the pages of a block device in its page cache.
    fn resident_pages(file: &File, size: u64) -> Vec<u64> {
        const PAGE: u64 = 4096;
        let pages = size.div_ceil(PAGE) as usize;
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of the whole device, unmapped
        // below; mincore writes one byte per page into `vec`, which has one.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(map, libc::MAP_FAILED, "{}", io::Error::last_os_error());
            let rc = libc::mincore(map, size as usize, vec.as_mut_ptr());
            let err = io::Error::last_os_error();
            libc::munmap(map, size as usize);
            assert_eq!(rc, 0, "mincore: {err}");
        }
        vec.iter()
            .enumerate()
            .filter(|(_, &b)| b & 1 == 1)
            .map(|(i, _)| i as u64 * PAGE)
            .collect()
    }

    #[test]
    fn prefetch_ranges_stay_on_the_device() {
        for size in [
            0u64,
            4096,
            100 << 10,
            1 << 20,
            3 << 20,
            256 << 20,
            (4097 << 20) + 512,
        ] {
            for (offset, len) in prefetch_ranges(size) {
                assert!(len > 0 && offset + len <= size, "{size}: {offset}+{len}");
                assert_eq!(offset % 4096, 0);
            }
        }
        assert!(prefetch_ranges(0).is_empty());
        // A device smaller than 512 KiB: read whole, once.
        assert_eq!(prefetch_ranges(100 << 10), vec![(0, 100 << 10)]);
    }

    #[test]
    fn ext4_uuid_label_and_errors_flag() {
        let uuid = "0f3e5a8c-1c2d-4b6e-9f00-123456789abc";
        let Some(img) = image(
            "mkfs.ext4",
            &["-q", "-F", "-U", uuid, "-L", "wsl-storage"],
            16,
        ) else {
            return;
        };
        let info = probe_path(&img).unwrap().unwrap();
        assert_eq!(info.fs_type, "ext4");
        assert!(info.uuid_is(&uuid.to_uppercase()));
        assert_eq!(info.label.as_deref(), Some("wsl-storage"));
        assert!(!info.has_errors);
        assert!(info.matches_type("ext4") && !info.matches_type("xfs"));

        run("tune2fs", &["-E", "force_fsck"], &img);
        assert!(probe_path(&img).unwrap().unwrap().has_errors);
    }

    #[test]
    fn ext2_and_ext3_are_told_apart() {
        if let Some(img) = image("mkfs.ext2", &["-q", "-F"], 8) {
            assert_eq!(probe_path(&img).unwrap().unwrap().fs_type, "ext2");
        }
        if let Some(img) = image("mkfs.ext3", &["-q", "-F"], 8) {
            let info = probe_path(&img).unwrap().unwrap();
            assert_eq!(info.fs_type, "ext3");
            assert!(info.matches_type("ext4"), "the ext4 driver mounts ext3");
            assert!(!info.matches_type("ext2"));
        }
    }

    #[test]
    fn vfat_xfs_and_btrfs() {
        if let Some(img) = image("mkfs.vfat", &["-i", "1234ABCD", "-n", "DATA"], 40) {
            let info = probe_path(&img).unwrap().unwrap();
            assert_eq!(info.fs_type, "vfat");
            assert_eq!(info.uuid.as_deref(), Some("1234-ABCD"));
            assert_eq!(info.label.as_deref(), Some("DATA"));
        }
        if let Some(img) = image(
            "mkfs.xfs",
            &[
                "-q",
                "-f",
                "-L",
                "xlabel",
                "-m",
                "uuid=11111111-2222-3333-4444-555555555555",
            ],
            320,
        ) {
            let info = probe_path(&img).unwrap().unwrap();
            assert_eq!(info.fs_type, "xfs");
            assert_eq!(info.label.as_deref(), Some("xlabel"));
            assert!(info.uuid_is("11111111-2222-3333-4444-555555555555"));
        }
        if let Some(img) = image(
            "mkfs.btrfs",
            &[
                "-q",
                "-f",
                "-L",
                "blabel",
                "-U",
                "22222222-3333-4444-5555-666666666666",
            ],
            128,
        ) {
            let info = probe_path(&img).unwrap().unwrap();
            assert_eq!(info.fs_type, "btrfs");
            assert_eq!(info.label.as_deref(), Some("blabel"));
            assert!(info.uuid_is("22222222-3333-4444-5555-666666666666"));
            assert!(!info.matches_type("ext4"));
        }
    }

    #[test]
    fn a_gpt_disk_is_described_with_the_filesystem_of_each_partition() {
        if !have("sgdisk") {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "sgdisk");
            return;
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(64 << 20).unwrap();
        let img = file.into_temp_path();
        run("sgdisk", &["-n", "1:2048:+30M", "-n", "2:0:0"], &img);
        // ext4 in partition 1, written at its offset (no loop device needed).
        let part = tempfile::NamedTempFile::new().unwrap();
        part.as_file().set_len(30 << 20).unwrap();
        let part = part.into_temp_path();
        let uuid = "33333333-4444-4555-8666-777777777777";
        run(
            "mkfs.ext4",
            &["-q", "-F", "-U", uuid, "-L", "inpart"],
            &part,
        );
        let out = Command::new("dd")
            .arg(format!("if={}", part.display()))
            .arg(format!("of={}", img.display()))
            .args(["bs=1M", "seek=1", "conv=notrunc", "status=none"])
            .output()
            .unwrap();
        assert!(out.status.success());

        let contents = probe_contents(&img).unwrap();
        let Contents::Partitioned { table, partitions } = &contents else {
            panic!("not described as partitioned: {contents:?}");
        };
        assert_eq!(table, "gpt");
        assert_eq!(partitions.len(), 2, "{partitions:?}");
        assert_eq!(partitions[0].number, 1);
        assert_eq!(partitions[0].start_bytes, 1 << 20);
        let fs = partitions[0].fs.as_ref().unwrap();
        assert_eq!(fs.fs_type, "ext4");
        assert!(fs.uuid_is(uuid));
        assert_eq!(partitions[1].fs, None);
        assert_eq!(probe_path(&img).unwrap(), None);
    }

    #[test]
    fn two_signatures_are_ambiguous_and_both_are_named() {
        let (Some(xfs), Some(two)) = (
            image("mkfs.xfs", &["-q", "-f"], 320),
            image("mkfs.ext4", &["-q", "-F"], 16),
        ) else {
            return;
        };
        // The XFS superblock in sector 0, where ext4 leaves its boot block.
        let out = Command::new("dd")
            .arg(format!("if={}", xfs.display()))
            .arg(format!("of={}", two.display()))
            .args(["bs=512", "count=1", "conv=notrunc", "status=none"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let contents = probe_contents(&two).unwrap();
        let Contents::Ambiguous { signatures } = &contents else {
            panic!("not ambiguous: {contents:?}");
        };
        assert!(
            signatures.iter().any(|s| s.fs_type == "xfs")
                && signatures
                    .iter()
                    .any(|s| s.fs_type == "ext4" && s.uuid.is_some()),
            "{signatures:?}"
        );
        assert!(signatures
            .iter()
            .all(|s| s.to_string().contains(" at offset ")));
        assert_eq!(probe_path(&two).unwrap(), None);
    }

    #[test]
    fn zeros_are_empty_and_an_empty_file_has_no_medium() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert_eq!(probe_contents(file.path()).unwrap(), Contents::NoMedium);
        file.as_file().set_len(1 << 20).unwrap();
        assert_eq!(probe_contents(file.path()).unwrap(), Contents::Empty);
        // A FIFO is refused, not opened for reading (which would block).
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(probe_contents(&fifo).is_err());
    }
}
