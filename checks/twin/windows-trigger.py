"""windows-trigger: the disk is missing at boot; the helper starts the Windows task, which attaches it.

Mirrors checks/vm/windows-trigger.nix. windows.trigger = "task" with
schtasksPath set to the guest's stand-in for schtasks.exe, which writes the
task's name to a virtio-serial port; the harness reads it and hot-plugs the
disk, as the elevated task's `wsl --mount --bare` would. The chain comes up.
"""

from common import check, check_storage_up, state
from harness import default_settings

SETTINGS = default_settings(wslStorageMount={
    "waitTimeout": 120,
    "windows": {
        "trigger": "task",
        "taskName": "wsl-storage-mount",
        "schtasksPath": "/usr/local/lib/twin/schtasks",
    },
})
DISK_AT_BOOT = False


def test(m):
    m.wait_for_boot()
    check_storage_up(m, "disk attached by the task")
    check(m.windows_runs == ["wsl-storage-mount"], f"the task was started once: {m.windows_runs}")
    calls = m.succeed("cat /run/twin-schtasks/calls")
    check("/Run /TN wsl-storage-mount" in calls, f"schtasks /Run called:\n{calls}")
    check(state(m)["windowsTriggers"], f"the state file records the trigger: {state(m)}")
