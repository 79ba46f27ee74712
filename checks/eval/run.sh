#!/usr/bin/env bash
# Runs the module's evaluation tests (checks/eval/cases.nix) with nix-instantiate
# against a nixpkgs `lib` directory, one line per test, then
# "N passed, N failed, N skipped" (skipped: the cases that need real NixOS,
# which `nix flake check` runs, and without NixOS-WSL those that import it). Exits non-zero when a test fails or the lib
# is missing under CI=true.
#
# The lib: NIXPKGS_LIB, else ../shared/nixpkgs-lib/lib beside the checkout
# (beside the main checkout for a git worktree). The real NixOS-WSL the cases
# marked `needsNixosWsl` import: NIXOS_WSL (a checkout, with modules/), else
# ../shared/nixos-wsl found the same way; without it those cases are skipped,
# and under CI=true that is a failure. Neither is ever copied into the project.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# The first of ../shared/<name> beside the checkout and beside the main
# checkout (for a git worktree) that holds <file>.
beside_checkout() {
  local name=$1 file=$2 candidates=("$repo/../shared/$1")
  if common=$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir 2>/dev/null); then
    candidates+=("$(dirname "$common")/../shared/$name")
  fi
  for candidate in "${candidates[@]}"; do
    if [[ -f "$candidate/$file" ]]; then
      (cd "$candidate" && pwd)
      return
    fi
  done
}

if [[ -z "${NIXPKGS_LIB:-}" ]]; then
  NIXPKGS_LIB=$(beside_checkout nixpkgs-lib/lib default.nix)
fi
if [[ -z "${NIXPKGS_LIB:-}" ]]; then
  message="no nixpkgs lib: NIXPKGS_LIB is not set and ../shared/nixpkgs-lib/lib is not beside the checkout; point NIXPKGS_LIB at a nixpkgs lib directory (e.g. NIXPKGS_LIB=/path/to/nixpkgs/lib)"
  if [[ "${CI:-}" == true ]]; then
    echo "eval tests: FAILED: $message (under CI=true the evaluation tests must run)" >&2
    exit 1
  fi
  echo "eval tests skipped: $message"
  exit 0
fi
if [[ ! -f "$NIXPKGS_LIB/default.nix" ]]; then
  echo "eval tests: NIXPKGS_LIB=$NIXPKGS_LIB has no default.nix; it must be nixpkgs' lib directory" >&2
  exit 2
fi
if ! command -v nix-instantiate >/dev/null; then
  echo "eval tests: nix-instantiate not found (Debian: apt-get install nix-bin)" >&2
  exit 2
fi

if [[ -z "${NIXOS_WSL:-}" ]]; then
  NIXOS_WSL=$(beside_checkout nixos-wsl modules/default.nix)
fi
nixos_wsl_args=()
if [[ -z "$NIXOS_WSL" ]]; then
  message="no NixOS-WSL: NIXOS_WSL is not set and ../shared/nixos-wsl is not beside the checkout; point NIXOS_WSL at a NixOS-WSL checkout (the directory holding modules/)"
  if [[ "${CI:-}" == true ]]; then
    echo "eval tests: FAILED: $message (under CI=true the cases with the real NixOS-WSL must run)" >&2
    exit 1
  fi
  echo "eval tests: $message; the cases that need it are skipped"
elif [[ ! -f "$NIXOS_WSL/modules/default.nix" ]]; then
  echo "eval tests: NIXOS_WSL=$NIXOS_WSL has no modules/default.nix; it must be a NixOS-WSL checkout" >&2
  exit 2
else
  NIXOS_WSL=$(cd "$NIXOS_WSL" && pwd)
  nixos_wsl_args=(--argstr nixosWslPath "$NIXOS_WSL")
fi

lib_path=$(cd "$NIXPKGS_LIB" && pwd)
echo "eval tests against $lib_path${NIXOS_WSL:+ and NixOS-WSL $NIXOS_WSL ($(git -C "$NIXOS_WSL" rev-parse --short HEAD 2>/dev/null || sed -n 's/.*at commit \([0-9a-f]\{12\}\).*/\1/p' "$NIXOS_WSL/README.md" | head -n 1))}"
evaluate() {
  # Debian's nix-bin warns about a missing nixbld group; evaluating needs none.
  NIX_CONFIG="build-users-group =" \
    nix-instantiate --eval --strict --read-write-mode "$here/run.nix" --argstr libPath "$lib_path" "${nixos_wsl_args[@]}" "$@"
}
# The names are plain identifiers: a JSON list without jq.
names_of() { evaluate --json "$@" | tr -d '[]"' | tr ',' '\n'; }

names=$(names_of)
skipped_names=$(names_of --argstr list skipped)
if [[ -z "$names" ]]; then
  echo "eval tests: no test found in $here/cases.nix" >&2
  exit 2
fi

passed=0
failed=0
skipped=0
for name in $names; do
  if output=$(evaluate --argstr case "$name" 2>&1); then
    echo "ok   $name"
    passed=$((passed + 1))
  else
    echo "FAIL $name"
    # Nix prints our list after "error:"; keep it, drop the trace hint.
    grep -v -e "use '--show-trace'" <<<"$output" | sed -e 's/^error: *//' -e 's/^ *- /- /' -e '/^$/d' -e 's/^/     /'
    failed=$((failed + 1))
  fi
done
for name in $skipped_names; do
  echo "skip $name ($(evaluate --argstr list why --argstr case "$name" | tr -d '"'))"
  skipped=$((skipped + 1))
done

echo "$passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
