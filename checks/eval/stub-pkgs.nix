# A stand-in for nixpkgs: derivations are plain attrsets, nothing is built.
# The builders record their arguments so the tests can look at them. Besides
# what the module uses, what the real NixOS-WSL modules and the NixOS stubs
# (stub-nixos.nix) reach for when the tests evaluate them.
let
  mkDrv =
    name: extra:
    let
      drv = {
        type = "derivation";
        inherit name;
        outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
        meta = { };
        # NixOS-WSL's recovery.nix overrides nixos-enter; nothing is built.
        overrideAttrs = _: drv;
      }
      // extra;
    in
    drv;
in
{
  e2fsprogs = mkDrv "e2fsprogs-1.47.0" { };
  xfsprogs = mkDrv "xfsprogs-6.9.0" { };
  btrfs-progs = mkDrv "btrfs-progs-6.9" { };
  dosfstools = mkDrv "dosfstools-4.2" { };
  util-linux = mkDrv "util-linux-2.40" { };
  nix = mkDrv "nix-2.28.0" { meta.mainProgram = "nix"; };

  coreutils = mkDrv "coreutils-9.5" { };
  findutils = mkDrv "findutils-4.10.0" { };
  gnugrep = mkDrv "gnugrep-3.11" { };
  gnused = mkDrv "gnused-4.9" { };
  systemd = mkDrv "systemd-257.5" { };
  bashInteractive = mkDrv "bash-interactive-5.2" { };
  shadow = mkDrv "shadow-4.17" { };
  nixos-enter = mkDrv "nixos-enter" { };
  jq = mkDrv "jq-1.7.1" { };
  rsync = mkDrv "rsync-3.4.1" { };

  writeText = name: text: mkDrv name { inherit text; };
  writeShellScriptBin = name: text: mkDrv name { inherit text; };
  writeScriptBin = name: text: mkDrv name { inherit text; };
  writeShellApplication = args: mkDrv args.name { inherit (args) text; };
  stdenvNoCC.mkDerivation = args: mkDrv args.name { inherit (args) buildCommand; };

  # Not a cross build: the build platform runs the host's helper.
  stdenv = {
    hostPlatform.system = "x86_64-linux";
    buildPlatform.canExecute = _: true;
  };

  # A file whose text the tests can read, like pkgs.writeShellScript's.
  writeShellScript = name: text: mkDrv name { inherit text; };

  # The module's default package (package.nix); records which file it was
  # asked for. NixOS-WSL's utils (its shim and helpers) get a name of theirs.
  callPackage =
    path: _args:
    if baseNameOf (toString path) == "package.nix" then
      mkDrv "wsl-storage-mount-0.1.0" {
        meta.mainProgram = "wsl-storage-mount";
        calledWith = toString path;
      }
    else
      mkDrv "nixos-wsl-utils" { calledWith = toString path; };

  writeTextFile =
    args:
    mkDrv args.name {
      inherit (args) text;
      checkPhase = args.checkPhase or "";
    };

  runCommand = name: _env: buildCommand: mkDrv name { inherit buildCommand; };
}
