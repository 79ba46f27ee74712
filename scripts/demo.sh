#!/usr/bin/env bash
# The headline, end to end, on a throw-away disk: the store guard and the
# /nix bind.
#
#   1. build the helper; build a toy "system" with real Nix (two store paths,
#      one referring to the other) into this machine's store;
#   2. make an ext4 image, attach it to a loop device (the disk Windows
#      would attach), and in a private mount namespace:
#   3. make a stand-in for the VHDX's root filesystem (--boot-root): a chroot
#      store holding the toy system, its `system` profile pointing at it;
#   4. put an incomplete copy of the store in the instance dir (the
#      system's dependency, not the system itself): with a VHDX that lacks
#      the system too, `mount` refuses to let the bind happen (exit 6, and
#      says why);
#   5. `mount` with the stand-in VHDX: the helper heals the disk store from
#      it with Nix's own tools and writes the stamp; play systemd's nix.mount
#      (bind the instance dir over a stand-in for /nix) and run `mark`, which
#      writes the marker only on the real bind;
#   6. `status`: the VHDX boots what the disk deployed.
#
# Nothing stays behind: the mounts vanish with the namespace, /run there is
# a private tmpfs (the helper's run dir is inside the work dir:
# --run-dir), no /dev/disk is made (the disk is found by its filesystem
# UUID), the loop device is detached, and the toy store paths are deleted.
#
# Needs root, cargo, util-linux (unshare, losetup), e2fsprogs (mkfs.ext4) and
# Nix (nix-build, nix-store; Debian: apt-get install nix-bin). Without Nix it
# makes a stand-in store itself (python3's sqlite3 writes a Nix database with
# the same tables, ValidPaths and Refs), and shows the refusal and the bind
# without the heal, which needs Nix's own tools.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (it attaches a loop device and mounts it)" >&2
  exit 2
fi
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/target/release/wsl-storage-mount"
# Debian's nix-bin as root without a nixbld group: build as root, without
# the sandbox (the builders are /bin/sh) and without asking a binary cache.
export NIX_CONFIG="build-users-group =
sandbox = false
substituters ="

if [ "${1:-}" != "--inside" ]; then
  for tool in cargo unshare losetup mkfs.ext4 python3; do
    command -v "$tool" >/dev/null || {
      echo "demo: $tool is missing (apt-get install util-linux e2fsprogs python3; Rust from rustup.rs)" >&2
      exit 2
    }
  done
  if command -v nix-build >/dev/null && command -v nix-store >/dev/null; then
    mode=nix
  else
    mode=standin
    echo "demo: Nix is not installed (apt-get install nix-bin): using a stand-in store made by this script, and no heal"
  fi

  echo "== building the helper (cargo build --release; the first build takes a minute)"
  (cd "$here" && cargo build --release)

  work=$(mktemp -d /tmp/wsl-storage-mount-demo.XXXXXX)
  loop=
  toy=()
  cleanup() {
    [ -n "$loop" ] && losetup -d "$loop" 2>/dev/null || true
    if [ ${#toy[@]} -gt 0 ]; then
      # Unreferenced (no GC root: --no-out-link), so they can go again.
      nix-store --delete "${toy[@]}" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
  }
  trap cleanup EXIT

  if [ "$mode" = standin ]; then
    echo
    echo "== a toy system made by hand (two store path names, one referring to the other)"
    hash() { python3 -c 'import secrets; print("".join(secrets.choice("0123456789abcdfghijklmnpqrsvwxyz") for _ in range(32)))'; }
    dependency="/nix/store/$(hash)-demo-dependency"
    system="/nix/store/$(hash)-demo-system"
    printf '{"%s": [], "%s": ["%s"]}\n' "$dependency" "$system" "$dependency" >"$work/graph.json"
    printf '   %s\n' "$dependency" "$system"
  else
  echo
  echo "== building a toy system with real Nix into this machine's store"
  # A nonce per run: fresh paths, deleted again at the end.
  cat >"$work/toy.nix" <<'NIX'
{ nonce }:
let
  dependency = derivation {
    name = "demo-dependency";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" "echo ${nonce} > $out" ];
  };
in
derivation {
  name = "demo-system";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo ${dependency} > $out" ];
}
NIX
  nonce=$(cat /proc/sys/kernel/random/uuid)
  drv=$(nix-instantiate "$work/toy.nix" --argstr nonce "$nonce" 2>/dev/null)
  # Nix's own progress lines; the toy paths need no GC root (deleted at exit).
  system=$(nix-store --realise "$drv" 2> >(grep -v -e "did not specify '--add-root'" >&2))
  mapfile -t closure < <(nix-store --query --requisites "$system")
  mapfile -t drvs < <(nix-store --query --requisites "$drv")
  toy=("$system" "${closure[@]}" "${drvs[@]}")
  printf '   %s\n' "${closure[@]}"
  for path in "${closure[@]}"; do [ "$path" = "$system" ] || dependency=$path; done
  printf '{"%s": [], "%s": ["%s"]}\n' "$dependency" "$system" "$dependency" >"$work/graph.json"
  fi

  echo
  echo "== a 256 MiB ext4 image on a loop device (the disk Windows attaches)"
  truncate -s 256M "$work/disk.img"
  uuid=$(cat /proc/sys/kernel/random/uuid)
  mkfs.ext4 -q -U "$uuid" -L wsl-storage "$work/disk.img"
  loop=$(losetup --find --show "$work/disk.img")
  echo "   $loop, filesystem UUID $uuid"

  # A private mount namespace: the mounts below vanish with it.
  unshare -m --propagation private -- "$0" --inside "$work" "$loop" "$uuid" "$system" "$mode"
  echo
  echo "demo: done; the namespace is gone and its mounts with it; $loop is being detached and the toy store paths deleted"
  exit 0
fi

work=$2 loop=$3 uuid=$4 system=$5 mode=$6
storage="$work/storage"
sub="$storage/nixos-wsl-main"
target="$work/nix"
mkdir -p "$target"

# A private /run: /run/booted-system is the toy system here, and nothing
# of the host's systemd shows (the helper asks it whether the system is
# still booting, and defers the bind when it is not).
mount -t tmpfs demo-run /run
ln -s "$system" /run/booted-system
export WSL_STORAGE_MOUNT_RUN_DIR="$work/run"

# Put store paths into a store: Nix's own export/import, or (without Nix)
# the stand-in: each path a directory, registered in a database with Nix's
# tables (ValidPaths, Refs) so that the helper's guard reads it as Nix's.
# $1 is the store's /nix-shaped directory (store/ and var/nix/ under it).
put_paths() {
  local dir=$1
  shift
  if [ "$mode" = nix ]; then
    nix-store --export "$@" |
      nix-store --store "local?real=$dir/store&state=$dir/var/nix&log=$dir/var/log/nix" --import >/dev/null
  else
    python3 - "$work/graph.json" "$dir" "$@" <<'PY'
import json, os, sqlite3, sys
graph = json.load(open(sys.argv[1])); nix = sys.argv[2]; paths = sys.argv[3:]
os.makedirs(f"{nix}/var/nix/db", exist_ok=True)
db = sqlite3.connect(f"{nix}/var/nix/db/db.sqlite")
db.executescript("""
CREATE TABLE IF NOT EXISTS ValidPaths (id integer primary key autoincrement not null,
  path text unique not null, hash text not null, registrationTime integer not null,
  deriver text, narSize integer, ultimate integer, sigs text, ca text);
CREATE TABLE IF NOT EXISTS Refs (referrer integer not null, reference integer not null,
  primary key (referrer, reference));""")
for p in paths:
    d = f"{nix}/store/{os.path.basename(p)}"
    os.makedirs(d, exist_ok=True)
    with open(f"{d}/refs", "w") as f:
        f.write("".join(r + "\n" for r in graph[p]))
    db.execute("INSERT OR IGNORE INTO ValidPaths (path, hash, registrationTime, narSize) VALUES (?, 'sha256:0', 0, 4096)", (p,))
    for r in graph[p]:
        db.execute("INSERT OR IGNORE INTO Refs SELECT a.id, b.id FROM ValidPaths a, ValidPaths b WHERE a.path = ? AND b.path = ?", (p, r))
db.commit()
PY
  fi
}
import_into() { put_paths "$@"; }

cat >"$work/config.json" <<JSON
{
  "fsUuid": "$uuid",
  "mountPoint": "$storage",
  "waitTimeout": 10,
  "instanceDirs": {
    "nixos-wsl-main": { "owner": "root", "group": "root", "mode": "0755" },
    "shared": { "owner": "root", "group": "root", "mode": "1777" }
  },
  "bindMountNixStore": true,
  "nixStoreSubdir": "nixos-wsl-main",
  "nixStoreCommand": "$(command -v nix-store || echo nix-store)",
  "bindTarget": "$target",
  "logFile": "$work/wsl-mount.log"
}
JSON
helper() { "$bin" --config "$work/config.json" "$@"; }
# A profile as nix-env --set leaves it: system -> system-1-link -> the system.
set_profile() {
  mkdir -p "$1"
  ln -sfn "$2" "$1/system-1-link"
  ln -sfn system-1-link "$1/system"
}
# The closure, references first (the graph written outside).
mapfile -t closure < <(python3 -c 'import json,sys; g=json.load(open(sys.argv[1])); print("\n".join(sorted(g, key=lambda p: len(g[p]))))' "$work/graph.json")

echo
echo "== config ($work/config.json; bindTarget is a stand-in for /nix)"
cat "$work/config.json"
echo
echo "== wsl-storage-mount check"
helper check

echo
echo "== a stand-in VHDX root ($work/vhdx): the toy system's closure and its system profile"
vhdx="$work/vhdx"
mkdir -p "$vhdx"
put_paths "$vhdx/nix" "${closure[@]}"
set_profile "$vhdx/nix/var/nix/profiles" "$system"
echo "   $vhdx/nix/var/nix/profiles/system -> $(readlink "$vhdx/nix/var/nix/profiles/system") -> $system"

echo
echo "== an incomplete store in the instance dir: the dependency, not the system"
mkdir -p "$work/stage"
mount "$loop" "$work/stage"
mkdir -p "$work/stage/nixos-wsl-main"
dependencies=()
for path in "${closure[@]}"; do
  [ "$path" = "$system" ] || dependencies+=("$path")
done
import_into "$work/stage/nixos-wsl-main" "${dependencies[@]}"
# The deployment itself was recorded, as when the disk was missing during it.
set_profile "$work/stage/nixos-wsl-main/var/nix/profiles" "$system"
umount "$work/stage"
echo "   imported: ${dependencies[*]}"

echo
echo "== wsl-storage-mount --boot-root $work/older-vhdx mount (a VHDX that lacks the system too: must refuse, exit 6, no stamp)"
# A VHDX store that holds the dependency only: nothing to heal from.
mkdir -p "$work/older-vhdx"
put_paths "$work/older-vhdx/nix" "${dependencies[@]}"
set +e
helper --boot-root "$work/older-vhdx" mount
code=$?
set -e
echo "   exit code $code"
if [ "$code" -ne 6 ]; then
  echo "demo: expected exit 6 for an incomplete store, got $code" >&2
  exit 1
fi
if [ -e "$WSL_STORAGE_MOUNT_RUN_DIR/bind-ok" ]; then
  echo "demo: the stamp exists after a refusal" >&2
  exit 1
fi

if [ "$mode" = standin ]; then
  # The heal copies with nix-store, which is not here: complete the disk
  # store by hand instead (what `wsl-storage-mount migrate` does for real).
  echo
  echo "== no Nix here, so no heal: the stand-in completes the instance dir's store itself"
  mount "$loop" "$work/stage"
  put_paths "$work/stage/nixos-wsl-main" "$system"
  umount "$work/stage"
fi
echo
echo "== wsl-storage-mount --boot-root $vhdx mount (the VHDX holds the system: heal if needed, then the stamp)"
helper --boot-root "$vhdx" mount
test -e "$WSL_STORAGE_MOUNT_RUN_DIR/bind-ok"
echo "   stamp: $WSL_STORAGE_MOUNT_RUN_DIR/bind-ok"

echo
echo "== nix.mount's job (ConditionPathExists= the stamp): bind the instance dir over $target"
mount --bind "$sub" "$target"
findmnt -o SOURCE,TARGET,FSTYPE "$target"
echo "   $target/store holds: $(ls "$target/store" | grep -v '^\.links$' | tr '\n' ' ')"

echo
echo "== wsl-storage-mount mark (writes the marker only because $target really is the bind)"
helper mark
ls -l "$target/.mounted"

echo
echo "== wsl-storage-mount --boot-root $vhdx status"
helper --boot-root "$vhdx" status

echo
echo "== the log file ($work/wsl-mount.log) holds the same lines as above, timestamped: $(wc -l <"$work/wsl-mount.log") lines"
