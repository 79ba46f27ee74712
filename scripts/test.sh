#!/usr/bin/env bash
# The project's test command (CI runs it through .ci/run, which installs
# the tools first). Run it as root: the integration tests attach loop
# devices and mount them in private mount namespaces; as another user they
# skip themselves, saying so.
#
#   scripts/test.sh                 everything
#   NIXPKGS_LIB=/path/to/nixpkgs/lib scripts/test.sh   also the module's evaluation tests
set -uo pipefail
cd "$(dirname "$0")/.."
failed=()

step() { echo; echo "== $*"; }
run() {
  local name=$1; shift
  if "$@"; then echo "-- $name: ok"; else echo "-- $name: FAILED"; failed+=("$name"); fi
}

step "cargo fmt --check"
run rustfmt cargo fmt --check
step "cargo clippy --all-targets -- -D warnings"
run clippy cargo clippy --all-targets --quiet -- -D warnings
step "cargo test (unit tests; integration tests with the real binary, loop devices, mount namespaces)"
run cargo-test cargo test --quiet

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
    if nix-instantiate --parse "$f" >/dev/null; then parsed=$((parsed + 1)); else echo "does not parse: $f"; broken=$((broken + 1)); fi
  done < <(git ls-files '*.nix')
  echo "nix-parse: $parsed passed, $broken failed"
  [ "$broken" -eq 0 ] || failed+=("nix-parse")
else
  echo "skipped: nix-instantiate is missing (apt-get install nix-bin)"
fi

step "deadnix reports nothing"
# statix, the other Nix linter, is not on crates.io (the crate of that name is
# an unrelated file server) nor in Debian, so CI cannot run it.
if command -v deadnix >/dev/null; then
  run deadnix deadnix --fail $(git ls-files '*.nix')
else
  echo "skipped: deadnix is missing (cargo install --locked deadnix)"
fi

step "module evaluation tests (checks/eval)"
if [ -f checks/eval/run.sh ]; then
  run eval-tests bash checks/eval/run.sh
else
  echo "skipped: checks/eval/run.sh does not exist yet"
fi

echo
if [ ${#failed[@]} -eq 0 ]; then
  echo "all steps passed"
else
  echo "FAILED steps: ${failed[*]}"
  exit 1
fi
