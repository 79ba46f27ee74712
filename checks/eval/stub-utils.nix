# A stand-in for NixOS's `utils` module argument: only what the module uses.
# In the full-NixOS run (checks/default.nix) the real one is used instead.
{ lib }:

{
  # systemd.unit(5): drop surplus '/', then '/' -> '-', and every byte that is
  # not an ASCII letter, digit, ':', '_' or '.' (nor a leading '.') -> \xNN.
  escapeSystemdPath =
    path:
    let
      trimmed = lib.concatStringsSep "/" (lib.filter (part: part != "") (lib.splitString "/" path));
      special = lib.filter (c: builtins.match "[A-Za-z0-9:_./]" c == null) (
        lib.stringToCharacters trimmed
      );
      escaped = lib.replaceStrings [ "/" ] [ "-" ] (lib.strings.escapeC (lib.unique special) trimmed);
    in
    if trimmed == "" then
      "-"
    else if lib.hasPrefix "." escaped then
      "\\x2e" + lib.removePrefix "." escaped
    else
      escaped;
}
