//! Logging: every step to the log file (timestamped) and to stderr (with
//! syslog priority prefixes such as `<3>` when stderr is the journal).
//!
//! env_logger does the filtering (`-v`, `RUST_LOG`); this logger does the
//! writing, because the file and the journal want different line formats.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    filter: env_logger::Logger,
    journal: bool,
    file: Mutex<Option<File>>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Install the logger. `verbosity` counts `-v`: info by default, debug with
/// one, trace with two. RUST_LOG may raise it further (never lower it below
/// the level `-v` asked for).
pub fn init(verbosity: u8) {
    let level = match verbosity {
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    let filter = builder.build();
    let max = filter.filter().max(level);
    let logger = LOGGER.get_or_init(|| Logger {
        filter,
        journal: stderr_is_journal(),
        file: Mutex::new(None),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(max);
    }
}

/// Start appending to `path` as well. A log file that cannot be opened (a
/// read-only /var, say) is a warning: logging must never stop the boot.
pub fn open_file(path: &Path) {
    let Some(logger) = LOGGER.get() else { return };
    match open_log(path) {
        Ok(file) => {
            if let Ok(mut slot) = logger.file.lock() {
                *slot = Some(file);
            }
        }
        Err(e) => log::warn!("{e}; logging to stderr only"),
    }
}

/// Open the log file for appending, as root at boot: never through a
/// symlink (O_NOFOLLOW), never blocking on a FIFO without a reader
/// (O_NONBLOCK), and only a regular file (checked on the descriptor, so
/// nothing can swap the path between the check and the use).
fn open_log(path: &Path) -> Result<File, String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the log file's directory {}: {e} (check that it is writable)",
                dir.display()
            )
        })?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true).mode(0o640);
    let file = open_regular(&mut options, path).map_err(|e| {
            let why = match e.raw_os_error() {
                Some(libc::ELOOP) => "it is a symlink, which the helper does not follow as root"
                    .to_string(),
                Some(libc::ENXIO) => "it is a FIFO or socket, not a regular file".to_string(),
                _ => e.to_string(),
            };
            format!(
                "cannot open log file {}: {why}; set logFile to a regular file in a directory only root can write",
                path.display()
            )
        })?;
    Ok(file)
}

/// Open `path` with `options` plus O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC, and
/// keep it only when it is a regular file (checked on the descriptor).
fn open_regular(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Read the log file (for `doctor`) under the same rules as writing it:
/// no symlink followed, no FIFO waited on, regular files only.
pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut file =
        open_regular(OpenOptions::new().read(true), path).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::new(
                io::ErrorKind::InvalidInput,
                "it is a symlink, which the helper does not follow as root",
            ),
            _ => e,
        })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// systemd sets JOURNAL_STREAM to "DEV:INODE" of the stream it connected
/// stderr to; only when they match is stderr really the journal.
fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(meta) = fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let level = record.level();
        let msg = record.args().to_string();
        // Every line carries its own prefix, so that a multi-line message
        // (a list of config problems) keeps its priority in the journal and
        // its timestamp in the file.
        let mut out = String::new();
        for line in msg.lines() {
            if self.journal {
                out.push_str(&format!("<{}>{line}\n", syslog_priority(level)));
            } else {
                out.push_str(&format!(
                    "{}: {line}\n",
                    level.as_str().to_ascii_lowercase()
                ));
            }
        }
        let _ = std::io::stderr().write_all(out.as_bytes());
        if let Ok(mut slot) = self.file.lock() {
            if let Some(file) = slot.as_mut() {
                // One write per message: with O_APPEND, the lines of two
                // runs writing at once never interleave.
                let stamp = humantime::format_rfc3339_millis(SystemTime::now());
                let pid = std::process::id();
                let text: String = msg
                    .lines()
                    .map(|line| format!("{stamp} [{pid}] {level:<5} {line}\n"))
                    .collect();
                let _ = file.write_all(text.as_bytes());
            }
        }
    }

    fn flush(&self) {
        if let Ok(mut slot) = self.file.lock() {
            if let Some(file) = slot.as_mut() {
                let _ = file.flush();
            }
        }
    }
}
