//! Read a Nix store's database directly (SQLite, read-only).
//!
//! Nix keeps the closure invariant: a path valid in a store's database has
//! all its references valid there too. So "is the booted system's closure
//! registered in this store" is one lookup, and its closure is one
//! recursive query, both far cheaper than starting `nix-store`.
//!
//! Only the tables every Nix since 1.x has (ValidPaths, Refs) are read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub const STORE_DIR: &str = "/nix/store";

/// The marker of "not a Nix database" (missing tables), so a caller can
/// tell it from I/O.
#[derive(Debug)]
pub struct NotNixDb;

impl std::fmt::Display for NotNixDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a Nix database")
    }
}

impl std::error::Error for NotNixDb {}

/// The marker of a `Refs` row that points at no valid path.
#[derive(Debug)]
pub struct DanglingRef;

impl std::fmt::Display for DanglingRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a reference to no registered path")
    }
}

impl std::error::Error for DanglingRef {}

/// A Nix database opened read-only.
pub struct NixDb {
    conn: Connection,
    path: PathBuf,
}

/// The name of a store path (`<hash>-<name>`), or None when `path` is not
/// a plain `/nix/store/<name>` (no further components, no `.` or `..`).
pub fn store_name(path: &str) -> Option<&str> {
    let name = path.strip_prefix(STORE_DIR)?.strip_prefix('/')?;
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.starts_with('.')
        && name.len() > 33
        && name.as_bytes()[32] == b'-';
    ok.then_some(name)
}

/// SQLite opens the database and its siblings by path, following links,
/// and would block on a FIFO: these are checked first, each opened (never
/// followed, never blocking) and looked at.
const SIBLINGS: &[&str] = &["-wal", "-shm", "-journal"];

/// How long a reader waits for a writer (nix-daemon holds its write lock
/// for a moment per registration). Longer means something else is wrong.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Check that `path` is a regular file (or, for a sibling, absent) without
/// following a link or blocking on a FIFO. Returns (dev, ino) of the file.
pub fn check_regular(path: &Path, shown: &Path, may_be_absent: bool) -> Result<Option<(u64, u64)>> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::{fstat, Mode};
    let fd = match open(
        path,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ENOENT) if may_be_absent => return Ok(None),
        Err(nix::errno::Errno::ELOOP) => {
            let to = std::fs::read_link(path).map_or("?".into(), |t| t.display().to_string());
            anyhow::bail!(
                "{} is a symlink (to {to}); a Nix database is never a link, and SQLite would follow it to another file. Replace the link with the database itself (or remove it if it is a stray -wal/-shm/-journal)",
                shown.display()
            );
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("opening {} (without following a link)", shown.display()))
        }
    };
    let st = fstat(&fd).with_context(|| format!("inspecting {}", shown.display()))?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG {
        let what = match kind {
            libc::S_IFIFO => "a FIFO",
            libc::S_IFSOCK => "a socket",
            libc::S_IFDIR => "a directory",
            libc::S_IFCHR | libc::S_IFBLK => "a device node",
            _ => "not a regular file",
        };
        anyhow::bail!(
            "{} is {what}, not a regular file: Nix keeps plain files there, and opening this one could block forever. Remove it (or put the database back) and try again",
            shown.display()
        );
    }
    Ok(Some((st.st_dev as u64, st.st_ino as u64)))
}

/// The processes holding a lock on inode (dev, ino), from /proc/locks:
/// "pid (command)". Empty when none is known (another PID namespace).
fn lock_holders(dev: u64, ino: u64) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    let (major, minor) = (
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t),
    );
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF", or with "->" for waiters.
        let f: Vec<&str> = f.into_iter().filter(|x| *x != "->").collect();
        if f.len() < 6 || !f[5].eq_ignore_ascii_case(&want) {
            continue;
        }
        let pid = f[4];
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let who = format!("pid {pid} ({})", comm.trim());
        if !out.contains(&who) && pid != std::process::id().to_string() {
            out.push(who);
        }
    }
    out
}

impl NixDb {
    /// Open `state_dir/db/db.sqlite` (state_dir is a store's `var/nix`).
    pub fn open(state_dir: &Path) -> Result<NixDb> {
        let path = state_dir.join("db").join("db.sqlite");
        NixDb::open_as(state_dir, &path)
    }

    /// Like `open`, naming the database `shown` in every message (the
    /// VHDX's database as the user sees it, not the boot view's temporary
    /// path, which is gone when the helper exits).
    pub fn open_as(state_dir: &Path, shown: &Path) -> Result<NixDb> {
        let path = state_dir.join("db").join("db.sqlite");
        let shown = shown.to_path_buf();
        let id = check_regular(&path, &shown, false)?;
        for suffix in SIBLINGS {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            let mut shown_sib = shown.clone().into_os_string();
            shown_sib.push(suffix);
            check_regular(Path::new(&name), Path::new(&shown_sib), true)?;
        }
        // What nix-store (run on this store by sync-boot and the heal)
        // opens next to the database: a FIFO there would hold it until its
        // timeout, a link would take its lock elsewhere.
        let shown_dir = shown.parent().unwrap_or(Path::new(""));
        for (dir, shown_in, name) in [
            (path.parent(), shown_dir, "big-lock"),
            (path.parent(), shown_dir, "reserved"),
            (path.parent(), shown_dir, "schema"),
            (
                Some(state_dir),
                shown_dir.parent().unwrap_or(Path::new("")),
                "gc.lock",
            ),
        ] {
            if let Some(dir) = dir {
                check_regular(&dir.join(name), &shown_in.join(name), true)?;
            }
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening the Nix database {} read-only", shown.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .with_context(|| format!("setting a busy timeout on {}", shown.display()))?;
        let db = NixDb { conn, path: shown };
        // Fails early, with the path and the fix, when this is not a Nix
        // database, is locked, or is damaged.
        let tables: rusqlite::Result<i64> = db.conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('ValidPaths', 'Refs')",
            [],
            |r| r.get(0),
        );
        let tables = tables.and_then(|n| {
            // Reading a row of each proves the pages are readable too.
            db.conn
                .query_row("SELECT count(*) FROM ValidPaths", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(|_| n)
        });
        match tables {
            Ok(2) => Ok(db),
            Ok(_) => Err(anyhow::Error::new(NotNixDb).context(format!(
                "{} is not a Nix database this helper can read (it lacks the ValidPaths or Refs table: another program's file, or a Nix schema other than Nix 1.x-2.x's). Put the store's own database back, or recreate the store with `sudo wsl-storage-mount migrate`",
                db.path.display()
            ))),
            Err(e) => Err(db.explain(e, id)),
        }
    }

    /// A clear message for an SQLite error on open: locked (by whom), damaged, other.
    fn explain(&self, e: rusqlite::Error, id: Option<(u64, u64)>) -> anyhow::Error {
        use rusqlite::ErrorCode;
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
            _ => None,
        };
        let shown = self.path.display();
        match code {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                let who = id.map(|(d, i)| lock_holders(d, i)).unwrap_or_default();
                let who = if who.is_empty() {
                    "another process (a nix-daemon, nix-store or sqlite3 that writes to it)".to_string()
                } else {
                    who.join(", ")
                };
                anyhow::anyhow!(
                    "{shown} is locked by {who}: it stayed locked for {} s. Wait for that process to finish (or stop it), then try again",
                    BUSY_TIMEOUT.as_secs()
                )
            }
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => anyhow::anyhow!(
                "{shown} is damaged ({e}); Nix cannot use this store as it is. Fix: if it is the disk's store, move that store's directory away and copy the VHDX's /nix again with `sudo wsl-storage-mount migrate`; `sqlite3 {shown} .recover` may salvage what it holds"
            ),
            _ => anyhow::Error::new(e).context(format!("reading the Nix database {shown}")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn is_valid(&self, store_path: &str) -> Result<bool> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM ValidPaths WHERE path = ?1",
                [store_path],
                |_| Ok(()),
            )
            .optional()
            .with_context(|| format!("querying {}", self.path.display()))?
            .is_some())
    }

    /// The closure of `roots` (themselves included), sorted. Roots that are
    /// not valid are left out; the caller checks validity first. A `Refs`
    /// row that leads to no valid path breaks Nix's closure invariant: an
    /// error naming the path that refers to it.
    pub fn closure<'a>(
        &self,
        roots: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeSet<String>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "WITH RECURSIVE closure(id) AS (
                    SELECT id FROM ValidPaths WHERE path = ?1
                    UNION
                    SELECT Refs.reference FROM Refs JOIN closure ON Refs.referrer = closure.id
                 )
                 SELECT closure.id, ValidPaths.path FROM closure LEFT JOIN ValidPaths ON ValidPaths.id = closure.id",
            )
            .with_context(|| format!("querying {}", self.path.display()))?;
        let mut out = BTreeSet::new();
        for root in roots {
            let rows = stmt
                .query_map([root], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
                })
                .with_context(|| format!("querying {}", self.path.display()))?;
            for row in rows {
                match row.with_context(|| format!("reading {}", self.path.display()))? {
                    (_, Some(path)) => {
                        out.insert(path);
                    }
                    (id, None) => return Err(self.dangling(root, id)),
                }
            }
        }
        Ok(out)
    }

    fn dangling(&self, root: &str, id: i64) -> anyhow::Error {
        let referrer: String = self
            .conn
            .query_row(
                "SELECT p.path FROM Refs JOIN ValidPaths p ON p.id = Refs.referrer WHERE Refs.reference = ?1 LIMIT 1",
                [id],
                |r| r.get(0),
            )
            .unwrap_or_else(|_| "?".into());
        anyhow::Error::new(DanglingRef).context(format!(
            "the database {} is inconsistent: {referrer} (in the closure of {root}) refers to id {id}, which is no registered path. Nix's closure invariant is broken, so this store is not safe to use. Fix: `nix-store --verify --repair` on that store, or recreate it with `sudo wsl-storage-mount migrate`",
            self.path.display()
        ))
    }

    /// The direct references of a valid path (itself left out).
    pub fn references(&self, store_path: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT r.path FROM ValidPaths p JOIN Refs ON Refs.referrer = p.id
                 JOIN ValidPaths r ON r.id = Refs.reference WHERE p.path = ?1 AND r.id != p.id",
            )
            .with_context(|| format!("querying {}", self.path.display()))?;
        let rows = stmt
            .query_map([store_path], |r| r.get::<_, String>(0))
            .with_context(|| format!("querying {}", self.path.display()))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.with_context(|| format!("reading {}", self.path.display()))?);
        }
        Ok(out)
    }

    /// `paths` ordered so that every path comes after its references (the
    /// order `nix-store --import` needs when they arrive in several batches).
    pub fn topo_sorted(&self, paths: &BTreeSet<String>) -> Result<Vec<String>> {
        let mut order = Vec::with_capacity(paths.len());
        let mut done: BTreeSet<&str> = BTreeSet::new();
        for start in paths {
            if done.contains(start.as_str()) {
                continue;
            }
            // Iterative DFS: (path, its references still to visit).
            let mut stack: Vec<(&str, Vec<String>)> = vec![(start, self.references(start)?)];
            done.insert(start);
            while let Some((path, refs)) = stack.last_mut() {
                if let Some(next) = refs.pop() {
                    if let Some(next) = paths.get(&next) {
                        if done.insert(next.as_str()) {
                            let r = self.references(next)?;
                            stack.push((next.as_str(), r));
                        }
                    }
                } else {
                    order.push(path.to_string());
                    stack.pop();
                }
            }
        }
        Ok(order)
    }

    /// Every valid path.
    pub fn all_valid(&self) -> Result<BTreeSet<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT path FROM ValidPaths")
            .with_context(|| format!("querying {}", self.path.display()))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .with_context(|| format!("querying {}", self.path.display()))?;
        let mut out = BTreeSet::new();
        for row in rows {
            out.insert(row.with_context(|| format!("reading {}", self.path.display()))?);
        }
        Ok(out)
    }

    /// The paths of `paths` that are valid here.
    pub fn valid_of<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeSet<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM ValidPaths WHERE path = ?1")
            .with_context(|| format!("querying {}", self.path.display()))?;
        let mut out = BTreeSet::new();
        for p in paths {
            if stmt
                .exists([p])
                .with_context(|| format!("querying {}", self.path.display()))?
            {
                out.insert(p.to_string());
            }
        }
        Ok(out)
    }

    /// The sum of the NAR sizes of `paths` (the bytes they take, roughly).
    pub fn nar_size<'a>(&self, paths: impl IntoIterator<Item = &'a str>) -> Result<u64> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT narSize FROM ValidPaths WHERE path = ?1")
            .with_context(|| format!("querying {}", self.path.display()))?;
        let mut total = 0u64;
        for p in paths {
            let size: Option<Option<i64>> = stmt
                .query_row([p], |r| r.get(0))
                .optional()
                .with_context(|| format!("querying {}", self.path.display()))?;
            total += size.flatten().unwrap_or(0).max(0) as u64;
        }
        Ok(total)
    }

    /// The sum of the NAR sizes of every valid path.
    pub fn total_nar_size(&self) -> Result<u64> {
        let size: Option<i64> = self
            .conn
            .query_row("SELECT sum(narSize) FROM ValidPaths", [], |r| r.get(0))
            .with_context(|| format!("querying {}", self.path.display()))?;
        Ok(size.unwrap_or(0).max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_are_plain_components() {
        let good = "/nix/store/lvqa7a9v9yfvwfjhmainkplbl41x4bcz-toy-lib";
        assert_eq!(
            store_name(good),
            Some("lvqa7a9v9yfvwfjhmainkplbl41x4bcz-toy-lib")
        );
        for bad in [
            "/nix/store/..",
            "/nix/store/.",
            "/nix/store/",
            "/nix/store",
            "/nix/store/.links",
            "/nix/store/lvqa7a9v9yfvwfjhmainkplbl41x4bcz-toy-lib/bin",
            "/nix/storex/lvqa7a9v9yfvwfjhmainkplbl41x4bcz-toy-lib",
            "/nix/store/short-name",
            "/etc/passwd",
        ] {
            assert_eq!(store_name(bad), None, "{bad}");
        }
    }
}
