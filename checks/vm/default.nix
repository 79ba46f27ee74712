# NixOS VM tests of nixosModules.wslStorageMount, one file per scenario.
# They need KVM and a full nixpkgs (`nix flake check`, or
# `nix build .#checks.x86_64-linux.vm-boot-present`); this repository's CI only
# parses them. Each scenario has a twin among the Rust integration tests.
{ pkgs, self }:
let
  inherit (pkgs) lib;

  # Shared by the scenario files (as the module argument `wslTest`).
  wslTest = {
    # Test VMs run from their own /nix: an overlay over the host's store that
    # the test driver's shell and commands live in. Binding the storage disk
    # over it would cut the driver off, so every VM test points the module's
    # internal option `bindTarget` elsewhere. The bind, its mount unit, the
    # marker and the store guard are the same code paths as over /nix.
    bindTarget = "/nix-storage";

    # The settings a test script checks against, as JSON, from the node's
    # evaluated configuration (so the script and the VM cannot disagree).
    settingsOf =
      node:
      let
        cfg = node.wslStorageMount;
      in
      builtins.toJSON {
        helper = "${cfg.package}/bin/wsl-storage-mount";
        inherit (cfg)
          deviceId
          mountPoint
          mountOptions
          nixStoreSubdir
          bindTarget
          logFile
          ;
        instanceDirs = lib.mapAttrs (_: dir: { inherit (dir) owner group mode; }) cfg.instanceDirs;
      };

    # Python shared by the test scripts. Only what a user would look at:
    # systemctl, findmnt, /proc/self/mountinfo, stat, the log, the state file.
    prelude = ''
      import json
      import re
      import shlex


      def show(m, unit, prop):
          # One unit property, as `systemctl show` prints it.
          return m.succeed(
              f"systemctl show --value --property={prop} {shlex.quote(unit)}"
          ).strip()


      def mount_unit(m, path):
          # systemd's name for the mount unit of a path (/nix-storage: nix\x2dstorage.mount).
          return m.succeed(
              f"systemd-escape --path --suffix=mount {shlex.quote(path)}"
          ).strip()


      def mount_ids(m, path):
          # mountinfo IDs of the mounts at exactly this path: two means a stacked mount.
          ids = []
          for line in m.succeed("cat /proc/self/mountinfo").splitlines():
              fields = line.split()
              if len(fields) > 4 and fields[4] == path:
                  ids.append(fields[0])
          return ids


      def findmnt(m, column, path):
          return m.succeed(
              f"findmnt --noheadings --raw --output {column} --mountpoint {shlex.quote(path)}"
          ).strip()


      def by_id(m, device_id):
          # The device node a /dev/disk/by-id link points to.
          return m.succeed(
              f"readlink -f /dev/disk/by-id/{shlex.quote(device_id)}"
          ).strip()


      def nix_daemon_answers(m):
          # What a user runs: a store query through nix-daemon (socket-activated).
          status, _ = m.execute(
              "NIX_REMOTE=daemon nix-store --query --hash /run/current-system"
          )
          return status == 0


      def state_outcome(m):
          return json.loads(m.succeed("cat /run/wsl-storage-mount/state.json"))["outcome"]


      def assert_log(text, pattern, what):
          assert re.search(pattern, text, re.IGNORECASE | re.MULTILINE), (
              f"the log does not show {what} (/{pattern}/):\n{text}"
          )


      def assert_log_timestamped(text):
          lines = [line for line in text.splitlines() if line.strip()]
          assert lines, "the log file is empty"
          for line in lines:
              assert re.match(r"\[?\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}", line), (
                  f"log line without a timestamp: {line!r}"
              )


      def check_storage_up(m, s, when):
          """The whole chain with the disk present, as a user checks it."""
          mount_point = s["mountPoint"]
          bind_target = s["bindTarget"]
          store_dir = f"{mount_point}/{s['nixStoreSubdir']}"

          with subtest(f"{when}: wsl-storage-mount.service succeeded"):
              m.wait_for_unit("wsl-storage-mount.service")
              assert show(m, "wsl-storage-mount.service", "Result") == "success"
              assert state_outcome(m) == "mounted"
              m.succeed(f"{s['helper']} status")

          with subtest(f"{when}: the disk is mounted once at mountPoint, with the options"):
              assert len(mount_ids(m, mount_point)) == 1, mount_ids(m, mount_point)
              assert findmnt(m, "SOURCE", mount_point) == by_id(m, s["deviceId"])
              assert findmnt(m, "FSTYPE", mount_point) == "ext4"
              options = findmnt(m, "OPTIONS", mount_point).split(",")
              for option in s["mountOptions"]:
                  assert option in options, f"{option} missing from {options}"

          with subtest(f"{when}: instance dirs have their owner, group and mode"):
              for name, want in s["instanceDirs"].items():
                  path = shlex.quote(f"{mount_point}/{name}")
                  user, uid, group, gid, mode = m.succeed(
                      f"stat -c '%U %u %G %g %a' {path}"
                  ).split()
                  assert str(want["owner"]) in (user, uid), f"{name}: owner {user}"
                  assert str(want["group"]) in (group, gid), f"{name}: group {group}"
                  assert int(mode, 8) == int(want["mode"], 8), f"{name}: mode {mode}"
                  m.fail(f"test -L {path}")

          with subtest(f"{when}: bindTarget is the bind of nixStoreSubdir"):
              m.wait_for_unit(mount_unit(m, bind_target))
              assert len(mount_ids(m, bind_target)) == 1, mount_ids(m, bind_target)
              assert findmnt(m, "FSROOT", bind_target) == f"/{s['nixStoreSubdir']}"
              same = m.succeed(
                  f"stat -c '%d:%i' {shlex.quote(bind_target)} {shlex.quote(store_dir)}"
              ).split()
              assert same[0] == same[1], f"{bind_target} is not {store_dir}: {same}"
              m.succeed("test -f /run/wsl-storage-mount/bind-ok")

          with subtest(f"{when}: the marker exists and nix-daemon runs after it"):
              m.wait_for_unit("nix-mount-marker.service")
              m.succeed(f"test -f {shlex.quote(bind_target)}/.mounted")
              for unit in ["nix-daemon.socket", "nix-daemon.service"]:
                  after = show(m, unit, "After").split()
                  assert "nix-mount-marker.service" in after, f"{unit} After={after}"
              m.wait_for_unit("nix-daemon.socket")
              assert nix_daemon_answers(m), "nix-daemon does not answer"
              m.wait_for_unit("nix-daemon.service")

          with subtest(f"{when}: the log file holds each step, timestamped"):
              log_text = m.succeed(f"cat {shlex.quote(s['logFile'])}")
              assert_log_timestamped(log_text)
              assert_log(log_text, re.escape(s["deviceId"]), "the device it waited for")
              assert_log(log_text, r"fsck", "the filesystem check")
              assert_log(log_text, re.escape(mount_point), "the mount")
              for name in s["instanceDirs"]:
                  assert_log(log_text, re.escape(name), f"instance dir {name}")
              assert_log(log_text, r"closure|store", "the store check")
    '';
  };

  runTest =
    module:
    pkgs.testers.runNixOSTest {
      imports = [ module ];
      _module.args = { inherit wslTest; };
      defaults = {
        imports = [
          self.nixosModules.wslStorageMount
          ../lib/fake-nvme.nix
        ];
        # See wslTest.bindTarget: never bind over the test VM's own /nix.
        wslStorageMount.bindTarget = wslTest.bindTarget;
      };
    };
in
{
  vm-boot-present = runTest ./boot-present.nix;
  vm-late-disk = runTest ./late-disk.nix;
  vm-missing-disk = runTest ./missing-disk.nix;
  vm-unsafe-store = runTest ./unsafe-store.nix;
  vm-reboot = runTest ./reboot.nix;
  vm-restart-switch = runTest ./restart-switch.nix;
  vm-windows-trigger = runTest ./windows-trigger.nix;
  vm-qemu-nvme = runTest ./qemu-nvme.nix;
  # Binds over the real /nix (its file says why that is sound there).
  vm-rebuild-survives-restart = runTest ./rebuild-survives-restart.nix;
  # Scenario 8 is an evaluation check: no VM, a failed assertion is the result.
  vm-eval-bad-subdir = import ./eval-bad-subdir.nix { inherit pkgs self; };
}
