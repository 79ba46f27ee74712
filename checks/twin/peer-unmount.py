"""peer-unmount: a peer distro's unmount of /mnt/wsl/storage costs nothing; `keep` mounts it again.

Mirrors tests/instances.rs (issue 19 item 1) under the twin's real systemd.
The peer is a mount namespace made in the guest with its propagation
unchanged, so its /mnt/wsl is a peer of the guest's (the shim mounts it
shared and makes / rshared). After its `umount -R` and its `umount -l` of
the storage mount, /nix is still the bind and /nix/store still read-only,
and wsl-storage-mount-keep.service has mounted the disk again.
"""

from common import MOUNT_POINT, check, check_storage_up, findmnt, mounts_at, failed_units
from harness import default_settings, log

SETTINGS = default_settings()


def test(m):
    state = m.wait_for_boot()
    check_storage_up(m, "boot")
    check(state == "running", f"the boot ended {state}, failed units: {failed_units(m)}")
    for path in (MOUNT_POINT, "/nix", "/nix/store"):
        log(f"propagation {path}: " + m.succeed(f"findmnt -n -o TARGET,PROPAGATION,FSROOT,OPTIONS {path} | tail -1").strip())
    log("mountinfo: " + m.succeed("grep -E ' /nix| /mnt/wsl' /proc/self/mountinfo"))
    m.wait_for_unit("wsl-storage-mount-keep.service")
    for how in ("umount -R", "umount -l"):
        m.succeed(f"unshare -m --propagation unchanged sh -c '{how} {MOUNT_POINT}'")
        out = m.fail("touch /nix/store/twin-write-test")
        check("Read-only file system" in out, f"after the peer's {how}: /nix/store is read-only: {out}")
        check(findmnt(m, "FSROOT", "/nix").endswith("nixos-wsl-twin"), f"after {how}: /nix is still the bind")
        m.wait_until_succeeds(f"findmnt {MOUNT_POINT}", timeout=20)
        check(len(mounts_at(m, MOUNT_POINT)) == 1, f"after {how}: one mount at {MOUNT_POINT}")
        m.succeed("wsl-storage-mount status")
        log(f"after the peer's {how}: back, " + m.succeed("journalctl -b -u wsl-storage-mount-keep.service | tail -2"))
    check(not failed_units(m), f"failed units: {failed_units(m)}")
