//! `mountOptions` → mount(2) flags and the filesystem's data string.
//!
//! mount(8) does this split for fstab; the helper calls mount(2) itself, so
//! it has to know which words are VFS flags and which go to the filesystem.
//! fstab-only words (nofail, x-systemd.*, _netdev, ...) are rejected with a
//! hint rather than passed to the kernel, which would answer EINVAL.

use nix::mount::MsFlags;

use crate::config::echo;

/// The parsed options: flags for mount(2) and the comma-joined data string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    pub data: String,
}

/// Flags that set a bit, and the opposite words that clear it.
const FLAGS: &[(&str, MsFlags, bool)] = &[
    ("ro", MsFlags::MS_RDONLY, true),
    ("rw", MsFlags::MS_RDONLY, false),
    ("nosuid", MsFlags::MS_NOSUID, true),
    ("suid", MsFlags::MS_NOSUID, false),
    ("nodev", MsFlags::MS_NODEV, true),
    ("dev", MsFlags::MS_NODEV, false),
    ("noexec", MsFlags::MS_NOEXEC, true),
    ("exec", MsFlags::MS_NOEXEC, false),
    ("sync", MsFlags::MS_SYNCHRONOUS, true),
    ("async", MsFlags::MS_SYNCHRONOUS, false),
    ("dirsync", MsFlags::MS_DIRSYNC, true),
    ("noatime", MsFlags::MS_NOATIME, true),
    ("atime", MsFlags::MS_NOATIME, false),
    ("nodiratime", MsFlags::MS_NODIRATIME, true),
    ("diratime", MsFlags::MS_NODIRATIME, false),
    ("relatime", MsFlags::MS_RELATIME, true),
    ("norelatime", MsFlags::MS_RELATIME, false),
    ("strictatime", MsFlags::MS_STRICTATIME, true),
    ("nostrictatime", MsFlags::MS_STRICTATIME, false),
    ("lazytime", MsFlags::MS_LAZYTIME, true),
    ("nolazytime", MsFlags::MS_LAZYTIME, false),
    ("silent", MsFlags::MS_SILENT, true),
    ("loud", MsFlags::MS_SILENT, false),
];

/// Words that mean something to fstab or mount(8) but not to the kernel.
const FSTAB_ONLY: &[&str] = &[
    "nofail", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev",
];

/// Words that would change what kind of mount this is.
const FORBIDDEN: &[&str] = &[
    "bind",
    "rbind",
    "move",
    "remount",
    "shared",
    "private",
    "slave",
    "unbindable",
];

pub fn parse(options: &[String]) -> Result<MountOptions, String> {
    let mut flags = MsFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for opt in options {
        let opt = opt.as_str();
        if opt.is_empty()
            || opt.contains(',')
            || opt.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "\"{}\" is not one option; give each option as its own list item, e.g. [\"noatime\", \"commit=60\"]",
                echo(opt)
            ));
        }
        if opt == "defaults" {
            continue;
        }
        if let Some((_, flag, set)) = FLAGS.iter().find(|(name, _, _)| *name == opt) {
            flags.set(*flag, *set);
            continue;
        }
        if FSTAB_ONLY.contains(&opt) || opt.starts_with("x-") || opt.starts_with("comment=") {
            return Err(format!(
                "\"{}\" is an fstab option, not a mount option; drop it (the helper and its unit already handle ordering and failure)",
                echo(opt)
            ));
        }
        if FORBIDDEN.contains(&opt) {
            return Err(format!(
                "\"{opt}\" is not allowed: the disk is mounted once, as a plain mount; drop it"
            ));
        }
        data.push(opt);
    }
    let data = data.join(",");
    // mount(2) copies at most one page of data; more is cut or refused.
    if data.len() >= MAX_DATA {
        return Err(format!(
            "the filesystem options add up to {} bytes; the kernel takes less than {MAX_DATA}: drop some",
            data.len()
        ));
    }
    Ok(MountOptions { flags, data })
}

/// One page: what mount(2) copies of its data argument.
const MAX_DATA: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    fn p(opts: &[&str]) -> Result<MountOptions, String> {
        parse(&opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_and_data_are_split() {
        let o = p(&["noatime", "nodev", "commit=60", "errors=remount-ro"]).unwrap();
        assert_eq!(o.flags, MsFlags::MS_NOATIME | MsFlags::MS_NODEV);
        assert_eq!(o.data, "commit=60,errors=remount-ro");
    }

    #[test]
    fn later_words_win() {
        assert_eq!(p(&["ro", "rw"]).unwrap().flags, MsFlags::empty());
        assert_eq!(
            p(&["defaults"]).unwrap(),
            MountOptions {
                flags: MsFlags::empty(),
                data: String::new()
            }
        );
    }

    #[test]
    fn fstab_words_and_automount_are_refused() {
        for bad in [
            "nofail",
            "x-systemd.automount",
            "x-systemd.idle-timeout=60",
            "_netdev",
            "bind",
            "a,b",
            "",
        ] {
            assert!(p(&[bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn huge_options_are_refused_and_not_echoed_in_full() {
        let long = format!("x-{}", "a".repeat(100_000));
        let err = p(&[&long]).unwrap_err();
        assert!(err.len() < 400, "{} bytes", err.len());
        let many: Vec<String> = (0..1000).map(|i| format!("opt{i}=1")).collect();
        let err = parse(&many).unwrap_err();
        assert!(err.contains("the kernel takes less than 4096"), "{err}");
    }
}
