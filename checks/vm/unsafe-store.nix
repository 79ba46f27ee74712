# Scenario 4: the store on the disk is not safe: nixStoreSubdir holds the
# booted closure except the booted toplevel itself (what an older generation
# leaves behind). The helper refuses the bind with exit status 6; the system
# keeps running on its own store (onMissing = "fallback", so nix-daemon is
# expected to serve the VM's own store).
# bindTarget is /nix-storage, not /nix (see wslTest.bindTarget in default.nix).
# Its Rust twin is listed in docs/development.md (NixOS VM tests).
{ wslTest, ... }:
{
  name = "wsl-storage-mount-unsafe-store";
  globalTimeout = 20 * 60;

  nodes.machine =
    { config, ... }:
    {
      testing.fakeNvme = {
        enable = true;
        seed = "partial";
      };

      wslStorageMount = {
        enable = true;
        inherit (config.testing.fakeNvme) deviceId;
        onMissing = "fallback";
      };
    };

  testScript =
    { nodes, ... }:
    ''
      ${wslTest.prelude}

      s = json.loads(r"""${wslTest.settingsOf nodes.machine}""")
      bind_target = s["bindTarget"]

      machine.start()

      with subtest("the system boots to multi-user.target"):
          machine.wait_for_unit("multi-user.target")
          machine.wait_for_unit("fake-nvme-attach.service")
          bind_unit = mount_unit(machine, bind_target)

      with subtest("the helper refused the store: exit status 6 in the unit's result"):
          assert show(machine, "wsl-storage-mount.service", "ActiveState") == "failed"
          assert show(machine, "wsl-storage-mount.service", "Result") == "exit-code"
          assert show(machine, "wsl-storage-mount.service", "ExecMainStatus") == "6"
          journal = machine.succeed("journalctl -b --no-pager -u wsl-storage-mount.service")
          assert_log(journal, r"closure|store", "why the store was refused")

      with subtest("nothing is bound: no stamp, the bind unit's condition failed, no marker"):
          machine.fail("test -e /run/wsl-storage-mount/bind-ok")
          assert show(machine, bind_unit, "ActiveState") != "active"
          assert show(machine, bind_unit, "ConditionResult") == "no"
          assert mount_ids(machine, bind_target) == []
          machine.fail(f"test -e {shlex.quote(bind_target)}/.mounted")

      with subtest("the system keeps running on its own store"):
          assert mount_ids(machine, "/nix") == []
          machine.succeed("nix-store --query --hash /run/booted-system")
          machine.wait_for_unit("nix-daemon.socket")
          assert nix_daemon_answers(machine), "nix-daemon does not answer"
          status, out = machine.execute(f"{s['helper']} status")
          assert status == 1, f"status exited {status} although the store was refused:\n{out}"
    '';
}
