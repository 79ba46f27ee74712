#!/usr/bin/env python3
"""Benchmark: the store guard on a 6,000-path closure, the database way next
to the old way, in the same run.

Prints figures; asserts nothing. Needs root, a release build
(cargo build --release), Debian's nix-bin, util-linux and e2fsprogs.

  bench/guard.py [--paths 6000] [--runs 30]

Setup (real objects): a toy system whose toplevel refers to N store paths is
built into the machine's store, imported into a Nix store on an ext4 loop
device, and booted (/run/booted-system in a private /run); everything runs
inside a private mount namespace, and nothing stays afterwards.

Measured:
  1. old guard: `nix-store --query --requisites` of the booted system (what
     the helper ran at every boot before), plus one lstat per path;
  2. `mount` with the disk already mounted, fsck off, bindMountNixStore off;
  3. the same with bindMountNixStore on: the guard asks the store's database
     (one lookup, one recursive query, one lstat per path);
  4. the guard alone: the median of 3 minus the median of 2.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(HERE, "target", "release", "wsl-storage-mount")
NIX_OPTS = ["--option", "sandbox", "false", "--option", "build-users-group", ""]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, **kw).stdout


def pct(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def summary(name, ms):
    print(f"{name:<52} n={len(ms):<3} median={statistics.median(ms):8.2f} ms  p95={pct(ms, 95):8.2f} ms")


def build_system(work, n):
    """A toplevel whose closure has about n small store paths (imported at
    evaluation, referred to in groups of 100)."""
    src = os.path.join(work, "src")
    os.makedirs(src)
    for i in range(n):
        with open(os.path.join(src, f"p{i:05d}"), "w") as f:
            f.write(f"path {i}\n")
    # In groups of 100: one environment variable may hold at most 128 KiB.
    expr = os.path.join(work, "system.nix")
    with open(expr, "w") as f:
        f.write("let mk = name: srcs: derivation { inherit name srcs; system = builtins.currentSystem;\n"
                "  builder = \"/bin/sh\"; args = [ \"-c\" \"echo $srcs > $out\" ]; };\n")
        f.write("  groups = [\n")
        for g in range(0, n, 100):
            f.write(f"    (mk \"bench-group-{g}\" [\n")
            for i in range(g, min(n, g + 100)):
                f.write(f"      {src}/p{i:05d}\n")
            f.write("    ])\n")
        f.write("  ];\nin mk \"bench-system\" groups\n")
    print(f"building a system with {n} paths (nix-build) ...", flush=True)
    return sh(f"nix-build {' '.join(repr(o) if o == '' else o for o in NIX_OPTS)} --no-out-link {expr}").strip()


def inner(args):
    """Runs inside the private mount namespace."""
    work = args.work
    system = args.system
    sh("mount -t tmpfs bench-run /run && mkdir -p /run/wsl-storage-mount")
    img = os.path.join(work, "disk.img")
    with open(img, "wb") as f:
        f.truncate(512 << 20)
    uuid = sh("cat /proc/sys/kernel/random/uuid").strip()
    sh(f"mkfs.ext4 -q -U {uuid} {img}")
    loop = sh(f"losetup --find --show {img}").strip()
    try:
        mp = os.path.join(work, "storage")
        store = os.path.join(mp, "main")
        os.makedirs(mp)
        sh(f"mount {loop} {mp}")
        uri = f"local?real={store}/store&state={store}/var/nix"
        print("importing it into the disk store ...", flush=True)
        sh(f"nix-store --export $(nix-store -qR {system}) | nix-store --store '{uri}' --import >/dev/null 2>&1")
        count = len(sh(f"nix-store --store '{uri}' -qR {system} 2>/dev/null").split())
        sh(f"ln -sfn {system} /run/booted-system")
        cfgs = {}
        for bind in (False, True):
            path = os.path.join(work, f"config-{bind}.json")
            with open(path, "w") as f:
                f.write(f'{{"fsUuid": "{uuid}", "device": "{loop}", "mountPoint": "{mp}", "fsck": false,'
                        f' "bindMountNixStore": {str(bind).lower()}, "nixStoreSubdir": "main",'
                        f' "bindTarget": "{work}/nix", "logFile": "{work}/log",'
                        f' "instanceDirs": {{"main": {{"owner": 0, "group": 0, "mode": "0755"}}}}}}')
            cfgs[bind] = path

        def timed(cmd):
            t = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True)
            ms = (time.perf_counter() - t) * 1000
            if r.returncode != 0:
                sys.exit(f"bench: {cmd} failed:\n{r.stderr.decode()}")
            return ms

        old = []
        for _ in range(args.runs):
            t = time.perf_counter()
            out = subprocess.run(["nix-store", "--store", uri, "--query", "--requisites", system],
                                 capture_output=True, text=True, check=True).stdout
            for p in out.split():
                os.lstat(os.path.join(store, "store", os.path.basename(p)))
            old.append((time.perf_counter() - t) * 1000)
        without = [timed([BIN, "--config", cfgs[False], "mount"]) for _ in range(args.runs)]
        with_guard = [timed([BIN, "--config", cfgs[True], "mount"]) for _ in range(args.runs)]
        print(f"\nclosure of the booted system: {count} paths\n")
        summary("old guard: nix-store -qR + lstat each path", old)
        summary("mount, disk present, fsck off, no store guard", without)
        summary("mount, disk present, fsck off, store guard (db)", with_guard)
        guard = statistics.median(with_guard) - statistics.median(without)
        print(f"{'store guard alone (difference of the medians)':<52}       median={guard:8.2f} ms")
    finally:
        subprocess.run(f"umount -R {work}/storage", shell=True)
        subprocess.run(["losetup", "-d", loop])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--paths", type=int, default=6000)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--system", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        return inner(args)
    if os.geteuid() != 0:
        sys.exit("bench: run as root")
    if not os.path.exists(BIN):
        sys.exit(f"bench: {BIN} missing; run `cargo build --release` first")
    work = tempfile.mkdtemp(prefix="wsm-guard-bench-")
    try:
        system = build_system(work, args.paths)
        subprocess.run(["unshare", "-m", "--propagation", "private", "--", sys.executable,
                        os.path.abspath(__file__), "--inner", "--work", work, "--system", system,
                        "--runs", str(args.runs)], check=True)
    finally:
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
