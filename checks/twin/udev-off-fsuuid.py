"""udev-off-fsuuid: NixOS-WSL's default, udev off, the disk named by fsUuid: found without any /dev/disk link.

Mirrors checks/vm/boot-present.nix with NixOS-WSL's udev setting (the VM
tests run with udev). udev's units are masked (as NixOS-WSL has none), so
there is no /dev/disk and no .device unit; the helper finds the disk by
probing the block devices the kernel announces.
"""

from common import check, check_storage_up, state
from harness import default_settings

SETTINGS = default_settings(services={"udev": {"enable": False}})


def test(m):
    m.wait_for_boot()
    check(m.unit_state("systemd-udevd.service") != "active", "udev is off")
    m.fail("test -e /dev/disk/by-uuid")
    check_storage_up(m, "udev off")
    check(state(m)["foundVia"], f"found via: {state(m)}")
