//! /proc/self/mountinfo: what is mounted where, from which device.

use std::fs;
use std::io;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MountEntry {
    pub id: u32,
    pub parent: u32,
    pub major: u32,
    pub minor: u32,
    /// The path inside the filesystem that is mounted here ("/" for a
    /// whole filesystem, "/sub" for a bind of a subdirectory).
    pub root: String,
    pub mount_point: String,
    pub options: String,
    pub fs_type: String,
    pub source: String,
    pub super_options: String,
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
}

/// Undo the kernel's octal escaping of ' ', '\t', '\n' and '\\'.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    // Optional fields end with a lone "-".
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 || fields.len() < sep + 4 {
        return None;
    }
    let (major, minor) = fields[2].split_once(':')?;
    Some(MountEntry {
        id: fields[0].parse().ok()?,
        parent: fields[1].parse().ok()?,
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: unescape(fields[3]),
        mount_point: unescape(fields[4]),
        options: fields[5].to_string(),
        fs_type: fields[sep + 1].to_string(),
        source: unescape(fields[sep + 2]),
        super_options: fields[sep + 3].to_string(),
    })
}

pub fn read() -> io::Result<Vec<MountEntry>> {
    Ok(parse(&fs::read_to_string("/proc/self/mountinfo")?))
}

/// The mount that is visible at `path` (the last one mounted there), if any.
pub fn top_at<'a>(mounts: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    mounts.iter().rev().find(|m| m.mount_point == path)
}

/// How many mounts are stacked at `path`.
pub fn count_at(mounts: &[MountEntry], path: &str) -> usize {
    mounts.iter().filter(|m| m.mount_point == path).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
97 22 7:3 / /mnt/wsl/storage rw,noatime shared:50 - ext4 /dev/loop3 rw
98 22 7:3 /nixos-wsl-main /nix rw,noatime shared:50 - ext4 /dev/loop3 rw
99 22 0:45 / /tmp/with\\040space\\011tab rw - tmpfs my\\134source rw,size=10k
100 22 0:46 / /mnt/wsl/storage rw master:3 - tmpfs tmpfs rw";

    #[test]
    fn parses_fields_and_optional_fields() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1].mount_point, "/mnt/wsl/storage");
        assert_eq!((m[1].major, m[1].minor), (7, 3));
        assert_eq!(m[1].fs_type, "ext4");
        assert_eq!(m[1].source, "/dev/loop3");
        assert!(m[1].has_option("noatime") && !m[1].has_option("atime"));
        assert_eq!(m[2].root, "/nixos-wsl-main");
        // no optional fields at all
        assert_eq!(m[3].fs_type, "tmpfs");
    }

    #[test]
    fn octal_escapes_are_undone() {
        let m = parse(SAMPLE);
        assert_eq!(m[3].mount_point, "/tmp/with space\ttab");
        assert_eq!(m[3].source, "my\\source");
        assert_eq!(unescape("a\\012b"), "a\nb");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }

    #[test]
    fn top_mount_is_the_last_one() {
        let m = parse(SAMPLE);
        assert_eq!(top_at(&m, "/mnt/wsl/storage").unwrap().id, 100);
        assert_eq!(count_at(&m, "/mnt/wsl/storage"), 2);
        assert!(top_at(&m, "/nope").is_none());
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(parse("not a mountinfo line\n1 2 3").is_empty());
    }

    #[test]
    fn device_numbers_match() {
        let m = parse(SAMPLE);
        assert!(m[1].is_device(libc::makedev(7, 3)));
        assert!(!m[1].is_device(libc::makedev(7, 4)));
    }
}
