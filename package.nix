{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
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

  # installShellFiles: the man pages and completions (postInstall below);
  # libblkid (util-linux) through the libblkid-rs crate, whose bindings
  # bindgen generates at build time.
  nativeBuildInputs = [
    installShellFiles
    pkg-config
    rustPlatform.bindgenHook
  ];
  buildInputs = [ util-linux ];

  # `man wsl-storage-mount` (a page per command) and bash, zsh and fish
  # completions, written by the helper itself from its command line, so they
  # describe exactly this build. A cross build cannot run the helper and goes
  # without them.
  postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    $out/bin/wsl-storage-mount __generate-docs generated-docs
    installManPage generated-docs/man/*.1
    installShellCompletion --cmd wsl-storage-mount \
      --bash generated-docs/completions/wsl-storage-mount.bash \
      --zsh generated-docs/completions/_wsl-storage-mount \
      --fish generated-docs/completions/wsl-storage-mount.fish
  '';

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
