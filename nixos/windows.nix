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

  helper = command: "${lib.getExe cfg.package} --config ${cfg.configFile} ${command}";

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
      description = "Copy the WSL storage disk's attach scripts to Windows";
      wantedBy = [ "multi-user.target" ];
      # Interop and the Windows drives are up by then.
      after = [ "multi-user.target" ];
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
