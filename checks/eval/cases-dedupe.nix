# Evaluation cases of `wslStorageMount.dedupe` (nixos/dedupe.nix), merged
# into cases.nix's cases by its last line. Same shape as cases-binds.nix.
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
in
{
  dedupe-timer-runs-the-helper-on-the-schedule = {
    modules = [
      base
      { wslStorageMount.dedupe.schedule = "weekly"; }
    ];
    checks =
      config:
      let
        svc = config.systemd.services.wsl-storage-mount-dedupe or null;
        timer = config.systemd.timers.wsl-storage-mount-dedupe or null;
      in
      [
        (expect "a timer on the schedule" (timer != null && timer.timerConfig.OnCalendar == "weekly"))
        (expect "the timer is wanted by timers.target" (lib.elem "timers.target" timer.wantedBy))
        (expect "missed runs happen at the next start" (timer.timerConfig.Persistent == true))
        (expect "its service runs the helper's dedupe with the config" (
          svc != null
          && lib.hasSuffix "/bin/wsl-storage-mount --config ${config.wslStorageMount.configFile} dedupe" svc.serviceConfig.ExecStart
        ))
        (expect "only while the disk is mounted (the helper's stamp)" (
          svc.unitConfig.ConditionPathExists == "/run/wsl-storage-mount/mounted"
        ))
        (expect "after the helper" (lib.elem "wsl-storage-mount.service" svc.after))
      ];
  };

  dedupe-off-by-default = {
    modules = [ base ];
    checks = config: [
      (expect "no dedupe timer without a schedule" (!(config.systemd.timers ? wsl-storage-mount-dedupe)))
      (expect "no dedupe service without a schedule" (
        !(config.systemd.services ? wsl-storage-mount-dedupe)
      ))
    ];
  };
}
