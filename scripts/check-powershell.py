#!/usr/bin/env python3
"""Parse the generated PowerShell with tree-sitter's PowerShell grammar.

For every golden config (tests/golden/*.config.json) this runs the real
helper's `windows-script` and `windows-task`, parses both scripts, and fails
on:
  - any ERROR or MISSING node (the script would not parse as written);
  - a config value that is not kept inside one single-quoted string token
    (where it occurs in code, it lies within one verbatim string, and one
    such token is exactly the value, quoted);
  - a register-task.ps1 whose embedded attach.ps1 (base64) or its SHA-256
    differ from what `windows-script` prints.

Usage: scripts/check-powershell.py [HELPER]   (default target/debug/wsl-storage-mount)
Needs: pip install tree-sitter tree-sitter-powershell
"""

import base64
import hashlib
import json
import pathlib
import subprocess
import sys

import tree_sitter
import tree_sitter_powershell

ROOT = pathlib.Path(__file__).resolve().parent.parent
PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
# The grammar's node for a single-quoted string: nothing expands inside it.
VERBATIM = "verbatim_string_characters"


def ps_quote(value):
    """The helper's quoting: a single-quoted literal, quotes doubled."""
    out = []
    for c in value:
        if c in "'\u2018\u2019\u201a\u201b":
            out.append(c)
        out.append(c)
    return "'" + "".join(out) + "'"


def nodes(node):
    yield node
    for child in node.children:
        yield from nodes(child)


def syntax_problems(tree, source):
    problems = []
    for node in nodes(tree.root_node):
        if node.is_error or node.is_missing:
            row, col = node.start_point
            kind = "MISSING" if node.is_missing else "ERROR"
            text = source[node.start_byte : node.end_byte][:60].decode("ascii", "replace")
            line = source.split(b"\n")[row].decode("ascii", "replace").strip()
            problems.append(f"{kind} at {row + 1}:{col + 1} ({text!r}) in: {line}")
    return problems


def token_problems(tree, source, value):
    """Where `value` occurs outside comments it must lie inside one verbatim
    string token, and one token must be exactly the quoted value."""
    problems = []
    tokens = [n for n in nodes(tree.root_node) if n.type == VERBATIM]
    comments = [n for n in nodes(tree.root_node) if n.type == "comment"]
    needle = value.encode()
    quoted = ps_quote(value).encode()
    start = source.find(needle)
    while start != -1:
        end = start + len(needle)
        inside = lambda n: n.start_byte <= start and end <= n.end_byte
        if not any(inside(n) for n in comments) and not any(inside(n) for n in tokens):
            row = source.count(b"\n", 0, start)
            line = source.split(b"\n")[row].decode("ascii", "replace").strip()
            problems.append(f"{value!r} at line {row + 1} is not inside one string token: {line}")
        start = source.find(needle, start + 1)
    if not any(source[n.start_byte : n.end_byte] == quoted for n in tokens):
        problems.append(f"{value!r} is not one string token {quoted.decode()} anywhere")
    return problems


def task_name_parts(name):
    """The folder, leaf and full name, as the helper splits taskName."""
    parts = [p for p in name.split("\\") if p]
    leaf, folders = parts[-1], parts[:-1]
    folder = "\\" + "\\".join(folders) + "\\" if folders else "\\"
    full = leaf if not folders else folder + leaf
    return folder, leaf, full


def embedded_attach(register):
    literal = {}
    for line in register.splitlines():
        for var in ("AttachBase64", "AttachSha256"):
            prefix = f"${var} = '"
            if line.startswith(prefix) and line.endswith("'"):
                literal[var] = line[len(prefix) : -1]
    if set(literal) != {"AttachBase64", "AttachSha256"}:
        return None, None
    return base64.b64decode(literal["AttachBase64"], validate=True), literal["AttachSha256"]


def generate(helper, config, command):
    out = subprocess.run(
        [helper, "--config", str(config), command], capture_output=True, timeout=60
    )
    if out.returncode != 0:
        raise SystemExit(f"{helper} --config {config} {command}: exit {out.returncode}: {out.stderr.decode()}")
    return out.stdout


def main():
    helper = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/debug/wsl-storage-mount")
    configs = sorted((ROOT / "tests/golden").glob("*.config.json"))
    if not configs:
        raise SystemExit("no tests/golden/*.config.json")
    failures = 0
    checked = 0
    for config in configs:
        name = config.name.removesuffix(".config.json")
        cfg = json.loads(config.read_text())
        win = cfg.get("windows", {})
        attach = generate(helper, config, "windows-script")
        register = generate(helper, config, "windows-task")
        values = {
            "attach.ps1": [cfg["diskSerialNumber"]]
            + [v for v in (cfg.get("mountName"), win.get("logPath")) if v],
            "register-task.ps1": list(task_name_parts(win.get("taskName", "wsl-storage-mount"))),
        }
        problems = []
        for script, source in (("attach.ps1", attach), ("register-task.ps1", register)):
            tree = PARSER.parse(source)
            problems += [f"{script}: {p}" for p in syntax_problems(tree, source)]
            for value in values[script]:
                problems += [f"{script}: {p}" for p in token_problems(tree, source, value)]
        embedded, sha = embedded_attach(register.decode())
        if embedded != attach:
            problems.append("register-task.ps1: the embedded attach.ps1 is not what windows-script prints")
        elif hashlib.sha256(embedded).hexdigest().upper() != sha:
            problems.append("register-task.ps1: $AttachSha256 is not the SHA-256 of the embedded attach.ps1")
        checked += 1
        if problems:
            failures += 1
            print(f"FAIL {name}")
            for p in problems:
                print(f"     {p}")
        else:
            print(f"ok   {name}: attach.ps1 and register-task.ps1 parse; {sum(map(len, values.values()))} values are single string tokens")
    print(f"powershell-parse: {checked - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
