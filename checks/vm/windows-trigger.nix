# Scenario 7: the Windows trigger. The disk is not attached at boot; a fake
# schtasks.exe at windows.schtasksPath stands in for Windows: on
# `/Run /TN <taskName>` it starts the unit that attaches the loop device and
# returns at once, as the real one returns once the elevated task is started.
# The helper's wait must then find the disk, and its log must show the trigger.
# bindTarget is /nix-storage, not /nix (see wslTest.bindTarget in default.nix).
# Its Rust twin is listed in docs/development.md (NixOS VM tests).
{ wslTest, ... }:
let
  # Distinct from the program name, so finding it in the log means something.
  taskName = "AttachStorageDisk";
in
{
  name = "wsl-storage-mount-windows-trigger";
  globalTimeout = 20 * 60;

  nodes.machine =
    { config, pkgs, ... }:
    let
      fakeSchtasks = pkgs.writeShellApplication {
        name = "schtasks.exe";
        runtimeInputs = [
          pkgs.util-linux
          pkgs.systemd
        ];
        text = ''
          logger -t fake-schtasks -- "called with: $*"
          run=no
          task=
          while [ "$#" -gt 0 ]; do
            case "''${1,,}" in
              /run) run=yes ;;
              /tn)
                shift
                task=''${1:-}
                ;;
            esac
            shift
          done
          if [ "$run" != yes ] || [ "$task" != ${taskName} ]; then
            echo "ERROR: Invalid argument/option."
            exit 1
          fi
          # Like Task Scheduler: start the task, do not wait for it.
          systemctl start --no-block fake-nvme-attach.service
          echo "SUCCESS: Attempted to run the scheduled task \"$task\"."
        '';
      };
    in
    {
      testing.fakeNvme = {
        enable = true;
        attach = "manual";
      };

      wslStorageMount = {
        enable = true;
        inherit (config.testing.fakeNvme) deviceId;
        diskSerialNumber = config.testing.fakeNvme.serial;
        waitTimeout = 120;
        windows = {
          trigger = "task";
          inherit taskName;
          schtasksPath = "${fakeSchtasks}/bin/schtasks.exe";
        };
      };
    };

  testScript =
    { nodes, ... }:
    ''
      ${wslTest.prelude}

      s = json.loads(r"""${wslTest.settingsOf nodes.machine}""")

      machine.start()

      with subtest("the helper ran schtasks.exe /Run /TN ${taskName}"):
          machine.wait_for_unit("wsl-storage-mount.service")
          calls = machine.succeed("journalctl -b --no-pager -t fake-schtasks")
          assert re.search(r"/run\b.*/tn ${taskName}\b", calls, re.IGNORECASE), calls

      with subtest("the disk came in through the trigger, while the helper waited"):
          machine.wait_for_unit("fake-nvme-attach.service")
          helper_start = int(show(machine, "wsl-storage-mount.service", "ExecMainStartTimestampMonotonic"))
          helper_exit = int(show(machine, "wsl-storage-mount.service", "ExecMainExitTimestampMonotonic"))
          attached = int(show(machine, "fake-nvme-attach.service", "ActiveEnterTimestampMonotonic"))
          assert helper_start < attached < helper_exit, (
              f"helper ran {helper_start}..{helper_exit}, disk attached at {attached}"
          )

      check_storage_up(machine, s, "after the Windows trigger")

      with subtest("the log shows the trigger"):
          log_text = machine.succeed(f"cat {shlex.quote(s['logFile'])}")
          assert_log(log_text, r"schtasks|trigger", "the Windows trigger")
          assert_log(log_text, r"${taskName}", "the task name")
    '';
}
