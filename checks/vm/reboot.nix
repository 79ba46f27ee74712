# Scenario 5: after a reboot everything comes back the same way. The VM's
# disks (root and the fake disk's carrier) live in the test's state dir and
# survive reboot(), so the second boot finds the same image, already seeded.
# bindTarget is /nix-storage, not /nix (see wslTest.bindTarget in default.nix).
# Its Rust twin is listed in docs/development.md (NixOS VM tests).
{ wslTest, ... }:
{
  name = "wsl-storage-mount-reboot";
  globalTimeout = 30 * 60;

  nodes.machine =
    { config, ... }:
    {
      testing.fakeNvme.enable = true;

      wslStorageMount = {
        enable = true;
        inherit (config.testing.fakeNvme) deviceId;
      };
    };

  testScript =
    { nodes, ... }:
    ''
      ${wslTest.prelude}

      s = json.loads(r"""${wslTest.settingsOf nodes.machine}""")

      machine.start(allow_reboot=True)

      check_storage_up(machine, s, "first boot")
      first_boot = machine.succeed("cat /proc/sys/kernel/random/boot_id").strip()
      first_log = machine.succeed(f"cat {shlex.quote(s['logFile'])}")

      with subtest("reboot"):
          machine.reboot()
          machine.wait_for_unit("multi-user.target")
          second_boot = machine.succeed("cat /proc/sys/kernel/random/boot_id").strip()
          assert second_boot != first_boot, "the machine did not reboot"

      check_storage_up(machine, s, "after reboot")

      with subtest("after reboot: the log kept the first boot and added the second"):
          second_log = machine.succeed(f"cat {shlex.quote(s['logFile'])}")
          assert second_log.startswith(first_log), "the log of the first boot was lost"
          assert len(second_log) > len(first_log), "the second boot logged nothing"

      with subtest("after reboot: nothing failed"):
          failed = machine.succeed("systemctl list-units --state=failed --no-legend --plain")
          assert failed.strip() == "", f"failed units:\n{failed}"
    '';
}
