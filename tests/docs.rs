//! The documentation generated from the command line (`__generate-docs`):
//! a man page and a section of docs/commands.md for every command the help
//! lists, man pages that render without warnings, and bash, zsh and fish
//! completions that parse and complete. Needs no root: it only writes files.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{output_text, scratch_dir, tool_for_case, BIN};

/// Runs the generator into a fresh directory.
fn generate() -> tempfile::TempDir {
    let dir = scratch_dir();
    let out = Command::new(BIN)
        .arg("__generate-docs")
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    dir
}

/// The commands `--help` lists (without `help` itself).
fn listed_commands() -> Vec<String> {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let help = String::from_utf8(out.stdout).unwrap();
    let commands: Vec<String> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        // A command's line starts with two spaces; wrapped text with more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect();
    assert!(commands.len() >= 10, "too few commands in --help: {help}");
    commands
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_command_has_a_man_page_a_completion_and_a_section() {
    let dir = generate();
    let md = read(&dir.path().join("commands.md"));
    let bash = read(&dir.path().join("completions/wsl-storage-mount.bash"));
    let zsh = read(&dir.path().join("completions/_wsl-storage-mount"));
    let fish = read(&dir.path().join("completions/wsl-storage-mount.fish"));
    // roff writes a hyphen as `\-`.
    let top = read(&dir.path().join("man/wsl-storage-mount.1")).replace("\\-", "-");
    for name in listed_commands() {
        let page = dir.path().join(format!("man/wsl-storage-mount-{name}.1"));
        assert!(page.is_file(), "no man page for {name}");
        assert!(
            top.contains(&format!("wsl-storage-mount-{name}")),
            "{name} not in the top page"
        );
        assert!(
            md.contains(&format!("\n## {name}\n")),
            "{name} not in commands.md"
        );
        for (shell, script) in [("bash", &bash), ("zsh", &zsh), ("fish", &fish)] {
            assert!(
                script.contains(&name),
                "{name} not in the {shell} completion"
            );
        }
    }
    // The generator itself is no command a user sees.
    for text in [&md, &bash, &zsh, &fish, &top] {
        assert!(!text.contains("__generate-docs"));
    }
    // Every documented exit code, in the page and the Markdown.
    for code in 0..=8 {
        assert!(
            md.contains(&format!("\n| {code} | ")),
            "exit {code} not in commands.md"
        );
    }
    assert!(top.contains("EXIT STATUS"));
}

#[test]
fn the_generator_without_a_directory_is_a_usage_error() {
    let out = Command::new(BIN).arg("__generate-docs").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("__generate-docs DIR"));
}

#[test]
fn man_pages_render_without_warnings() {
    if !tool_for_case("man", "man-db", "man pages render") {
        return;
    }
    let dir = generate();
    let pages: Vec<_> = std::fs::read_dir(dir.path().join("man"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(pages.len() > 10);
    for page in pages {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&page)
            .env("MANWIDTH", "80")
            .env("MAN_KEEP_FORMATTING", "0")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            page.display(),
            output_text(&out)
        );
        assert!(
            out.stderr.is_empty(),
            "{}: {}",
            page.display(),
            output_text(&out)
        );
        // Bold is overstruck on a pipe ("E\bE"): keep the last character of each.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&out.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(text.contains("EXIT STATUS"), "{}: {text}", page.display());
        assert!(text.contains("OPTIONS"), "{}: {text}", page.display());
    }
}

/// What bash's programmable completion offers for a command line.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let line = words.join(" ");
    let program = format!(
        r#"source "$1"
COMP_WORDS=({words})
COMP_CWORD={cword}
COMP_LINE='{line}'
COMP_POINT=${{#COMP_LINE}}
complete_fn=$(complete -p wsl-storage-mount | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
"$complete_fn" wsl-storage-mount "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = words.join(" "),
        cword = words.len() - 1,
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program, "bash"])
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Whether this bash has programmable completion (`complete`): a bash built
/// without readline, as in the Nix build sandbox, has not.
fn bash_can_complete() -> bool {
    let builtin = Command::new("bash")
        .args([
            "--norc",
            "--noprofile",
            "-c",
            "[ \"$(type -t complete)\" = builtin ]",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !builtin {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "bash has no `complete` builtin under CI=true"
        );
        common::record_skip("bash completes: this bash has no programmable completion");
    }
    builtin
}

#[test]
fn completions_parse_and_bash_completes_commands_and_options() {
    let dir = generate();
    let completions = dir.path().join("completions");
    let bash = completions.join("wsl-storage-mount.bash");
    let out = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    if bash_can_complete() {
        assert_eq!(
            bash_completes(&bash, &["wsl-storage-mount", "mig"]),
            ["migrate"]
        );
        // A subcommand's own options (clap-rs/clap#6421: none before the fix).
        assert_eq!(
            bash_completes(&bash, &["wsl-storage-mount", "migrate", "--re"]),
            ["--resume"]
        );
        assert_eq!(
            bash_completes(&bash, &["wsl-storage-mount", "sync-boot", "--clo"]),
            ["--closure-only"]
        );
    }
    if tool_for_case("zsh", "zsh", "zsh completion parses") {
        let out = Command::new("zsh")
            .arg("-n")
            .arg(completions.join("_wsl-storage-mount"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
    }
    if tool_for_case("fish", "fish", "fish completion parses") {
        let out = Command::new("fish")
            .arg("--no-execute")
            .arg(completions.join("wsl-storage-mount.fish"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
    }
}
