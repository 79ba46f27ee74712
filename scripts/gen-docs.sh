#!/usr/bin/env bash
# Regenerates the documentation that comes from the code, so it cannot drift:
#   docs/commands.md  the helper's --help texts and exit codes (src/cli.rs, src/exit.rs),
#                     through the helper's own generator (`__generate-docs`)
#   docs/options.md   the module's option declarations (nixos/), evaluated with a nixpkgs
#                     lib (NIXPKGS_LIB, else ../shared/nixpkgs-lib/lib, as checks/eval/run.sh)
# The man pages and shell completions come from the same generator when the package
# is built (package.nix); they are not checked in. docs/troubleshooting.md is written
# by hand; this checks that it names every `doctor` check, and only those. With
# --check it also runs scripts/check-package-docs.sh: package.nix installs the pages
# and completions.
#
#   scripts/gen-docs.sh           write the files that changed
#   scripts/gen-docs.sh --check   write nothing; exit 1, with a diff, when a checked-in
#                                 file is not what the code generates now (scripts/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) echo "usage: scripts/gen-docs.sh [--check]" >&2; exit 2 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
outdated=()
skipped=()

# Writes (or, with --check, compares) one generated file.
publish() {
  local generated=$1 target=$2
  if cmp -s "$generated" "$target"; then
    echo "$target: up to date"
  elif $check; then
    echo "$target: NOT what the code generates; the difference (- checked in, + generated):"
    diff -u "$target" "$generated" | sed -n '3,42p' || true
    outdated+=("$target")
  else
    cp "$generated" "$target"
    echo "$target: written"
  fi
}

cargo build --quiet
target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
helper=$target_dir/debug/wsl-storage-mount
"$helper" __generate-docs "$work/gen"
publish "$work/gen/commands.md" docs/commands.md

# shellcheck source=checks/eval/find-lib.sh
source checks/eval/find-lib.sh
find_nixpkgs_lib "$repo"
if [[ -n "${NIXPKGS_LIB:-}" && -f "$NIXPKGS_LIB/default.nix" ]] && command -v nix-instantiate >/dev/null; then
  # Debian's nix-bin warns about a missing nixbld group; evaluating needs none.
  NIX_CONFIG="build-users-group =" nix-instantiate --eval --strict --json \
    scripts/options-doc.nix --argstr libPath "$(cd "$NIXPKGS_LIB" && pwd)" >"$work/options.json"
  python3 -c 'import json, sys; sys.stdout.write(json.load(open(sys.argv[1])))' \
    "$work/options.json" >"$work/options.md"
  publish "$work/options.md" docs/options.md
  # Not a file of docs/: that package.nix installs the man pages and completions.
  if $check; then
    NIXPKGS_LIB=$NIXPKGS_LIB scripts/check-package-docs.sh "$helper" || outdated+=("package.nix")
  fi
else
  why="no nixpkgs lib (NIXPKGS_LIB, or ../shared/nixpkgs-lib/lib beside the checkout) or no nix-instantiate (apt-get install nix-bin)"
  echo "docs/options.md: not generated: $why"
  skipped+=("docs/options.md")
fi

# Hand-written, but named after the code: troubleshooting.md's `doctor` checks.
python3 scripts/check-doctor-docs.py || outdated+=("docs/troubleshooting.md")

if [[ ${#outdated[@]} -ne 0 ]]; then
  echo "FAILED: ${outdated[*]} (see above; a generated file: run scripts/gen-docs.sh and commit the result)"
  exit 1
fi
if [[ ${#skipped[@]} -ne 0 && "${CI:-}" == true ]]; then
  echo "not checked under CI=true: ${skipped[*]}"
  exit 1
fi
