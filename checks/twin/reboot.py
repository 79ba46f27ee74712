"""reboot: after a restart of the instance everything comes back, nothing stacked.

Mirrors checks/vm/reboot.nix. Two restarts (the disk stays attached, as WSL
keeps it across `wsl --terminate`): each boot has the chain up once, one
mount of the disk, one bind, the same booted system.
"""

from common import booted_system, check, check_storage_up
from harness import default_settings

SETTINGS = default_settings()


def test(m):
    m.wait_for_boot()
    check_storage_up(m, "first boot")
    first = booted_system(m)
    for n in (2, 3):
        m.reboot()
        m.wait_for_boot()
        check_storage_up(m, f"boot {n}")
        check(booted_system(m) == first, "the same generation booted")
