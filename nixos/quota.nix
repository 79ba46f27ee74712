# Quotas per instance dir (the guide's "Filesystem Quotas"): adds `quota` and
# `inodeQuota` to each `wslStorageMount.instanceDirs.<name>`. The helper gives
# the dir a project ID of its own (inherited by everything below it) and sets
# the limits with quotactl; on a filesystem without project quotas it warns
# with the command that enables them and mounts anyway.
{ lib, ... }:

{
  # A second declaration of instanceDirs with only a type: NixOS merges the
  # submodule's options with those of nixos/options.nix.
  options.wslStorageMount.instanceDirs = lib.mkOption {
    type = lib.types.attrsOf (
      lib.types.submodule {
        options = {
          quota = lib.mkOption {
            type = lib.types.nullOr (lib.types.strMatching "[0-9]+ *([KMGT]i?B?)?");
            default = null;
            example = "500G";
            description = ''
              The most this dir may hold on the disk (K, M, G, T: powers of
              1024), enforced with the filesystem's project quotas: a write
              past it fails with "Disk quota exceeded" in this dir only. Needs
              ext4 with `-O quota,project` (`tune2fs -O quota,project` on the
              unmounted disk) or xfs mounted with `prjquota`.
              The kernel exempts root (CAP_SYS_RESOURCE): builds and users are
              limited, nix-daemon's own downloads are not.
            '';
          };
          inodeQuota = lib.mkOption {
            type = lib.types.nullOr lib.types.ints.positive;
            default = null;
            example = 10000000;
            description = "The most files and directories this dir may hold (project quota).";
          };
        };
      }
    );
  };
}
