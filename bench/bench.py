#!/usr/bin/env python3
"""Benchmark: how fast `wsl-storage-mount mount` reacts, next to the original
guide's design (poll every 2 s, 30 tries), in the same run.

Prints figures; asserts nothing. Needs root, a release build
(cargo build --release), util-linux and e2fsprogs.

  bench/bench.py [--runs 20] [--baseline-runs 10]

Measured, each on a real ext4 loop device inside a private mount namespace:
  1. link-to-exit: the helper is already waiting; the clock starts right
     before the by-id-style link is created and stops when `mount` exits 0.
  2. present: the device is already there (fsck off): from spawning the
     helper to its exit 0.
  3. the same as 1 for the guide's shell loop (`[ -e link ] || sleep 2`).
  4. peak RSS of the helper, as GNU time reports it (a process spawned
     straight from Python would count Python's own pages).
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


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def pct(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def summary(name, ms):
    print(f"{name:<44} n={len(ms):<3} median={statistics.median(ms):8.1f} ms  "
          f"p95={pct(ms, 95):8.1f} ms  mean={statistics.mean(ms):8.1f} ms  max={max(ms):8.1f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--baseline-runs", type=int, default=10)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    if not os.access("/usr/bin/time", os.X_OK):
        sys.exit("bench: GNU time is missing (apt-get install time)")
    if not os.path.exists(BIN):
        sys.exit(f"bench: {BIN} missing; run `cargo build --release` first")

    work = tempfile.mkdtemp(prefix="wsm-bench-")
    img = os.path.join(work, "disk.img")
    with open(img, "wb") as f:
        f.truncate(256 << 20)
    sh("mkfs.ext4", "-q", "-L", "bench", img)
    loop = sh("losetup", "--find", "--show", img).strip()
    os.makedirs("/run/wsl-storage-mount", exist_ok=True)
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "--",
                               "sh", "-c", "mount -t tmpfs bench /run/wsl-storage-mount && exec sleep 3600"])
    try:
        # Wait for the namespace to be ready.
        for _ in range(500):
            try:
                if open(f"/proc/{holder.pid}/comm").read().strip() == "sleep":
                    break
            except OSError:
                pass
            time.sleep(0.01)
        ns = ["nsenter", "-t", str(holder.pid), "-m", "--"]
        rss_file = os.path.join(work, "rss")
        timed = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + ns
        links = os.path.join(work, "by-id")
        os.makedirs(links)
        link = os.path.join(links, "nvme-FAKE_NVMe_BENCH")
        mp = os.path.join(work, "storage")
        log = os.path.join(work, "wsl-mount.log")
        cfg = os.path.join(work, "config.json")
        with open(cfg, "w") as f:
            json.dump({"device": link, "mountPoint": mp, "waitTimeout": 30, "fsck": False,
                       "logFile": log,
                       "instanceDirs": {"nixos-wsl-main": {"owner": 0, "group": 0, "mode": "0755"}}}, f)

        def umount():
            subprocess.run(ns + ["umount", mp], capture_output=True)

        def wait_for_log(marker, count):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    if open(log).read().count(marker) >= count:
                        return
                except OSError:
                    pass
                time.sleep(0.002)
            raise RuntimeError("helper did not start waiting")

        # 1. link appears while the helper waits.
        ours, rss = [], []
        for i in range(args.runs):
            umount()
            if os.path.lexists(link):
                os.unlink(link)
            p = subprocess.Popen(timed + [BIN, "--config", cfg, "mount"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_log("waiting up to", i + 1)
            time.sleep(0.05)
            t0 = time.perf_counter()
            os.symlink(loop, link)
            p.wait()
            t1 = time.perf_counter()
            if p.returncode != 0:
                raise RuntimeError(f"mount exited {p.returncode}")
            ours.append((t1 - t0) * 1000)
            rss.append(int(open(rss_file).read().split()[-1]) / 1024)

        # 2. device already present, fsck off.
        present = []
        for _ in range(args.runs):
            umount()
            t0 = time.perf_counter()
            p = subprocess.Popen(timed + [BIN, "--config", cfg, "mount"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            p.wait()
            t1 = time.perf_counter()
            if p.returncode != 0:
                raise RuntimeError("mount failed")
            present.append((t1 - t0) * 1000)
            rss.append(int(open(rss_file).read().split()[-1]) / 1024)

        # 3. the original guide's loop: 30 tries, 2 s apart.
        guide = (f'for i in $(seq 30); do if [ -e "{link}" ]; then '
                 f'mount -o noatime "{link}" "{mp}" && mkdir -p "{mp}/nixos-wsl-main" && exit 0; fi; '
                 f'sleep 2; done; exit 1')
        base = []
        for _ in range(args.baseline_runs):
            umount()
            os.unlink(link)
            p = subprocess.Popen(ns + ["sh", "-c", guide])
            # The link appears at a random moment of the poll cycle.
            time.sleep(0.3 + 2 * (len(base) / max(1, args.baseline_runs)))
            t0 = time.perf_counter()
            os.symlink(loop, link)
            p.wait()
            t1 = time.perf_counter()
            if p.returncode != 0:
                raise RuntimeError("guide loop failed")
            base.append((t1 - t0) * 1000)
        umount()

        print(f"wsl-storage-mount benchmark ({os.cpu_count()} cores, {loop}, ext4, fsck off)")
        summary("link appears -> mount exits 0 (ours)", ours)
        summary("link appears -> mounted (guide: poll 2 s)", base)
        summary("device present -> mount exits 0 (ours)", present)
        print(f"{'peak RSS of the helper':<44} max={max(rss):.1f} MB  median={statistics.median(rss):.1f} MB")
        print(f"speed-up on link-to-exit: {statistics.median(base) / statistics.median(ours):.0f}x (median)")
    finally:
        holder.kill()
        holder.wait()
        subprocess.run(["losetup", "-d", loop])
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
