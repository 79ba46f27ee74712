"""The boot twin's harness: a Debian trixie guest under QEMU (TCG) booting
through a stand-in for NixOS-WSL's shim, the module's own units rendered
into a toy generation, a storage disk hot-plugged as a SCSI disk with a
serial (what `wsl --mount --bare` does), and a stand-in for the Windows task
behind a virtio-serial port.

The Machine class speaks the NixOS test driver's vocabulary (succeed, fail,
wait_for_unit, wait_until_succeeds, reboot) so a scenario reads like its
mirror in checks/vm. Everything the harness starts it stops: QEMU dies with
the harness (PR_SET_PDEATHSIG), the work directory is removed, the toy
store paths built on the host are deleted at the end of the run.
"""

import base64
import contextlib
import ctypes
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# What every scenario shares unless it says otherwise. The serial is the
# one the Windows side would look for; the UUID names the disk's ext4.
DISK_SERIAL = "TWIN_0000_0000_0001"
FS_UUID = "3d2f8c1e-7b4a-4e59-a0c6-5f1b2e9d8a47"
SUBDIR = "nixos-wsl-twin"


class TwinError(Exception):
    """A scenario's assertion or a step of the harness failed."""


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: QEMU gets SIGKILL when the harness dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)


def log(msg):
    print(f"  {time.strftime('%H:%M:%S')} {msg}", flush=True)


def default_settings(**overrides):
    """The module settings of a scenario: wslStorageMount.* and the few
    NixOS options the twin's evaluation takes (hostName, udev)."""
    wsm = {
        "enable": True,
        "fsUuid": FS_UUID,
        "diskSerialNumber": DISK_SERIAL,
        "waitTimeout": 20,
        "fsckAllowance": 120,
        "windows": {"trigger": "none"},
    }
    wsm.update(overrides.pop("wslStorageMount", {}))
    settings = {"networking": {"hostName": "twin"}, "wslStorageMount": wsm}
    settings.update(overrides)
    return settings


def run(cmd, timeout=600, **kw):
    """A host command with a timeout; its output on failure."""
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, **kw
    )
    if proc.returncode != 0:
        raise TwinError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        )
    return proc.stdout


class Host:
    """What the run shares: the cached guest image, the helper, the Nix
    expression that renders the module into generations, and the store
    paths built on the host (deleted at the end)."""

    def __init__(self, image_dir, helper, lib_path, nixos_wsl, workdir):
        self.image = Path(image_dir)
        self.helper = Path(helper)
        self.lib_path = lib_path
        self.nixos_wsl = nixos_wsl
        self.workdir = Path(workdir)
        self.built = []

    def build_generation(self, settings, generation=1):
        """The module's evaluation with these settings, rendered into a toy
        NixOS-WSL generation with the host's Nix; its store path."""
        args = [
            "nix-build",
            "--option", "sandbox", "false",
            "--option", "build-users-group", "",
            "--no-out-link",
            str(HERE / "system.nix"),
            "--argstr", "libPath", self.lib_path,
            "--argstr", "helperBinary", str(self.helper),
            "--argstr", "settingsJson", json.dumps(settings, sort_keys=True),
            "--argstr", "generation", str(generation),
        ]
        if self.nixos_wsl:
            args += ["--argstr", "nixosWslPath", self.nixos_wsl]
        # Debian's nix-bin names a build group this host may not have; the
        # builds here need none (and no sandbox: /bin/sh builders).
        env = dict(os.environ, NIX_CONFIG="build-users-group =\nsandbox = false")
        out = run(args, timeout=300, env=env).strip().splitlines()[-1]
        self.built.append(out)
        return out

    def closure(self, paths):
        return run(["nix-store", "--query", "--requisites", *paths]).split()

    def cleanup(self):
        """Deletes what the run built on the host: the generations' closures,
        their derivations and sources (the helper's copy among them). A path
        something else still uses (another build's derivation, a root) is
        kept: passes until one deletes nothing, referrers going first."""
        if not self.built:
            return
        derivers = [d for d in run(["nix-store", "--query", "--deriver", *self.built]).split()
                    if d.startswith("/nix/store/") and os.path.exists(d)]
        left = set(self.closure(self.built + derivers))
        while left:
            done = subprocess.run(["nix-store", "--delete", *sorted(left)],
                                  capture_output=True, timeout=300).returncode == 0
            if done:
                return
            deleted = {p for p in left
                       if subprocess.run(["nix-store", "--delete", p], capture_output=True,
                                         timeout=60).returncode == 0}
            left -= deleted
            left = {p for p in left if os.path.exists(p)}
            if not deleted:
                break
        if left:
            log(f"kept {len(left)} store paths that other paths or roots still use")


class Agent:
    """QEMU's guest agent over a unix socket: guest-exec with captured
    output. Re-synchronises before every command (the guest may have
    rebooted, leaving half an answer in the channel)."""

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.buf = b""
        self.lock = threading.Lock()

    def _connect(self):
        if self.sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(self.path))
            self.sock = s
            self.buf = b""

    def _send(self, obj):
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def _recv(self, deadline):
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1:]
                line = line.lstrip(b"\xff").strip()
                if not line:
                    continue
                try:
                    return json.loads(line)
                except ValueError:
                    continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("guest agent did not answer")
            self.sock.settimeout(min(left, 1.0))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                self.sock.close()
                self.sock = None
                raise ConnectionError("guest agent socket closed")
            self.buf += chunk

    def sync(self, timeout=3.0):
        """True when the agent answered a guest-sync-delimited now."""
        self._connect()
        token = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
        self.sock.sendall(b"\xff")
        self._send({"execute": "guest-sync-delimited", "arguments": {"id": token}})
        deadline = time.monotonic() + timeout
        while True:
            reply = self._recv(deadline)
            if reply.get("return") == token:
                return True

    def call(self, command, arguments=None, timeout=10.0):
        self._send({"execute": command, "arguments": arguments or {}})
        reply = self._recv(time.monotonic() + timeout)
        if "error" in reply:
            raise TwinError(f"guest agent {command}: {reply['error']}")
        return reply.get("return")

    def spawn(self, cmd):
        """Starts `sh -c cmd` in the guest without waiting for it."""
        with self.lock:
            self.sync()
            self.call("guest-exec", {"path": "/bin/sh", "arg": ["-c", cmd]})

    def exec(self, cmd, timeout):
        """Runs `sh -c cmd` in the guest; (exit code, stdout+stderr).
        The command gets `timeout` seconds (coreutils timeout in the guest,
        so a hung command dies there too)."""
        with self.lock:
            self.sync()
            pid = self.call(
                "guest-exec",
                {
                    "path": "/usr/bin/timeout",
                    "arg": ["-k", "5", str(int(timeout)), "/bin/sh", "-c", cmd],
                    "capture-output": True,
                },
            )["pid"]
            deadline = time.monotonic() + timeout + 15
            while True:
                st = self.call("guest-exec-status", {"pid": pid})
                if st.get("exited"):
                    out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
                    err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
                    return st.get("exitcode", -1), out + err
                if time.monotonic() > deadline:
                    raise TimeoutError(f"guest command did not end: {cmd}")
                time.sleep(0.2)


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.file = self.sock.makefile("rwb")
        self.events = []
        self._read()  # greeting
        self.execute("qmp_capabilities")

    def _read(self):
        line = self.file.readline()
        if not line:
            raise TwinError("QMP closed")
        return json.loads(line)

    def execute(self, command, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise TwinError(f"QMP {command}: {reply['error']}")
            return reply.get("return")


class Machine:
    """One guest: its VHDX (a sparse copy of the cached root image),
    its storage disk image, QEMU, QMP, the agent and the Windows port."""

    def __init__(self, host, name, settings, disk=True, disk_store=True, generations=1,
                 tune2fs=None):
        self.host = host
        self.name = name
        self.settings = settings
        self.dir = host.workdir / name
        self.dir.mkdir(parents=True)
        self.console = self.dir / "console.log"
        self.proc = None
        self.qmp = None
        self.agent = None
        self.disk_attached = False
        self.windows_runs = []
        self.on_windows_run = None
        self.disk_img = self.dir / "storage.img" if disk else None
        # Features the host's kernel may not mount (quota,project), added to
        # the storage disk after the install step: `tune2fs <these> IMG`.
        self.tune2fs = tune2fs
        # generations: how many (all with these settings), or a list of
        # settings, one per generation (a deployment that changes them).
        if isinstance(generations, int):
            generations = [settings] * generations
        self.generations = [
            host.build_generation(s, g) for g, s in enumerate(generations, start=1)
        ]
        self._make_disks(disk_store)

    # --- disks -------------------------------------------------------------

    def _make_disks(self, disk_store):
        """The VHDX (a sparse copy of the cached root image) and the storage
        disk (a fresh ext4 with the configured UUID), then the install step
        (install.sh) with the generations' exported closures."""
        self.root = self.dir / "root.img"
        run(["cp", "--sparse=always", str(self.host.image / "root.img"), str(self.root)])
        if self.disk_img:
            with open(self.disk_img, "wb") as f:
                f.truncate(1 << 30)
            run(["mkfs.ext4", "-q", "-F", "-U", FS_UUID, "-L", "wsl-storage",
                 str(self.disk_img)])
        payload = self.dir / "payload"
        payload.mkdir()
        # Generation 1 is installed; later ones are only carried along
        # (deploy-N, its closure, and deploy-N.toplevel) for the scenario
        # to deploy as `nixos-rebuild` would.
        for n, gen in enumerate(self.generations, start=1):
            name = "closure" if n == 1 else f"deploy-{n}"
            with open(payload / name, "wb") as f:
                subprocess.run(["nix-store", "--export", *self.host.closure([gen])],
                               stdout=f, check=True, timeout=300)
            (payload / f"{name}.toplevel").write_text(gen + "\n")
        shutil.copy(HERE / "guest-schtasks", payload / "schtasks")
        self.install_args = [str(self.root), str(payload)]
        if self.disk_img and disk_store:
            sub = self.settings["wslStorageMount"].get("nixStoreSubdir", SUBDIR)
            self.install_args += [str(self.disk_img), sub]

    # --- QEMU --------------------------------------------------------------

    def _qemu(self, init):
        img = self.host.image
        cmd = [
            "qemu-system-x86_64",
            "-accel", "tcg,thread=multi",
            "-cpu", "max",
            "-smp", str(min(os.cpu_count() or 1, 2)),
            "-m", "1536",
            "-nodefaults",
            "-display", "none",
            "-kernel", str(img / "vmlinuz"),
            "-initrd", str(img / "initrd.img"),
            "-append",
            f"root=/dev/vda rw console=ttyS0 init={init} panic=-1 "
            # No gettys: WSL has none, and without udev their .device never
            # appears (systemd would wait 90 s for dev-ttyS0.device).
            "loglevel=4 systemd.show_status=false systemd.getty_auto=0",
            "-drive", f"file={self.root},if=virtio,format=raw,cache=unsafe",
            "-chardev", f"file,id=con,path={self.console},append=on",
            "-serial", "chardev:con",
            "-qmp", f"unix:{self.dir / 'qmp.sock'},server=on,wait=off",
            "-nic", "none",
        ]
        return cmd

    def provision(self):
        """The install step: install.sh, on the host, in a mount namespace
        of its own."""
        log(f"{self.name}: installing the generation into the VHDX and the disk")
        run([str(HERE / "install.sh"), *self.install_args], timeout=300)
        if self.tune2fs and self.disk_img:
            run(["tune2fs", *self.tune2fs.split(), str(self.disk_img)])

    def start(self, disk_at_boot=True):
        """Boots the VHDX through the shim; the disk attached before the
        guest's CPU runs (as a disk WSL attached before the distro started)."""
        cmd = self._qemu("/sbin/init")
        cmd += [
            "-S",
            "-device", "virtio-scsi-pci,id=scsi0",
            "-device", "virtio-serial-pci,id=vser0",
            "-chardev", f"socket,id=qga,path={self.dir / 'qga.sock'},server=on,wait=off",
            "-device", "virtserialport,bus=vser0.0,chardev=qga,name=org.qemu.guest_agent.0",
            "-chardev", f"socket,id=win,path={self.dir / 'win.sock'},server=on,wait=off",
            "-device", "virtserialport,bus=vser0.0,chardev=win,name=wsm.windows",
        ]
        self.qemu_log = open(self.dir / "qemu.log", "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.qemu_log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)
        self.qmp = Qmp(self.dir / "qmp.sock")
        self.agent = Agent(self.dir / "qga.sock")
        self._windows_listener()
        if disk_at_boot:
            self.attach_disk()
        self.qmp.execute("cont")
        self.booted_at = time.monotonic()

    def _windows_listener(self):
        """Reads what the schtasks stand-in writes: `run <task>` is the
        elevated task being started; the scenario's on_windows_run (by
        default: attach the disk) plays the task's `wsl --mount --bare`."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + 10
        while True:
            try:
                s.connect(str(self.dir / "win.sock"))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

        def listen():
            buf = b""
            while True:
                try:
                    chunk = s.recv(4096)
                except OSError:
                    return
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    words = line.decode(errors="replace").split(" ", 1)
                    if words[0] == "run":
                        self.windows_runs.append(words[1] if len(words) > 1 else "")
                        log(f"{self.name}: the Windows task was started: {words[1:]}")
                        handler = self.on_windows_run or (lambda: self.attach_disk())
                        try:
                            handler()
                        except Exception as e:  # noqa: BLE001 - reported below
                            log(f"{self.name}: the Windows stand-in failed: {e}")

        threading.Thread(target=listen, daemon=True).start()
        self.win_sock = s

    def attach_disk(self):
        """Hot-plugs the storage disk as a SCSI disk with the configured
        serial: the event `wsl --mount <disk> --bare` makes in the VM."""
        if self.disk_attached:
            return
        self.qmp.execute("blockdev-add", **{
            "driver": "raw", "node-name": "storage",
            "file": {"driver": "file", "filename": str(self.disk_img)},
        })
        self.qmp.execute("device_add", driver="scsi-hd", bus="scsi0.0", drive="storage",
                         id="storage-disk", serial=DISK_SERIAL)
        self.disk_attached = True
        log(f"{self.name}: storage disk attached (serial {DISK_SERIAL})")

    # --- the NixOS test driver's vocabulary ---------------------------------

    def execute(self, cmd, timeout=120):
        return self.agent.exec(cmd, timeout)

    def succeed(self, cmd, timeout=120):
        rc, out = self.execute(cmd, timeout)
        if rc != 0:
            raise TwinError(f"command failed (exit {rc}): {cmd}\n{out}")
        return out

    def fail(self, cmd, timeout=120):
        rc, out = self.execute(cmd, timeout)
        if rc == 0:
            raise TwinError(f"command succeeded but should have failed: {cmd}\n{out}")
        return out

    def wait_for_agent(self, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TwinError(f"QEMU exited ({self.proc.returncode}) before the guest came up")
            try:
                if self.agent.sync(timeout=2):
                    return
            except (OSError, TimeoutError, ConnectionError):
                time.sleep(0.5)
        raise TwinError(f"the guest agent did not come up in {timeout} s")

    def wait_until_succeeds(self, cmd, timeout=300):
        deadline = time.monotonic() + timeout
        while True:
            rc, out = self.execute(cmd, timeout=60)
            if rc == 0:
                return out
            if time.monotonic() > deadline:
                raise TwinError(f"timed out after {timeout} s waiting for: {cmd}\n{out}")
            time.sleep(1)

    def wait_for_boot(self, timeout=400):
        """The boot is over: `systemctl is-system-running --wait` says
        running or degraded (what WSL waits for before the first shell)."""
        self.wait_for_agent(timeout)
        rc, out = self.execute("systemctl is-system-running --wait", timeout=timeout)
        state = out.strip()
        if state not in ("running", "degraded"):
            raise TwinError(f"the boot ended {state!r}")
        return state

    def unit_state(self, unit):
        return self.execute(f"systemctl show -P ActiveState {shlex.quote(unit)}")[1].strip()

    def wait_for_unit(self, unit, timeout=300):
        deadline = time.monotonic() + timeout
        while True:
            state = self.unit_state(unit)
            if state == "active":
                return
            if state == "failed":
                raise TwinError(f"{unit} failed:\n" + self.execute(
                    f"systemctl status --no-pager {shlex.quote(unit)}; "
                    f"journalctl -b --no-pager -u {shlex.quote(unit)}")[1])
            if time.monotonic() > deadline:
                raise TwinError(f"{unit} not active after {timeout} s (it is {state})")
            time.sleep(1)

    def boot_id(self):
        return self.succeed("cat /proc/sys/kernel/random/boot_id").strip()

    def reboot(self):
        """A restart of the instance (`wsl --terminate` and start again):
        the VM reboots, the attached disk stays attached."""
        before = self.boot_id()
        # Started, not waited for: the agent may be gone before it could
        # report the command's end.
        with contextlib.suppress(OSError, TimeoutError, ConnectionError, TwinError):
            self.agent.spawn("systemctl reboot --no-block")
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            time.sleep(2)
            try:
                self.agent.sync(timeout=2)
                if self.boot_id() != before:
                    self.booted_at = time.monotonic()
                    return
            except (OSError, TimeoutError, ConnectionError, TwinError):
                continue
        raise TwinError("the guest did not come back from the reboot")

    def journal(self, args="-b"):
        return self.execute(f"journalctl --no-pager {args}", timeout=60)[1]

    def shutdown(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.qmp.execute("quit")
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def report(self):
        """What to print when a scenario failed: the journal and the
        console (the shim's and the kernel's lines)."""
        parts = []
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                parts.append("--- journal of this boot ---\n" + self.journal("-b -o short-monotonic"))
            with contextlib.suppress(Exception):
                parts.append("--- mountinfo ---\n" + self.execute("cat /proc/self/mountinfo")[1])
            with contextlib.suppress(Exception):
                parts.append("--- helper log ---\n" + self.execute(
                    "cat /var/log/wsl-storage-mount.log 2>/dev/null; "
                    "cat /run/wsl-storage-mount/state.json 2>/dev/null")[1])
        if self.console.exists():
            parts.append("--- console (last 200 lines) ---\n" + "\n".join(
                self.console.read_text(errors="replace").splitlines()[-200:]))
        return "\n".join(parts)
