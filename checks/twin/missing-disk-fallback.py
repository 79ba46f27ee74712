"""missing-disk-fallback: no disk, onMissing = "fallback": nix-daemon runs on the VHDX store, the boot says degraded.

Mirrors checks/vm/missing-disk.nix (the fallback half). After waitTimeout the
helper exits 0 with a DEGRADED warning in the journal (the boot goes on as
if the module were off), nix.mount is skipped, nix-daemon starts on the
VHDX's store, and `wsl-storage-mount status` says degraded.
"""

from common import check, check_vhdx_only, daemon_store_is_disk, state, vhdx
from harness import default_settings

SETTINGS = default_settings(wslStorageMount={"waitTimeout": 10, "onMissing": "fallback"})
DISK_AT_BOOT = False


def test(m):
    m.wait_for_boot()
    check(m.unit_state("wsl-storage-mount.service") == "active", "the helper went on")
    check(state(m)["outcome"] == "degraded", f"outcome degraded: {state(m)}")
    journal = m.journal("-b -u wsl-storage-mount.service")
    check("DEGRADED" in journal, f"the journal says DEGRADED:\n{journal}")
    check_vhdx_only(m, "fallback")
    m.wait_for_unit("nix-daemon.socket")
    path = m.succeed("f=$(mktemp -d)/fallback-probe; date +%s%N > $f; nix-store --store daemon --add $f").strip()
    check(vhdx(m, f"test -e {path}")[0] == 0, "nix-daemon added to the VHDX store")
    check(not daemon_store_is_disk(m), "nix-daemon does not serve the disk's store")
    rc, out = m.execute("wsl-storage-mount status")
    check(rc != 0 and "degraded" in out.lower(), f"status says degraded (exit {rc}):\n{out}")
