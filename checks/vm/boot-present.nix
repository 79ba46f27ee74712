# Scenario 1: the fake NVMe disk is there at boot; the whole chain comes up.
# bindTarget is /nix-storage, not /nix (see wslTest.bindTarget in default.nix).
# Its Rust twin is listed in docs/development.md (NixOS VM tests).
{ wslTest, ... }:
{
  name = "wsl-storage-mount-boot-present";
  globalTimeout = 20 * 60;

  nodes.machine =
    { config, ... }:
    {
      testing.fakeNvme.enable = true;

      users.users.alice.isNormalUser = true;

      wslStorageMount = {
        enable = true;
        inherit (config.testing.fakeNvme) deviceId;
        mountOptions = [
          "noatime"
          "nodev"
        ];
        instanceDirs = {
          # Written out although the module adds it by default: the check
          # below reads the expected owner and mode from this configuration.
          "${config.wslStorageMount.nixStoreSubdir}" = {
            owner = "root";
            group = "root";
            mode = "0755";
          };
          shared = {
            owner = "alice";
            group = "users";
            mode = "0750";
          };
        };
      };
    };

  testScript =
    { nodes, ... }:
    ''
      ${wslTest.prelude}

      s = json.loads(r"""${wslTest.settingsOf nodes.machine}""")

      machine.start()

      with subtest("the fake disk is prepared and attached before the helper runs"):
          machine.wait_for_unit("fake-nvme-attach.service")
          machine.succeed(f"test -b /dev/disk/by-id/{s['deviceId']}")

      check_storage_up(machine, s, "boot with the disk present")

      with subtest("the boot reached multi-user.target with nothing failed"):
          machine.wait_for_unit("multi-user.target")
          failed = machine.succeed("systemctl list-units --state=failed --no-legend --plain")
          assert failed.strip() == "", f"failed units:\n{failed}"
    '';
}
