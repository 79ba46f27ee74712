#!/usr/bin/env bash
# The boot twin's install step, run on the host before a scenario's first
# boot: what NixOS-WSL's tarball builder and the user's own preparation did
# before the first start.
#   install.sh ROOT_IMG DIR [STORAGE_IMG SUBDIR]
# - the VHDX (ROOT_IMG, a copy of the cached root image): the guest's own Nix
#   (chrooted into the image) imports DIR/closure, makes DIR/closure.toplevel
#   the system profile and runs its activation, which links /sbin/init to
#   the shim; DIR/deploy-* (later generations) and DIR/schtasks (the Windows
#   side's stand-in) are copied in for the scenario;
# - the storage disk (STORAGE_IMG), when SUBDIR is given: the closure
#   imported into the instance dir as a store of its own (store/, var/nix/db)
#   with the same system profile, as `wsl-storage-mount migrate` leaves it.
# Everything is mounted in a private mount namespace of this script: the
# loop devices go with it (autoclear), nothing stays on the host.
set -euo pipefail

if [[ ${WSM_TWIN_INSTALL_NS:-} != 1 ]]; then
  WSM_TWIN_INSTALL_NS=1 exec unshare -m --propagation private "$0" "$@"
fi
root_img=$1 dir=$2 storage_img=${3:-} subdir=${4:-}
work=$(mktemp -d)
root=$work/root
mkdir "$root"
mount -o loop "$root_img" "$root"
mount -t proc proc "$root/proc"
mount -t tmpfs tmpfs "$root/run"
mount --bind /dev "$root/dev"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

toplevel=$(cat "$dir/closure.toplevel")
in_root nix-store --import <"$dir/closure" >/dev/null
in_root nix-env -p /nix/var/nix/profiles/system --set "$toplevel"
in_root /nix/var/nix/profiles/system/activate >"$work/activate.log" 2>&1 || {
  cat "$work/activate.log" >&2
  echo "install: the activation of $toplevel failed" >&2
  exit 1
}
mkdir -p "$root/var/lib/twin" "$root/usr/local/lib/twin"
install -m 0755 "$dir/schtasks" "$root/usr/local/lib/twin/schtasks"
for f in "$dir"/deploy-*; do
  [[ -e $f ]] && cp "$f" "$root/var/lib/twin/"
done

if [[ -n $subdir ]]; then
  disk=$root/run/twin-disk
  mkdir -p "$disk"
  mount -o loop "$storage_img" "$disk"
  inst=$disk/$subdir
  mkdir -p "$inst/store" "$inst/var/nix/db" "$inst/var/nix/profiles" "$inst/var/nix/gcroots"
  chmod 0755 "$inst"
  rel=/run/twin-disk/$subdir
  in_root nix-store --store "local?real=$rel/store&state=$rel/var/nix&store=/nix/store" \
    --import <"$dir/closure" >/dev/null
  ln -sfn "$toplevel" "$inst/var/nix/profiles/system-1-link"
  ln -sfn system-1-link "$inst/var/nix/profiles/system"
  # The profiles are the store's GC roots, as in /nix/var/nix.
  ln -sfn /nix/var/nix/profiles "$inst/var/nix/gcroots/profiles"
  umount "$disk"
fi
umount "$root/dev" "$root/run" "$root/proc"
umount "$root"
rm -rf "$work"
