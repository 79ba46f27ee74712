#!/usr/bin/env bash
# The main job, end to end, on a throw-away fake disk: build the helper, make
# an ext4 image, attach it to a loop device, give it a by-id link the way
# udev would for an NVMe disk, then run `wsl-storage-mount mount` and
# `status` exactly as the boot service does. Everything happens in a private
# mount namespace, so nothing is left mounted on this machine afterwards;
# the loop device is detached on exit.
#
# Needs root, cargo, util-linux (unshare, losetup) and e2fsprogs (mkfs.ext4).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it attaches a loop device and mounts it)" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")/.." && pwd)

if [ "${1:-}" != "--inside" ]; then
  for tool in cargo unshare losetup mkfs.ext4; do
    command -v "$tool" >/dev/null || { echo "demo: $tool is missing (apt-get install util-linux e2fsprogs; Rust from rustup.rs)" >&2; exit 2; }
  done
  (cd "$here" && cargo build --release --quiet)
  work=$(mktemp -d /tmp/wsl-storage-mount-demo.XXXXXX)
  truncate -s 256M "$work/disk.img"
  uuid=$(cat /proc/sys/kernel/random/uuid)
  mkfs.ext4 -q -U "$uuid" -L wsl-storage "$work/disk.img"
  loop=$(losetup --find --show "$work/disk.img")
  trap 'losetup -d "$loop" 2>/dev/null || true; rm -rf "$work"' EXIT
  mkdir -p /dev/disk /run/wsl-storage-mount
  # A private mount namespace: the mounts below vanish with it.
  unshare -m --propagation private -- "$0" --inside "$work" "$loop" "$uuid"
  echo
  echo "demo: done; the namespace is gone, so are its mounts; $loop is being detached"
  exit 0
fi

work=$2 loop=$3 uuid=$4
bin="$here/target/release/wsl-storage-mount"
# Play udev: an empty /dev/disk with one NVMe-style by-id link, and a
# private /run/wsl-storage-mount for the state file and the stamp.
mount -t tmpfs demo-disk /dev/disk
mkdir -p /dev/disk/by-id
ln -s "$loop" /dev/disk/by-id/nvme-FAKE_NVMe_DEMO0001
mount -t tmpfs demo-run /run/wsl-storage-mount

cat > "$work/config.json" <<JSON
{
  "deviceId": "nvme-FAKE_NVMe_DEMO0001",
  "fsUuid": "$uuid",
  "mountPoint": "$work/storage",
  "mountOptions": ["noatime"],
  "waitTimeout": 10,
  "fsck": true,
  "instanceDirs": {
    "nixos-wsl-main": { "owner": "root", "group": "root", "mode": "0755" },
    "nixos-wsl-dev":  { "owner": 1000,   "group": 100,    "mode": "0750" },
    "shared":         { "owner": "root", "group": "root", "mode": "1777" }
  },
  "logFile": "$work/wsl-mount.log"
}
JSON

echo "== config ($work/config.json)"
cat "$work/config.json"
echo
echo "== wsl-storage-mount check"
"$bin" --config "$work/config.json" check
echo
echo "== wsl-storage-mount mount"
"$bin" --config "$work/config.json" mount
echo
echo "== wsl-storage-mount mount (again: changes nothing)"
"$bin" --config "$work/config.json" mount
echo
echo "== findmnt $work/storage"
findmnt -o SOURCE,TARGET,FSTYPE,OPTIONS "$work/storage"
echo
echo "== instance dirs"
stat -c '%n  owner %u  group %g  mode %a' "$work/storage"/*/ | sed "s|$work/||"
echo
echo "== wsl-storage-mount status"
"$bin" --config "$work/config.json" status
echo
echo "== log file"
cat "$work/wsl-mount.log"
