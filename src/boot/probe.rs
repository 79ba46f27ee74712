//! Recognise a filesystem from its superblock: type, UUID, LABEL, and for
//! ext* whether the kernel recorded errors.
//!
//! Without udev there is no /dev/disk/by-uuid, so the helper reads the few
//! bytes blkid would read itself. Only the filesystems in
//! `config::SUPPORTED_FS` are recognised; anything else counts as "no
//! filesystem we know", which the helper never formats.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::Serialize;

/// Enough bytes to see every supported superblock (btrfs sits at 64 KiB).
const PROBE_LEN: usize = 0x10000 + 0x1000;

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
        self.fs_type == wanted || (wanted == "ext4" && self.fs_type.starts_with("ext"))
    }

    pub fn uuid_is(&self, uuid: &str) -> bool {
        self.uuid
            .as_deref()
            .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
    }

    pub fn label_is(&self, label: &str) -> bool {
        self.label.as_deref() == Some(label)
    }
}

/// Read the start of a device (or image file) and recognise it.
pub fn probe_path(path: &Path) -> io::Result<Option<FsInfo>> {
    let file = File::open(path)?;
    let mut buf = Vec::with_capacity(PROBE_LEN);
    file.take(PROBE_LEN as u64).read_to_end(&mut buf)?;
    Ok(probe_bytes(&buf))
}

pub fn probe_bytes(buf: &[u8]) -> Option<FsInfo> {
    probe_ext(buf)
        .or_else(|| probe_xfs(buf))
        .or_else(|| probe_btrfs(buf))
        .or_else(|| probe_vfat(buf))
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn uuid_string(b: &[u8]) -> Option<String> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn label_string(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

fn probe_ext(b: &[u8]) -> Option<FsInfo> {
    const SB: usize = 1024;
    if b.len() < SB + 256 || le16(b, SB + 0x38) != 0xEF53 {
        return None;
    }
    let state = le16(b, SB + 0x3A);
    let compat = le32(b, SB + 0x5C);
    let incompat = le32(b, SB + 0x60);
    let ro_compat = le32(b, SB + 0x64);
    // What ext3 understands; anything beyond makes it ext4 (as blkid says).
    const EXT3_INCOMPAT: u32 = 0x0002 | 0x0004 | 0x0010; // filetype, recover, meta_bg
    const EXT3_RO_COMPAT: u32 = 0x0001 | 0x0002 | 0x0004; // sparse_super, large_file, btree_dir
    const HAS_JOURNAL: u32 = 0x0004;
    let fs_type = if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
        "ext4"
    } else if compat & HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Some(FsInfo {
        fs_type: fs_type.into(),
        uuid: uuid_string(&b[SB + 0x68..SB + 0x78]),
        label: label_string(&b[SB + 0x78..SB + 0x88]),
        // EXT2_ERROR_FS
        has_errors: state & 0x0002 != 0,
    })
}

fn probe_xfs(b: &[u8]) -> Option<FsInfo> {
    if b.len() < 120 || &b[0..4] != b"XFSB" {
        return None;
    }
    Some(FsInfo {
        fs_type: "xfs".into(),
        uuid: uuid_string(&b[32..48]),
        label: label_string(&b[108..120]),
        has_errors: false,
    })
}

fn probe_btrfs(b: &[u8]) -> Option<FsInfo> {
    const SB: usize = 0x10000;
    if b.len() < SB + 0x12B + 256 || &b[SB + 0x40..SB + 0x48] != b"_BHRfS_M" {
        return None;
    }
    Some(FsInfo {
        fs_type: "btrfs".into(),
        uuid: uuid_string(&b[SB + 0x20..SB + 0x30]),
        label: label_string(&b[SB + 0x12B..SB + 0x12B + 256]),
        has_errors: false,
    })
}

fn probe_vfat(b: &[u8]) -> Option<FsInfo> {
    if b.len() < 512 || b[510] != 0x55 || b[511] != 0xAA {
        return None;
    }
    let (id_off, label_off) = if &b[82..87] == b"FAT32" {
        (67, 71)
    } else if &b[54..58] == b"FAT1" {
        (39, 43)
    } else {
        return None;
    };
    let id = le32(b, id_off);
    let label = label_string(&b[label_off..label_off + 11]).filter(|l| l != "NO NAME");
    Some(FsInfo {
        fs_type: "vfat".into(),
        uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)),
        label,
        has_errors: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn have(tool: &str) -> bool {
        Command::new(tool).arg("-V").output().is_ok()
    }

    fn image(mkfs: &str, args: &[&str], size_mb: u64) -> Option<tempfile::TempPath> {
        if !have(mkfs) {
            eprintln!("skipped: {mkfs} is not installed");
            return None;
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(size_mb << 20).unwrap();
        let path = file.into_temp_path();
        let out = Command::new(mkfs).args(args).arg(&*path).output().unwrap();
        assert!(
            out.status.success(),
            "{mkfs}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(path)
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

        let out = Command::new("tune2fs")
            .args(["-E", "force_fsck"])
            .arg(&*img)
            .output()
            .unwrap();
        assert!(out.status.success());
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
    fn vfat_and_xfs() {
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
    }

    #[test]
    fn zeros_and_short_buffers_are_nothing() {
        assert_eq!(probe_bytes(&[0u8; PROBE_LEN]), None);
        assert_eq!(probe_bytes(&[0u8; 10]), None);
        // A lone boot-sector signature is not a FAT filesystem.
        let mut b = vec![0u8; 1024];
        b[510] = 0x55;
        b[511] = 0xAA;
        assert_eq!(probe_bytes(&b), None);
    }
}
