"""The boot twin's figures (printed, never asserted): boot to
multi-user.target with and without the module, hot-plug to nix-daemon
ready, and boot to the first shell with the disk missing (fallback).

    scripts/twin.sh --bench [--runs N]
    (or python3 checks/twin/bench.py --image DIR --helper BIN --lib LIB ...)

Times are the guest's own clock (CLOCK_MONOTONIC since the kernel started,
as systemd records a unit's activation): under QEMU's TCG the guest runs
several times slower than on a real WSL2 VM, so read the rows against each
other, not as what a user waits.
"""

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
from harness import default_settings  # noqa: E402


def mono_s(m, unit, prop="ActiveEnterTimestampMonotonic"):
    return int(m.succeed(f"systemctl show -P {prop} {unit}").strip()) / 1e6


def multi_user_s(m):
    """When multi-user.target was reached, once the boot is over."""
    m.wait_for_boot()
    return mono_s(m, "multi-user.target")


def boot_finished_s(m):
    """When the boot was over (what WSL waits for before the first shell):
    systemd's own record of the end of its start-up."""
    m.wait_for_boot()
    return int(m.succeed(
        "systemctl show -P UserspaceTimestampMonotonic --property=FinishTimestampMonotonic"
    ).split()[-1]) / 1e6


def one(host, name, settings, disk_at_boot, measure):
    m = harness.Machine(host, name, settings)
    try:
        m.provision()
        m.start(disk_at_boot=disk_at_boot)
        return measure(m)
    finally:
        m.shutdown()


def row(label, values, unit="s"):
    if not values:
        print(f"{label:50} (no runs)")
        return
    med = statistics.median(values)
    print(f"{label:50} n={len(values)}  median={med:7.2f} {unit}  min={min(values):7.2f}  max={max(values):7.2f}",
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", required=True)
    ap.add_argument("--helper", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--nixos-wsl", default="")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="wsm-twin-bench-"))
    host = harness.Host(args.image, args.helper, args.lib, args.nixos_wsl, workdir)
    with_module = default_settings()
    without = default_settings(wslStorageMount={"enable": False})
    fallback = default_settings(wslStorageMount={"waitTimeout": 10, "onMissing": "fallback"})
    results = {k: [] for k in ("with", "without", "hotplug", "fallback")}
    try:
        for i in range(args.runs):
            results["without"].append(one(
                host, f"without-{i}", without, True, multi_user_s))
            results["with"].append(one(
                host, f"with-{i}", with_module, True, multi_user_s))

            def hotplug(m):
                m.wait_for_agent()
                m.wait_until_succeeds(
                    "systemctl show -P ActiveState wsl-storage-mount.service | grep -qx activating")
                time.sleep(2)
                m.attach_disk()
                m.wait_for_unit("nix-daemon.socket")
                # The kernel's line for the new disk, in seconds since boot.
                line = m.succeed("dmesg | grep -m1 'Attached SCSI disk'")
                attached = float(line.split("]")[0].strip("[ "))
                return mono_s(m, "nix-daemon.socket") - attached

            results["hotplug"].append(one(
                host, f"hotplug-{i}", default_settings(wslStorageMount={"waitTimeout": 120}), False, hotplug))
            results["fallback"].append(one(host, f"fallback-{i}", fallback, False, boot_finished_s))
    finally:
        host.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    print("boot twin benchmark (QEMU TCG, guest clock; 2-core host)")
    row("boot to multi-user.target, module off", results["without"])
    row("boot to multi-user.target, module on, disk present", results["with"])
    row("disk hot-plugged -> nix-daemon.socket active", results["hotplug"])
    row("boot over (first shell), disk missing, fallback", results["fallback"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
