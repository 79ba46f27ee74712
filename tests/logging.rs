//! Logging: syslog priority prefixes only when stderr really is the journal
//! (JOURNAL_STREAM names stderr's device and inode), plain lines otherwise,
//! timestamped lines in the log file, and -v raising the level.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use common::Sandbox;
use serde_json::json;

fn run_with_stderr_file(
    sb: &Sandbox,
    cfg: &std::path::Path,
    args: &[&str],
    journal: Option<bool>,
) -> String {
    let err_path = sb.path("stderr.txt");
    let err = std::fs::File::create(&err_path).unwrap();
    let meta = err.metadata().unwrap();
    let mut cmd = sb.helper_cmd(cfg, args);
    match journal {
        Some(true) => cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino())),
        // Set, but naming another stream (as when a child inherited it).
        Some(false) => cmd.env(
            "JOURNAL_STREAM",
            format!("{}:{}", meta.dev(), meta.ino() + 1),
        ),
        None => cmd.env_remove("JOURNAL_STREAM"),
    };
    let status = cmd.stdout(Stdio::null()).stderr(err).status().unwrap();
    assert_eq!(status.code(), Some(3));
    std::fs::read_to_string(&err_path).unwrap()
}

#[test]
fn journal_prefixes_plain_lines_and_the_log_file() {
    let Some(sb) = Sandbox::new() else { return };
    let cfg = sb.config(
        "config.json",
        json!({"deviceId": "nvme-NOT_THERE", "mountPoint": sb.path("storage").display().to_string(), "waitTimeout": 1}),
    );
    let journal = run_with_stderr_file(&sb, &cfg, &["mount"], Some(true));
    assert!(
        journal.lines().any(|l| l.starts_with("<6>mount: starting")),
        "{journal}"
    );
    let last = journal.lines().last().unwrap();
    assert!(
        last.starts_with("<3>device not found after 1 s"),
        "{journal}"
    );

    for other in [Some(false), None] {
        let plain = run_with_stderr_file(&sb, &cfg, &["mount"], other);
        assert!(
            plain
                .lines()
                .any(|l| l.starts_with("info: mount: starting")),
            "{plain}"
        );
        assert!(
            plain
                .lines()
                .last()
                .unwrap()
                .starts_with("error: device not found"),
            "{plain}"
        );
        assert!(!plain.contains("<6>") && !plain.contains("<3>"), "{plain}");
    }

    let log = sb.log();
    let line = log.lines().find(|l| l.contains("mount: starting")).unwrap();
    // 2026-11-23T12:34:56.789Z [pid] INFO  mount: starting ...
    assert!(
        line.len() > 24 && &line[4..5] == "-" && &line[10..11] == "T" && line[..24].ends_with('Z'),
        "{line}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("device not found")),
        "{log}"
    );

    // -v shows debug lines; without it they are not there.
    let quiet = run_with_stderr_file(&sb, &cfg, &["mount"], None);
    let verbose = run_with_stderr_file(&sb, &cfg, &["-v", "mount"], None);
    assert!(!quiet.contains("debug:"), "{quiet}");
    assert!(verbose.contains("debug:"), "{verbose}");
}

/// Run `mount` and give it at most `secs` seconds; a helper still running
/// then is killed and the test fails (it hung).
fn run_bounded(
    sb: &Sandbox,
    cfg: &std::path::Path,
    args: &[&str],
    secs: u64,
) -> std::process::Output {
    let mut child = sb
        .helper_cmd(cfg, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("the helper hung:\n{}", common::output_text(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_fifo_or_symlink_as_log_file_warns_and_the_boot_goes_on() {
    let Some(sb) = Sandbox::new() else { return };
    let fifo = sb.path("log.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let victim = sb.path("victim.txt");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = sb.path("log.link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();

    for (log, what) in [(&fifo, "FIFO"), (&link, "symlink")] {
        let cfg = sb.config(
            "config.json",
            json!({"deviceId": "nvme-NOT_THERE", "logFile": log.display().to_string(),
                   "mountPoint": sb.path("storage").display().to_string(), "waitTimeout": 1}),
        );
        let out = run_bounded(&sb, &cfg, &["mount"], 30);
        let text = common::output_text(&out);
        // The boot went on to its real outcome: the device is missing.
        assert_eq!(out.status.code(), Some(3), "{text}");
        assert!(text.contains("device not found"), "{text}");
        assert!(
            text.contains(&format!("cannot open log file {}", log.display()))
                && text.contains(what),
            "{text}"
        );
    }
    // doctor reads the log under the same rules: no hang on the FIFO (it
    // has no writer), no tail of the symlink's target.
    for (log, what) in [(&fifo, "not a regular file"), (&link, "symlink")] {
        let cfg = sb.config(
            "doctor.json",
            json!({"deviceId": "nvme-NOT_THERE", "logFile": log.display().to_string(),
                   "mountPoint": sb.path("storage").display().to_string()}),
        );
        let out = run_bounded(&sb, &cfg, &["doctor"], 60);
        let text = common::output_text(&out);
        assert!(
            text.contains(&format!("cannot read {}", log.display())) && text.contains(what),
            "{text}"
        );
        assert!(!text.contains("precious"), "{text}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}
