//! The NixOS module's own scripts, run with the real helper on real Nix
//! stores: the boot loader step (`system.build.installBootLoader`, which
//! `nixos-rebuild switch`/`boot` run with the new toplevel) and the
//! activation snippet (`nixos-rebuild test`). The script texts come from
//! evaluating nixos/ with nix-instantiate, the eval stubs and a nixpkgs `lib`
//! (as checks/eval does); only the two store paths the stubs invent (the
//! helper, the generated config) are pointed at this build and at a sandbox
//! config. The executable twin of the module's side of
//! vm-rebuild-survives-restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::nixstore::{self, closure, invalid_in, root_uri, toy_system};
use common::{output_text, Sandbox, BIN};
use serde_json::json;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The nixpkgs lib, found as checks/eval/run.sh finds it: NIXPKGS_LIB, else
/// ../shared/nixpkgs-lib/lib beside the checkout (or beside the main
/// checkout of a git worktree). Under CI=true it must be there.
fn nixpkgs_lib() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("NIXPKGS_LIB").filter(|d| !d.is_empty()) {
        candidates.push(dir.into());
    }
    candidates.push(Path::new(MANIFEST_DIR).join("../shared/nixpkgs-lib/lib"));
    let common_dir = Command::new("git")
        .args([
            "-C",
            MANIFEST_DIR,
            "rev-parse",
            "--path-format=absolute",
            "--git-common-dir",
        ])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(parent) = common_dir.as_deref().and_then(Path::parent) {
        candidates.push(parent.join("../shared/nixpkgs-lib/lib"));
    }
    if let Some(lib) = candidates
        .into_iter()
        .find(|d| d.join("default.nix").is_file())
    {
        return Some(lib);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "no nixpkgs lib under CI=true: set NIXPKGS_LIB or put one at ../shared/nixpkgs-lib/lib"
    );
    common::record_skip("no nixpkgs lib (NIXPKGS_LIB, ../shared/nixpkgs-lib/lib)");
    None
}

/// What the module generates, with the stubs' invented store paths.
struct Generated {
    boot_loader: String,
    activation: String,
    helper: String,
    config: String,
}

/// Evaluate the module (enabled, the bind on) with `previous` as the boot
/// loader the system had before (NixOS-WSL: coreutils' true).
fn generate(lib: &Path, previous: &str) -> Generated {
    let expr = r#"
      { libPath, stub, previous }:
      let
        lib = import (/. + libPath);
        config = import (/. + stub) { inherit lib; } [
          {
            wslStorageMount = {
              enable = true;
              fsUuid = "3d2f8c1e-7b4a-4e59-a0c6-5f1b2e9d8a47";
            };
            system.build.installBootLoader = previous;
          }
        ];
      in
      {
        bootLoader = config.system.build.installBootLoader.text;
        activation = config.system.activationScripts.wslStorageMountSyncClosure.text;
        helper = lib.getExe config.wslStorageMount.package;
        config = "${config.wslStorageMount.configFile}";
      }
    "#;
    let out = Command::new("nix-instantiate")
        .env("NIX_CONFIG", "build-users-group =")
        .args(["--eval", "--strict", "--json", "--expr", expr])
        .arg("--argstr")
        .arg("libPath")
        .arg(lib.canonicalize().unwrap())
        .arg("--argstr")
        .arg("stub")
        .arg(Path::new(MANIFEST_DIR).join("checks/eval/stub.nix"))
        .args(["--argstr", "previous", previous])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let field = |k: &str| v[k].as_str().unwrap().to_string();
    Generated {
        boot_loader: field("bootLoader"),
        activation: field("activation"),
        helper: field("helper"),
        config: field("config"),
    }
}

struct Setup {
    sb: Sandbox,
    /// The stand-in VHDX root.
    root: String,
    boot_loader: PathBuf,
    activation: PathBuf,
    /// Where the previous boot loader records its arguments.
    previous_log: PathBuf,
}

/// A disk store holding `systems` (its profile -> the last) bound over the
/// sandbox's /nix, a stand-in VHDX root booting the first, and the module's scripts, written into the
/// sandbox with the helper pointed at this build (and at the stand-in root:
/// `--boot-root`, which the module leaves at its default `/`).
fn setup(systems: &[&str], previous_fails: bool) -> Option<Setup> {
    let lib = nixpkgs_lib()?;
    let mut sb = Sandbox::new()?;
    if !nixstore::have_nix() {
        return None;
    }
    let nixstore::Stores {
        uuid,
        mp,
        dir,
        root,
    } = nixstore::disk_and_vhdx(&mut sb, systems, systems[0], None);
    let cfg = sb.config(
        "config.json",
        json!({
            "fsUuid": uuid,
            "mountPoint": mp,
            "bindMountNixStore": true,
            "nixStoreSubdir": "nixos-wsl-main",
            "instanceDirs": {"nixos-wsl-main": {"owner": 0, "group": 0, "mode": "0755"}},
        }),
    );
    // What nix.mount does at boot: the disk store over /nix.
    sb.sh_ok(&format!("mount --bind {dir} /nix"));

    let previous = sb.path("previous-boot-loader");
    let previous_log = sb.path("previous-boot-loader.args");
    common::write_exe(
        &previous,
        &format!(
            "echo \"$@\" >> {}\n{}",
            previous_log.display(),
            if previous_fails { "exit 1" } else { "exit 0" }
        ),
    );
    let generated = generate(&lib, &previous.display().to_string());
    let helper = format!(
        "{BIN} --boot-root {root} --run-dir {}",
        sb.path("run").display()
    );
    let point = |text: &str| {
        assert!(text.contains(&generated.helper) && text.contains(&generated.config));
        text.replace(&generated.helper, &helper)
            .replace(&generated.config, &cfg.display().to_string())
    };
    let boot_loader = sb.path("install-boot-loader");
    common::write_exe(&boot_loader, "");
    std::fs::write(
        &boot_loader,
        // pkgs.writeShellScript's interpreter.
        format!("#!/bin/bash\n{}", point(&generated.boot_loader)),
    )
    .unwrap();
    let activation = sb.path("activation-snippet");
    std::fs::write(&activation, point(&generated.activation)).unwrap();
    Some(Setup {
        sb,
        root,
        boot_loader,
        activation,
        previous_log,
    })
}

impl Setup {
    fn vhdx_profile(&self) -> String {
        self.sb
            .sh_ok(&format!(
                "readlink -f {}/nix/var/nix/profiles/system",
                self.root
            ))
            .trim()
            .to_string()
    }

    fn vhdx_invalid(&self, system: &str) -> Vec<String> {
        invalid_in(&self.sb, &root_uri(&self.root), &closure(system))
    }
}

#[test]
fn the_boot_loader_step_runs_the_previous_one_then_makes_the_toplevel_the_vhdx_boot_generation() {
    let gen1 = toy_system(1, 4, "-module");
    let gen2 = toy_system(2, 4, "-module");
    // The disk's profile points at gen3: the step must sync the toplevel it
    // is given (a rollback, `nixos-rebuild boot` of an older one), not that.
    let gen3 = toy_system(3, 4, "-module");
    let Some(s) = setup(&[&gen1, &gen2, &gen3], false) else {
        return;
    };
    assert_eq!(s.vhdx_profile(), gen1);
    assert!(
        !s.vhdx_invalid(&gen2).is_empty(),
        "gen2 is not on the VHDX yet"
    );

    // What switch-to-configuration does: the step, with the toplevel.
    let out = s.sb.sh(&format!("{} {gen2}", s.boot_loader.display()));
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(
        std::fs::read_to_string(&s.previous_log).unwrap().trim(),
        gen2,
        "the previous boot loader ran, with the toplevel"
    );
    assert_eq!(s.vhdx_profile(), gen2, "the VHDX boots the new generation");
    assert_eq!(s.vhdx_invalid(&gen2), Vec::<String>::new());

    // Anything but one argument is a usage error, before anything runs.
    let out = s.sb.sh(&s.boot_loader.display().to_string());
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("takes one argument"));
}

#[test]
fn a_failing_previous_boot_loader_fails_the_step_and_the_vhdx_is_left_alone() {
    let gen1 = toy_system(1, 4, "-module-fail");
    let gen2 = toy_system(2, 4, "-module-fail");
    let Some(s) = setup(&[&gen1, &gen2], true) else {
        return;
    };
    let out = s.sb.sh(&format!("{} {gen2}", s.boot_loader.display()));
    assert_ne!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(
        s.vhdx_profile(),
        gen1,
        "the VHDX still boots the old generation"
    );
    assert!(!s.vhdx_invalid(&gen2).is_empty(), "nothing was copied");
}

#[test]
fn the_activation_snippet_copies_the_closure_and_keeps_the_boot_generation() {
    let gen1 = toy_system(1, 4, "-module-test");
    let gen2 = toy_system(2, 4, "-module-test");
    // The disk's profile points at gen3: the snippet copies what is being
    // activated ($systemConfig), not the profile.
    let gen3 = toy_system(3, 4, "-module-test");
    let Some(s) = setup(&[&gen1, &gen2, &gen3], false) else {
        return;
    };
    // The activate script sets $systemConfig and runs the snippets in bash.
    let out = s.sb.sh(&format!(
        "systemConfig={gen2} bash -e {}",
        s.activation.display()
    ));
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert_eq!(
        s.vhdx_invalid(&gen2),
        Vec::<String>::new(),
        "gen2 reached the VHDX"
    );
    assert_eq!(
        s.vhdx_profile(),
        gen1,
        "nixos-rebuild test leaves the boot generation"
    );

    // At boot (the shim activates before systemd) /nix is the VHDX: nothing to do.
    s.sb.sh_ok("umount /nix");
    let out = s.sb.sh(&format!(
        "systemConfig={gen2} bash -e {}",
        s.activation.display()
    ));
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not the bind"),
        "{}",
        output_text(&out)
    );
}
