# Keeps the VHDX store bootable while /nix is the disk's store.
#
# NixOS-WSL starts from the VHDX: WSL execs /sbin/init on the root filesystem,
# the shim activates /nix/var/nix/profiles/system there, and only then does
# systemd (and our bind) start. Under the bind, `nixos-rebuild` writes the new
# generation and its profile into the disk store alone, so without this the
# next start would boot the old generation, or nothing at all once /sbin/init
# points at a path the VHDX lacks.
#
# - `switch` and `boot` run system.build.installBootLoader with the new
#   toplevel: we chain NixOS-WSL's value (`true`) and then run
#   `sync-boot <toplevel>`, which copies the closure into the VHDX store and
#   makes it the VHDX's boot generation.
# - `test` only activates: an activation snippet runs
#   `sync-boot --closure-only "$systemConfig"`, so what activation just linked
#   into / (/sbin/init, /etc/static, /bin) resolves in the VHDX too, without
#   changing which generation it boots.
#
# When /nix is not the bind (the shim's activation at boot, fallback, the
# first `nixos-rebuild boot` that turns the module on) the helper says so and
# exits 0. A failure exits non-zero, which fails `nixos-rebuild` with the
# helper's message; the helper leaves the previous boot generation in place.
{
  config,
  lib,
  options,
  pkgs,
  ...
}:

let
  cfg = config.wslStorageMount;
  enabled = cfg.enable && cfg.bindMountNixStore;

  helper = "${lib.getExe cfg.package} --config ${cfg.configFile}";

  # The helper copies with Nix's own tools; give it the system's Nix and
  # coreutils whatever PATH nixos-rebuild was started with.
  path = lib.makeBinPath [
    config.nix.package
    pkgs.coreutils
  ];

  # switch-to-configuration (the Rust one) splits the value on whitespace
  # and runs it without a shell, the toplevel appended; the previous value is
  # run exactly that way, never through a shell.
  commandWords =
    value: lib.filter (word: lib.isString word && word != "") (builtins.split "[[:space:]]+" value);

  installBootLoader =
    previous:
    pkgs.writeShellScript "wsl-storage-mount-install-boot-loader" ''
      set -eu
      if [ "$#" -ne 1 ]; then
        echo "wsl-storage-mount: the boot loader step takes one argument, the new system's toplevel; got $#" >&2
        exit 2
      fi
      export PATH=${path}''${PATH:+:$PATH}
      # The boot loader this system had before (NixOS-WSL: true).
      ${lib.escapeShellArgs (commandWords "${previous}")} "$1"
      # The new generation's closure into the VHDX store, and the VHDX's
      # system profile to it.
      exec ${helper} sync-boot "$1"
    '';

  # Activation scripts run in the order of their names after their deps: run
  # after everything that links into / (NixOS: etc, binsh, usrbinenv;
  # NixOS-WSL: shimSystemd, populateBin, setupLogin, update-entrypoint), so
  # the helper's check of those links sees the new ones. Only names that
  # exist: a dependency on a missing snippet is an evaluation error.
  activationDeps = lib.filter (name: config.system.activationScripts ? ${name}) [
    "etc"
    "binsh"
    "usrbinenv"
    "shimSystemd"
    "populateBin"
    "setupLogin"
    "update-entrypoint"
  ];

  # The boot loader this system would have without this module: the value
  # the other definitions of system.build.installBootLoader merge to, with
  # NixOS's own declaration (type, default), but without any `apply` another
  # module declared on it (that one wraps our value in turn). system.build is
  # a submodule: its definitions are evaluated again, ours left out.
  loc = [
    "system"
    "build"
  ];
  buildOption = options.system.build;
  ownFile = toString ./boot-loader.nix;
  otherDefinitions = lib.filter (def: def.file != ownFile) buildOption.definitionsWithLocations;
  payload = buildOption.type.functor.payload;
  withoutThisModule = lib.evalModules (
    {
      # As the submodule type's own merge does (lib/types.nix submoduleWith).
      modules =
        payload.modules
        ++ [ { _module.args.name = lib.last loc; } ]
        ++ map (def: {
          _file = def.file;
          imports = [ def.value ];
        }) otherDefinitions;
      specialArgs = payload.specialArgs or { };
      prefix = loc;
    }
    // lib.optionalAttrs (payload ? class) { inherit (payload) class; }
  );
  previousOption = withoutThisModule.options.installBootLoader;
  previous =
    (lib.modules.mergeDefinitions (
      loc ++ [ "installBootLoader" ]
    ) previousOption.type previousOption.definitionsWithLocations).mergedValue;
in
{
  # A definition of higher priority than any other (mkForce is 50,
  # mkVMOverride 10) that chains the one it replaces. No second declaration
  # (an `apply` here would clash with any other module's `apply`), and
  # nothing at all while the module is off.
  config = lib.mkIf enabled {
    system.build.installBootLoader = lib.mkOverride 5 (installBootLoader previous);

    system.activationScripts.wslStorageMountSyncClosure = {
      deps = activationDeps;
      # Never in dry-activate: it writes to the VHDX store.
      supportsDryActivation = false;
      text = ''
        # wsl-storage-mount: the activated closure into the VHDX store (boot
        # generation unchanged). At boot /nix is the VHDX: the helper says so
        # and exits 0. A failure fails the activation, so nixos-rebuild fails.
        PATH=${path}:$PATH ${helper} sync-boot --closure-only "$systemConfig"
      '';
    };
  };
}
