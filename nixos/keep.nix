# The storage mount comes back when a peer distro's shutdown takes it away:
# /mnt/wsl is one tmpfs shared by every distro of the WSL VM, and until WSL's
# wsl-mnt-guard (microsoft/WSL#41084) the shutdown of any other systemd distro
# unmounts /mnt/wsl/* in all of them. What is bound from the disk (/nix, its
# read-only store, the binds) is private and stays (the helper's `mount` and
# `mark` see to that); the mount point itself is WSL's to lose. The helper's
# `keep` watches the mount table and mounts the same device again.
{
  config,
  lib,
  utils,
  ...
}:

let
  cfg = config.wslStorageMount;
in
{
  options.wslStorageMount.keepMounted = lib.mkOption {
    type = lib.types.bool;
    default = true;
    description = ''
      Run `wsl-storage-mount keep`, which mounts the disk at
      {option}`wslStorageMount.mountPoint` again within a second when another
      distro's shutdown unmounts it. Stop `wsl-storage-mount-keep.service`
      before unmounting the disk by hand.
    '';
  };

  config = lib.mkIf (cfg.enable && cfg.keepMounted) {
    systemd.services.wsl-storage-mount-keep = {
      description = "Mount the WSL storage disk again when a peer distro takes it away";
      wantedBy = [ "multi-user.target" ];
      wants = [ "wsl-storage-mount.service" ];
      # After the mount unit of mountPoint too: at shutdown this unit stops
      # first, so it never mounts again what this distro unmounts.
      after = [
        "wsl-storage-mount.service"
        "${utils.escapeSystemdPath cfg.generatedConfig.mountPoint}.mount"
      ];
      # Only when `mount` succeeded at boot (its stamp).
      unitConfig.ConditionPathExists = "/run/wsl-storage-mount/mounted";
      # The helper's own: mount(8) and the filesystem's fsck.
      inherit (config.systemd.services.wsl-storage-mount) path;
      restartIfChanged = false;
      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} --config ${cfg.configFile} keep";
        Restart = "on-failure";
        RestartSec = 2;
      };
    };
  };
}
