# Entry point for run.sh: `case = null` lists the case names that run
# against the stubs (`list = "skipped"`: those that cannot run here: the
# `fullOnly` ones, which need real NixOS, and without `nixosWslPath` the
# `needsNixosWsl` ones; `list = "why"` with a case: why it is skipped);
# otherwise evaluates one case to "ok" or fails with what went wrong.
{
  libPath,
  nixosWslPath ? null,
  case ? null,
  list ? "run",
}:

let
  lib = import (/. + libPath);
  nixosWsl = if nixosWslPath == null then null else /. + nixosWslPath;
  results = import ./. {
    inherit lib nixosWsl;
    evalConfig = import ./stub.nix { inherit lib; };
  };
  cases = import ./cases.nix { inherit lib nixosWsl; };
  skipReason =
    c:
    if c.fullOnly or false then
      "needs real NixOS: nix flake check runs it"
    else if c.needsNixosWsl or false && nixosWsl == null then
      "needs NixOS-WSL: set NIXOS_WSL"
    else
      null;
  failures = results."${case}";
in
if list == "why" then
  skipReason cases."${case}"
else if case == null then
  if list == "skipped" then
    builtins.attrNames (lib.filterAttrs (_: c: skipReason c != null) cases)
  else
    builtins.attrNames results
else if failures == [ ] then
  "ok"
else
  throw "\n  - ${lib.concatStringsSep "\n  - " failures}"
