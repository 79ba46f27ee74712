# Scenario 2: the disk appears 10 s after the image is ready, while the helper
# is already waiting for it; the helper waits, then succeeds.
# bindTarget is /nix-storage, not /nix (see wslTest.bindTarget in default.nix).
# Its Rust twin is listed in docs/development.md (NixOS VM tests).
#
# The late attach is a delayed test-only unit, not a command from the test
# script: the driver's root shell (backdoor.service in nixpkgs'
# test-instrumentation.nix) has default dependencies, so it only comes up after
# basic.target, and that waits for local-fs.target, which waits for
# wsl-storage-mount.service. While the helper waits, the script cannot talk
# to the VM.
{ wslTest, ... }:
{
  name = "wsl-storage-mount-late-disk";
  globalTimeout = 20 * 60;

  nodes.machine =
    { config, ... }:
    {
      testing.fakeNvme = {
        enable = true;
        attach = "delayed";
        attachDelay = 10;
      };

      wslStorageMount = {
        enable = true;
        inherit (config.testing.fakeNvme) deviceId;
        # Far above the 10 s delay, so only a broken wait fails the test.
        waitTimeout = 120;
      };
    };

  testScript =
    { nodes, ... }:
    ''
      ${wslTest.prelude}

      s = json.loads(r"""${wslTest.settingsOf nodes.machine}""")

      machine.start()

      with subtest("the disk appeared while the helper was already waiting"):
          machine.wait_for_unit("wsl-storage-mount.service")
          helper_start = int(show(machine, "wsl-storage-mount.service", "ExecMainStartTimestampMonotonic"))
          helper_exit = int(show(machine, "wsl-storage-mount.service", "ExecMainExitTimestampMonotonic"))
          attached = int(show(machine, "fake-nvme-attach.service", "ActiveEnterTimestampMonotonic"))
          assert helper_start < attached < helper_exit, (
              f"helper ran {helper_start}..{helper_exit}, disk attached at {attached}"
          )

      check_storage_up(machine, s, "late disk")

      with subtest("the log shows the wait"):
          log_text = machine.succeed(f"cat {shlex.quote(s['logFile'])}")
          assert_log(log_text, r"wait", "the wait for the device")

      with subtest("nothing failed"):
          machine.wait_for_unit("multi-user.target")
          failed = machine.succeed("systemctl list-units --state=failed --no-legend --plain")
          assert failed.strip() == "", f"failed units:\n{failed}"
    '';
}
