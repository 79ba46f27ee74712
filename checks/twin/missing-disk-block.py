"""missing-disk-block: no disk, onMissing = "block": the boot goes on, nix-daemon never runs on the VHDX store.

Mirrors checks/vm/missing-disk.nix (the block half). The helper fails after
waitTimeout with a message naming the disk; nix.mount is skipped (its stamp
condition), the marker fails, and nix-daemon's socket and service, which
require the marker, stay off. The boot still ends (degraded), so WSL starts
the user's shell.
"""

from common import check, check_vhdx_only, show, state
from harness import default_settings

SETTINGS = default_settings(wslStorageMount={"waitTimeout": 10, "onMissing": "block"})
DISK = True
DISK_AT_BOOT = False


def test(m):
    st = m.wait_for_boot()
    check(st == "degraded", f"the boot ended {st}")
    check(m.unit_state("wsl-storage-mount.service") == "failed", "the helper failed")
    check(state(m)["exitCode"] == 3, f"exit 3 (no device): {state(m)}")
    journal = m.journal("-b -u wsl-storage-mount.service")
    check("fsUuid" in journal or "3d2f8c1e" in journal, f"the message names the disk:\n{journal}")
    check(show(m, "nix.mount", "ConditionResult") == "no", "nix.mount skipped by its condition")
    check_vhdx_only(m, "no disk")
    check(m.unit_state("nix-mount-marker.service") == "failed", "the marker failed")
    for unit in ("nix-daemon.socket", "nix-daemon.service"):
        check(m.unit_state(unit) != "active", f"{unit} is not active")
        check(show(m, unit, "ExecMainStartTimestampMonotonic") in ("0", ""), f"{unit} never started")
    m.fail("test -S /nix/var/nix/daemon-socket/socket")
