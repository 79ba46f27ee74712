# The helper appends to logFile on every run; rotate it.
{ config, lib, ... }:

let
  cfg = config.wslStorageMount;
in
{
  config = lib.mkIf cfg.enable {
    services.logrotate.settings.wsl-storage-mount = {
      files = cfg.logFile;
      frequency = lib.mkDefault "weekly";
      rotate = lib.mkDefault 4;
      compress = lib.mkDefault true;
      missingok = lib.mkDefault true;
      notifempty = lib.mkDefault true;
    };
  };
}
