# One copy of what the instances on the disk share: `wsl-storage-mount
# dedupe` on a schedule (off unless set). It hard-links identical files
# across the instance stores on the disk (store files are immutable:
# read-only, root-owned), never outside store/ of each instance dir.
{
  config,
  lib,
  ...
}:

let
  cfg = config.wslStorageMount;
in
{
  options.wslStorageMount.dedupe.schedule = lib.mkOption {
    type = lib.types.nullOr lib.types.nonEmptyStr;
    default = null;
    example = "weekly";
    description = ''
      When set, a systemd calendar expression (`OnCalendar=`, e.g. `"weekly"`)
      on which `wsl-storage-mount dedupe` hard-links identical files across
      the Nix stores of every instance on the disk, so what they share takes
      the room of one copy. Missed runs happen at the next start
      (`Persistent=`). Runs only while the disk is mounted. `null`: never;
      `sudo wsl-storage-mount dedupe` runs it by hand.
    '';
  };

  config = lib.mkIf (cfg.enable && cfg.dedupe.schedule != null) {
    systemd.services.wsl-storage-mount-dedupe = {
      description = "Hard-link identical files across the instance stores on the WSL storage disk";
      after = [ "wsl-storage-mount.service" ];
      # Only when `mount` succeeded at this boot (its stamp).
      unitConfig.ConditionPathExists = "/run/wsl-storage-mount/mounted";
      restartIfChanged = false;
      serviceConfig = {
        Type = "oneshot";
        ExecStart = "${lib.getExe cfg.package} --config ${cfg.configFile} dedupe";
        # Long file walks: out of the way of interactive work.
        Nice = 19;
        IOSchedulingClass = "idle";
      };
    };
    systemd.timers.wsl-storage-mount-dedupe = {
      description = "Deduplicate the instance stores on the WSL storage disk";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.dedupe.schedule;
        Persistent = true;
        RandomizedDelaySec = "1h";
      };
    };
  };
}
