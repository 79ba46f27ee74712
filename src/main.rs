//! wsl-storage-mount: mount a disk attached with `wsl --mount --bare`,
//! prepare per-instance dirs and guard the /nix bind on NixOS-WSL.

// The three parts: the boot chain (find, check and mount the disk, prepare
// the instance dirs), the store lifecycle (the guard, the bind marker), and
// the Windows side (the scripts and the trigger that attach the disk).
mod bench;
mod boot;
mod store;
mod windows;

mod cli;
mod config;
mod doctor;
mod exit;
mod gendocs;
mod log;
mod mountinfo;
mod proc;
mod space;
mod state;
mod status;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::exit::{exit_of, fail, Exit};

fn load_config(path: &Path) -> Result<Config> {
    let text = config::read_file(path).map_err(|e| {
        fail(
            Exit::Config,
            format!(
                "cannot read config {}: {e}; write it (the NixOS module installs /etc/wsl-storage-mount/config.json) or pass --config FILE",
                path.display()
            ),
        )
    })?;
    Config::parse(&text)
        .map_err(|problems| fail(Exit::Config, format!("{}: {problems}", path.display())))
}

fn run(cli: &Cli) -> Result<Exit> {
    // doctor reports a bad config as one of its checks instead of stopping.
    if let Command::Doctor { json } = &cli.command {
        return doctor::run(&cli.config, *json, &cli.boot_root);
    }
    let cfg = load_config(&cli.config)?;
    match &cli.command {
        Command::Check => {
            println!("{}: ok", cli.config.display());
            Ok(Exit::Success)
        }
        Command::Mount => boot::run(&cfg, &cli.config, &cli.boot_root),
        Command::SyncBoot {
            closure_only,
            system,
        } => store::sync::run(
            &cfg,
            &store::sync::Request {
                boot_root: &cli.boot_root,
                system: system.as_deref(),
                closure_only: *closure_only,
            },
        ),
        Command::Status { json } => status::run(&cfg, *json, &cli.boot_root),
        Command::Keep => boot::keep::run(&cfg),
        Command::Dedupe { dry_run, json } => store::dedupe::run(&cfg, *dry_run, *json),
        Command::Mark => {
            crate::log::open_file(Path::new(&cfg.log_file));
            store::mark(&cfg)
        }
        Command::WindowsScript => {
            print_stdout(&windows::script::attach_script(&cfg)?)?;
            Ok(Exit::Success)
        }
        Command::WindowsTask => {
            print_stdout(&windows::script::register_script(&cfg)?)?;
            Ok(Exit::Success)
        }
        Command::InstallWindowsFiles { dir } => windows::install::run(&cfg, dir.as_deref()),
        Command::Migrate {
            dry_run,
            resume,
            verify_contents,
            system,
        } => store::migrate::run(
            &cfg,
            &store::migrate::Options {
                boot_root: cli.boot_root.clone(),
                dry_run: *dry_run,
                resume: *resume,
                verify_contents: *verify_contents,
                system: system.clone(),
            },
        ),
        Command::Doctor { json } => doctor::run(&cli.config, *json, &cli.boot_root),
        Command::Bench {
            size,
            files,
            vhdx_dir,
            json,
        } => bench::run(
            &cfg,
            &bench::Options {
                size: *size,
                files: *files as usize,
                vhdx_dir: vhdx_dir.clone(),
                json: *json,
            },
        ),
    }
}

/// Write a generated file to stdout (an error, not a panic, on a closed pipe).
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

fn main() -> ExitCode {
    // The documentation generator (scripts/gen-docs.sh, package.nix) is not
    // a clap subcommand: clap_complete would offer even a hidden one.
    if let Some(code) = gendocs::from_args(std::env::args_os()) {
        return code;
    }
    let cli = Cli::parse();
    crate::log::init(cli.verbose);
    crate::state::set_run_dir(cli.run_dir.clone());
    match run(&cli) {
        Ok(exit) => ExitCode::from(exit.code() as u8),
        Err(err) => {
            let exit = exit_of(&err);
            ::log::error!("{err:#}");
            ExitCode::from(exit.code() as u8)
        }
    }
}
