# Scenario 3: the disk never appears. The helper fails after waitTimeout with
# its message in the journal, the boot still reaches multi-user.target and
# nothing is mounted. Two VMs, one per onMissing policy: with "block"
# nix-daemon stays off the VHDX store, with "fallback" it runs on it and
# `wsl-storage-mount status` says degraded.
# bindTarget is /nix-storage, not /nix (see wslTest.bindTarget in default.nix).
# Its Rust twin is listed in docs/development.md (NixOS VM tests).
{ wslTest, ... }:
let
  # No fake disk at all: this by-id name never exists.
  missingDisk = onMissing: {
    wslStorageMount = {
      enable = true;
      deviceId = "nvme-FAKE_NVMe_NEVERATTACHED";
      waitTimeout = 10;
      inherit onMissing;
    };
  };
in
{
  name = "wsl-storage-mount-missing-disk";
  globalTimeout = 15 * 60;

  nodes = {
    block = missingDisk "block";
    fallback = missingDisk "fallback";
  };

  testScript =
    { nodes, ... }:
    ''
      ${wslTest.prelude}

      settings = {
          "block": json.loads(r"""${wslTest.settingsOf nodes.block}"""),
          "fallback": json.loads(r"""${wslTest.settingsOf nodes.fallback}"""),
      }
      vms = {"block": block, "fallback": fallback}
      # The unit's end state per policy. block: the service fails (exit 3).
      # fallback: the helper's contract (issue 2) is exit 0 with a loud
      # DEGRADED warning and state "degraded", so the unit is active; the
      # message naming the disk is in the journal either way.
      expected_unit = {"block": ("failed", "3"), "fallback": ("active", "0")}

      start_all()

      for policy, m in vms.items():
          s = settings[policy]

          with subtest(f"{policy}: the boot reaches multi-user.target"):
              m.wait_for_unit("multi-user.target")

          with subtest(f"{policy}: the helper reports 'device not found' and names the disk"):
              state, code = expected_unit[policy]
              assert show(m, "wsl-storage-mount.service", "ActiveState") == state
              assert show(m, "wsl-storage-mount.service", "ExecMainStatus") == code
              journal = m.succeed("journalctl -b --no-pager -u wsl-storage-mount.service")
              assert s["deviceId"] in journal, f"the journal does not name the disk:\n{journal}"
              assert "device not found after" in journal, journal
              if policy == "fallback":
                  assert "DEGRADED" in journal, journal
              m.fail("test -e /run/wsl-storage-mount/bind-ok")

          with subtest(f"{policy}: nothing is mounted at mountPoint or bindTarget"):
              assert mount_ids(m, s["mountPoint"]) == []
              assert mount_ids(m, s["bindTarget"]) == []
              m.fail(f"test -e {shlex.quote(s['bindTarget'])}/.mounted")

      with subtest("block: nix-daemon does not run on the VHDX store"):
          for unit in ["nix-daemon.socket", "nix-daemon.service"]:
              unit_state = show(block, unit, "ActiveState")
              assert unit_state != "active", f"{unit} is {unit_state}"
          assert not nix_daemon_answers(block), "nix-daemon answered on the VHDX store"
          assert state_outcome(block) == "failed"

      with subtest("fallback: nix-daemon runs on the VHDX store"):
          fallback.wait_for_unit("nix-daemon.socket")
          assert nix_daemon_answers(fallback), "nix-daemon does not answer"
          fallback.wait_for_unit("nix-daemon.service")

      with subtest("fallback: `wsl-storage-mount status` says degraded"):
          status, out = fallback.execute(f"{settings['fallback']['helper']} status")
          assert status == 1, f"status exited {status}:\n{out}"
          assert "degraded" in out.lower(), out
          assert state_outcome(fallback) == "degraded"
    '';
}
