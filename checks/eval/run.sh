#!/usr/bin/env bash
# Runs the module's evaluation tests (checks/eval/cases.nix) with nix-instantiate
# against the nixpkgs `lib` directory named by NIXPKGS_LIB, one line per test,
# then "N passed, N failed". Exits non-zero when a test fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ -z "${NIXPKGS_LIB:-}" ]]; then
  echo "eval tests skipped: NIXPKGS_LIB is not set; point it at a nixpkgs lib directory" \
    "(e.g. NIXPKGS_LIB=/path/to/nixpkgs/lib) to run them"
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
evaluate() {
  nix-instantiate --eval --strict --read-write-mode "$here/run.nix" --argstr libPath "$lib_path" "$@"
}

# The names are plain identifiers: a JSON list without jq.
names=$(evaluate --json | tr -d '[]"' | tr ',' '\n')
if [[ -z "$names" ]]; then
  echo "eval tests: no test found in $here/cases.nix" >&2
  exit 2
fi

passed=0
failed=0
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

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
