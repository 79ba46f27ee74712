#!/usr/bin/env bash
# Runs the twin generations' activate and switch-to-configuration on the host,
# in a private mount namespace: a tmpfs /run, and overlays on /etc, /usr and
# /var whose changes land in a scratch directory, so nothing reaches the host.
# systemctl there is a stand-in that logs what it is asked and says "active"
# for the units a step lists, so switch-to-configuration's choices (stop,
# reload, restart, start, leave alone) are checked without a running systemd
# (the VM scenarios run the real one).
#
#   cargo build --release && sudo checks/twin/activate-check.sh
#
# Env: HELPER, NIXPKGS_LIB as for render-check.sh.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
helper=${HELPER:-$root/target/release/wsl-storage-mount}
lib=${NIXPKGS_LIB:-$root/../shared/nixpkgs-lib/lib}

[ "$(id -u)" = 0 ] || {
  echo "activate-check: needs root (a mount namespace with overlays)" >&2
  exit 2
}
[ -x "$helper" ] || {
  echo "activate-check: no helper at $helper: run \`cargo build --release\` first (or set HELPER)" >&2
  exit 2
}
helper=$(realpath "$helper")

scratch=$(mktemp -d)
# What this check built (written by `build`, which runs in a subshell).
built=$scratch/built
: >"$built"
# shellcheck source=checks/twin/delete-paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/delete-paths.sh"
cleanup() {
  # The paths this check built, and their derivations and sources.
  if [ -s "$built" ]; then
    mapfile -t paths < <(while read -r p; do nix-store -qR "$p"; done <"$built" 2>/dev/null | sort -u)
    delete_paths activate-check "${paths[@]}"
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

export NIX_CONFIG="build-users-group =
sandbox = false"

build() { # generation settings-json -> toplevel
  local drv out
  drv=$(nix-instantiate "$root/checks/twin/system.nix" --argstr libPath "$lib" \
    --argstr helperBinary "$helper" --argstr settingsJson "$2" --argstr generation "$1" \
    2>"$scratch/eval.log") || {
    cat "$scratch/eval.log" >&2
    exit 1
  }
  echo "$drv" >>"$built"
  out=$(nix-store --realise "$drv" 2>"$scratch/build.log") || {
    cat "$scratch/build.log" >&2
    exit 1
  }
  echo "$out" >>"$built"
  echo "$out"
}

# 1: the disk by filesystem UUID (no udev), onMissing block.
gen1=$(build 1 '{"networking":{"hostName":"twin"},"wslStorageMount":{"enable":true,
  "fsUuid":"0b5e7c1a-3f7e-4d4e-9a51-2c3c0e7d9f11","diskSerialNumber":"TWINDISK01",
  "onMissing":"block","logFile":"/run/twin-check.log"}}')
# 2: by udev link (the module turns udev on), onMissing fallback, another
# host name (so another store subdirectory: nix.mount's What changes).
gen2=$(build 2 '{"networking":{"hostName":"twin2"},"wslStorageMount":{"enable":true,
  "deviceId":"scsi-0QEMU_QEMU_HARDDISK_TWINDISK01","diskSerialNumber":"TWINDISK01",
  "onMissing":"fallback","logFile":"/run/twin-check.log"}}')
# 3: the module off.
gen3=$(build 3 '{"networking":{"hostName":"twin2"},"wslStorageMount":{"enable":false}}')

cat >"$scratch/inner.sh" <<'EOF'
set -eu
scratch=$1 gen1=$2 gen2=$3 gen3=$4 helper=$5
for d in etc usr var; do
  mkdir -p "$scratch/$d.upper" "$scratch/$d.work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$scratch/$d.upper,workdir=$scratch/$d.work" "/$d"
done
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system
# The units the guest has from Debian's nix-setup-systemd, which the
# systems amend with drop-ins (minimal ones like them).
mkdir -p /usr/lib/systemd/system
printf '[Unit]\nDescription=Nix Daemon Socket\n[Socket]\nListenStream=/nix/var/nix/daemon-socket/socket\n' \
  >/usr/lib/systemd/system/nix-daemon.socket
printf '[Unit]\nDescription=Nix Daemon\nRequires=nix-daemon.socket\n[Service]\nExecStart=/usr/bin/nix-daemon\n' \
  >/usr/lib/systemd/system/nix-daemon.service
# The systemctl stand-in: logs every call; ActiveState from $scratch/active.
cat >/usr/bin/systemctl <<'SH'
#!/bin/sh
echo "$*" >>SCRATCH/systemctl.log
if [ "$1" = show ] && [ "$2" = -P ] && [ "$3" = ActiveState ]; then
  if grep -qxF -- "$5" SCRATCH/active 2>/dev/null; then echo active; else echo inactive; fi
fi
exit 0
SH
sed -i "s|SCRATCH|$scratch|g" /usr/bin/systemctl
chmod +x /usr/bin/systemctl

failed=0
check() { # description, command...
  what=$1
  shift
  if "$@"; then echo "ok: $what"; else echo "FAIL: $what" >&2; failed=1; fi
}
links_to() { [ "$(readlink "$1")" = "$2" ]; }
logged() { grep -qxF -- "$1" "$scratch/systemctl.log"; }
# What was asked of a unit (not the state queries).
not_logged() { ! grep -v '^show ' "$scratch/systemctl.log" | grep -qF -- "$1"; }
units=/etc/systemd/system

# Generation 1, activated as the shim does at boot.
: >"$scratch/systemctl.log"
check "gen1 activate exits 0" "$gen1/activate"
check "/run/booted-system -> gen1" links_to /run/booted-system "$gen1"
check "/run/current-system -> gen1" links_to /run/current-system "$gen1"
check "/etc/static -> gen1/etc" links_to /etc/static "$gen1/etc"
check "/sbin/init is the shim" [ "$(readlink -f /sbin/init)" = "$(readlink -f "$gen1/init")" ]
for u in wsl-storage-mount.service nix.mount nix-mount-marker.service; do
  check "$u linked through /etc/static" links_to "$units/$u" "/etc/static/systemd/system/$u"
  check "$u is gen1's" cmp -s "$units/$u" "$gen1/etc/systemd/system/$u"
  check "local-fs.target wants $u" [ -e "$units/local-fs.target.wants/$u" ]
done
check "nix-daemon.service drop-in" cmp -s "$units/nix-daemon.service.d/overrides.conf" "$gen1/etc/systemd/system/nix-daemon.service.d/overrides.conf"
check "nix-daemon.socket drop-in" [ -e "$units/nix-daemon.socket.d/overrides.conf" ]
for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-udev-trigger.service; do
  check "$u masked (udev off)" links_to "$units/$u" /dev/null
done
check "/usr/local/bin/wsl-storage-mount is the helper" cmp -s /usr/local/bin/wsl-storage-mount "$helper"
check "systemd reloaded" logged daemon-reload

# Generation 2 by `switch-to-configuration test` with gen1's units active.
printf '%s\n' wsl-storage-mount.service nix.mount nix-mount-marker.service \
  nix-daemon.service nix-daemon.socket local-fs.target >"$scratch/active"
: >"$scratch/systemctl.log"
"$gen2/bin/switch-to-configuration" test >"$scratch/stc2.log" 2>&1 || { cat "$scratch/stc2.log"; failed=1; }
cat "$scratch/stc2.log"
check "gen2: /run/current-system -> gen2" links_to /run/current-system "$gen2"
check "gen2: /run/booted-system still gen1" links_to /run/booted-system "$gen1"
check "gen2: changed nix.mount reloaded, not restarted" logged "reload -- nix.mount"
check "gen2: wsl-storage-mount.service left alone (X-RestartIfChanged=false)" not_logged " wsl-storage-mount.service"
check "gen2: nix-mount-marker.service left alone (X-RestartIfChanged=false)" not_logged " nix-mount-marker.service"
check "gen2: nix-daemon stopped with its socket" logged "stop -- nix-daemon.socket nix-daemon.service"
check "gen2: nix-daemon's socket started again (socket-activated)" grep -q "^start -- .*nix-daemon.socket" "$scratch/systemctl.log"
check "gen2: local-fs.target started again" grep -q "^start -- .*local-fs.target" "$scratch/systemctl.log"
check "gen2: udev unmasked (deviceId needs it)" [ ! -L "$units/systemd-udevd.service" ]
check "gen2: units are gen2's" cmp -s "$units/nix.mount" "$gen2/etc/systemd/system/nix.mount"

# `boot`: only the boot loader step, the module's (`true`, then the helper's
# sync-boot, which finds /nix not bound here and does nothing); no
# activation, no unit touched.
: >"$scratch/systemctl.log"
check "gen2 boot exits 0" "$gen2/bin/switch-to-configuration" boot >"$scratch/boot2.log" 2>&1
cat "$scratch/boot2.log"
check "gen2 boot ran the helper's sync-boot with the toplevel" grep -q "sync-boot: " "$scratch/boot2.log"
check "gen2 boot did not activate" [ ! -s "$scratch/systemctl.log" ]
check "switch-to-configuration refuses an unknown action" sh -c '! "$1/bin/switch-to-configuration" dry-run 2>/dev/null' _ "$gen2"

# Generation 3 (module off) by `switch-to-configuration test`.
: >"$scratch/systemctl.log"
"$gen3/bin/switch-to-configuration" test >"$scratch/stc3.log" 2>&1 || { cat "$scratch/stc3.log"; failed=1; }
cat "$scratch/stc3.log"
check "gen3: nix.mount not stopped (X-StopOnRemoval=false)" not_logged "nix.mount"
check "gen3: wsl-storage-mount.service not stopped (X-StopOnRemoval=false)" not_logged "wsl-storage-mount.service"
check "gen3: nix-mount-marker.service stopped" grep -q "^stop -- .*nix-mount-marker.service" "$scratch/systemctl.log"
check "gen3: nix-daemon (its drop-in gone) stopped with its socket" grep -q "^stop -- .*nix-daemon.service" "$scratch/systemctl.log"
check "gen3: nix-daemon's socket started again" grep -q "^start -- .*nix-daemon.socket" "$scratch/systemctl.log"
check "gen3: gen2's unit links removed" [ ! -e "$units/nix.mount" ] && [ ! -L "$units/nix.mount" ]
check "gen3: gen2's .wants links removed" [ ! -L "$units/local-fs.target.wants/nix.mount" ]
check "gen3: drop-in dirs removed" [ ! -e "$units/nix-daemon.service.d" ]
exit $failed
EOF

unshare --mount --propagation private bash "$scratch/inner.sh" "$scratch" "$gen1" "$gen2" "$gen3" "$helper"
echo "activate-check: ok"
