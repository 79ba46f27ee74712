# The module evaluated with lib.evalModules, the stub NixOS options and the
# stub pkgs, nothing built: the whole result (config and options). stub.nix
# gives the tests its config; scripts/options-doc.nix renders its options.
{ lib }:

modules:
lib.evalModules {
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
}
