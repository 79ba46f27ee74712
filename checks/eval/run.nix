# Entry point for run.sh: `case = null` lists the case names; otherwise
# evaluates one case to "ok" or fails with what went wrong.
{
  libPath,
  case ? null,
}:

let
  lib = import (/. + libPath);
  results = import ./. {
    inherit lib;
    evalConfig = import ./stub.nix { inherit lib; };
  };
  failures = results."${case}";
in
if case == null then
  builtins.attrNames results
else if failures == [ ] then
  "ok"
else
  throw "\n  - ${lib.concatStringsSep "\n  - " failures}"
