#!/usr/bin/env bash
# The boot twin: the module's own units started by a real systemd (Debian
# trixie under QEMU), booting through a stand-in for NixOS-WSL's shim, with
# the storage disk hot-plugged as WSL attaches it. See checks/twin/.
#
#   scripts/twin.sh --list        the scenarios, one a line
#   scripts/twin.sh [NAME...]     runs them (all by default); the last line
#                                 is `N passed, N failed`
#   scripts/twin.sh --bench [--runs N]   the boot figures (checks/twin/bench.py)
#
# Needs root, qemu-system-x86, debootstrap, nix-bin, e2fsprogs and a Rust
# toolchain (.ci/run installs them). The guest image is cached outside the
# checkout (WSM_TWIN_CACHE, default /var/cache/wsl-storage-mount/twin).
# Without what it needs it skips, saying why; under CI=true that is a failure.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [[ ${1:-} == --list ]]; then
  exec python3 checks/twin/run.py --list
fi

skip() {
  if [[ ${CI:-} == true ]]; then
    echo "twin: FAILED: $1 (under CI=true the boot twin must run)" >&2
    exit 1
  fi
  echo "twin: skipped: $1"
  exit 0
}
[[ $(id -u) -eq 0 ]] || skip "not root (loop devices, QEMU's disks, the host's Nix store)"
for tool in qemu-system-x86_64 qemu-img debootstrap nix-build nix-store mkfs.ext4 python3 cargo; do
  command -v "$tool" >/dev/null || skip "$tool is missing (apt-get install qemu-system-x86 qemu-utils debootstrap nix-bin e2fsprogs)"
done

# The nixpkgs lib and NixOS-WSL beside the checkout, as the eval tests find them.
find_shared() {
  local rel=$1
  local candidates=("$repo/../shared/$rel")
  if common=$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir 2>/dev/null); then
    candidates+=("$(dirname "$common")/../shared/$rel")
  fi
  for candidate in "${candidates[@]}"; do
    [[ -e $candidate ]] && { (cd "$candidate" && pwd); return 0; }
  done
  return 1
}
lib=${NIXPKGS_LIB:-$(find_shared nixpkgs-lib/lib || true)}
[[ -n $lib && -f $lib/default.nix ]] || skip "no nixpkgs lib (NIXPKGS_LIB, or ../shared/nixpkgs-lib/lib beside the checkout)"
nixos_wsl=${NIXOS_WSL:-$(find_shared nixos-wsl || true)}

cargo build --release --quiet
image=$(checks/twin/image.sh)
runner=checks/twin/run.py
if [[ ${1:-} == --bench ]]; then
  shift
  runner=checks/twin/bench.py
fi
exec python3 "$runner" --image "$image" --helper "$repo/target/release/wsl-storage-mount" \
  --lib "$lib" --nixos-wsl "$nixos_wsl" "$@"
