"""quota: project quotas per instance dir stop writes past the limit in that dir only.

Issue 19 item 3, under the twin's kernel (Debian's, with quota format v2;
the kernel of the machine that runs tests/instances.rs may lack it). Needs
the storage disk to have the quota and project features: TUNE2FS below is
run as `tune2fs TUNE2FS <storage.img>` after the install step (a hook of
harness.Machine.provision).
Root's writes pass any ext4 quota (CAP_SYS_RESOURCE): the writes here drop
that capability, as a build user or a user has none.
"""

import json

from common import check, check_storage_up, failed_units
from harness import default_settings, log

TUNE2FS = "-O quota,project"
SETTINGS = default_settings()
SETTINGS["wslStorageMount"]["instanceDirs"] = {
    "nixos-wsl-twin": {"quota": "2G"},
    "dev": {"quota": "8M", "inodeQuota": 100},
    "free": {},
}


def test(m):
    state = m.wait_for_boot()
    check_storage_up(m, "boot")
    check(state == "running", f"the boot ended {state}, failed units: {failed_units(m)}")
    log("journal: " + m.succeed("journalctl -b -u wsl-storage-mount.service | grep -iE 'quota|project' || true"))
    st = json.loads(m.succeed("wsl-storage-mount status --json"))
    log("quotas: " + json.dumps(st["quotas"]))
    check(st["quotas"], "no project quotas on the disk: the harness did not run tune2fs with TUNE2FS")
    check(st["quotas"]["dev"]["limitBytes"] == 8 << 20, f"dev limit: {st['quotas']}")
    check(st["quotas"]["nixos-wsl-twin"]["usedBytes"] > 1 << 20, f"the store is counted: {st['quotas']}")
    doc = json.loads(m.succeed("wsl-storage-mount doctor --json 2>/dev/null || true"))
    levels = {c["id"]: c["level"] for c in doc["checks"] if c["id"].startswith("quota:")}
    check(levels == {"quota:dev": "ok", "quota:nixos-wsl-twin": "ok"}, f"doctor's quota checks: {levels}")
    out = m.fail("setpriv --bounding-set=-sys_resource dd if=/dev/zero of=/mnt/wsl/storage/dev/big bs=1M count=16 conv=fsync 2>&1")
    check("Disk quota exceeded" in out, f"dev past its quota: {out}")
    m.succeed("mkdir /mnt/wsl/storage/dev/sub && touch /mnt/wsl/storage/dev/sub/f")
    out = m.fail("setpriv --bounding-set=-sys_resource sh -c 'for i in $(seq 1 200); do touch /mnt/wsl/storage/dev/sub/n$i || exit 1; done' 2>&1")
    check("Disk quota exceeded" in out, f"dev past its inode quota: {out}")
    m.succeed("setpriv --bounding-set=-sys_resource dd if=/dev/zero of=/mnt/wsl/storage/free/big bs=1M count=16 conv=fsync")
    st = json.loads(m.succeed("wsl-storage-mount status --json"))
    log("quotas after: " + json.dumps(st["quotas"]))
    log("status: " + m.succeed("wsl-storage-mount status || true"))
