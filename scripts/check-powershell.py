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
    differ from what `windows-script` prints;
  - a breach of the elevated scripts' rules (see RULES below: nothing read
    from the user's environment, commands only from modules imported by
    full path, owners and permissions set and checked, fail closed), each
    read from the parse tree, not from the text.

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


# --- Rules for the elevated scripts ------------------------------------------
# Both scripts run elevated as the user, in the user's environment (issue 17).
# Each rule is read from the parse tree; each names what it guards.

# Engine commands (Microsoft.PowerShell.Core): never loaded from a module path.
CORE = {"import-module", "set-strictmode", "where-object", "foreach-object", "out-null"}
# Where every other command used comes from, in Windows PowerShell 5.1.
MODULE_OF = {
    **{c: "Microsoft.PowerShell.Utility" for c in (
        "write-output", "write-warning", "out-string", "get-date", "sort-object",
        "select-object", "new-object", "get-filehash", "new-timespan")},
    **{c: "Microsoft.PowerShell.Management" for c in (
        "get-item", "test-path", "split-path", "join-path", "move-item",
        "get-childitem", "get-process", "remove-item")},
    **{c: "Microsoft.PowerShell.Security" for c in ("get-acl", "set-acl")},
    **{c: "Microsoft.PowerShell.Host" for c in ("start-transcript", "stop-transcript")},
    **{c: "Storage" for c in ("get-disk", "get-physicaldisk")},
    **{c: "ScheduledTasks" for c in (
        "new-scheduledtaskaction", "new-scheduledtasktrigger", "new-scheduledtaskprincipal",
        "new-scheduledtasksettingsset", "get-scheduledtask", "register-scheduledtask")},
}


class Script:
    def __init__(self, name, source):
        self.name = name
        self.source = source
        self.tree = PARSER.parse(source)
        self.all = list(nodes(self.tree.root_node))

    def text(self, node):
        return self.source[node.start_byte : node.end_byte].decode("ascii", "replace")

    def of_type(self, kind, within=None):
        pool = nodes(within) if within is not None else self.all
        return [n for n in pool if n.type == kind]

    def commands(self, name=None, within=None):
        out = []
        for n in self.of_type("command", within):
            names = [c for c in n.children if c.type == "command_name"]
            if names and (name is None or self.text(names[0]).lower() == name.lower()):
                out.append((self.text(names[0]).lower(), n))
        return out

    def first_command(self, name):
        found = self.commands(name)
        return found[0][1] if found else None

    def assignments(self, variable):
        """Assignments to `variable` (as written, any case): (node, right side)."""
        out = []
        for n in self.of_type("assignment_expression"):
            left = [c for c in n.children if c.type == "left_assignment_expression"]
            if left and self.text(left[0]).strip().lower() == variable.lower():
                out.append((n, n.children[-1]))
        return out

    def variables(self, within):
        return [self.text(v).lower() for v in self.of_type("variable", within)]

    def exits_nonzero(self, block):
        """`exit N` or `Finish N ...` with N != 0 somewhere in `block`."""
        for n in self.of_type("flow_control_statement", block):
            ints = self.of_type("decimal_integer_literal", n)
            if n.children[0].type == "exit" and ints and int(self.text(ints[0])) != 0:
                return True
        for _, n in self.commands("Finish", block):
            ints = self.of_type("decimal_integer_literal", n)
            if ints and int(self.text(ints[0])) != 0:
                return True
        return False

    def guards(self, condition_vars, before=None):
        """if statements whose condition mentions every variable in
        `condition_vars` and whose block exits non-zero, before `before`."""
        out = []
        for n in self.of_type("if_statement"):
            cond = [c for c in n.children if c.type == "pipeline"]
            block = [c for c in n.children if c.type == "statement_block"]
            if not cond or not block:
                continue
            used = set(self.variables(cond[0]))
            if all(v.lower() in used for v in condition_vars) and self.exits_nonzero(block[0]):
                if before is None or n.start_byte < before.start_byte:
                    out.append(n)
        return out

    def inside(self, node, kind):
        parent = node.parent
        while parent is not None:
            if parent.type == kind:
                return True
            parent = parent.parent
        return False

    def pipeline_text(self, node):
        return " ".join(self.text(node).split())


def rule_no_environment_paths(s):
    """Item 1: no path, nor anything else, read from the environment."""
    problems = []
    for n in s.of_type("member_name"):
        if s.text(n).lower() == "expandenvironmentvariables":
            problems.append(f"expands environment variables: {s.pipeline_text(n.parent)}")
    for v in s.of_type("variable"):
        name = s.text(v).lower().lstrip("$").strip("{}")
        if name.startswith("env:") and not s.inside(v, "left_assignment_expression"):
            problems.append(f"reads {s.text(v)} (the user can set it)")
    wanted = {"attach.ps1": ["$wsl"], "register-task.ps1": ["$powershell"]}[s.name]
    for var in wanted:
        found = s.assignments(var)
        if not found or not any("[environment]::systemdirectory" in s.text(r).lower() for _, r in found):
            problems.append(f"{var} is not built from [Environment]::SystemDirectory")
    return problems


def rule_modules_by_full_path(s):
    """Item 2: autoloading off, PSModulePath pinned, every command from the
    engine, the script itself, or a module imported by full path under
    $PSHOME before its first use."""
    problems = []
    functions = {s.text(c).lower() for n in s.of_type("function_statement") for c in n.children if c.type == "function_name"}
    imports = s.commands("Import-Module")
    autoload = [n for n, r in s.assignments("$PSModuleAutoLoadingPreference") if s.text(r).strip().lower() == "'none'"]
    pinned = s.assignments("$env:PSModulePath")
    # Variables that hold a path under $PSHOME.
    pshome = {"$pshome"}
    for n in s.of_type("assignment_expression"):
        left = s.text(n.children[0]).strip().lower()
        if set(s.variables(n.children[-1])) & pshome:
            pshome.add(left)
    first_import = imports[0][1] if imports else None
    if not autoload:
        problems.append("no $PSModuleAutoLoadingPreference = 'None'")
    if not pinned or not all(set(s.variables(r)) <= pshome for _, r in pinned):
        problems.append("$env:PSModulePath is not pinned to a path under $PSHOME")
    for what, found in (("$PSModuleAutoLoadingPreference", autoload), ("$env:PSModulePath", [n for n, _ in pinned])):
        if found and first_import is not None and found[0].start_byte > first_import.start_byte:
            problems.append(f"{what} is set after the first Import-Module")
    imported = {}
    for _, n in imports:
        strings = [s.text(t).strip("'") for t in s.of_type("verbatim_string_characters", n)]
        module = None
        for text in strings:
            parts = text.split("\\")
            if len(parts) == 2 and parts[1].lower() == parts[0].lower() + ".psd1":
                module = parts[0]
        if module is None or not set(s.variables(n)) & pshome:
            problems.append(f"imports a module not by its full path under $PSHOME: {s.pipeline_text(n)}")
            continue
        imported.setdefault(module.lower(), n)
    for name, n in s.commands():
        if name in CORE or name in functions:
            continue
        module = MODULE_OF.get(name)
        if module is None:
            problems.append(f"{name}: not in this checker's table of commands and their modules; add it (and import its module by full path)")
            continue
        at = imported.get(module.lower())
        # A trap runs whenever an error comes, but its commands are guarded
        # (Stop-Transcript only once a transcript runs): ordering is not asked.
        if at is None:
            problems.append(f"{name} runs, but its module {module} is never imported by full path")
        elif at.start_byte > n.start_byte and not s.inside(n, "trap_statement"):
            row = s.source.count(b"\n", 0, n.start_byte) + 1
            problems.append(f"{name} at line {row} runs before {module} is imported")
    return problems


def rule_desktop_edition(s):
    """Item 6: Windows PowerShell 5.1 only, refused elsewhere with a message."""
    problems = []
    first = s.tree.root_node.children[0] if s.tree.root_node.children else None
    if first is None or first.type != "comment" or " ".join(s.text(first).lower().split()) != "#requires -psedition desktop":
        problems.append("does not start with #Requires -PSEdition Desktop")
    if s.name == "register-task.ps1":
        checks = [n for n in s.guards([]) if "$psversiontable.psedition" in s.text(n).lower()]
        if not checks:
            problems.append("no PSEdition check that refuses PowerShell 7 with a message")
    return problems


def rule_boot_disk_fails_closed(s):
    """Item 7: a disk Get-Disk does not know is refused before any attach."""
    drive = s.assignments("$drive")
    before = drive[0][0] if drive else None
    for n in s.guards(["$null", "$disk"], before):
        cond = s.pipeline_text([c for c in n.children if c.type == "pipeline"][0]).lower()
        if cond in ("$null -eq $disk", "$disk -eq $null", "-not $disk"):
            return []
    return ["no refusal when Get-Disk has no disk of the matched number (if ($null -eq $disk) { Finish 2 ... }) before $drive is built"]


def rule_session_user(s):
    """Item 8: refuse when the elevated identity is not the session's user."""
    register = s.first_command("Register-ScheduledTask")
    problems = []
    listing = [n for _, n in s.commands("Get-Process") if any(s.text(c).lower() == "-includeusername" for c in s.of_type("command_parameter", n))]
    if not listing or (register is not None and listing[0].start_byte > register.start_byte):
        problems.append("the session's user is not read (Get-Process explorer -IncludeUserName) before Register-ScheduledTask")
    if not s.guards(["$sessionUsers", "$user"], register):
        problems.append("no refusal when the elevated user is not the session's user before Register-ScheduledTask")
    return problems


def rule_unexpected_errors_exit_4(s):
    """Item 9: every unhandled terminating error ends in exit 4."""
    traps = [n for n in s.of_type("trap_statement") if n.parent is not None and n.parent.parent == s.tree.root_node]
    for n in traps:
        for f in s.of_type("flow_control_statement", n):
            ints = s.of_type("decimal_integer_literal", f)
            if f.children[0].type == "exit" and ints and s.text(ints[0]) == "4":
                return []
    return ["no script-level trap that exits 4"]


def rule_task_working_directory(s):
    """Item 11: the task starts in the install directory."""
    for _, n in s.commands("New-ScheduledTaskAction"):
        elements = [c for c in nodes(n) if c.type in ("command_parameter", "variable")]
        for a, b in zip(elements, elements[1:]):
            if s.text(a).lower() == "-workingdirectory" and s.text(b).lower() == "$installdir":
                return []
    return ["New-ScheduledTaskAction has no -WorkingDirectory $installDir"]


def rule_owners(s):
    """Item 4: files created with owner and permissions, and checked."""
    problems = []
    # Created by CreateFile with a FileSecurity that sets owner and protection.
    streams = [n for _, n in s.commands("New-Object") if any(s.text(g).lower() == "io.filestream" for g in s.of_type("generic_token", n))]
    if not streams or not all("$filesecurity" in s.variables(n) for n in streams):
        problems.append("a file is created without a FileSecurity (New-Object IO.FileStream(..., $fileSecurity))")
    calls = {" ".join(s.text(n).split()) for n in s.of_type("invokation_expression")}
    for want in ("$fileSecurity.SetOwner($admins)", "$fileSecurity.SetAccessRuleProtection($true, $false)"):
        if want not in calls:
            problems.append(f"no {want}")
    if s.name == "register-task.ps1":
        owner_rights = [r for _, r in s.assignments("$ownerRights") if "'S-1-3-4'" in s.text(r)]
        rule = [c for c in calls if c.startswith("$security.AddAccessRule(") and "$ownerRights" in c and "$inherit" in c]
        if not owner_rights or not rule:
            problems.append("the directory has no inheritable OWNER RIGHTS (S-1-3-4) entry")
        move = s.first_command("Move-Item")
        register = s.first_command("Register-ScheduledTask")
        checked = [n for _, n in s.commands("Get-AdminOnlyProblem") if "$scriptpath" in s.variables(n)]
        if not (move and register and checked and move.start_byte < checked[0].start_byte < register.start_byte):
            problems.append("the installed attach.ps1 is not checked (Get-AdminOnlyProblem $scriptPath) between the move and Register-ScheduledTask")
        elif not s.guards(["$scriptProblem"], register):
            problems.append("a problem with the installed attach.ps1 does not stop the script")
        entries = [f for f in s.of_type("function_statement") if s.commands("Get-ChildItem", f) and s.commands("Stop-Unsafe", f)]
        set_acl = s.first_command("Set-Acl")
        if not entries:
            problems.append("no function refuses directory entries not owned by Administrators or SYSTEM")
        else:
            name = [s.text(c) for c in entries[0].children if c.type == "function_name"][0]
            called = s.commands(name)
            if not called or set_acl is None or called[-1][1].start_byte > set_acl.start_byte:
                problems.append(f"{name} is not run before the directory's permissions are set")
    else:
        transcript = s.first_command("Start-Transcript")
        move = s.first_command("Move-Item")
        checks = [n for _, n in s.commands("Get-AdminOnlyProblem") if "$file" in s.variables(n)]
        loops = [n for n in s.of_type("foreach_statement") if checks and n.start_byte < checks[0].start_byte < n.end_byte]
        if not checks or not loops or "$logpath" not in s.variables(loops[0].children[4]) or not (move and transcript) or checks[0].start_byte > move.start_byte:
            problems.append("the log file and its .old copy are not checked (Get-AdminOnlyProblem) before they are moved or appended to")
    return problems


def rule_clr_variables(s):
    """Item 3: the .NET profiler variables are looked for, and stop the run."""
    calls = [n for n in s.of_type("member_access") if " ".join(s.text(n).split()).lower().startswith("[environment]::getenvironmentvariables()")]
    patterns = [t for t in s.of_type("verbatim_string_characters") if "COR_PROFILER" in s.text(t) and "COMPlus_" in s.text(t)]
    disks = s.first_command("Get-Disk")
    if not calls or not patterns or not s.guards(["$clrVariables"], disks):
        return ["the environment is not searched for COR_PROFILER/COMPlus_ variables (refusing to go on) before the disks are listed"]
    return []


RULES = {
    "attach.ps1": [rule_no_environment_paths, rule_modules_by_full_path, rule_desktop_edition,
                   rule_clr_variables, rule_owners, rule_boot_disk_fails_closed,
                   rule_unexpected_errors_exit_4],
    "register-task.ps1": [rule_no_environment_paths, rule_modules_by_full_path, rule_desktop_edition,
                          rule_owners, rule_session_user, rule_task_working_directory],
}


def rule_problems(name, source):
    script = Script(name, source)
    out = []
    for rule in RULES[name]:
        out += [f"{rule.__doc__.split(':')[0]} ({rule.__name__}): {p}" for p in rule(script)]
    return out


# Each rule must keep its teeth: the generated script, with one fix undone,
# must break exactly that rule. (script, text, replacement, rule)
MUTATIONS = [
    ("attach.ps1", "$wsl = [IO.Path]::Combine([Environment]::SystemDirectory, 'wsl.exe')",
     "$wsl = Join-Path $env:SystemRoot 'System32\\wsl.exe'", rule_no_environment_paths),
    ("attach.ps1", "$LogPath = Resolve-KnownFolder $LogPathSetting",
     "$LogPath = [Environment]::ExpandEnvironmentVariables($LogPathSetting)", rule_no_environment_paths),
    ("register-task.ps1", "$powershell = [IO.Path]::Combine([Environment]::SystemDirectory,",
     "$powershell = [IO.Path]::Combine($env:windir,", rule_no_environment_paths),
    ("attach.ps1", "\n$PSModuleAutoLoadingPreference = 'None'", "\n$PSModuleAutoLoadingPreference = 'All'", rule_modules_by_full_path),
    ("attach.ps1", "$env:PSModulePath = $moduleRoot", "$env:PSModulePath = $moduleRoot + ';' + $HOME", rule_modules_by_full_path),
    ("attach.ps1", "Import-Module -Name ([IO.Path]::Combine($moduleRoot, 'Storage\\Storage.psd1'))",
     "Import-Module -Name Storage", rule_modules_by_full_path),
    ("register-task.ps1", "Import-Module -Name ([IO.Path]::Combine($moduleRoot, 'ScheduledTasks\\ScheduledTasks.psd1'))",
     "", rule_modules_by_full_path),
    ("attach.ps1", "#Requires -PSEdition Desktop", "#Requires -Version 5.1", rule_desktop_edition),
    ("register-task.ps1", "if ($PSVersionTable.PSEdition -ne 'Desktop') {", "if ($false) {", rule_desktop_edition),
    ("attach.ps1", "if ($clrVariables.Count -gt 0) {", "if ($false) {", rule_clr_variables),
    ("attach.ps1", "[IO.FileOptions]::None, $fileSecurity)", "[IO.FileOptions]::None)", rule_owners),
    ("attach.ps1", "$fileProblem = Get-AdminOnlyProblem $file $false", "$fileProblem = $null", rule_owners),
    ("register-task.ps1", "$fileSecurity.SetOwner($admins)", "", rule_owners),
    ("register-task.ps1", "$scriptProblem = Get-AdminOnlyProblem $scriptPath", "$scriptProblem = $null", rule_owners),
    ("register-task.ps1", "New-Object Security.Principal.SecurityIdentifier('S-1-3-4')",
     "New-Object Security.Principal.SecurityIdentifier('S-1-5-32-545')", rule_owners),
    ("register-task.ps1", "Assert-OwnedByAdmins\nAssert-EntriesOwnedByAdmins\n", "Assert-OwnedByAdmins\n", rule_owners),
    ("attach.ps1", "if ($null -eq $disk) {", "if ($false) {", rule_boot_disk_fails_closed),
    ("register-task.ps1", "if ($sessionUsers.Count -ne 1 -or $sessionUsers[0] -ne $user) {", "if ($false) {", rule_session_user),
    ("attach.ps1", "    exit 4\n}", "    exit 1\n}", rule_unexpected_errors_exit_4),
    ("register-task.ps1", " -WorkingDirectory $installDir", "", rule_task_working_directory),
]


def mutation_problems(scripts):
    """Rules that let a mutation through (empty when all have teeth)."""
    out = []
    for name, old, new, rule in MUTATIONS:
        source = scripts[name].decode()
        if old not in source:
            out.append(f"mutation for {rule.__name__}: {old!r} is not in {name}; update MUTATIONS")
            continue
        if not rule(Script(name, source.replace(old, new, 1).encode())):
            out.append(f"{rule.__name__} does not catch {name} with {old!r} -> {new!r}")
    return out


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
            problems += [f"{script}: {p}" for p in rule_problems(script, source)]
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
            rules = sum(map(len, RULES.values()))
            print(f"ok   {name}: attach.ps1 and register-task.ps1 parse; {sum(map(len, values.values()))} values are single string tokens; {rules} rules hold")
    # The rules themselves, against the first config's scripts with one fix
    # undone at a time.
    first = configs[0]
    teeth = mutation_problems({
        "attach.ps1": generate(helper, first, "windows-script"),
        "register-task.ps1": generate(helper, first, "windows-task"),
    })
    checked += 1
    if teeth:
        failures += 1
        print("FAIL rule mutations")
        for p in teeth:
            print(f"     {p}")
    else:
        print(f"ok   rule mutations: each of {len(MUTATIONS)} undone fixes is caught by its rule")
    print(f"powershell-parse: {checked - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
