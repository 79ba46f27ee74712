"""unsafe-store: the disk is there but its instance dir holds no store: refused, no bind, no marker.

Mirrors checks/vm/unsafe-store.nix. The helper mounts the disk, finds that
the instance dir lacks the booted system's closure, exits 6 and writes no
stamp; nix.mount is skipped, the marker fails, nix-daemon stays off
(onMissing = "block") and /nix stays the VHDX's.
"""

from common import MOUNT_POINT, check, check_vhdx_only, mounts_at, state
from harness import default_settings

SETTINGS = default_settings()
DISK_STORE = False


def test(m):
    st = m.wait_for_boot()
    check(st == "degraded", f"the boot ended {st}")
    check(m.unit_state("wsl-storage-mount.service") == "failed", "the helper refused")
    check(state(m)["exitCode"] == 6, f"exit 6 (unsafe store): {state(m)}")
    check(len(mounts_at(m, MOUNT_POINT)) == 1, "the disk itself is mounted")
    check_vhdx_only(m, "unsafe store")
    check(m.unit_state("nix-daemon.socket") != "active", "nix-daemon.socket is off")
    journal = m.journal("-b -u wsl-storage-mount.service")
    check("migrate" in journal or "closure" in journal, f"the message says why and what to do:\n{journal}")
