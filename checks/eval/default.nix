# Runs the cases of ./cases.nix with one config evaluator and returns
# { <case name> = [ <what failed> ... ]; } (an empty list is a pass).
# `full` is true when evalConfig is real NixOS (see ../default.nix);
# `nixosWsl` is a NixOS-WSL checkout (null: its cases are left out).
{
  lib,
  evalConfig,
  full ? false,
  nixosWsl ? null,
}:

let
  cases = import ./cases.nix { inherit lib nixosWsl; };
  applies =
    case:
    (if full then !(case.stubOnly or false) else !(case.fullOnly or false))
    && (nixosWsl != null || !(case.needsNixosWsl or false));
in
lib.mapAttrs (
  _: case:
  map (result: result.what) (lib.filter (result: !result.ok) (case.checks (evalConfig case.modules)))
) (lib.filterAttrs (_: applies) cases)
