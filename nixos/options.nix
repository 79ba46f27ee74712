# The options, top to bottom in the order a user meets them. Their names are
# the helper's JSON config keys (see the helper's `check` command).
{
  config,
  lib,
  options,
  pkgs,
  ...
}:

let
  inherit (lib) literalExpression mkOption types;

  cfg = config.wslStorageMount;

  # The helper from this repository's package.nix, built with the system's
  # own nixpkgs (so overlays, cross builds and `follows` all apply).
  ownPackage = ps: ps.wsl-storage-mount or (ps.callPackage ../package.nix { });

  # Where NixOS-WSL mounts the Windows drives (wsl.conf's automount.root;
  # "/mnt" or, in older NixOS-WSL, "/mnt/"), else WSL's own default.
  automountRoot =
    if options ? wsl.wslConf then
      lib.removeSuffix "/" config.wsl.wslConf.automount.root
    else
      "/mnt";
  system32 = "${automountRoot}/c/Windows/System32";

  principal =
    types.either types.ints.unsigned (types.strMatching "[A-Za-z_][A-Za-z0-9_.-]*[$]?|[0-9]+");

  instanceDir = types.submodule {
    options = {
      owner = mkOption {
        type = principal;
        default = "root";
        example = 1000;
        description = "Owner of the directory: a user name or a numeric uid.";
      };
      group = mkOption {
        type = principal;
        default = "root";
        example = "users";
        description = "Group of the directory: a group name or a numeric gid.";
      };
      mode = mkOption {
        type = types.strMatching "[0-7]{3,4}";
        default = "0755";
        example = "0750";
        description = "Permission bits of the directory, as an octal string.";
      };
    };
  };

  windowsPath = types.nullOr (types.strMatching "[^\n]+");
in
{
  options.wslStorageMount = {
    enable = lib.mkEnableOption "mounting a disk attached with `wsl --mount --bare` at boot and binding this instance's Nix store from it over /nix";

    package = mkOption {
      type = types.package;
      default = ownPackage pkgs;
      defaultText = literalExpression "pkgs.wsl-storage-mount or (pkgs.callPackage ./package.nix { }) # this flake's helper";
      description = ''
        The `wsl-storage-mount` helper. It runs the boot step, the marker and
        `sync-boot` (the boot loader step of `nixos-rebuild`), and its `check`
        command validates the generated config when the system is built, so
        bad settings fail `nixos-rebuild` with its message. Defaults to
        `pkgs.wsl-storage-mount` when an overlay (this flake's
        `overlays.default`) provides it, else to this flake's package.nix
        built with the system's nixpkgs.
      '';
    };

    buildPlatformPackage = mkOption {
      type = types.package;
      internal = true;
      default =
        if pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform then
          cfg.package
        else
          ownPackage pkgs.buildPackages;
      defaultText = literalExpression "config.wslStorageMount.package, or the build platform's helper when cross-compiling";
      description = ''
        The helper that runs while the system is built (the config `check`,
        the Windows scripts): {option}`wslStorageMount.package` unless the
        system is cross-compiled, then the build platform's helper.
      '';
    };

    fsUuid = mkOption {
      type = types.nullOr (types.strMatching "[0-9A-Fa-f-]+");
      default = null;
      example = "3d2f8c1e-7b4a-4e59-a0c6-5f1b2e9d8a47";
      description = ''
        Filesystem UUID of the disk, as `blkid` or `lsblk -f` prints it. The
        recommended identity: inside WSL2 a bare-attached disk is a SCSI disk
        `/dev/sdX` whose letter changes between boots, while the UUID stays.
        Found through /dev/disk/by-uuid, or by probing block devices when udev
        links are missing: it needs no udev, so with `fsUuid` or `fsLabel`
        (and no {option}`wslStorageMount.deviceId`, nor a
        {option}`wslStorageMount.device` under /dev/disk) the module leaves
        `services.udev.enable` as it is (NixOS-WSL turns udev off, which saves
        about 300 MB of firmware in the closure).

        Set at least one of {option}`wslStorageMount.fsUuid`,
        {option}`wslStorageMount.fsLabel`, {option}`wslStorageMount.deviceId`
        and {option}`wslStorageMount.device`.
      '';
    };

    fsLabel = mkOption {
      type = types.nullOr (types.strMatching "[^/\n]+");
      default = null;
      example = "wsl-storage";
      description = ''
        Filesystem label of the disk (set with `e2label` or `mkfs.ext4 -L`).
        Found through /dev/disk/by-label or by probing block devices.
      '';
    };

    deviceId = mkOption {
      type = types.nullOr (types.strMatching "[^/\n]+");
      default = null;
      example = "wwn-0x5000000000000001";
      description = ''
        Name of the disk's link under /dev/disk/by-id. Look the name up
        inside WSL (`ls -l /dev/disk/by-id`): a bare-attached disk shows up as
        a SCSI disk there, so the `nvme-...` name Windows tools suggest will
        most likely not exist. Prefer {option}`wslStorageMount.fsUuid`.

        The by-id links come from udev, so setting this turns
        `services.udev.enable` on (NixOS-WSL turns it off with `mkDefault`);
        `services.udev.enable = false` set anywhere else wins and fails an
        assertion that says to use {option}`wslStorageMount.fsUuid` instead.
      '';
    };

    device = mkOption {
      type = types.nullOr (types.strMatching "/[^\n]*");
      default = null;
      example = "/dev/disk/by-partlabel/wsl-storage";
      description = ''
        Absolute path of the device node or a link to it; checked before the
        other identities. Avoid `/dev/sdX`: the letter is not stable. A path
        under /dev/disk is a udev link, so it turns `services.udev.enable` on
        like {option}`wslStorageMount.deviceId`.
      '';
    };

    fsType = mkOption {
      type = types.enum [
        "ext2"
        "ext3"
        "ext4"
        "xfs"
        "btrfs"
        "vfat"
      ];
      default = "ext4";
      example = "xfs";
      description = ''
        Filesystem on the disk. The helper checks it before mounting and runs
        the matching fsck; a Nix store needs ext4, xfs or btrfs.
      '';
    };

    mountOptions = mkOption {
      type = types.listOf (types.strMatching "[^,[:space:]]+");
      default = [ "noatime" ];
      example = [
        "noatime"
        "discard"
      ];
      description = ''
        Options for the disk's mount at {option}`wslStorageMount.mountPoint`
        (not for the /nix bind), one per element. Kernel mount options only:
        fstab words such as `nofail` or `x-systemd.*` are refused.
      '';
    };

    mountPoint = mkOption {
      type = types.str;
      default = "/mnt/wsl/storage";
      example = "/mnt/wsl/fast-disk";
      description = ''
        Where the disk is mounted: an absolute path outside /nix. /mnt/wsl is
        shared by every distro of the WSL2 VM, so all instances see the disk
        there; an instance that finds it already mounted by another reuses
        that mount.
      '';
    };

    fsck = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Whether to run `fsck -p` on the disk before mounting it. A filesystem
        with errors that fsck cannot repair is not mounted.
      '';
    };

    waitTimeout = mkOption {
      type = types.ints.between 1 86400;
      default = 60;
      example = 180;
      description = ''
        Seconds to wait for the disk to appear (Windows attaches it at logon).
        The service's start timeout is this, plus
        {option}`wslStorageMount.windows.triggerAttempts` ×
        {option}`wslStorageMount.windows.triggerTimeout`, plus
        {option}`wslStorageMount.fsckAllowance`.

        With NixOS-WSL the module also sets wsl.conf's
        `wsl.wslConf.boot.initTimeout` (`mkDefault`, milliseconds): this, plus
        the trigger attempts × their timeout, plus 30 s, at most 180 s
        (150 s with the defaults). WSL holds the first shell back that long
        at most while the boot runs, so the shell starts on the disk's
        /nix, not the VHDX's. WSL waits as long for `systemctl poweroff`
        when the instance is terminated and for `user@<uid>.service` at
        login, hence the bound: a hung shutdown waits 3 minutes at most,
        never the fsck allowance. The trade-off: a boot step that takes
        longer (a long fsck) lets the shell start on the VHDX store, which
        holds the booted system as well; it keeps running from there
        (its open files stay on the VHDX) while new programs run from the
        disk once the bind is in place.
      '';
    };

    fsckAllowance = mkOption {
      type = types.ints.between 10 86400;
      default = 600;
      example = 3600;
      description = ''
        Seconds the boot step may take beyond waiting for the disk and the
        Windows trigger: mostly `fsck -p` of a large disk after an unclean
        shutdown (a clean ext4 takes well under a second; a full check of a
        few TB can take many minutes), plus the mount, the store check and a
        heal of the disk store. Only the unit's start timeout uses it
        (`TimeoutStartSec` = {option}`wslStorageMount.waitTimeout` +
        {option}`wslStorageMount.windows.triggerAttempts` ×
        {option}`wslStorageMount.windows.triggerTimeout` + this); systemd
        kills the step when it runs out, so err on the long side. It is also
        the helper's `fsckTimeout`: a fsck running longer is stopped and the
        disk is not mounted (the boot goes on as with a missing disk).
      '';
    };

    instanceDirs = mkOption {
      type = types.attrsOf instanceDir;
      default = { };
      example = literalExpression ''
        {
          nixos-wsl-dev = { };
          shared = { owner = 1000; group = "users"; mode = "2775"; };
        }
      '';
      description = ''
        Directories directly under {option}`wslStorageMount.mountPoint`
        that the helper creates (or fixes) with this owner, group and mode.
        Each name is a single directory name. The
        {option}`wslStorageMount.nixStoreSubdir` entry is always present
        (owned by root, mode 0755); list other instances' dirs or shared dirs
        here.
      '';
    };

    bindMountNixStore = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = ''
        Whether to bind {option}`wslStorageMount.mountPoint`/{option}`wslStorageMount.nixStoreSubdir`
        over /nix at boot, before nix-daemon starts. The helper allows the bind
        only when that directory holds the closure of the booted system, so
        copy the current /nix there first: `sudo wsl-storage-mount migrate`.
      '';
    };

    bootGenerations = mkOption {
      type = types.ints.between 1 1000;
      default = 2;
      example = 3;
      description = ''
        How many system generations the VHDX store keeps for booting. With
        {option}`wslStorageMount.bindMountNixStore`, `nixos-rebuild switch`
        and `boot` copy the new generation's closure into the VHDX store
        (`wsl-storage-mount sync-boot`, run as the boot loader) and make it
        the one the instance starts from; older ones beyond this count are
        dropped there and the VHDX store is garbage-collected. The disk store
        keeps its own generations as usual.
      '';
    };

    nixStoreSubdir = mkOption {
      type = types.nullOr types.str;
      default = "nixos-wsl-${config.networking.hostName}";
      defaultText = literalExpression ''"nixos-wsl-''${config.networking.hostName}"'';
      example = "nixos-wsl-dev";
      description = ''
        The directory under {option}`wslStorageMount.mountPoint` that holds
        this instance's /nix (store and /nix/var). One directory name, unique
        per WSL instance. `null` only with
        {option}`wslStorageMount.bindMountNixStore` off.
      '';
    };

    onMissing = mkOption {
      type = types.enum [
        "block"
        "fallback"
      ];
      default = "block";
      example = "fallback";
      description = ''
        What happens when the disk or the bind is not there at boot. The boot
        always goes on. `block`: nix-daemon does not start, so nothing is
        built into or read from the VHDX store by mistake; attach the disk and
        restart the instance. `fallback`: nix-daemon starts on the VHDX store,
        with a warning in the journal.
      '';
    };

    diskSerialNumber = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "0000_0000_0000_0001_0000_0000_0000_0000.";
      description = ''
        Serial number of the disk on the Windows side, as
        `Get-PhysicalDisk | Select SerialNumber, FriendlyName` prints it
        (letters, digits, `_ . -` and spaces). The attach script finds the
        disk by it, since `\\.\PHYSICALDRIVE<n>` numbers change between boots.
      '';
    };

    mountName = mkOption {
      type = types.nullOr (types.strMatching "[A-Za-z0-9_.-]{1,64}");
      default = null;
      example = "storage";
      description = ''
        A name for the disk in messages and in the Windows scripts.
        Informative only: `wsl --mount --bare` ignores `--name`.
      '';
    };

    windows = {
      trigger = mkOption {
        type = types.enum [
          "none"
          "task"
          "script"
        ];
        default = "none";
        example = "task";
        description = ''
          What the helper does when the disk is missing at boot. `task`
          (recommended): start the elevated scheduled task registered by
          /etc/wsl-storage-mount/register-task.ps1, which attaches the disk;
          needs {option}`wslStorageMount.windows.taskName` and
          {option}`wslStorageMount.diskSerialNumber`. `script`: run attach.ps1
          directly (works only if WSL already runs elevated). `none`: only wait.
        '';
      };

      taskName = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "wsl-storage-mount";
        description = "Name of the Windows scheduled task that attaches the disk.";
      };

      scriptPath = mkOption {
        type = windowsPath;
        default = null;
        example = "C:\\wsl\\attach.ps1";
        description = ''
          Windows path of attach.ps1, for the `script` trigger and the task.
          Copy /etc/wsl-storage-mount/attach.ps1 there, or set
          {option}`wslStorageMount.windows.installFiles`.
        '';
      };

      schtasksPath = mkOption {
        type = types.str;
        default = "${system32}/schtasks.exe";
        defaultText = literalExpression ''"''${config.wsl.wslConf.automount.root}/c/Windows/System32/schtasks.exe" # "/mnt/c/..." without NixOS-WSL'';
        example = "/c/Windows/System32/schtasks.exe";
        description = ''
          Linux path of schtasks.exe. Services have no Windows directories in
          PATH. With NixOS-WSL the prefix follows
          `wsl.wslConf.automount.root`; set this when drive C: is mounted
          elsewhere.
        '';
      };

      powershellPath = mkOption {
        type = types.str;
        default = "${system32}/WindowsPowerShell/v1.0/powershell.exe";
        defaultText = literalExpression ''"''${config.wsl.wslConf.automount.root}/c/Windows/System32/WindowsPowerShell/v1.0/powershell.exe"'';
        example = "/c/Windows/System32/WindowsPowerShell/v1.0/powershell.exe";
        description = "Linux path of powershell.exe (see {option}`wslStorageMount.windows.schtasksPath`).";
      };

      triggerAttempts = mkOption {
        type = types.ints.between 0 100;
        default = 3;
        example = 5;
        description = ''
          How many times the helper starts the trigger while waiting for the
          disk. Interop may not be ready early in boot, so it retries.
        '';
      };

      triggerTimeout = mkOption {
        type = types.ints.between 1 3600;
        default = 20;
        example = 40;
        description = "Seconds one trigger attempt may take before the helper gives up on it.";
      };

      logPath = mkOption {
        type = windowsPath;
        default = null;
        example = "%ProgramData%\\wsl-storage-mount\\attach.log";
        description = ''
          Windows path of the attach script's transcript; `null` keeps the
          default, `%ProgramData%\\wsl-storage-mount\\attach.log`. The script
          runs elevated, so it writes a transcript only into a directory that
          administrators and SYSTEM alone can change (as register-task.ps1
          makes `%ProgramData%\\wsl-storage-mount`); elsewhere it runs without one.
        '';
      };

      installFiles = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = ''
          Whether to copy attach.ps1 and register-task.ps1 to Windows after
          each boot (through interop; never fails the boot). Without it, copy
          them from /etc/wsl-storage-mount/ yourself.
        '';
      };
    };

    logFile = mkOption {
      type = types.strMatching "/[^\"\n]+";
      default = "/var/log/wsl-mount.log";
      example = "/var/log/wsl-storage-mount.log";
      description = ''
        Where the helper appends a timestamped line for every step (besides
        the journal). Rotated weekly by logrotate.
      '';
    };

    bindTarget = mkOption {
      type = types.strMatching "/[^\n]*";
      default = "/nix";
      internal = true;
      description = ''
        The path the store is bound over. Exists only for the VM tests, which
        cannot bind over their own /nix; never change it on a real system.
      '';
    };

    generatedConfig = mkOption {
      type = types.attrsOf types.anything;
      internal = true;
      readOnly = true;
      description = "The helper's JSON config as a Nix value (written to {option}`wslStorageMount.configFile`).";
    };

    configFile = mkOption {
      type = types.package;
      internal = true;
      readOnly = true;
      description = "The generated JSON config file, validated by the helper's `check` at build time.";
    };
  };
}
