# The Windows side: the attach script and the task registration script, both
# printed by the helper from the same config, under /etc/wsl-storage-mount/.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.wslStorageMount;

  # Generated at build time: the build platform's helper (cross builds).
  helper = command: "${lib.getExe cfg.buildPlatformPackage} --config ${cfg.configFile} ${command}";

  generated =
    name: command:
    pkgs.runCommand "wsl-storage-mount-${name}" { } ''
      ${helper command} > "$out"
    '';
in
{
  # The attach script finds the disk by its serial: without one there is
  # nothing to generate (the helper would refuse, failing the build).
  config = lib.mkIf (cfg.enable && cfg.diskSerialNumber != null) {
    environment.etc."wsl-storage-mount/attach.ps1".source = generated "attach.ps1" "windows-script";
    environment.etc."wsl-storage-mount/register-task.ps1".source =
      generated "register-task.ps1" "windows-task";

    systemd.services.wsl-storage-mount-windows-files = lib.mkIf cfg.windows.installFiles {
      description = "Stage the WSL storage disk's Windows scripts in the user's profile";
      # Runs once the boot is done (interop and the Windows drives are up by
      # then). A target orders itself after every unit it wants unless that
      # unit has DefaultDependencies=no: with default dependencies,
      # `after = [ "multi-user.target" ]` is an ordering cycle and systemd
      # drops this job. So: no default dependencies, and the two that matter
      # by hand (stopped at shutdown), as systemd-update-utmp-runlevel.service
      # does.
      wantedBy = [ "multi-user.target" ];
      after = [ "multi-user.target" ];
      conflicts = [ "shutdown.target" ];
      before = [ "shutdown.target" ];
      unitConfig.DefaultDependencies = false;
      serviceConfig = {
        Type = "oneshot";
        # Active after it ran, so a switch that changes the scripts runs it again.
        RemainAfterExit = true;
        # The helper warns and exits 0 when Windows is out of reach; "-"
        # keeps any other failure out of the boot's result too.
        ExecStart = "-${helper "install-windows-files"}";
      };
    };
  };
}
