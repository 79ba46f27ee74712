# The boot chain: helper service -> bind mount -> marker -> nix-daemon.
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:

let
  cfg = config.wslStorageMount;

  helper = command: "${lib.getExe cfg.package} --config ${cfg.configFile} ${command}";

  # systemd names a mount unit after its mount point: /nix -> nix.mount.
  bindUnit = "${utils.escapeSystemdPath cfg.bindTarget}.mount";
  markerUnit = "nix-mount-marker.service";

  # Written by the helper's `mount` only when the store under the mount point
  # holds the closure of the booted system.
  stamp = "/run/wsl-storage-mount/bind-ok";

  # block: the marker fails when the bind is not there (`mark` exits 5) and
  # takes nix-daemon with it, so it never starts on the VHDX store.
  # fallback: ordering only, and the VHDX store stays.
  block = cfg.onMissing == "block";

  fsckPackages =
    {
      ext2 = [ pkgs.e2fsprogs ];
      ext3 = [ pkgs.e2fsprogs ];
      ext4 = [ pkgs.e2fsprogs ];
      xfs = [ pkgs.xfsprogs ];
      btrfs = [ pkgs.btrfs-progs ];
      vfat = [ pkgs.dosfstools ];
    }
    ."${cfg.fsType}";

  # A change takes effect at the next boot: swapping /nix under a running
  # system (from a switch, or by stopping a unit that went away) breaks it.
  bootOnly = {
    "X-StopOnRemoval" = false;
  };
in
{
  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        # NixOS-WSL turns udev off with mkDefault; without it there are no
        # /dev/disk/by-* links. A plain value wins over that mkDefault.
        services.udev.enable = true;

        environment.systemPackages = [ cfg.package ];

        systemd.services.wsl-storage-mount = {
          description = "Mount the WSL storage disk";
          wantedBy = [ "local-fs.target" ];
          wants = [ "systemd-udevd.service" ];
          after = [
            "systemd-udevd.service"
            "systemd-udev-trigger.service"
          ];
          before = [
            "local-fs.target"
            "systemd-tmpfiles-setup.service"
            "shutdown.target"
          ]
          ++ lib.optional cfg.bindMountNixStore bindUnit;
          conflicts = [ "shutdown.target" ];
          path = [ pkgs.util-linux ] ++ fsckPackages;
          restartIfChanged = false;
          unitConfig = bootOnly // {
            # Default dependencies would order it after basic.target, which
            # comes after local-fs.target: a cycle.
            DefaultDependencies = false;
          };
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            # A oneshot has no start timeout by default; this one waits for
            # the disk, then needs time for fsck, the mount and the store check.
            TimeoutStartSec = lib.mkDefault (cfg.waitTimeout + 90);
            ExecStart = helper "mount";
          };
        };
      }

      (lib.mkIf cfg.bindMountNixStore {
        # A mount unit, not fileSystems."/nix": NixOS treats /nix as needed
        # for boot. No automount: every exec under /nix would wait on it.
        #
        # Wants=, not Requires=, on the helper: the stamp condition already
        # keeps the bind from happening unless the helper succeeded (a failed
        # condition skips the unit and fails nothing, so nix-daemon's
        # RequiresMountsFor=/nix/store is met in fallback mode), and Requires=
        # would carry a restart of the helper over to this unit: an unmount
        # of /nix under the running system.
        systemd.mounts = [
          {
            description = "Nix store from the WSL storage disk";
            what = "${cfg.generatedConfig.mountPoint}/${cfg.nixStoreSubdir}";
            where = cfg.bindTarget;
            type = "none";
            options = "bind";
            wantedBy = [ "local-fs.target" ];
            wants = [ "wsl-storage-mount.service" ];
            after = [ "wsl-storage-mount.service" ];
            before = [ "local-fs.target" ];
            unitConfig = bootOnly // {
              ConditionPathExists = stamp;
            };
          }
        ];

        systemd.services.nix-mount-marker = {
          description = "Mark the Nix store bind as real";
          wantedBy = [ "local-fs.target" ];
          after = [ bindUnit ];
          requires = lib.optional block bindUnit;
          wants = lib.optional (!block) bindUnit;
          before = [
            "nix-daemon.service"
            "nix-daemon.socket"
            "shutdown.target"
          ];
          conflicts = [ "shutdown.target" ];
          restartIfChanged = false;
          unitConfig.DefaultDependencies = false;
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            ExecStart = helper "mark";
          };
        };
      })

      # nix-daemon's own RequiresMountsFor=/nix/store stays as nixpkgs sets it.
      (lib.mkIf (cfg.bindMountNixStore && config.nix.enable) {
        systemd.services.nix-daemon = {
          after = [ markerUnit ];
          requires = lib.optional block markerUnit;
        };
        systemd.sockets.nix-daemon = {
          after = [ markerUnit ];
          requires = lib.optional block markerUnit;
        };
      })
    ]
  );
}
