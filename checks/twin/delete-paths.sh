# Sourced by render-check.sh, activate-check.sh and scripts/test.sh:
# delete_paths NAME PATH...
# deletes the given store paths, each once nothing else holds it: a path
# another build (the twin harness's generations share these packages) or a
# root still refers to stays. Passes until one deletes nothing: referrers go
# before what they refer to. NAME prefixes the line about what was kept.
delete_paths() {
  local name=$1
  shift
  local left=("$@") kept progress p
  [ "$#" -gt 0 ] || return 0
  # Usually nothing else holds them: all at once.
  nix-store --delete "$@" >/dev/null 2>&1 && return 0
  while [ "${#left[@]}" -gt 0 ]; do
    kept=()
    progress=0
    for p in "${left[@]}"; do
      if [ ! -e "$p" ]; then
        continue
      elif nix-store --delete "$p" >/dev/null 2>&1; then
        progress=1
      else
        kept+=("$p")
      fi
    done
    left=("${kept[@]+"${kept[@]}"}")
    [ "$progress" = 1 ] || break
  done
  if [ "${#left[@]}" -gt 0 ]; then
    echo "$name: kept ${#left[@]} store paths that other paths or roots still use" >&2
  fi
}
