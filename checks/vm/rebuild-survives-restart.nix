# Issue 8: a deployment survives a restart. The VM switches to a second
# configuration the way `nixos-rebuild switch` does (the system profile set
# to it, then its switch-to-configuration, whose boot loader step is the
# module's `sync-boot`), reboots, and must come up in the second
# generation, with that generation's closure valid in both stores.
#
# This scenario binds the disk's store over the real /nix (bindTarget
# "/nix"), unlike the others (see wslTest.bindTarget in default.nix). Why it
# is sound here:
#
# - `virtualisation.useBootLoader` boots a complete NixOS disk image: its root
#   filesystem holds the system's closure in /nix/store, registered in
#   /nix/var/nix/db, and GRUB, with no 9p or overlay store from the host
#   (qemu-vm.nix: mountHostNixStore and writableStore follow !useBootLoader).
#   That root filesystem is what the VHDX is under NixOS-WSL, so the boot
#   view of `sync-boot` (a non-recursive bind of /) sees a real store there.
# - The fake disk is seeded at the first boot, before the helper runs, with
#   the closure of /run/booted-system, registered. That closure contains
#   everything the running system and the test driver's backdoor shell
#   exec after the bind (all of it comes from the booted toplevel), and also
#   the specialisation `second` (a specialisation is part of its parent's
#   closure). So the guard lets the bind happen, and nothing the test runs
#   afterwards misses a path.
# - GRUB plays NixOS-WSL's shim: it starts the generation the last boot
#   loader run selected. Its files live on the root filesystem (/boot and
#   the kernels in the VHDX's store), never under the bind.
#
# What it does not cover: NixOS-WSL's own shim (/sbin/init) and WSL itself;
# the Rust integration tests of `sync-boot` against real chroot stores are
# the executable twin (see docs/development.md).
{ wslTest, ... }:
{
  name = "wsl-storage-mount-rebuild-survives-restart";
  globalTimeout = 40 * 60;

  nodes.machine =
    { config, lib, ... }:
    {
      # A disk image with GRUB and the store on its root filesystem (the
      # stand-in for the VHDX), booted through the boot loader.
      virtualisation.useBootLoader = true;
      boot.loader.grub.enable = true;
      boot.loader.timeout = 1;
      system.switch.enable = true;

      testing.fakeNvme.enable = true;

      wslStorageMount = {
        enable = true;
        inherit (config.testing.fakeNvme) deviceId;
        # The real /nix: see the comment at the top of this file.
        bindTarget = lib.mkForce "/nix";
        bootGenerations = 2;
      };

      # Which generation is running, as a file a user could look at.
      environment.etc."wsm-generation".text = lib.mkDefault "first";
      specialisation.second.configuration = {
        environment.etc."wsm-generation".text = "second";
      };
    };

  testScript =
    { nodes, ... }:
    ''
      ${wslTest.prelude}

      s = json.loads(r"""${wslTest.settingsOf nodes.machine}""")
      assert s["bindTarget"] == "/nix", s["bindTarget"]


      def generation(m):
          return m.succeed("cat /etc/wsm-generation").strip()


      def vhdx(m, script):
          """Run `script` with $v the VHDX's root: a non-recursive bind of /
          in a private mount namespace, without the /nix bind on top (what
          sync-boot's boot view is)."""
          return m.succeed(
              "unshare --mount --propagation private sh -euc "
              + shlex.quote(
                  'v=$(mktemp -d /run/wsm-vhdx.XXXXXX); '
                  'trap \'umount "$v"; rmdir "$v"\' EXIT; '
                  'mount --bind / "$v"; ' + script
              )
          )


      def vhdx_boot_generation(m):
          # profiles/system -> system-N-link -> the toplevel; read as link
          # text, since an absolute target would resolve in the disk's store.
          return vhdx(
              m,
              'p="$v/nix/var/nix/profiles"; '
              'link=$(readlink "$p/system"); readlink "$p/$link"',
          ).strip()


      def closure_in_both_stores(m, toplevel, when):
          m.succeed(f"nix-store --query --requisites {toplevel} > /run/wsm-closure")
          count = int(m.succeed("wc -l < /run/wsm-closure").strip())
          assert count > 100, f"{when}: a suspiciously small closure: {count} paths"
          with subtest(f"{when}: the closure ({count} paths) is valid in the disk store"):
              m.succeed("xargs nix-store --check-validity < /run/wsm-closure")
              m.succeed('while read -r p; do test -e "$p"; done < /run/wsm-closure')
          with subtest(f"{when}: the closure is valid and present in the VHDX store"):
              vhdx(
                  m,
                  'xargs nix-store --store "local?root=$v" --check-validity < /run/wsm-closure; '
                  'while read -r p; do test -e "$v$p" || { echo "missing in the VHDX: $p"; exit 1; }; '
                  "done < /run/wsm-closure",
              )


      machine.start(allow_reboot=True)
      check_storage_up(machine, s, "first boot")

      first = machine.succeed("readlink -f /run/booted-system").strip()
      second = machine.succeed(
          "readlink -f /run/booted-system/specialisation/second"
      ).strip()
      assert first != second

      with subtest("first boot: /nix is the disk's store, the first generation runs"):
          assert findmnt(machine, "FSROOT", "/nix") == f"/{s['nixStoreSubdir']}"
          assert generation(machine) == "first"

      with subtest("switch to the second configuration, as nixos-rebuild switch does"):
          machine.succeed(f"nix-env --profile /nix/var/nix/profiles/system --set {second}")
          output = machine.succeed(f"{second}/bin/switch-to-configuration switch 2>&1")
          print(output)
          assert generation(machine) == "second"
          assert (
              machine.succeed("readlink -f /nix/var/nix/profiles/system").strip() == second
          ), "the disk's system profile is not the second generation"

      with subtest("the boot loader step made the second generation the VHDX's boot generation"):
          assert vhdx_boot_generation(machine) == second, vhdx_boot_generation(machine)

      closure_in_both_stores(machine, second, "after the switch")

      with subtest("a second sync of the same generation changes nothing"):
          before = vhdx(machine, 'ls "$v/nix/var/nix/profiles"')
          machine.succeed(
              f"{s['helper']} --config /etc/wsl-storage-mount/config.json sync-boot {second}"
          )
          assert vhdx(machine, 'ls "$v/nix/var/nix/profiles"') == before

      with subtest("reboot"):
          machine.reboot()
          machine.wait_for_unit("multi-user.target")

      with subtest("after reboot: the second generation is the booted one"):
          assert machine.succeed("readlink -f /run/booted-system").strip() == second
          assert generation(machine) == "second"

      check_storage_up(machine, s, "after reboot")
      closure_in_both_stores(machine, second, "after reboot")

      with subtest("after reboot: nothing failed"):
          failed = machine.succeed("systemctl list-units --state=failed --no-legend --plain")
          assert failed.strip() == "", f"failed units:\n{failed}"
    '';
}
