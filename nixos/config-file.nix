# Settings -> JSON -> a file the helper has validated at build time. The units
# pass this file with --config; no setting is ever pasted into a command line.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.wslStorageMount;

  # The helper treats a missing optional key like null; leaving them out keeps
  # the file short and readable.
  withoutNulls = lib.filterAttrs (_: value: value != null);
in
{
  config = lib.mkIf cfg.enable {
    wslStorageMount = {
      # The store's own dir always exists, owned by root (a Nix store must be).
      instanceDirs = lib.optionalAttrs (cfg.nixStoreSubdir != null) {
        "${cfg.nixStoreSubdir}" = { };
      };

      generatedConfig = withoutNulls {
        inherit (cfg)
          device
          deviceId
          fsUuid
          fsLabel
          fsType
          mountOptions
          fsck
          waitTimeout
          bindMountNixStore
          nixStoreSubdir
          bootGenerations
          onMissing
          diskSerialNumber
          mountName
          logFile
          bindTarget
          ;
        mountPoint = if cfg.mountPoint == "/" then "/" else lib.removeSuffix "/" cfg.mountPoint;
        instanceDirs = lib.mapAttrs (
          _: dir:
          { inherit (dir) owner group mode; }
          # nixos/quota.nix; left out when unset.
          // withoutNulls { inherit (dir) quota inodeQuota; }
        ) cfg.instanceDirs;
        nixStoreCommand = lib.getExe' config.nix.package "nix-store";
        # The helper stops a fsck that runs longer (exit 4, nothing mounted)
        # before systemd's start timeout, which includes the same allowance.
        fsckTimeout = cfg.fsckAllowance;
        windows = withoutNulls {
          inherit (cfg.windows)
            trigger
            taskName
            scriptPath
            schtasksPath
            powershellPath
            triggerAttempts
            triggerTimeout
            logPath
            ;
        };
      }
      # Only when set (nixos/binds.nix): the helper prepares each bind's subdir.
      // lib.optionalAttrs (cfg.binds != { }) {
        binds = lib.mapAttrs (_: bind: { inherit (bind) subdir readOnly; }) cfg.binds;
      };

      configFile = pkgs.writeTextFile {
        name = "wsl-storage-mount.json";
        text = builtins.toJSON cfg.generatedConfig;
        # Bad settings fail the system build with the helper's own message,
        # which names every offending key. The helper that runs here is the
        # build platform's (the system may be cross-compiled).
        checkPhase = ''
          ${lib.getExe cfg.buildPlatformPackage} --config "$out" check
        '';
      };
    };

    # The default config path of `wsl-storage-mount status` and `doctor`.
    environment.etc."wsl-storage-mount/config.json".source = cfg.configFile;
  };
}
