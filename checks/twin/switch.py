"""switch: the generation's switch-to-configuration run again changes no mount.

Mirrors checks/vm/restart-switch.nix (the switch half). `switch` of the
booted generation (its boot loader step, whose sync-boot finds the VHDX in
step, then the activation with the module's snippet and switch-to-
configuration's unit handling) leaves every mount as it was.
"""

from common import MOUNT_POINT, check, check_storage_up, mounts_at
from harness import default_settings

SETTINGS = default_settings()


def test(m):
    m.wait_for_boot()
    check_storage_up(m, "boot")
    paths = (MOUNT_POINT, "/nix", "/nix/store")
    before = {p: mounts_at(m, p) for p in paths}
    m.succeed("/run/current-system/bin/switch-to-configuration switch", timeout=300)
    after = {p: mounts_at(m, p) for p in paths}
    check(before == after, f"mounts changed:\n{before}\n{after}")
    check_storage_up(m, "after the switch")
