#!/usr/bin/env python3
"""Benchmark: finding the disk by fsUuid without udev links (every block
device probed, as on NixOS-WSL with udev off), with libblkid.

Prints figures; asserts nothing. Needs root, a release build
(cargo build --release), util-linux and e2fsprogs.

  bench/probe.py [--runs 30] [--devices 8] [--baseline PATH]

Each run: `wsl-storage-mount mount` (fsck off) in a fresh private mount
namespace with a private /run and an empty /dev/disk, so the helper probes
every block device to find the one ext4 loop device with the configured
UUID among `--devices` ext4 loop devices; from spawn to exit 0. The
namespace takes the mount away. `--baseline` runs another build of the
helper (e.g. one from before libblkid) in the same loop, interleaved.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(HERE, "target", "release", "wsl-storage-mount")


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def pct(values, p):
    s = sorted(values)
    return s[max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))]


def summary(name, ms):
    print(f"{name:<34} n={len(ms):<3} median={statistics.median(ms):7.1f} ms  "
          f"p95={pct(ms, 95):7.1f} ms  mean={statistics.mean(ms):7.1f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--devices", type=int, default=8)
    ap.add_argument("--baseline", help="another helper binary to time the same way")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/probe.py needs root (loop devices, namespaces)")
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release")
    bins = [("libblkid (this tree)", BIN)]
    if args.baseline:
        bins.append((f"baseline ({os.path.basename(args.baseline)})", args.baseline))

    loops = []
    with tempfile.TemporaryDirectory(prefix="wsm-bench-probe-") as tmp:
        try:
            uuid = None
            for i in range(args.devices):
                img = os.path.join(tmp, f"d{i}.img")
                with open(img, "wb") as f:
                    f.truncate(32 << 20)
                sh("mkfs.ext4", "-q", "-F", img)
                loops.append(sh("losetup", "--find", "--show", img).strip())
                uuid = sh("blkid", "-p", "-s", "UUID", "-o", "value", img).strip()
            # The wanted disk is the last one attached.
            cfg = os.path.join(tmp, "config.json")
            with open(cfg, "w") as f:
                json.dump({"fsUuid": uuid, "mountPoint": os.path.join(tmp, "mnt"),
                           "waitTimeout": 5, "fsck": False,
                           "logFile": os.path.join(tmp, "log")}, f)
            blocks = len(os.listdir("/sys/class/block"))
            print(f"{args.devices} ext4 loop devices, {blocks} block devices on the machine, "
                  f"{args.runs} runs each, interleaved")
            times = {name: [] for name, _ in bins}
            for _ in range(args.runs):
                for name, binary in bins:
                    script = ("mount -t tmpfs t /run && { [ ! -d /dev/disk ] || mount -t tmpfs t /dev/disk; } && "
                              f"exec {binary} --config {cfg} mount")
                    t0 = time.perf_counter()
                    r = subprocess.run(["unshare", "-m", "--propagation", "private",
                                        "sh", "-c", script], capture_output=True, text=True)
                    ms = (time.perf_counter() - t0) * 1000
                    if r.returncode != 0:
                        sys.exit(f"{name}: exit {r.returncode}\n{r.stderr}")
                    times[name].append(ms)
            for name, _ in bins:
                summary(name, times[name])
        finally:
            for node in loops:
                subprocess.run(["losetup", "-d", node], capture_output=True)


if __name__ == "__main__":
    main()
