//! Nix's own tools for everything that writes a store: `nix-store --export`
//! piped into `nix-store --import` (the target database registers every path
//! with its references and hash) and `nix-store --delete`. Both take Nix's
//! locks, so a copy never races a garbage collection of the same store.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::config::Config;
use crate::proc;

/// Copying a system closure onto a slow disk can take minutes; a hung
/// nix-store must still end.
pub const COPY_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(1800);

/// A path as a value in a Nix store URI's query. Nix percent-decodes every
/// parameter, so a `%` (or `?`, `&`, `=`, `#`) in a path taken as it is
/// would name another directory: everything but unreserved characters and
/// `/` is encoded.
pub fn uri_value(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The store laid out as a /nix directory at `dir` (store/, var/nix/):
/// the disk's instance dir. Every character a path can hold is carried
/// (encoded); Err is kept for callers that map it to an exit code.
pub fn nix_dir_store_uri(dir: &Path) -> Result<String, String> {
    let d = uri_value(dir);
    Ok(format!(
        "local?real={d}/store&state={d}/var/nix&log={d}/var/log/nix"
    ))
}

/// A chroot store (`local?root=`), as Nix reads it.
pub fn root_store_uri(root: &Path) -> String {
    format!("local?root={}", uri_value(root))
}

fn nix_store(cfg: &Config, store: &str) -> Command {
    let mut cmd = Command::new(&cfg.nix_store_command);
    cmd.arg("--store").arg(store);
    cmd
}

fn last_lines(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("build-users-group"))
        .collect();
    let start = lines.len().saturating_sub(4);
    lines[start..].join(" / ")
}

/// Copy `paths` (with their references already valid in `to`, or among
/// `paths`) from store `from` to store `to`.
pub fn copy_paths(cfg: &Config, from: &str, to: &str, paths: &[String]) -> Result<(), String> {
    if paths.is_empty() {
        return Ok(());
    }
    let mut export = nix_store(cfg, from);
    export.arg("--export").args(paths);
    let mut import = nix_store(cfg, to);
    import.arg("--import");
    let (e, i) = proc::pipe(export, import, COPY_TIMEOUT).map_err(|err| {
        format!(
            "cannot run nixStoreCommand \"{}\": {err}; set nixStoreCommand to the nix-store binary",
            cfg.nix_store_command
        )
    })?;
    if i.success() && e.success() {
        return Ok(());
    }
    Err(format!(
        "`nix-store --export | nix-store --store {to} --import` failed: export {} ({}), import {} ({})",
        e.describe(COPY_TIMEOUT),
        last_lines(&e.stderr),
        i.describe(COPY_TIMEOUT),
        last_lines(&i.stderr)
    ))
}

/// Delete `paths` from `store`. The caller decides what is garbage (the set
/// is closed under referrers), so Nix's own idea of liveness, which follows
/// GC-root links that in a chroot store resolve against the running root,
/// is not asked.
pub fn delete_paths(cfg: &Config, store: &str, paths: &[String]) -> Result<(), String> {
    if paths.is_empty() {
        return Ok(());
    }
    let mut cmd = nix_store(cfg, store);
    cmd.args(["--delete", "--ignore-liveness"]).args(paths);
    let out = proc::run(cmd, DELETE_TIMEOUT).map_err(|err| {
        format!(
            "cannot run nixStoreCommand \"{}\": {err}",
            cfg.nix_store_command
        )
    })?;
    if out.success() {
        return Ok(());
    }
    Err(format!(
        "`nix-store --store {store} --delete` failed ({}): {}",
        out.describe(DELETE_TIMEOUT),
        last_lines(out.stderr_text().as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_uris_encode_what_nix_would_decode() {
        assert_eq!(
            nix_dir_store_uri(Path::new("/mnt/a%41 b")).unwrap(),
            "local?real=/mnt/a%2541%20b/store&state=/mnt/a%2541%20b/var/nix&log=/mnt/a%2541%20b/var/log/nix"
        );
        assert_eq!(
            root_store_uri(Path::new("/r?x&y=#")),
            "local?root=/r%3Fx%26y%3D%23"
        );
    }
}
