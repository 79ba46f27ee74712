# The boot chain: helper service -> bind mount -> marker -> nix-daemon.
{
  config,
  lib,
  options,
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

  # udev's /dev/disk links are needed only to find the disk by a by-id name
  # (or a `device` under /dev/disk); fsUuid/fsLabel are found by probing the
  # block devices the kernel announces, with or without udev.
  needsUdev = cfg.deviceId != null || (cfg.device != null && lib.hasPrefix "/dev/disk/" cfg.device);
  udev = config.services.udev.enable;

  # The longest the boot step may hold local-fs.target: the wait for the
  # disk, every Windows trigger attempt run to its timeout, and the allowance
  # for fsck of a large disk, the mount, the store check and a heal.
  startTimeout =
    cfg.waitTimeout + cfg.windows.triggerAttempts * cfg.windows.triggerTimeout + cfg.fsckAllowance;
in
{
  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        # NixOS-WSL turns udev off with mkDefault; without it there are no
        # /dev/disk/by-* links. A plain value wins over that mkDefault. Only
        # when a by-id name needs the links: udev pulls in ~300 MB.
        services.udev.enable = lib.mkIf needsUdev true;

        warnings = lib.optional (needsUdev && !udev) ''
          wslStorageMount.deviceId (or a wslStorageMount.device under /dev/disk) names a
          udev link, but services.udev.enable is forced off, so the link never appears
          and the helper waits for the whole waitTimeout. Set wslStorageMount.fsUuid (or
          fsLabel) instead: they are found without udev.
        '';

        environment.systemPackages = [ cfg.package ];

        systemd.services.wsl-storage-mount = {
          description = "Mount the WSL storage disk";
          wantedBy = [ "local-fs.target" ];
          wants = lib.optional udev "systemd-udevd.service";
          after = lib.optionals udev [
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
            TimeoutStartSec = lib.mkDefault startTimeout;
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

      # WSL starts the first shell once `systemctl is-system-running` says
      # running or degraded, or after wsl.conf's boot.initTimeout (ms, WSL's
      # default 10 s), whichever comes first. Our step may hold local-fs.target
      # for up to startTimeout; a shell started before it ends would run on the
      # VHDX's /nix and keep it open under the bind. So wait as long as the
      # step may take, plus a minute for the rest of the boot. Only where
      # NixOS-WSL's wslConf takes free-form keys (a submodule with an ini
      # freeformType, NixOS-WSL 2023 and later); `wsl.conf` is read at start.
      (lib.optionalAttrs (options ? wsl.wslConf && lib.isOption options.wsl.wslConf) {
        wsl.wslConf.boot.initTimeout = lib.mkDefault ((startTimeout + 60) * 1000);
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
