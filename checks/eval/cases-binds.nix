# Evaluation cases of `wslStorageMount.binds` (nixos/binds.nix), kept apart
# from cases.nix; merged into its cases by its last line. Same shape: the
# modules to add, and `checks = config: [ (expect "what must hold" bool) ]`.
{ lib }:

let
  expect = what: ok: { inherit what ok; };

  base = {
    networking.hostName = "testhost";
    wslStorageMount = {
      enable = true;
      fsUuid = "3d2f8c1e-7b4a-4e59-a0c6-5f1b2e9d8a47";
    };
  };

  mountAt = where: config: lib.findFirst (m: m.where == where) null config.systemd.mounts;
  optionsOf = m: lib.splitString "," m.options;
in
{
  binds-are-mount-units-after-the-helper-skipped-without-the-disk = {
    modules = [
      base
      {
        wslStorageMount.binds = {
          "/shared" = {
            subdir = "shared";
          };
          "/srv/cache" = {
            subdir = "cache";
            readOnly = false;
          };
        };
      }
    ];
    checks =
      config:
      let
        shared = mountAt "/shared" config;
        cache = mountAt "/srv/cache" config;
        json = config.wslStorageMount.generatedConfig;
      in
      [
        (expect "a mount unit binds /shared" (shared != null && shared.type == "none"))
        (expect "it binds mountPoint/shared" (shared.what == "/mnt/wsl/storage/shared"))
        (expect "/shared is read-only by default" (lib.elem "ro" (optionsOf shared)))
        (expect "/shared is a private bind" (lib.elem "private" (optionsOf shared)))
        (expect "readOnly = false binds /srv/cache writable" (
          cache != null && !(lib.elem "ro" (optionsOf cache)) && lib.elem "bind" (optionsOf cache)
        ))
        (expect "ordered after and wanting the helper" (
          lib.elem "wsl-storage-mount.service" shared.after
          && lib.elem "wsl-storage-mount.service" shared.wants
        ))
        (expect "skipped, not failed, without the helper's stamp" (
          shared.unitConfig.ConditionPathExists == "/run/wsl-storage-mount/mounted"
        ))
        (expect "part of local-fs.target" (
          lib.elem "local-fs.target" shared.wantedBy && lib.elem "local-fs.target" shared.before
        ))
        (expect "the helper's config lists the binds" (
          json.binds == {
            "/shared" = {
              subdir = "shared";
              readOnly = true;
            };
            "/srv/cache" = {
              subdir = "cache";
              readOnly = false;
            };
          }
        ))
      ];
  };

  keep-service-remounts-after-the-helper = {
    modules = [ base ];
    checks =
      config:
      let
        keep = config.systemd.services.wsl-storage-mount-keep;
      in
      [
        (expect "it runs `keep` with the module's config" (
          lib.hasSuffix "--config ${config.wslStorageMount.configFile} keep" keep.serviceConfig.ExecStart
        ))
        (expect "after the helper and the mount unit of mountPoint" (
          lib.elem "wsl-storage-mount.service" keep.after && lib.elem "mnt-wsl-storage.mount" keep.after
        ))
        (expect "only when `mount` succeeded" (
          keep.unitConfig.ConditionPathExists == "/run/wsl-storage-mount/mounted"
        ))
        (expect "restarted when it fails" (keep.serviceConfig.Restart == "on-failure"))
      ];
  };

  keep-service-can-be-turned-off = {
    modules = [
      base
      { wslStorageMount.keepMounted = false; }
    ];
    checks = config: [
      (expect "no keep service" (!(config.systemd.services ? wsl-storage-mount-keep)))
    ];
  };

  instance-dir-quotas-reach-the-helper = {
    modules = [
      base
      {
        wslStorageMount.instanceDirs = {
          dev = {
            quota = "500G";
            inodeQuota = 1000000;
          };
          shared.owner = 1000;
        };
      }
    ];
    checks =
      config:
      let
        dirs = config.wslStorageMount.generatedConfig.instanceDirs;
      in
      [
        (expect "quota and inodeQuota are written" (
          dirs.dev.quota == "500G" && dirs.dev.inodeQuota == 1000000
        ))
        (expect "owner, group and mode still are" (dirs.dev ? owner && dirs.dev ? mode))
        (expect "a dir without a quota has no quota keys" (
          !(dirs.shared ? quota) && !(dirs.shared ? inodeQuota)
        ))
      ];
  };

  no-binds-no-key-and-no-units = {
    modules = [ base ];
    checks = config: [
      (expect "no binds key in the helper's config" (!(config.wslStorageMount.generatedConfig ? binds)))
      (expect "only nix.mount among the mount units" (
        lib.all (m: m.where == config.wslStorageMount.bindTarget) config.systemd.mounts
      ))
    ];
  };
}
