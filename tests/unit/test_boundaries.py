"""Imports point one way (style guide table), and only one module imports ``orthanc``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Table

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {
    "archive",
    "query",
    "dimse",
    "dicomweb",
    "compose",
    "sharing",
    "tiering",
    "security",
    "inference",
    "viewer",
    "deploy",
    "bench",
    "synthetic",
}

# package -> project modules it may import (a module name or a package prefix): its own
# modules and the other packages' public faces (``api``; security's second face,
# ``security.identity``, loads authlib and joserfc, which Orthanc's interpreter must not;
# ``archive.index_tables`` is the study index's tables, handed to the query package alone)
SECURITY = {"security.api", "security.identity"}
ALLOWED: dict[str, set[str]] = {
    "security": {"security"},
    "tiering": {"tiering", "security.api"},
    "archive": {"archive", "tiering.api", "security.api"},
    "sharing": {"sharing", "archive.api", "security.api"},
    "query": {"query", "archive.api", "archive.index_tables", "sharing.api", "security.api"},
    "dimse": {"dimse", "query.api", "archive.api", "sharing.api", "security.api"},
    "dicomweb": {"dicomweb", "query.api", "archive.api", "sharing.api", "viewer.api", *SECURITY},
    "inference": {"inference"},
    "viewer": {"viewer"},
    "synthetic": {"synthetic"},
    # the composition roots (Orthanc entry, gateway and indexer mains, root settings) wire
    # the packages' insides together; only deploy/ and bench/ (which start them) sit above
    "compose": {
        "compose",
        "dicomweb",
        "dimse",
        "query",
        "sharing",
        "archive",
        "tiering",
        "security",
        "viewer",
    },
    # the CLI and supervisor, and the benchmarks: faces only
    "deploy": {
        "deploy",
        "compose.api",
        "dicomweb.api",
        "query.api",
        "archive.api",
        "sharing.api",
        "synthetic",
        *SECURITY,
    },
    "bench": {"bench", "compose.api", "dicomweb.api", "archive.api", "synthetic", *SECURITY},
}


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
        for name in imports_of(path):
            if name.split(".")[0] in PROJECT and not allowed(name, ALLOWED[package]):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


# the gateway's public face: the application and what serving it needs, and its settings
# section on its own (the root settings model loads inside Orthanc, without the web stack)
DICOMWEB_FACE = {"dicomweb.api", "dicomweb.settings"}


@pytest.mark.parametrize("package", ["bench", "compose", "deploy"])
def test_the_gateway_is_reached_through_its_public_face(package: str) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in imports_of(path)
        if name.split(".")[0] == "dicomweb" and name not in DICOMWEB_FACE
    ]
    assert offenders == []


def test_only_the_entry_script_imports_orthanc() -> None:
    importers = sorted(
        str(path.relative_to(ROOT))
        for package in PROJECT
        for path in (ROOT / package).rglob("*.py")
        if "orthanc" in {name.split(".")[0] for name in imports_of(path)}
    )
    assert importers == ["compose/orthanc_entry.py"]


def test_orthanc_loads_the_entry_script() -> None:
    """The generated configuration names the one module that imports ``orthanc``."""
    from deploy.orthanc_config import ENTRY_SCRIPT

    assert ENTRY_SCRIPT.is_file()
    assert str(ENTRY_SCRIPT.relative_to(ROOT)) == "compose/orthanc_entry.py"


def test_the_dimse_handlers_load_nothing_heavy_into_orthanc() -> None:
    """What the entry script imports for C-FIND/C-MOVE (the dimse package and the query
    model below it) must not pull in the gateway's web stack (aiohttp, authlib): it runs
    inside Orthanc's embedded interpreter."""
    code = (
        "import sys, archive.plugin, dimse.api, compose.settings; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('aiohttp', 'authlib', 'jwt', 'joserfc', 'multidict', 'yarl')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


INDEX_TABLES = {"instance_sources", "instances", "institutions", "patients", "series", "studies"}
# where archive keeps them, and the one module that hands them over (to query alone)
INDEX_TABLE_MODULES = {"archive.catalog.schema", "archive.index_tables"}


def test_archive_api_exports_no_table() -> None:
    """Other packages call the archive's functions; none gets a table to build SQL on."""
    import archive.api

    exported = {name: getattr(archive.api, name) for name in archive.api.__all__}
    assert [name for name, value in exported.items() if isinstance(value, Table)] == []


def test_only_query_builds_sql_on_the_index_tables() -> None:
    """The query package builds every SQL statement on the study index (QIDO-RS, C-FIND,
    the access rule, the reading worklist); the gateway, the DIMSE handlers, sharing and
    the rest call its functions or the archive's, and import no index table."""
    offenders = []
    for package in sorted(PROJECT - {"archive", "query"}):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = {alias.name for alias in node.names} & INDEX_TABLE_MODULES
                    offenders += [f"{path.relative_to(ROOT)} imports {n}" for n in sorted(names)]
                elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("archive"):
                    if node.module in INDEX_TABLE_MODULES:
                        offenders.append(f"{path.relative_to(ROOT)} imports {node.module}")
                    names = {alias.name for alias in node.names} & INDEX_TABLES
                    offenders += [f"{path.relative_to(ROOT)} imports {n}" for n in sorted(names)]
    assert offenders == []


def test_every_package_others_import_has_a_public_face() -> None:
    """``api.py``, or exports in ``__init__`` (synthetic); deploy and bench sit on top and
    inference is not built yet."""
    faceless = [
        package
        for package in sorted(PROJECT - {"deploy", "bench", "inference"})
        if not (ROOT / package / "api.py").is_file()
        and "__all__" not in (ROOT / package / "__init__.py").read_text()
    ]
    assert faceless == []
