"""Runs the boot twin's scenarios (scripts/twin.sh is the entry point).

Each scenario is a file of its own beside this one (checks/twin/<name>.py)
with a docstring saying what it shows and what in checks/vm it mirrors, its
module settings, how its disk starts, and `test(machine)`. The last line
printed is `N passed, N failed`.
"""

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402

NOT_SCENARIOS = {"harness.py", "run.py", "common.py", "bench.py"}


def scenario_files():
    return sorted(p for p in HERE.glob("*.py") if p.name not in NOT_SCENARIOS)


def load(path):
    spec = importlib.util.spec_from_file_location(f"twin_{path.stem.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary(module):
    doc = (module.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def run_scenario(host, name, module):
    machine = harness.Machine(
        host,
        name,
        module.SETTINGS,
        disk=getattr(module, "DISK", True),
        disk_store=getattr(module, "DISK_STORE", True),
        generations=getattr(module, "GENERATIONS", 1),
        tune2fs=getattr(module, "TUNE2FS", None),
    )
    try:
        machine.provision()
        machine.start(disk_at_boot=getattr(module, "DISK_AT_BOOT", True))
        module.test(machine)
    except BaseException:
        report = machine.report()
        raise harness.TwinError(traceback.format_exc() + "\n" + report) from None
    finally:
        machine.shutdown()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--list", action="store_true", help="print the scenarios and exit")
    ap.add_argument("--image", help="the guest image directory (checks/twin/image.sh)")
    ap.add_argument("--helper", help="the helper binary to put in the generations")
    ap.add_argument("--lib", help="the nixpkgs lib directory")
    ap.add_argument("--nixos-wsl", default="", help="the NixOS-WSL checkout")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()

    files = {p.stem: p for p in scenario_files()}
    if args.list:
        for name, path in files.items():
            print(f"{name:28} {summary(load(path))}")
        return 0
    unknown = [n for n in args.names if n not in files]
    if unknown:
        print(f"twin: no scenario named {', '.join(unknown)} (scripts/twin.sh --list)", file=sys.stderr)
        return 2
    names = args.names or list(files)

    workdir = Path(tempfile.mkdtemp(prefix="wsm-twin-"))
    host = harness.Host(args.image, args.helper, args.lib, args.nixos_wsl, workdir)
    passed, failed = [], []
    started = time.monotonic()
    try:
        for name in names:
            module = load(files[name])
            print(f"== {name}: {summary(module)}", flush=True)
            t0 = time.monotonic()
            try:
                run_scenario(host, name, module)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                failed.append(name)
                print(f"FAIL {name} ({time.monotonic() - t0:.0f} s)\n{e}", flush=True)
            else:
                passed.append(name)
                print(f"ok   {name} ({time.monotonic() - t0:.0f} s)", flush=True)
    finally:
        host.cleanup()
        if args.keep:
            print(f"twin: work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"twin: {len(names)} scenarios in {time.monotonic() - started:.0f} s")
    if failed:
        print(f"twin: failed: {' '.join(failed)}")
    print(f"{len(passed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
