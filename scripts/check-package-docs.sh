#!/usr/bin/env bash
# package.nix installs the man pages and completions the helper generates: its
# postInstall, taken from package.nix evaluated with the nixpkgs lib (NIXPKGS_LIB)
# and stand-ins for the builder's other inputs, runs here against the helper built
# by cargo. There is no nixpkgs here, so installManPage and installShellCompletion
# are stand-ins that do what installShellFiles documents for these arguments; the
# real hook runs in `nix build`. What this checks: the generator's command line,
# that every path postInstall passes exists, and that the installed tree has a page
# per command that `man` renders and a completion per shell.
#
#   scripts/check-package-docs.sh HELPER     (NIXPKGS_LIB set; run by gen-docs.sh --check)
set -euo pipefail
cd "$(dirname "$0")/.."
helper=$(realpath "$1")
lib_path=$(cd "$NIXPKGS_LIB" && pwd)

evaluate() {
  NIX_CONFIG="build-users-group =" nix-instantiate --eval --strict --json --argstr libPath "$lib_path" -E "
    { libPath }:
    let
      lib = import (/. + libPath);
      package = canExecute: import ./package.nix {
        inherit lib;
        stdenv = { buildPlatform.canExecute = _: canExecute; hostPlatform = { }; };
        rustPlatform = { buildRustPackage = args: args; bindgenHook = \"bindgenHook\"; };
        installShellFiles = \"installShellFiles\";
        pkg-config = \"pkg-config\";
        util-linux = \"util-linux\";
      };
      native = package true;
    in
    assert lib.assertMsg (lib.elem \"installShellFiles\" native.nativeBuildInputs)
      \"package.nix: installShellFiles is not in nativeBuildInputs\";
    assert lib.assertMsg ((package false).postInstall == \"\")
      \"package.nix: a cross build must not run the helper in postInstall\";
    native.postInstall"
}
post_install_json=$(evaluate)
post_install=$(python3 -c 'import json, sys; sys.stdout.write(json.loads(sys.argv[1]))' "$post_install_json")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
out=$work/out
mkdir -p "$out/bin" "$work/build"
cp "$helper" "$out/bin/wsl-storage-mount"

installManPage() {
  local page
  for page in "$@"; do
    [[ -f $page ]] || { echo "installManPage: $page does not exist" >&2; return 1; }
    install -D -m 644 "$page" "$out/share/man/man${page##*.}/${page##*/}"
  done
}
installShellCompletion() {
  local cmd="" shell="" path
  while [[ $# -gt 0 ]]; do
    case $1 in
      --cmd) cmd=$2; shift 2 ;;
      --bash | --zsh | --fish) shell=${1#--}; path=$2; shift 2
        [[ -n $cmd && -f $path ]] || { echo "installShellCompletion: no --cmd, or $path does not exist" >&2; return 1; }
        case $shell in
          bash) install -D -m 644 "$path" "$out/share/bash-completion/completions/$cmd.bash" ;;
          zsh) install -D -m 644 "$path" "$out/share/zsh/site-functions/_$cmd" ;;
          fish) install -D -m 644 "$path" "$out/share/fish/vendor_completions.d/$cmd.fish" ;;
        esac ;;
      *) echo "installShellCompletion: unexpected argument $1 (this stand-in knows --cmd and --bash/--zsh/--fish PATH)" >&2; return 1 ;;
    esac
  done
}
(cd "$work/build" && out=$out eval "$post_install")

failed=0
render=true
command -v man >/dev/null || { render=false; echo "package.nix: man is missing (apt-get install man-db): pages not rendered"; }
for name in $("$out/bin/wsl-storage-mount" --help | sed -n '/^Commands:/,/^$/p' | sed -n 's/^  \([a-z-]*\) .*/\1/p' | grep -vx help) ""; do
  page=$out/share/man/man1/wsl-storage-mount${name:+-$name}.1
  if [[ ! -f $page ]] || { $render && ! MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null | { ! grep -q .; }; }; then
    echo "package: no page, or one man warns about: ${page#"$out"/}" >&2
    failed=1
  fi
done
for completion in share/bash-completion/completions/wsl-storage-mount.bash \
  share/zsh/site-functions/_wsl-storage-mount share/fish/vendor_completions.d/wsl-storage-mount.fish; do
  [[ -s $out/$completion ]] || { echo "package: $completion is missing" >&2; failed=1; }
done
if [[ $failed -eq 0 ]]; then
  echo "package.nix: installs $(find "$out/share/man" -name '*.1' | wc -l) man pages and the bash, zsh and fish completions"
fi
exit $failed
