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

impl NixDb {
    /// Open `state_dir/db/db.sqlite` (state_dir is a store's `var/nix`).
    pub fn open(state_dir: &Path) -> Result<NixDb> {
        let path = state_dir.join("db").join("db.sqlite");
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .with_context(|| format!("opening the Nix database {} read-only", path.display()))?;
        // Nix may hold a write lock for a moment (a running nix-daemon).
        conn.busy_timeout(Duration::from_secs(30))
            .with_context(|| format!("setting a busy timeout on {}", path.display()))?;
        let db = NixDb { conn, path };
        // Fails early, with the path, when this is not a Nix database.
        db.conn
            .query_row("SELECT count(*) FROM ValidPaths", [], |r| {
                r.get::<_, i64>(0)
            })
            .with_context(|| {
                format!(
                    "{} is not a Nix database (no ValidPaths table)",
                    db.path.display()
                )
            })?;
        Ok(db)
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
    /// not valid are left out; the caller checks validity first.
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
                 SELECT ValidPaths.path FROM ValidPaths JOIN closure ON ValidPaths.id = closure.id",
            )
            .with_context(|| format!("querying {}", self.path.display()))?;
        let mut out = BTreeSet::new();
        for root in roots {
            let rows = stmt
                .query_map([root], |r| r.get::<_, String>(0))
                .with_context(|| format!("querying {}", self.path.display()))?;
            for row in rows {
                out.insert(row.with_context(|| format!("reading {}", self.path.display()))?);
            }
        }
        Ok(out)
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
