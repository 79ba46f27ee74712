"""restart: `systemctl restart wsl-storage-mount` on a running system stacks nothing and leaves /nix alone.

Mirrors checks/vm/restart-switch.nix (the restart half). The helper sees the
disk already mounted (same device: success, no second mount), and the system
past its boot: the bind stays as it is, nothing is unmounted under the
running system.
"""

from common import MOUNT_POINT, check, check_storage_up, mounts_at, state
from harness import default_settings

SETTINGS = default_settings()


def test(m):
    m.wait_for_boot()
    check_storage_up(m, "boot")
    before = {p: mounts_at(m, p) for p in (MOUNT_POINT, "/nix", "/nix/store")}
    for _ in range(2):
        m.succeed("systemctl restart wsl-storage-mount.service")
    after = {p: mounts_at(m, p) for p in (MOUNT_POINT, "/nix", "/nix/store")}
    check(before == after, f"mounts changed:\n{before}\n{after}")
    check(state(m)["mountedNow"] is False, f"already mounted: {state(m)}")
    check(m.unit_state("nix.mount") == "active", "nix.mount stays active")
    check(m.unit_state("nix-daemon.socket") == "active", "nix-daemon.socket stays active")
    check_storage_up(m, "after the restarts")
