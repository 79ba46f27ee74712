# Evaluates the module with one scenario's settings, as checks/eval/stub.nix
# does, and renders what the evaluation defines into the texts NixOS would
# install: unit files, drop-ins, .wants links, the boot-loader command, the
# activation snippet and /etc entries. The renderer follows nixpkgs'
# nixos/lib/systemd-lib.nix (attrsToSection, commonUnitText, serviceToUnit,
# socketToUnit, mountToUnit, generateUnits) and the option defaults of
# nixos/lib/systemd-unit-options.nix for every key the module sets.
{
  lib,
  # ./pkgs.nix: real derivations, so every store path here builds.
  pkgs,
  # The scenario's settings, a NixOS module (an attrset read from JSON).
  settings ? { },
  # NixOS's own options, stubbed.
  nixosModules ? [ ../eval/stub-nixos.nix ],
  # The real NixOS-WSL modules, when their options are available (they then
  # set installBootLoader themselves).
  wslModules ? [ ],
  utils ? import ../eval/stub-utils.nix { inherit lib; },
  # Units the guest already has from its packages (Debian's nix-setup-systemd,
  # systemd): a definition of one of these is installed as
  # <unit>.d/overrides.conf, as NixOS does for units of systemd.packages.
  upstreamUnits ? [
    "nix-daemon.service"
    "nix-daemon.socket"
    "local-fs.target"
    "local-fs-pre.target"
    "multi-user.target"
    "shutdown.target"
    "sysinit.target"
    "basic.target"
    "sockets.target"
    "systemd-udevd.service"
    "systemd-udev-trigger.service"
    "systemd-udev-settle.service"
    "systemd-udevd-control.socket"
    "systemd-udevd-kernel.socket"
    "systemd-tmpfiles-setup.service"
    "systemd-remount-fs.service"
  ],
}:

let
  moduleDir = toString ../../nixos;
  # The name the scenario's settings go by in the module system.
  settingsFile = "<twin scenario settings>";
  ownFile = file: lib.hasPrefix "${moduleDir}/" (toString file) || file == settingsFile;

  evaluated = lib.evalModules {
    modules =
      nixosModules
      ++ wslModules
      ++ [
        ../../nixos
        {
          _module.args = { inherit pkgs utils; };
        }
        (lib.setDefaultModuleLocation settingsFile settings)
      ]
      # What the NixOS-WSL modules would set: no boot loader to install
      # (wsl-distro.nix) and no udev (systemd/default.nix, a default the
      # module and the scenario may override).
      ++ lib.optional (wslModules == [ ]) {
        system.build.installBootLoader = lib.mkDefault "${pkgs.coreutils}/bin/true";
        services.udev.enable = lib.mkDefault false;
      };
  };

  inherit (evaluated) config options;

  # As NixOS's toplevel: a failed assertion stops the build, warnings print.
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  checked =
    if failedAssertions != [ ] then
      throw "\nFailed assertions:\n${lib.concatMapStringsSep "\n" (m: "- ${m}") failedAssertions}"
    else
      lib.foldr lib.warn true config.warnings;

  # --- systemd-lib.nix -----------------------------------------------------

  toOption =
    x:
    if x == true then
      "true"
    else if x == false then
      "false"
    else
      toString x;

  # One `Key=value` line per value; a list repeats the key. Keys in
  # attribute-name order, as mapAttrsToList gives them.
  attrsToSection =
    as:
    lib.concatStrings (
      lib.concatLists (
        lib.mapAttrsToList (
          name: value: map (x: "${name}=${toOption x}\n") (if lib.isList value then value else [ value ])
        ) as
      )
    );

  # systemd-lib.nix's unitNameType: a wrong name is an evaluation error.
  checkUnitName =
    where: name:
    if
      builtins.match "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)" name
      != null
    then
      name
    else
      throw "${where}: `${name}` is not a unit name (systemd-lib.nix unitNameType)";

  # The unit options NixOS declares with their defaults; the stub options are
  # free-form, so a key the module leaves out takes NixOS's default here.
  unitDefaults = {
    enable = true;
    description = "";
    documentation = [ ];
    requires = [ ];
    wants = [ ];
    upholds = [ ];
    after = [ ];
    before = [ ];
    bindsTo = [ ];
    partOf = [ ];
    conflicts = [ ];
    requisite = [ ];
    onFailure = [ ];
    onSuccess = [ ];
    wantedBy = [ ];
    requiredBy = [ ];
    upheldBy = [ ];
    aliases = [ ];
    restartTriggers = [ ];
    reloadTriggers = [ ];
    unitConfig = { };
    overrideStrategy = "asDropinIfExists";
  };
  serviceDefaults = unitDefaults // {
    environment = { };
    path = [ ];
    serviceConfig = { };
    restartIfChanged = true;
    reloadIfChanged = false;
    stopIfChanged = true;
    notSocketActivated = false;
    script = "";
    preStart = "";
    postStart = "";
    reload = "";
    preStop = "";
    postStop = "";
    startAt = [ ];
  };
  socketDefaults = unitDefaults // {
    listenStreams = [ ];
    listenDatagrams = [ ];
    socketConfig = { };
  };
  mountDefaults = unitDefaults // {
    type = "";
    options = "";
    mountConfig = { };
  };

  # Whether a unit option has a value: NixOS declares some without a default
  # (startLimitBurst), and reading those undefined is an error, as in NixOS.
  defined = def: key: def ? ${key} && (builtins.tryEval def.${key}).success;

  # Two definitions of one key of an attrsOf unitOption merge as NixOS
  # merges them: lists concatenate, other values must be equal.
  mergeSection =
    unit: section: a: b:
    a
    // lib.mapAttrs (
      key: value:
      if !(a ? ${key}) then
        value
      else if lib.isList a.${key} && lib.isList value then
        a.${key} ++ value
      else if a.${key} == value then
        value
      else
        throw "${unit}: ${section}.${key} is defined twice with different values (${toOption a.${key}} and ${toOption value})"
    ) b;

  # systemd-lib.nix's unitConfig module: the dependency lists and the
  # description as [Unit] keys, merged with the unit's own unitConfig.
  renderUnitConfig =
    name: def:
    let
      lists = {
        Requires = def.requires;
        Wants = def.wants;
        Upholds = def.upholds;
        After = def.after;
        Before = def.before;
        BindsTo = def.bindsTo;
        PartOf = def.partOf;
        Conflicts = def.conflicts;
        Requisite = def.requisite;
        OnFailure = def.onFailure;
        OnSuccess = def.onSuccess;
      };
      generated =
        lib.mapAttrs (key: units: toString (map (checkUnitName "${name} ${key}") units)) (
          lib.filterAttrs (_: units: units != [ ]) lists
        )
        // lib.optionalAttrs (def.restartTriggers != [ ]) {
          X-Restart-Triggers = "${pkgs.writeText "X-Restart-Triggers-${name}" (
            toString (map (x: if lib.isPath x then "${x}" else x) (lib.flatten def.restartTriggers))
          )}";
        }
        // lib.optionalAttrs (def.reloadTriggers != [ ]) {
          X-Reload-Triggers = "${pkgs.writeText "X-Reload-Triggers-${name}" (
            toString (map (x: if lib.isPath x then "${x}" else x) (lib.flatten def.reloadTriggers))
          )}";
        }
        // lib.optionalAttrs (def.description != "") { Description = def.description; }
        // lib.optionalAttrs (def.documentation != [ ]) { Documentation = toString def.documentation; }
        // lib.optionalAttrs (defined def "startLimitIntervalSec") {
          StartLimitIntervalSec = toString def.startLimitIntervalSec;
        }
        // lib.optionalAttrs (defined def "startLimitBurst") { StartLimitBurst = toString def.startLimitBurst; };
    in
    mergeSection name "unitConfig" generated def.unitConfig;

  commonUnitText =
    name: def: lines:
    ''
      [Unit]
      ${attrsToSection (renderUnitConfig name def)}
    ''
    + lines
    + lib.optionalString (def.wantedBy != [ ]) ''

      [Install]
      WantedBy=${lib.concatStringsSep " " def.wantedBy}
    '';

  # checkService of systemd-unit-options.nix.
  checkService =
    name: sc:
    let
      oneOf =
        key: values:
        lib.optional (
          sc ? ${key} && !(lib.elem sc.${key} values)
        ) "${name}: serviceConfig.${key} cannot be `${toOption sc.${key}}`";
      errors =
        oneOf "Type" [
          "exec"
          "simple"
          "forking"
          "oneshot"
          "dbus"
          "notify"
          "notify-reload"
          "idle"
        ]
        ++ oneOf "Restart" [
          "no"
          "on-success"
          "on-failure"
          "on-abnormal"
          "on-abort"
          "on-watchdog"
          "always"
        ];
    in
    if errors == [ ] then sc else throw (lib.concatStringsSep "\n" errors);

  # NixOS's default path of every stage-2 service (systemd-lib.nix
  # stage2ServiceConfig, mkAfter: after the unit's own).
  defaultServicePath = [
    pkgs.coreutils
    pkgs.findutils
    pkgs.gnugrep
    pkgs.gnused
    pkgs.systemd
  ];

  unsupported =
    name: def: keys:
    let
      set = lib.filter (k: def ? ${k} && def.${k} != serviceDefaults.${k}) keys;
    in
    if set == [ ] then
      def
    else
      throw "${name}: the twin's renderer does not render ${lib.concatStringsSep ", " set} (the module never sets it); render it in checks/twin/render.nix first";

  serviceToUnit =
    shortName: raw:
    let
      name = "${shortName}.service";
      def = unsupported name (serviceDefaults // raw) [
        "script"
        "preStart"
        "postStart"
        "reload"
        "preStop"
        "postStop"
        "startAt"
      ];
      path = def.path ++ defaultServicePath;
      # NixOS's own option declarations (checks/eval/stub-nixos.nix, as
      # systemd-unit-options.nix) fill environment.PATH from `path`, the
      # default service path included; without them it is done here.
      environment =
        if def.environment ? PATH then
          (systemdCfg.globalEnvironment or { }) // def.environment
        else
          (systemdCfg.globalEnvironment or { })
          // def.environment
          // {
            PATH = "${lib.makeBinPath path}:${lib.makeSearchPathOutput "bin" "sbin" path}";
          };
    in
    {
      inherit name def;
      text = commonUnitText name def (
        ''
          [Service]
        ''
        + lib.concatMapStrings (
          n:
          lib.optionalString (environment.${n} != null) "Environment=${builtins.toJSON "${n}=${environment.${n}}"}\n"
        ) (lib.attrNames environment)
        + (
          if def.reloadIfChanged then
            ''
              X-ReloadIfChanged=true
            ''
          else if !def.restartIfChanged then
            ''
              X-RestartIfChanged=false
            ''
          else
            ""
        )
        + lib.optionalString (!def.stopIfChanged) ''
          X-StopIfChanged=false
        ''
        + lib.optionalString def.notSocketActivated ''
          X-NotSocketActivated=true
        ''
        + attrsToSection (checkService name def.serviceConfig)
      );
    };

  socketToUnit =
    shortName: raw:
    let
      name = "${shortName}.socket";
      def = socketDefaults // raw;
    in
    {
      inherit name def;
      text = commonUnitText name def ''
        [Socket]
        ${attrsToSection def.socketConfig}
        ${lib.concatStringsSep "\n" (map (s: "ListenStream=${s}") def.listenStreams)}
        ${lib.concatStringsSep "\n" (map (s: "ListenDatagram=${s}") def.listenDatagrams)}
      '';
    };

  mountToUnit =
    raw:
    let
      def = mountDefaults // raw;
      name = "${utils.escapeSystemdPath def.where}.mount";
      mountConfig = mergeSection name "mountConfig" (
        {
          What = def.what;
          Where = def.where;
        }
        // lib.optionalAttrs (def.type != "") { Type = def.type; }
        // lib.optionalAttrs (def.options != "") { Options = def.options; }
      ) def.mountConfig;
    in
    {
      inherit name def;
      text = commonUnitText name def ''
        [Mount]
        ${attrsToSection mountConfig}
      '';
    };

  automountToUnit =
    raw:
    let
      def = unitDefaults // { automountConfig = { }; } // raw;
      name = "${utils.escapeSystemdPath def.where}.automount";
    in
    {
      inherit name def;
      text = commonUnitText name def ''
        [Automount]
        ${attrsToSection (mergeSection name "automountConfig" { Where = def.where; } def.automountConfig)}
      '';
    };

  targetToUnit = shortName: raw: rec {
    name = "${shortName}.target";
    def = unitDefaults // raw;
    text = ''
      [Unit]
      ${attrsToSection (renderUnitConfig name def)}
    '';
  };

  # Only what the module's own files or the scenario's settings define
  # (with every definition of it merged): with the real NixOS-WSL modules
  # imported, their units and /etc entries need packages the stand-in pkgs
  # do not have, and are not what the twin checks.
  ownDefinitions =
    option:
    lib.concatMap (def: lib.optional (ownFile def.file) def.value) option.definitionsWithLocations;
  ownNames = option: lib.unique (lib.concatMap lib.attrNames (ownDefinitions option));
  ownOf =
    option: attrs:
    let
      names = ownNames option;
    in
    lib.filterAttrs (name: _: lib.elem name names) attrs;
  ownListOf =
    option: list:
    let
      wheres = map (def: def.where) (lib.concatLists (ownDefinitions option));
    in
    lib.filter (def: lib.elem def.where wheres) list;

  systemdCfg = config.systemd;
  systemdOptions = options.systemd;
  allUnits =
    lib.mapAttrsToList serviceToUnit (ownOf systemdOptions.services systemdCfg.services)
    ++ lib.mapAttrsToList socketToUnit (ownOf systemdOptions.sockets systemdCfg.sockets)
    ++ lib.optionals (systemdOptions ? targets) (
      lib.mapAttrsToList targetToUnit (ownOf systemdOptions.targets systemdCfg.targets)
    )
    ++ map mountToUnit (ownListOf systemdOptions.mounts systemdCfg.mounts)
    ++ map automountToUnit (ownListOf systemdOptions.automounts systemdCfg.automounts);

  # One definition per unit name (NixOS's systemd.units is keyed by name).
  byName = lib.foldl' (
    acc: unit:
    if acc ? ${unit.name} then
      throw "two definitions render to the unit ${unit.name}"
    else
      acc // { ${unit.name} = unit; }
  ) { } allUnits;

  enabled = lib.filterAttrs (_: unit: unit.def.enable) byName;

  # generateUnits: asDropin always, asDropinIfExists when the unit exists
  # upstream (here: in the guest's packages).
  isDropin =
    name: unit:
    unit.def.overrideStrategy == "asDropin"
    || (unit.def.overrideStrategy == "asDropinIfExists" && lib.elem name upstreamUnits);

  # wantedBy/requiredBy/upheldBy -> <target>.wants/.requires/.upholds.
  links =
    suffix: field:
    lib.foldl' (
      acc: unit:
      lib.foldl' (
        acc': target:
        let
          dir = "${checkUnitName "${unit.name} ${field}" target}.${suffix}";
        in
        acc' // { ${dir} = lib.unique ((acc'.${dir} or [ ]) ++ [ unit.name ]); }
      ) acc unit.def.${field}
    ) { } (lib.attrValues enabled);

  # The activation snippets this module adds (defined in a file of
  # ../../nixos), in the order of their deps among themselves; NixOS's own
  # snippets are the twin's activate script itself.
  ownActivation = lib.listToAttrs (
    lib.concatMap (
      def:
      lib.optionals (lib.hasPrefix "${moduleDir}/" (toString def.file)) (
        lib.mapAttrsToList lib.nameValuePair def.value
      )
    ) options.system.activationScripts.definitionsWithLocations
  );
  ownActivationNames = lib.filter (n: config.system.activationScripts ? ${n}) (
    lib.attrNames ownActivation
  );
  activationEntries = lib.genAttrs ownActivationNames (
    n:
    let
      entry = config.system.activationScripts.${n};
    in
    {
      deps = lib.optionals (!lib.isString entry) (
        lib.filter (d: lib.elem d ownActivationNames) entry.deps
      );
      # A headline per snippet, as NixOS's activation script has.
      text = ''
        #### Activation script snippet ${n}:
        ${if lib.isString entry then entry else entry.text}
      '';
    }
  );

  # environment.etc entries of the module: a store path (source) or text
  # made one.
  etcEntries = lib.mapAttrs (
    path: entry:
    if entry ? source then
      "${entry.source}"
    else if entry ? text then
      "${pkgs.writeText "etc-${baseNameOf path}" entry.text}"
    else
      throw "environment.etc.\"${path}\": neither source nor text"
  ) (lib.filterAttrs (_: entry: entry.enable or true) (ownOf options.environment.etc config.environment.etc));
in
assert checked;
{
  inherit config;

  # Unit files installed whole, and drop-ins (<unit>.d/overrides.conf).
  units = lib.mapAttrs (_: unit: unit.text) (lib.filterAttrs (n: u: !isDropin n u) enabled);
  dropins = lib.mapAttrs (_: unit: unit.text) (lib.filterAttrs isDropin enabled);
  # enable = false: a link to /dev/null, as makeUnit does.
  masked = lib.attrNames (lib.filterAttrs (_: unit: !unit.def.enable) byName);
  # alias -> unit.
  aliases = lib.listToAttrs (
    lib.concatMap (unit: map (alias: lib.nameValuePair alias unit.name) unit.def.aliases) (
      lib.attrValues enabled
    )
  );
  wants = links "wants" "wantedBy" // links "requires" "requiredBy" // links "upholds" "upheldBy";

  udev = config.services.udev.enable;
  # A string: the value's words are run without a shell, the toplevel appended.
  installBootLoader = "${config.system.build.installBootLoader}";
  activation = lib.stringsWithDeps.textClosureMap lib.id activationEntries ownActivationNames;
  activationNames = ownActivationNames;
  configFile =
    if config.wslStorageMount.enable then "${config.wslStorageMount.configFile}" else null;
  etc = etcEntries;
  # Only the module's own packages (the NixOS-WSL modules' want nixpkgs').
  systemPackages = lib.concatMap (def: def.value) (
    lib.filter (def: ownFile def.file) options.environment.systemPackages.definitionsWithLocations
  );
}
