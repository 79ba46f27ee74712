"""udev-on-by-id: the disk named by a by-id link: the module turns udev on and the helper waits for the link.

Mirrors checks/vm/qemu-nvme.nix (a disk found by its by-id name). A bare-
attached disk is SCSI, so its by-id name is scsi-..., made by udev from the
serial; the module turns udev on for deviceId and orders the helper after
udev's trigger.
"""

from common import check, check_storage_up, findmnt, MOUNT_POINT
from harness import DISK_SERIAL, default_settings

BY_ID = f"scsi-0QEMU_QEMU_HARDDISK_{DISK_SERIAL}"
SETTINGS = default_settings(wslStorageMount={"fsUuid": None, "deviceId": BY_ID})


def test(m):
    m.wait_for_boot()
    m.wait_for_unit("systemd-udevd.service")
    m.succeed(f"test -b /dev/disk/by-id/{BY_ID}")
    check_storage_up(m, "by-id")
    dev = m.succeed(f"readlink -f /dev/disk/by-id/{BY_ID}").strip()
    check(findmnt(m, "SOURCE", MOUNT_POINT) == dev, f"mounted from {dev}")
