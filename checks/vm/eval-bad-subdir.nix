# Scenario 8: bad settings fail the build. A system with
# nixStoreSubdir = "../etc" must not evaluate, and a failed assertion must name
# the option. This is an evaluation check: no VM, nothing to boot. The same
# module with a good subdir is the control, so the failure is the subdir's.
# Its Rust twin is listed in docs/development.md (NixOS VM tests).
{ pkgs, self }:
let
  inherit (pkgs) lib;

  systemWith =
    nixStoreSubdir:
    pkgs.nixos [
      self.nixosModules.wslStorageMount
      {
        boot.loader.grub.enable = false;
        fileSystems."/" = {
          device = "none";
          fsType = "tmpfs";
        };
        system.stateVersion = lib.trivial.release;
        wslStorageMount = {
          enable = true;
          fsLabel = "wslstorage";
          inherit nixStoreSubdir;
        };
      }
    ];

  # The failed assertions' messages; a throw while reading them (a type
  # error, say) is reported as such instead of aborting `nix flake check`.
  failedAssertions =
    system:
    let
      messages = map (a: a.message) (lib.filter (a: !a.assertion) system.config.assertions);
      read = builtins.tryEval (builtins.deepSeq messages messages);
    in
    if read.success then
      read.value
    else
      [ "(reading config.assertions threw, so no assertion reported the value; a type check may have rejected it first)" ];

  evaluates = system: (builtins.tryEval system.config.system.build.toplevel.drvPath).success;

  bad = systemWith "../etc";
  good = systemWith "nixos-wsl-good";
in
pkgs.runCommand "vm-eval-bad-subdir"
  {
    badMessages = lib.concatStringsSep "\n" (failedAssertions bad);
    goodMessages = lib.concatStringsSep "\n" (failedAssertions good);
    badEvaluates = lib.boolToString (evaluates bad);
    goodEvaluates = lib.boolToString (evaluates good);
    passAsFile = [
      "badMessages"
      "goodMessages"
    ];
  }
  ''
    fail() { echo "FAIL: $*" >&2; exit 1; }

    echo 'Failed assertions with nixStoreSubdir = "../etc":'
    cat "$badMessagesPath"; echo
    echo 'Failed assertions of the control (nixStoreSubdir = "nixos-wsl-good"):'
    cat "$goodMessagesPath"; echo

    [ "$badEvaluates" = false ] || fail 'a system with nixStoreSubdir = "../etc" evaluates'
    grep -q nixStoreSubdir "$badMessagesPath" \
      || fail "no failed assertion names nixStoreSubdir"
    [ "$goodEvaluates" = true ] || fail "the control system does not evaluate"
    if grep -q nixStoreSubdir "$goodMessagesPath"; then
      fail "the control system fails an assertion about nixStoreSubdir"
    fi
    touch "$out"
  ''
