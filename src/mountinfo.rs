//! /proc/self/mountinfo: what is mounted where, from which device.
//!
//! Read as bytes: a path is any bytes but '/' and NUL, and one mount
//! anywhere in the namespace at a non-UTF-8 path must not blind the helper
//! to all the others. Paths stay `PathBuf`/`OsString`; they become text
//! (lossily) only in messages and JSON.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub major: u32,
    pub minor: u32,
    /// The path inside the filesystem that is mounted here ("/" for a
    /// whole filesystem, "/sub" for a bind of a subdirectory).
    #[serde(serialize_with = "lossy")]
    pub root: PathBuf,
    #[serde(serialize_with = "lossy")]
    pub mount_point: PathBuf,
    pub options: String,
    /// The optional fields: the propagation ("shared:2", "master:3",
    /// both, or "" for a private mount), see mount_namespaces(7).
    pub optional: String,
    pub fs_type: String,
    #[serde(serialize_with = "lossy")]
    pub source: OsString,
    pub super_options: String,
}

fn lossy<S: Serializer, T: AsRef<std::ffi::OsStr>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.as_ref().to_string_lossy())
}

impl MountEntry {
    /// Whether `dev_t` (st_rdev of a block device) is the device behind this mount.
    pub fn is_device(&self, rdev: u64) -> bool {
        u64::from(self.major) == u64::from(libc::major(rdev))
            && u64::from(self.minor) == u64::from(libc::minor(rdev))
    }

    pub fn has_option(&self, opt: &str) -> bool {
        self.options.split(',').any(|o| o == opt)
    }

    /// The peer group this mount shares mount events with, if shared.
    pub fn peer_group(&self) -> Option<u32> {
        self.optional_number("shared:")
    }

    /// The peer group this mount receives mount events from, if a slave.
    pub fn master(&self) -> Option<u32> {
        self.optional_number("master:")
    }

    fn optional_number(&self, prefix: &str) -> Option<u32> {
        self.optional
            .split(' ')
            .find_map(|f| f.strip_prefix(prefix))
            .and_then(|n| n.parse().ok())
    }

    /// The propagation in words, for status ("shared:2", "master:3", "private").
    pub fn propagation(&self) -> String {
        let fields: Vec<&str> = self
            .optional
            .split(' ')
            .filter(|f| f.starts_with("shared:") || f.starts_with("master:"))
            .collect();
        if fields.is_empty() {
            "private".to_string()
        } else {
            fields.join(" ")
        }
    }

    /// The source for a message ("/dev/sdc", "tmpfs").
    pub fn source_text(&self) -> String {
        self.source.to_string_lossy().into_owned()
    }
}

/// Undo the kernel's octal escaping of ' ', '\t', '\n' and '\\'; any
/// other byte is taken as it is.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (u32::from(field[i + 1] - b'0') << 6)
                | (u32::from(field[i + 2] - b'0') << 3)
                | u32::from(field[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

fn path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape(field)))
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(field).into_owned()
}

fn number<T: std::str::FromStr>(field: &[u8]) -> Option<T> {
    std::str::from_utf8(field).ok()?.parse().ok()
}

pub fn parse(bytes: &[u8]) -> Vec<MountEntry> {
    bytes
        .split(|&b| b == b'\n')
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &[u8]) -> Option<MountEntry> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    // Optional fields end with a lone "-".
    let sep = fields.iter().position(|f| *f == b"-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    let colon = fields[2].iter().position(|&b| b == b':')?;
    Some(MountEntry {
        id: number(fields[0])?,
        parent: number(fields[1])?,
        major: number(&fields[2][..colon])?,
        minor: number(&fields[2][colon + 1..])?,
        root: path(fields[3]),
        mount_point: path(fields[4]),
        options: text(fields[5]),
        optional: text(&fields[6..sep].join(&b' ')),
        fs_type: text(&unescape(fields[sep + 1])),
        source: OsString::from_vec(unescape(fields[sep + 2])),
        super_options: text(fields[sep + 3]),
    })
}

pub fn read() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&fs::read("/proc/self/mountinfo")?))
}

/// The mount that is visible at `path`, if one is mounted there.
///
/// Not simply the last line with that mount point: a mount at a parent path
/// made later hides it. NixOS-WSL's shim binds /nix/store read-only, then
/// the module binds the disk over /nix; the shim's /nix/store is still in
/// mountinfo (its parent is `/`) but nothing under /nix reaches it. So the
/// walk follows parent ids from the root down, one path component at a
/// time: at each prefix, the mount whose parent is the one visible so far,
/// then whatever is stacked on it.
pub fn top_at(mounts: &[MountEntry], path: impl AsRef<Path>) -> Option<&MountEntry> {
    let path = path.as_ref();
    // The namespace's root: the mount at "/" whose parent is not listed.
    let ids: std::collections::HashSet<u32> = mounts.iter().map(|m| m.id).collect();
    let mut visible = mounts
        .iter()
        .find(|m| m.mount_point == Path::new("/") && !ids.contains(&m.parent))
        .or_else(|| mounts.iter().find(|m| m.mount_point == Path::new("/")));
    let mut prefix = PathBuf::new();
    for component in path.components() {
        prefix.push(component);
        let Some(under) = visible else { break };
        // The last child of the visible mount at this prefix...
        let mut top = mounts
            .iter()
            .rev()
            .find(|m| m.mount_point == prefix && m.parent == under.id && m.id != under.id);
        // ...and what is stacked on it, mount by mount.
        while let Some(t) = top {
            match mounts
                .iter()
                .rev()
                .find(|m| m.mount_point == prefix && m.parent == t.id && m.id != t.id)
            {
                Some(next) => top = Some(next),
                None => break,
            }
        }
        if let Some(t) = top {
            visible = Some(t);
        }
    }
    visible.filter(|m| m.mount_point == path)
}

/// How many mounts are stacked at `path`.
pub fn count_at(mounts: &[MountEntry], path: impl AsRef<Path>) -> usize {
    let path = path.as_ref();
    mounts.iter().filter(|m| m.mount_point == path).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
97 22 7:3 / /mnt/wsl/storage rw,noatime shared:50 - ext4 /dev/loop3 rw
98 22 7:3 /nixos-wsl-main /nix rw,noatime shared:50 - ext4 /dev/loop3 rw
99 22 0:45 / /tmp/with\\040space\\011tab rw - tmpfs my\\134source rw,size=10k
100 22 0:46 / /mnt/wsl/storage rw master:3 - tmpfs tmpfs rw
101 22 0:47 / /tmp/caf\xe9\\040\xff rw - tmpfs n\xffn rw";

    #[test]
    fn parses_fields_and_optional_fields() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 6);
        assert_eq!(m[1].mount_point, Path::new("/mnt/wsl/storage"));
        assert_eq!((m[1].major, m[1].minor), (7, 3));
        assert_eq!(m[1].fs_type, "ext4");
        assert_eq!(m[1].source, "/dev/loop3");
        assert!(m[1].has_option("noatime") && !m[1].has_option("atime"));
        assert_eq!(m[2].root, Path::new("/nixos-wsl-main"));
        // no optional fields at all
        assert_eq!(m[3].fs_type, "tmpfs");
        assert_eq!(m[3].propagation(), "private");
        assert_eq!((m[1].peer_group(), m[1].master()), (Some(50), None));
        assert_eq!((m[4].peer_group(), m[4].master()), (None, Some(3)));
        assert_eq!(m[4].propagation(), "master:3");
    }

    #[test]
    fn octal_escapes_are_undone() {
        let m = parse(SAMPLE);
        assert_eq!(m[3].mount_point, Path::new("/tmp/with space\ttab"));
        assert_eq!(m[3].source, "my\\source");
        assert_eq!(unescape(b"a\\012b"), b"a\nb");
        assert_eq!(unescape(b"trailing\\04"), b"trailing\\04");
    }

    #[test]
    fn non_utf8_paths_are_kept_byte_for_byte() {
        let m = parse(SAMPLE);
        let bad = &m[5];
        assert_eq!(
            bad.mount_point.as_os_str().as_encoded_bytes(),
            b"/tmp/caf\xe9 \xff"
        );
        assert_eq!(bad.source.as_encoded_bytes(), b"n\xffn");
        assert_eq!(bad.source_text(), "n\u{fffd}n");
        assert!(top_at(&m, &bad.mount_point).is_some());
        // The lines around it are all still there.
        assert_eq!(top_at(&m, "/mnt/wsl/storage").unwrap().id, 100);
        let json = serde_json::to_string(bad).unwrap();
        assert!(
            json.contains("\"mountPoint\":\"/tmp/caf\u{fffd} \u{fffd}\""),
            "{json}"
        );
    }

    #[test]
    fn top_mount_is_the_last_one() {
        let m = parse(SAMPLE);
        assert_eq!(top_at(&m, "/mnt/wsl/storage").unwrap().id, 100);
        assert_eq!(count_at(&m, "/mnt/wsl/storage"), 2);
        assert!(top_at(&m, "/nope").is_none());
    }

    /// The boot twin's mountinfo after the bind (NixOS-WSL's shim made the
    /// read-only /nix/store bind before systemd; nix.mount then bound the
    /// disk over /nix): the shim's /nix/store is listed last at that path
    /// but hidden, so nothing is visible at /nix/store until `mark` binds it.
    #[test]
    fn a_mount_hidden_by_a_later_mount_on_its_parent_is_not_visible() {
        let m = parse(
            b"\
23 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
29 23 254:0 /nix/store /nix/store ro,relatime shared:2 - ext4 /dev/vda rw
90 23 8:0 / /mnt/wsl/storage rw,noatime shared:40 - ext4 /dev/sda rw
95 23 8:0 /nixos-wsl-twin /nix rw,noatime shared:40 - ext4 /dev/sda rw",
        );
        assert!(top_at(&m, "/nix/store").is_none());
        assert_eq!(top_at(&m, "/nix").unwrap().id, 95);
        assert_eq!(top_at(&m, "/").unwrap().id, 23);
        // The marker's bind, a child of the /nix bind, is what shows there.
        let mut with_marker = m.clone();
        with_marker.extend(parse(
            b"96 95 8:0 /nixos-wsl-twin/store /nix/store ro,noatime shared:40 - ext4 /dev/sda rw",
        ));
        assert_eq!(top_at(&with_marker, "/nix/store").unwrap().id, 96);
        // Stacked at one path: the one on top.
        with_marker.extend(parse(b"97 96 0:50 / /nix/store rw - tmpfs tmpfs rw"));
        assert_eq!(top_at(&with_marker, "/nix/store").unwrap().id, 97);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(parse(b"not a mountinfo line\n1 2 3").is_empty());
    }

    #[test]
    fn device_numbers_match() {
        let m = parse(SAMPLE);
        assert!(m[1].is_device(libc::makedev(7, 3)));
        assert!(!m[1].is_device(libc::makedev(7, 4)));
    }
}
