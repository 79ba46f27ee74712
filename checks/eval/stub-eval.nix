# The module evaluated with lib.evalModules, the stub NixOS options and the
# stub pkgs, nothing built: the whole result (config and options). stub.nix
# gives the tests its config; scripts/options-doc.nix renders its options.
# The arguments are stub.nix's.
{
  lib,
  nixosWsl ? null,
  withModule ? true,
}:

modules:
lib.evalModules {
  modules = [
    ./stub-nixos.nix
    {
      _module.args = {
        pkgs = import ./stub-pkgs.nix // {
          formats = import ./stub-formats.nix { inherit lib; };
        };
        utils = import ./stub-utils.nix { inherit lib; };
        # NixOS-WSL's wrap-shell.nix imports config/users-groups.nix from it.
        # A string, not a path: "${modulesPath}/..." then copies nothing into the store.
        modulesPath = toString ./stub-modules;
      };
    }
  ]
  ++ lib.optional withModule ../../nixos
  ++ lib.optionals (nixosWsl != null) [
    (nixosWsl + "/modules")
    { wsl.enable = true; }
  ]
  ++ modules;
}
