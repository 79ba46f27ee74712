"""missing-disk-fallback: no disk, onMissing = "fallback": nix-daemon runs on the VHDX store, the boot says degraded.

Mirrors checks/vm/missing-disk.nix (the fallback half). The helper fails
after waitTimeout (its unit failed: the boot is degraded and the journal says
why), nix.mount is skipped, and nix-daemon starts on the VHDX's store.
"""

from common import check, check_vhdx_only, daemon_store_is_disk, vhdx
from harness import default_settings

SETTINGS = default_settings(wslStorageMount={"waitTimeout": 10, "onMissing": "fallback"})
DISK_AT_BOOT = False


def test(m):
    st = m.wait_for_boot()
    check(st == "degraded", f"the boot ended {st}")
    check(m.unit_state("wsl-storage-mount.service") == "failed", "the helper failed")
    check_vhdx_only(m, "fallback")
    m.wait_for_unit("nix-daemon.socket")
    path = m.succeed("f=$(mktemp -d)/fallback-probe; date +%s%N > $f; nix-store --store daemon --add $f").strip()
    check(vhdx(m, f"test -e {path}")[0] == 0, "nix-daemon added to the VHDX store")
    check(not daemon_store_is_disk(m), "nix-daemon does not serve the disk's store")
    out = m.execute("wsl-storage-mount status")
    check(out[0] != 0, f"status is not ok without the disk:\n{out[1]}")
