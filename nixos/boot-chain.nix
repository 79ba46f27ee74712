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

  # switch-to-configuration-ng restarts a changed mount unit (unmount, then
  # mount) unless it is -.mount or nix.mount, which it reloads (a remount with
  # the new Options; What= and Where= stay as mounted until the next boot);
  # it reads X-RestartIfChanged and the like only for other unit types. So
  # the bind refuses manual stops: systemd refuses a stop or restart job for
  # it over D-Bus (the switch says so and exits 4, the bind stays), while
  # stops pulled in by dependencies, as at shutdown, still happen. For the
  # bind at /nix this changes nothing a switch does; for a bind elsewhere
  # (the VM tests bind /nix-storage) it keeps the store in place too.
  bindBootOnly = bootOnly // {
    RefuseManualStop = true;
  };

  # udev's /dev/disk links are needed only to find the disk by a by-id name
  # (or a `device` under /dev/disk); fsUuid/fsLabel are found by probing the
  # block devices the kernel announces, with or without udev.
  needsUdev = cfg.deviceId != null || (cfg.device != null && lib.hasPrefix "/dev/disk/" cfg.device);
  udev = config.services.udev.enable;
  udevOption =
    if cfg.deviceId != null then "wslStorageMount.deviceId" else "wslStorageMount.device = \"${cfg.device}\"";

  # The longest the boot step may hold local-fs.target: the wait for the
  # disk, every Windows trigger attempt run to its timeout, and the allowance
  # for fsck of a large disk, the mount, the store check and a heal.
  arrivalTimeout = cfg.waitTimeout + cfg.windows.triggerAttempts * cfg.windows.triggerTimeout;
  startTimeout = arrivalTimeout + cfg.fsckAllowance;

  # How long WSL holds the first shell back (ms); see below.
  shellWait = lib.min (arrivalTimeout + 30) 180 * 1000;
in
{
  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        # NixOS-WSL turns udev off with mkDefault; without it there are no
        # /dev/disk/by-* links. Only when a by-id name needs the links: udev
        # pulls in ~300 MB. Between mkDefault (1000) and a plain value (100):
        # it beats NixOS-WSL's default, and a user's own `false` beats it, so
        # the two never clash; the assertion below then says what to do.
        services.udev.enable = lib.mkIf needsUdev (lib.mkOverride 900 true);

        assertions = [
          {
            assertion = needsUdev -> udev;
            message = ''
              ${udevOption} names a udev link under /dev/disk, but
              services.udev.enable = false, so the link never appears and the disk is never
              found. Set wslStorageMount.fsUuid (or wslStorageMount.fsLabel) instead and drop
              ${lib.head (lib.splitString " " udevOption)}: they are found without udev
              (`lsblk -f` prints them). Or remove services.udev.enable = false.
            '';
          }
        ];

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
            unitConfig = bindBootOnly // {
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
      # default 10 s), whichever comes first. A shell started before our step
      # ends runs on the VHDX's /nix and keeps it open under the bind. But WSL
      # also waits that long for `systemctl poweroff` at terminate and for
      # user@<uid>.service at login, so the value is bounded: the wait for the
      # disk and the Windows trigger plus 30 s, at most 3 minutes, and not the
      # fsck allowance (a long fsck is rare; the shell then starts on the
      # VHDX store, which holds the booted system too). Only where NixOS-WSL's
      # wslConf takes the key (declared, or free-form ini keys: NixOS-WSL 2023
      # and later); `wsl.conf` is read at start.
      (lib.optionalAttrs (options ? wsl.wslConf && lib.isOption options.wsl.wslConf) {
        wsl.wslConf.boot.initTimeout = lib.mkDefault shellWait;
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
