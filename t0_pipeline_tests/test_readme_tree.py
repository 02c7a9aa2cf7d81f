"""The README's annotated file tree against `git ls-files`: every tracked file is listed (itself or
under a listed folder), and every listed path exists."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NESTED = 29  # column where an entry's description continues on its own line


def tree_entries(readme: str) -> list[str]:
    lines = readme.split("\n")
    start = lines.index("## File tree")
    opening = next(i for i in range(start, len(lines)) if lines[i].startswith("```"))
    closing = next(i for i in range(opening + 1, len(lines)) if lines[i].startswith("```"))
    entries, parent = [], ""
    for line in lines[opening + 1 : closing]:
        if not line.strip() or line[:NESTED].strip() == "":
            continue
        name = line.split()[0]
        if line[0] != " ":
            parent, path = (name if name.endswith("/") else ""), name
        else:
            path = parent + name
        entries.append(path)
    return entries


def test_the_file_tree_lists_every_tracked_file_and_only_those():
    try:
        tracked = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    entries = tree_entries((ROOT / "README.md").read_text(encoding="utf-8"))
    parents = {e.split("/")[0] + "/" for e in entries if e.count("/") > 1 or not e.endswith("/")}
    folders = [e for e in entries if e.endswith("/") and e not in parents]
    missing = [f for f in tracked if f not in entries and not any(f.startswith(d) for d in folders)]
    assert missing == [], f"tracked but not in the README's file tree: {missing}"
    absent = [
        e
        for e in entries
        if e.rstrip("/") not in tracked
        and not any(f.startswith(e.rstrip("/") + "/") for f in tracked)
    ]
    assert absent == [], f"in the README's file tree but not tracked: {absent}"
