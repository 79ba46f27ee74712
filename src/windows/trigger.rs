//! Start the Windows side from Linux: `schtasks.exe /Run /TN <task>` (the
//! elevated scheduled task attaches the disk) or the attach script through
//! powershell.exe (works only when WSL itself runs elevated).
//!
//! Interop may not be ready early in boot: a missing executable, an "exec
//! format error" (binfmt for Windows binaries not registered yet) or an
//! unmounted /mnt/c are warnings, and the next miss tries again. The run is
//! killed at `triggerTimeout`; the device wait never blocks on it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::config::{Trigger, WindowsConfig};

/// Between two attempts, so that a slow interop gets a chance to come up.
const ATTEMPT_SPACING: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerOutcome {
    /// The program ran and exited (code None: killed by a signal).
    Exited { code: Option<i32>, output: String },
    /// Killed at `triggerTimeout`.
    TimedOut { output: String },
    /// Could not be started: interop not ready, or the path is wrong.
    NotRunnable(String),
    /// The device appeared while it ran; it was stopped.
    Cancelled,
}

/// wsl.exe's symbolic code for "this disk is attached already". It is
/// checked before elevation, so even a non-elevated attach answers it; the
/// localized text around it is never matched.
pub const ALREADY_ATTACHED: &str = "WSL_E_DISK_ALREADY_ATTACHED";

impl TriggerOutcome {
    /// Exit 0, or wsl.exe's "already attached": either way Windows has done
    /// its part and another attempt would change nothing.
    pub fn succeeded(&self) -> bool {
        match self {
            TriggerOutcome::Exited { code: Some(0), .. } => true,
            TriggerOutcome::Exited { output, .. } => output.contains(ALREADY_ATTACHED),
            _ => false,
        }
    }

    pub fn summary(&self) -> String {
        match self {
            TriggerOutcome::Exited { code, output } => {
                let code = code.map_or("a signal".to_string(), |c| c.to_string());
                let first = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                if first.is_empty() {
                    format!("exited with {code}")
                } else {
                    format!("exited with {code}: {}", first.trim())
                }
            }
            TriggerOutcome::TimedOut { .. } => "killed at triggerTimeout".into(),
            TriggerOutcome::NotRunnable(why) => format!("not runnable: {why}"),
            TriggerOutcome::Cancelled => "stopped: the device appeared".into(),
        }
    }
}

/// The program and arguments for the configured trigger, if any.
pub fn command_for(win: &WindowsConfig) -> Option<(PathBuf, Vec<String>)> {
    match win.trigger {
        Trigger::None => None,
        Trigger::Task => Some((
            PathBuf::from(&win.schtasks_path),
            vec![
                "/Run".into(),
                "/TN".into(),
                crate::windows::script::task_name(win),
            ],
        )),
        Trigger::Script => {
            let script = win.script_path.clone().unwrap_or_default();
            let mut args: Vec<String> = [
                "-NoProfile",
                "-NonInteractive",
                "-ExecutionPolicy",
                "Bypass",
            ]
            .into_iter()
            .map(String::from)
            .collect();
            if script.contains('%') {
                // -File takes the path literally, and nothing between Linux
                // and powershell.exe expands %LOCALAPPDATA%: expand it in
                // PowerShell and pass the script's exit code on. The path
                // was validated (no quotes) and is quoted all the same.
                args.push("-Command".into());
                args.push(format!(
                    "& ([Environment]::ExpandEnvironmentVariables('{}')); exit $LASTEXITCODE",
                    script.replace('\'', "''")
                ));
            } else {
                args.push("-File".into());
                args.push(script);
            }
            Some((PathBuf::from(&win.powershell_path), args))
        }
    }
}

/// wsl.exe and other Windows tools write UTF-16LE unless WSL_UTF8=1 reached
/// them; decode either.
pub fn decode_output(bytes: &[u8]) -> String {
    let (body, utf16) = if let Some(rest) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        (rest, true)
    } else if bytes.len() >= 2 {
        // ASCII text in UTF-16LE has a NUL in (almost) every odd byte.
        let odd = bytes.iter().skip(1).step_by(2);
        let zeros = odd.clone().filter(|&&b| b == 0).count();
        (bytes, zeros * 2 > odd.count())
    } else {
        (bytes, false)
    };
    let text = if utf16 {
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    text.replace(['\0', '\r'], "")
}

/// The environment that makes Windows tools write UTF-8: WSL_UTF8=1, and
/// WSL_UTF8 listed in WSLENV so interop passes it on.
pub fn wslenv_with_utf8(current: Option<&str>) -> String {
    match current {
        Some(v)
            if v.split(':')
                .any(|e| e.split('/').next() == Some("WSL_UTF8")) =>
        {
            v.to_string()
        }
        Some(v) if !v.is_empty() => format!("{v}:WSL_UTF8"),
        _ => "WSL_UTF8".into(),
    }
}

/// Run the trigger once, blocking, killed at `triggerTimeout` or when
/// `cancel` is set.
pub fn run(win: &WindowsConfig, cancel: &AtomicBool) -> TriggerOutcome {
    let Some((program, args)) = command_for(win) else {
        return TriggerOutcome::NotRunnable("windows.trigger is \"none\"".into());
    };
    let key = if win.trigger == Trigger::Task {
        "windows.schtasksPath"
    } else {
        "windows.powershellPath"
    };
    run_program(
        &program,
        &args,
        Duration::from_secs(win.trigger_timeout),
        cancel,
        &format!("Windows interop or /mnt/c not ready yet, or a wrong path in {key}"),
    )
}

/// Run a Windows program once through interop, blocking, with UTF-8
/// output asked for, killed (its whole process group) at `timeout` or when
/// `cancel` is set. `missing_hint` says why the program may not exist, in
/// the message when it does not. Also used by `doctor` and
/// `install-windows-files`.
pub fn run_program(
    program: &Path,
    args: &[String],
    timeout: Duration,
    cancel: &AtomicBool,
    missing_hint: &str,
) -> TriggerOutcome {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("WSL_UTF8", "1")
        .env(
            "WSLENV",
            wslenv_with_utf8(std::env::var("WSLENV").ok().as_deref()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung program and its children can
        // all be killed together.
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let why = match e.raw_os_error() {
                Some(libc::ENOENT) => {
                    format!("{} does not exist ({missing_hint})", program.display(),)
                }
                Some(libc::ENOEXEC) => format!(
                    "{}: exec format error (WSL interop is not registered yet)",
                    program.display()
                ),
                _ => format!("{}: {e}", program.display()),
            };
            return TriggerOutcome::NotRunnable(why);
        }
    };
    let readers: Vec<JoinHandle<Vec<u8>>> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    })
    .collect();
    let deadline = Instant::now() + timeout;
    let pgid = Pid::from_raw(child.id() as i32);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        if cancel.load(Ordering::Relaxed) || Instant::now() >= deadline {
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            if cancel.load(Ordering::Relaxed) {
                return TriggerOutcome::Cancelled;
            }
            // Children may still hold the pipes: do not join the readers.
            return TriggerOutcome::TimedOut {
                output: String::new(),
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = Vec::new();
    for reader in readers {
        if let Ok(bytes) = reader.join() {
            output.extend(decode_output(&bytes).into_bytes());
        }
    }
    TriggerOutcome::Exited {
        code: status.and_then(|s| s.code()),
        output: String::from_utf8_lossy(&output).into_owned(),
    }
}

/// Runs trigger attempts in the background while the device wait goes on.
pub struct TriggerRunner {
    win: Arc<WindowsConfig>,
    cancel: Arc<AtomicBool>,
    running: Option<JoinHandle<TriggerOutcome>>,
    started: u32,
    last_start: Option<Instant>,
    succeeded: bool,
    summaries: Vec<String>,
}

impl TriggerRunner {
    pub fn new(win: &WindowsConfig) -> Self {
        TriggerRunner {
            win: Arc::new(win.clone()),
            cancel: Arc::new(AtomicBool::new(false)),
            running: None,
            started: 0,
            last_start: None,
            succeeded: false,
            summaries: Vec::new(),
        }
    }

    fn collect(&mut self) {
        if self.running.as_ref().is_some_and(JoinHandle::is_finished) {
            if let Some(Ok(outcome)) = self.running.take().map(JoinHandle::join) {
                self.record(outcome);
            }
        }
    }

    fn record(&mut self, outcome: TriggerOutcome) {
        let n = self.summaries.len() + 1;
        let summary = outcome.summary();
        match &outcome {
            TriggerOutcome::Exited { output, .. } if outcome.succeeded() => {
                log::info!("Windows trigger attempt {n}: {summary}");
                for line in output.lines().filter(|l| !l.trim().is_empty()) {
                    log::info!("  windows: {}", line.trim_end());
                }
                self.succeeded = true;
            }
            TriggerOutcome::Exited { output, .. } => {
                log::warn!("Windows trigger attempt {n}: {summary}");
                for line in output.lines().filter(|l| !l.trim().is_empty()) {
                    log::warn!("  windows: {}", line.trim_end());
                }
            }
            TriggerOutcome::Cancelled => log::info!("Windows trigger attempt {n}: {summary}"),
            _ => log::warn!("Windows trigger attempt {n}: {summary}"),
        }
        self.summaries.push(format!("attempt {n}: {summary}"));
    }

    /// Called on every miss of the device wait: start the next attempt when
    /// none is running, fewer than `triggerAttempts` were started, none
    /// succeeded, and the previous one started long enough ago.
    pub fn on_miss(&mut self) {
        self.collect();
        let Some((program, args)) = command_for(&self.win) else {
            return;
        };
        let spaced = self
            .last_start
            .is_none_or(|t| t.elapsed() >= ATTEMPT_SPACING);
        if self.running.is_some()
            || self.succeeded
            || self.started >= self.win.trigger_attempts
            || !spaced
        {
            return;
        }
        self.started += 1;
        self.last_start = Some(Instant::now());
        log::info!(
            "starting Windows trigger (attempt {} of {}): {} {}",
            self.started,
            self.win.trigger_attempts,
            program.display(),
            args.join(" ")
        );
        let win = Arc::clone(&self.win);
        let cancel = Arc::clone(&self.cancel);
        self.running = Some(std::thread::spawn(move || run(&win, &cancel)));
    }

    /// Stop a running attempt and return one line per attempt.
    pub fn finish(mut self) -> Vec<String> {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(handle) = self.running.take() {
            if let Ok(outcome) = handle.join() {
                self.record(outcome);
            }
        }
        self.summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_and_utf8_output_decode_alike() {
        let text = "WSL_E_DISK_ALREADY_ATTACHED\r\n";
        let utf16: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut bom = vec![0xFF, 0xFE];
        bom.extend(&utf16);
        assert_eq!(
            decode_output(text.as_bytes()),
            "WSL_E_DISK_ALREADY_ATTACHED\n"
        );
        assert_eq!(decode_output(&utf16), "WSL_E_DISK_ALREADY_ATTACHED\n");
        assert_eq!(decode_output(&bom), "WSL_E_DISK_ALREADY_ATTACHED\n");
        assert_eq!(decode_output("Gerät".as_bytes()), "Gerät");
        assert_eq!(decode_output(b""), "");
    }

    #[test]
    fn already_attached_counts_as_success() {
        let attached = TriggerOutcome::Exited {
            code: Some(255),
            output: "Der Datentraeger ist bereits angefuegt.\nFehlercode: Wsl/Service/AttachDisk/WSL_E_DISK_ALREADY_ATTACHED\n".into(),
        };
        assert!(attached.succeeded());
        let other = TriggerOutcome::Exited {
            code: Some(255),
            output: "WSL_E_ELEVATION_NEEDED_TO_MOUNT_DISK".into(),
        };
        assert!(!other.succeeded());
    }

    #[test]
    fn script_paths_with_variables_are_expanded_by_powershell() {
        let cfg = crate::config::Config::parse(
            r#"{"fsLabel": "x", "diskSerialNumber": "S1", "windows": {"trigger": "script", "scriptPath": "%LOCALAPPDATA%\\wsl-storage-mount\\attach.ps1"}}"#,
        )
        .unwrap();
        let (_, args) = command_for(&cfg.windows).unwrap();
        assert_eq!(args[4], "-Command");
        assert_eq!(
            args[5],
            "& ([Environment]::ExpandEnvironmentVariables('%LOCALAPPDATA%\\wsl-storage-mount\\attach.ps1')); exit $LASTEXITCODE"
        );
        let cfg = crate::config::Config::parse(
            r#"{"fsLabel": "x", "diskSerialNumber": "S1", "windows": {"trigger": "script", "scriptPath": "C:\\wsl\\attach.ps1"}}"#,
        )
        .unwrap();
        let (_, args) = command_for(&cfg.windows).unwrap();
        assert_eq!(&args[4..], ["-File", "C:\\wsl\\attach.ps1"]);
    }

    #[test]
    fn wslenv_gets_wsl_utf8_once() {
        assert_eq!(wslenv_with_utf8(None), "WSL_UTF8");
        assert_eq!(wslenv_with_utf8(Some("")), "WSL_UTF8");
        assert_eq!(wslenv_with_utf8(Some("PATH/l")), "PATH/l:WSL_UTF8");
        assert_eq!(wslenv_with_utf8(Some("PATH/l:WSL_UTF8")), "PATH/l:WSL_UTF8");
        assert_eq!(wslenv_with_utf8(Some("WSL_UTF8/u")), "WSL_UTF8/u");
    }
}
