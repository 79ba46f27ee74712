#!/usr/bin/env python3
"""docs/troubleshooting.md names every check `doctor` runs, and only those.

The check ids are read from src/doctor.rs (the first argument of each
checks.ok/warn/fail/skip call, and the ids it builds); the documented ones
from the table columns headed "`doctor` check". Run by scripts/gen-docs.sh.
"""
import re
import sys

source = open("src/doctor.rs", encoding="utf-8").read()
source = source.split("#[cfg(test)]", 1)[0]
in_code = set(re.findall(r'checks\.(?:ok|warn|fail|skip)\(\s*"([a-z][a-z-]*)"', source))
in_code |= set(re.findall(r'let id = "([a-z][a-z-]*)"', source))
in_code |= set(re.findall(r'"(windows-(?:task|script))"', source))
# Per-item ids such as instance-dir:<name>, built with format!.
in_code |= {prefix + "<name>" for prefix in re.findall(r'format!\("([a-z-]+:)\{', source)}

documented = set()
column = None
for line in open("docs/troubleshooting.md", encoding="utf-8"):
    cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
    if cells is None:
        column = None
    elif "`doctor` check" in cells:
        column = cells.index("`doctor` check")
    elif column is not None and column < len(cells):
        documented |= set(re.findall(r"`([a-z][a-z-]*(?::<name>)?)`", cells[column]))

missing = sorted(in_code - documented)
unknown = sorted(documented - in_code)
if missing:
    print(f"docs/troubleshooting.md: doctor checks not described: {', '.join(missing)}")
if unknown:
    print(f"docs/troubleshooting.md: no doctor check of that name in src/doctor.rs: {', '.join(unknown)}")
if missing or unknown:
    sys.exit(1)
print(f"docs/troubleshooting.md: names all {len(in_code)} doctor checks")
