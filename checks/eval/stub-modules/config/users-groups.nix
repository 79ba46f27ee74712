# Stands in for NixOS's nixos/modules/config/users-groups.nix where NixOS-WSL's
# wrap-shell.nix imports it by hand (from modulesPath) to take its `users`
# activation snippet. Only the snippet's shape matters to the tests (its name
# and deps, for the order of the activation script); its text is a placeholder.
_: {
  config.system.activationScripts.users = {
    supportsDryActivation = true;
    text = "# stand-in for NixOS's users snippet, with NixOS-WSL's wrapped shells";
  };
}
