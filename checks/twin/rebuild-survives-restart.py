"""rebuild-survives-restart: a generation deployed under the bind is the one the next start boots.

Mirrors checks/vm/rebuild-survives-restart.nix. Generation 2 goes into the
disk's store (/nix is the bind) and becomes the system profile; its
switch-to-configuration boot runs the module's boot loader step (NixOS-WSL's
`true`, then sync-boot), which copies its closure into the VHDX and makes it
the VHDX's boot generation. The restart goes through the shim: the VHDX's
profile, now generation 2, is activated and booted, and its closure is valid
in both stores.
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
    check(gen2 != gen1, "a second generation")
    check(vhdx(m, f"test -e {gen2}")[0] != 0, "generation 2 is not in the VHDX before the deploy")
    m.succeed(f"nix-env -p /nix/var/nix/profiles/system --set {gen2}")
    m.succeed(f"{gen2}/bin/switch-to-configuration boot", timeout=600)
    rc, out = vhdx(m, f"readlink -f /nix/var/nix/profiles/system && nix-store --verify-path $(nix-store -qR {gen2})")
    check(rc == 0 and out.splitlines()[0] == gen2, f"the VHDX boots generation 2, its closure valid:\n{out}")
    m.reboot()
    m.wait_for_boot()
    check(booted_system(m) == gen2, f"booted {booted_system(m)}, not generation 2")
    check_storage_up(m, "generation 2")
    m.succeed(f"nix-store --verify-path $(nix-store -qR {gen2})")
    rc, out = vhdx(m, f"nix-store --verify-path $(nix-store -qR {gen2})")
    check(rc == 0, f"generation 2's closure valid in the VHDX:\n{out}")
