# Evaluates the module with lib.evalModules, the stub NixOS options and the
# stub pkgs: the structure of what it generates, without building anything.
#
#   import ./stub.nix { inherit lib; } modules
#   import ./stub.nix { inherit lib; nixosWsl = /path/to/nixos-wsl; } modules
#
# returns the config. With `nixosWsl` (a NixOS-WSL checkout, e.g.
# ../shared/nixos-wsl) its real modules are imported and `wsl.enable = true`.
# `withModule = false` leaves this module out (to compare with it off).
{
  lib,
  nixosWsl ? null,
  withModule ? true,
}:

modules:
(lib.evalModules {
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
}).config
