//! Start the Windows side from Linux: `schtasks.exe /Run /TN <task>` (the
//! elevated scheduled task attaches the disk) or the attach script through
//! powershell.exe (works only when WSL itself runs elevated).
//!
//! Interop may not be ready early in boot: a missing executable, an "exec
//! format error" (binfmt for Windows binaries not registered yet) or an
//! unmounted /mnt/c are warnings, and the next miss tries again. The run is
//! killed at `triggerTimeout`; the device wait never blocks on it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
                "-Command",
            ]
            .into_iter()
            .map(String::from)
            .collect();
            args.push(script_command(&script));
            Some((PathBuf::from(&win.powershell_path), args))
        }
    }
}

/// The exit code of the script trigger when the script is not there.
pub const SCRIPT_MISSING: i32 = 3;

/// The -Command text that runs attach.ps1 at `script`. Not `-File`: it
/// takes the path literally (nothing between Linux and powershell.exe
/// expands %LOCALAPPDATA%), and a missing file ends powershell.exe with
/// an exit code whose low byte (all Linux sees of it) can be 0, as can
/// `exit $LASTEXITCODE` when the script never ran. So: expand, test, run,
/// and pass on an exit code that is never 0 unless the script said so.
/// The path was validated (no quotes) and is quoted all the same.
pub fn script_command(script: &str) -> String {
    format!(
        "$p = [Environment]::ExpandEnvironmentVariables({}); if (-not (Test-Path -LiteralPath $p -PathType Leaf)) {{ [Console]::Error.WriteLine('attach script ' + $p + ' does not exist (windows.scriptPath)'); exit {SCRIPT_MISSING} }}; & $p; if ($null -eq $LASTEXITCODE) {{ exit 2 }}; exit $LASTEXITCODE",
        crate::windows::script::ps_quote(script)
    )
}

/// attach.ps1's exit code for an error it did not expect (its `trap`):
/// powershell.exe -File ends an unhandled terminating error with 1, which
/// is also "no disk", so the script turns those into 4.
pub const ATTACH_UNEXPECTED: i64 = 4;

/// What attach.ps1's exit code means (see its header), and 3 of the
/// script trigger's command.
pub fn attach_exit_meaning(code: i64) -> &'static str {
    match code {
        0 => "the disk is attached",
        // powershell.exe -File also ends with 1 when it refuses to run the
        // script at all: a Group Policy execution policy (MachinePolicy or
        // UserPolicy scope) overrides -ExecutionPolicy Bypass
        // (about_Execution_Policies); then the transcript has no entry for
        // this run.
        1 => "no disk, or more than one, has diskSerialNumber; its transcript lists the disks Windows sees (no entry for this run in the transcript: powershell.exe refused the script, e.g. a Group Policy execution policy overrides -ExecutionPolicy Bypass; `wsl-storage-mount doctor` checks)",
        2 => "wsl --mount failed, the disk may hold Windows, or .NET profiler variables are set; its transcript says which",
        3 => "the attach script is not where windows.scriptPath says",
        ATTACH_UNEXPECTED => "attach.ps1 stopped on an error it did not expect; its transcript (windows.logPath) names it and the line",
        _ => "an unexpected exit code; see the transcript",
    }
}

/// Task Scheduler's "last result" while the task runs (SCHED_S_TASK_RUNNING).
pub const TASK_RUNNING: i64 = 0x41301;
/// ... before it ever ran (SCHED_S_TASK_HAS_NOT_RUN).
pub const TASK_HAS_NOT_RUN: i64 = 0x41303;
/// HRESULT_FROM_WIN32(ERROR_NOT_LOGGED_ON): a task registered "run only
/// when the user is logged on" (LogonType Interactive, as register-task.ps1
/// does) cannot start while its user has no interactive session (Task
/// Scheduler result codes, Microsoft docs; winerror.h ERROR_NOT_LOGGED_ON
/// 1245 = 0x4DD).
pub const TASK_NOT_LOGGED_ON: u32 = 0x800704DD;

/// What `schtasks /Query /V /FO CSV /NH` says of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRun {
    /// "Last Run Time", in the locale's format: only compared for change.
    pub last_run: String,
    /// "Last Result": the program's exit code, or a SCHED_S_/HRESULT code.
    pub last_result: i64,
    /// "Task To Run": the action's command line (empty when absent).
    pub task_to_run: String,
}

/// The verbose CSV's columns are localized in their headers but not in
/// their order: HostName, TaskName, Next Run Time, Status, Logon Mode,
/// Last Run Time, Last Result, Author, Task To Run, ... So the columns are read by position,
/// the header row is left out (/NH), and a row counts only when its
/// TaskName column is the task asked for: a misaligned or foreign row is
/// never read as a result. A task with several triggers has several rows;
/// the first one is used (they share the run columns).
pub fn parse_task_query(output: &str, task: &str) -> Option<TaskRun> {
    let want = task.trim_start_matches('\\');
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(output.as_bytes());
    reader.records().flatten().find_map(|row| {
        let name = row.get(1)?.trim().trim_start_matches('\\');
        if !name.eq_ignore_ascii_case(want) {
            return None;
        }
        let last_run = row.get(5)?.trim().to_string();
        let result = row.get(6)?.trim();
        let last_result = match result
            .strip_prefix("0x")
            .or_else(|| result.strip_prefix("0X"))
        {
            Some(hex) => i64::from_str_radix(hex, 16).ok()?,
            None => result.parse().ok()?,
        };
        Some(TaskRun {
            last_run,
            last_result,
            task_to_run: row.get(8).unwrap_or("").trim().to_string(),
        })
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskVerdict {
    Succeeded,
    Failed,
    Running,
    /// The task did not run (yet) since it was started.
    NotRun,
    /// Its result could not be read.
    Unknown,
}

/// What the task's last result means for the attach.
pub fn describe_task_result(code: i64) -> (TaskVerdict, String) {
    // schtasks prints HRESULTs as negative decimals; show them as Windows does.
    let hex = format!("0x{:X}", code as u32);
    if code as u32 == TASK_NOT_LOGGED_ON {
        return (
            TaskVerdict::Failed,
            format!("the task cannot start ({hex}): its Windows user has no interactive session, and the task runs only while that user is logged on; log on to Windows as that user (the logon trigger then attaches the disk)"),
        );
    }
    match code {
        0..=2 | ATTACH_UNEXPECTED => (
            if code == 0 {
                TaskVerdict::Succeeded
            } else {
                TaskVerdict::Failed
            },
            format!("attach.ps1 exited {code}: {}", attach_exit_meaning(code)),
        ),
        TASK_RUNNING => (
            TaskVerdict::Running,
            format!("attach.ps1 is still running ({hex})"),
        ),
        TASK_HAS_NOT_RUN => (
            TaskVerdict::NotRun,
            format!("the task has not run yet ({hex})"),
        ),
        _ => (
            TaskVerdict::Failed,
            format!("the task ended with {code} ({hex}); look it up in Task Scheduler's history of the task"),
        ),
    }
}

/// One attempt: the program's outcome, and for the task trigger what the
/// task's last result said about attach.ps1 afterwards.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub outcome: TriggerOutcome,
    pub task: Option<(TaskVerdict, String)>,
}

impl Attempt {
    /// Windows did its part: the task's attach.ps1 exited 0 (for the task
    /// trigger `schtasks /Run` exit 0 only means "started"), the script
    /// trigger's attach.ps1 exited 0, or wsl.exe said "already attached".
    pub fn succeeded(&self) -> bool {
        match &self.task {
            Some((verdict, _)) => {
                *verdict == TaskVerdict::Succeeded
                    || matches!(&self.outcome, TriggerOutcome::Exited { output, .. } if output.contains(ALREADY_ATTACHED))
            }
            None => self.outcome.succeeded(),
        }
    }
}

/// Ask Task Scheduler about `task` once.
fn query_task(
    win: &WindowsConfig,
    task: &str,
    timeout: Duration,
    cancel: &AtomicBool,
) -> Result<TaskRun, String> {
    let args: Vec<String> = ["/Query", "/TN", task, "/V", "/FO", "CSV", "/NH"]
        .into_iter()
        .map(String::from)
        .collect();
    match run_program(
        Path::new(&win.schtasks_path),
        &args,
        timeout,
        cancel,
        "windows.schtasksPath",
    ) {
        TriggerOutcome::Exited {
            code: Some(0),
            output,
        } => parse_task_query(&output, task).ok_or_else(|| {
            format!(
                "no row for {task} in `schtasks /Query /V /FO CSV` output: {:?}",
                output.lines().next().unwrap_or("")
            )
        }),
        other => Err(format!("`schtasks /Query` {}", other.summary())),
    }
}

/// After `schtasks /Run` started the task: follow its last result until
/// the run that was started has ended or `deadline`.
///
/// A result counts only once a query has shown the task running (Last
/// Result 0x41301) and a later one shows something else: that is the end
/// of a run that happened after `/Run`. A changed Last Run Time alone is
/// not enough: when the query before `/Run` failed there is nothing to
/// compare with, and the previous run's result would be read as this
/// one's. So for "started, then finished with 0" the queries after `/Run`
/// must answer, in this order: at least one row with Last Result 267009
/// (0x41301), then a row with Last Result 0 (failed queries in between are
/// asked again). A run too short to be seen running is not taken: its
/// attempt ends at triggerTimeout without a verdict, and the next miss
/// starts the task again.
fn follow_task(
    win: &WindowsConfig,
    task: &str,
    before: Option<&str>,
    deadline: Instant,
    cancel: &AtomicBool,
) -> Option<(TaskVerdict, String)> {
    let mut last: Result<TaskRun, String> = Err("not asked".into());
    let mut seen_running = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if cancel.load(Ordering::Relaxed) {
            return None;
        }
        if !left.is_zero() {
            last = query_task(win, task, left.max(Duration::from_secs(1)), cancel);
            if let Ok(run) = &last {
                if run.last_result == TASK_RUNNING {
                    seen_running = true;
                } else if seen_running {
                    return Some(describe_task_result(run.last_result));
                }
            }
        }
        if Instant::now() + TASK_POLL >= deadline {
            break;
        }
        let until = Instant::now() + TASK_POLL;
        while Instant::now() < until {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Some(match last {
        Ok(run) if seen_running => {
            let (verdict, text) = describe_task_result(run.last_result);
            (verdict, format!("{text} after windows.triggerTimeout ({} s)", win.trigger_timeout))
        }
        Ok(run) if before == Some(run.last_run.as_str()) => (
            TaskVerdict::NotRun,
            format!(
                "the task did not start within windows.triggerTimeout ({} s): its last run time is still {}",
                win.trigger_timeout, run.last_run
            ),
        ),
        Ok(run) => {
            let (_, text) = describe_task_result(run.last_result);
            (
                TaskVerdict::Unknown,
                format!(
                    "the task was never seen running (Last Result 0x41301) within windows.triggerTimeout ({} s), so its last result ({text}, last run {}) may be an earlier run's and is not taken",
                    win.trigger_timeout, run.last_run
                ),
            )
        }
        Err(why) => (
            TaskVerdict::Unknown,
            format!("cannot read the task's last result: {why}"),
        ),
    })
}

/// How often the task's last result is asked for while it runs.
const TASK_POLL: Duration = Duration::from_secs(1);

/// One attempt, blocking: run the trigger (killed at `triggerTimeout`); for
/// the task trigger, also read the task's last run before (at most 5 s),
/// and follow its result after until `triggerTimeout` from the start.
pub fn attempt(win: &WindowsConfig, cancel: &AtomicBool) -> Attempt {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(win.trigger_timeout);
    if win.trigger != Trigger::Task {
        return Attempt {
            outcome: run(win, cancel),
            task: None,
        };
    }
    let task = crate::windows::script::task_name(win);
    let before = query_task(
        win,
        &task,
        Duration::from_secs(win.trigger_timeout.min(5)),
        cancel,
    )
    .ok()
    .map(|r| r.last_run);
    let outcome = run(win, cancel);
    let task = match &outcome {
        TriggerOutcome::Exited { code: Some(0), .. } => {
            follow_task(win, &task, before.as_deref(), deadline, cancel)
        }
        _ => None,
    };
    Attempt { outcome, task }
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
/// `install-windows-files`. Through `crate::proc`: a program that exits
/// but leaves a child holding its output pipe does not keep us waiting.
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
        .stdin(Stdio::null());
    let finished = match crate::proc::run_cancellable(cmd, timeout, cancel) {
        Ok(finished) => finished,
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
    if finished.cancelled {
        return TriggerOutcome::Cancelled;
    }
    let mut output = decode_output(&finished.stdout);
    output.push_str(&decode_output(&finished.stderr));
    if finished.timed_out {
        return TriggerOutcome::TimedOut { output };
    }
    TriggerOutcome::Exited {
        code: finished.code,
        output,
    }
}

/// Runs trigger attempts in the background while the device wait goes on.
pub struct TriggerRunner {
    win: Arc<WindowsConfig>,
    cancel: Arc<AtomicBool>,
    running: Option<JoinHandle<Attempt>>,
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
            if let Some(Ok(attempt)) = self.running.take().map(JoinHandle::join) {
                self.record(attempt);
            }
        }
    }

    fn record(&mut self, attempt: Attempt) {
        let n = self.summaries.len() + 1;
        let outcome = &attempt.outcome;
        let mut summary = outcome.summary();
        let succeeded = attempt.succeeded();
        let output_lines = |output: &str, warn: bool| {
            for line in output.lines().filter(|l| !l.trim().is_empty()) {
                if warn {
                    log::warn!("  windows: {}", line.trim_end());
                } else {
                    log::info!("  windows: {}", line.trim_end());
                }
            }
        };
        match outcome {
            TriggerOutcome::Exited { output, code } => {
                // The script trigger's own exit code is attach.ps1's.
                if self.win.trigger == Trigger::Script {
                    if let Some(c) = code.filter(|_| !output.contains(ALREADY_ATTACHED)) {
                        summary.push_str(&format!(" ({})", attach_exit_meaning(c.into())));
                    }
                }
                let started = self.win.trigger == Trigger::Task && *code == Some(0);
                if succeeded || started {
                    log::info!("Windows trigger attempt {n}: {summary}");
                } else {
                    log::warn!("Windows trigger attempt {n}: {summary}");
                }
                output_lines(output, !(succeeded || started));
            }
            TriggerOutcome::Cancelled => log::info!("Windows trigger attempt {n}: {summary}"),
            _ => log::warn!("Windows trigger attempt {n}: {summary}"),
        }
        if let Some((verdict, text)) = &attempt.task {
            match verdict {
                TaskVerdict::Succeeded => {
                    log::info!("Windows trigger attempt {n}: task result: {text}")
                }
                _ => log::warn!(
                    "Windows trigger attempt {n}: task result: {text}{}",
                    if verdict == &TaskVerdict::Running {
                        ""
                    } else {
                        "; the next miss starts it again"
                    }
                ),
            }
            summary.push_str(&format!("; task result: {text}"));
        }
        if succeeded {
            self.succeeded = true;
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
        self.running = Some(std::thread::spawn(move || attempt(&win, &cancel)));
    }

    /// Stop a running attempt and return one line per attempt.
    pub fn finish(mut self) -> Vec<String> {
        self.cancel.store(true, Ordering::Relaxed);
        if let Some(handle) = self.running.take() {
            if let Ok(attempt) = handle.join() {
                self.record(attempt);
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
    fn script_paths_are_tested_and_exit_codes_never_0_by_accident() {
        for path in [
            "%LOCALAPPDATA%\\wsl-storage-mount\\attach.ps1",
            "C:\\wsl\\attach.ps1",
        ] {
            let cfg = crate::config::Config::parse(&format!(
                r#"{{"fsLabel": "x", "diskSerialNumber": "S1", "windows": {{"trigger": "script", "scriptPath": {}}}}}"#,
                serde_json::to_string(path).unwrap()
            ))
            .unwrap();
            let (_, args) = command_for(&cfg.windows).unwrap();
            assert_eq!(args[4], "-Command");
            let cmd = &args[5];
            assert!(cmd.starts_with(&format!(
                "$p = [Environment]::ExpandEnvironmentVariables('{path}'); if (-not (Test-Path -LiteralPath $p -PathType Leaf)) {{"
            )), "{cmd}");
            assert!(
                cmd.contains(
                    "exit 3 }; & $p; if ($null -eq $LASTEXITCODE) { exit 2 }; exit $LASTEXITCODE"
                ),
                "{cmd}"
            );
        }
    }

    /// A real `schtasks /Query /TN "\WSL\attach storage" /V /FO CSV /NH`
    /// row shape, in German, with a comma inside a quoted field.
    const QUERY_DE: &str = "\"PC\",\"\\WSL\\attach storage\",\"Nicht zutreffend\",\"Bereit\",\"Nur interaktiv\",\"25.11.2026 07:01:02\",\"1\",\"PC\\me\",\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -File \"\"C:\\ProgramData\\wsl-storage-mount\\attach.ps1\"\"\",\"N/A\",\"Attach, the disk\"\r\n";

    #[test]
    fn the_task_query_is_read_by_position_and_task_name() {
        let run = parse_task_query(QUERY_DE, "\\WSL\\attach storage").unwrap();
        assert_eq!(
            run,
            TaskRun {
                last_run: "25.11.2026 07:01:02".into(),
                last_result: 1,
                task_to_run: "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -File \"C:\\ProgramData\\wsl-storage-mount\\attach.ps1\"".into(),
            }
        );
        // Case and the leading '\\' do not matter; another task's row is
        // never read, nor a header row.
        assert!(parse_task_query(QUERY_DE, "wsl\\ATTACH STORAGE").is_some());
        assert!(parse_task_query(QUERY_DE, "\\WSL\\other").is_none());
        let header = "\"HostName\",\"TaskName\",\"Next Run Time\",\"Status\",\"Logon Mode\",\"Last Run Time\",\"Last Result\"\r\n";
        assert!(parse_task_query(header, "TaskName").is_none());
        let running =
            "\"PC\",\"\\t\",\"N/A\",\"Running\",\"x\",\"1/1/2026 1:00:00 AM\",\"267009\"\n";
        assert_eq!(
            parse_task_query(&format!("{header}{running}"), "t")
                .unwrap()
                .last_result,
            TASK_RUNNING
        );
        let hresult = "\"PC\",\"\\t\",\"N/A\",\"Ready\",\"x\",\"N/A\",\"-2147020576\"\n";
        let code = parse_task_query(hresult, "t").unwrap().last_result;
        assert!(describe_task_result(code).1.contains("0x800710E0"));
        assert!(parse_task_query("garbage", "t").is_none());
    }

    #[test]
    fn task_results_have_a_verdict() {
        assert_eq!(describe_task_result(0).0, TaskVerdict::Succeeded);
        let (v, text) = describe_task_result(1);
        assert_eq!(v, TaskVerdict::Failed);
        assert!(text.contains("diskSerialNumber"), "{text}");
        assert_eq!(describe_task_result(2).0, TaskVerdict::Failed);
        assert_eq!(describe_task_result(0x41301).0, TaskVerdict::Running);
        assert_eq!(describe_task_result(0x41303).0, TaskVerdict::NotRun);
        // An unexpected error in attach.ps1 is not "no disk".
        let (v, text) = describe_task_result(4);
        assert_eq!(v, TaskVerdict::Failed);
        assert!(text.contains("did not expect"), "{text}");
        assert!(!text.contains("diskSerialNumber"), "{text}");
        // Exit 1 also names a Group Policy execution policy.
        assert!(describe_task_result(1)
            .1
            .contains("Group Policy execution policy"));
        // 0x800704DD, as schtasks prints it (negative decimal) and as hex.
        for code in [-2147023651, 0x800704DD] {
            let (v, text) = describe_task_result(code);
            assert_eq!(v, TaskVerdict::Failed);
            assert!(
                text.contains("0x800704DD") && text.contains("no interactive session"),
                "{text}"
            );
        }
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
