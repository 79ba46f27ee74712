"""daemon-order: a client of nix-daemon's socket started as early as the boot allows gets the disk's store.

Mirrors the ordering part of checks/vm/boot-present.nix. A unit with no
default dependencies, wanted by sysinit.target and ordered only after
nix-daemon.socket, connects as soon as systemd lets it: the store path the
daemon answers with must be in the disk's store and never in the VHDX's, and
the marker (the read-only /nix/store) must be there already. The marker is
made slow (5 s) so that a missing ordering between it and nix-daemon shows
every time: nix-daemon's own RequiresMountsFor=/nix/store orders it after
nix.mount, so the store is the disk's even then, but not yet read-only.
"""

from common import STORE_DIR, check, check_storage_up, vhdx
from harness import default_settings

# Absolute paths: the unit's PATH is the one NixOS gives it (its `path`).
CLIENT = (
    "set -e; mkdir -p /run/twin-early; echo early > /run/twin-early/probe; "
    "/usr/bin/findmnt -n -o SOURCE,FSROOT --mountpoint /nix > /run/twin-early/nix-at-connect || true; "
    "if test -e /nix/.mounted; then echo yes; else echo no; fi > /run/twin-early/marker-at-connect; "
    "/usr/bin/nix-store --store daemon --add /run/twin-early/probe > /run/twin-early/path"
)

# The marker made slow (5 s before it runs): without its ordering before
# nix-daemon's socket, the client would connect before it is done.
SETTINGS = default_settings(systemd={"services": {
    "nix-mount-marker": {"serviceConfig": {"ExecStartPre": "/usr/bin/sleep 5"}},
    "twin-early-client": {
        "description": "Boot twin: an early client of nix-daemon's socket",
        "wantedBy": ["sysinit.target"],
        "after": ["nix-daemon.socket"],
        "requires": ["nix-daemon.socket"],
        "unitConfig": {"DefaultDependencies": False},
        "serviceConfig": {
            "Type": "oneshot",
            "RemainAfterExit": True,
            "ExecStart": f"/bin/sh -c '{CLIENT}'",
        },
    },
}})


def test(m):
    m.wait_for_boot()
    m.wait_for_unit("twin-early-client.service")
    path = m.succeed("cat /run/twin-early/path").strip()
    at_connect = m.succeed("cat /run/twin-early/nix-at-connect").strip()
    check(at_connect.endswith("/nixos-wsl-twin"), f"/nix at the client's start: {at_connect!r}")
    marker = m.succeed("cat /run/twin-early/marker-at-connect").strip()
    check(marker == "yes", "the marker (read-only /nix/store) was there when the client connected")
    name = path.removeprefix("/nix/store/")
    m.succeed(f"test -e {STORE_DIR}/store/{name}")
    check(vhdx(m, f"test -e /nix/store/{name}")[0] != 0, f"{path} reached the VHDX store")
    check_storage_up(m, "after the early client")
