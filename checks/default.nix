# Every check `nix flake check` builds, for one system. Each name builds what
# it says. The VM tests (./vm, when present) are merged in.
{ pkgs, self }:

let
  inherit (pkgs) lib;
  inherit (pkgs.stdenv.hostPlatform) system;

  package = self.packages."${system}".wsl-storage-mount;

  # A real NixOS evaluation: the real option types, merging and unit names.
  nixosSystem =
    modules:
    import (pkgs.path + "/nixos/lib/eval-config.nix") {
      inherit system;
      modules = [
        {
          fileSystems."/" = {
            device = "/dev/disk/by-label/nixos";
            fsType = "ext4";
          };
          boot.loader.grub.device = "nodev";
          system.stateVersion = lib.trivial.release;
        }
      ]
      ++ modules;
    };

  withModule = modules: nixosSystem ([ self.nixosModules.wslStorageMount ] ++ modules);

  evalResults = import ./eval {
    inherit lib;
    full = true;
    evalConfig = modules: (withModule modules).config;
  };
  evalReport = lib.concatStringsSep "\n" (
    lib.mapAttrsToList (
      name: failures:
      if failures == [ ] then
        "ok   ${name}"
      else
        "FAIL ${name}\n${lib.concatMapStrings (failure: "     - ${failure}\n") failures}"
    ) evalResults
  );
in
{
  # The helper, built with its unit tests (root-only integration tests skip
  # themselves in the sandbox).
  wsl-storage-mount = package;

  clippy = package.overrideAttrs (old: {
    pname = "${old.pname}-clippy";
    nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
    buildPhase = ''
      runHook preBuild
      cargo clippy --offline --all-targets -- -D warnings
      runHook postBuild
    '';
    doCheck = false;
    installPhase = ''
      touch "$out"
    '';
    dontFixup = true;
  });

  rustfmt =
    pkgs.runCommand "wsl-storage-mount-rustfmt"
      {
        nativeBuildInputs = [
          pkgs.cargo
          pkgs.rustfmt
        ];
      }
      ''
        export HOME="$TMPDIR"
        cargo fmt --manifest-path ${package.src}/Cargo.toml --check
        touch "$out"
      '';

  # The evaluation tests of checks/eval against real NixOS.
  module-eval =
    if lib.all (failures: failures == [ ]) (lib.attrValues evalResults) then
      pkgs.writeText "wsl-storage-mount-module-eval" evalReport
    else
      throw "wsl-storage-mount evaluation tests failed:\n${evalReport}";

  # Importing the module without enabling it changes nothing.
  module-side-effects =
    if (nixosSystem [ ]).config.system.build.toplevel.outPath == (withModule [ ]).config.system.build.toplevel.outPath then
      pkgs.writeText "wsl-storage-mount-module-side-effects" "unchanged"
    else
      throw "importing nixosModules.wslStorageMount without enabling it changes system.build.toplevel";

  # Every visible option renders: type, default or example, description.
  module-options-doc =
    (pkgs.nixosOptionsDoc {
      options = {
        inherit ((withModule [ ]).options) wslStorageMount;
      };
    }).optionsCommonMark;
}
// lib.optionalAttrs (builtins.pathExists ./vm/default.nix) (import ./vm { inherit pkgs self; })
