# Test-only declarations of the NixOS options the module writes to. The types
# are looser than NixOS's, but merge the same way where it matters: unit
# dependency lists concatenate, attrsets merge by key, a second differing
# definition of one value is an error.
{ lib, pkgs, ... }:

let
  inherit (lib) mkOption types;

  anyAttrs = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };

  unitLists = [
    "after"
    "before"
    "bindsTo"
    "conflicts"
    "partOf"
    "requiredBy"
    "requires"
    "requisite"
    "upheldBy"
    "upholds"
    "wantedBy"
    "wants"
  ];

  unit = {
    freeformType = types.attrsOf types.anything;
    options = lib.genAttrs unitLists (
      _:
      mkOption {
        type = types.listOf types.str;
        default = [ ];
      }
    );
  };

  unitWith =
    options:
    types.submodule {
      imports = [ unit ];
      inherit options;
    };

  service = unitWith {
    unitConfig = anyAttrs;
    serviceConfig = anyAttrs;
    path = mkOption {
      type = types.listOf types.anything;
      default = [ ];
    };
  };

  socket = unitWith {
    unitConfig = anyAttrs;
    socketConfig = anyAttrs;
  };

  mount = unitWith {
    unitConfig = anyAttrs;
    what = mkOption { type = types.str; };
    where = mkOption { type = types.str; };
    type = mkOption {
      type = types.str;
      default = "";
    };
    options = mkOption {
      type = types.commas;
      default = "";
    };
  };

  automount = unitWith {
    unitConfig = anyAttrs;
    where = mkOption { type = types.str; };
  };
in
{
  # NixOS declares installBootLoader (activation-script.nix) with
  # types.unique (one boot loader) and a shell snippet as default; NixOS-WSL
  # sets it to coreutils' true.
  imports = [
    {
      options.system.build.installBootLoader = mkOption {
        type = types.unique { message = "only one boot loader"; } (types.either types.str types.package);
        default = "echo 'Warning: do not know how to make this configuration bootable; please enable a boot loader.' 1>&2; true";
      };
    }
  ];

  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    networking.hostName = mkOption {
      type = types.str;
      default = "nixos";
    };

    nix.enable = mkOption {
      type = types.bool;
      default = true;
    };
    nix.package = mkOption {
      type = types.package;
      default = pkgs.nix;
    };

    fileSystems = mkOption {
      type = types.attrsOf (types.attrsOf types.anything);
      default = { };
    };

    # As nixos/modules/system/build.nix: a submodule with free-form values,
    # whose named entries other modules declare (installBootLoader below).
    system.build = mkOption {
      default = { };
      type = types.submoduleWith {
        modules = [ { freeformType = types.lazyAttrsOf (types.uniq types.unspecified); } ];
      };
    };
    system.activationScripts = mkOption {
      type = types.attrsOf (
        types.either types.str (
          types.submodule {
            options = {
              deps = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
              text = mkOption { type = types.lines; };
              supportsDryActivation = mkOption {
                type = types.bool;
                default = false;
              };
            };
          }
        )
      );
      default = { };
    };

    services.udev.enable = mkOption {
      type = types.bool;
      default = true;
    };
    services.logrotate.settings = mkOption {
      type = types.attrsOf (types.attrsOf types.anything);
      default = { };
    };

    environment.etc = mkOption {
      type = types.attrsOf (types.attrsOf types.anything);
      default = { };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.anything;
      default = [ ];
    };

    systemd = {
      services = mkOption {
        type = types.attrsOf service;
        default = { };
      };
      sockets = mkOption {
        type = types.attrsOf socket;
        default = { };
      };
      mounts = mkOption {
        type = types.listOf mount;
        default = [ ];
      };
      automounts = mkOption {
        type = types.listOf automount;
        default = [ ];
      };
    };
  };
}
