"""late-disk: the disk is attached 8 s after the instance starts; the helper waits for it.

Mirrors checks/vm/late-disk.nix. The helper finds the disk from the kernel's
uevents without udev (fsUuid) when it is hot-plugged during its wait; the
boot holds local-fs.target until then and the chain comes up as with the disk
present.
"""

import threading
import time

from common import check, check_storage_up, state
from harness import default_settings

SETTINGS = default_settings(wslStorageMount={"waitTimeout": 90})
DISK_AT_BOOT = False


def test(m):
    def attach_later():
        time.sleep(8)
        m.attach_disk()

    threading.Thread(target=attach_later, daemon=True).start()
    m.wait_for_boot()
    check_storage_up(m, "disk attached during the wait")
    check(state(m)["waitedMs"] > 0, f"the helper waited: {state(m)}")
