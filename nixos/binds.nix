# Shared dirs of the disk bound at paths of this instance (the guide's
# "Read-Only Bind Mounts for shared data"): one mount unit per bind, after the
# helper, skipped (not failed) when the disk is not there.
{
  config,
  lib,
  ...
}:

let
  cfg = config.wslStorageMount;

  # Written by the helper's `mount` only when the disk is mounted and every
  # bind's subdir is a real directory (mount(8) would follow a planted symlink).
  mountedStamp = "/run/wsl-storage-mount/mounted";

  bindModule = {
    options = {
      subdir = lib.mkOption {
        type = lib.types.strMatching "[A-Za-z0-9._-]+";
        example = "shared";
        description = ''
          The directory directly under {option}`wslStorageMount.mountPoint` to
          bind. The helper creates it (root, mode 0755) when it is missing and
          never changes an existing one.
        '';
      };
      readOnly = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = ''
          Bind it read-only: a write there fails with "Read-only file system",
          whatever the permissions of the files say.
        '';
      };
    };
  };
in
{
  options.wslStorageMount.binds = lib.mkOption {
    type = lib.types.attrsOf (lib.types.submodule bindModule);
    default = { };
    example = lib.literalExpression ''
      {
        "/shared" = { subdir = "shared"; readOnly = true; };
        "/srv/cache" = { subdir = "cache"; readOnly = false; };
      }
    '';
    description = ''
      Directories of the storage disk bound at a path of this instance, keyed
      by that path: data that several instances on the disk share. Each is a
      mount unit ordered after `wsl-storage-mount.service`; when the disk is
      missing (or the helper failed) the unit is skipped, not failed, and the
      boot goes on. The bind is private: a peer distro's unmount of
      /mnt/wsl/* does not reach it.
    '';
  };

  config = lib.mkIf (cfg.enable && cfg.binds != { }) {
    systemd.mounts = lib.mapAttrsToList (path: bind: {
      description = "Shared dir ${bind.subdir} of the WSL storage disk";
      what = "${cfg.generatedConfig.mountPoint}/${bind.subdir}";
      where = path;
      type = "none";
      # mount(8) applies "private" after the bind (libmount's propagation
      # flags), and "ro" as a read-only bind.
      options = lib.concatStringsSep "," ([ "bind" "private" ] ++ lib.optional bind.readOnly "ro");
      wantedBy = [ "local-fs.target" ];
      wants = [ "wsl-storage-mount.service" ];
      after = [ "wsl-storage-mount.service" ];
      before = [ "local-fs.target" ];
      unitConfig.ConditionPathExists = mountedStamp;
    }) cfg.binds;
  };
}
