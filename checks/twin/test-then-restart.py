"""test-then-restart: after `nixos-rebuild test` under the bind, the next start still finds /sbin/init and /etc/static.

Mirrors the `test` part of checks/vm/rebuild-survives-restart.nix.
Generation 2 is only activated (switch-to-configuration test): its
activation links /sbin/init and /etc/static on the root filesystem to its own
store paths, which exist only in the disk's store, and the module's
activation snippet (sync-boot --closure-only) copies its closure into the
VHDX. The VHDX's boot generation stays 1. The restart must work: the kernel
execs /sbin/init from the VHDX before any bind exists.
"""

from common import booted_system, check, check_storage_up, import_generation, vhdx
from harness import default_settings

SETTINGS = default_settings()
GENERATIONS = 2


def test(m):
    m.wait_for_boot()
    check_storage_up(m, "generation 1")
    gen1 = booted_system(m)
    gen2 = import_generation(m, 2)
    m.succeed(f"{gen2}/bin/switch-to-configuration test", timeout=600)
    static, gen2_etc = m.succeed(f"readlink -f /etc/static {gen2}/etc").split()
    check(static == gen2_etc, f"generation 2 is active: /etc/static is {static}")
    for link in ("/sbin/init", "/etc/static"):
        rc, out = vhdx(m, f"test -e \"$(readlink -f {link})\"")
        check(rc == 0, f"{link} resolves in the VHDX: {out}")
    rc, out = vhdx(m, "readlink -f /nix/var/nix/profiles/system")
    check(out.strip() == gen1, f"the VHDX still boots generation 1: {out}")
    m.reboot()
    m.wait_for_boot()
    check(booted_system(m) == gen1, "generation 1 booted")
    check_storage_up(m, "after test and restart")
