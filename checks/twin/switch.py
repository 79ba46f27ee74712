"""switch: switch-to-configuration run again changes no mount, not even when the bind's unit changes.

Mirrors checks/vm/restart-switch.nix (the switch half). First `switch` of
the booted generation (its boot loader step, whose sync-boot finds the VHDX
in step, then the activation with the module's snippet and
switch-to-configuration's unit handling): every mount stays as it was. Then
a `switch` to a generation whose nixStoreSubdir differs, so nix.mount's
What= changes: switch-to-configuration-ng reloads a changed nix.mount
(never restarts it), so /nix stays the bind of the old subdir under the
running system; the new one applies at the next start.
"""

from common import MOUNT_POINT, SUBDIR, check, check_storage_up, findmnt, import_generation, mounts_at
from harness import default_settings

SETTINGS = default_settings()
OTHER = default_settings(wslStorageMount={"nixStoreSubdir": "nixos-wsl-other"})
GENERATIONS = [SETTINGS, OTHER]


def test(m):
    m.wait_for_boot()
    check_storage_up(m, "boot")
    paths = (MOUNT_POINT, "/nix", "/nix/store")
    before = {p: mounts_at(m, p) for p in paths}
    m.succeed("/run/current-system/bin/switch-to-configuration switch", timeout=300)
    after = {p: mounts_at(m, p) for p in paths}
    check(before == after, f"mounts changed by the switch:\n{before}\n{after}")
    check_storage_up(m, "after the switch")

    gen2 = import_generation(m, 2)
    m.succeed(f"nix-env -p /nix/var/nix/profiles/system --set {gen2}")
    rc, out = m.execute(f"{gen2}/bin/switch-to-configuration switch", timeout=300)
    unit = m.succeed("systemctl cat nix.mount")
    check("What=/mnt/wsl/storage/nixos-wsl-other" in unit, f"the new nix.mount is loaded:\n{unit}")
    after2 = {p: mounts_at(m, p) for p in paths}
    check(after2 == before, f"the switch to another subdir changed a mount (exit {rc}):\n{out}\n{before}\n{after2}")
    check(findmnt(m, "FSROOT", "/nix") == f"/{SUBDIR}", "/nix is still the old subdir's bind")
    m.fail("touch /nix/store/twin-write-test")
