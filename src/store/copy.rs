//! The copy engine of `migrate`: a tree copy that keeps everything a Nix
//! store relies on (hard links, owners, modes, mtimes, symlinks, xattrs and
//! ACLs, device nodes and FIFOs), walking both trees through directory fds
//! with `O_NOFOLLOW`, so a symlink in the source is copied as a symlink and
//! never followed, and a FIFO is never opened.
//!
//! Data goes through copy_file_range (sendfile, then read/write where the
//! kernel refuses it across filesystems), so no file content passes through
//! user space when the kernel can avoid it. A few worker threads pull names
//! from one shared directory stream, which keeps both disks busy on a cold
//! cache without holding a list of the whole store in memory.
//!
//! Resumable: a file whose copy has the source's size and mtime is complete
//! (the mtime is the last thing set), anything else is copied again into a
//! new file that replaces it: an entry found in the copy is looked at with
//! lstat, never opened for writing, never followed.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, renameat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fstat, fstatat, futimens, mkdirat, mknodat, utimensat, FileStat, Mode, SFlag,
    UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};

/// Counters the progress display reads while the workers run.
#[derive(Debug, Default)]
pub struct Progress {
    /// Entries done (files, symlinks, dirs, hard links).
    pub entries: AtomicU64,
    /// Bytes of file content copied (or found complete on resume).
    pub bytes: AtomicU64,
    /// Of `bytes`: found complete from an interrupted run (--resume).
    pub reused: AtomicU64,
    /// Entries made as hard links to an earlier copy.
    pub links: AtomicU64,
    /// Sockets left out (a socket cannot be copied; its server recreates it).
    pub sockets: AtomicU64,
}

/// What a tree holds, counted the way the copy will need room for it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Entries (each name, hard links included).
    pub entries: u64,
    /// Distinct inodes (what the target filesystem must allocate).
    pub inodes: u64,
    /// Names that are a second (third ...) link to an inode counted already.
    pub hard_links: u64,
    /// File content, each inode once.
    pub bytes: u64,
    /// Space on an ext4 with 4 KiB blocks: content rounded up (with extent
    /// blocks), directories as large as in the source, long symlinks a
    /// block each.
    pub blocks_bytes: u64,
}

const BLOCK: u64 = 4096;

/// How deep below /nix the copy goes. Real store paths are far shallower
/// (a few dozen levels at most); the walk holds two directory fds and a
/// stack frame per level in each worker, so a runaway tree (10,000 levels)
/// is refused while measuring, before anything is written, naming it.
pub const MAX_DEPTH: usize = 256;

fn too_deep(rel: &Path) -> anyhow::Error {
    let shown: String = rel
        .components()
        .take(4)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    crate::exit::fail(
        crate::exit::Exit::UnsafeStore,
        format!(
            "{shown}/... in the source /nix is more than {MAX_DEPTH} directories deep; migrate copies nothing that deep (no store path needs it) and has written nothing. Remove that tree (if it is a store path, delete it with `nix-store --delete` after removing its roots), then run migrate again"
        ),
    )
}

impl Size {
    pub fn add(&mut self, other: &Size) {
        self.entries += other.entries;
        self.inodes += other.inodes;
        self.hard_links += other.hard_links;
        self.bytes += other.bytes;
        self.blocks_bytes += other.blocks_bytes;
    }

    pub fn add_inode(&mut self, st: &FileStat) {
        self.inodes += 1;
        let kind = st.st_mode & libc::S_IFMT;
        let len = st.st_size.max(0) as u64;
        if kind == libc::S_IFREG {
            self.bytes += len;
            // A large file also needs extent tree blocks: one per 340
            // extents of at most 128 MiB, so one per GiB is generous.
            self.blocks_bytes += len.div_ceil(BLOCK) * BLOCK + len.div_ceil(1 << 30) * BLOCK;
        } else if kind == libc::S_IFDIR {
            // As many blocks as the source's directory has (its size is
            // what its entries take), at least one.
            self.blocks_bytes += len.div_ceil(BLOCK).max(1) * BLOCK;
        } else if kind == libc::S_IFLNK && len >= 60 {
            // ext4 keeps a target shorter than 60 bytes in the inode;
            // a longer one takes a block of its own.
            self.blocks_bytes += BLOCK;
        }
    }
}

/// Which names of a directory the copy takes. `rel` is the directory's path
/// relative to the root of the copy ("" for the root itself).
pub type Filter<'a> = &'a (dyn Fn(&Path, &OsStr) -> bool + Sync);

/// How file content is moved; the first refusal of the kernel moves every
/// later file down to the next method.
const VIA_COPY_FILE_RANGE: u8 = 0;
const VIA_SENDFILE: u8 = 1;
const VIA_READ_WRITE: u8 = 2;

pub struct Engine<'a> {
    /// The root of the copy (the `.partial` dir): hard links are made
    /// relative to it.
    dst_root: &'a OwnedFd,
    /// A source inode (dev, ino) with several links -> its first copy,
    /// relative to `dst_root`.
    links: Mutex<HashMap<(u64, u64), Box<Path>>>,
    pub progress: Progress,
    via: AtomicU8,
    abort: AtomicBool,
    /// Test hook (see `migrate`): stop the process after this many entries.
    stop_after: Option<u64>,
    /// Continuing a .partial: clean up our own leftovers.
    resume: bool,
}

/// Open `rel` (relative, plain components) below `root` as a directory,
/// refusing a symlink at every step.
pub fn open_dir_beneath<Fd: AsFd>(root: &Fd, rel: &Path) -> Result<OwnedFd> {
    let mut fd = dup_fd(root.as_fd())?;
    for comp in rel.components() {
        let name = comp.as_os_str();
        fd = open_dir_nofollow(&fd, name)
            .with_context(|| format!("opening {} (a directory, not a symlink)", rel.display()))?;
    }
    Ok(fd)
}

fn dup_fd(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    fd.try_clone_to_owned()
        .context("duplicating a directory fd")
}

fn open_dir_nofollow<Fd: AsFd>(parent: &Fd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        parent.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Source directories are read with O_NOATIME: the copy never writes to the
/// source, not even its access times.
fn open_src_dir<Fd: AsFd>(parent: &Fd, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(
        parent.as_fd(),
        name,
        OFlag::O_RDONLY
            | OFlag::O_DIRECTORY
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NOATIME,
        Mode::empty(),
    )
}

fn lstat_at<Fd: AsFd>(dir: &Fd, name: &OsStr) -> nix::Result<FileStat> {
    fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn kind(st: &FileStat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// The names in a directory, except "." and "..".
fn names(dir: &OwnedFd) -> Result<Vec<OsString>> {
    let mut d = Dir::from_fd(dup_fd(dir.as_fd())?).context("reading a directory")?;
    let mut out = Vec::new();
    for entry in d.iter() {
        let entry = entry.context("reading a directory")?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(out)
}

/// Inodes with several links counted so far (hard links count once).
pub type Seen = Mutex<HashSet<(u64, u64)>>;

/// Measure what copying `rel` under `src_root` (through `filter`) needs:
/// `rel` itself when it is the root, and everything below it.
pub fn measure(
    src_root: &OwnedFd,
    rel: &Path,
    filter: Filter<'_>,
    seen: &Seen,
    size: &mut Size,
) -> Result<()> {
    let dir = open_dir_beneath(src_root, rel)?;
    let st = fstat(dir.as_fd()).with_context(|| format!("inspecting {}", rel.display()))?;
    if rel.as_os_str().is_empty() {
        size.entries += 1;
        size.add_inode(&st);
    }
    measure_dir(&dir, rel, filter, seen, size)
}

/// Like `measure` for everything below `rel` (not `rel` itself), its
/// entries spread over `workers` threads: on a cold cache the walk waits
/// for inode reads, and several in flight finish sooner.
pub fn measure_parallel(
    src_root: &OwnedFd,
    rel: &Path,
    filter: Filter<'_>,
    seen: &Seen,
    workers: usize,
) -> Result<Size> {
    let dir = open_dir_beneath(src_root, rel)?;
    let listing = Mutex::new(
        names(&dir)
            .with_context(|| format!("listing {}", rel.display()))?
            .into_iter(),
    );
    let total = Mutex::new(Size::default());
    let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                let mut size = Size::default();
                loop {
                    let next = listing.lock().map(|mut it| it.next()).unwrap_or(None);
                    let Some(name) = next else { break };
                    if !filter(rel, &name) {
                        continue;
                    }
                    if let Err(e) = measure_entry(&dir, rel, &name, filter, seen, &mut size) {
                        if let Ok(mut errs) = errors.lock() {
                            errs.push(e);
                        }
                        break;
                    }
                }
                if let Ok(mut t) = total.lock() {
                    t.add(&size);
                }
            });
        }
    });
    if let Some(e) = errors
        .into_inner()
        .ok()
        .and_then(|mut v| v.drain(..).next())
    {
        return Err(e);
    }
    total
        .into_inner()
        .map_err(|_| anyhow!("a measuring thread panicked"))
}

fn measure_dir(
    dir: &OwnedFd,
    rel: &Path,
    filter: Filter<'_>,
    seen: &Seen,
    size: &mut Size,
) -> Result<()> {
    for name in names(dir).with_context(|| format!("listing {}", rel.display()))? {
        if filter(rel, &name) {
            measure_entry(dir, rel, &name, filter, seen, size)?;
        }
    }
    Ok(())
}

fn measure_entry(
    dir: &OwnedFd,
    rel: &Path,
    name: &OsStr,
    filter: Filter<'_>,
    seen: &Seen,
    size: &mut Size,
) -> Result<()> {
    let st = match lstat_at(dir, name) {
        Ok(st) => st,
        // Gone since the listing (a temp file of a running build).
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("inspecting {}", rel.join(name).display()))
        }
    };
    size.entries += 1;
    if kind(&st) == libc::S_IFSOCK {
        return Ok(());
    }
    if st.st_nlink > 1 && kind(&st) != libc::S_IFDIR {
        let first = seen
            .lock()
            .map_err(|_| anyhow!("the hard link set is poisoned"))?
            .insert((st.st_dev, st.st_ino));
        if !first {
            size.hard_links += 1;
            return Ok(());
        }
    }
    size.add_inode(&st);
    if kind(&st) == libc::S_IFDIR {
        if rel.components().count() + 1 > MAX_DEPTH {
            return Err(too_deep(&rel.join(name)));
        }
        let sub = open_src_dir(dir, name)
            .with_context(|| format!("opening {}", rel.join(name).display()))?;
        measure_dir(&sub, &rel.join(name), filter, seen, size)?;
    }
    Ok(())
}

impl<'a> Engine<'a> {
    pub fn new(dst_root: &'a OwnedFd, stop_after: Option<u64>, resume: bool) -> Engine<'a> {
        Engine {
            dst_root,
            links: Mutex::new(HashMap::new()),
            progress: Progress::default(),
            via: AtomicU8::new(VIA_COPY_FILE_RANGE),
            abort: AtomicBool::new(false),
            stop_after,
            resume,
        }
    }

    /// Copy the directory `rel` (relative to both roots) with the names
    /// `filter` lets through, its entries spread over `workers` threads,
    /// each taking the next name of the shared listing. The directory's own
    /// metadata is set last.
    pub fn copy_dir_parallel(
        &self,
        src_root: &OwnedFd,
        rel: &Path,
        filter: Filter<'_>,
        workers: usize,
    ) -> Result<()> {
        let src = open_dir_beneath(src_root, rel)?;
        let src_st = fstat(src.as_fd()).with_context(|| format!("inspecting {}", rel.display()))?;
        let dst = self.make_dir_path(rel)?;
        let listing = Mutex::new(
            names(&src)
                .with_context(|| format!("listing {}", rel.display()))?
                .into_iter(),
        );
        let errors: Mutex<Vec<anyhow::Error>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..workers.max(1) {
                scope.spawn(|| loop {
                    if self.abort.load(Ordering::Relaxed) {
                        return;
                    }
                    let next = listing.lock().map(|mut it| it.next()).unwrap_or(None);
                    let Some(name) = next else { return };
                    if !filter(rel, &name) {
                        continue;
                    }
                    if let Err(e) = self.copy_entry(&src, &dst, rel, &name, filter) {
                        self.abort.store(true, Ordering::Relaxed);
                        if let Ok(mut errs) = errors.lock() {
                            errs.push(e);
                        }
                        return;
                    }
                });
            }
        });
        if let Some(e) = errors
            .into_inner()
            .ok()
            .and_then(|mut v| v.drain(..).next())
        {
            return Err(e);
        }
        self.finish_dir(&src, &src_st, &dst, rel)
    }

    /// Set the metadata of the directory `rel` (both roots) again, after
    /// something was created in it later.
    pub fn copy_dir_meta(&self, src_root: &OwnedFd, rel: &Path) -> Result<()> {
        let src = open_dir_beneath(src_root, rel)?;
        let st = fstat(src.as_fd()).with_context(|| format!("inspecting {}", rel.display()))?;
        let dst = self.make_dir_path(rel)?;
        self.finish_dir(&src, &st, &dst, rel)
    }

    /// Create `rel` below the destination root (each missing component
    /// mode 0700 until its metadata is copied), refusing symlinks.
    fn make_dir_path(&self, rel: &Path) -> Result<OwnedFd> {
        let mut fd = dup_fd(self.dst_root.as_fd())?;
        for comp in rel.components() {
            let name = comp.as_os_str();
            match mkdirat(fd.as_fd(), name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("creating {} in the copy", rel.display()))
                }
            }
            fd = open_dir_nofollow(&fd, name).with_context(|| {
                format!(
                    "opening {} in the copy (a directory, not a symlink)",
                    rel.display()
                )
            })?;
        }
        Ok(fd)
    }

    fn copy_entry(
        &self,
        src_dir: &OwnedFd,
        dst_dir: &OwnedFd,
        rel_dir: &Path,
        name: &OsStr,
        filter: Filter<'_>,
    ) -> Result<()> {
        let rel = rel_dir.join(name);
        let st = match lstat_at(src_dir, name) {
            Ok(st) => st,
            // A store path is immutable while valid: gone means collected.
            Err(Errno::ENOENT) => {
                return Err(anyhow!(
                    "{} vanished from the source during the copy (a garbage collection?); run `wsl-storage-mount migrate --resume`, which starts from a new database snapshot",
                    rel.display()
                ))
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("inspecting {} in the source", rel.display()))
            }
        };
        match kind(&st) {
            libc::S_IFDIR => self.copy_subdir(src_dir, dst_dir, &rel, name, &st, filter)?,
            libc::S_IFSOCK => {
                log::debug!("{}: a socket, left out", rel.display());
                self.progress.sockets.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            _ => self.copy_file(src_dir, dst_dir, &rel, name, &st)?,
        }
        let done = self.progress.entries.fetch_add(1, Ordering::Relaxed) + 1;
        if self.stop_after == Some(done) {
            // The test hook: stop the whole process here, as if the copy
            // were slow, so a test can kill it half way for real.
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
        }
        Ok(())
    }

    fn copy_subdir(
        &self,
        src_dir: &OwnedFd,
        dst_dir: &OwnedFd,
        rel: &Path,
        name: &OsStr,
        st: &FileStat,
        filter: Filter<'_>,
    ) -> Result<()> {
        if rel.components().count() > MAX_DEPTH {
            return Err(too_deep(rel));
        }
        let src = open_src_dir(src_dir, name)
            .with_context(|| format!("opening {} in the source", rel.display()))?;
        let now = fstat(src.as_fd()).with_context(|| format!("inspecting {}", rel.display()))?;
        if now.st_ino != st.st_ino || now.st_dev != st.st_dev {
            return Err(anyhow!(
                "{} changed while it was being copied; run again with --resume",
                rel.display()
            ));
        }
        match mkdirat(dst_dir.as_fd(), name, Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("creating {} in the copy", rel.display()))
            }
        }
        let dst = open_dir_nofollow(dst_dir, name).with_context(|| {
            format!(
                "opening {} in the copy (a directory, not a symlink)",
                rel.display()
            )
        })?;
        for child in names(&src).with_context(|| format!("listing {}", rel.display()))? {
            if self.abort.load(Ordering::Relaxed) {
                return Err(anyhow!("stopped after an error elsewhere"));
            }
            if filter(rel, &child) {
                self.copy_entry(&src, &dst, rel, &child, filter)?;
            }
        }
        self.finish_dir(&src, &now, &dst, rel)
    }

    /// A directory's metadata, after its entries (creating them changed
    /// its mtime).
    fn finish_dir(&self, src: &OwnedFd, st: &FileStat, dst: &OwnedFd, rel: &Path) -> Result<()> {
        if self.resume {
            // A run killed between making a temporary name and renaming it
            // over the entry left it here: ours, and not part of the store.
            for name in
                names(dst).with_context(|| format!("listing {} in the copy", rel.display()))?
            {
                if name.as_bytes().starts_with(TMP_PREFIX.as_bytes()) {
                    unlinkat(dst.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                        .with_context(|| {
                            format!(
                                "removing the leftover {} in the copy",
                                rel.join(&name).display()
                            )
                        })?;
                }
            }
        }
        copy_xattrs_fd(src.as_fd(), dst.as_fd())
            .with_context(|| format!("copying the xattrs of {}", rel.display()))?;
        set_owner_mode_times(dst.as_fd(), st)
            .with_context(|| format!("setting owner, mode and times of {}", rel.display()))
    }

    /// A regular file, a symlink or a node. Nix's optimiser hard-links
    /// symlinks as well as files, so every kind keeps its links.
    fn copy_file(
        &self,
        src_dir: &OwnedFd,
        dst_dir: &OwnedFd,
        rel: &Path,
        name: &OsStr,
        st: &FileStat,
    ) -> Result<()> {
        let k = kind(st);
        if st.st_nlink <= 1 {
            return self.make_one(src_dir, dst_dir, rel, name, st, k);
        }
        let key = (st.st_dev, st.st_ino);
        let mut links = self
            .links
            .lock()
            .map_err(|_| anyhow!("the hard link map is poisoned"))?;
        if let Some(first) = links.get(&key) {
            let first = first.to_path_buf();
            drop(links);
            self.link_to(&first, dst_dir, rel, name)?;
            self.progress.links.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if k == libc::S_IFREG {
            if self.complete_already(dst_dir, rel, name, st)? {
                links.insert(key, rel.to_path_buf().into_boxed_path());
                return Ok(());
            }
            // Created (empty) before the map names it, so a link made by
            // another worker meanwhile shares the inode the content goes to.
            let dst = fresh_dst_file(dst_dir, name)
                .with_context(|| format!("creating {} in the copy", rel.display()))?;
            links.insert(key, rel.to_path_buf().into_boxed_path());
            drop(links);
            return self.fill_file(src_dir, dst, rel, name, st);
        }
        // A symlink or a node is made whole while the map is held: there
        // is no content for a link to wait for.
        self.make_one(src_dir, dst_dir, rel, name, st, k)?;
        links.insert(key, rel.to_path_buf().into_boxed_path());
        Ok(())
    }

    fn make_one(
        &self,
        src_dir: &OwnedFd,
        dst_dir: &OwnedFd,
        rel: &Path,
        name: &OsStr,
        st: &FileStat,
        k: libc::mode_t,
    ) -> Result<()> {
        match k {
            libc::S_IFREG => {
                if self.complete_already(dst_dir, rel, name, st)? {
                    return Ok(());
                }
                let dst = fresh_dst_file(dst_dir, name)
                    .with_context(|| format!("creating {} in the copy", rel.display()))?;
                self.fill_file(src_dir, dst, rel, name, st)
            }
            libc::S_IFLNK => self.copy_symlink(src_dir, dst_dir, rel, name, st),
            // FIFOs and device nodes: made with mknod, never opened.
            _ => self.copy_node(src_dir, dst_dir, rel, name, st, k),
        }
    }

    fn fill_file(
        &self,
        src_dir: &OwnedFd,
        dst: File,
        rel: &Path,
        name: &OsStr,
        st: &FileStat,
    ) -> Result<()> {
        let len = st.st_size.max(0) as u64;
        // O_NONBLOCK: should a FIFO have replaced the file since the
        // lstat, opening it does not hang; the fstat below refuses it.
        let src = openat(
            src_dir.as_fd(),
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NOATIME
                | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .with_context(|| format!("opening {} in the source", rel.display()))?;
        let now = fstat(src.as_fd()).with_context(|| format!("inspecting {}", rel.display()))?;
        if kind(&now) != libc::S_IFREG || now.st_ino != st.st_ino || now.st_dev != st.st_dev {
            return Err(anyhow!(
                "{} changed while it was being copied; run again with --resume",
                rel.display()
            ));
        }
        let src = File::from(src);
        self.copy_data(&src, &dst, len)
            .with_context(|| format!("copying {}", rel.display()))?;
        // Start writing it to disk now, without waiting: the syncfs before
        // the rename then finds little left, and both disks stay busy.
        // Only a hint: an error here is found again by that syncfs.
        unsafe {
            libc::sync_file_range(dst.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
        copy_xattrs_fd(src.as_fd(), dst.as_fd())
            .with_context(|| format!("copying the xattrs of {}", rel.display()))?;
        set_owner_mode_times(dst.as_fd(), st)
            .with_context(|| format!("setting owner, mode and times of {}", rel.display()))
    }

    /// On resume: is `name` in the copy a complete copy of the source file
    /// from an earlier run? Looked at by lstat only (never opened): a
    /// regular file with the source's size, mode and mtime (set last), and
    /// no more links than the source has (a name planted as a hard link to
    /// a file elsewhere has one more). Anything else is replaced by a new
    /// file, never written into.
    fn complete_already(
        &self,
        dst_dir: &OwnedFd,
        rel: &Path,
        name: &OsStr,
        st: &FileStat,
    ) -> Result<bool> {
        if !self.resume {
            return Ok(false);
        }
        let have = match lstat_at(dst_dir, name) {
            Ok(h) => h,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => {
                return Err(e).with_context(|| format!("inspecting {} in the copy", rel.display()))
            }
        };
        let complete = kind(&have) == libc::S_IFREG
            && have.st_size == st.st_size
            && have.st_mtime == st.st_mtime
            && have.st_mtime_nsec == st.st_mtime_nsec
            && have.st_mode == st.st_mode
            && have.st_nlink <= st.st_nlink;
        if complete {
            let len = st.st_size.max(0) as u64;
            self.progress.bytes.fetch_add(len, Ordering::Relaxed);
            self.progress.reused.fetch_add(len, Ordering::Relaxed);
        }
        Ok(complete)
    }

    fn copy_data(&self, src: &File, dst: &File, len: u64) -> Result<()> {
        let mut left = len;
        while left > 0 {
            let chunk = left.min(1 << 30) as usize;
            let via = self.via.load(Ordering::Relaxed);
            let moved = match via {
                VIA_COPY_FILE_RANGE => {
                    match nix::fcntl::copy_file_range(src.as_fd(), None, dst.as_fd(), None, chunk) {
                        Ok(n) => n,
                        // Across filesystems without the driver's support
                        // (ext4 to ext4 on two disks), or an old kernel.
                        Err(Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL)
                            if left == len =>
                        {
                            self.via.store(VIA_SENDFILE, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                VIA_SENDFILE => {
                    match nix::sys::sendfile::sendfile(dst.as_fd(), src.as_fd(), None, chunk) {
                        Ok(n) => n,
                        Err(Errno::EINVAL | Errno::ENOSYS) if left == len => {
                            self.via.store(VIA_READ_WRITE, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                _ => read_write(src, dst, chunk)?,
            };
            if moved == 0 {
                return Err(anyhow!(
                    "the source file shrank while it was copied ({left} bytes short)"
                ));
            }
            left -= moved as u64;
            self.progress
                .bytes
                .fetch_add(moved as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `name` in `dst_dir` as a hard link to `first` (relative to the
    /// destination root). On resume the link may be there already.
    fn link_to(&self, first: &Path, dst_dir: &OwnedFd, rel: &Path, name: &OsStr) -> Result<()> {
        match linkat(
            self.dst_root.as_fd(),
            first,
            dst_dir.as_fd(),
            name,
            AtFlags::empty(),
        ) {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST) => {
                let want = fstatat(self.dst_root.as_fd(), first, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .with_context(|| format!("inspecting {} in the copy", first.display()))?;
                let have = lstat_at(dst_dir, name)
                    .with_context(|| format!("inspecting {} in the copy", rel.display()))?;
                if have.st_ino == want.st_ino {
                    return Ok(());
                }
                // A separate copy left by an interrupted run: replace it
                // (in our own .partial) by the link, atomically.
                let tmp = tmp_name(name);
                linkat(
                    self.dst_root.as_fd(),
                    first,
                    dst_dir.as_fd(),
                    tmp.as_os_str(),
                    AtFlags::empty(),
                )
                .with_context(|| format!("linking {} in the copy", rel.display()))?;
                renameat(dst_dir.as_fd(), tmp.as_os_str(), dst_dir.as_fd(), name).with_context(
                    || format!("replacing {} in the copy by a hard link", rel.display()),
                )
            }
            Err(e) => Err(e).with_context(|| {
                format!(
                    "linking {} to {} in the copy",
                    rel.display(),
                    first.display()
                )
            }),
        }
    }

    fn copy_symlink(
        &self,
        src_dir: &OwnedFd,
        dst_dir: &OwnedFd,
        rel: &Path,
        name: &OsStr,
        st: &FileStat,
    ) -> Result<()> {
        let target = readlinkat(src_dir.as_fd(), name)
            .with_context(|| format!("reading the symlink {}", rel.display()))?;
        match symlinkat(target.as_os_str(), dst_dir.as_fd(), name) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                // Kept only when it is the same link and not shared with a
                // name elsewhere (its owner and times are set below).
                let same = readlinkat(dst_dir.as_fd(), name).is_ok_and(|t| t == target)
                    && lstat_at(dst_dir, name).is_ok_and(|h| h.st_nlink <= st.st_nlink);
                if !same {
                    let tmp = tmp_name(name);
                    symlinkat(target.as_os_str(), dst_dir.as_fd(), tmp.as_os_str()).with_context(
                        || format!("creating the symlink {} in the copy", rel.display()),
                    )?;
                    renameat(dst_dir.as_fd(), tmp.as_os_str(), dst_dir.as_fd(), name)
                        .with_context(|| format!("replacing {} in the copy", rel.display()))?;
                }
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("creating the symlink {} in the copy", rel.display()))
            }
        }
        copy_xattrs_at(src_dir, dst_dir, name)
            .with_context(|| format!("copying the xattrs of {}", rel.display()))?;
        set_at(dst_dir, name, st)
            .with_context(|| format!("setting owner and times of {}", rel.display()))
    }

    fn copy_node(
        &self,
        src_dir: &OwnedFd,
        dst_dir: &OwnedFd,
        rel: &Path,
        name: &OsStr,
        st: &FileStat,
        k: libc::mode_t,
    ) -> Result<()> {
        let flag = SFlag::from_bits_truncate(k);
        let make = |at: &OsStr| {
            mknodat(
                dst_dir.as_fd(),
                at,
                flag,
                Mode::from_bits_truncate(0o600),
                st.st_rdev,
            )
        };
        match make(name) {
            Ok(()) => {}
            // Left by an earlier run, or planted: never reused (its owner
            // and mode are set below, which would change an inode linked
            // from elsewhere). A new node replaces it.
            Err(Errno::EEXIST) => {
                let tmp = tmp_name(name);
                let _ = unlinkat(dst_dir.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
                make(tmp.as_os_str())
                    .with_context(|| format!("creating {} in the copy", rel.display()))?;
                renameat(dst_dir.as_fd(), tmp.as_os_str(), dst_dir.as_fd(), name)
                    .with_context(|| format!("replacing {} in the copy", rel.display()))?;
            }
            Err(e) => {
                return Err(e).with_context(|| format!("creating {} in the copy", rel.display()))
            }
        }
        let have =
            lstat_at(dst_dir, name).with_context(|| format!("inspecting {}", rel.display()))?;
        if kind(&have) != k {
            return Err(anyhow!(
                "{} in the copy is not the kind of file it is in the source; remove the .partial and start again",
                rel.display()
            ));
        }
        copy_xattrs_at(src_dir, dst_dir, name)
            .with_context(|| format!("copying the xattrs of {}", rel.display()))?;
        set_at(dst_dir, name, st)?;
        fchmodat_nofollow(dst_dir, name, st.st_mode & 0o7777)
            .with_context(|| format!("setting the mode of {}", rel.display()))
    }
}

/// Temporary names in the copy (a hard link or symlink replacing a stale
/// entry) start with this; `--resume` removes leftovers.
const TMP_PREFIX: &str = ".wsm-tmp-";

fn tmp_name(name: &OsStr) -> OsString {
    let mut tmp = OsString::from(TMP_PREFIX);
    tmp.push(name);
    tmp
}

/// A new, empty file at `name`, made by this run: O_EXCL, so an existing
/// entry (a hard link to a file elsewhere, a FIFO, a link, what an earlier
/// run left) is never opened, let alone written into. An existing entry is
/// replaced: the new file is made at a temporary name and renamed over it.
fn fresh_dst_file(dir: &OwnedFd, name: &OsStr) -> nix::Result<File> {
    let flags = OFlag::O_WRONLY
        | OFlag::O_CREAT
        | OFlag::O_EXCL
        | OFlag::O_NOFOLLOW
        | OFlag::O_CLOEXEC
        | OFlag::O_NONBLOCK;
    match openat(dir.as_fd(), name, flags, Mode::from_bits_truncate(0o600)) {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno::EEXIST) => {
            let tmp = tmp_name(name);
            match unlinkat(dir.as_fd(), tmp.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(e),
            }
            let fd = openat(
                dir.as_fd(),
                tmp.as_os_str(),
                flags,
                Mode::from_bits_truncate(0o600),
            )?;
            renameat(dir.as_fd(), tmp.as_os_str(), dir.as_fd(), name)?;
            Ok(File::from(fd))
        }
        Err(e) => Err(e),
    }
}

fn read_write(src: &File, dst: &File, chunk: usize) -> Result<usize> {
    let mut buf = vec![0u8; chunk.min(256 << 10)];
    let mut src = src;
    let mut dst = dst;
    let n = src.read(&mut buf)?;
    dst.write_all(&buf[..n])?;
    Ok(n)
}

fn set_owner_mode_times(fd: BorrowedFd<'_>, st: &FileStat) -> nix::Result<()> {
    fchown(
        fd,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )?;
    // chown clears setuid/setgid bits: the mode comes after it.
    fchmod(fd, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
    futimens(
        fd,
        &TimeSpec::new(st.st_atime, st.st_atime_nsec),
        &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

/// Owner and times of an entry that cannot be opened (a symlink, a node).
fn set_at(dir: &OwnedFd, name: &OsStr, st: &FileStat) -> nix::Result<()> {
    fchownat(
        dir.as_fd(),
        name,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    utimensat(
        dir.as_fd(),
        name,
        &TimeSpec::new(st.st_atime, st.st_atime_nsec),
        &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        UtimensatFlags::NoFollowSymlink,
    )
}

fn fchmodat_nofollow(dir: &OwnedFd, name: &OsStr, mode: u32) -> nix::Result<()> {
    // A FIFO or a device node is never opened; its mode is set by name
    // (fchmodat cannot refuse to follow, but the entry was just checked to
    // be the node we made in our own directory).
    nix::sys::stat::fchmodat(
        dir.as_fd(),
        name,
        Mode::from_bits_truncate(mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
}

/// The xattr names of an open file ("" separated list), ACLs included
/// (system.posix_acl_access/default).
fn xattr_names_fd(fd: BorrowedFd<'_>) -> std::io::Result<Vec<u8>> {
    let raw = fd.as_raw_fd();
    xattr_list(|buf, len| unsafe { libc::flistxattr(raw, buf, len) })
}

/// The list of xattr names; none where the filesystem has no xattrs.
fn xattr_list(call: impl Fn(*mut libc::c_char, usize) -> isize) -> std::io::Result<Vec<u8>> {
    match xattr_value(|buf, len| call(buf.cast(), len)) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(Vec::new()),
        other => other,
    }
}

/// Ask for the size, then the bytes; again when it grew in between.
fn xattr_value(call: impl Fn(*mut libc::c_void, usize) -> isize) -> std::io::Result<Vec<u8>> {
    loop {
        let n = call(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        let got = call(buf.as_mut_ptr().cast(), buf.len());
        if got < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        return Ok(buf);
    }
}

fn copy_xattrs_fd(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> std::io::Result<()> {
    let list = xattr_names_fd(src)?;
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(std::io::Error::other)?;
        let value =
            xattr_value(|buf, len| unsafe { libc::fgetxattr(s, cname.as_ptr(), buf, len) })?;
        let rc =
            unsafe { libc::fsetxattr(d, cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The xattrs of an entry that cannot be opened (symlink, node), by a path
/// through /proc/self/fd of its directory and l*xattr (no following).
fn copy_xattrs_at(src_dir: &OwnedFd, dst_dir: &OwnedFd, name: &OsStr) -> std::io::Result<()> {
    let path_of = |dir: &OwnedFd| -> std::io::Result<CString> {
        let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(name.as_bytes());
        CString::new(p).map_err(std::io::Error::other)
    };
    let (sp, dp) = (path_of(src_dir)?, path_of(dst_dir)?);
    let list = xattr_list(|buf, len| unsafe { libc::llistxattr(sp.as_ptr(), buf, len) })?;
    for n in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname: &CStr = &CString::new(n).map_err(std::io::Error::other)?;
        let value = xattr_value(|buf, len| unsafe {
            libc::lgetxattr(sp.as_ptr(), cname.as_ptr(), buf, len)
        })?;
        let rc = unsafe {
            libc::lsetxattr(
                dp.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
