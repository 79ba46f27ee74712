# Scenario 6: `systemctl restart wsl-storage-mount` stacks no second mount,
# and `switch-to-configuration test` of the same system leaves the binds alone.
# "The same mount" is the same mountinfo ID: an unmount and remount would get
# a new one, a second mount on top would add one.
# bindTarget is /nix-storage, not /nix (see wslTest.bindTarget in default.nix).
# Its Rust twin is listed in docs/development.md (NixOS VM tests).
{ wslTest, ... }:
{
  name = "wsl-storage-mount-restart-switch";
  globalTimeout = 20 * 60;

  nodes.machine =
    { config, ... }:
    {
      # nixos-test-base.nix turns switch-to-configuration off in test VMs
      # without specialisations; this test runs it.
      system.switch.enable = true;

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
      watched = [s["mountPoint"], s["bindTarget"]]


      def snapshot(m, with_daemon):
          # What must not change: the mounts and the bind unit; for a switch
          # also the marker run and the running nix-daemon.
          bind_unit = mount_unit(m, s["bindTarget"])
          seen = {
              "mounts": {path: mount_ids(m, path) for path in watched},
              "bind unit entered": show(m, bind_unit, "ActiveEnterTimestampMonotonic"),
          }
          if with_daemon:
              seen["marker run"] = show(m, "nix-mount-marker.service", "InvocationID")
              seen["nix-daemon"] = show(m, "nix-daemon.service", "MainPID")
          return seen


      machine.start()
      check_storage_up(machine, s, "boot")
      before = snapshot(machine, with_daemon=False)
      for path in watched:
          assert len(before["mounts"][path]) == 1, before

      with subtest("systemctl restart wsl-storage-mount stacks no second mount"):
          helper_run = show(machine, "wsl-storage-mount.service", "InvocationID")
          machine.succeed("systemctl restart wsl-storage-mount.service")
          assert show(machine, "wsl-storage-mount.service", "InvocationID") != helper_run
          assert show(machine, "wsl-storage-mount.service", "Result") == "success"
          assert state_outcome(machine) == "mounted"
          machine.succeed("test -f /run/wsl-storage-mount/bind-ok")
          after = snapshot(machine, with_daemon=False)
          assert after == before, f"before restart: {before}\nafter restart: {after}"

      with subtest("switch-to-configuration test of the same system does not touch the binds"):
          helper_run = show(machine, "wsl-storage-mount.service", "InvocationID")
          before = snapshot(machine, with_daemon=True)
          machine.succeed("/run/current-system/bin/switch-to-configuration test")
          assert show(machine, "wsl-storage-mount.service", "InvocationID") == helper_run
          after = snapshot(machine, with_daemon=True)
          assert after == before, f"before switch: {before}\nafter switch: {after}"
          machine.succeed(f"test -f {shlex.quote(s['bindTarget'])}/.mounted")
          assert nix_daemon_answers(machine), "nix-daemon does not answer"
    '';
}
