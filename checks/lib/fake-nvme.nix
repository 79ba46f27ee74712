# Test-only fake disks for the VM tests. Never import this into a real system.
#
# 1. The loop-backed fake NVMe (`testing.fakeNvme.enable`): the VM's first extra
#    disk (virtualisation.emptyDiskImages, so /dev/vdb) is a "carrier" ext4 that
#    holds an image file with the storage filesystem. A test-only unit attaches
#    that image with losetup, and a udev rule gives the loop device the link
#    /dev/disk/by-id/nvme-FAKE_NVMe_<serial>. The link has to come from udev: a
#    plain `ln -s` in /dev makes no .device unit and no udev database entry, so
#    neither systemd nor the helper would see a disk there.
#    Unattached loop devices carry SYSTEMD_READY=0 (systemd's 99-systemd.rules
#    tests loop/backing_file); losetup sends a "change" uevent once the backing
#    file is set, and that event is where the rule below matches.
#
# 2. Optionally a real QEMU NVMe controller (`testing.fakeNvme.qemuNvme`), which
#    udev names /dev/disk/by-id/nvme-QEMU_NVMe_Ctrl_<serial>. Its raw image is a
#    file in the VM's state directory that the test script creates (and
#    formats) before `machine.start()`; QEMU runs with that directory as its
#    working directory, so a relative file name finds it.
#
# The store on the fake disk: with `seed = "closure"` the image gets the closure
# of /run/booted-system copied into <storeSubdir>/store, registered in
# <storeSubdir>/var/nix/db. This is done inside the VM at boot, from the system
# that actually booted, before the helper runs. Building the image in Nix instead
# would need the VM's own toplevel inside one of its inputs: a fixpoint with no
# solution. The image is filled under a temporary name and renamed when complete,
# so the udev rule never sees a half-seeded disk, and a later boot (the carrier
# disk survives reboot() in the same test) reuses it.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.testing.fakeNvme;

  carrierDevice = "/dev/vdb";
  carrierDir = "/run/fake-nvme";
  image = "${carrierDir}/wsl-storage.img";

  seedScript = pkgs.writeShellApplication {
    name = "fake-nvme-seed";
    runtimeInputs = [
      pkgs.coreutils
      pkgs.util-linux
      pkgs.e2fsprogs
      config.nix.package
    ];
    text = ''
      carrier=${carrierDevice}
      image=${image}
      subdir=${lib.escapeShellArg cfg.storeSubdir}
      seed=${cfg.seed}

      # The carrier disk is formatted once; its content survives reboots.
      if [ -z "$(blkid -p -s TYPE -o value "$carrier" || true)" ]; then
        mkfs.ext4 -q -L fake-nvme-carrier "$carrier"
      fi
      mkdir -p ${carrierDir}
      mountpoint -q ${carrierDir} || mount -t ext4 "$carrier" ${carrierDir}

      if [ -e "$image" ]; then
        echo "fake NVMe image $image is already prepared"
        exit 0
      fi

      # Not yet under its final name: the udev rule matches only that name.
      work="$image.seeding"
      rm -f "$work"
      truncate -s ${toString cfg.imageSize}M "$work"
      mkfs.ext4 -q -L ${lib.escapeShellArg cfg.fsLabel} -U ${cfg.fsUuid} -E root_owner=0:0 "$work"

      stage=$(mktemp -d /run/fake-nvme-stage.XXXXXX)
      mount -o loop "$work" "$stage"
      trap 'umount "$stage"; rmdir "$stage"' EXIT

      case "$seed" in
        none)
          echo "fake NVMe image left empty (seed = none)"
          ;;
        closure | partial)
          install -d -m 0755 "$stage/$subdir" "$stage/$subdir/store" "$stage/$subdir/var/nix/db"
          paths=$(mktemp /run/fake-nvme-closure.XXXXXX)
          # root with a writable state dir: the local store, never a stale daemon socket
          NIX_REMOTE=local nix-store --query --requisites /run/booted-system > "$paths"
          if [ "$seed" = partial ]; then
            # Everything but the booted toplevel itself: what a subdir left
            # over from an older generation looks like.
            toplevel=$(readlink -f /run/booted-system)
            grep -vxF "$toplevel" "$paths" > "$paths.partial"
            mv "$paths.partial" "$paths"
          fi
          mapfile -t closure < "$paths"
          rm -f "$paths"
          cp -a -t "$stage/$subdir/store" "''${closure[@]}"
          if [ "$seed" = closure ]; then
            # Register the copies, so the image holds a real store (store/ + var/nix/db).
            NIX_REMOTE=local nix-store --dump-db "''${closure[@]}" \
              | NIX_REMOTE="local?state=$stage/$subdir/var/nix" nix-store --load-db
          fi
          echo "fake NVMe image seeded with ''${#closure[@]} store paths (seed = $seed)"
          ;;
      esac

      sync
      umount "$stage"
      rmdir "$stage"
      trap - EXIT
      mv "$work" "$image"
    '';
  };

  attachScript = pkgs.writeShellApplication {
    name = "fake-nvme-attach";
    runtimeInputs = [ pkgs.util-linux ];
    text = ''
      # One loop device per image, as one disk per serial: attaching twice is a no-op.
      if [ -n "$(losetup --associated ${image})" ]; then
        losetup --associated ${image}
        exit 0
      fi
      losetup --find --show ${image}
    '';
  };
in
{
  options.testing.fakeNvme = {
    enable = lib.mkEnableOption "the loop-backed fake NVMe disk (VM tests only)";

    serial = lib.mkOption {
      type = lib.types.strMatching "[A-Za-z0-9_]+";
      default = "WSLTEST0001";
      description = "Serial in the fake disk's by-id name `nvme-FAKE_NVMe_<serial>`.";
    };

    deviceId = lib.mkOption {
      type = lib.types.str;
      readOnly = true;
      default = "nvme-FAKE_NVMe_${cfg.serial}";
      defaultText = lib.literalExpression ''"nvme-FAKE_NVMe_''${config.testing.fakeNvme.serial}"'';
      description = "The fake disk's name under /dev/disk/by-id (for `wslStorageMount.deviceId`).";
    };

    attach = lib.mkOption {
      type = lib.types.enum [
        "boot"
        "delayed"
        "manual"
      ];
      default = "boot";
      description = ''
        When the loop device appears: "boot" before wsl-storage-mount.service
        starts; "delayed" `attachDelay` seconds after the image is ready (while
        the helper is already waiting); "manual" only when something starts
        fake-nvme-attach.service (the test script or a fake schtasks.exe).
      '';
    };

    attachDelay = lib.mkOption {
      type = lib.types.ints.positive;
      default = 10;
      description = "Seconds to wait before attaching, with `attach = \"delayed\"`.";
    };

    seed = lib.mkOption {
      type = lib.types.enum [
        "closure"
        "partial"
        "none"
      ];
      default = "closure";
      description = ''
        What the image holds under `storeSubdir`: "closure" the registered
        closure of /run/booted-system (a store the helper may bind), "partial"
        that closure without the booted toplevel (a store it must refuse),
        "none" nothing.
      '';
    };

    storeSubdir = lib.mkOption {
      type = lib.types.str;
      default = config.wslStorageMount.nixStoreSubdir;
      defaultText = lib.literalExpression "config.wslStorageMount.nixStoreSubdir";
      description = "The instance dir of the image that gets the store.";
    };

    fsLabel = lib.mkOption {
      type = lib.types.str;
      default = "wslstorage";
      description = "Filesystem label of the image.";
    };

    fsUuid = lib.mkOption {
      type = lib.types.strMatching "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
      default = "3f2b6c1e-5a4d-4e8f-9b7a-0c1d2e3f4a5b";
      description = "Filesystem UUID of the image.";
    };

    imageSize = lib.mkOption {
      type = lib.types.ints.positive;
      default = 4096;
      description = "Size of the (sparse) image file in MiB; it must hold the VM's closure.";
    };

    carrierSize = lib.mkOption {
      type = lib.types.ints.positive;
      default = 5120;
      description = "Size in MiB of the extra VM disk (/dev/vdb) that holds the image.";
    };

    qemuNvme = {
      enable = lib.mkEnableOption "a real QEMU NVMe controller backed by a raw image in the VM state dir";

      serial = lib.mkOption {
        type = lib.types.strMatching "[A-Za-z0-9]+";
        default = "WSLNVME01";
        description = "Serial of the QEMU NVMe controller.";
      };

      file = lib.mkOption {
        type = lib.types.strMatching "[A-Za-z0-9._-]+";
        default = "wsl-storage-nvme.raw";
        description = ''
          Raw image, relative to the VM state dir (`machine.state_dir`); the
          test script creates and formats it before `machine.start()`.
        '';
      };

      deviceId = lib.mkOption {
        type = lib.types.str;
        readOnly = true;
        default = "nvme-QEMU_NVMe_Ctrl_${cfg.qemuNvme.serial}";
        defaultText = lib.literalExpression ''"nvme-QEMU_NVMe_Ctrl_''${config.testing.fakeNvme.qemuNvme.serial}"'';
        description = "The controller's namespace under /dev/disk/by-id, as udev names it.";
      };
    };
  };

  config = lib.mkMerge [
    (lib.mkIf cfg.enable {
      virtualisation.emptyDiskImages = [ cfg.carrierSize ];

      # losetup and `mount -o loop` need /dev/loop-control before tmpfiles
      # would make it: load the driver with the early modules.
      boot.kernelModules = [ "loop" ];

      services.udev.extraRules = ''
        SUBSYSTEM=="block", KERNEL=="loop[0-9]*", ENV{DEVTYPE}=="disk", ACTION!="remove", ATTR{loop/backing_file}=="${image}", SYMLINK+="disk/by-id/${cfg.deviceId}"
      '';

      environment.systemPackages = [ attachScript ];

      systemd.services = {
        fake-nvme-seed = {
          description = "Test fixture: prepare the fake NVMe disk image";
          unitConfig.DefaultDependencies = false;
          requires = [ "dev-vdb.device" ];
          after = [
            "dev-vdb.device"
            "systemd-modules-load.service"
          ];
          before = [ "wsl-storage-mount.service" ];
          wantedBy = [
            "wsl-storage-mount.service"
            "multi-user.target"
          ];
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            ExecStart = lib.getExe seedScript;
            # Copying the closure takes a while on a slow builder.
            TimeoutStartSec = "20min";
          };
        };

        fake-nvme-attach = {
          description = "Test fixture: attach the fake NVMe disk (loop device)";
          unitConfig.DefaultDependencies = false;
          requires = [ "fake-nvme-seed.service" ];
          after = [ "fake-nvme-seed.service" ];
          before = lib.optional (cfg.attach == "boot") "wsl-storage-mount.service";
          wantedBy =
            lib.optional (cfg.attach == "boot") "wsl-storage-mount.service"
            ++ lib.optional (cfg.attach == "delayed") "multi-user.target";
          serviceConfig = {
            Type = "oneshot";
            RemainAfterExit = true;
            ExecStartPre = lib.optional (
              cfg.attach == "delayed"
            ) "${pkgs.coreutils}/bin/sleep ${toString cfg.attachDelay}";
            ExecStart = lib.getExe attachScript;
            TimeoutStartSec = "5min";
          };
        };
      };
    })

    (lib.mkIf cfg.qemuNvme.enable {
      virtualisation.qemu.options = [
        "-drive if=none,id=wslnvme,format=raw,file=${cfg.qemuNvme.file}"
        "-device nvme,serial=${cfg.qemuNvme.serial},drive=wslnvme"
      ];
    })
  ];
}
