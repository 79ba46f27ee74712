# Settings that cannot work, named by option and with the fix. The helper's
# `check` repeats most of them at build time; these fire earlier, at
# evaluation, with NixOS's own wording.
{ config, lib, ... }:

let
  cfg = config.wslStorageMount;

  # One directory name the helper can create under mountPoint and systemd can
  # take in What=: no '/', not '.' or '..', no spaces or control characters.
  isSafeComponent =
    name:
    builtins.match "[A-Za-z0-9_.-]+" name != null
    && name != "."
    && name != ".."
    && builtins.stringLength name <= 255;

  isWithin = parent: path: path == parent || lib.hasPrefix "${lib.removeSuffix "/" parent}/" path;
  inherit (cfg.generatedConfig) mountPoint;

  # The nixStoreSubdir entry is added by the module; its own assertion names it.
  unsafeInstanceDirs = lib.filter (name: !isSafeComponent name && name != cfg.nixStoreSubdir) (
    lib.attrNames cfg.instanceDirs
  );
in
{
  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.any (identity: identity != null) [
          cfg.fsUuid
          cfg.fsLabel
          cfg.deviceId
          cfg.device
        ];
        message = ''
          wslStorageMount: no device identity is set. Set wslStorageMount.fsUuid to the
          disk's filesystem UUID (`lsblk -f` or `blkid` inside WSL prints it), or set
          wslStorageMount.fsLabel, wslStorageMount.deviceId or wslStorageMount.device.
        '';
      }
      {
        assertion = cfg.nixStoreSubdir != null -> isSafeComponent cfg.nixStoreSubdir;
        message = ''
          wslStorageMount.nixStoreSubdir = "${toString cfg.nixStoreSubdir}" is not a single
          directory name. Use letters, digits, '.', '_' and '-' only (no '/'), e.g.
          "nixos-wsl-main".
        '';
      }
      {
        assertion = cfg.bindMountNixStore -> cfg.nixStoreSubdir != null;
        message = ''
          wslStorageMount.bindMountNixStore is true but wslStorageMount.nixStoreSubdir is
          null. Name the directory under wslStorageMount.mountPoint that holds this
          instance's /nix, or set wslStorageMount.bindMountNixStore = false.
        '';
      }
      {
        assertion = unsafeInstanceDirs == [ ];
        message = ''
          wslStorageMount.instanceDirs has names that are not single directory names:
          ${lib.concatMapStringsSep ", " (name: ''"${name}"'') unsafeInstanceDirs}.
          Use letters, digits, '.', '_' and '-' only (no '/'), e.g. "nixos-wsl-dev".
        '';
      }
      {
        assertion =
          lib.hasPrefix "/" mountPoint
          && !(isWithin "/nix" mountPoint)
          && !(isWithin cfg.bindTarget mountPoint)
          && !(isWithin mountPoint cfg.bindTarget);
        message = ''
          wslStorageMount.mountPoint = "${cfg.mountPoint}" must be an absolute path
          outside /nix (and not /), e.g. "/mnt/wsl/storage": the disk is mounted there
          before its store is bound over /nix.
        '';
      }
      {
        assertion = cfg.bindMountNixStore -> !(config.fileSystems ? "${cfg.bindTarget}");
        message = ''
          wslStorageMount.bindMountNixStore binds the store over ${cfg.bindTarget} with its
          own mount unit, but fileSystems."${cfg.bindTarget}" is also defined. Remove
          fileSystems."${cfg.bindTarget}" (NixOS treats /nix as needed for boot, and an
          automount there deadlocks the boot), or set
          wslStorageMount.bindMountNixStore = false.
        '';
      }
      {
        assertion = cfg.bindMountNixStore -> cfg.fsType != "vfat";
        message = ''
          wslStorageMount.fsType = "vfat" cannot hold a Nix store (no symlinks, no
          permissions). Format the disk with ext4, xfs or btrfs, or set
          wslStorageMount.bindMountNixStore = false.
        '';
      }
      {
        assertion =
          cfg.windows.trigger == "task" -> cfg.windows.taskName != null && cfg.diskSerialNumber != null;
        message = ''
          wslStorageMount.windows.trigger = "task" needs wslStorageMount.windows.taskName
          (the scheduled task register-task.ps1 creates, e.g. "wsl-storage-mount") and
          wslStorageMount.diskSerialNumber (from `Get-PhysicalDisk | Select SerialNumber`
          in PowerShell; the attach script finds the disk by it).
        '';
      }
      {
        assertion = cfg.windows.installFiles -> cfg.diskSerialNumber != null;
        message = ''
          wslStorageMount.windows.installFiles = true needs wslStorageMount.diskSerialNumber:
          the attach script it copies to Windows finds the disk by that serial (from
          `Get-PhysicalDisk | Select SerialNumber` in PowerShell).
        '';
      }
    ];

    warnings = lib.optional (cfg.deviceId != null && lib.hasPrefix "nvme-" cfg.deviceId) ''
      wslStorageMount.deviceId = "${cfg.deviceId}" names an NVMe link, but a disk
      attached with `wsl --mount --bare` shows up inside WSL2 as a SCSI disk (/dev/sdX),
      so this link will most likely never appear. Set wslStorageMount.fsUuid to the
      filesystem UUID (`lsblk -f`) instead.
    '';
  };
}
