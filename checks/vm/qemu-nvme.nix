# A real QEMU NVMe controller instead of the loop device: udev names it
# /dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_<serial>, and the helper must find it
# by that name, fsck it and mount it. No store bind here (bindMountNixStore =
# false), so the disk can be a fresh filesystem made on the host: the test
# script formats the raw image in the VM's state dir before start().
# bindTarget is /nix-storage, not /nix (see wslTest.bindTarget in default.nix).
# Its Rust twin is listed in docs/development.md (NixOS VM tests).
{ wslTest, hostPkgs, ... }:
{
  name = "wsl-storage-mount-qemu-nvme";
  globalTimeout = 15 * 60;

  nodes.machine =
    { config, ... }:
    {
      testing.fakeNvme.qemuNvme.enable = true;

      wslStorageMount = {
        enable = true;
        inherit (config.testing.fakeNvme.qemuNvme) deviceId;
        bindMountNixStore = false;
        instanceDirs = {
          "${config.wslStorageMount.nixStoreSubdir}" = {
            owner = "root";
            group = "root";
            mode = "0755";
          };
          data = {
            owner = "root";
            group = "root";
            mode = "0700";
          };
        };
      };
    };

  testScript =
    { nodes, ... }:
    ''
      ${wslTest.prelude}
      import subprocess

      s = json.loads(r"""${wslTest.settingsOf nodes.machine}""")

      with subtest("the NVMe image is formatted before the VM starts"):
          image = machine.state_dir / "${nodes.machine.testing.fakeNvme.qemuNvme.file}"
          with open(image, "wb") as f:
              f.truncate(256 * 1024 * 1024)
          subprocess.run(
              ["${hostPkgs.e2fsprogs}/bin/mkfs.ext4", "-q", "-F", "-L", "wslnvme", "-E", "root_owner=0:0", str(image)],
              check=True,
          )

      machine.start()

      with subtest("udev names the controller's namespace by its serial"):
          machine.wait_for_unit("multi-user.target")
          device = by_id(machine, s["deviceId"])
          assert device.startswith("/dev/nvme"), device

      with subtest("the helper found it by id, checked and mounted it"):
          machine.wait_for_unit("wsl-storage-mount.service")
          assert show(machine, "wsl-storage-mount.service", "Result") == "success"
          assert len(mount_ids(machine, s["mountPoint"])) == 1
          assert findmnt(machine, "SOURCE", s["mountPoint"]) == device
          assert findmnt(machine, "FSTYPE", s["mountPoint"]) == "ext4"
          assert "noatime" in findmnt(machine, "OPTIONS", s["mountPoint"]).split(",")
          mode = machine.succeed(f"stat -c %a {shlex.quote(s['mountPoint'])}/data").strip()
          assert mode == "700", mode
          machine.succeed(f"{s['helper']} status")

      with subtest("without bindMountNixStore nothing is bound and nix-daemon runs"):
          assert mount_ids(machine, s["bindTarget"]) == []
          machine.wait_for_unit("nix-daemon.socket")
          assert nix_daemon_answers(machine), "nix-daemon does not answer"

      with subtest("the log is timestamped and names the device"):
          log_text = machine.succeed(f"cat {shlex.quote(s['logFile'])}")
          assert_log_timestamped(log_text)
          assert_log(log_text, re.escape(s["deviceId"]), "the device")
    '';
}
