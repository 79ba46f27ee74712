{
  lib,
  rustPlatform,
  pkg-config,
  util-linux,
}:

let
  cargoToml = lib.importTOML ./Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = cargoToml.package.name;
  inherit (cargoToml.package) version;

  # Only what cargo needs: editing the module, the checks or the docs must not
  # rebuild the helper.
  src = lib.fileset.toSource {
    root = ./.;
    fileset = lib.fileset.unions [
      ./Cargo.toml
      ./Cargo.lock
      ./src
      (lib.fileset.maybeMissing ./tests)
    ];
  };

  cargoLock.lockFile = ./Cargo.lock;

  # libblkid (util-linux) through the libblkid-rs crate, whose bindings
  # bindgen generates at build time.
  nativeBuildInputs = [
    pkg-config
    rustPlatform.bindgenHook
  ];
  buildInputs = [ util-linux ];

  # The unit tests run here. The integration tests need root, loop devices and
  # mount namespaces; they detect the build sandbox and skip themselves, saying so.
  doCheck = true;

  meta = {
    description = "Mounts a disk attached to WSL2 with `wsl --mount --bare` and binds this instance's Nix store over /nix";
    license = lib.licenses.mit;
    mainProgram = "wsl-storage-mount";
    platforms = lib.platforms.linux;
  };
}
