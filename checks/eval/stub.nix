# Evaluates the module with lib.evalModules, the stub NixOS options and the
# stub pkgs: the structure of what it generates, without building anything.
{ lib }:

modules: (import ./stub-eval.nix { inherit lib; } modules).config
