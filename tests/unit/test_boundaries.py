"""Imports point one way (style guide table), and only one module imports ``orthanc``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {
    "archive",
    "query",
    "dicomweb",
    "sharing",
    "tiering",
    "security",
    "inference",
    "viewer",
    "deploy",
    "bench",
}

# package -> project modules it may import (a module name or a package prefix)
ALLOWED: dict[str, set[str]] = {
    "security": {"security"},
    "tiering": {"tiering", "security"},
    "archive": {"archive", "tiering", "security"},
    "sharing": {"sharing", "archive.api", "security"},
    "query": {"query", "archive.api", "sharing.api", "security"},
    "dicomweb": {"dicomweb", "query.api", "archive.api", "sharing.api", "security", "viewer.api"},
    "inference": {"inference"},
    "viewer": {"viewer"},
}


# Narrow, documented exceptions: module path -> extra project modules it may import.
# archive/orthanc_entry.py is the plugin's composition root (like deploy/ for processes):
# it injects the DIMSE C-FIND/C-MOVE handlers, which reuse the gateway's QIDO matching and
# sharing's access rule, into archive.plugin. No other archive module may import them.
EXCEPTIONS: dict[str, set[str]] = {"archive/orthanc_entry.py": {"dicomweb.dimse"}}


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def allowed(name: str, rules: set[str]) -> bool:
    return any(name == rule or name.startswith(rule + ".") for rule in rules)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rules = ALLOWED[package] | EXCEPTIONS.get(str(path.relative_to(ROOT)), set())
        for name in imports_of(path):
            if name.split(".")[0] in PROJECT and not allowed(name, rules):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_only_the_entry_script_imports_orthanc() -> None:
    importers = sorted(
        str(path.relative_to(ROOT))
        for package in PROJECT
        for path in (ROOT / package).rglob("*.py")
        if "orthanc" in {name.split(".")[0] for name in imports_of(path)}
    )
    assert importers == ["archive/orthanc_entry.py"]


def test_the_dimse_handlers_load_nothing_heavy_into_orthanc() -> None:
    """What the entry script imports for C-FIND/C-MOVE must not pull in the gateway's web
    stack (aiohttp, authlib): it runs inside Orthanc's embedded interpreter."""
    code = (
        "import sys, archive.plugin, dicomweb.dimse; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'authlib', 'jwt', 'joserfc', 'multidict', 'yarl')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
