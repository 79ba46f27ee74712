# The NixOS module: mounts a disk attached with `wsl --mount --bare` at boot and
# binds this instance's store over /nix before nix-daemon starts.
# Importable with or without flakes: `imports = [ "${wsl-storage-mount}/nixos" ];`.
{
  imports = [
    ./options.nix
    ./config-file.nix
    ./boot-chain.nix
    ./boot-loader.nix
    ./windows.nix
    ./logrotate.nix
    ./assertions.nix
    ./binds.nix
    ./keep.nix
    ./dedupe.nix
    ./quota.nix
  ];
}
