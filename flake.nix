{
  description = "Mount a disk attached to WSL2 with `wsl --mount --bare` at boot and keep a NixOS-WSL instance's /nix on it";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;

      forAllSystems =
        f:
        lib.genAttrs [
          "x86_64-linux"
          "aarch64-linux"
        ] (system: f nixpkgs.legacyPackages."${system}");
    in
    {
      packages = forAllSystems (pkgs: {
        wsl-storage-mount = pkgs.callPackage ./package.nix { };
        default = self.packages."${pkgs.stdenv.hostPlatform.system}".wsl-storage-mount;
      });

      overlays.default = final: _prev: {
        wsl-storage-mount = final.callPackage ./package.nix { };
      };

      # Also importable without flakes: `imports = [ "${source}/nixos" ];`.
      nixosModules = {
        wslStorageMount = ./nixos;
        default = self.nixosModules.wslStorageMount;
      };

      checks = forAllSystems (pkgs: import ./checks { inherit pkgs self; });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.nixfmt
            pkgs.e2fsprogs
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
