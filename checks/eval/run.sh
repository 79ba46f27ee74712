#!/usr/bin/env bash
# Runs the module's evaluation tests (checks/eval/cases.nix) with nix-instantiate
# against a nixpkgs `lib` directory, one line per test, then
# "N passed, N failed, N skipped" (skipped: the cases that need real NixOS,
# which `nix flake check` runs). Exits non-zero when a test fails or the lib
# is missing under CI=true.
#
# The lib: NIXPKGS_LIB, else ../shared/nixpkgs-lib/lib beside the checkout
# (beside the main checkout for a git worktree). It is never copied into the
# project.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

# shellcheck source=checks/eval/find-lib.sh
source "$here/find-lib.sh"
find_nixpkgs_lib "$repo"
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

lib_path=$(cd "$NIXPKGS_LIB" && pwd)
echo "eval tests against $lib_path"
evaluate() {
  # Debian's nix-bin warns about a missing nixbld group; evaluating needs none.
  NIX_CONFIG="build-users-group =" \
    nix-instantiate --eval --strict --read-write-mode "$here/run.nix" --argstr libPath "$lib_path" "$@"
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
  echo "skip $name (needs real NixOS: nix flake check runs it)"
  skipped=$((skipped + 1))
done

echo "$passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
