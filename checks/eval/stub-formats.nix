# pkgs.formats as the NixOS-WSL modules use it: only `ini`, whose type
# wsl.wslConf is a free-form submodule of. From pkgs/pkgs-lib/formats.nix at
# f3c098d802fb31ed32d68e0e12ff226fcce22818 (without listsAsDuplicateKeys and
# listToValue, which NixOS-WSL does not pass). `generate` is left out.
{ lib }:

{
  ini =
    _args:
    let
      inherit (lib) types;
      iniAtom =
        types.nullOr (
          types.oneOf [
            types.bool
            types.int
            types.float
            types.str
          ]
        )
        // {
          description = "INI atom (null, bool, int, float or string)";
        };
    in
    {
      type = types.attrsOf (types.attrsOf iniAtom);
    };
}
