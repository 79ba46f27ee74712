# A stand-in for nixpkgs: derivations are plain attrsets, nothing is built.
# The builders record their arguments so the tests can look at them.
let
  mkDrv =
    name: extra:
    {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
      meta = { };
    }
    // extra;
in
{
  e2fsprogs = mkDrv "e2fsprogs-1.47.0" { };
  xfsprogs = mkDrv "xfsprogs-6.9.0" { };
  btrfs-progs = mkDrv "btrfs-progs-6.9" { };
  dosfstools = mkDrv "dosfstools-4.2" { };
  util-linux = mkDrv "util-linux-2.40" { };
  nix = mkDrv "nix-2.28.0" { meta.mainProgram = "nix"; };

  coreutils = mkDrv "coreutils-9.5" { };

  # Not a cross build: the build platform runs the host's helper.
  stdenv = {
    hostPlatform.system = "x86_64-linux";
    buildPlatform.canExecute = _: true;
  };

  # A file whose text the tests can read, like pkgs.writeShellScript's.
  writeShellScript = name: text: mkDrv name { inherit text; };

  # The module's default package; records which file it was asked for.
  callPackage =
    path: _args:
    mkDrv "wsl-storage-mount-0.1.0" {
      meta.mainProgram = "wsl-storage-mount";
      calledWith = toString path;
    };

  writeTextFile =
    args:
    mkDrv args.name {
      inherit (args) text;
      checkPhase = args.checkPhase or "";
    };

  runCommand = name: _env: buildCommand: mkDrv name { inherit buildCommand; };
}
