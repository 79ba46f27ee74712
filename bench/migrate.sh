#!/usr/bin/env bash
# Benchmark of `wsl-storage-mount migrate` against `cp -a` and `rsync -aHAX`
# copying the same Nix store between two ext4 filesystems on loop devices,
# each run from a cold cache (drop_caches before every copy), with the peak
# RSS of every copier (/usr/bin/time -v). Prints figures; asserts nothing.
#
#   sudo bench/migrate.sh [ROUNDS]        (after `cargo build --release`)
#
# The store: PATHS store paths of FILES files each (sizes 1 KiB to 96 KiB,
# about a fifth of them identical across paths), added with nix-store --add
# to a chroot store, then `nix-store --optimise` (so .links and hard links
# are there as in a real store). Needs root, nix-bin, rsync, e2fsprogs.
# Everything happens in a private mount namespace under $BENCH_DIR
# (default /var/tmp/wsm-bench), removed at the end.
set -euo pipefail

ROUNDS=${1:-2}
PATHS=${PATHS:-100}
FILES=${FILES:-210}
BENCH_DIR=${BENCH_DIR:-/var/tmp/wsm-bench}
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$REPO/target/release/wsl-storage-mount}

if [ "$(id -u)" != 0 ]; then echo "run as root" >&2; exit 1; fi
for t in nix-store rsync mkfs.ext4 losetup /usr/bin/time python3; do
  command -v "$t" >/dev/null || { echo "missing: $t" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "build first: cargo build --release ($BIN)" >&2; exit 1; }

# Re-run in a private mount namespace: every mount goes away with it.
if [ -z "${WSM_BENCH_INNER:-}" ]; then
  mkdir -p "$BENCH_DIR"
  rc=0
  WSM_BENCH_INNER=1 unshare -m --propagation private -- "$0" "$@" || rc=$?
  for img in "$BENCH_DIR"/src.img "$BENCH_DIR"/dst.img; do
    for dev in $(losetup -j "$img" -O NAME -n 2>/dev/null); do losetup -d "$dev" || true; done
  done
  rm -rf "$BENCH_DIR"
  exit $rc
fi

mount -t tmpfs bench-run /run
cd "$BENCH_DIR"
truncate -s 3G src.img dst.img
mkfs.ext4 -q -F src.img
SRC_DEV=$(losetup --find --show src.img)
DST_DEV=$(losetup --find --show dst.img)
mkdir -p src dst
mount "$SRC_DEV" src

echo "building a synthetic store: $PATHS paths x $FILES files ..." >&2
python3 - "$PATHS" "$FILES" <<'EOF'
import os, random, sys
paths, files = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(42)
shared = [os.urandom(rnd.randint(1024, 96 * 1024)) for _ in range(files // 5)]
for p in range(paths):
    d = f"gen/pkg{p:03d}"
    os.makedirs(f"{d}/lib", exist_ok=True)
    for f in range(files):
        if f < len(shared):
            data = shared[f]          # the same in every path: hard links after --optimise
        else:
            data = os.urandom(rnd.randint(1024, 96 * 1024))
        with open(f"{d}/lib/f{f}", "wb") as fh:
            fh.write(data)
    os.symlink("lib/f0", f"{d}/first")
EOF
STORE="local?root=$BENCH_DIR/src/root"
SYSTEM=
for d in gen/pkg*; do
  SYSTEM=$(nix-store --store "$STORE" --add "$d" 2>/dev/null)
done
rm -rf gen
nix-store --store "$STORE" --optimise 2>&1 | grep -v "^warning" >&2 || true
mkdir -p src/root/nix/var/nix/profiles
ln -sfn "$SYSTEM" src/root/nix/var/nix/profiles/system

files=$(find src/root/nix -xdev | wc -l)
linked=$(find src/root/nix -xdev -type f -links +1 | wc -l)
size=$(du -sm --apparent-size src/root/nix | cut -f1)
printf 'store: %s entries, %s files with hard links, %s MiB\n' "$files" "$linked" "$size"

cat > cfg.json <<EOF
{ "device": "$DST_DEV", "mountPoint": "$BENCH_DIR/dst", "fsck": false,
  "nixStoreSubdir": "nixos-wsl-main", "logFile": "$BENCH_DIR/migrate.log",
  "instanceDirs": { "nixos-wsl-main": { "owner": "root", "group": "root", "mode": "0755" } } }
EOF

# One cold copy: fresh target filesystem, caches dropped, then the copier
# under /usr/bin/time -v. Prints "seconds rss_kib".
cold() {
  umount dst 2>/dev/null || true
  mkfs.ext4 -q -F "$DST_DEV"
  if [ "$1" != migrate ]; then mount "$DST_DEV" dst; fi
  sync
  echo 3 > /proc/sys/vm/drop_caches
  local t0 t1
  t0=$(date +%s.%N)
  case "$1" in
    migrate) /usr/bin/time -v -o time.txt "$BIN" --config cfg.json migrate --boot-root "$BENCH_DIR/src/root" --system "$SYSTEM" 2>migrate.err >/dev/null \
               || { cat migrate.err >&2; exit 1; } ;;
    cp)      /usr/bin/time -v -o time.txt cp -a src/root/nix dst/nixos-wsl-main ;;
    rsync)   /usr/bin/time -v -o time.txt rsync -aHAX --numeric-ids src/root/nix/ dst/nixos-wsl-main/ ;;
  esac
  t1=$(date +%s.%N)
  # migrate ends with syncfs (the copy is on disk before the rename makes
  # it a store); cp and rsync return with the data still in the page
  # cache. The second figure is the time until the copy is on disk.
  if [ "$1" != migrate ]; then sync -f dst; else grep -o 'plan: .*\|copied .* in [0-9.]* s' migrate.err | sed 's/^/    migrate: /' >&2 || true; fi
  local t2
  t2=$(date +%s.%N)
  local rss
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' time.txt)
  echo "$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t0" | bc) $rss"
}

declare -A SECS DURABLE RSS
for r in $(seq 1 "$ROUNDS"); do
  # Rotate the order, so no copier always runs first (or last).
  case $((r % 3)) in
    1) order="migrate cp rsync" ;;
    2) order="cp rsync migrate" ;;
    0) order="rsync migrate cp" ;;
  esac
  for tool in $order; do
    read -r s d k < <(cold "$tool")
    SECS[$tool]="${SECS[$tool]:-} $s"
    DURABLE[$tool]="${DURABLE[$tool]:-} $d"
    RSS[$tool]=$(( ${RSS[$tool]:-0} > k ? ${RSS[$tool]:-0} : k ))
    printf 'round %s  %-8s %7.2f s  (on disk %7.2f s)  rss %6.1f MiB\n' "$r" "$tool" "$s" "$d" "$(echo "$k / 1024" | bc -l)" >&2
  done
done
umount dst 2>/dev/null || true

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
echo
printf '%-28s %12s %18s %12s\n' "cold copy, $ROUNDS rounds" "median s" "median s on disk" "peak RSS"
for tool in migrate cp rsync; do
  case $tool in migrate) label="wsl-storage-mount migrate" ;; cp) label="cp -a" ;; rsync) label="rsync -aHAX" ;; esac
  declare "M_$tool=$(echo "${SECS[$tool]}" | median)"
  declare "D_$tool=$(echo "${DURABLE[$tool]}" | median)"
  m="M_$tool"; d="D_$tool"
  printf '%-28s %12.2f %18.2f %8.1f MiB\n' "$label" "${!m}" "${!d}" "$(echo "${RSS[$tool]} / 1024" | bc -l)"
done
printf 'migrate / cp -a = %.2f, on disk %.2f (target <= 1.1)\n' "$(echo "$M_migrate / $M_cp" | bc -l)" "$(echo "$D_migrate / $D_cp" | bc -l)"
printf 'migrate / rsync = %.2f, on disk %.2f (target <= 0.8)\n' "$(echo "$M_migrate / $M_rsync" | bc -l)" "$(echo "$D_migrate / $D_rsync" | bc -l)"
