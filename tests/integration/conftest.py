"""A real archive for the whole session, and fresh ones for destructive tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import Archive
from tests.integration.stock_orthanc import StockOrthanc, stock_orthanc

INSTITUTIONS = {"Hospital A": ["HOSPA"], "Hospital B": ["HOSPB"]}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    arch = Archive(tmp_path_factory.mktemp("vna-home"))
    # test_roundtrip reads files back with C-GET, which is off by default (it cannot be
    # limited per institution on Orthanc 1.10); test_dimse checks the default on its own
    arch.write_config(INSTITUTIONS, dicom_allow_get=True)
    arch.up()
    try:
        yield arch
    finally:
        arch.down()


@pytest.fixture
def fresh_archive(tmp_path: Path) -> Iterator[Callable[[], Archive]]:
    """Factory for a private archive (for tests that damage or kill it)."""
    started: list[Archive] = []

    def make() -> Archive:
        arch = Archive(tmp_path / f"home{len(started)}")
        arch.write_config(INSTITUTIONS)
        arch.up()
        started.append(arch)
        return arch

    yield make
    for arch in started:
        arch.down()


@pytest.fixture
def stock_peer(tmp_path: Path) -> Iterator[StockOrthanc]:
    """A stock Orthanc (DICOMweb plugin only) on free ports: a hospital's PACS."""
    with stock_orthanc(tmp_path / "stock-orthanc") as peer:
        yield peer
