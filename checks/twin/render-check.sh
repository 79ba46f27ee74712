#!/usr/bin/env bash
# Builds a twin generation (checks/twin/system.nix) on the host, without the
# VM, for sample settings (or the JSON given as $1), and checks it:
# systemd-analyze verify on the rendered units, the layout the guest relies
# on, and an export of the whole closure imported into a scratch store.
# Prints the unit texts. Everything it adds to the host's store it deletes.
#
#   cargo build --release && checks/twin/render-check.sh ['{"wslStorageMount": ...}']
#
# Env: HELPER (default target/release/wsl-storage-mount), NIXPKGS_LIB
# (default ../shared/nixpkgs-lib/lib), GENERATION (default 1).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
helper=${HELPER:-$root/target/release/wsl-storage-mount}
lib=${NIXPKGS_LIB:-$root/../shared/nixpkgs-lib/lib}
generation=${GENERATION:-1}
settings=${1:-'{
  "networking": { "hostName": "twin" },
  "wslStorageMount": {
    "enable": true,
    "fsUuid": "0b5e7c1a-3f7e-4d4e-9a51-2c3c0e7d9f11",
    "diskSerialNumber": "TWINDISK01",
    "onMissing": "block",
    "windows": {
      "trigger": "task",
      "taskName": "wsl-storage-mount-twin",
      "schtasksPath": "/usr/local/lib/twin/schtasks"
    }
  }
}'}

[ -x "$helper" ] || {
  echo "render-check: no helper at $helper: run \`cargo build --release\` first (or set HELPER)" >&2
  exit 2
}
[ -e "$lib/default.nix" ] || {
  echo "render-check: no nixpkgs lib at $lib (set NIXPKGS_LIB)" >&2
  exit 2
}
helper=$(realpath "$helper")

scratch=$(mktemp -d)
out=
drv=
# shellcheck source=checks/twin/delete-paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/delete-paths.sh"
cleanup() {
  # The paths this check built, and their derivations and sources.
  if [ -n "$drv" ]; then
    mapfile -t paths < <({
      [ -n "$out" ] && nix-store -qR "$out"
      nix-store -qR "$drv"
    } 2>/dev/null | sort -u)
    delete_paths render-check "${paths[@]}"
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT

export NIX_CONFIG="build-users-group =
sandbox = false"

drv=$(nix-instantiate "$root/checks/twin/system.nix" \
  --argstr libPath "$lib" \
  --argstr helperBinary "$helper" \
  --argstr settingsJson "$settings" \
  --argstr generation "$generation" 2>"$scratch/eval.log") || {
  cat "$scratch/eval.log" >&2
  exit 1
}
out=$(nix-store --realise "$drv" 2>"$scratch/build.log") || {
  cat "$scratch/build.log" >&2
  exit 1
}
echo "built $out"

failed=0
fail() {
  echo "FAIL: $*" >&2
  failed=1
}

# The layout the guest's shim, activation and switch-to-configuration use.
[ -x "$out/activate" ] || fail "no executable activate"
[ -x "$out/bin/switch-to-configuration" ] || fail "no executable bin/switch-to-configuration"
[ -x "$out/init" ] || fail "init is not the shim"
[ "$(readlink "$out/systemd")" = /usr ] || fail "systemd is not a link to /usr"
[ -x "$out/sw/bin/wsl-storage-mount" ] || fail "no sw/bin/wsl-storage-mount"
cmp -s "$out/sw/bin/wsl-storage-mount" "$helper" || fail "sw/bin/wsl-storage-mount is not the helper"
[ "$(cat "$out/twin-generation")" = "$generation" ] || fail "twin-generation is not $generation"
[ -e "$out/etc/wsl-storage-mount/config.json" ] || fail "no etc/wsl-storage-mount/config.json"
units=$out/etc/systemd/system
for unit in wsl-storage-mount.service nix.mount nix-mount-marker.service \
  nix-daemon.service.d/overrides.conf nix-daemon.socket.d/overrides.conf \
  local-fs.target.wants/wsl-storage-mount.service local-fs.target.wants/nix.mount \
  local-fs.target.wants/nix-mount-marker.service; do
  [ -e "$units/$unit" ] || fail "no etc/systemd/system/$unit"
done

echo
echo "== layout of $out"
(cd "$out" && find . -mindepth 1 -maxdepth 2 | sed 's|^\./||' | sort | while read -r e; do
  if [ -L "$e" ]; then echo "$e -> $(readlink "$e")"; else echo "$e"; fi
done)

echo
# Unit files and drop-ins in full; .wants entries as their links.
for f in $(cd "$units" && find -L . -mindepth 1 -maxdepth 2 | sed 's|^\./||' | sort); do
  case "$f" in
    *.wants/* | *.requires/* | *.upholds/*) echo "== etc/systemd/system/$f -> $(readlink "$units/$f")" ;;
    *.wants | *.requires | *.upholds | *.d) ;;
    *)
      echo "== etc/systemd/system/$f"
      cat "$units/$f"
      ;;
  esac
done
echo

# systemd-analyze verify (the host's systemd) on the rendered units. The
# drop-ins need the units they amend: the guest has them from Debian's
# nix-setup-systemd; here, ones with the same dependencies and sections, for
# verification only.
verify=$scratch/units
mkdir -p "$verify"
cp -rL "$units/." "$verify/"
chmod -R u+w "$verify"
# .wants entries stay links: systemd ignores any other file there.
for dir in "$verify"/*.wants "$verify"/*.requires "$verify"/*.upholds; do
  [ -d "$dir" ] || continue
  rm -rf "$dir"
  cp -P -r "$units/${dir##*/}" "$dir"
done
cat >"$verify/nix-daemon.socket" <<'EOF'
[Unit]
Description=Nix Daemon Socket
Before=multi-user.target
RequiresMountsFor=/nix/store
ConditionPathIsReadWrite=/nix/var/nix/daemon-socket
[Socket]
ListenStream=/nix/var/nix/daemon-socket/socket
[Install]
WantedBy=sockets.target
EOF
cat >"$verify/nix-daemon.service" <<'EOF'
[Unit]
Description=Nix Daemon
RequiresMountsFor=/nix/store /nix/var /nix/var/nix/db
ConditionPathIsReadWrite=/nix/var/nix/daemon-socket
[Service]
ExecStart=@/usr/bin/nix-daemon nix-daemon --daemon
KillMode=process
[Install]
WantedBy=multi-user.target
EOF
mapfile -t to_verify < <(cd "$verify" && find . -maxdepth 1 -type f -name '*.*' | sed "s|^\./|$verify/|" | sort)
echo "== systemd-analyze verify ($(systemd-analyze --version | head -n 1))"
# verify exits 0 on an ordering cycle (it breaks it and says so) and on an
# unknown key: any line it prints fails the check.
if SYSTEMD_UNIT_PATH="$verify:" systemd-analyze verify --man=no "${to_verify[@]}" >"$scratch/verify.log" 2>&1 &&
  ! [ -s "$scratch/verify.log" ]; then
  echo "verify: ok (${#to_verify[@]} units, nothing reported)"
else
  cat "$scratch/verify.log" >&2
  fail "systemd-analyze verify reported the above"
fi

# The whole closure exports and imports into another store.
echo
mapfile -t closure < <(nix-store -qR "$out")
nix-store --export "${closure[@]}" >"$scratch/closure.export"
if nix-store --store "$scratch/store" --import <"$scratch/closure.export" >/dev/null 2>"$scratch/import.log" &&
  nix-store --store "$scratch/store" --verify --check-contents 2>>"$scratch/import.log" &&
  [ "$(nix-store --store "$scratch/store" -qR "$out" | wc -l)" = "${#closure[@]}" ]; then
  echo "closure: ${#closure[@]} paths, exported and imported into a scratch store"
else
  cat "$scratch/import.log" >&2
  fail "the closure does not import into another store"
fi

if [ "$failed" = 0 ]; then
  echo "render-check: ok"
else
  echo "render-check: FAILED" >&2
  exit 1
fi
