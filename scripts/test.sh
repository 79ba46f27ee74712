#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run, which installs
# the tools first). Run it as root: the integration tests attach loop
# devices and mount them in private mount namespaces. As another user they
# skip themselves; this script counts those skips and says why, and under
# CI=true not being root (or a missing tool) is a failure, never a skip.
#
#   scripts/test.sh        everything (the eval tests find ../shared/nixpkgs-lib/lib,
#                          or NIXPKGS_LIB=/path/to/nixpkgs/lib)
set -uo pipefail
cd "$(dirname "$0")/.."
failed=()
ci=false
[ "${CI:-}" = true ] && ci=true

step() { echo; echo "== $*"; }
run() {
  local name=$1; shift
  if "$@"; then echo "-- $name: ok"; else echo "-- $name: FAILED"; failed+=("$name"); fi
}
# A missing tool: a skip on a workstation, a failure in CI.
missing() {
  local name=$1 why=$2
  if $ci; then
    echo "-- $name: FAILED: $why (CI=true: every step must run)"
    failed+=("$name")
  else
    echo "skipped: $why"
  fi
}

step "cargo fmt --check"
run rustfmt cargo fmt --check
step "cargo clippy --all-targets -- -D warnings"
run clippy cargo clippy --all-targets --quiet -- -D warnings

step "cargo test (unit tests; integration tests with the real binary, loop devices, mount namespaces)"
# The tests write one line per skip (test, reason) here; see tests/common.
skips=$(mktemp)
trap 'rm -f "$skips"' EXIT
export WSL_STORAGE_MOUNT_TEST_SKIPS=$skips
run cargo-test cargo test --quiet
unset WSL_STORAGE_MOUNT_TEST_SKIPS
# The toy systems the tests built into the machine's Nix store
# (tests/fixtures): deleted, so the run leaves nothing there (a path still
# in use elsewhere is kept).
if command -v nix-store >/dev/null; then
  mapfile -t toys < <(ls -d /nix/store/*-toy-* /nix/store/*-wsm-migrate-* 2>/dev/null)
  if [ ${#toys[@]} -gt 0 ]; then
    # shellcheck source=checks/twin/delete-paths.sh
    . checks/twin/delete-paths.sh
    NIX_CONFIG="build-users-group =" delete_paths "test fixtures" "${toys[@]}"
  fi
fi
if [ -s "$skips" ]; then
  echo "$(wc -l <"$skips") tests (or cases) skipped, counted as passed by cargo above:"
  cut -f2 "$skips" | sort | uniq -c | sed 's/^/  /'
  if [ "$(id -u)" -ne 0 ]; then
    echo "  run scripts/test.sh as root to run them"
  fi
fi
if [ "$(id -u)" -ne 0 ] && $ci; then
  echo "-- integration-tests: FAILED: not root under CI=true; the integration tests need root"
  failed+=("integration-tests")
fi

step "the generated PowerShell parses (tree-sitter-powershell; scripts/check-powershell.py)"
py=${PYTHON:-python3}
if "$py" -c 'import tree_sitter, tree_sitter_powershell' 2>/dev/null; then
  run powershell-parse sh -c "cargo build --quiet && \"$py\" scripts/check-powershell.py target/debug/wsl-storage-mount"
elif [ "${CI:-}" = true ]; then
  echo "powershell-parse: tree-sitter and tree-sitter-powershell are missing, and CI=true: .ci/run installs them"
  failed+=("powershell-parse")
else
  echo "skipped: $py lacks tree-sitter (pip install tree-sitter tree-sitter-powershell)"
fi

step "every .nix file parses (nix-instantiate --parse)"
if command -v nix-instantiate >/dev/null; then
  parsed=0 broken=0
  while IFS= read -r f; do
    # (Debian's nix-bin warns about a missing nixbld group; parsing needs none.)
    if NIX_CONFIG="build-users-group =" nix-instantiate --parse "$f" >/dev/null; then parsed=$((parsed + 1)); else echo "does not parse: $f"; broken=$((broken + 1)); fi
  done < <(git ls-files --cached --others --exclude-standard '*.nix')
  echo "nix-parse: $parsed passed, $broken failed"
  if [ "$broken" -ne 0 ] || [ "$parsed" -eq 0 ]; then
    [ "$parsed" -eq 0 ] && echo "no .nix file found (git ls-files failed?)"
    failed+=("nix-parse")
  fi
else
  missing nix-parse "nix-instantiate is missing (apt-get install nix-bin)"
fi

step "deadnix reports nothing"
# statix, the other Nix linter, is not on crates.io (the crate of that name is
# an unrelated file server) nor in Debian, so CI cannot run it.
if command -v deadnix >/dev/null; then
  # shellcheck disable=SC2046 # one argument per file; the names have no spaces
  run deadnix deadnix --fail $(git ls-files --cached --others --exclude-standard '*.nix')
else
  missing deadnix "deadnix is missing (cargo install --locked deadnix)"
fi

step "module evaluation tests (checks/eval; under CI=true a missing nixpkgs lib fails)"
run eval-tests bash checks/eval/run.sh

step "generated docs are what the code generates (scripts/gen-docs.sh --check: docs/commands.md, docs/options.md)"
run generated-docs scripts/gen-docs.sh --check

step "the boot twin: the module's units in a real systemd under QEMU (scripts/twin.sh; checks/twin)"
run boot-twin scripts/twin.sh

echo
if [ ${#failed[@]} -eq 0 ]; then
  echo "all steps passed"
else
  echo "FAILED steps: ${failed[*]}"
  exit 1
fi
