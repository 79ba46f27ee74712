# Evaluates the module with lib.evalModules, the stub NixOS options and the
# stub pkgs: the structure of what it generates, without building anything.
#
#   import ./stub.nix { inherit lib; } modules
#   import ./stub.nix { inherit lib; nixosWsl = /path/to/nixos-wsl; } modules
#
# returns the config (./stub-eval.nix returns the whole evaluation). With
# `nixosWsl` (a NixOS-WSL checkout, e.g. ../shared/nixos-wsl) its real
# modules are imported and `wsl.enable = true`. `withModule = false` leaves
# this module out (to compare with it off).
{
  lib,
  nixosWsl ? null,
  withModule ? true,
}:

modules: (import ./stub-eval.nix { inherit lib nixosWsl withModule; } modules).config
