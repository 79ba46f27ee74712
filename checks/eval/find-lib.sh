# Sourced by checks/eval/run.sh and scripts/gen-docs.sh: sets NIXPKGS_LIB,
# unless already set, to ../shared/nixpkgs-lib/lib beside the checkout
# (beside the main checkout for a git worktree) when that exists. It is
# never copied into the project.
find_nixpkgs_lib() {
  local repo=$1 common candidate
  [[ -n "${NIXPKGS_LIB:-}" ]] && return 0
  local candidates=("$repo/../shared/nixpkgs-lib/lib")
  if common=$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir 2>/dev/null); then
    candidates+=("$(dirname "$common")/../shared/nixpkgs-lib/lib")
  fi
  for candidate in "${candidates[@]}"; do
    if [[ -f "$candidate/default.nix" ]]; then
      NIXPKGS_LIB=$candidate
      return 0
    fi
  done
}
