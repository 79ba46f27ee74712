"""boot-present: the disk is attached before the instance starts; the whole chain comes up.

Mirrors checks/vm/boot-present.nix. The disk is there when the shim starts
systemd (attached before the guest's CPU runs, as a disk WSL attached before
the distro started); the helper finds it by fsUuid without udev, mounts it
once, the bind puts the instance dir over /nix, the marker re-binds
/nix/store read-only and nix-daemon serves the disk's store. The boot ends
with nothing failed.
"""

from common import check, check_storage_up, failed_units, show
from harness import default_settings

SETTINGS = default_settings()


def test(m):
    state = m.wait_for_boot()
    check_storage_up(m, "boot with the disk present")
    check(state == "running", f"the boot ended {state}, failed units: {failed_units(m)}")
    # The order systemd really ran them in: the helper, the bind, the marker,
    # then nix-daemon's socket.
    t = {u: int(show(m, u, "ActiveEnterTimestampMonotonic")) for u in (
        "wsl-storage-mount.service", "nix.mount", "nix-mount-marker.service", "nix-daemon.socket")}
    check(t["wsl-storage-mount.service"] <= t["nix.mount"] <= t["nix-mount-marker.service"]
          <= t["nix-daemon.socket"], f"activation order: {t}")
    m.succeed("journalctl -b -u wsl-storage-mount.service | grep -q .")
