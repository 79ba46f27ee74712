# A stand-in for nixpkgs for the boot twin: every package is a real, tiny
# derivation, so evaluating the module yields real store paths that build,
# export and import like a system's. Packages are directories of links to the
# Debian guest's own programs (dangling on the host, which only builds them);
# nixpkgs puts every program of these packages in bin/, and so do we.
#
# Built by the host's Nix (`--option sandbox false`): builders are /bin/sh
# with PATH=/usr/bin:/bin, as tests/fixtures/toy-system.nix.
{
  lib,
  # The helper built on the host (target/release/wsl-storage-mount).
  helperBinary,
  system ? builtins.currentSystem,
}:

let
  # A derivation whose builder runs `script` with /bin/sh, errors fatal.
  # `env` becomes the builder's environment (passAsFile works as in nixpkgs).
  shDerivation =
    name: env: script:
    derivation (
      {
        inherit name system;
        builder = "/bin/sh";
        args = [
          "-c"
          ''
            export PATH=/usr/bin:/bin
            set -e
            ${script}
          ''
        ];
        preferLocalBuild = true;
        allowSubstitutes = false;
      }
      // env
    );

  withMeta = meta: drv: drv // { inherit meta; };

  # A package of links to the guest's programs: `bin` names programs under
  # /usr/bin, `sbin` those under /usr/sbin (Debian trixie, merged /usr), all
  # linked into $out/bin as nixpkgs lays them out.
  guestPackage =
    {
      name,
      bin ? [ ],
      sbin ? [ ],
      extra ? "",
      mainProgram ? null,
    }:
    let
      links = dir: names: lib.concatMapStrings (n: "ln -s /usr/${dir}/${n} $out/bin/${n}\n") names;
    in
    withMeta (lib.optionalAttrs (mainProgram != null) { inherit mainProgram; }) (
      shDerivation name { } ''
        mkdir -p $out/bin
        ${links "bin" bin}
        ${links "sbin" sbin}
        ${extra}
      ''
    );

  self = {
    # The host's Nix runs the builders, so the build platform is the host.
    stdenv = {
      hostPlatform.system = system;
      buildPlatform.system = system;
      buildPlatform.canExecute = _: true;
      shell = "/bin/sh";
    };
    buildPackages = self;

    # pkgs.formats.ini, for the real NixOS-WSL modules' wsl.conf option.
    formats = import ../eval/stub-formats.nix { inherit lib; };

    # The helper: the binary built on the host, copied in. Imported with
    # builtins.path so a rebuilt binary is a new store path.
    wsl-storage-mount =
      let
        binary = builtins.path {
          path = /. + helperBinary;
          name = "wsl-storage-mount-binary";
        };
      in
      withMeta { mainProgram = "wsl-storage-mount"; } (
        shDerivation "wsl-storage-mount-0.1.0" { inherit binary; } ''
          mkdir -p $out/bin
          cp "$binary" $out/bin/wsl-storage-mount
          chmod 0555 $out/bin/wsl-storage-mount
        ''
      );

    # The module's default package (options.nix: pkgs.wsl-storage-mount or
    # callPackage ../package.nix): the helper, whatever is asked for.
    callPackage = _path: _args: self.wsl-storage-mount;

    util-linux = guestPackage {
      name = "util-linux-2.40";
      bin = [
        "mount"
        "umount"
        "findmnt"
        "lsblk"
        "mountpoint"
        "nsenter"
        "unshare"
        "flock"
        "setsid"
        "kill"
      ];
      sbin = [
        "fsck"
        "blkid"
        "losetup"
        "wipefs"
        "blockdev"
        "swapon"
        "swapoff"
        "fstrim"
        "sulogin"
        "agetty"
        "switch_root"
        "pivot_root"
      ];
    };
    e2fsprogs = guestPackage {
      name = "e2fsprogs-1.47.0";
      bin = [ "chattr" "lsattr" ];
      sbin = [
        "e2fsck"
        "fsck.ext2"
        "fsck.ext3"
        "fsck.ext4"
        "mke2fs"
        "mkfs.ext4"
        "tune2fs"
        "resize2fs"
        "dumpe2fs"
        "debugfs"
        "e2label"
      ];
    };
    xfsprogs = guestPackage {
      name = "xfsprogs-6.9.0";
      sbin = [
        "fsck.xfs"
        "xfs_repair"
        "mkfs.xfs"
        "xfs_admin"
        "xfs_db"
        "xfs_growfs"
      ];
    };
    btrfs-progs = guestPackage {
      name = "btrfs-progs-6.9";
      bin = [
        "btrfs"
        "btrfsck"
      ];
      sbin = [
        "fsck.btrfs"
        "mkfs.btrfs"
      ];
    };
    dosfstools = guestPackage {
      name = "dosfstools-4.2";
      sbin = [
        "fsck.fat"
        "fsck.vfat"
        "fsck.msdos"
        "mkfs.fat"
        "mkfs.vfat"
        "fatlabel"
      ];
    };
    coreutils = guestPackage {
      name = "coreutils-9.5";
      bin = [
        "true"
        "false"
        "cat"
        "cp"
        "mv"
        "rm"
        "ln"
        "ls"
        "mkdir"
        "rmdir"
        "readlink"
        "realpath"
        "dirname"
        "basename"
        "chmod"
        "chown"
        "stat"
        "touch"
        "test"
        "["
        "echo"
        "printf"
        "env"
        "sleep"
        "date"
        "head"
        "tail"
        "tr"
        "cut"
        "sort"
        "uniq"
        "wc"
        "tee"
        "mktemp"
        "id"
        "uname"
        "sync"
        "df"
        "du"
        "timeout"
        "seq"
        "nproc"
      ];
    };
    nix = guestPackage {
      name = "nix-2.26.0";
      mainProgram = "nix";
      bin = [
        "nix"
        "nix-store"
        "nix-env"
        "nix-build"
        "nix-instantiate"
        "nix-shell"
        "nix-collect-garbage"
        "nix-copy-closure"
        "nix-channel"
        "nix-hash"
        "nix-daemon"
      ];
    };
    rsync = guestPackage {
      name = "rsync-3.3.0";
      bin = [ "rsync" ];
    };
    bashInteractive = guestPackage {
      name = "bash-interactive-5.2";
      mainProgram = "bash";
      bin = [ "bash" ];
      # nixpkgs' bash has bin/sh too: bash itself.
      extra = "ln -s /usr/bin/bash $out/bin/sh";
    };
    bash = self.bashInteractive;
    systemd = guestPackage {
      name = "systemd-257";
      mainProgram = "systemctl";
      bin = [
        "systemctl"
        "journalctl"
        "systemd-analyze"
        "systemd-run"
        "systemd-escape"
        "systemd-notify"
        "systemd-tmpfiles"
        "systemd-sysusers"
        "udevadm"
        "busctl"
        "loginctl"
      ];
      # nixpkgs' systemd keeps the manager and its helpers in lib/systemd.
      extra = "ln -s /usr/lib $out/lib";
    };
    findutils = guestPackage {
      name = "findutils-4.10.0";
      bin = [
        "find"
        "xargs"
      ];
    };
    gnugrep = guestPackage {
      name = "gnugrep-3.11";
      bin = [
        "grep"
        "egrep"
        "fgrep"
      ];
    };
    gnused = guestPackage {
      name = "gnused-4.9";
      bin = [ "sed" ];
    };

    # nixpkgs' runtimeShell: bash (the guest's).
    runtimeShell = "${self.bashInteractive}/bin/bash";

    # As nixpkgs' writeTextFile: the text at $out/<destination>, the
    # checkPhase run for real with $target set (a failure fails the build).
    writeTextFile =
      {
        name,
        text,
        executable ? false,
        destination ? "",
        checkPhase ? "",
        meta ? { },
        ...
      }:
      withMeta meta (
        shDerivation name
          {
            inherit text;
            passAsFile = [ "text" ];
          }
          ''
            target=$out${lib.escapeShellArg destination}
            mkdir -p "$(dirname "$target")"
            cp "$textPath" "$target"
            ${lib.optionalString executable ''chmod +x "$target"''}
            ${checkPhase}
          ''
      );

    writeText =
      name: text:
      self.writeTextFile {
        inherit name text;
      };

    # As nixpkgs': a bash script, syntax-checked at build time.
    writeShellScript =
      name: text:
      self.writeTextFile {
        inherit name;
        executable = true;
        text = ''
          #!${self.runtimeShell}
          ${text}
        '';
        checkPhase = ''/usr/bin/bash -n "$target"'';
      };

    writeShellScriptBin =
      name: text:
      self.writeTextFile {
        inherit name;
        executable = true;
        destination = "/bin/${name}";
        text = ''
          #!${self.runtimeShell}
          ${text}
        '';
        checkPhase = ''/usr/bin/bash -n "$target"'';
      };

    # As nixpkgs' runCommand: `env` is the builder's environment.
    runCommand =
      name: env: buildCommand:
      shDerivation name (removeAttrs env [ "meta" ]) buildCommand;

    # As nixpkgs': one directory of links to the files of every path.
    symlinkJoin =
      {
        name,
        paths,
        ...
      }:
      shDerivation name { } ''
        mkdir -p $out
        for p in ${lib.escapeShellArgs (map toString paths)}; do
          cp -rs --no-preserve=mode "$p"/. $out/
        done
      '';
  };
in
self
