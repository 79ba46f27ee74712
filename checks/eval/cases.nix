# The evaluation tests. Each case: the modules to add to the module under
# test, and `checks = config: [ (expect "what must hold" bool) ... ]`.
# `stubOnly` cases look at what only the stubs record (builder arguments, an
# otherwise empty system); `fullOnly` cases need real NixOS (systemd.units);
# `needsNixosWsl` cases import the real NixOS-WSL modules from `nixosWsl` (a
# checkout; run.sh finds ../shared/nixos-wsl) with wsl.enable = true, and
# are left out without it.
# Each case runs against the stubs (run.sh) and, unless stubOnly, against
# real NixOS in `nix flake check` (checks/default.nix).
{
  lib,
  nixosWsl ? null,
}:

let
  inherit (lib)
    all
    any
    elem
    filter
    hasInfix
    hasPrefix
    hasSuffix
    length
    ;

  expect = what: ok: { inherit what ok; };

  uuid = "3d2f8c1e-7b4a-4e59-a0c6-5f1b2e9d8a47";
  serial = "E823_8FA6_BF53_0001_001B_448B_4ED0_B0F4.";

  base = {
    networking.hostName = "testhost";
    wslStorageMount = {
      enable = true;
      fsUuid = uuid;
    };
  };

  # What nixpkgs' nix-daemon module sets; the module must leave it alone.
  nixpkgsNixDaemon = {
    systemd.services.nix-daemon.unitConfig.RequiresMountsFor = "/nix/store";
  };

  stamp = "/run/wsl-storage-mount/bind-ok";
  marker = "nix-mount-marker.service";
  helperService = "wsl-storage-mount.service";

  contractKeys = [
    "device"
    "deviceId"
    "fsUuid"
    "fsLabel"
    "mountPoint"
    "fsType"
    "mountOptions"
    "waitTimeout"
    "fsckTimeout"
    "fsck"
    "instanceDirs"
    "bindMountNixStore"
    "nixStoreSubdir"
    "nixStoreCommand"
    "bootGenerations"
    "bindTarget"
    "onMissing"
    "diskSerialNumber"
    "mountName"
    "logFile"
    "windows"
  ];
  windowsKeys = [
    "trigger"
    "taskName"
    "scriptPath"
    "schtasksPath"
    "powershellPath"
    "triggerAttempts"
    "triggerTimeout"
    "logPath"
  ];

  svc = config: config.systemd.services.wsl-storage-mount;
  markerSvc = config: config.systemd.services.nix-mount-marker;
  mountsAt = where: config: filter (m: m.where == where) config.systemd.mounts;
  bindAt = where: config: builtins.head (mountsAt where config);

  helperCommand =
    config: command:
    "${lib.getExe config.wslStorageMount.package} --config ${config.wslStorageMount.configFile} ${command}";

  # What runs at build time: the build platform's helper.
  buildHelperCommand =
    config: command:
    "${lib.getExe config.wslStorageMount.buildPlatformPackage} --config ${config.wslStorageMount.configFile} ${command}";

  # The failed assertions of this module (NixOS has its own as well).
  ourFailures =
    config:
    filter (message: hasInfix "wslStorageMount" message) (
      map (a: a.message) (filter (a: !a.assertion) config.assertions)
    );

  # A case whose settings must fail exactly one assertion of ours, naming `option`.
  failsOnly = option: modules: {
    modules = [ base ] ++ modules;
    checks = config: [
      (expect "an assertion fires that names ${option}" (
        any (hasInfix option) (ourFailures config)
      ))
      (expect "exactly one assertion of the module fires" (length (ourFailures config) == 1))
    ];
  };

  # The real NixOS-WSL, enabled, in front of a case's modules.
  withNixosWsl = modules: {
    needsNixosWsl = true;
    modules = [
      (nixosWsl + "/modules")
      { wsl.enable = true; }
    ]
    ++ modules;
  };

  stubPkgs = import ./stub-pkgs.nix;
  bootLoaderScript = config: config.system.build.installBootLoader;

  # Another module's boot loader, and another module that wraps whatever the
  # boot loader ends up being with an `apply` (a timestamping wrapper).
  otherLoader = "/run/current-system/sw/bin/other-boot-loader --install";
  # Under real NixOS (checks/default.nix) grub would define one as well.
  plainBootLoader = {
    boot.loader.grub.enable = false;
    system.build.installBootLoader = otherLoader;
  };
  otherApply =
    { lib, pkgs, ... }:
    {
      options.system.build.installBootLoader = lib.mkOption {
        apply =
          loader:
          pkgs.writeShellScript "timestamped-boot-loader" ''
            date >> /var/log/boot-loader-installs
            exec ${loader} "$@"
          ''
          // {
            wraps = [ loader ];
          };
      };
    };
  # NixOS-WSL's boot loader (wsl-distro.nix), with the stub's coreutils.
  wslTrue = "${stubPkgs.coreutils}/bin/true";

  # The number of the first line of `text` that contains `needle` (null: none).
  lineOf =
    needle: text:
    let
      lines = lib.splitString "\n" text;
      hits = lib.filter (i: hasInfix needle (builtins.elemAt lines i)) (lib.range 0 (length lines - 1));
    in
    if hits == [ ] then null else builtins.head hits;
  syncSnippet = config: config.system.activationScripts.wslStorageMountSyncClosure;

  dependencyLists =
    unitDef: unitDef.after ++ unitDef.before ++ unitDef.requires ++ unitDef.wants ++ unitDef.wantedBy;
in
{
  helper-service = {
    modules = [ base ];
    checks = config: [
      (expect "wsl-storage-mount.service has DefaultDependencies=no" (
        !(svc config).unitConfig.DefaultDependencies
      ))
      (expect "wsl-storage-mount.service is Type=oneshot" ((svc config).serviceConfig.Type == "oneshot"))
      (expect "wsl-storage-mount.service has RemainAfterExit" (
        (svc config).serviceConfig.RemainAfterExit
      ))
      (expect "TimeoutStartSec is above waitTimeout (60)" (
        (svc config).serviceConfig.TimeoutStartSec > 60
      ))
      (expect "it runs before local-fs.target" (elem "local-fs.target" (svc config).before))
      (expect "it runs before nix.mount" (elem "nix.mount" (svc config).before))
      (expect "it runs before systemd-tmpfiles-setup.service" (
        elem "systemd-tmpfiles-setup.service" (svc config).before
      ))
      (expect "with udev on, it runs after systemd-udev-trigger.service" (
        elem "systemd-udev-trigger.service" (svc config).after
      ))
      (expect "with udev on, it wants systemd-udevd.service" (
        elem "systemd-udevd.service" (svc config).wants
      ))
      (expect "it conflicts with shutdown.target" (elem "shutdown.target" (svc config).conflicts))
      (expect "it is ordered before shutdown.target" (elem "shutdown.target" (svc config).before))
      (expect "local-fs.target wants it" (elem "local-fs.target" (svc config).wantedBy))
      (expect "ExecStart is the helper's mount with --config" (
        (svc config).serviceConfig.ExecStart == helperCommand config "mount"
      ))
      (expect "util-linux is on its PATH" (
        any (p: lib.getName p == "util-linux") (svc config).path
      ))
      (expect "the ext4 fsck (e2fsprogs) is on its PATH" (
        any (p: lib.getName p == "e2fsprogs") (svc config).path
      ))
      (expect "a switch does not restart it" (!(svc config).restartIfChanged))
      (expect "the helper is in systemPackages" (
        elem "${config.wslStorageMount.package}" (map toString config.environment.systemPackages)
      ))
    ];
  };

  timeout-follows-wait = {
    modules = [
      base
      { wslStorageMount.waitTimeout = 300; }
    ];
    checks = config: [
      (expect "TimeoutStartSec is waitTimeout 300 + 3 x 20 s of trigger + fsckAllowance 600" (
        (svc config).serviceConfig.TimeoutStartSec == 300 + 3 * 20 + 600
      ))
    ];
  };

  timeout-follows-triggers-and-fsck-allowance = {
    modules = [
      base
      {
        wslStorageMount = {
          waitTimeout = 30;
          fsckAllowance = 3600;
          windows.triggerAttempts = 5;
          windows.triggerTimeout = 40;
        };
      }
    ];
    checks = config: [
      (expect "TimeoutStartSec is 30 + 5 x 40 + 3600" (
        (svc config).serviceConfig.TimeoutStartSec == 30 + 5 * 40 + 3600
      ))
      (expect "the helper's fsckTimeout is the allowance" (config.wslStorageMount.generatedConfig.fsckTimeout == 3600))
    ];
  };

  fsck-tools-follow-fstype = {
    modules = [
      base
      { wslStorageMount.fsType = "xfs"; }
    ];
    checks = config: [
      (expect "xfsprogs is on the PATH for fsType xfs" (
        any (p: lib.getName p == "xfsprogs") (svc config).path
      ))
      (expect "e2fsprogs is not needed for xfs" (
        !(any (p: lib.getName p == "e2fsprogs") (svc config).path)
      ))
    ];
  };

  bind-mount = {
    modules = [ base ];
    checks =
      config:
      let
        bind = bindAt "/nix" config;
      in
      [
        (expect "exactly one mount unit has where = /nix" (length (mountsAt "/nix" config) == 1))
        (expect "it binds mountPoint/nixStoreSubdir" (
          bind.what == "/mnt/wsl/storage/nixos-wsl-testhost"
        ))
        (expect "it is a plain bind" (bind.type == "none" && bind.options == "bind"))
        (expect "it wants wsl-storage-mount.service" (elem helperService bind.wants))
        (expect "it does not require the helper (a helper restart would remount /nix)" (
          !(elem helperService bind.requires)
        ))
        (expect "it is ordered after wsl-storage-mount.service" (elem helperService bind.after))
        (expect "it is ordered before local-fs.target" (elem "local-fs.target" bind.before))
        (expect "local-fs.target wants it" (elem "local-fs.target" bind.wantedBy))
        (expect "it only proceeds when the helper wrote its stamp" (
          bind.unitConfig.ConditionPathExists == stamp
        ))
        (expect "removing it in a switch does not unmount /nix" (
          !bind.unitConfig."X-StopOnRemoval"
        ))
        (expect "no automount or idle timeout in its options" (
          !(hasInfix "automount" bind.options) && !(hasInfix "idle-timeout" bind.options)
        ))
        (expect "no automount unit at or under /nix" (
          all (a: a.where != "/nix" && !(hasPrefix "/nix/" a.where)) config.systemd.automounts
        ))
        (expect "no fileSystems.\"/nix\"" (!(config.fileSystems ? "/nix")))
      ];
  };

  # switch-to-configuration-ng restarts a changed mount unit (unmount, mount)
  # unless it is -.mount or nix.mount, which it reloads (a remount with the
  # new Options; What= and Where= stay as mounted). A restart of the bind
  # would swap the store under the running system: RefuseManualStop makes
  # systemd refuse that job (and a hand-made `systemctl stop`), while the
  # stop at shutdown, a dependency's, still happens.
  bind-mount-survives-a-switch = {
    modules = [
      base
      { wslStorageMount.bindTarget = "/nix-storage-test"; }
    ];
    checks =
      config:
      let
        bind = bindAt "/nix-storage-test" config;
      in
      [
        (expect "the bind unit refuses a manual stop or restart" (
          bind.unitConfig.RefuseManualStop or false
        ))
        (expect "and is not stopped when a switch removes it" (!bind.unitConfig."X-StopOnRemoval"))
      ];
  };

  marker = {
    modules = [ base ];
    checks = config: [
      (expect "nix-mount-marker.service is Type=oneshot" (
        (markerSvc config).serviceConfig.Type == "oneshot"
      ))
      (expect "the marker has RemainAfterExit" (markerSvc config).serviceConfig.RemainAfterExit)
      (expect "the marker has DefaultDependencies=no" (
        !(markerSvc config).unitConfig.DefaultDependencies
      ))
      (expect "the marker runs after nix.mount" (elem "nix.mount" (markerSvc config).after))
      (expect "the marker requires nix.mount (block)" (elem "nix.mount" (markerSvc config).requires))
      (expect "the marker runs before nix-daemon.service" (
        elem "nix-daemon.service" (markerSvc config).before
      ))
      (expect "the marker runs before nix-daemon.socket" (
        elem "nix-daemon.socket" (markerSvc config).before
      ))
      (expect "something at boot wants the marker" ((markerSvc config).wantedBy != [ ]))
      (expect "ExecStart is the helper's mark with --config" (
        (markerSvc config).serviceConfig.ExecStart == helperCommand config "mark"
      ))
    ];
  };

  nix-daemon-block = {
    modules = [
      base
      nixpkgsNixDaemon
    ];
    checks = config: [
      (expect "nix-daemon.service is ordered after the marker" (
        elem marker config.systemd.services.nix-daemon.after
      ))
      (expect "nix-daemon.service requires the marker" (
        elem marker config.systemd.services.nix-daemon.requires
      ))
      (expect "nix-daemon.socket is ordered after the marker" (
        elem marker config.systemd.sockets.nix-daemon.after
      ))
      (expect "nix-daemon.socket requires the marker" (
        elem marker config.systemd.sockets.nix-daemon.requires
      ))
      (expect "RequiresMountsFor of nix-daemon.service is still nixpkgs' /nix/store" (
        config.systemd.services.nix-daemon.unitConfig.RequiresMountsFor == "/nix/store"
      ))
      (expect "RequiresMountsFor is not set on nix-daemon.socket" (
        !(config.systemd.sockets.nix-daemon.unitConfig ? RequiresMountsFor)
      ))
    ];
  };

  nix-daemon-fallback = {
    modules = [
      base
      nixpkgsNixDaemon
      { wslStorageMount.onMissing = "fallback"; }
    ];
    checks =
      config:
      let
        bind = bindAt "/nix" config;
      in
      [
        (expect "nix-daemon.service is ordered after the marker" (
          elem marker config.systemd.services.nix-daemon.after
        ))
        (expect "nix-daemon.service does not require the marker" (
          !(elem marker config.systemd.services.nix-daemon.requires)
        ))
        (expect "nix-daemon.socket is ordered after the marker" (
          elem marker config.systemd.sockets.nix-daemon.after
        ))
        (expect "nix-daemon.socket does not require the marker" (
          !(elem marker config.systemd.sockets.nix-daemon.requires)
        ))
        (expect "the marker wants, not requires, nix.mount" (
          elem "nix.mount" (markerSvc config).wants && !(elem "nix.mount" (markerSvc config).requires)
        ))
        (expect "nix.mount wants, not requires, the helper service" (
          elem helperService bind.wants && !(elem helperService bind.requires)
        ))
        (expect "nix.mount still follows the helper service" (elem helperService bind.after))
        (expect "nix.mount still has the stamp condition" (bind.unitConfig.ConditionPathExists == stamp))
        (expect "RequiresMountsFor of nix-daemon.service is still nixpkgs' /nix/store" (
          config.systemd.services.nix-daemon.unitConfig.RequiresMountsFor == "/nix/store"
        ))
      ];
  };

  bind-target-names-units = {
    modules = [
      base
      { wslStorageMount.bindTarget = "/nix-storage-test"; }
    ];
    checks =
      config:
      let
        unitName = "nix\\x2dstorage\\x2dtest.mount";
        ours = [
          (svc config)
          (markerSvc config)
          (bindAt "/nix-storage-test" config)
        ];
      in
      [
        (expect "the bind mount's where is bindTarget" (
          length (mountsAt "/nix-storage-test" config) == 1 && mountsAt "/nix" config == [ ]
        ))
        (expect "the helper service runs before ${unitName}" (elem unitName (svc config).before))
        (expect "the marker follows ${unitName}" (elem unitName (markerSvc config).after))
        (expect "no unit of the module names nix.mount" (
          !(any (u: elem "nix.mount" (dependencyLists u)) ours)
        ))
        (expect "bindTarget reaches the helper's config" (
          config.wslStorageMount.generatedConfig.bindTarget == "/nix-storage-test"
        ))
      ];
  };

  unit-names-full = {
    fullOnly = true;
    modules = [
      base
      { wslStorageMount.bindTarget = "/nix-storage-test"; }
    ];
    checks = config: [
      (expect "NixOS names the bind unit nix\\x2dstorage\\x2dtest.mount" (
        config.systemd.units ? "nix\\x2dstorage\\x2dtest.mount"
      ))
      (expect "NixOS has wsl-storage-mount.service and nix-mount-marker.service" (
        config.systemd.units ? "wsl-storage-mount.service" && config.systemd.units ? "${marker}"
      ))
    ];
  };

  # Merging clashes across nixpkgs versions: only after/requires are added.
  never-redefines-requires-mounts-for = {
    modules = [ base ];
    checks =
      _:
      let
        dir = ../../nixos;
        files = lib.filter (hasSuffix ".nix") (lib.attrNames (builtins.readDir dir));
        codeLines =
          file:
          lib.filter (line: builtins.match "[[:space:]]*#.*" line == null) (
            lib.splitString "\n" (builtins.readFile (dir + "/${file}"))
          );
        defines =
          file: any (line: builtins.match ".*RequiresMountsFor\"?[[:space:]]*=.*" line != null) (codeLines file);
      in
      map (file: expect "nixos/${file} does not set RequiresMountsFor" (!(defines file))) files;
  };

  udev-beats-nixos-wsl-default = withNixosWsl [
    base
    { wslStorageMount.deviceId = "wwn-0x5000000000000001"; }
  ]
  // {
    checks = config: [
      (expect "with deviceId, udev is on despite NixOS-WSL's mkDefault false" config.services.udev.enable)
      (expect "the helper waits for udev's trigger" (
        elem "systemd-udev-trigger.service" (svc config).after
      ))
      (expect "no assertion or warning about udev" (
        ourFailures config == [ ] && !(any (hasInfix "services.udev.enable") config.warnings)
      ))
    ];
  };

  udev-for-device-under-dev-disk = withNixosWsl [
    base
    { wslStorageMount.device = "/dev/disk/by-partlabel/wsl-storage"; }
  ]
  // {
    checks = config: [
      (expect "a device under /dev/disk turns udev on" config.services.udev.enable)
    ];
  };

  udev-left-alone-with-fs-uuid = withNixosWsl [
    base
    {
      wslStorageMount.fsLabel = "wsl-storage";
      wslStorageMount.device = "/dev/sdb";
    }
  ]
  // {
    checks = config: [
      (expect "with fsUuid/fsLabel (and a device outside /dev/disk) udev stays off as NixOS-WSL set it" (
        !config.services.udev.enable
      ))
      (expect "without udev the helper is not ordered after udev's units" (
        !(any (hasPrefix "systemd-udev") ((svc config).after ++ (svc config).wants))
      ))
      (expect "no warning about udev" (!(any (hasInfix "services.udev.enable") config.warnings)))
    ];
  };

  # A plain `false` is what a user writes; before, it clashed with the
  # module's own `true` ("conflicting definition values").
  assert-device-id-without-udev = failsOnly "services.udev.enable" [
    {
      services.udev.enable = false;
      wslStorageMount.deviceId = "wwn-0x5000000000000001";
    }
  ];

  assert-device-id-without-udev-forced = failsOnly "services.udev.enable" [
    {
      services.udev.enable = lib.mkForce false;
      wslStorageMount.deviceId = "wwn-0x5000000000000001";
    }
  ];

  assert-device-id-without-udev-says-what-to-do = {
    modules = [
      base
      {
        services.udev.enable = false;
        wslStorageMount.device = "/dev/disk/by-id/wwn-0x5000000000000001";
      }
    ];
    checks = config: [
      (expect "udev stays off as the user set it" (!config.services.udev.enable))
      (expect "the assertion names the option that needs udev, the setting, and fsUuid as the fix" (
        any (
          m:
          hasInfix "wslStorageMount.device" m
          && hasInfix "services.udev.enable = false" m
          && hasInfix "wslStorageMount.fsUuid" m
        ) (ourFailures config)
      ))
    ];
  };

  assert-device-id-without-udev-nixos-wsl = withNixosWsl [
    base
    {
      services.udev.enable = false;
      wslStorageMount.deviceId = "wwn-0x5000000000000001";
    }
  ]
  // {
    checks = config: [
      (expect "next to NixOS-WSL too, one assertion of the module names services.udev.enable" (
        length (ourFailures config) == 1 && any (hasInfix "services.udev.enable") (ourFailures config)
      ))
    ];
  };

  boot-loader-chains-and-syncs = withNixosWsl [ base ] // {
    checks =
      config:
      let
        script = bootLoaderScript config;
      in
      [
        (expect "installBootLoader is the module's script" (
          hasInfix "wsl-storage-mount-install-boot-loader" "${script}"
        ))
        (expect "the script runs the previous boot loader (NixOS-WSL's true) on the toplevel" (
          lineOf "${wslTrue} \"$1\"" script.text != null
        ))
        (expect "and sync-boot on the toplevel, with the generated config" (
          lineOf "exec ${helperCommand config "sync-boot"} \"$1\"" script.text != null
        ))
        (expect "the previous boot loader runs first" (
          lineOf wslTrue script.text < lineOf "sync-boot" script.text
        ))
        (expect "it stops on the first failure" (hasInfix "set -eu" script.text))
      ];
  };

  # Another module wraps the boot loader with an `apply` of its own (public
  # configs do, e.g. to log each install). Before, the module's own `apply`
  # made that an evaluation error even with the module off.
  boot-loader-next-to-another-apply = withNixosWsl [
    base
    otherApply
  ]
  // {
    checks =
      config:
      let
        outer = bootLoaderScript config;
        inner = lib.head outer.wraps;
      in
      [
        (expect "the other module's apply wraps the final value" (
          outer.name == "timestamped-boot-loader"
        ))
        (expect "what it wraps is the module's script" (
          hasInfix "wsl-storage-mount-install-boot-loader" "${inner}"
        ))
        (expect "which chains NixOS-WSL's true, once" (
          lineOf "${wslTrue} \"$1\"" inner.text != null && !(hasInfix "timestamped" inner.text)
        ))
      ];
  };

  boot-loader-next-to-another-apply-disabled = withNixosWsl [
    base
    otherApply
    { wslStorageMount.enable = lib.mkForce false; }
  ]
  // {
    checks = config: [
      (expect "the other module's apply wraps NixOS-WSL's true directly" (
        (bootLoaderScript config).wraps == [ wslTrue ]
      ))
    ];
  };

  # The same without NixOS-WSL, so `nix flake check` runs it on real NixOS.
  boot-loader-next-to-another-apply-without-nixos-wsl = {
    modules = [
      base
      otherApply
      plainBootLoader
    ];
    checks =
      config:
      let
        outer = bootLoaderScript config;
        inner = lib.head outer.wraps;
      in
      [
        (expect "the other module's apply wraps the module's script" (
          outer.name == "timestamped-boot-loader"
          && hasInfix "wsl-storage-mount-install-boot-loader" "${inner}"
        ))
        (expect "which chains the plain boot loader" (lineOf "${otherLoader} \"$1\"" inner.text != null))
      ];
  };

  # A boot loader set by another module with a plain definition (no
  # NixOS-WSL): chained when enabled, untouched when not.
  boot-loader-plain-definition = {
    modules = [
      base
      plainBootLoader
    ];
    checks =
      config:
      let
        script = bootLoaderScript config;
      in
      [
        (expect "installBootLoader is the module's script" (
          hasInfix "wsl-storage-mount-install-boot-loader" "${script}"
        ))
        (expect "which runs the other module's boot loader on the toplevel, then sync-boot" (
          lineOf "${otherLoader} \"$1\"" script.text != null
          && lineOf otherLoader script.text < lineOf "sync-boot" script.text
        ))
      ];
  };

  boot-loader-plain-definition-disabled = {
    modules = [
      base
      plainBootLoader
      { wslStorageMount.enable = lib.mkForce false; }
    ];
    checks = config: [
      (expect "installBootLoader is the other module's, unchanged" (
        bootLoaderScript config == otherLoader
      ))
    ];
  };

  # Over mkForce too: the module's definition is the one the unique type
  # sees, and the forced one is chained.
  boot-loader-over-mkforce = withNixosWsl [
    base
    { system.build.installBootLoader = lib.mkForce otherLoader; }
  ]
  // {
    checks = config: [
      (expect "the forced boot loader is chained, NixOS-WSL's true is not" (
        lineOf otherLoader (bootLoaderScript config).text != null
        && lineOf wslTrue (bootLoaderScript config).text == null
      ))
    ];
  };

  boot-loader-is-the-module-s-full = {
    fullOnly = true;
    modules = [ base ];
    checks = config: [
      (expect "installBootLoader is the module's script under real NixOS" (
        hasInfix "wsl-storage-mount-install-boot-loader" "${config.system.build.installBootLoader}"
      ))
      (expect "the activation snippet is in the activation script" (
        hasInfix "sync-boot --closure-only" config.system.activationScripts.script
      ))
    ];
  };

  boot-loader-default-previous = {
    stubOnly = true;
    modules = [ base ];
    checks = config: [
      (expect "NixOS's default (a shell snippet) is run word by word, as switch-to-configuration does" (
        hasInfix "'1>&2;' true \"$1\"" (bootLoaderScript config).text
      ))
    ];
  };

  activation-syncs-the-closure = withNixosWsl [ base ] // {
    checks =
      config:
      let
        snippet = syncSnippet config;
        scripts = removeAttrs config.system.activationScripts [ "script" ];
        # NixOS's order of the snippets (lib.textClosureList, as NixOS's
        # activation script uses it: an unknown dep is an error), by name.
        order = lib.textClosureList (lib.mapAttrs (
          name: v: if lib.isString v then name else v // { text = name; }
        ) scripts) (lib.attrNames scripts);
        ranks = lib.listToAttrs (lib.imap0 (i: name: lib.nameValuePair name i) order);
        linksIntoRoot = [
          "etc"
          "binsh"
          "usrbinenv"
          "shimSystemd"
          "populateBin"
          "createSbin"
        ];
      in
      [
        (expect "an activation snippet runs sync-boot --closure-only on $systemConfig" (
          hasInfix "${helperCommand config "sync-boot"} --closure-only \"$systemConfig\"" snippet.text
        ))
        (expect "its deps are NixOS-WSL's and NixOS's snippets that link into /" (
          all (dep: elem dep snippet.deps) [
            "etc"
            "binsh"
            "usrbinenv"
            "shimSystemd"
            "populateBin"
          ]
        ))
        (expect "every dep exists, so NixOS's activation script builds" (
          hasInfix "sync-boot --closure-only" config.system.activationScripts.script
        ))
        (expect "it runs after every snippet that links into / (createSbin through shimSystemd)" (
          all (name: ranks.${name} < ranks.wslStorageMountSyncClosure) linksIntoRoot
        ))
        (expect "it is left out of dry-activate" (!snippet.supportsDryActivation))
      ];
  };

  no-sync-without-bind = withNixosWsl [
    base
    { wslStorageMount.bindMountNixStore = false; }
  ]
  // {
    checks = config: [
      (expect "installBootLoader stays NixOS-WSL's" (bootLoaderScript config == wslTrue))
      (expect "no activation snippet" (!(config.system.activationScripts ? wslStorageMountSyncClosure)))
    ];
  };

  no-sync-when-disabled = withNixosWsl [ { wslStorageMount.fsUuid = uuid; } ] // {
    checks = config: [
      (expect "installBootLoader stays NixOS-WSL's" (bootLoaderScript config == wslTrue))
      (expect "no activation snippet" (!(config.system.activationScripts ? wslStorageMountSyncClosure)))
      (expect "udev stays off as NixOS-WSL set it" (!config.services.udev.enable))
      (expect "no unit of the module" (
        !(config.systemd.services ? wsl-storage-mount) && mountsAt "/nix" config == [ ]
      ))
      (expect "no initTimeout in wsl.conf" (config.wsl.wslConf.boot.initTimeout == null))
    ];
  };

  package-from-overlay = {
    stubOnly = true;
    modules = [
      base
      (
        { pkgs, ... }:
        {
          _module.args.pkgs = lib.mkForce (
            (import ./stub-pkgs.nix)
            // {
              wsl-storage-mount = pkgs.writeTextFile {
                name = "wsl-storage-mount-from-overlay";
                text = "";
              };
            }
          );
        }
      )
    ];
    checks = config: [
      (expect "package defaults to pkgs.wsl-storage-mount when the overlay provides it" (
        config.wslStorageMount.package.name == "wsl-storage-mount-from-overlay"
      ))
    ];
  };

  cross-build-checks-with-the-build-platform-helper = {
    stubOnly = true;
    modules = [
      base
      {
        _module.args.pkgs = lib.mkForce (
          let
            stub = import ./stub-pkgs.nix;
          in
          stub
          // {
            stdenv = stub.stdenv // {
              buildPlatform.canExecute = _: false;
            };
            buildPackages = stub // {
              wsl-storage-mount = stub.writeTextFile {
                name = "wsl-storage-mount-for-the-build-platform";
                text = "";
              };
            };
          }
        );
      }
    ];
    checks =
      config:
      let
        cfg = config.wslStorageMount;
      in
      [
        (expect "the system gets the host's helper" (hasSuffix "/package.nix" cfg.package.calledWith))
        (expect "the config's check runs the build platform's helper" (
          hasInfix "${cfg.buildPlatformPackage}" cfg.configFile.checkPhase
          && cfg.buildPlatformPackage.name == "wsl-storage-mount-for-the-build-platform"
        ))
        (expect "the units run the host's helper" (
          hasInfix "${cfg.package}/bin/" (svc config).serviceConfig.ExecStart
        ))
      ];
  };

  boot-generations = {
    modules = [
      base
      { wslStorageMount.bootGenerations = 3; }
    ];
    checks = config: [
      (expect "bootGenerations reaches the helper's config" (
        config.wslStorageMount.generatedConfig.bootGenerations == 3
      ))
    ];
  };

  # NixOS-WSL's automount.root must match ^/(.*[^/])?$: no trailing '/'.
  windows-paths-follow-automount-root = withNixosWsl [
    base
    { wsl.wslConf.automount.root = "/win"; }
  ]
  // {
    checks =
      config:
      let
        inherit (config.wslStorageMount.generatedConfig) windows;
      in
      [
        (expect "schtasksPath follows wsl.wslConf.automount.root" (
          windows.schtasksPath == "/win/c/Windows/System32/schtasks.exe"
        ))
        (expect "powershellPath follows wsl.wslConf.automount.root" (
          windows.powershellPath == "/win/c/Windows/System32/WindowsPowerShell/v1.0/powershell.exe"
        ))
      ];
  };

  windows-paths-default-automount-root = withNixosWsl [ base ] // {
    checks = config: [
      (expect "schtasksPath is under NixOS-WSL's default root /mnt" (
        config.wslStorageMount.generatedConfig.windows.schtasksPath == "/mnt/c/Windows/System32/schtasks.exe"
      ))
    ];
  };

  windows-paths-without-nixos-wsl = {
    modules = [ base ];
    checks =
      config:
      let
        inherit (config.wslStorageMount.generatedConfig) windows;
      in
      [
        (expect "schtasksPath defaults to /mnt/c/..." (
          windows.schtasksPath == "/mnt/c/Windows/System32/schtasks.exe"
        ))
        (expect "powershellPath defaults to /mnt/c/..." (
          windows.powershellPath == "/mnt/c/Windows/System32/WindowsPowerShell/v1.0/powershell.exe"
        ))
      ];
  };

  # WSL waits boot.initTimeout for the boot, and as long for
  # `systemctl poweroff` at terminate and for user@<uid>.service at login.
  wsl-init-timeout-serves-the-boot = withNixosWsl [ base ] // {
    checks =
      config:
      let
        timeout = config.wsl.wslConf.boot.initTimeout;
      in
      [
        (expect "initTimeout (ms) covers the wait for the disk and the Windows trigger, plus 30 s" (
          timeout == (60 + 3 * 20 + 30) * 1000
        ))
        (expect "it leaves out fsckAllowance (600 s): a hung shutdown would wait that long too" (
          timeout < (svc config).serviceConfig.TimeoutStartSec * 1000
        ))
        (expect "wsl.conf says so, under [boot]" (
          hasInfix "[boot]" config.environment.etc."wsl.conf".text
          && hasInfix "initTimeout=150000" config.environment.etc."wsl.conf".text
        ))
      ];
  };

  wsl-init-timeout-is-bounded = withNixosWsl [
    base
    {
      wslStorageMount.waitTimeout = 900;
      wslStorageMount.fsckAllowance = 3600;
    }
  ]
  // {
    checks = config: [
      (expect "a long waitTimeout stretches initTimeout to 3 minutes at most" (
        config.wsl.wslConf.boot.initTimeout == 180 * 1000
      ))
    ];
  };

  wsl-init-timeout-user-value = withNixosWsl [
    base
    { wsl.wslConf.boot.initTimeout = 20000; }
  ]
  // {
    checks = config: [
      (expect "a value the user sets wins" (config.wsl.wslConf.boot.initTimeout == 20000))
    ];
  };

  no-bind = {
    modules = [
      base
      nixpkgsNixDaemon
      { wslStorageMount.bindMountNixStore = false; }
    ];
    checks = config: [
      (expect "no mount unit for /nix" (mountsAt "/nix" config == [ ]))
      (expect "no marker service" (!(config.systemd.services ? nix-mount-marker)))
      (expect "nix-daemon.service is not tied to the marker" (
        !(elem marker (config.systemd.services.nix-daemon.after ++ config.systemd.services.nix-daemon.requires))
      ))
      (expect "the helper service still mounts the disk" (
        (svc config).serviceConfig.ExecStart == helperCommand config "mount"
      ))
      (expect "the config says bindMountNixStore = false" (
        !config.wslStorageMount.generatedConfig.bindMountNixStore
      ))
    ];
  };

  nix-disabled = {
    modules = [
      base
      { nix.enable = false; }
    ];
    checks = config: [
      (expect "nix-daemon.service gets no dependency on the marker" (
        !(elem marker (config.systemd.services.nix-daemon.after or [ ]))
      ))
      (expect "nix-daemon.socket gets no dependency on the marker" (
        !(elem marker (config.systemd.sockets.nix-daemon.after or [ ]))
      ))
    ];
  };

  config-json = {
    modules = [ base ];
    checks =
      config:
      let
        json = config.wslStorageMount.generatedConfig;
      in
      [
        (expect "only keys the helper knows" (all (key: elem key contractKeys) (lib.attrNames json)))
        (expect "only windows keys the helper knows" (
          all (key: elem key windowsKeys) (lib.attrNames json.windows)
        ))
        (expect "no null values are written" (
          all (v: v != null) (lib.attrValues json ++ lib.attrValues json.windows)
        ))
        (expect "fsUuid is written" (json.fsUuid == uuid))
        (expect "bindMountNixStore is written as true" json.bindMountNixStore)
        (expect "nixStoreSubdir defaults to nixos-wsl-<hostName>" (
          json.nixStoreSubdir == "nixos-wsl-testhost"
        ))
        (expect "the nixStoreSubdir dir exists, root:root 0755" (
          json.instanceDirs.nixos-wsl-testhost == {
            owner = "root";
            group = "root";
            mode = "0755";
          }
        ))
        (expect "nixStoreCommand is config.nix.package's nix-store" (
          json.nixStoreCommand == lib.getExe' config.nix.package "nix-store"
        ))
        (expect "mountPoint defaults to /mnt/wsl/storage" (json.mountPoint == "/mnt/wsl/storage"))
        (expect "onMissing defaults to block" (json.onMissing == "block"))
        (expect "bindTarget defaults to /nix" (json.bindTarget == "/nix"))
        (expect "/etc/wsl-storage-mount/config.json is the generated file" (
          "${config.environment.etc."wsl-storage-mount/config.json".source}"
          == "${config.wslStorageMount.configFile}"
        ))
      ];
  };

  config-file-checked = {
    stubOnly = true;
    modules = [ base ];
    checks =
      config:
      let
        file = config.wslStorageMount.configFile;
      in
      [
        (expect "the file is builtins.toJSON of the settings" (
          file.text == builtins.toJSON config.wslStorageMount.generatedConfig
        ))
        (expect "its build runs the helper's check on it" (
          hasInfix ''${lib.getExe config.wslStorageMount.package} --config "$out" check'' file.checkPhase
        ))
        (expect "not cross-compiled: the build-time helper is the package itself" (
          config.wslStorageMount.buildPlatformPackage == config.wslStorageMount.package
        ))
        (expect "the default package is this repository's package.nix" (
          hasSuffix "/package.nix" config.wslStorageMount.package.calledWith
        ))
      ];
  };

  instance-dirs-merge = {
    modules = [
      base
      {
        wslStorageMount.instanceDirs.shared = {
          owner = 1000;
          group = "users";
          mode = "2775";
        };
      }
    ];
    checks =
      config:
      let
        dirs = config.wslStorageMount.generatedConfig.instanceDirs;
      in
      [
        (expect "a user's dir is written as given" (
          dirs.shared == {
            owner = 1000;
            group = "users";
            mode = "2775";
          }
        ))
        (expect "the store's dir is still there" (dirs ? nixos-wsl-testhost))
      ];
  };

  windows-files = {
    modules = [
      base
      { wslStorageMount.diskSerialNumber = serial; }
    ];
    checks = config: [
      (expect "attach.ps1 is under /etc/wsl-storage-mount" (
        config.environment.etc ? "wsl-storage-mount/attach.ps1"
      ))
      (expect "register-task.ps1 is under /etc/wsl-storage-mount" (
        config.environment.etc ? "wsl-storage-mount/register-task.ps1"
      ))
      (expect "no install service unless windows.installFiles" (
        !(config.systemd.services ? wsl-storage-mount-windows-files)
      ))
    ];
  };

  windows-files-without-serial = {
    modules = [ base ];
    checks = config: [
      (expect "no attach.ps1 without diskSerialNumber (the helper would refuse it)" (
        !(config.environment.etc ? "wsl-storage-mount/attach.ps1")
      ))
      (expect "no register-task.ps1 without diskSerialNumber" (
        !(config.environment.etc ? "wsl-storage-mount/register-task.ps1")
      ))
    ];
  };

  windows-files-generated = {
    stubOnly = true;
    modules = [
      base
      { wslStorageMount.diskSerialNumber = serial; }
    ];
    checks = config: [
      (expect "attach.ps1 is the build platform helper's windows-script" (
        hasInfix (buildHelperCommand config "windows-script")
          config.environment.etc."wsl-storage-mount/attach.ps1".source.buildCommand
      ))
      (expect "register-task.ps1 is the build platform helper's windows-task" (
        hasInfix (buildHelperCommand config "windows-task")
          config.environment.etc."wsl-storage-mount/register-task.ps1".source.buildCommand
      ))
    ];
  };

  windows-install-files = {
    modules = [
      base
      {
        wslStorageMount.diskSerialNumber = serial;
        wslStorageMount.windows.installFiles = true;
      }
    ];
    checks =
      config:
      let
        install = config.systemd.services.wsl-storage-mount-windows-files;
      in
      [
        (expect "the install service runs install-windows-files, failure ignored" (
          install.serviceConfig.ExecStart == "-${helperCommand config "install-windows-files"}"
        ))
        # A unit a target wants is ordered before that target unless it has
        # DefaultDependencies=no; after it as well would be a cycle, and
        # systemd would drop the job.
        (expect "it runs after multi-user.target, which wants it" (
          elem "multi-user.target" install.after && elem "multi-user.target" install.wantedBy
        ))
        (expect "without default dependencies, so that is no ordering cycle" (
          install.unitConfig.DefaultDependencies == false
        ))
        (expect "stopped at shutdown, as default dependencies would" (
          elem "shutdown.target" install.conflicts && elem "shutdown.target" install.before
        ))
        (expect "installFiles is not written to the helper's config" (
          !(config.wslStorageMount.generatedConfig.windows ? installFiles)
        ))
      ];
  };

  logrotate = {
    modules = [
      base
      { wslStorageMount.logFile = "/var/log/storage.log"; }
    ];
    checks = config: [
      (expect "logrotate rotates logFile" (
        config.services.logrotate.settings.wsl-storage-mount.files == "/var/log/storage.log"
      ))
      (expect "logFile reaches the helper's config" (
        config.wslStorageMount.generatedConfig.logFile == "/var/log/storage.log"
      ))
    ];
  };

  valid-settings-pass = {
    modules = [
      base
      {
        wslStorageMount = {
          windows = {
            trigger = "task";
            taskName = "wsl-storage-mount";
          };
          diskSerialNumber = "0000_0000_0000_0001.";
          deviceId = "wwn-0x5000000000000001";
        };
      }
    ];
    checks = config: [
      (expect "no assertion of the module fires" (ourFailures config == [ ]))
      (expect "no warning about deviceId" (
        !(any (hasInfix "wslStorageMount.deviceId") config.warnings)
      ))
    ];
  };

  assert-device-identity = failsOnly "wslStorageMount.fsUuid" [
    { wslStorageMount.fsUuid = lib.mkForce null; }
  ];

  assert-nixStoreSubdir-dotdot = failsOnly "wslStorageMount.nixStoreSubdir" [
    { wslStorageMount.nixStoreSubdir = ".."; }
  ];

  assert-nixStoreSubdir-slash = failsOnly "wslStorageMount.nixStoreSubdir" [
    { wslStorageMount.nixStoreSubdir = "nix/store"; }
  ];

  assert-nixStoreSubdir-null = failsOnly "wslStorageMount.bindMountNixStore" [
    { wslStorageMount.nixStoreSubdir = null; }
  ];

  assert-instanceDirs-name = failsOnly "\"../other\"" [
    { wslStorageMount.instanceDirs."../other" = { }; }
  ];

  assert-mountPoint-relative = failsOnly "wslStorageMount.mountPoint" [
    { wslStorageMount.mountPoint = "mnt/wsl/storage"; }
  ];

  assert-mountPoint-under-nix = failsOnly "wslStorageMount.mountPoint" [
    { wslStorageMount.mountPoint = "/nix/storage"; }
  ];

  # The VM tests bind elsewhere; the disk must still stay out of /nix.
  assert-mountPoint-under-nix-other-target = failsOnly "wslStorageMount.mountPoint" [
    {
      wslStorageMount.bindTarget = "/nix-storage-test";
      wslStorageMount.mountPoint = "/nix/storage";
    }
  ];

  assert-mountPoint-root = failsOnly "wslStorageMount.mountPoint" [
    { wslStorageMount.mountPoint = "/"; }
  ];

  assert-fileSystems-nix = failsOnly "fileSystems.\"/nix\"" [
    {
      fileSystems."/nix" = {
        device = "/mnt/wsl/storage/nixos-wsl-testhost";
        fsType = "none";
        options = [ "bind" ];
      };
    }
  ];

  assert-vfat-store = failsOnly "wslStorageMount.fsType" [
    { wslStorageMount.fsType = "vfat"; }
  ];

  assert-task-needs-name = failsOnly "wslStorageMount.windows.taskName" [
    {
      wslStorageMount.windows.trigger = "task";
      wslStorageMount.diskSerialNumber = "0000_0000_0000_0001.";
    }
  ];

  assert-task-needs-serial = failsOnly "wslStorageMount.diskSerialNumber" [
    {
      wslStorageMount.windows.trigger = "task";
      wslStorageMount.windows.taskName = "wsl-storage-mount";
    }
  ];

  assert-install-files-needs-serial = failsOnly "wslStorageMount.diskSerialNumber" [
    { wslStorageMount.windows.installFiles = true; }
  ];

  warn-nvme-device-id = {
    modules = [
      base
      { wslStorageMount.deviceId = "nvme-Example_SSD_4TB_0000"; }
    ];
    checks = config: [
      (expect "a warning names deviceId and suggests fsUuid" (
        any (w: hasInfix "wslStorageMount.deviceId" w && hasInfix "fsUuid" w) config.warnings
      ))
    ];
  };

  # The stubs reject what NixOS rejects (stub-nixos.nix): each value beside
  # a valid one at the same place, so the failure is the value's. (An
  # activation snippet after a missing one fails as in NixOS, with an error
  # tryEval cannot catch: activation-syncs-the-closure builds the script.)
  stubs-reject-what-nixos-rejects = {
    stubOnly = true;
    modules = [ base ];
    checks =
      _:
      let
        evalStub = import ./stub.nix { inherit lib; };
        evaluates = modules: read: (builtins.tryEval (builtins.deepSeq (read (evalStub modules)) true)).success;
        pair =
          what: read: good: bad:
          expect "the stubs take a valid ${what} and reject ${bad.why}" (
            evaluates [ good ] read && !(evaluates [ (removeAttrs bad [ "why" ]) ] read)
          );
        # What the twin renders; startLimitBurst and the like have no
        # default in NixOS either, so the whole unit is not forced.
        service =
          c:
          let
            unit = c.systemd.services.x;
          in
          {
            inherit (unit)
              description
              path
              wants
              unitConfig
              serviceConfig
              environment
              restartIfChanged
              ;
          };
      in
      [
        (pair "unit description" service { systemd.services.x.description = "one line"; } {
          why = "a description of two lines";
          systemd.services.x.description = "two\nlines";
        })
        (pair "service Type" service { systemd.services.x.serviceConfig.Type = "oneshot"; } {
          why = "Type = oneshoot";
          systemd.services.x.serviceConfig.Type = "oneshoot";
        })
        (pair "unit value" service { systemd.services.x.serviceConfig.ExecStart = "/bin/true"; } {
          why = "a value no unit file can hold (an attribute set)";
          systemd.services.x.serviceConfig.ExecStart = {
            command = "/bin/true";
          };
        })
        (pair "service path" service { systemd.services.x.path = [ "/run/wrappers" ]; } {
          why = "a number in path";
          systemd.services.x.path = [ 1 ];
        })
        (pair "service option" service { systemd.services.x.restartIfChanged = false; } {
          why = "an option NixOS does not have";
          systemd.services.x.restartIfChnaged = false;
        })
        (pair "dependency" service { systemd.services.x.wants = [ "a.service" ]; } {
          why = "a dependency that is no unit name";
          systemd.services.x.wants = [ "a" ];
        })
        (pair "mount unit"
          (
            c:
            map (m: {
              inherit (m)
                what
                where
                unitConfig
                mountConfig
                ;
            }) c.systemd.mounts
          )
          {
            systemd.mounts = [
              {
                what = "/a";
                where = "/b";
              }
            ];
          }
          {
            why = "a mount unit without what";
            systemd.mounts = [ { where = "/b"; } ];
          }
        )
        (pair "package list" (c: c.environment.systemPackages)
          { environment.systemPackages = [ (import ./stub-pkgs.nix).jq ]; }
          {
            why = "a string in systemPackages";
            environment.systemPackages = [ "jq" ];
          }
        )
        (pair "host name" (c: c.networking.hostName) { networking.hostName = "main"; } {
          why = "a host name with a dot";
          networking.hostName = "main.example";
        })
        (pair "logrotate setting" (c: c.services.logrotate.settings)
          { services.logrotate.settings.x.files = "/var/log/x.log"; }
          {
            why = "a number as the files to rotate";
            services.logrotate.settings.x.files = 4;
          }
        )
      ];
  };

  # Imported and off next to the real NixOS-WSL and a module with its own
  # `apply` on the boot loader: the same system as without the module, in
  # everything the stubs can show.
  disabled-equals-not-imported = withNixosWsl [ otherApply ] // {
    stubOnly = true;
    checks =
      config:
      let
        without = import ./stub.nix {
          inherit lib nixosWsl;
          withModule = false;
        } [ otherApply ];
        units =
          c:
          lib.mapAttrs (_: u: {
            inherit (u) unitConfig serviceConfig wantedBy;
          }) c.systemd.services;
        mounts = c: map (m: m.mountConfig // m.unitConfig) c.systemd.mounts;
        same = what: read: expect "${what} is the same as without the module" (read config == read without);
      in
      [
        (same "systemd.services" units)
        (same "systemd.sockets" (c: lib.attrNames c.systemd.sockets))
        (same "systemd.mounts" mounts)
        (same "installBootLoader" (c: "${c.system.build.installBootLoader}"))
        (same "the activation script" (c: c.system.activationScripts.script))
        (same "wsl.conf" (c: c.environment.etc."wsl.conf".text))
        (same "/etc" (c: lib.attrNames c.environment.etc))
        (same "systemPackages" (c: map toString c.environment.systemPackages))
        (same "services.udev.enable" (c: c.services.udev.enable))
        (same "services.logrotate.settings" (c: c.services.logrotate.settings))
        (same "the assertions" (c: map (a: a.message) (lib.filter (a: !a.assertion) c.assertions)))
        (same "the warnings" (c: c.warnings))
      ];
  };

  disabled-generates-nothing = {
    stubOnly = true;
    modules = [
      {
        wslStorageMount.fsUuid = uuid;
        # What NixOS-WSL sets; an enabled module would turn udev on.
        services.udev.enable = lib.mkDefault false;
        # Any use of pkgs would fail: a disabled module must not touch it.
        _module.args.pkgs = lib.mkForce (throw "pkgs was used with wslStorageMount.enable = false");
      }
    ];
    checks = config: [
      (expect "no systemd services" (config.systemd.services == { }))
      (expect "no systemd sockets" (config.systemd.sockets == { }))
      (expect "no mount units" (config.systemd.mounts == [ ]))
      (expect "no automount units" (config.systemd.automounts == [ ]))
      (expect "no files in /etc" (config.environment.etc == { }))
      (expect "no packages" (config.environment.systemPackages == [ ]))
      (expect "no logrotate settings" (config.services.logrotate.settings == { }))
      (expect "udev left as NixOS-WSL set it" (!config.services.udev.enable))
      (expect "no assertions" (config.assertions == [ ]))
      (expect "no warnings" (config.warnings == [ ]))
    ];
  };
}
// import ./cases-binds.nix { inherit lib; }
// import ./cases-dedupe.nix { inherit lib; }
