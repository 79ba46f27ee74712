//! Child processes: every program the helper runs (fsck, nix-store,
//! systemctl, schtasks.exe ...) goes through here, so that none can hold up
//! the boot.
//!
//! Each child gets its own process group, a timeout, and captured output.
//! When it exits (or times out) the whole group is killed: a grandchild
//! that kept the output pipe open (a background job of a script, a Windows
//! process started through interop) can neither keep us reading nor outlive
//! the step. After the child has exited we never wait for pipe EOF: the
//! readers get a short grace and are then abandoned.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The process groups of the children running now, so that a helper
/// stopped by a signal takes them along (`kill_all`): each child lives in a
/// group of its own, which a signal to the helper's group does not reach.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kill every child group still running (a signal is stopping the helper).
pub fn kill_all() {
    for pgid in live().drain(..) {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// For commands that run long children (sync-boot, migrate): on SIGTERM,
/// SIGINT (Ctrl-C reaches only the terminal's foreground group, not our
/// children's own groups) or SIGHUP, kill the children, then die of the
/// signal as before.
pub fn kill_children_on_signal() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) else {
        return;
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            kill_all();
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            std::process::exit(128 + sig);
        }
    });
}

/// How often a running child is looked at.
const TICK: Duration = Duration::from_millis(5);
/// After the child has exited, how long its output readers may still take.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// The exit code; None when killed by a signal, timed out or cancelled.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub cancelled: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out && !self.cancelled
    }

    /// "exit 3", "killed by a signal", "killed after 20 s", "cancelled".
    pub fn describe(&self, timeout: Duration) -> String {
        if self.timed_out {
            format!("killed after {} s (timeout)", timeout.as_secs_f64())
        } else if self.cancelled {
            "cancelled".to_string()
        } else {
            match self.code {
                Some(c) => format!("exit {c}"),
                None => "killed by a signal".to_string(),
            }
        }
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// Run `cmd` with `timeout`. Err only when it cannot be started.
pub fn run(cmd: Command, timeout: Duration) -> io::Result<Finished> {
    run_cancellable(cmd, timeout, &AtomicBool::new(false))
}

/// Like `run`, and also stopped as soon as `cancel` becomes true.
pub fn run_cancellable(
    mut cmd: Command,
    timeout: Duration,
    cancel: &AtomicBool,
) -> io::Result<Finished> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn_in_own_group(&mut cmd, None)?;
    let readers = [
        reader(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
        reader(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ),
    ];
    let mut group = Group::new(&child);
    let (code, timed_out, cancelled) = wait_with_deadline(&mut child, &mut group, timeout, cancel);
    let [out, err] = readers;
    Ok(Finished {
        code,
        timed_out,
        cancelled,
        stdout: drain(out),
        stderr: drain(err),
    })
}

/// `producer | consumer`, both killed at `timeout`. The consumer's stdout
/// and both stderrs are captured; the producer's stdout feeds the consumer.
pub fn pipe(
    mut producer: Command,
    mut consumer: Command,
    timeout: Duration,
) -> io::Result<(Finished, Finished)> {
    producer.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut first = spawn_in_own_group(&mut producer, None)?;
    let feed: ChildStdout = first.stdout.take().expect("stdout was piped");
    consumer
        .stdin(Stdio::from(feed))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let pgid = first.id() as i32;
    let mut second = match spawn_in_own_group(&mut consumer, Some(pgid)) {
        Ok(c) => c,
        Err(e) => {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            forget(pgid);
            let _ = first.wait();
            return Err(e);
        }
    };
    // The consumer's stdin is its own copy now; ours went into the Command,
    // which is dropped at the end of this function's scope below.
    drop(consumer);
    let first_err = reader(
        first
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let second_out = reader(
        second
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let second_err = reader(
        second
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );

    let deadline = Instant::now() + timeout;
    let mut first_status = None;
    let mut second_status = None;
    let mut timed_out = false;
    while first_status.is_none() || second_status.is_none() {
        if first_status.is_none() {
            first_status = first.try_wait()?.map(|s| s.code());
        }
        if second_status.is_none() {
            second_status = second.try_wait()?.map(|s| s.code());
        }
        // A consumer that died leaves the producer with a broken pipe (it
        // gets SIGPIPE); a producer that died closes the consumer's input.
        if first_status.is_some() && second_status.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            first_status = Some(first.wait().ok().and_then(|s| s.code()));
            second_status = Some(second.wait().ok().and_then(|s| s.code()));
            break;
        }
        std::thread::sleep(TICK);
    }
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    forget(pgid);
    let code = |c: Option<Option<i32>>| if timed_out { None } else { c.flatten() };
    Ok((
        Finished {
            code: code(first_status),
            timed_out,
            cancelled: false,
            stdout: Vec::new(),
            stderr: drain(first_err),
        },
        Finished {
            code: code(second_status),
            timed_out,
            cancelled: false,
            stdout: drain(second_out),
            stderr: drain(second_err),
        },
    ))
}

fn spawn_in_own_group(cmd: &mut Command, pgid: Option<i32>) -> io::Result<Child> {
    if cmd.get_program().is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty program"));
    }
    cmd.process_group(pgid.unwrap_or(0));
    // Children die with the helper, also when it is SIGKILLed (no handler
    // runs then): the kernel sends SIGKILL when the thread that started the
    // child ends. Every function here waits for its child in the thread
    // that spawned it, so that thread outlives the child. The parent may
    // already be gone between fork and prctl: then exit at once.
    // With a pre_exec hook std forks and calls execvp, which runs a file
    // without a known header through /bin/sh; posix_spawn (std's path
    // without a hook) reports ENOEXEC. Keep that: a Windows .exe that
    // interop cannot run must fail as "exec format error", not be read as
    // a shell script.
    check_exec_format(cmd)?;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(137);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    if pgid.is_none() {
        live().push(child.id() as i32);
    }
    Ok(child)
}

/// ENOEXEC for a program that is a regular file with neither an ELF nor a
/// `#!` header (what execve says of it). Anything this cannot read (not
/// found, no read permission, not a regular file) is left to exec itself.
fn check_exec_format(cmd: &Command) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let program = std::path::Path::new(cmd.get_program());
    let path = if program.as_os_str().as_bytes().contains(&b'/') {
        Some(program.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    };
    let Some(path) = path else { return Ok(()) };
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(&path)
    else {
        return Ok(());
    };
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(());
    }
    let mut head = [0u8; 4];
    let n = f.read(&mut head).unwrap_or(0);
    if n >= 2 && (head[..n].starts_with(b"\x7fELF") || head.starts_with(b"#!")) {
        return Ok(());
    }
    Err(io::Error::from_raw_os_error(libc::ENOEXEC))
}

fn forget(pgid: i32) {
    live().retain(|&g| g != pgid);
}

/// The child's process group, killed once: at the deadline, or after the
/// child exited (whatever it left behind).
struct Group {
    pgid: Pid,
    killed: bool,
}

impl Group {
    fn new(child: &Child) -> Self {
        Group {
            pgid: Pid::from_raw(child.id() as i32),
            killed: false,
        }
    }

    fn kill(&mut self) {
        if !self.killed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
            forget(self.pgid.as_raw());
            self.killed = true;
        }
    }
}

fn wait_with_deadline(
    child: &mut Child,
    group: &mut Group,
    timeout: Duration,
    cancel: &AtomicBool,
) -> (Option<i32>, bool, bool) {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                // Anything the child left in its group goes with it.
                group.kill();
                return (status.code(), false, false);
            }
            Ok(None) => {}
            Err(_) => {
                group.kill();
                let _ = child.wait();
                return (None, false, false);
            }
        }
        let cancelled = cancel.load(Ordering::Relaxed);
        if cancelled || Instant::now() >= deadline {
            group.kill();
            let _ = child.wait();
            return (None, !cancelled, cancelled);
        }
        std::thread::sleep(TICK);
    }
}

type Reader = Option<JoinHandle<Vec<u8>>>;

fn reader(stream: Option<Box<dyn Read + Send>>) -> Reader {
    stream.map(|mut s| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf);
            buf
        })
    })
}

/// The reader's bytes, or nothing when a process outside the group still
/// holds the pipe after the grace: then the thread is left behind, never
/// waited for.
fn drain(reader: Reader) -> Vec<u8> {
    let Some(handle) = reader else {
        return Vec::new();
    };
    let until = Instant::now() + DRAIN_GRACE;
    while !handle.is_finished() {
        if Instant::now() >= until {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    handle.join().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn a_program_without_a_known_header_is_exec_format_error_not_a_shell_script() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("garbage.exe");
        std::fs::write(&exe, b"MZ\x90\x00touch should-not-exist\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = Command::new(&exe);
        cmd.current_dir(d.path());
        let err = run(cmd, Duration::from_secs(5)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOEXEC), "{err}");
        assert!(!d.path().join("should-not-exist").exists());
        // A script with #! still runs.
        let script = d.path().join("ok.sh");
        std::fs::write(&script, b"#!/bin/sh\nexit 4\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            run(Command::new(&script), Duration::from_secs(5))
                .unwrap()
                .code,
            Some(4)
        );
    }

    #[test]
    fn output_and_code_are_captured() {
        let f = run(sh("echo out; echo err >&2; exit 3"), Duration::from_secs(5)).unwrap();
        assert_eq!(f.code, Some(3));
        assert_eq!(f.stdout_text(), "out\n");
        assert_eq!(f.stderr_text(), "err");
        assert!(!f.success());
    }

    #[test]
    fn a_hanging_child_is_killed_at_the_timeout() {
        let start = Instant::now();
        let f = run(sh("sleep 30"), Duration::from_millis(200)).unwrap();
        assert!(f.timed_out);
        assert_eq!(f.code, None);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_grandchild_holding_the_pipe_does_not_keep_us_waiting() {
        // The child exits at once; its background sleep keeps stdout open.
        let start = Instant::now();
        let f = run(sh("sleep 30 & echo started"), Duration::from_secs(20)).unwrap();
        assert_eq!(f.code, Some(0));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "waited {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn a_grandchild_in_another_session_is_not_waited_for() {
        // setsid takes it out of our group: we cannot kill it, and we must
        // not wait for its end either.
        let start = Instant::now();
        let f = run(
            sh("setsid sleep 30 & echo started"),
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(f.code, Some(0));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_missing_program_is_an_error() {
        assert!(run(Command::new("/nonexistent/program"), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn pipe_feeds_the_consumer() {
        let (p, c) = pipe(sh("printf 'a\\nb\\n'"), sh("wc -l"), Duration::from_secs(5)).unwrap();
        assert!(p.success() && c.success());
        assert_eq!(c.stdout_text().trim(), "2");
    }

    #[test]
    fn pipe_with_a_failing_consumer_reports_it() {
        let (_, c) = pipe(
            sh("yes"),
            sh("head -c1 >/dev/null; exit 4"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(c.code, Some(4));
    }
}
