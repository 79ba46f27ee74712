"""heal: a generation deployed while the disk was missing (fallback) is healed into the disk's store at the next start.

Mirrors the heal part of checks/vm/rebuild-survives-restart.nix. The first
boot has no disk (onMissing = "fallback": nix-daemon on the VHDX store);
generation 2 is deployed into the VHDX store and made its boot generation
(the boot loader step's sync-boot sees /nix is not the bind and does
nothing more). The disk is attached, the instance restarts: the shim boots
generation 2, the helper finds the disk's store lacking it, copies its
closure from the VHDX, and only then binds.
"""

from common import booted_system, check, check_storage_up, import_generation, state
from harness import default_settings

SETTINGS = default_settings(wslStorageMount={"waitTimeout": 10, "onMissing": "fallback"})
DISK_AT_BOOT = False
GENERATIONS = 2


def test(m):
    m.wait_for_boot()
    check(state(m)["outcome"] == "degraded", f"no disk at the first boot: {state(m)}")
    gen2 = import_generation(m, 2)
    m.succeed(f"nix-env -p /nix/var/nix/profiles/system --set {gen2}")
    m.succeed(f"{gen2}/bin/switch-to-configuration boot", timeout=600)
    m.attach_disk()
    m.reboot()
    m.wait_for_boot()
    check(booted_system(m) == gen2, "generation 2 booted")
    check_storage_up(m, "healed")
    check(state(m)["healedPaths"] > 0, f"the heal copied paths: {state(m)}")
    m.succeed(f"nix-store --verify-path $(nix-store -qR {gen2})")
