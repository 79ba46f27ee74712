# Evaluates the module with lib.evalModules, the stub NixOS options and the
# stub pkgs: the structure of what it generates, without building anything.
{ lib }:

modules:
(lib.evalModules {
  modules = [
    ./stub-nixos.nix
    ../../nixos
    {
      _module.args = {
        pkgs = import ./stub-pkgs.nix;
        utils = import ./stub-utils.nix { inherit lib; };
      };
    }
  ]
  ++ modules;
}).config
