# Entry point for run.sh: `case = null` lists the case names that run
# against the stubs (`list = "skipped"`: those that need real NixOS, the
# `fullOnly` ones); otherwise evaluates one case to "ok" or fails with what
# went wrong.
{
  libPath,
  case ? null,
  list ? "run",
}:

let
  lib = import (/. + libPath);
  results = import ./. {
    inherit lib;
    evalConfig = import ./stub.nix { inherit lib; };
  };
  cases = import ./cases.nix { inherit lib; };
  failures = results."${case}";
in
if case == null then
  if list == "skipped" then
    builtins.attrNames (lib.filterAttrs (_: c: c.fullOnly or false) cases)
  else
    builtins.attrNames results
else if failures == [ ] then
  "ok"
else
  throw "\n  - ${lib.concatStringsSep "\n  - " failures}"
