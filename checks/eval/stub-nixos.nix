# Test-only declarations of the NixOS options that this module or the real
# NixOS-WSL modules (checks/eval/run.sh imports them) read or write, declared
# as NixOS declares them wherever a value of ours lands in them. Taken from
# NixOS/nixpkgs as stored by the search index (one commit per file):
#
# - systemd units: nixos/lib/systemd-unit-options.nix at 515c8fb59bc189b54fc47113d6248cd45f607f65
#   (commonUnitOptions, stage2CommonUnitOptions, serviceOptions, stage2ServiceOptions,
#   socketOptions, mountOptions, automountOptions, unitOption and checkService) and
#   nixos/lib/systemd-lib.nix at 6f03be6bc8255385259c5652a993fbbd751e2103 (unitNameType,
#   assertValueOneOf, checkUnitConfig, and the unitConfig, stage2ServiceConfig and
#   mountConfig modules that fill unitConfig, environment.PATH and mountConfig);
#   composed per unit kind as nixos/lib/systemd-types.nix at
#   2faec4eca3b0717c3e754e5858e006cd14d288c1 does (systemd.nix itself is stored only at
#   c32bf83301bc4063df924ee442d8e35c1b96d912, from 2013, whose optionSet form is long gone).
#   Left out: that commit's socketConfig/targetConfig modules (newer than 6f03be6, they
#   only copy listenStreams and the like into the sections), script/preStart job scripts
#   (makeJobScript; nothing here sets a script).
# - system.activationScripts and system.build.installBootLoader:
#   nixos/modules/system/activation/activation-script.nix. The stored commit
#   12424157a21e274f43dc9fedb9322883755be138 is from 2020 (an `apply` that keeps only
#   `script`, no installBootLoader); the form here, scriptType, `apply = set: set // {
#   script = ...; }` and the installBootLoader declaration, is that file's current form
#   as the index holds it without a commit (the copy with `supportsDryActivation` and
#   `_localstatus`). Its check of unknown deps is lib.textClosureMap's `predefined.${dep}`.
#   NixOS's own snippets that NixOS-WSL and this module order against (stdio, var,
#   specialfs, usrbinenv, users, groups, etc, binsh) are here with their deps and a
#   placeholder text.
# - services.logrotate.settings: nixos/modules/services/logging/logrotate.nix at
#   ef176dcf7e76c3639571d7c6051246c8fbadf12a.
# - networking.hostName: nixos/modules/tasks/network-interfaces.nix at
#   577cb341b4463d094b5180bd5a39c49c0b49e5f6 (its pattern).
# - wsl.conf's ini type (pkgs.formats.ini, in stub-pkgs.nix): pkgs/pkgs-lib/formats.nix at
#   f3c098d802fb31ed32d68e0e12ff226fcce22818.
#
# Declared loosely (said at each): options that only NixOS-WSL sets and neither
# this module nor the tests read, where the value does not matter here.
{
  lib,
  pkgs,
  ...
}:

let
  inherit (lib) mkOption types;

  # nixos/lib/systemd-lib.nix
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  assertValueOneOf =
    name: values: group: attr:
    lib.optional (
      attr ? ${name} && !lib.elem attr.${name} values
    ) "Systemd ${group} field `${name}' cannot have value `${toString attr.${name}}'.";

  checkUnitConfig =
    group: checks: attrs:
    let
      defs = lib.mapAttrs (
        _: v:
        if v._type or "" == "override" then
          v.content
        else if v._type or "" == "if" then
          v.content
        else
          v
      ) attrs;
      errors = lib.concatMap (c: c group defs) checks;
    in
    if errors == [ ] then true else builtins.trace (lib.concatStringsSep "\n" errors) false;

  # nixos/lib/systemd-unit-options.nix
  checkService = checkUnitConfig "Service" [
    (assertValueOneOf "Type" [
      "exec"
      "simple"
      "forking"
      "oneshot"
      "dbus"
      "notify"
      "idle"
    ])
    (assertValueOneOf "Restart" [
      "no"
      "on-success"
      "on-failure"
      "on-abnormal"
      "on-abort"
      "always"
    ])
  ];

  # One tightening over NixOS, whose unitOption checks nothing: a value must
  # be one that NixOS's attrsToSection can write into the unit file (toString
  # of a bool, number, string, path or package, or a list of them); anything
  # else fails there, when the unit is built, which the stubs never do.
  renderable =
    v:
    lib.isBool v
    || lib.isInt v
    || lib.isFloat v
    || lib.isString v
    || lib.isPath v
    || v == null
    || lib.isAttrs v && v ? outPath;

  unitOption = lib.mkOptionType {
    name = "systemd option";
    check = v: renderable v || lib.isList v && lib.all renderable v;
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.isList (lib.head defs').value then
        lib.concatMap (
          def:
          if builtins.typeOf def.value == "list" then
            def.value
          else
            throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list ${lib.options.showDefs defs'}"
        ) defs'
      else
        lib.mergeEqualOption loc defs';
  };

  unitNames =
    default:
    mkOption {
      inherit default;
      type = types.listOf unitNameType;
    };

  attrsOfUnitOption = mkOption {
    default = { };
    type = types.attrsOf unitOption;
  };

  sharedOptions = {
    enable = mkOption {
      default = true;
      type = types.bool;
    };
    overrideStrategy = mkOption {
      default = "asDropinIfExists";
      type = types.enum [
        "asDropinIfExists"
        "asDropin"
      ];
    };
    requiredBy = unitNames [ ];
    wantedBy = unitNames [ ];
    aliases = unitNames [ ];
  };

  commonUnitOptions = {
    options = sharedOptions // {
      description = mkOption {
        default = "";
        type = types.singleLineStr;
      };
      documentation = mkOption {
        default = [ ];
        type = types.listOf types.str;
      };
      requires = unitNames [ ];
      wants = unitNames [ ];
      after = unitNames [ ];
      before = unitNames [ ];
      bindsTo = unitNames [ ];
      partOf = unitNames [ ];
      conflicts = unitNames [ ];
      requisite = unitNames [ ];
      unitConfig = attrsOfUnitOption;
      onFailure = unitNames [ ];
      onSuccess = unitNames [ ];
      startLimitBurst = mkOption { type = types.int; };
      startLimitIntervalSec = mkOption { type = types.int; };
    };
  };

  stage2CommonUnitOptions = {
    imports = [ commonUnitOptions ];
    options = {
      restartTriggers = mkOption {
        default = [ ];
        type = types.listOf types.unspecified;
      };
      reloadTriggers = mkOption {
        default = [ ];
        type = types.listOf unitOption;
      };
    };
  };

  serviceOptions = {
    options = {
      environment = mkOption {
        default = { };
        type =
          with types;
          attrsOf (
            nullOr (oneOf [
              str
              path
              package
            ])
          );
      };
      path = mkOption {
        default = [ ];
        type =
          with types;
          listOf (oneOf [
            package
            str
          ]);
      };
      serviceConfig = mkOption {
        default = { };
        type = types.addCheck (types.attrsOf unitOption) checkService;
      };
      # Kept for NixOS-WSL's usbip unit; the job script they would make
      # (makeJobScript) is left out: nothing here sets them.
      script = mkOption {
        type = types.lines;
        default = "";
      };
      scriptArgs = mkOption {
        type = types.str;
        default = "";
      };
      preStart = mkOption {
        type = types.lines;
        default = "";
      };
      postStart = mkOption {
        type = types.lines;
        default = "";
      };
      reload = mkOption {
        type = types.lines;
        default = "";
      };
      preStop = mkOption {
        type = types.lines;
        default = "";
      };
      postStop = mkOption {
        type = types.lines;
        default = "";
      };
    };
  };

  stage2ServiceOptions = {
    imports = [
      stage2CommonUnitOptions
      serviceOptions
    ];
    options = {
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      reloadIfChanged = mkOption {
        type = types.bool;
        default = false;
      };
      stopIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      startAt = mkOption {
        type = with types; either str (listOf str);
        default = [ ];
        apply = v: if lib.isList v then v else [ v ];
      };
    };
  };

  socketOptions = {
    options = {
      listenStreams = mkOption {
        default = [ ];
        type = types.listOf types.str;
      };
      listenDatagrams = mkOption {
        default = [ ];
        type = types.listOf types.str;
      };
      socketConfig = attrsOfUnitOption;
    };
  };

  # systemd-unit-options.nix timerOptions.
  timerOptions = {
    options = {
      timerConfig = attrsOfUnitOption;
    };
  };

  mountOptions = {
    options = {
      what = mkOption { type = types.str; };
      where = mkOption { type = types.str; };
      type = mkOption {
        default = "";
        type = types.str;
      };
      options = mkOption {
        default = "";
        type = types.commas;
      };
      mountConfig = attrsOfUnitOption;
    };
  };

  automountOptions = {
    options = {
      where = mkOption { type = types.str; };
      automountConfig = attrsOfUnitOption;
    };
  };

  # nixos/lib/systemd-lib.nix: what NixOS derives from the options above.
  unitConfig =
    { config, options, ... }:
    {
      config.unitConfig =
        lib.optionalAttrs (config.requires != [ ]) { Requires = toString config.requires; }
        // lib.optionalAttrs (config.wants != [ ]) { Wants = toString config.wants; }
        // lib.optionalAttrs (config.after != [ ]) { After = toString config.after; }
        // lib.optionalAttrs (config.before != [ ]) { Before = toString config.before; }
        // lib.optionalAttrs (config.bindsTo != [ ]) { BindsTo = toString config.bindsTo; }
        // lib.optionalAttrs (config.partOf != [ ]) { PartOf = toString config.partOf; }
        // lib.optionalAttrs (config.conflicts != [ ]) { Conflicts = toString config.conflicts; }
        // lib.optionalAttrs (config.requisite != [ ]) { Requisite = toString config.requisite; }
        // lib.optionalAttrs (config ? restartTriggers && config.restartTriggers != [ ]) {
          X-Restart-Triggers = "${pkgs.writeText "X-Restart-Triggers" (toString config.restartTriggers)}";
        }
        // lib.optionalAttrs (config ? reloadTriggers && config.reloadTriggers != [ ]) {
          X-Reload-Triggers = "${pkgs.writeText "X-Reload-Triggers" (toString config.reloadTriggers)}";
        }
        // lib.optionalAttrs (config.description != "") { Description = config.description; }
        // lib.optionalAttrs (config.documentation != [ ]) {
          Documentation = toString config.documentation;
        }
        // lib.optionalAttrs (config.onFailure != [ ]) { OnFailure = toString config.onFailure; }
        // lib.optionalAttrs (config.onSuccess != [ ]) { OnSuccess = toString config.onSuccess; }
        // lib.optionalAttrs options.startLimitIntervalSec.isDefined {
          StartLimitIntervalSec = toString config.startLimitIntervalSec;
        }
        // lib.optionalAttrs options.startLimitBurst.isDefined {
          StartLimitBurst = toString config.startLimitBurst;
        };
    };

  stage2ServiceConfig =
    { config, ... }:
    {
      config = {
        environment.PATH = lib.mkIf (
          config.path != [ ]
        ) "${lib.makeBinPath config.path}:${lib.makeSearchPathOutput "bin" "sbin" config.path}";
        # Default path for systemd services.
        path = lib.mkAfter [
          pkgs.coreutils
          pkgs.findutils
          pkgs.gnugrep
          pkgs.gnused
          pkgs.systemd
        ];
      };
    };

  mountConfig =
    { config, ... }:
    {
      config.mountConfig = {
        What = config.what;
        Where = config.where;
      }
      // lib.optionalAttrs (config.type != "") { Type = config.type; }
      // lib.optionalAttrs (config.options != "") { Options = config.options; };
    };

  automountConfig =
    { config, ... }:
    {
      config.automountConfig.Where = config.where;
    };

  # nixos/lib/systemd-types.nix
  unitTypes = {
    services = types.attrsOf (
      types.submodule [
        stage2ServiceOptions
        unitConfig
        stage2ServiceConfig
      ]
    );
    sockets = types.attrsOf (
      types.submodule [
        stage2CommonUnitOptions
        socketOptions
        unitConfig
      ]
    );
    targets = types.attrsOf (
      types.submodule [
        stage2CommonUnitOptions
        unitConfig
      ]
    );
    timers = types.attrsOf (
      types.submodule [
        stage2CommonUnitOptions
        timerOptions
        unitConfig
      ]
    );
    mounts = types.listOf (
      types.submodule [
        stage2CommonUnitOptions
        mountOptions
        unitConfig
        mountConfig
      ]
    );
    automounts = types.listOf (
      types.submodule [
        stage2CommonUnitOptions
        automountOptions
        unitConfig
        automountConfig
      ]
    );
  };

  # activation-script.nix
  scriptType = types.either types.str (
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
  );

  addAttributeName = lib.mapAttrs (
    name: v:
    v
    // {
      text = ''
        #### Activation script snippet ${name}:
        _localstatus=0
        ${v.text}

        if (( _localstatus > 0 )); then
          printf "Activation script snippet '%s' failed (%s)\n" "${name}" "$_localstatus"
        fi
      '';
    }
  );

  systemActivationScript =
    set: onlyDry:
    let
      set' = lib.mapAttrs (
        _: v: if lib.isString v then (lib.noDepEntry v) // { supportsDryActivation = false; } else v
      ) set;
      withHeadlines = addAttributeName set';
      withDrySnippets = lib.mapAttrs (
        name: v:
        if onlyDry && !v.supportsDryActivation then
          v // { text = "#### Activation script snippet ${name} does not support dry activation."; }
        else
          v
      ) withHeadlines;
    in
    ''
      #!/bin/sh
      systemConfig='@out@'
      _status=0
      trap "_status=1 _localstatus=\$?" ERR
      umask 0022

      ${lib.textClosureMap lib.id withDrySnippets (lib.attrNames withDrySnippets)}
    ''
    + lib.optionalString (!onlyDry) ''
      ln -sfn "$(readlink -f "$systemConfig")" /run/current-system
      exit $_status
    '';

  # A NixOS snippet that NixOS-WSL or the module orders against: its deps as
  # NixOS has them, a placeholder text (what it runs does not matter here).
  nixosSnippet = deps: {
    inherit deps;
    text = "# stand-in for NixOS's own snippet";
  };

  bool = default: mkOption {
    inherit default;
    type = types.bool;
  };
  lines = mkOption {
    type = types.lines;
    default = "";
  };
in
{
  # activation-script.nix: one boot loader (types.unique); NixOS-WSL sets it
  # to coreutils' true.
  imports = [
    {
      options.system.build.installBootLoader = mkOption {
        internal = true;
        default = "echo 'Warning: do not know how to make this configuration bootable; please enable a boot loader.' 1>&2; true";
        type = types.unique {
          message = ''
            Only one bootloader can be enabled at a time. This requirement has not
            been checked until NixOS 22.05. Earlier versions defaulted to the last
            definition. Change your configuration to enable only one bootloader.
          '';
        } (types.either types.str types.package);
      };
    }
  ];

  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    networking = {
      hostName = mkOption {
        type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
        default = "nixos";
      };
      # NixOS-WSL reads these for its warnings and turns the first two off.
      nameservers = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      extraHosts = lines;
      dhcpcd.enable = bool true;
      resolvconf.enable = bool true;
    };

    nix.enable = bool true;
    nix.package = mkOption {
      type = types.package;
      default = pkgs.nix;
    };

    # nixos/modules/tasks/filesystems.nix, the fields a test sets; the module
    # reads only the names.
    fileSystems = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule {
          options = {
            device = mkOption {
              type = types.nullOr types.str;
              default = null;
            };
            fsType = mkOption {
              type = types.str;
              default = "auto";
            };
            options = mkOption {
              type = types.nonEmptyListOf types.str;
              default = [ "defaults" ];
            };
          };
        }
      );
    };

    # nixos/modules/system/build.nix: a submodule with free-form values,
    # whose named entries other modules declare (installBootLoader above).
    system.build = mkOption {
      default = { };
      type = types.submoduleWith {
        modules = [ { freeformType = types.lazyAttrsOf (types.uniq types.unspecified); } ];
      };
    };

    system.activationScripts = mkOption {
      default = { };
      type = types.attrsOf scriptType;
      apply = set: set // { script = systemActivationScript set false; };
    };

    services.udev.enable = bool true;
    # NixOS-WSL turns these off or reads them.
    services.timesyncd.enable = bool true;
    services.resolved.enable = bool false;
    services.envfs = {
      enable = bool false;
      extraFallbackPathCommands = lines;
    };

    # logrotate.nix: each entry a submodule with free-form int/bool/str keys.
    services.logrotate.settings = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            freeformType =
              with types;
              attrsOf (
                nullOr (oneOf [
                  int
                  bool
                  str
                ])
              );
            options = {
              enable = bool true;
              global = bool false;
              files = mkOption {
                type = with types; either str (listOf str);
                default = name;
              };
              frequency = mkOption {
                type = types.nullOr types.str;
                default = null;
              };
              priority = mkOption {
                type = types.int;
                default = 1000;
              };
            };
          }
        )
      );
    };

    # nixos/modules/system/etc/etc.nix: the fields written here.
    environment.etc = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule (
          { name, config, ... }:
          {
            options = {
              enable = bool true;
              target = mkOption {
                type = types.str;
                default = name;
              };
              text = mkOption {
                type = types.nullOr types.lines;
                default = null;
              };
              source = mkOption { type = types.path; };
              mode = mkOption {
                type = types.str;
                default = "symlink";
              };
            };
            config.source = lib.mkIf (config.text != null) (
              lib.mkDefault (pkgs.writeText "etc-${baseNameOf name}" config.text)
            );
          }
        )
      );
    };
    # nixos/modules/config/system-path.nix: packages only.
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    # nixos/modules/config/shells-environment.nix
    environment.variables = mkOption {
      default = { };
      type =
        with types;
        attrsOf (oneOf [
          (listOf (oneOf [
            int
            str
            path
          ]))
          int
          str
          path
        ]);
    };
    environment.extraInit = lines;

    systemd = {
      services = mkOption {
        type = unitTypes.services;
        default = { };
      };
      sockets = mkOption {
        type = unitTypes.sockets;
        default = { };
      };
      targets = mkOption {
        type = unitTypes.targets;
        default = { };
      };
      timers = mkOption {
        type = unitTypes.timers;
        default = { };
      };
      mounts = mkOption {
        type = unitTypes.mounts;
        default = [ ];
      };
      automounts = mkOption {
        type = unitTypes.automounts;
        default = [ ];
      };
      enableEmergencyMode = bool true;
      oomd.enable = bool true;
      # Loose: only NixOS-WSL's ssh-agent sets one, never enabled here.
      user.services = mkOption {
        type = types.attrsOf (types.attrsOf types.anything);
        default = { };
      };
    };

    # Loose from here on: set by NixOS-WSL only, read by nobody here.
    boot = {
      initrd.enable = bool true;
      kernel.enable = bool true;
      loader.grub.enable = bool true;
      modprobeConfig.enable = bool true;
      binfmt.registrations = mkOption {
        type = types.attrsOf (types.attrsOf types.anything);
        default = { };
      };
    };
    console.enable = bool true;
    hardware.graphics = {
      enable = bool false;
      extraPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
    };
    powerManagement.enable = bool true;
    security.sudo.wheelNeedsPassword = bool true;
    users.users = mkOption {
      default = { };
      type = types.attrsOf (
        types.submodule (
          { name, ... }:
          {
            freeformType = types.attrsOf types.anything;
            options.name = mkOption {
              type = types.str;
              default = name;
            };
          }
        )
      );
    };
    users.groups = mkOption {
      type = types.attrsOf (types.attrsOf types.anything);
      default = { };
    };
  };

  config.system.activationScripts = {
    # activation-script.nix
    stdio = "";
    var = "";
    specialfs = nixosSnippet [ ];
    usrbinenv = nixosSnippet [ ];
    # users-groups.nix (NixOS-WSL's wrap-shell.nix defines users too)
    users = nixosSnippet [ ] // {
      supportsDryActivation = true;
    };
    groups = nixosSnippet [ "users" ];
    # etc.nix, shells-environment.nix
    etc = nixosSnippet [
      "users"
      "groups"
      "specialfs"
    ];
    binsh = nixosSnippet [ "stdio" ];
  };
}
