# A toy NixOS-WSL generation for the boot twin, built from the module's own
# evaluation (./render.nix) with the stand-in packages of ./pkgs.nix:
#
#   nix-build checks/twin/system.nix --option sandbox false \
#     --argstr libPath /work/shared/nixpkgs-lib/lib \
#     --argstr helperBinary "$PWD/target/release/wsl-storage-mount" \
#     --argstr settingsJson '{"wslStorageMount": {...}}' \
#     --argstr generation 1 --no-out-link
#
# The toplevel stands in for a NixOS-WSL system (DESIGN.md, "The store's
# life"): what the shim, activation and switch-to-configuration of a real one
# do with it, a Debian trixie guest does with this one, using its own systemd
# and Nix.
{
  libPath,
  helperBinary,
  settingsJson ? "{}",
  generation ? "1",
  # A NixOS-WSL checkout (../shared/nixos-wsl): its real modules are
  # evaluated with the module; "" for the stand-ins of what they set.
  nixosWslPath ? "",
}:

let
  lib = import (/. + libPath);
  pkgs = import ./pkgs.nix { inherit lib helperBinary; };
  rendered = import ./render.nix {
    inherit lib pkgs;
    settings = builtins.fromJSON settingsJson;
    # NixOS's options stubbed as checks/eval stubs them; with a NixOS-WSL
    # checkout its real modules too (else render.nix plays their part).
    wslModules = lib.optionals (nixosWslPath != "") [
      (/. + nixosWslPath + "/modules")
      {
        wsl.enable = true;
        _module.args.modulesPath = toString ../eval/stub-modules;
      }
    ];
  };

  q = lib.escapeShellArg;

  # nixos/lib/systemd-lib.nix mkPathSafeName.
  pathSafe = lib.replaceStrings [ "@" ":" "\\" "[" "]" ] [ "-" "-" "-" "" "" ];

  # One store path per unit file, as makeUnit builds them.
  unitFile =
    name: text:
    pkgs.writeTextFile {
      name = "unit-${pathSafe name}";
      inherit text;
      destination = "/${name}";
    };

  # Relative paths under etc/systemd/system, each a link the activation puts
  # in the guest's /etc/systemd/system (through /etc/static).
  unitEntries =
    lib.attrNames rendered.units
    ++ map (name: "${name}.d/overrides.conf") (lib.attrNames rendered.dropins)
    ++ rendered.masked
    ++ lib.attrNames rendered.aliases
    ++ lib.concatLists (lib.mapAttrsToList (dir: names: map (n: "${dir}/${n}") names) rendered.wants);

  # generateUnits: the units directory of this system.
  units = pkgs.runCommand "system-units" { } (
    ''
      mkdir -p $out
    ''
    + lib.concatStrings (
      lib.mapAttrsToList (name: text: ''
        ln -s ${unitFile name text}/${q name} $out/${q name}
      '') rendered.units
    )
    + lib.concatStrings (
      lib.mapAttrsToList (name: text: ''
        mkdir -p $out/${q "${name}.d"}
        ln -s ${unitFile name text}/${q name} $out/${q "${name}.d"}/overrides.conf
      '') rendered.dropins
    )
    + lib.concatMapStrings (name: ''
      ln -s /dev/null $out/${q name}
    '') rendered.masked
    + lib.concatStrings (
      lib.mapAttrsToList (alias: name: ''
        ln -sfn ${q name} $out/${q alias}
      '') rendered.aliases
    )
    + lib.concatStrings (
      lib.mapAttrsToList (
        dir: names:
        ''
          mkdir -p $out/${q dir}
        ''
        + lib.concatMapStrings (name: ''
          ln -sfn ../${q name} $out/${q dir}/
        '') names
      ) rendered.wants
    )
  );

  # /etc of this system: the units and every environment.etc entry.
  etc = pkgs.runCommand "etc" { } (
    ''
      mkdir -p $out/etc/systemd
      ln -s ${units} $out/etc/systemd/system
    ''
    + lib.concatStrings (
      lib.mapAttrsToList (path: source: ''
        mkdir -p "$(dirname $out/etc/${q path})"
        ln -s ${q source} $out/etc/${q path}
      '') rendered.etc
    )
  );

  # environment.systemPackages: their bin/ in sw/bin, as buildEnv does.
  sw = pkgs.runCommand "system-path" { } (
    ''
      mkdir -p $out/bin
    ''
    + lib.concatMapStrings (pkg: ''
      for f in ${pkg}/bin/*; do
        [ -e "$f" ] || [ -L "$f" ] || continue
        ln -sfn "$f" $out/bin/
      done
    '') rendered.systemPackages
  );

  # Stands in for NixOS-WSL's systemd-shim (utils/src/shim.rs), which WSL
  # runs as /sbin/init. A shell script: the guest has no Rust shim.
  shim = pkgs.writeTextFile {
    name = "twin-systemd-shim";
    executable = true;
    destination = "/bin/systemd-shim";
    text = ''
      #!/bin/sh
      # The boot twin's stand-in for NixOS-WSL's systemd-shim (utils/src/shim.rs).
      export PATH=/usr/sbin:/usr/bin:/sbin:/bin

      # --- What WSL's init does before it runs /sbin/init (not the shim) ---
      # The kernel file systems and a fresh /run (every start of a WSL
      # instance has an empty /run: /run/booted-system must not survive a
      # reboot). An initramfs has usually mounted them already.
      mountpoint -q /proc || mount -t proc proc /proc
      mountpoint -q /sys || mount -t sysfs sysfs /sys
      mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
      mountpoint -q /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
      # WSL starts the distro with no initramfs; the twin's kernel boots
      # through Debian's, whose udev leaves its /dev/disk links and its
      # database behind. Gone, so a boot without udev sees what WSL's does.
      rm -rf /dev/disk /run/udev
      # WSL's /mnt/wsl is one tmpfs shared by every instance (where
      # `wsl --mount` puts disks), a shared mount.
      mkdir -p /mnt/wsl
      mountpoint -q /mnt/wsl || mount -t tmpfs -o mode=0755 tmpfs /mnt/wsl
      mount --make-shared /mnt/wsl

      # --- The shim ---
      # / (and everything under it) shared, as systemd expects.
      mount --make-rshared /
      # The store read-only, as on NixOS: a bind of /nix/store onto itself.
      mount --bind /nix/store /nix/store
      mount -o remount,bind,ro /nix/store
      # The system profile's activation, its output in the kernel log; its
      # status is ignored, as the shim ignores it. (The shim stops when it
      # cannot open /dev/kmsg; a twin that cannot boot says less, so the
      # output goes to the console then.)
      if [ -w /dev/kmsg ]; then
        LANG=C.UTF-8 /nix/var/nix/profiles/system/activate >/dev/kmsg 2>&1
      else
        echo "twin shim: /dev/kmsg is not writable; activation output on the console" >&2
        LANG=C.UTF-8 /nix/var/nix/profiles/system/activate
      fi
      # systemd of the profile (the twin's links to the guest's). The shim
      # passes its own argv[0]; systemd only checks that it is PID 1.
      exec /nix/var/nix/profiles/system/systemd/lib/systemd/systemd --log-target=kmsg "$@"
    '';
    checkPhase = ''/bin/sh -n "$target"'';
  };

  udevUnits = [
    "systemd-udevd.service"
    "systemd-udevd-control.socket"
    "systemd-udevd-kernel.socket"
    "systemd-udev-trigger.service"
  ];

  # NixOS's activation script (and NixOS-WSL's snippets) as far as the twin
  # needs it. @out@ is the toplevel.
  activate = ''
    #!/bin/sh
    # Activation of twin generation ${generation}: what NixOS and NixOS-WSL
    # activation do that matters for the module. Run by the shim at boot and
    # by switch-to-configuration (switch, test).
    export PATH=/usr/sbin:/usr/bin:/sbin:/bin
    systemConfig=@out@
    export systemConfig
    _status=0

    echo "activating the configuration..."

    # NixOS-WSL (createBootedSystemSymlink): the first activation of a boot
    # names the booted system.
    mkdir -p /run
    [ -e /run/booted-system ] || ln -sfn "$(readlink -f "$systemConfig")" /run/booted-system

    # NixOS (etc): /etc/static -> this system's etc, swapped atomically.
    ln -sfn "$systemConfig/etc" /etc/static.tmp
    mv -Tf /etc/static.tmp /etc/static

    # NixOS (setup-etc): every environment.etc entry a link through
    # /etc/static, so it follows the active generation.
    ${lib.concatMapStrings (path: ''
      mkdir -p "$(dirname /etc/${q path})"
      ln -sfn /etc/static/${q path} /etc/${q path}
    '') (lib.attrNames rendered.etc)}
    # NixOS-WSL (shimSystemd): /sbin/init -> the shim. /sbin is /usr/sbin
    # on trixie (merged /usr), where /usr/sbin/init is Debian's systemd link.
    ln -sfn ${shim}/bin/systemd-shim /usr/sbin/init.tmp
    mv -Tf /usr/sbin/init.tmp /usr/sbin/init

    # NixOS links /etc/systemd/system as a whole to the units; the guest's
    # /etc/systemd/system is Debian's, so each unit, drop-in and .wants
    # entry of this system is linked through /etc/static.
    link_unit() {
      dir=$(dirname "/etc/systemd/system/$1")
      mkdir -p "$dir"
      ln -sfn "/etc/static/systemd/system/$1" "/etc/systemd/system/$1"
    }
    ${lib.concatMapStrings (entry: "link_unit ${q entry}\n") unitEntries}
    # Links a previous generation left that this one no longer has.
    find /etc/systemd/system -mindepth 1 -maxdepth 2 -type l | while IFS= read -r link; do
      case "$(readlink "$link")" in
        /etc/static/*) [ -e "$link" ] || rm -f "$link" ;;
      esac
    done
    find /etc/systemd/system -mindepth 1 -maxdepth 1 -type d -name '*.d' -empty -delete

    # NixOS-WSL runs without udev (services.udev.enable = false): no udev
    # units at all. The module may turn it on.
    for unit in ${lib.concatStringsSep " " udevUnits}; do
      ${
        if rendered.udev then
          ''
            if [ "$(readlink "/etc/systemd/system/$unit")" = /dev/null ]; then
              rm -f "/etc/systemd/system/$unit"
            fi
          ''
        else
          ''
            ln -sfn /dev/null "/etc/systemd/system/$unit"
          ''
      }
    done

    # The helper on the guest's PATH, through the current system.
    mkdir -p /usr/local/bin
    ln -sfn /run/current-system/sw/bin/wsl-storage-mount /usr/local/bin/wsl-storage-mount

    # The module's activation snippets, after everything above linked into
    # /, as NixOS orders them. Each in a subshell that stops at its first
    # failure; a failure is reported and fails the activation.
    # (Not on the left of ||: there `set -e` would be ignored.)
    (
      set -e
    ${rendered.activation}
    )
    _localstatus=$?
    if [ "$_localstatus" -ne 0 ]; then
      echo "Activation script snippet failed ($_localstatus)" >&2
      _status=1
    fi

    # NixOS: the current system, last.
    ln -sfn "$(readlink -f "$systemConfig")" /run/current-system.tmp
    mv -Tf /run/current-system.tmp /run/current-system

    if [ -d /run/systemd/system ]; then
      systemctl daemon-reload || _status=1
    fi

    exit $_status
  '';

  installBootLoaderWords = lib.filter (w: lib.isString w && w != "") (
    builtins.split "[[:space:]]+" rendered.installBootLoader
  );

  # The body is ./switch-to-configuration.sh; the header gives it the
  # toplevel and the boot loader command.
  switchToConfiguration = ''
    #!/bin/sh
    # switch-to-configuration of twin generation ${generation}.
    toplevel=@out@
    # The evaluated system.build.installBootLoader, split on whitespace and
    # run without a shell, the toplevel appended (switch-to-configuration-ng).
    install_boot_loader() {
      ${lib.escapeShellArgs installBootLoaderWords} "$@"
    }

  '' + builtins.readFile ./switch-to-configuration.sh;
  toplevel = pkgs.runCommand "twin-system-${generation}"
    {
      inherit activate switchToConfiguration;
      passAsFile = [
        "activate"
        "switchToConfiguration"
      ];
    }
    ''
      mkdir -p $out/bin
      ln -s ${etc}/etc $out/etc
      ln -s ${sw} $out/sw
      # NixOS-WSL's shim execs $profile/systemd/lib/systemd/systemd: the guest's.
      ln -s /usr $out/systemd
      ln -s ${shim}/bin/systemd-shim $out/init
      sed "s|@out@|$out|g" "$activatePath" > $out/activate
      sed "s|@out@|$out|g" "$switchToConfigurationPath" > $out/bin/switch-to-configuration
      chmod 0555 $out/activate $out/bin/switch-to-configuration
      /bin/sh -n $out/activate
      /bin/sh -n $out/bin/switch-to-configuration
      echo ${q generation} > $out/twin-generation
      echo ${q "twin-${generation}"} > $out/nixos-version
    '';
in
# The toplevel, and what was rendered for it, for a harness to read:
#   nix-instantiate --eval --strict --json -A rendered checks/twin/system.nix --argstr ...
toplevel
// {
  rendered = removeAttrs rendered [
    "config"
    "systemPackages"
  ];
}
