#!/usr/bin/env bash
# Builds (or finds in the cache) the boot twin's guest: a Debian trixie root
# made with debootstrap from Debian's packages, with systemd, udev, Nix and
# the kernel installed inside it, never on the host. Prints the directory that
# holds root.img, vmlinuz and initrd.img.
#
# The cache lives outside the checkout (WSM_TWIN_CACHE, default
# /var/cache/wsl-storage-mount/twin) and is keyed by this script and the files
# of guest/: a changed recipe builds a new image; older ones are removed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${WSM_TWIN_CACHE:-/var/cache/wsl-storage-mount/twin}
mirror=${WSM_TWIN_MIRROR:-http://deb.debian.org/debian}
suite=trixie

key=$(cat "$here/image.sh" $(find "$here/guest" -type f | LC_ALL=C sort) | sha256sum | cut -c1-16)
out=$cache/image-$key
if [[ -f $out/ready ]]; then
  echo "$out"
  exit 0
fi

for tool in debootstrap mkfs.ext4 unshare; do
  command -v "$tool" >/dev/null || { echo "twin image: $tool is missing (apt-get install debootstrap e2fsprogs util-linux)" >&2; exit 2; }
done

mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'cp "$log" "$cache/last-failed-build.log" 2>/dev/null; rm -rf "$work"' EXIT
root=$work/root
log=$work/build.log
started=$(date +%s)

echo "twin image: building $out (debootstrap $suite; log $log)" >&2
# Two steps, as checked in DESIGN.md: debootstrap's minbase with Nix, then
# the rest with apt inside the root (debootstrap's own configuring of
# libpam-systemd fails in its first stage). Nix (nix-setup-systemd: nix-daemon's
# socket and service), systemd and udev (udev is masked per scenario when the
# module leaves it off, as NixOS-WSL does), the kernel and its initramfs, the
# guest agent the harness drives the guest with, sqlite3 for the scenarios'
# look into the store databases.
if ! debootstrap --variant=minbase --include=nix-bin,libdbi-perl "$suite" "$root" "$mirror" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "twin image: debootstrap failed (log above)" >&2
  exit 1
fi
packages="systemd udev util-linux mount e2fsprogs kmod procps nix-setup-systemd qemu-guest-agent sqlite3 linux-image-cloud-amd64 initramfs-tools zstd"

cp -a "$here/guest/." "$root/"
chmod 0755 "$root"/usr/local/lib/twin/*

# Inside the guest root, in a mount namespace of its own (nothing mounted on
# the host): the packages, the initramfs, the units, Nix's settings. The
# drivers WSL's kernel has built in (the SCSI disk, hot-added like a
# bare-attached disk, and the virtio-serial ports) must work without udev,
# so the initramfs loads them at every boot.
cat >"$root/root/twin-setup.sh" <<SETUP
set -eu
export DEBIAN_FRONTEND=noninteractive
# Our /etc/nix/nix.conf (from guest/) over the package's.
apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold $packages
printf '%s\\n' virtio_pci virtio_blk virtio_scsi sd_mod virtio_console ext4 >>/etc/initramfs-tools/modules
echo COMPRESS=zstd >>/etc/initramfs-tools/initramfs.conf
kver=\$(ls /lib/modules | head -n1)
update-initramfs -c -k "\$kver"
# The package's own agent unit waits for a udev device; ours does not.
ln -sf /dev/null /etc/systemd/system/qemu-guest-agent.service
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \\
            fstrim.timer e2scrub_reap.service systemd-timesyncd.service; do
  ln -sf /dev/null "/etc/systemd/system/\$unit"
done
systemctl enable twin-agent.service nix-daemon.socket
echo twin >/etc/hostname
passwd -d root
SETUP
unshare -m --propagation private sh -eu -c '
  mount -t proc proc "$1/proc"
  mount --rbind /dev "$1/dev"
  mount --rbind /sys "$1/sys"
  chroot "$1" /bin/sh /root/twin-setup.sh
' sh "$root" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; echo "twin image: configuring the root failed" >&2; exit 1; }
rm "$root/root/twin-setup.sh"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages

mkdir -p "$work/out"
cp "$root"/boot/vmlinuz-* "$work/out/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/out/initrd.img"
chmod 0644 "$work/out/vmlinuz" "$work/out/initrd.img"
# The VHDX: an ext4 image of the root, sparse, with room for the scenarios.
mkfs.ext4 -q -F -L twin-root -d "$root" "$work/out/root.img" 3G >>"$log" 2>&1
cp "$log" "$work/out/build.log"
rm -rf "$out"
mv "$work/out" "$out"
trap 'rm -rf "$work"' EXIT
touch "$out/ready"
# Older images of other recipes: gone.
find "$cache" -mindepth 1 -maxdepth 1 -name 'image-*' ! -path "$out" -exec rm -rf {} +
echo "twin image: built in $(($(date +%s) - started)) s" >&2
echo "$out"
