"""Checks the scenarios share: what a user looks at (systemctl, findmnt,
/proc/self/mountinfo, stat, the helper's state file and log), as
checks/vm/default.nix's prelude does for the VM tests."""

import json
import shlex

from harness import FS_UUID, SUBDIR, TwinError

MOUNT_POINT = "/mnt/wsl/storage"
STORE_DIR = f"{MOUNT_POINT}/{SUBDIR}"


def check(cond, what):
    if not cond:
        raise TwinError(f"check failed: {what}")


def show(m, unit, prop):
    return m.succeed(f"systemctl show --value --property={prop} {shlex.quote(unit)}").strip()


def mounts_at(m, path):
    """The mountinfo lines whose mount point is `path` (stacked mounts
    show as several)."""
    out = m.succeed("cat /proc/self/mountinfo")
    return [line for line in out.splitlines() if line.split()[4] == path]


def findmnt(m, column, path):
    return m.succeed(f"findmnt -n -o {column} --mountpoint {shlex.quote(path)} || true").strip()


def state(m):
    return json.loads(m.succeed("cat /run/wsl-storage-mount/state.json"))


def disk_device(m):
    """The block device of the disk, found the way the helper does
    without udev: by the filesystem UUID."""
    return m.succeed(f"blkid -U {FS_UUID}").strip()


def store_is_disk(m, path="/nix"):
    """`path` and the instance dir are one directory (same device and inode)."""
    same = m.succeed(f"stat -c '%d:%i' {shlex.quote(path)} {STORE_DIR}").split()
    return same[0] == same[1]


def daemon_store_is_disk(m):
    """Asks nix-daemon (through its socket, as every user's nix does) to add
    a file; the path it answers must exist in the disk's store and not in
    the VHDX's."""
    path = m.succeed(
        "f=$(mktemp -d)/twin-daemon-probe; date +%s%N > $f; "
        "nix-store --store daemon --add $f"
    ).strip()
    check(path.startswith("/nix/store/"), f"nix-store --add answered {path!r}")
    name = path.removeprefix("/nix/store/")
    on_disk = m.execute(f"test -e {STORE_DIR}/store/{name}")[0] == 0
    on_vhdx = vhdx(m, f"test -e /nix/store/{name}")[0] == 0
    return on_disk and not on_vhdx


def vhdx(m, cmd):
    """Runs `cmd` with the VHDX's own /nix in view: in a private mount
    namespace, / bound non-recursively at /run/twin-vhdx (with /proc and
    /dev for Nix) and chrooted into."""
    script = (
        "mkdir -p /run/twin-vhdx && mount --bind / /run/twin-vhdx && "
        "mount -t proc proc /run/twin-vhdx/proc && mount --bind /dev /run/twin-vhdx/dev && "
        f"chroot /run/twin-vhdx /bin/sh -c {shlex.quote(cmd)}"
    )
    return m.execute(f"unshare -m --propagation private sh -c {shlex.quote(script)}")


def import_generation(m, n):
    """Generation `n`, carried along by the install step, imported into the
    store /nix is now (as `nixos-rebuild` builds into it); its toplevel."""
    m.succeed(f"nix-store --import < /var/lib/twin/deploy-{n} > /dev/null")
    return m.succeed(f"cat /var/lib/twin/deploy-{n}.toplevel").strip()


def booted_system(m):
    return m.succeed("readlink -f /run/booted-system").strip()


def check_storage_up(m, when):
    """The whole chain with the disk present, as a user checks it."""
    m.wait_for_unit("wsl-storage-mount.service")
    check(show(m, "wsl-storage-mount.service", "Result") == "success", f"{when}: helper result")
    check(state(m)["outcome"] == "mounted", f"{when}: state outcome mounted: {state(m)}")
    dev = disk_device(m)
    check(len(mounts_at(m, MOUNT_POINT)) == 1, f"{when}: one mount at {MOUNT_POINT}: {mounts_at(m, MOUNT_POINT)}")
    check(findmnt(m, "SOURCE", MOUNT_POINT) == dev, f"{when}: {MOUNT_POINT} is {dev}")
    m.wait_for_unit("nix.mount")
    binds = mounts_at(m, "/nix")
    check(len(binds) == 1, f"{when}: one mount at /nix: {binds}")
    check(findmnt(m, "FSROOT", "/nix") == f"/{SUBDIR}", f"{when}: /nix is the bind of {SUBDIR}")
    check(store_is_disk(m), f"{when}: /nix is the disk's instance dir")
    m.wait_for_unit("nix-mount-marker.service")
    m.succeed("test -f /nix/.mounted")
    # The read-only /nix/store the shim made for the VHDX store, made again
    # over the disk's store by the marker. (findmnt's OPTIONS would also
    # list the shim's bind, hidden under /nix: only a write tells.)
    out = m.fail("touch /nix/store/twin-write-test")
    check("Read-only file system" in out, f"{when}: /nix/store is read-only: {out}")
    m.wait_for_unit("nix-daemon.socket")
    check(daemon_store_is_disk(m), f"{when}: nix-daemon serves the disk's store")
    m.succeed("wsl-storage-mount status")


def check_vhdx_only(m, when):
    """No bind, no marker: /nix is the VHDX's."""
    check(mounts_at(m, "/nix") == [], f"{when}: nothing mounted at /nix: {mounts_at(m, '/nix')}")
    m.fail("test -e /nix/.mounted")
    m.fail("test -e /run/wsl-storage-mount/bind-ok")


def failed_units(m):
    return m.succeed("systemctl list-units --state=failed --no-legend --plain").split()
